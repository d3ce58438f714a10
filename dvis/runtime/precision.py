"""Reduced precision for forward-only passes (``dvis maxes --precision``).

fp32 is exact and the default. bf16 and fp16 run the forward under ``torch.autocast`` (weights
stay fp32, convolutions and matrix products run in the reduced type), which roughly doubles GPU
throughput; the recorded values are then rounded to that type and a few top-k entries can change
(docs/pipeline.md gives the measured agreement with fp32).
"""
from __future__ import annotations

from contextlib import nullcontext

import torch

from dvis.errors import DvisError

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def autocast(precision: str, device: torch.device | str):
    """The context a forward at ``precision`` runs in on ``device``."""
    if precision not in PRECISIONS:
        raise DvisError(f"unknown --precision {precision!r}; expected one of {', '.join(PRECISIONS)}")
    dtype = PRECISIONS[precision]
    if dtype is None:
        return nullcontext()
    return torch.autocast(torch.device(device).type, dtype=dtype)
