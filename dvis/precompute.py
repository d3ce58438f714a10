"""The precompute pipeline: maxes -> crops -> optimize into a model's unit_vis folder, each step
skipped where its output is already complete for the same inputs and settings."""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from dvis.crops import compute_crops, mosaics, upscale
from dvis.datasets import open_source
from dvis.errors import DvisError
from dvis.maxes import (TrackConfig, fingerprint, layer_shapes, load_result, save_result, track_maxes,
                         weights_digest)
from dvis.optimize import OptSettings, optimize_units
from dvis.receptive_field import receptive_field
from dvis.unit_vis import UnitImages, ensure_manifest, round16, write_layer_json, write_sprite

OPT_MIN_SIDE = 64  # optimized images of small inputs (32x32) are upscaled to this for display


def _r(v: float) -> float | None:
    return None if not np.isfinite(v) else float(f"{v:.6g}")


def unit_vis_root(model, out: str | Path | None) -> Path:
    if out:
        return Path(out)
    if model.unit_vis_dir is None:
        raise DvisError(f"model {model.name} has no model folder; give --out for the unit images")
    return Path(model.unit_vis_dir)


def default_run_dir(model, root: Path) -> Path:
    """Where precompute keeps the maxes run: inside the unit_vis folder, so crops can be redone."""
    return root / "maxes"


def run_maxes_step(model, images: str, run_dir: Path, layers: list[str] | None, cfg: TrackConfig,
                   model_spec: str | None) -> bool:
    """Run ``maxes`` unless ``run_dir`` already holds the same computation; returns whether it ran."""
    source = open_source(images)
    layers = list(layers or model.layers)
    fp = fingerprint(model, source, layers, cfg.top, cfg.batch_size)
    manifest = run_dir / "manifest.json"
    if manifest.is_file() and json.loads(manifest.read_text()).get("fingerprint") == fp:
        return False
    run_dir.mkdir(parents=True, exist_ok=True)
    ckpt = run_dir / "checkpoint.npz"
    result = track_maxes(model, source, layers, cfg, checkpoint=ckpt)
    save_result(result, run_dir, dict(model=model_spec, model_name=model.name, input_size=list(model.input_size),
                                      channels=model.channels, source=str(Path(images).resolve()),
                                      source_kind=source.kind, batch_size=cfg.batch_size,
                                      weights=weights_digest(model.net), fingerprint=fp), source.names)
    ckpt.unlink(missing_ok=True)
    print(f"maxes: {result.n_images} images ({len(result.skipped)} skipped as unreadable) -> {run_dir}")
    return True


def _crops_done(root: Path, layer: str, modes, fp: str) -> bool:
    path = root / layer / "crops.json"
    if not path.is_file():
        return False
    layout = UnitImages(root).layout(layer)
    return json.loads(path.read_text()).get("maxes_fingerprint") == fp and all(k in layout for k in ("top9",) + tuple(modes))


def run_crops_step(model, run_dir: Path, root: Path, layers: list[str] | None = None, modes=("deconv",),
                   batch_size: int = 64, workers: int = 2, images: str | None = None, force: bool = False,
                   progress: bool = True) -> dict[str, int]:
    """Write top-9 and back-projection mosaics plus crops.json for each layer; returns per layer the
    number of re-run activation mismatches (skipped layers are not listed)."""
    result, manifest, names = load_result(run_dir)
    if manifest.get("weights") not in (None, weights_digest(model.net)):
        raise DvisError(f"{run_dir} was computed with other weights of {model.name}; rerun `dvis maxes`")
    source = open_source(images or manifest["source"])
    if source.names != names:
        raise DvisError(f"the images of {images or manifest['source']} differ from those {run_dir} was computed on")
    layers = list(layers or result.layers)
    missing = [n for n in layers if n not in result.layers]
    if missing:
        raise DvisError(f"{run_dir} has no maxes for layer(s) {', '.join(missing)}; it has {', '.join(result.layers)}")
    mismatches = {}
    for layer in layers:
        if not force and _crops_done(root, layer, modes, manifest["fingerprint"]):
            continue
        n = int((result.index[layer] >= 0).sum())
        with tqdm(total=n, unit="patch", desc=f"crops {layer}", disable=not progress) as bar:
            lc = compute_crops(model, result, source, layer, tuple(modes), batch_size, workers, progress=bar.update)
        present = lc.valid.any(1)
        ensure_manifest(root, model.name, layer)
        write_sprite(root, layer, "top9", mosaics(lc.patches), present)
        for mode, backs in lc.backs.items():
            write_sprite(root, layer, mode, mosaics(backs), present)
        units = []
        for u in range(len(present)):  # JSON assembly only; the computation above is batched
            ok = lc.valid[u]
            units.append({
                "values": [_r(v) for v in result.values[layer][u][ok]],
                "images": [names[i] for i in result.index[layer][u][ok]],
                "boxes": lc.boxes[u][ok].tolist(),
                "positions": result.pos[layer][u][ok].tolist() if result.is_conv(layer) else [],
                "recheck": [_r(v) for v in lc.recheck[u][ok]],
            })
        write_layer_json(root, layer, "crops", {"maxes_fingerprint": manifest["fingerprint"], "modes": list(modes),
                                                "mismatches": lc.mismatches, "window_fallbacks": lc.fallbacks,
                                                "units": units})
        mismatches[layer] = lc.mismatches
        if lc.fallbacks:
            print(f"crops {layer}: {lc.fallbacks} receptive-field windows differed from the whole image; "
                  "those pairs were recomputed on the whole image")
        if lc.mismatches:
            print(f"crops {layer}: {lc.mismatches} re-run activations differ from the recorded maxes "
                  "(nondeterminism or preprocessing drift)")
    return mismatches


