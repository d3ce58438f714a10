"""Objectives: which value of a layer's output each image of the batch maximizes."""
from __future__ import annotations

import torch

from dvis.engine.geometry import LayerGeometry, to_maps


def unit_positions(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The centre (y, x) of N x C x H x W maps (the original optimizes the centre unit), None for vectors."""
    return (shape[-2] // 2, shape[-1] // 2) if len(shape) == 4 else None


def unit_activations(out: torch.Tensor, units: torch.Tensor, geom: LayerGeometry) -> torch.Tensor:
    """Per image b, the activation of unit ``units[b]``: that channel at the centre of the layer's
    maps, or that entry of its vector. The layer's own layout (channels-last, tokens with a class
    token, window partitions) goes through :func:`dvis.engine.geometry.to_maps` first."""
    maps = to_maps(out, geom)
    r = torch.arange(len(units), device=out.device)
    if maps.dim() == 4:
        y, x = unit_positions(tuple(maps.shape))
        return maps[r, units, y, x]
    return maps[r, units]
