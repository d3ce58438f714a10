"""``dvis maxes`` (top-k images per unit over a dataset) and ``dvis maxes-merge`` (join shard results)."""
from __future__ import annotations

from pathlib import Path

from dvis.cli import add_layers_argument, add_model_argument, default_workers, parse_layers


def register(sub) -> None:
    p = sub.add_parser("maxes", help="find the top-k dataset images of every unit",
                       description="Track, for every unit of the chosen layers, the k images that excite it most. "
                                   "Resumable; shards with --shard i/N or torchrun.")
    add_model_argument(p)
    p.add_argument("--images", required=True, help="image folder (recursive), list file, or .tar/.tar.gz")
    p.add_argument("--out", required=True, help="run folder to write")
    p.add_argument("--top", type=int, default=9)
    add_layers_argument(p, "the model's layers")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--workers", type=int, default=default_workers(), help="DataLoader decoding workers")
    p.add_argument("--device", default="cpu")
    p.add_argument("--decode", choices=("cpu", "gpu", "auto"), default="auto",
                   help="JPEG decoding: gpu = nvjpeg on the device, cpu = workers (auto: gpu on a CUDA device)")
    p.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="forward precision (fp32 is exact; see docs/pipeline.md for bf16/fp16 agreement)")
    p.add_argument("--shard", help="i/N: process only shard i of N (merge with `dvis maxes-merge`)")
    p.add_argument("--checkpoint-every", type=float, default=30.0, help="seconds between checkpoints")
    p.add_argument("--force", action="store_true", help="recompute even if the run folder is complete")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--bottom-k", type=int, default=0, help="also keep each unit's K least-activating images")
    p.add_argument("--labels", help="labels file (lines '<image name> <class>'); default: class folders")
    p.add_argument("--no-stats", action="store_true", help="skip the unit statistics (stats.npz, see docs/atlas.md)")
    p.set_defaults(func=run_maxes)

    m = sub.add_parser("maxes-merge", help="merge `dvis maxes --shard` results into one run",
                       description="Merge RUN/shards/*.npz (and any extra shard files given) into RUN.")
    m.add_argument("run")
    m.add_argument("shards", nargs="*", help="extra shard .npz files (e.g. from other machines)")
    m.set_defaults(func=run_merge)


def run_maxes(args) -> int:
    from dvis.imaging.datasets import open_source
    from dvis.pipeline.maxes import TrackConfig, track_maxes
    from dvis.formats.maxes import (build_manifest, checkpoint_path, fingerprint, is_complete, merge_results,
                                save_result, save_shard, shard_complete, shard_path)
    from dvis.models.loading import load_model
    from dvis.formats.stats import source_labels, stats_complete

    from dvis.imaging.decode import resolve
    from dvis.pipeline.distributed import setup

    dist, device = setup(args.device, args.shard)
    rank, world, shard = dist.rank, dist.world if dist.group else 1, (dist.rank, dist.world)
    model = load_model(args.model, device=device)
    source = open_source(args.images)
    layers = parse_layers(args.layers, model) or list(model.layers)
    out = Path(args.out)
    fp = fingerprint(model, source, layers, args.top, args.batch_size, args.precision)
    sharded = args.shard is not None
    labels = None if args.no_stats else source_labels(source, args.labels, model.labels)
    stats_done = args.no_stats or sharded or stats_complete(out, fp, labels[0], args.bottom_k)
    if not args.force and (shard_complete(out, shard, fp) if sharded else is_complete(out, fp) and stats_done):
        if rank == 0:
            print(f"maxes: {shard_path(out, shard) if sharded else out} is already complete (use --force to recompute)")
        return 0
    out.mkdir(parents=True, exist_ok=True)
    ckpt = checkpoint_path(out, shard)
    if args.force:
        ckpt.unlink(missing_ok=True)
    cfg = TrackConfig(top=args.top, batch_size=args.batch_size, workers=args.workers,
                      checkpoint_every=args.checkpoint_every, progress=not args.quiet and rank == 0,
                      stats=not args.no_stats, bottom_k=args.bottom_k, decode=resolve(args.decode, model.device),
                      precision=args.precision)
    result = track_maxes(model, source, layers, cfg, shard=shard, checkpoint=ckpt, labels=labels)
    manifest = dict(build_manifest(model, args.model, source, args.batch_size, fp), decode=cfg.decode,
                    precision=cfg.precision)
    if sharded:
        final = save_shard(out, result, manifest, source.names, shard)
        print(f"maxes: shard {shard[0]}/{shard[1]} done -> {final}; run `dvis maxes-merge {out}` when all are done")
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
            summary(result, out)
    ckpt.unlink(missing_ok=True)
    return 0


def summary(result, out: Path) -> None:
    """The closing line of a maxes run (images, skipped as unreadable, layers, units)."""
    units = sum(result.shapes[n][0] for n in result.layers)
    print(f"maxes: {result.n_images} images ({len(result.skipped)} skipped as unreadable), "
          f"{len(result.layers)} layers, {units} units, top {result.top} -> {out}")


def run_merge(args) -> int:
    from dvis.formats.maxes import merge_shards

    summary(merge_shards(args.run, args.shards), Path(args.run))
    return 0
