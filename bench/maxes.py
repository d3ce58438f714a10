"""Benchmark of the precompute pipeline (prints figures; no asserts).

1. Max tracker vs ceiling: images/s of tracking every conv and fc layer of AlexNet (random init,
   224x224) against a plain batched ``inference_mode`` forward of the same net over the same
   in-memory images (goal: ratio >= 0.95 on CPU), then the same with unit statistics
   (dvis.formats.stats, 1000 classes; goal >= 0.90).
2. End to end: images/s of ``track_maxes`` from a folder of JPEGs, decoding in DataLoader workers.
3. Crops: seconds per unit (its top 9 patches, deconv) for conv1 and conv5, batched (on
   receptive-field windows where fields are small) vs the naive way (one full-image
   forward+backward per patch).
4. With ``--load N`` (instead of 1-3): img/s of ``track_maxes`` end to end on a quiet machine and
   with N busy-loop processes alongside, for each priority of the decoding workers
   (dvis.imaging.decode.WORKER_PRIORITY: gated, the default; idle; default), so that both the
   quiet-machine gain and the behaviour under load show. Run it under ``flock /tmp/dvis-cpu.lock``.

Usage: python bench/maxes.py [--tracker-images 2048] [--images 256] [--batch-size 64] [--workers 2] [--device cpu]
       python bench/maxes.py --load 8 [--images 128]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

from dvis.runtime.openmp import describe, shorten_spin_wait

if "--openmp-default" not in sys.argv:  # run as `dvis maxes` does; the flag compares with libgomp's default
    shorten_spin_wait()

import numpy as np  # noqa: E402 - after the OpenMP setting, which must precede torch
import torch  # noqa: E402
from PIL import Image
from torch import nn

from dvis.engine.backproject import backproject_batch
from dvis.pipeline.crops import compute_crops
from dvis.imaging.datasets import ImageSource, fit_image, open_source
from dvis.pipeline.maxes import TopKState, TrackConfig, layer_shapes, max_hooks, track_maxes
from dvis.pipeline.stats import StatsState
from dvis.formats.maxes import MaxResult
from dvis.models.loading import load_model


def tracked_layers(net: nn.Module) -> list[str]:
    return [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def bench_tracker(model, x: torch.Tensor, batch: int, repeats: int = 2, stats: bool = False) -> tuple[float, float]:
    """Images/s of (tracking, plain forward) over uint8 images ``x`` (N x 3 x H x W).

    Each batch is run plain and tracked back to back (order alternating) and the two are timed
    separately, so load drifts on a shared machine hit both equally; best of ``repeats`` passes.
    Tracking merges only units whose top-k can change, so its cost per batch falls as more images
    are seen: use a few thousand images."""
    net, layers = model.net, tracked_layers(model.net)
    shapes = layer_shapes(net, layers, tuple(x.shape[1:]), model.device)
    n = len(x)

    def sync() -> None:
        if model.device.type == "cuda":
            torch.cuda.synchronize()

    best_plain = best_tracked = 0.0
    for _ in range(repeats):
        state = TopKState({k: s[0] for k, s in shapes.items()}, 9, model.device)
        # With ``stats``: the unit statistics too, with 1000 classes (random labels).
        acc = StatsState(shapes, 1000, model.device) if stats else None
        t_plain = t_tracked = 0.0
        with torch.inference_mode():
            for b, i in enumerate(range(0, n, batch)):
                xb = model.normalize(x[i:i + batch].to(model.device).float().div_(255))
                for tracked in ((False, True) if b % 2 == 0 else (True, False)):
                    sync()
                    t = time.perf_counter()
                    if tracked:
                        with max_hooks(net, state, layers, acc) as current:
                            current["index"] = torch.arange(i, i + len(xb), device=model.device)
                            current["labels"] = current["index"] % 1000
                            net(xb)
                    else:
                        net(xb)
                    sync()
                    if tracked:
                        t_tracked += time.perf_counter() - t
                    else:
                        t_plain += time.perf_counter() - t
        best_plain, best_tracked = max(best_plain, n / t_plain), max(best_tracked, n / t_tracked)
    return best_tracked, best_plain


def write_jpegs(folder: Path, n: int, size: int = 256) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (8, size // 8, size // 8, 3), dtype=np.uint8)
    for i in range(n):
        img = np.kron(base[i % 8], np.ones((8, 8, 1), np.uint8)) ^ np.uint8(i)
        Image.fromarray(img).save(folder / f"img{i:05d}.jpg", quality=90)


def first_units(result: MaxResult, layer: str, units: int) -> MaxResult:
    """The top-9 of a layer's first ``units`` units (for timing crops on a few units)."""
    return MaxResult([layer], {layer: (units,) + result.shapes[layer][1:]}, result.top,
                     {layer: result.values[layer][:units]}, {layer: result.index[layer][:units]},
                     {layer: result.pos[layer][:units]}, result.n_images)


