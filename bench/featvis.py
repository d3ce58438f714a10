#!/usr/bin/env python
"""Feature visualization methods measured side by side (issue 22): transfer, activation, spectrum, speed.

    flock /tmp/dvis-cpu.lock python bench/featvis.py --images ../shared/datasets/cifar10-jpg.tar.gz \
        [--model zf-cifar10] [--independent models/zf-cifar10/checkpoints/epoch-010.pt] \
        [--natural 500] [--units 16] [--speed-units 4] [--speed-steps 8] [--figure docs/figures/featvis.png]

For each method (dvis's ``pixel`` at its shipped settings and at 256 steps, ``fourier``, ``maco``
with the dataset's amplitude spectrum and with the 1/f template, ``accentuate``):

* **transfer**: every class logit of the source model is optimized (best of the seeds) and the
  image is classified by the other model; the share classified as the target class (and by the
  source model itself). With only zf-cifar10 trained, the "other model" is one of its own training
  checkpoints: a weaker, not an independent, net (the figure is an upper bound of real transfer);
* **activation reached** relative to each unit's best dataset image (the maxes run beside the
  model's unit images), for the class logits and a sample of ``--layer`` units;
* **high-frequency share**: spectral energy above half the Nyquist frequency, against ``--natural``
  dataset images;
* **speed** on a random-init torchvision net at 224 px: units per second of dvis's batched
  ``maco``/``fourier`` against horama's ``maco``/``fourier`` and torch-lucent's ``render_vis``, one
  unit at a time as they work, at the same steps, size and number of views.

Everything runs on the CPU and offline: horama gets a local magnitude file (its download is never
reached), lucent runs without its pinned dependencies.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import cv2
import numpy as np
import torch

from dvis.engine.geometry import model_geometry
from dvis.formats.maxes import load_result
from dvis.imaging.datasets import open_source
from dvis.models.loading import load_model
from dvis.optvis.fourier import amplitude_spectrum, high_frequency_share
from dvis.optvis.settings import OptSettings
from dvis.pipeline.optimize import optimize_units

METHODS = {
    "pixel": dict(method="pixel"),
    "pixel-256": dict(method="pixel", iters=256),
    "fourier": dict(method="fourier"),
    "maco": dict(method="maco"),
    "maco-1/f": dict(method="maco"),
    "accentuate": dict(method="accentuate"),
}


def natural_images(source, n: int, size: tuple[int, int]) -> torch.Tensor:
    """The first ``n`` images of ``source`` (evenly spread) as N x 3 x H x W floats in [0, 1]."""
    idx = np.linspace(0, len(source) - 1, min(n, len(source))).astype(int)
    imgs = [cv2.resize(source.load(int(i)), size[::-1], interpolation=cv2.INTER_AREA) for i in idx]
    return torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2).float() / 255


def best_seed(pixels: np.ndarray, acts: np.ndarray) -> np.ndarray:
    """(units, C, H, W) of each unit's best seed."""
    return pixels[np.arange(len(pixels)), acts.argmax(1)]


def run_method(model, layer: str, units, name: str, magnitude, starts, iters: int | None
               ) -> tuple[np.ndarray, np.ndarray, float]:
    """(pixels in [0, 1] per unit and seed, activations per unit and seed, seconds); ``iters``
    overrides the spectral methods' steps."""
    kw = dict(METHODS[name])
    if iters and kw["method"] != "pixel":
        kw["iters"] = iters
    s = OptSettings(**kw)
    t0 = time.perf_counter()
    res = optimize_units(model, layer, units, s, magnitude=None if name == "maco-1/f" else magnitude,
                         start_pixels=starts if name == "accentuate" else None)
    dt = time.perf_counter() - t0
    pixels = np.clip(res.pixels + np.asarray(model.mean, np.float32).reshape(1, 1, -1, 1, 1), 0, 1)
    return pixels, res.activations, dt


def classify(model, pixels: np.ndarray) -> np.ndarray:
    x = model.normalize(torch.from_numpy(np.ascontiguousarray(pixels)).float())
    with torch.no_grad():
        return model.net(x).argmax(1).numpy()


def top1_pixels(model, run_dir: Path, source, layer: str, units: list[int]) -> np.ndarray | None:
    """Each unit's top-1 dataset image (from the maxes run, read from ``source``), or None when the
    run's images are not in ``source``."""
    result, _, names = load_result(run_dir)
    index = {n: i for i, n in enumerate(source.names)}
    wanted = [names[result.index[layer][u, 0]] for u in units]
    found = [next((index[k] for k in index if k.endswith(w) or w.endswith(k)), None) for w in wanted]
    if any(f is None for f in found):
        return None
    size = tuple(model.input_size)
    imgs = [cv2.resize(source.load(i), size[::-1], interpolation=cv2.INTER_AREA) for i in found]
    return np.stack(imgs).transpose(0, 3, 1, 2).astype(np.float32) / 255


