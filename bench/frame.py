#!/usr/bin/env python
"""Frames per second of the toolbox's full loop in headless mode, and render time alone.

Each frame is a new input (as from a camera): one forward capturing every layer, one backward
from the selected unit (back-projection on), and a full render of the canvas. Models: the default
zf-cifar10 and AlexNet (random init, 224x224). Goals on 2 CPU cores: zf-cifar10 >= 60 fps,
AlexNet >= 15 fps, render <= 5 ms.

    python bench/frame.py [--frames 100] [--models zf-cifar10 alexnet]
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from dvis.images import list_images, read_image
from dvis.model_loading import load_model
from dvis.toolbox.app import Toolbox
from dvis.toolbox.drivers import run_keys
from dvis.toolbox.settings import load_settings

REPO = Path(__file__).resolve().parent.parent


def bench(name: str, frames: int, images: list[np.ndarray]) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # AlexNet's random-init warning
        model = load_model(name, weights="none" if name != "zf-cifar10" else None)
    tb = Toolbox(model, load_settings(None, {"images": str(REPO / "input_images"), "pause_after_key_s": 0.0}),
                 headless=True)
    try:
        run_keys(tb, ["b", "right", "down"])  # back-projection on, a unit selected
        compute, render = [], []
        start = time.perf_counter()
        for i in range(frames):
            tb._set_frame(("bench", i), images[i % len(images)])
            tb.worker.submit(tb.job())
            tb.worker.wait()
            compute.append(tb.worker.output.seconds)
            t = time.perf_counter()
            tb.render()
            render.append(time.perf_counter() - t)
        loop = time.perf_counter() - start
        assert tb.worker.output.error is None, tb.worker.output.error
        t = time.perf_counter()
        for _ in range(frames):
            tb.render()
        same = (time.perf_counter() - t) / frames
    finally:
        tb.close()
    return {"model": name, "fps": frames / loop, "compute_ms": 1000 * np.mean(compute),
            "render_ms": 1000 * np.mean(render), "render_same_ms": 1000 * same}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--models", nargs="+", default=["zf-cifar10", "alexnet"])
    args = p.parse_args()
    images = [read_image(path) for path in list_images(REPO / "input_images")[:8]]
    print(f"{'model':<12} {'loop fps':>9} {'net ms':>8} {'render ms':>10} {'render ms (same result)':>24}")
    for name in args.models:
        r = bench(name, args.frames, images)
        print(f"{r['model']:<12} {r['fps']:9.1f} {r['compute_ms']:8.2f} {r['render_ms']:10.2f} "
              f"{r['render_same_ms']:24.2f}")


if __name__ == "__main__":
    main()
