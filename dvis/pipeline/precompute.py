"""The precompute pipeline: maxes -> crops -> optimize into a model's unit_vis folder.

This module only sequences the steps: each step is skipped where its output is already
complete for the same inputs and settings, and refuses (without ``force``) to replace complete
unit images made from another run or other settings. The computations live in
:mod:`dvis.pipeline.maxes`, :mod:`dvis.pipeline.crops` and :mod:`dvis.pipeline.optimize`; the files in
:mod:`dvis.formats.maxes` and :mod:`dvis.formats.unit_vis`.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from dvis.formats import maxes as maxes_run, unit_vis
from dvis.formats.digest import weights_digest
from dvis.pipeline.crops import layer_crops
from dvis.imaging.datasets import open_source
from dvis.imaging.decode import decode_cpu
from dvis.pipeline.distributed import Shard
from dvis.errors import DvisError
from dvis.pipeline.maxes import TrackConfig, layer_shapes, track_maxes
from dvis.formats.stats import stats_complete
from dvis.imaging.labels import source_labels
from dvis.pipeline.optimize import OptSettings, opt_batches, sharded_optimize, step_seconds
from dvis.formats.paths import unit_vis_write_dir
from dvis.engine.receptive_field import receptive_field


def unit_vis_root(model, out: str | Path | None) -> Path:
    """Where the pipeline writes ``model``'s unit images: ``out``, else :func:`dvis.formats.paths.unit_vis_write_dir`."""
    if out:
        return Path(out)
    root = unit_vis_write_dir(model)
    if root is None:
        raise DvisError(f"model {model.name} has no model folder; give --out for the unit images")
    return root


def default_run_dir(root: Path) -> Path:
    """Where precompute keeps the maxes run: inside the unit_vis folder, so crops can be redone."""
    return root / "maxes"


def refuse_replace(root: Path, what: list[tuple[str, dict | None]], new: str) -> None:
    """Raise unless ``what`` ((layer, provenance) of images about to be replaced) holds no complete images.

    The message names what exists (source, image count, date) and what would replace it."""
    complete = [(layer, info) for layer, info in what if info and info.get("complete")]
    if not complete:
        return
    layers = ", ".join(layer for layer, _ in complete)
    raise DvisError(f"{root} already holds complete unit images for {len(complete)} layer(s) ({layers}): "
                    f"{unit_vis.describe(complete[0][1])}; they would be replaced by {new}. "
                    "Give --force to replace them, or --out for another folder")


def run_maxes_step(model, images: str, run_dir: Path, layers: list[str] | None, cfg: TrackConfig,
                   model_spec: str | None, shard: Shard = Shard(), labels_file: str | None = None) -> bool:
    """Run ``maxes`` unless ``run_dir`` already holds the same computation; returns whether it ran.
    Under torchrun (``shard.group``) each rank tracks its batches and rank 0 merges and writes;
    ``labels_file`` names the images' classes for the unit statistics (default: class folders)."""
    source = open_source(images)
    layers = list(layers or model.layers)
    fp = maxes_run.fingerprint(model, source, layers, cfg.top, cfg.batch_size, cfg.precision)
    labels = source_labels(source, labels_file, model.labels) if cfg.stats else None
    stats_done = not cfg.stats or stats_complete(run_dir, fp, labels[0], cfg.bottom_k or None)
    if shard.agree(maxes_run.is_complete(run_dir, fp) and stats_done):
        return False
    if shard.files:
        raise DvisError(f"{run_dir}: the maxes step runs whole or under torchrun, not as --shard {shard.rank}/{shard.world}; "
                        "run `dvis maxes --shard` and `dvis maxes-merge` first (precompute then skips it)")
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = maxes_run.checkpoint_path(run_dir, (shard.rank, shard.world))
    result = track_maxes(model, source, layers, cfg, shard=(shard.rank, shard.world), checkpoint=ckpt, labels=labels)
    parts = shard.gather(result)
    if parts is not None:
        result = maxes_run.merge_results(parts)
        manifest = dict(maxes_run.build_manifest(model, model_spec, source, cfg.batch_size, fp), decode=cfg.decode,
                        precision=cfg.precision)
        maxes_run.save_result(result, run_dir, manifest, source.names)
        print(f"maxes: {result.n_images} images ({len(result.skipped)} skipped as unreadable) -> {run_dir}")
    shard.barrier()
    ckpt.unlink(missing_ok=True)
    return True


