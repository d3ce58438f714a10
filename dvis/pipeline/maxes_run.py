"""One ``dvis maxes`` run: resume or skip what is complete, track, and write the run folder (whole,
as a ``--shard`` file, or merged from a torchrun group)."""
from __future__ import annotations

from pathlib import Path

from dvis.formats.maxes import (build_manifest, checkpoint_path, fingerprint, is_complete, merge_results, save_result,
                                save_shard, shard_complete, shard_path)
from dvis.formats.stats import stats_complete
from dvis.imaging.labels import source_labels
from dvis.imaging.datasets import open_source
from dvis.pipeline.distributed import Shard
from dvis.pipeline.maxes import TrackConfig, track_maxes


def maxes_run(model, model_spec: str | None, images: str, out: str | Path, layers: list[str] | None,
              cfg: TrackConfig, labels_file: str | None = None, dist: Shard = Shard(), sharded: bool = False,
              force: bool = False) -> None:
    """Track ``model``'s top images over ``images`` into the run folder ``out`` (resuming its
    checkpoint); skipped when already complete unless ``force``. ``sharded``: ``dist`` is a
    ``--shard i/N`` share written as a shard file for ``dvis maxes-merge``; under torchrun
    (``dist.group``) rank 0 merges and writes. ``model_spec`` is what the manifest records to reload the model."""
    rank, world, shard = dist.rank, dist.world if dist.group else 1, (dist.rank, dist.world)
    source = open_source(images)
    layers = list(layers or model.layers)
    out = Path(out)
    fp = fingerprint(model, source, layers, cfg.top, cfg.batch_size, cfg.precision)
    labels = source_labels(source, labels_file, model.labels) if cfg.stats else None
    stats_done = not cfg.stats or sharded or stats_complete(out, fp, labels[0], cfg.bottom_k)
    if not force and (shard_complete(out, shard, fp) if sharded else is_complete(out, fp) and stats_done):
        if rank == 0:
            print(f"maxes: {shard_path(out, shard) if sharded else out} is already complete (use --force to recompute)")
        return
    out.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_path(out, shard)
    if force:
        ckpt.unlink(missing_ok=True)
    result = track_maxes(model, source, layers, cfg, shard=shard, checkpoint=ckpt, labels=labels)
    manifest = dict(build_manifest(model, model_spec, source, cfg.batch_size, fp), decode=cfg.decode,
                    precision=cfg.precision)
    if sharded:
        final = save_shard(out, result, manifest, source.names, shard)
        print(f"maxes: shard {shard[0]}/{shard[1]} done -> {final}; run `dvis maxes-merge --run-dir {out}` when all are done")
    else:
        if world > 1:
            parts = dist.gather(result)
            if rank == 0:
                result = merge_results(parts)
                save_result(result, out, manifest, source.names)
            dist.close()
        else:
            save_result(result, out, manifest, source.names)
        if rank == 0:
            print(summary(result, out))
    ckpt.unlink(missing_ok=True)


def summary(result, out: Path) -> str:
    """The closing line of a maxes run (images, skipped as unreadable, layers, units)."""
    units = sum(result.shapes[n][0] for n in result.layers)
    return (f"maxes: {result.n_images} images ({len(result.skipped)} skipped as unreadable), "
            f"{len(result.layers)} layers, {units} units, top {result.top} -> {out}")
