#!/usr/bin/env python
"""Frames per second of the toolbox's full loop in headless mode, and render time alone.

Each frame is a new input (as from a camera): one forward capturing every layer, one backward
from the selected unit (back-projection on), and a full render of the canvas. Models: the default
zf-cifar10 and AlexNet (random init, 224x224). Goals on 2 CPU cores: zf-cifar10 >= 60 fps,
AlexNet >= 15 fps, render <= 5 ms. It also prints the window driver's key-to-frame times, the
baseline of bench/web.py.

    python bench/frame.py [--frames 100] [--keys 40] [--models zf-cifar10 alexnet]
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import cv2
import numpy as np

from dvis.imaging.images import list_images, read_image
from dvis.models.loading import load_model
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


def key_to_frame(tb: Toolbox, keys: int) -> dict:
    """The window driver's key-to-frame time with back-projection on, keys alternating right/left:
    ``first`` = press + update + render + the BGR conversion imshow gets (the frame that shows the key,
    panes still stale), ``result`` = until the frame with the network pass for the new unit (and the
    process CPU per frame drawn, network passes included). The wait
    for the key event itself (up to 1/max_fps in waitKeyEx) is not counted."""
    first, result = [], []
    cpu0 = time.process_time()
    for i in range(keys):
        start = time.perf_counter()
        tb.press("right" if i % 2 == 0 else "left")
        tb.update()
        cv2.cvtColor(tb.render(), cv2.COLOR_RGB2BGR)
        first.append(time.perf_counter() - start)
        tb.worker.wait()
        tb.update()
        cv2.cvtColor(tb.render(), cv2.COLOR_RGB2BGR)
        result.append(time.perf_counter() - start)
    ms = lambda v, q: 1000 * float(np.percentile(v, q))  # noqa: E731
    return {"first_p50": ms(first, 50), "first_p95": ms(first, 95),
            "result_p50": ms(result, 50), "result_p95": ms(result, 95),
            "cpu_ms_per_frame": 1000 * (time.process_time() - cpu0) / (2 * keys)}  # two frames per key


def window_key_to_frame(name: str, keys: int) -> dict:
    """:func:`key_to_frame` for model ``name`` on a toolbox driven as the window drives it (default
    settings: the worker waits pause_after_key_s after each key)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(name, weights="none" if name != "zf-cifar10" else None)
    tb = Toolbox(model, load_settings(None, {"images": str(REPO / "input_images")}), headless=False)
    try:
        run_keys(tb, ["b", "down"])
        return key_to_frame(tb, keys)
    finally:
        tb.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=100)
    p.add_argument("--models", nargs="+", default=["zf-cifar10", "alexnet"])
    p.add_argument("--keys", type=int, default=40, help="key presses for the key-to-frame figures")
    args = p.parse_args()
    images = [read_image(path) for path in list_images(REPO / "input_images")[:8]]
    print(f"{'model':<12} {'loop fps':>9} {'net ms':>8} {'render ms':>10} {'render ms (same result)':>24}"
          f" {'key->frame p50/p95 ms':>22} {'key->result p50/p95 ms':>23}")
    for name in args.models:
        r = bench(name, args.frames, images)
        k = window_key_to_frame(name, args.keys)
        print(f"{r['model']:<12} {r['fps']:9.1f} {r['compute_ms']:8.2f} {r['render_ms']:10.2f} "
              f"{r['render_same_ms']:24.2f} {k['first_p50']:10.1f} /{k['first_p95']:6.1f}"
              f" {k['result_p50']:11.1f} /{k['result_p95']:6.1f}")


if __name__ == "__main__":
    main()