def run_crops_step(model, run_dir: Path, root: Path, layers: list[str] | None = None, modes=("deconv",),
                   batch_size: int = 64, workers: int = 2, images: str | None = None, force: bool = False,
                   progress: bool = True, shard: Shard = Shard()) -> dict[str, int]:
    """Write top-9 and back-projection mosaics plus crops.json for each layer; returns per layer the
    number of re-run activation mismatches (skipped layers are not listed). With a ``shard`` each
    process computes its units and the merging process writes (see :func:`dvis.pipeline.crops.layer_crops`)."""
    result, manifest, names = maxes_run.load_result(run_dir)
    if manifest.get("weights") not in (None, weights_digest(model.net)):
        raise DvisError(f"{run_dir} was computed with other weights of {model.name}; rerun `dvis maxes`")
    source = open_source(images or manifest["source"])
    if source.names != names:
        raise DvisError(f"the images of {images or manifest['source']} differ from those {run_dir} was computed on")
    layers = list(layers or result.layers)
    missing = [n for n in layers if n not in result.layers]
    if missing:
        raise DvisError(f"{run_dir} has no maxes for layer(s) {', '.join(missing)}; it has {', '.join(result.layers)}")
    fp = manifest["fingerprint"]
    todo = shard.agree([n for n in layers if force or not unit_vis.crops_complete(root, n, modes, fp)])
    meta = {"maxes_fingerprint": fp, "source": manifest["source"], "n_images": manifest["n_images"]}
    if not force:
        refuse_replace(root, [(n, unit_vis.provenance(root, n, "crops")) for n in todo],
                       unit_vis.describe(dict(meta, date=unit_vis.now())))
    mismatches = {}
    for layer in todo:
        n = int((result.index[layer] >= 0).sum())
        shown = model.display_names.get(layer, layer)
        with tqdm(total=n, unit="patch", desc=f"crops {shown}", disable=not progress) as bar:
            lc = layer_crops(model, result, source, layer, tuple(modes), batch_size, workers, shard, root / layer,
                             dict(meta, modes=list(modes), batch_size=batch_size), progress=bar.update)
        if lc is None:  # another process merges and writes this layer
            continue
        unit_vis.write_crops_layer(root, model.name, layer, lc, result, names, meta)
        shard.drop_parts(root / layer, f"crops-{layer}")
        mismatches[layer] = lc.mismatches
        if lc.fallbacks:
            print(f"crops {shown}: {lc.fallbacks} receptive-field windows differed from the whole image; "
                  "those pairs were recomputed on the whole image")
        if lc.mismatches:
            print(f"crops {shown}: {lc.mismatches} re-run activations differ from the recorded maxes "
                  "(nondeterminism or preprocessing drift)")
    return mismatches


