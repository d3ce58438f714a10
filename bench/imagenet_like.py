"""ImageNet-shaped benchmark of `dvis maxes`: decoding, forward and the whole command.

    python bench/imagenet_like.py --n 2000 --device cpu
    python bench/imagenet_like.py --n 20000 --device cuda

Writes N JPEGs shaped like ImageNet's training images (mostly 500x375, some 375x500 and 500x333,
quality 90; random crops, scales and flips of scikit-image's photos) into a temporary folder,
then prints decode-only img/s per decoder, forward-only img/s, `dvis maxes` end-to-end img/s for
AlexNet and ResNet-50 (random init, no download), each end-to-end figure as a fraction of
min(decode-only, forward-only), and the projected wall time for ImageNet's 1.28 M images.

Each round measures the forward right before and right after its end-to-end run, and the
round's fraction is against the mean of the two; the script prints every round, the median of the
rounds' fractions, and the best end to end against the best forward of all (the conservative
figure). The end-to-end run is reported twice: over the whole run, and steady: the rate between two
batches in the middle of the run, once the DataLoader's prefetch queue (2 batches per worker) is
full and before it drains at the end, so that the decoding and the forwards in that window are
the same batches. The forward-only figure is timed after a warm-up batch, so the steady figure
is the like-for-like fraction; the rest of the run's time (the workers' start, the first
batches' wait, the drain) is printed as "set-up" in seconds, and the 1.28 M projection is
set-up + 1.28 M / steady rate.
"""
from __future__ import annotations

import argparse
import os
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

IMAGENET = 1_281_167
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "hubble_deep_field.jpg", "ihc.png", "motorcycle_left.png",
          "motorcycle_right.png", "retina.jpg", "rocket.jpg", "camera.png", "moon.png", "coins.png", "grass.png",
          "gravel.png", "brick.png")
SHAPES = ((500, 375), (500, 375), (500, 375), (375, 500), (500, 333))  # (width, height), ImageNet's common ones


def photos() -> list[Image.Image]:
    """scikit-image's bundled photos (the `test` extra installs scikit-image)."""
    import skimage

    folder = Path(skimage.__file__).parent / "data"
    return [Image.open(folder / name).convert("RGB") for name in PHOTOS]


def write_images(folder: str | Path, n: int, seed: int = 0, quality: int = 90) -> list[Path]:
    """Write ``n`` ImageNet-shaped JPEGs (random scale, crop and flip of a photo) into ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    src = photos()
    paths = []
    for i in range(n):
        p = src[i % len(src)]
        w, h = SHAPES[int(rng.integers(len(SHAPES)))]
        s = max(w / p.width, h / p.height) * rng.uniform(1.0, 1.6)
        big = p.resize((max(w, round(p.width * s)), max(h, round(p.height * s))), Image.BICUBIC)
        x, y = int(rng.integers(0, big.width - w + 1)), int(rng.integers(0, big.height - h + 1))
        img = big.crop((x, y, x + w, y + h))
        if rng.random() < 0.5:
            img = img.transpose(Image.FLIP_LEFT_RIGHT)
        path = folder / f"{i // 1000:03d}" / f"img{i:06d}.jpg"
        path.parent.mkdir(exist_ok=True)
        img.save(path, quality=quality)
        paths.append(path)
    return paths


def _sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def decode_rate(source, size, mode: str, device, workers: int, batch: int, reference: bool = False) -> float:
    """img/s of decoding ``source`` to ``size`` through DataLoader workers (the pipeline's decode
    capacity), with ``reference`` Pillow + OpenCV resize instead of dvis.imaging.decode's choice."""
    from dvis.imaging.datasets import ImageDataset, fit_image
    from dvis.imaging.decode import load_batches

    class Reference(ImageDataset):
        def __getitem__(self, i):
            return torch.from_numpy(fit_image(self.source.load(i), self.size, self.channels)), True, i

    ds = (Reference if reference else ImageDataset)(source, size, 3, mode)
    t = time.perf_counter()
    for raw in load_batches(ds, device, batch_size=batch, num_workers=workers, collate_fn=ds.decoder.collate):
        ds.decoder.finish(raw, device)
    _sync(device)
    return len(source) / (time.perf_counter() - t)


