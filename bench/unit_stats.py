"""CPU time of the max tracker with and without unit statistics against a plain forward (prints
figures; no asserts). AlexNet (random init, 224x224), batches of 64 random images, one torch
thread, measured with ``time.thread_time`` so that other jobs on a shared machine do not count
(bench/maxes.py measures wall time). Goal: tracker+stats/forward >= 0.90.

Usage: python bench/unit_stats.py
"""
import time
import warnings

import torch
from torch import nn

from dvis.pipeline.maxes import TopKState, layer_shapes, max_hooks
from dvis.models.loading import load_model
from dvis.pipeline.stats import StatsState

warnings.simplefilter("ignore")
torch.set_num_threads(1)
model = load_model("alexnet", weights="none")
net = model.net
layers = [n for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
shapes = layer_shapes(net, layers, (3, 224, 224), model.device)
g = torch.Generator().manual_seed(0)
state = TopKState({k: s[0] for k, s in shapes.items()}, 9)
state_s = TopKState({k: s[0] for k, s in shapes.items()}, 9)
stats = StatsState(shapes, 1000)
B, N = 64, 12
t = {"plain": 0.0, "track": 0.0, "track+stats": 0.0}
with torch.inference_mode():
    for b in range(N):
        x = model.normalize(torch.randint(0, 256, (B, 3, 224, 224), generator=g).float() / 255)
        idx = torch.arange(b * B, (b + 1) * B)
        for kind in ("plain", "track", "track+stats"):
            c = time.thread_time()
            if kind == "plain":
                net(x)
            else:
                with max_hooks(net, state if kind == "track" else state_s, layers, stats if kind != "track" else None) as cur:
                    cur["index"] = idx
                    cur["labels"] = idx % 1000
                    net(x)
            if b >= 2:  # after two warm-up batches
                t[kind] += time.thread_time() - c
print({k: round(v, 2) for k, v in t.items()}, "CPU s over", N - 2, "batches of", B)
print(f"tracker/forward {t['plain'] / t['track']:.3f}   tracker+stats/forward {t['plain'] / t['track+stats']:.3f}")
