#!/usr/bin/env python
"""Occlusion-map throughput (the toolbox's live overlay calls dvis.analyses.occlusion.occlusion_maps).

    python bench/occlusion.py [--model zf-cifar10] [--device cpu] [--repeats 3]

Prints, per (occluder size, stride, batch size), the occluded copies evaluated per second and
the time for one full map of one image.
"""
from __future__ import annotations

import argparse
import time

import torch

from dvis.analyses.occlusion import occlusion_maps
from dvis.models.loading import load_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model = load_model(args.model, device=args.device)
    h, w = model.input_size
    x = torch.randn(1, model.channels, h, w, device=model.device)
    layer = [n for n in model.layers if "conv" in n][-1]
    print(f"model {model.name} input {h}x{w} on {model.device}, torch threads {torch.get_num_threads()}")
    for size, stride in ((max(2, h // 4), max(1, h // 16)), (max(2, h // 4), max(1, h // 8))):
        for batch in (32, 128, 512):
            occlusion_maps(model, x, size, stride, layer=layer, batch_size=batch)  # warm-up
            t0 = time.perf_counter()
            for _ in range(args.repeats):
                maps = occlusion_maps(model, x, size, stride, layer=layer, batch_size=batch)
            dt = (time.perf_counter() - t0) / args.repeats
            n = maps.target_prob.numel()
            print(f"size {size:3d} stride {stride:2d} batch {batch:4d}: {n:5d} copies, {dt * 1000:8.1f} ms/map, {n / dt:8.0f} copies/s")


if __name__ == "__main__":
    main()