def figure(rows: dict[str, np.ndarray], labels: list[str], natural: np.ndarray, path: Path) -> None:
    """Methods as rows, classes as columns (each image x4, nearest), a dataset row first."""
    scale, pad, left = 4, 4, 110
    all_rows = {"dataset": natural, **rows}
    h, w = natural.shape[2] * scale, natural.shape[3] * scale
    n = natural.shape[0]
    canvas = np.full((24 + len(all_rows) * (h + pad), left + n * (w + pad), 3), 255, np.uint8)
    for j, lab in enumerate(labels[:n]):
        cv2.putText(canvas, lab[:9], (left + j * (w + pad), 16), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (0, 0, 0), 1)
    for i, (name, imgs) in enumerate(all_rows.items()):
        y = 24 + i * (h + pad)
        cv2.putText(canvas, name, (4, y + h // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1)
        for j in range(n):
            tile = (np.clip(imgs[j], 0, 1) * 255).round().astype(np.uint8).transpose(1, 2, 0)
            tile = cv2.resize(tile, (w, h), interpolation=cv2.INTER_NEAREST)
            canvas[y:y + h, left + j * (w + pad):left + j * (w + pad) + w] = tile
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))


def speed(size: int, units: int, steps: int, views: int) -> None:
    """Units per second: dvis batched against horama and lucent one unit at a time."""
    from torchvision.models import resnet18

    net = resnet18().eval()
    for p in net.parameters():
        p.requires_grad_(False)
    layer, spec = "layer3", f"{size}"
    model = load_model("resnet18", weights="none")
    model.net.load_state_dict(net.state_dict())
    mean = torch.tensor(model.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.std).view(1, 3, 1, 1)
    feats = {}
    net.layer3.register_forward_hook(lambda m, i, o: feats.__setitem__("out", o))
    print(f"\nspeed: random-init resnet18 at {spec} px, {layer} channels (centre), {units} units, {steps} steps, "
          f"{views} views per step, torch threads {torch.get_num_threads()}")
    out = {}
    for method in ("maco", "fourier"):
        s = OptSettings(method=method, iters=steps, seeds=1, views=views, batch_size=units)
        t0 = time.perf_counter()
        optimize_units(model, layer, list(range(units)), s)
        out[f"dvis {method}"] = units / (time.perf_counter() - t0)
        print(f"  dvis {method}: {out[f'dvis {method}']:.3f} units/s", flush=True)
    import horama

    with tempfile.TemporaryDirectory() as tmp:
        cwd = os.getcwd()
        os.chdir(tmp)  # horama reads its magnitude file from the current folder (no download when present)
        np.save("spectrum_decorrelated.npy", np.ones((3, size, size // 2 + 1), np.float32)
                / np.maximum(np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.rfftfreq(size)[None] ** 2), 1 / size))
        try:
            for fn_name in ("maco", "fourier"):
                fn = getattr(horama, fn_name)
                t0 = time.perf_counter()
                for u in range(units):
                    def objective(images, u=u):
                        net((images - mean) / std)
                        f = feats["out"]
                        return f[:, u, f.shape[2] // 2, f.shape[3] // 2].mean()
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        fn(objective, total_steps=steps, image_size=size, model_input_size=size,
                           crops_per_iteration=views, values_range=(0.0, 1.0), device="cpu")
                out[f"horama {fn_name}"] = units / (time.perf_counter() - t0)
                print(f"  horama {fn_name}: {out[f'horama {fn_name}']:.3f} units/s", flush=True)
        finally:
            os.chdir(cwd)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import kornia
        from lucent.optvis import param, render

        # torch-lucent calls kornia.get_rotation_matrix2d and kornia.warp_affine, which newer kornia
        # keeps only under kornia.geometry.transform (lucent issues #20/#21): point the old names there.
        for name in ("get_rotation_matrix2d", "warp_affine"):
            if not hasattr(kornia, name):
                setattr(kornia, name, getattr(kornia.geometry.transform, name))

        t0 = time.perf_counter()
        for u in range(units):
            render.render_vis(net, f"layer3:{u}", param_f=lambda: param.image(size, fft=True, decorrelate=True),
                              thresholds=(steps,), show_image=False, progress=False, fixed_image_size=size)
        out["lucent render_vis (fourier)"] = units / (time.perf_counter() - t0)
    for k, v in out.items():
        print(f"  {k:28s} {v:7.3f} units/s")
    print(f"  dvis maco / horama maco: {out['dvis maco'] / out['horama maco']:.1f}x; dvis fourier / horama fourier: "
          f"{out['dvis fourier'] / out['horama fourier']:.1f}x; dvis fourier / lucent: "
          f"{out['dvis fourier'] / out['lucent render_vis (fourier)']:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", required=True, help="the dataset's natural images (a folder or tar)")
    ap.add_argument("--pattern", default=None, help="regular expression the images' paths must match (e.g. ^test/)")
    ap.add_argument("--model", default="zf-cifar10")
    ap.add_argument("--independent", default=None,
                    help="weights of the model images are classified by (default: the model's 10th-epoch checkpoint)")
    ap.add_argument("--layer", default="conv5", help="layer whose units the activation figure samples")
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--iters", type=int, default=None, help="steps of the spectral methods (default: their own)")
    ap.add_argument("--natural", type=int, default=500)
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--speed-size", type=int, default=224)
    ap.add_argument("--speed-units", type=int, default=4)
    ap.add_argument("--speed-steps", type=int, default=8)
    ap.add_argument("--speed-views", type=int, default=2)
    ap.add_argument("--no-speed", action="store_true")
    ap.add_argument("--only-speed", action="store_true")
    ap.add_argument("--figure", default="docs/figures/featvis.png")
    args = ap.parse_args()
    torch.manual_seed(0)
    warnings.filterwarnings("ignore", message=r"model .*random init")
    if args.only_speed:
        speed(args.speed_size, args.speed_units, args.speed_steps, args.speed_views)
        return
    src = load_model(args.model)
    other_weights = args.independent or str(next(p for p in src.checkpoints if p.stem == "epoch-010"))
    other = load_model(args.model, weights=other_weights)
    source = open_source(args.images, pattern=args.pattern)
    natural = natural_images(source, args.natural, tuple(src.input_size))
    magnitude = amplitude_spectrum(natural).mean(0)
    run_dir = next((Path(d) / "maxes" for d in src.unit_vis_dirs if (Path(d) / "maxes" / "manifest.json").is_file()),
                   None)
    dataset = load_result(run_dir)[0] if run_dir else None
    head = src.layers[-1]
    n_classes = model_geometry(src)[head].channels
    classes = list(range(n_classes))
    conv_units = list(range(0, model_geometry(src)[args.layer].channels,
                            max(1, model_geometry(src)[args.layer].channels // args.units)))[:args.units]
    starts = {layer: top1_pixels(src, run_dir, source, layer, u) if run_dir else None
              for layer, u in ((head, classes), (args.layer, conv_units))}
    print(f"source {src.name} ({args.model}), classified by {other_weights}; {len(natural)} natural images "
          f"from {args.images}; run {run_dir}")
    print(f"natural images: high-frequency share {high_frequency_share(natural).mean():.4f}")
    nat_hf = float(high_frequency_share(natural).mean())
    rows = {}
    print(f"\n{'method':12s} {'transfer':>8s} {'self':>6s} {'act/ds logit':>12s} {'act/ds ' + args.layer:>12s} "
          f"{'hf share':>8s} {'hf/nat':>6s} {'s':>6s}")
    for name in args.methods.split(","):
        if name == "accentuate" and starts[head] is None:
            print(f"{name:12s} skipped: the maxes run's images are not in {args.images}")
            continue
        pix, acts, dt = run_method(src, head, classes, name, magnitude, starts[head], args.iters)
        best = best_seed(pix, acts)
        rows[name] = best
        transfer = float((classify(other, best) == np.array(classes)).mean())
        self_ = float((classify(src, best) == np.array(classes)).mean())
        cpix, cacts, cdt = run_method(src, args.layer, conv_units, name, magnitude, starts[args.layer], args.iters)
        ratios = []
        for layer, units, a in ((head, classes, acts), (args.layer, conv_units, cacts)):
            ds = dataset.values[layer][units, 0] if dataset is not None else np.full(len(units), np.nan)
            ok = ds > 0
            ratios.append(float(np.median(a.max(1)[ok] / ds[ok])) if ok.any() else float("nan"))
        hf = float(high_frequency_share(torch.from_numpy(np.concatenate([best, best_seed(cpix, cacts)]))).mean())
        print(f"{name:12s} {transfer:8.2f} {self_:6.2f} {ratios[0]:12.2f} {ratios[1]:12.2f} {hf:8.4f} "
              f"{hf / nat_hf:6.2f} {dt + cdt:6.1f}")
    labels = list(src.labels or [str(c) for c in classes])
    nat_rows = starts[head] if starts[head] is not None else natural[:n_classes].numpy()
    figure(rows, labels, nat_rows, Path(args.figure))
    print(f"figure: {args.figure} (rows: the top-1 dataset image of each class logit, then each method's best seed)")
    if not args.no_speed:
        speed(args.speed_size, args.speed_units, args.speed_steps, args.speed_views)


if __name__ == "__main__":
    main()
