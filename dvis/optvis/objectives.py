"""Objectives: which value of a layer's output each image of the batch maximizes."""
from __future__ import annotations

import torch


def unit_positions(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The centre (y, x) of a conv layer's output (the original optimizes the centre unit), None for fc."""
    return (shape[-2] // 2, shape[-1] // 2) if len(shape) == 4 else None


def unit_activations(out: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """Per image b, the activation of unit ``units[b]`` (at the centre for conv layers)."""
    r = torch.arange(len(units), device=out.device)
    if out.dim() == 4:
        y, x = unit_positions(tuple(out.shape))
        return out[r, units, y, x]
    return out[r, units]