def bench_crops(model, full: MaxResult, source: ImageSource, layer: str, units: int, batch: int) -> tuple[float, float]:
    """(batched, naive) seconds per unit of deconv crops of its top 9 patches."""
    result = first_units(full, layer, units)
    t = time.perf_counter()
    lc = compute_crops(model, result, source, layer, ("deconv",), batch_size=batch, workers=0)
    batched = (time.perf_counter() - t) / units
    if lc.mismatches:
        print(f"  warning: {lc.mismatches} re-run mismatches in {layer}")
    t = time.perf_counter()
    for u in range(units):
        for j in range(9):
            img = fit_image(source.load(int(result.index[layer][u, j])), model.input_size, model.channels)
            x = model.normalize(torch.from_numpy(img)[None].float() / 255)
            at = torch.from_numpy(result.pos[layer][u, j:j + 1].astype(np.int64))
            backproject_batch(model.net, x.to(model.device), layer, [u], mode="deconv", at=at.to(model.device))
    naive = (time.perf_counter() - t) / units
    return batched, naive


def spin() -> None:
    while True:
        pass


def bench_load(model, source: ImageSource, cfg: TrackConfig, load: int) -> None:
    """img/s of track_maxes per worker priority, quiet and beside ``load`` busy-loop processes."""
    import multiprocessing

    from dvis.imaging import decode

    layers = tracked_layers(model.net)
    for busy in (0, load):
        hogs = [multiprocessing.Process(target=spin, daemon=True) for _ in range(busy)]
        for h in hogs:
            h.start()
        try:
            for priority in ("gated", "idle", "default"):
                decode.WORKER_PRIORITY = priority
                t = time.perf_counter()
                track_maxes(model, source, layers, cfg)
                print(f"load {busy:2d} busy loops, workers {priority:7s}: {len(source) / (time.perf_counter() - t):6.1f} img/s",
                      flush=True)
        finally:
            decode.WORKER_PRIORITY = "gated"
            for h in hogs:
                h.terminate()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tracker-images", type=int, default=2048, help="in-memory images for tracker vs forward")
    p.add_argument("--images", type=int, default=256, help="JPEGs for the end-to-end and crops figures")
    p.add_argument("--batch-size", type=int, default=64, help="images per batch (default: dvis maxes' default)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--crop-units", type=int, default=4)
    p.add_argument("--device", default="cpu")
    p.add_argument("--load", type=int, default=None, metavar="N",
                   help="only compare the workers' priorities, quiet and beside N busy-loop processes")
    p.add_argument("--openmp-default", action="store_true",
                   help="keep libgomp's default spin-wait instead of the shorter one `dvis` commands set (dvis.runtime.openmp)")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    model = load_model("alexnet", device=args.device, weights="none")  # random init: no download
    print(f"device {model.device}, torch threads {torch.get_num_threads()} ({describe()}), AlexNet (random init) 224x224, "
          f"{len(tracked_layers(model.net))} tracked layers")
    if args.load is not None:
        with tempfile.TemporaryDirectory() as tmp:
            write_jpegs(Path(tmp), args.images)
            bench_load(model, open_source(tmp), TrackConfig(top=9, batch_size=args.batch_size, workers=args.workers,
                                                            progress=False), args.load)
        return 0

    x = torch.randint(0, 256, (args.tracker_images, 3, 224, 224), dtype=torch.uint8,
                      generator=torch.Generator().manual_seed(0))
    tracked, plain = bench_tracker(model, x, args.batch_size)
    print(f"{len(x)} images: tracker {tracked:.1f} img/s   plain forward {plain:.1f} img/s   ratio {tracked / plain:.3f}")
    tracked, plain = bench_tracker(model, x, args.batch_size, stats=True)
    print(f"{len(x)} images: tracker+stats {tracked:.1f} img/s   plain forward {plain:.1f} img/s   "
          f"ratio {tracked / plain:.3f}")

    with tempfile.TemporaryDirectory() as tmp:
        write_jpegs(Path(tmp), args.images)
        source = open_source(tmp)
        cfg = TrackConfig(top=9, batch_size=args.batch_size, workers=args.workers, progress=False)
        t = time.perf_counter()
        full = track_maxes(model, source, tracked_layers(model.net), cfg)
        print(f"dvis maxes end to end (256x256 JPEGs, {args.workers} workers): "
              f"{len(source) / (time.perf_counter() - t):.1f} img/s")
        for layer in ("features.0", "features.10"):
            batched, naive = bench_crops(model, full, source, layer, args.crop_units, args.batch_size)
            print(f"crops {layer} ({'conv1' if layer == 'features.0' else 'conv5'}): {batched:.3f} s/unit batched, "
                  f"{naive:.3f} s/unit naive (per-patch forward+backward), speed-up {naive / batched:.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