def forward_rate(model, n: int, batch: int, precision: str) -> float:
    """img/s of the plain forward (normalize + net) over in-memory uint8 batches on the device."""
    from dvis.runtime.precision import autocast

    x = torch.randint(0, 256, (batch, 3) + tuple(model.input_size), dtype=torch.uint8, device=model.device)
    with torch.inference_mode(), autocast(precision, model.device):
        model.net(model.normalize(x.float().div_(255), inplace=True))  # warm-up: as track_maxes does
        _sync(model.device)
        t = time.perf_counter()
        for _ in range(max(1, n // batch)):
            model.net(model.normalize(x.float().div_(255), inplace=True))
        _sync(model.device)
    return max(1, n // batch) * batch / (time.perf_counter() - t)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=1000, help="JPEGs to write and read")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: dvis maxes' default)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    p.add_argument("--models", default="alexnet,resnet50")
    p.add_argument("--no-stats", action="store_true", help="end to end as `dvis maxes --no-stats` (tracker only)")
    p.add_argument("--repeats", type=int, default=1,
                   help="rounds of (decode, forward, end to end, forward) per model: each round's own fraction "
                        "(against the mean of its two forwards: on a shared machine the load drifts), their "
                        "median, and the best end to end against the best forward")
    p.add_argument("--openmp-default", action="store_true",
                   help="keep libgomp's default spin-wait instead of the shorter one `dvis` commands set (dvis.runtime.openmp)")
    args = p.parse_args()
    warnings.simplefilter("ignore")
    from dvis.commands.args import default_workers
    from dvis.imaging.datasets import open_source
    from dvis.imaging.decode import resolve
    from dvis.pipeline.maxes import TrackConfig, track_maxes
    from dvis.models.loading import load_model

    workers = args.workers if args.workers is not None else default_workers()
    cuda = torch.device(args.device).type == "cuda"
    where = torch.cuda.get_device_name() if cuda else f"{os.cpu_count()} CPUs visible"
    print(f"device {args.device} ({where}), {workers} decode workers, batch {args.batch_size}, "
          f"precision {args.precision}, torch threads {torch.get_num_threads()} ({describe()})")
    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        write_images(tmp, args.n)
        print(f"wrote {args.n} ImageNet-shaped JPEGs in {time.perf_counter() - t:.0f} s")
        source = open_source(tmp)
        size = (224, 224)
        decoders = {"pillow (reference)": ("cpu", True), "cpu (dvis.imaging.decode)": ("cpu", False)}
        if cuda:
            decoders["gpu (nvjpeg)"] = ("gpu", False)
        rates = {}
        for name, (mode, ref) in decoders.items():
            r = decode_rate(source, size, mode, args.device, workers, args.batch_size, ref)
            if not ref:
                rates[mode] = r
            print(f"decode only, {name:20s}: {r:8.1f} img/s")
        decode = resolve("auto", args.device)
        what = "dvis maxes --no-stats" if args.no_stats else "dvis maxes"
        for arch in args.models.split(","):
            model = load_model(arch, device=args.device, weights="none")  # random init: no download
            cfg = TrackConfig(top=9, batch_size=args.batch_size, workers=workers, progress=False, decode=decode,
                              precision=args.precision, stats=not args.no_stats)
            best = {"decode": 0.0, "forward": 0.0, "e2e": 0.0, "steady": 0.0}
            n_batches = -(-len(source) // args.batch_size)
            lead = 2 * max(1, workers) + 1  # batches decoded ahead: the prefetch queue is full from here
            lo, hi = lead, n_batches - lead
            if hi <= lo:
                print(f"  (--n {args.n} is too few batches for a steady window: steady = whole run)")
            setup, bracketed = 0.0, []
            for r in range(args.repeats):
                dec = rates[decode] if r == 0 else decode_rate(source, size, decode, args.device, workers,
                                                               args.batch_size)
                fwd = forward_rate(model, min(args.n, 1024), args.batch_size, args.precision)
                marks: dict[int, float] = {}

                def batch_done(k: int, marks=marks) -> None:
                    if k in (lo, hi):  # only these two are synchronized: a sync per batch would stall a GPU
                        _sync(args.device)
                        marks[k] = time.perf_counter()

                t = time.perf_counter()
                track_maxes(model, source, None, cfg, on_batch=batch_done)  # what `dvis maxes` runs (with statistics)
                _sync(args.device)
                end = time.perf_counter()
                e2e = len(source) / (end - t)
                steady = (hi - lo) * args.batch_size / (marks[hi] - marks[lo]) if hi > lo else e2e
                run_setup = (end - t) - len(source) / steady
                # The forward again right after: the round's reference is the mean of the two, which
                # follows the machine's drift (forward-only figures a minute apart differ by up to 30 %
                # on a shared 2-core machine).
                after = forward_rate(model, min(args.n, 1024), args.batch_size, args.precision)
                ref = min(dec, (fwd + after) / 2)
                bracketed.append((e2e / ref, steady / ref))
                print(f"  {arch} round {r + 1}: decode {dec:.1f}, forward {fwd:.1f} before / {after:.1f} after, end to "
                      f"end {e2e:.1f} img/s ({steady:.1f} steady, set-up {run_setup:.2f} s) = {e2e / ref:.2f} "
                      f"({steady / ref:.2f} steady) of this round's minimum")
                if steady > best["steady"]:
                    setup = run_setup  # the set-up of the round whose steady rate the projection uses
                for key, v in (("decode", dec), ("forward", max(fwd, after)), ("e2e", e2e), ("steady", steady)):
                    best[key] = max(best[key], v)
            limit = min(best["decode"], best["forward"])
            whole_m, steady_m = np.median(np.array(bracketed), axis=0)
            print(f"{arch:9s} median of the rounds' own fractions: end to end {whole_m:.2f}, steady {steady_m:.2f}")
            print(f"{arch:9s} forward only {best['forward']:8.1f} img/s | {what} ({decode} decode) end to end "
                  f"{best['e2e']:.1f} img/s = {best['e2e'] / limit:.2f}, steady {best['steady']:.1f} img/s = "
                  f"{best['steady'] / limit:.2f} of min(decode {best['decode']:.0f}, forward {best['forward']:.0f}), "
                  f"set-up {setup:.2f} s | 1.28 M images: {(setup + IMAGENET / best['steady']) / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
