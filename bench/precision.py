"""Top-k agreement of reduced-precision `dvis maxes` (bf16, fp16) with fp32.

    python bench/precision.py --model zf-cifar10 --images /tmp/cifar10/test

Tracks the top-k of every unit once per precision (same batches, same decoder) and prints, per
layer and overall, the mean fraction of each unit's fp32 top-k images that the reduced run also
finds (as a set), and the fraction of units whose top-k list is identical (same images, same order).
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from dvis.imaging.datasets import open_source
from dvis.pipeline.maxes import TrackConfig, track_maxes
from dvis.models.loading import load_model


def agreement(ref: np.ndarray, other: np.ndarray) -> tuple[float, float]:
    """(mean set overlap, fraction identical) of two (units, k) image-index arrays."""
    k = ref.shape[1]
    overlap = (ref[:, :, None] == other[:, None, :]).any(2).sum(1) / k
    return float(overlap.mean()), float((ref == other).all(1).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="zf-cifar10")
    ap.add_argument("--images", required=True)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--top", type=int, default=9)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    model = load_model(args.model, device=args.device)
    source = open_source(args.images)
    runs = {}
    for precision in ("fp32", "bf16", "fp16"):
        t = time.perf_counter()
        cfg = TrackConfig(top=args.top, batch_size=args.batch_size, workers=args.workers, progress=False,
                          stats=False, precision=precision)
        runs[precision] = track_maxes(model, source, config=cfg)
        print(f"{precision}: {len(source) / (time.perf_counter() - t):.0f} img/s on {args.device}", flush=True)
    ref = runs["fp32"]
    print(f"top-{args.top} agreement with fp32 over {len(source)} images, {args.model}:")
    for precision in ("bf16", "fp16"):
        total, same, units = 0.0, 0.0, 0
        for layer in ref.layers:
            o, s = agreement(ref.index[layer], runs[precision].index[layer])
            n = len(ref.index[layer])
            total, same, units = total + o * n, same + s * n, units + n
            print(f"  {precision} {layer:8s} {n:5d} units: overlap {100 * o:6.2f}%  identical lists {100 * s:6.2f}%")
        print(f"  {precision} all      {units:5d} units: overlap {100 * total / units:6.2f}%  "
              f"identical lists {100 * same / units:6.2f}%")


if __name__ == "__main__":
    main()