def opt_tiles(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) optimized images -> display tiles with sides multiples of 16 (>= OPT_MIN_SIDE)."""
    n, h, w, _ = images.shape
    side = round16(max(OPT_MIN_SIDE, h, w))
    big = upscale(images, side)
    tiles = np.zeros((n, side, side, 3), np.uint8)
    bh, bw = big.shape[1:3]
    tiles[:, (side - bh) // 2:(side - bh) // 2 + bh, (side - bw) // 2:(side - bw) // 2 + bw] = big
    return tiles


def crop_to_field(model, layer: str, images: np.ndarray) -> np.ndarray:
    """Conv units are optimized at the layer's centre and only their receptive field can change:
    crop (units, seeds, H, W, 3) images to that box so the display shows the pattern, not padding."""
    shape = layer_shapes(model.net, [layer], (model.channels,) + tuple(model.input_size), model.device)[layer]
    if len(shape) != 3:
        return images
    top, left, bottom, right = receptive_field(model.net, layer, input_size=tuple(model.input_size)).box(
        shape[1] // 2, shape[2] // 2, clip=True)
    return np.ascontiguousarray(images[:, :, top:bottom, left:right])


def run_optimize_step(model, layer: str, root: Path, settings: OptSettings, units=None, run_dir: Path | None = None,
                      force: bool = False, progress: bool = True) -> dict | None:
    """Optimize images for ``layer``'s units and write opt/opt_seeds sprites and opt.json; returns a
    summary (None when skipped as complete)."""
    path = root / layer / "opt.json"
    key = dict(asdict(settings), weights=weights_digest(model.net))  # new weights or settings: recompute
    if not force and units is None and path.is_file() and json.loads(path.read_text()).get("settings") == key:
        return None
    dataset_best = None
    if run_dir is not None and (run_dir / "manifest.json").is_file():
        result, _, _ = load_result(run_dir)
        if layer in result.layers:
            dataset_best = result.values[layer][:, 0]
    n_total = layer_shapes(model.net, [layer], (model.channels,) + tuple(model.input_size), model.device)[layer][0]
    unit_list = np.arange(n_total) if units is None else np.asarray(units)
    with tqdm(total=len(unit_list) * settings.seeds, unit="image", desc=f"optimize {layer}", disable=not progress) as bar:
        res = optimize_units(model, layer, unit_list, settings, progress=bar.update)
    best_seed = res.activations.argmax(1)
    n_seeds = settings.seeds
    res.images = crop_to_field(model, layer, res.images)
    opt = np.zeros((n_total,) + opt_tiles(res.images[:1, 0]).shape[1:], np.uint8)
    seeds_tiles = opt_tiles(res.images.reshape((-1,) + res.images.shape[2:]))
    side = seeds_tiles.shape[1]
    montage = np.zeros((n_total, side, side * n_seeds, 3), np.uint8)
    present = np.zeros(n_total, bool)
    old = UnitImages(root)
    old_json = json.loads(path.read_text()) if path.is_file() and units is not None else None
    if old_json and old_json.get("settings") == key:  # a subset run adds to earlier results
        prev_opt, prev_montage = old.sprite(layer, "opt"), old.sprite(layer, "opt_seeds")
        prev_present = np.array(old.layout(layer).get("opt", {}).get("present", []), bool)
        if prev_opt is not None and prev_montage is not None and len(prev_present) == n_total:
            opt[:], montage[:], present[:] = prev_opt, prev_montage, prev_present
        entries = old_json["units"]
    else:
        entries = [None] * n_total
    opt[unit_list] = opt_tiles(res.images[np.arange(len(unit_list)), best_seed])
    montage[unit_list] = seeds_tiles.reshape(len(unit_list), n_seeds, side, side, 3).transpose(0, 2, 1, 3, 4).reshape(
        len(unit_list), side, side * n_seeds, 3)
    present[unit_list] = True
    ensure_manifest(root, model.name, layer)
    write_sprite(root, layer, "opt", opt, present)
    write_sprite(root, layer, "opt_seeds", montage, present)
    ratios = []
    for i, u in enumerate(unit_list):  # JSON assembly only
        best = float(res.activations[i].max())
        ds = float(dataset_best[u]) if dataset_best is not None and np.isfinite(dataset_best[u]) else None
        ratio = best / ds if ds not in (None, 0.0) and ds > 0 else None
        if ratio is not None:
            ratios.append(ratio)
        entries[int(u)] = {"opt_activations": [_r(v) for v in res.activations[i]], "opt_best_seed": int(best_seed[i]),
                           "dataset_best": _r(ds) if ds is not None else None,
                           "opt_vs_dataset": _r(ratio) if ratio is not None else None}
    write_layer_json(root, layer, "opt", {"settings": key, "units": entries})
    summary = {"layer": layer, "units": len(unit_list), "mean_activation": float(res.activations.max(1).mean())}
    if ratios:
        r = np.array(ratios)
        summary.update(median_ratio=float(np.median(r)), above_dataset=float((r > 1).mean()))
    return summary


def format_opt_summary(s: dict) -> str:
    text = f"optimize {s['layer']}: {s['units']} units, mean best activation {s['mean_activation']:.3g}"
    if "median_ratio" in s:
        text += (f"; vs best dataset image: median ratio {s['median_ratio']:.2f}, "
                 f"{100 * s['above_dataset']:.0f}% of units above")
    return text


def coverage(root: str | Path, layer_units: dict[str, int], kinds=("top9", "deconv", "opt")) -> dict[str, dict[str, list[int]]]:
    """Per layer and kind, the units that have no image (all units when the kind is absent)."""
    vis = UnitImages(root)
    out = {}
    for layer, n in layer_units.items():
        layout = vis.layout(layer)
        out[layer] = {}
        for kind in kinds:
            present = np.zeros(n, bool)
            flags = np.array(layout.get(kind, {}).get("present", []), bool)[:n]
            present[:len(flags)] = flags
            out[layer][kind] = np.flatnonzero(~present).tolist()
    return out


def precompute(model, images: str | Path, out: str | Path | None = None, run_dir: str | Path | None = None,
               layers: list[str] | None = None, track: TrackConfig | None = None, modes=("deconv",),
               settings: OptSettings | None = None, skip: tuple[str, ...] = (), force: bool = False,
               model_spec: str | None = None) -> Path:
    """Run maxes, crops and optimize for ``model`` (a LoadedModel) over ``images`` into its unit_vis
    folder (or ``out``), skipping steps and layers already complete; returns the folder.

    ``model_spec`` is what the maxes manifest records to reload the model (None: the default model).
    """
    root = unit_vis_root(model, out)
    run_dir = Path(run_dir) if run_dir else default_run_dir(model, root)
    layers = list(layers or model.layers)
    track = track or TrackConfig()
    progress = track.progress
    t0 = time.monotonic()
    if "maxes" not in skip:
        if force:
            (run_dir / "manifest.json").unlink(missing_ok=True)
        if not run_maxes_step(model, str(images), run_dir, layers, track, model_spec):
            print(f"maxes: {run_dir} is already complete")
        print(f"maxes: {time.monotonic() - t0:.0f} s")
    t1 = time.monotonic()
    if "crops" not in skip:
        mism = run_crops_step(model, run_dir, root, layers, tuple(modes), track.batch_size, track.workers,
                              str(images), force, progress)
        print(f"crops: {len(mism)} layer(s) written, {sum(mism.values())} activation mismatch(es), "
              f"{time.monotonic() - t1:.0f} s")
    t2 = time.monotonic()
    if "optimize" not in skip:
        for layer in layers:
            summary = run_optimize_step(model, layer, root, settings or OptSettings(), None, run_dir, force, progress)
            print(format_opt_summary(summary) if summary else f"optimize {layer}: already complete")
        print(f"optimize: {time.monotonic() - t2:.0f} s")
    return root
