#!/usr/bin/env python
"""Back-project the argmax unit of every channel of AlexNet conv5 (random init, 224x224).

    python bench/backproject.py [--mode deconv] [--repeats 1] [--chunks 32,64,128,256] [--device cuda]

Times three ways of getting all 256 back-projections and prints the ratios:
  (a) one forward + backward per unit (``backproject`` in a loop),
  (b) the batched path (``backproject_batch``: one forward, backward vmapped over the units),
  (c) the floor: 256 forward passes up to conv5 (``forward_to`` without autograd).
Goal on 2 cores: (b) at most 1.2x (c) and at least 1.5x faster than (a).
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision

from dvis.engine.activations import forward_to
from dvis.engine.backproject import backproject, backproject_batch

LAYER = "features.10"


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _timed(fn, repeats: int) -> tuple[float, object]:
    fn()  # warm-up (allocator, oneDNN primitives, CUDA kernels)
    _sync()
    t0 = time.perf_counter()
    for _ in range(repeats):
        out = fn()
    _sync()
    return (time.perf_counter() - t0) / repeats, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mode", default="deconv", choices=["deconv", "guided", "grad"])
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--chunks", default="", help="extra chunk sizes to time for (b), comma-separated")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    torch.manual_seed(0)
    net = torchvision.models.alexnet(weights=None).eval().to(args.device)
    x = torch.randn(1, 3, 224, 224, device=args.device)
    units = list(range(256))
    where = torch.cuda.get_device_name() if x.is_cuda else f"{torch.get_num_threads()} threads"
    print(f"AlexNet {LAYER}, 256 units, mode {args.mode}, torch {torch.__version__}, {args.device} ({where})")

    def per_unit():
        return torch.cat([backproject(net, x, LAYER, u, args.mode) for u in units])

    def floor():
        with torch.no_grad():
            for _ in units:
                forward_to(net, x, LAYER)

    t_a, out_a = _timed(per_unit, args.repeats)
    t_b, out_b = _timed(lambda: backproject_batch(net, x, LAYER, units, args.mode), args.repeats)
    t_c, _ = _timed(floor, args.repeats)
    print(f"(a) per unit      {t_a:7.2f} s")
    print(f"(b) batched       {t_b:7.2f} s   (default chunk)")
    print(f"(c) floor         {t_c:7.2f} s")
    print(f"(a)/(b) = {t_a / t_b:.2f}   (goal >= 1.5)")
    print(f"(b)/(c) = {t_b / t_c:.2f}   (goal <= 1.2)")
    print(f"max |(a) - (b)| = {(out_a - out_b).abs().max().item():.3g}")
    for chunk in filter(None, args.chunks.split(",")):
        t, _ = _timed(lambda: backproject_batch(net, x, LAYER, units, args.mode, chunk_size=int(chunk)), args.repeats)
        print(f"(b) chunk {int(chunk):4d}  {t:7.2f} s   (b)/(c) = {t / t_c:.2f}")


if __name__ == "__main__":
    main()