def crop_to_field(model, layer: str, images: np.ndarray) -> np.ndarray:
    """Conv units are optimized at the layer's centre and only their receptive field can change:
    crop (units, seeds, H, W, ...) images (or attribution maps) to that box so the display shows
    the pattern, not padding."""
    shape = layer_shapes(model.net, [layer], (model.channels,) + tuple(model.input_size), model.device)[layer]
    if len(shape) != 3:
        return images
    top, left, bottom, right = receptive_field(model.net, layer, input_size=tuple(model.input_size)).box(
        shape[1] // 2, shape[2] // 2, clip=True)
    return np.ascontiguousarray(images[:, :, top:bottom, left:right])


def opt_key(model, settings: OptSettings) -> dict:
    """What identifies optimized images: the settings and the weights (new weights or settings: recompute)."""
    return dict(settings.key(), weights=weights_digest(model.net))


def maco_magnitude(run_dir: Path | None) -> tuple[np.ndarray | None, str]:
    """MACO's amplitude spectrum, the dataset's from the maxes run when it has one, and the phrase
    the provenance records for it."""
    found = maxes_run.load_spectrum(run_dir) if run_dir is not None else None
    if found is None:
        return None, "1/f template (the maxes run has no amplitude spectrum)"
    return found[0], f"mean amplitude spectrum of the {found[1]} images of the maxes run {run_dir}"


def top1_images(model, run_dir: Path | None, layer: str, units: np.ndarray) -> np.ndarray:
    """Each unit's top-1 dataset image (units x C x H x W in [0, 1], decoded as the maxes pass
    decoded it): where ``accentuate`` starts. A unit no image reached starts from grey."""
    if run_dir is None or not (run_dir / maxes_run.MANIFEST).is_file():
        raise DvisError("accentuate starts from each unit's top-1 dataset image: run `dvis maxes` first "
                        "(or give --run-dir)")
    result, manifest, names = maxes_run.load_result(run_dir)
    if layer not in result.layers:
        raise DvisError(f"{run_dir} has no maxes for layer {layer}; accentuate starts from its top-1 images")
    source = open_source(manifest["source"])
    position = {n: i for i, n in enumerate(source.names)}
    size = tuple(model.input_size)
    out = np.full((len(units), model.channels) + size, 0.5, np.float32)
    for j, u in enumerate(units):
        i = int(result.index[layer][u, 0])
        if i >= 0 and names[i] in position:
            k = position[names[i]]
            out[j] = decode_cpu(source.read_bytes(k), size, model.channels, names[i]) / 255
    return out


def run_optimize_step(model, layer: str, root: Path, settings: OptSettings, units=None, run_dir: Path | None = None,
                      force: bool = False, progress: bool = True, shard: Shard = Shard()) -> dict | None:
    """Optimize images for ``layer``'s units with ``settings.method`` and write its sprites and JSON
    (:func:`dvis.formats.unit_vis.opt_kinds`: opt/opt_seeds/opt.json for pixel); returns a summary
    (None when skipped as complete, and where another process of a ``shard`` writes). MACO takes
    the maxes run's amplitude spectrum (the 1/f template without one), accentuate its top-1 images."""
    key = opt_key(model, settings)
    method = settings.method
    kind = unit_vis.opt_kinds(method)[0]
    if shard.agree(not force and units is None and unit_vis.opt_complete(root, layer, key, method)):
        return None
    if not force:
        old = unit_vis.provenance(root, layer, kind)
        if old and old.get("settings") != key:
            refuse_replace(root, [(layer, old)], unit_vis.describe({"settings": key, "method": method,
                                                                    "date": unit_vis.now()}))
    dataset_best = None
    if run_dir is not None and (run_dir / maxes_run.MANIFEST).is_file():
        result, _, _ = maxes_run.load_result(run_dir)
        if layer in result.layers:
            dataset_best = result.values[layer][:, 0]
    n_total = layer_shapes(model.net, [layer], (model.channels,) + tuple(model.input_size), model.device)[layer][0]
    unit_list = np.arange(n_total) if units is None else np.asarray(units)
    shown = model.display_names.get(layer, layer)
    magnitude, extra = None, {}
    if method == "maco":
        magnitude, extra["magnitude"] = maco_magnitude(run_dir)
    starts = top1_images(model, run_dir, layer, unit_list) if method == "accentuate" else None
    mine = sum(len(b) for b in shard.mine(opt_batches(len(unit_list), settings)))  # this process's units
    with tqdm(total=mine * settings.seeds, unit="image", desc=f"optimize {shown}", disable=not progress) as bar:
        res = sharded_optimize(model, layer, unit_list, settings, shard, root / layer,
                               dict(key, units=np.asarray(unit_list).tolist()), progress=bar.update,
                               magnitude=magnitude, start_pixels=starts)
    if res is None:
        return None
    shard.drop_parts(root / layer, f"opt-{layer}")
    attribution = None if res.attribution is None else crop_to_field(model, layer, res.attribution)
    ratios = unit_vis.write_opt_layer(root, model.name, layer, n_total, unit_list, crop_to_field(model, layer, res.images),
                                      res.activations, key, dataset_best, method, attribution, extra)
    summary = {"layer": layer, "shown": shown, "units": len(unit_list), "mean_activation": float(res.activations.max(1).mean())}
    if ratios:
        r = np.array(ratios)
        summary.update(median_ratio=float(np.median(r)), above_dataset=float((r > 1).mean()))
    return summary


def check_replace(model, root: Path, images: str, layers: list[str], track: TrackConfig, modes, settings: OptSettings,
                  skip: tuple[str, ...] = ()) -> None:
    """Refuse (see :func:`refuse_replace`) before anything runs if precompute would replace complete
    crops made from other maxes or optimized images made with other settings."""
    if "crops" not in skip:
        source = open_source(images)
        fp = maxes_run.fingerprint(model, source, layers, track.top, track.batch_size, track.precision)
        new = {"source": str(Path(images).resolve()), "n_images": len(source), "date": unit_vis.now()}
        refuse_replace(root, [(n, unit_vis.provenance(root, n, "crops")) for n in layers
                              if not unit_vis.crops_complete(root, n, modes, fp)], unit_vis.describe(new))
    if "optimize" not in skip:
        key = opt_key(model, settings)
        kind = unit_vis.opt_kinds(settings.method)[0]
        old = [(n, unit_vis.provenance(root, n, kind)) for n in layers]
        refuse_replace(root, [(n, info) for n, info in old if info and info.get("settings") != key],
                       unit_vis.describe({"settings": key, "method": settings.method, "date": unit_vis.now()}))


def format_opt_summary(s: dict) -> str:
    text = f"optimize {s.get('shown', s['layer'])}: {s['units']} units, mean best activation {s['mean_activation']:.3g}"
    if "median_ratio" in s:
        text += (f"; vs best dataset image: median ratio {s['median_ratio']:.2f}, "
                 f"{100 * s['above_dataset']:.0f}% of units above")
    return text


def about(seconds: float) -> str:
    """A rough duration for the plan: "under a minute", "about 12 min", "about 3.5 h"."""
    if seconds < 60:
        return "under a minute"
    return f"about {seconds / 60:.0f} min" if seconds < 5400 else f"about {seconds / 3600:.1f} h"


def plan(model, n_images: int, root: Path, layers: list[str], track: TrackConfig, settings: OptSettings,
         skip: tuple[str, ...] = (), force: bool = False, world: int = 1) -> Iterator[str]:
    """The lines saying what each step of :func:`precompute` will do and roughly cost, printed before
    it starts (one by one: the optimize line takes a moment). The optimize estimate times one ascent
    step per layer still to do (:func:`step_seconds`: 1/iters of that layer's first batch); unlike
    maxes and crops it does not shrink with fewer images."""
    shapes = layer_shapes(model.net, layers, (model.channels,) + tuple(model.input_size), model.device)
    units = sum(shapes[n][0] for n in layers)
    yield f"precompute {model.name}: {len(layers)} layer(s), {units:,} units -> {root}"
    if "maxes" not in skip:
        yield (f"  maxes     {n_images:,} images x {len(layers)} layers: one forward pass per "
               f"{track.batch_size}-image batch, top {track.top} per unit")
    if "crops" not in skip:
        yield (f"  crops     {n_images:,} images x {len(layers)} layers: up to {track.top} patches per "
               f"unit, {min(track.top, n_images) * units:,} back-projections at most")
    if "optimize" in skip:
        return
    key = opt_key(model, settings)
    todo = [n for n in layers if force or not unit_vis.opt_complete(root, n, key, settings.method)]
    if not todo:
        yield "  optimize  already complete"
        return
    seconds = sum(len(opt_batches(shapes[n][0], settings)) * settings.iters * step_seconds(model, n, settings)
                  for n in todo) / world
    yield (f"  optimize  {sum(shapes[n][0] for n in todo):,} units x {settings.seeds} seeds x {settings.iters} "
           f"steps in {len(todo)} layer(s): {about(seconds)} (one step timed per layer), "
           "the same however few images are given")


def precompute(model, images: str | Path, out: str | Path | None = None, run_dir: str | Path | None = None,
               layers: list[str] | None = None, track: TrackConfig | None = None, modes=("deconv",),
               settings: OptSettings | None = None, skip: tuple[str, ...] = (), force: bool = False,
               model_spec: str | None = None, shard: Shard = Shard(), labels_file: str | None = None) -> Path:
    """Run maxes, crops and optimize for ``model`` (a LoadedModel) over ``images`` into its unit_vis
    folder (or ``out``), skipping steps and layers already complete; returns the folder.

    ``model_spec`` is what the maxes manifest records to reload the model (None: the default model).
    Under torchrun (``shard``) every rank runs each step on its share, rank 0 writes, and all
    wait for each other between steps; with a ``--shard i/N`` share the maxes step must be complete
    already, and the last shard to finish each crops or optimize layer writes it.
    ``labels_file``: the images' classes for the unit statistics (default: class folders).
    """
    root = unit_vis_root(model, out)
    run_dir = Path(run_dir) if run_dir else default_run_dir(root)
    layers = list(layers or model.layers)
    track = track or TrackConfig()
    settings = settings or OptSettings()
    progress = track.progress
    if not force:  # before the maxes step replaces the run the existing crops came from
        check_replace(model, root, str(images), layers, track, tuple(modes), settings, skip)
    if shard.main:
        for line in plan(model, len(open_source(str(images))), root, layers, track, settings, skip, force,
                         shard.world):
            print(line, flush=True)
    t0 = time.monotonic()
    if "maxes" not in skip:
        if force and shard.main and not shard.files:  # --shard jobs never redo the maxes (see run_maxes_step)
            (run_dir / maxes_run.MANIFEST).unlink(missing_ok=True)
        shard.barrier()
        if not run_maxes_step(model, str(images), run_dir, layers, track, model_spec, shard, labels_file) and shard.main:
            print(f"maxes: {run_dir} is already complete")
        if shard.main:
            print(f"maxes: {time.monotonic() - t0:.0f} s")
    t1 = time.monotonic()
    if "crops" not in skip:
        mism = run_crops_step(model, run_dir, root, layers, tuple(modes), track.batch_size, track.workers,
                              str(images), force, progress, shard)
        shard.barrier()
        if shard.main:
            print(f"crops: {len(mism)} layer(s) written, {sum(mism.values())} activation mismatch(es), "
                  f"{time.monotonic() - t1:.0f} s")
    t2 = time.monotonic()
    if "optimize" not in skip:
        for layer in layers:
            summary = run_optimize_step(model, layer, root, settings, None, run_dir, force, progress, shard)
            if shard.main:
                print(format_opt_summary(summary) if summary
                      else f"optimize {model.display_names.get(layer, layer)}: already complete")
        shard.barrier()
        if shard.main:
            print(f"optimize: {time.monotonic() - t2:.0f} s")
    return root
