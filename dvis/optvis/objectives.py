"""Objectives: which value of a layer's output each image of the batch maximizes.

An objective picks, per image, a vector of the layer's channels (:data:`WHERE`): at the centre of
the layer's grid (the original's unit), the mean over positions or tokens (Lucid's channel), or
the class token; then either one channel of it (a unit) or its dot product with a direction in
channel space (a vector per image, e.g. a concept). Every layout goes through
:func:`dvis.engine.geometry.to_maps` (channels-last, token grids, window partitions), so a unit
is the same channel whatever the layer's own order. ``sign = -1`` minimizes. The diversity term
(Olah et al. 2017) compares the Gram matrices of one unit's seeds.
"""
from __future__ import annotations

import torch

from dvis.engine.geometry import LayerGeometry, extra_token_values, to_maps
from dvis.errors import DvisError

#: Where in the layer an objective reads its channel vector.
WHERE = ("centre", "mean", "class_token")


def unit_positions(shape: tuple[int, ...]) -> tuple[int, int] | None:
    """The centre (y, x) of N x C x H x W maps (the original optimizes the centre unit), None for vectors."""
    return (shape[-2] // 2, shape[-1] // 2) if len(shape) == 4 else None


def channel_vectors(out: torch.Tensor, geom: LayerGeometry, where: str = "centre") -> torch.Tensor:
    """N x C: per image the layer's channels at ``where`` (see :data:`WHERE`); vector layers are
    their own vector for ``centre`` and ``mean``."""
    if where == "class_token":
        cls = extra_token_values(out, geom)
        if cls is None:
            raise DvisError(f"layer {geom.name!r} has no class token (layout {geom.layout}); "
                            "use the centre or the mean over positions")
        return cls[:, 0]
    if where not in WHERE:
        raise DvisError(f"unknown objective position {where!r}; expected one of {', '.join(WHERE)}")
    maps = to_maps(out, geom)
    if maps.dim() == 2:
        return maps
    if where == "mean":
        return maps.mean((2, 3))
    y, x = unit_positions(tuple(maps.shape))
    return maps[:, :, y, x]


def objective_values(out: torch.Tensor, geom: LayerGeometry, units: torch.Tensor | None = None,
                     directions: torch.Tensor | None = None, where: str = "centre", sign: float = 1.0
                     ) -> torch.Tensor:
    """(N,) value each image maximizes: channel ``units[b]`` of image b's vector at ``where``, or
    its dot product with ``directions[b]`` (N x C; give one of the two), times ``sign``."""
    vec = channel_vectors(out, geom, where)
    if (units is None) == (directions is None):
        raise DvisError("an objective needs units or directions, not both")
    if directions is not None:
        if directions.shape != vec.shape:
            raise DvisError(f"directions must be {len(vec)} x {vec.shape[1]} (images x channels of {geom.name}); "
                            f"got {list(directions.shape)}")
        return sign * (vec * directions.to(vec.dtype)).sum(1)
    return sign * vec[torch.arange(len(units), device=vec.device), units]


def unit_activations(out: torch.Tensor, units: torch.Tensor, geom: LayerGeometry) -> torch.Tensor:
    """Per image b, the activation of unit ``units[b]``: that channel at the centre of the layer's
    maps, or that entry of its vector (any layout)."""
    return objective_values(out, geom, units)


def gram_similarity(maps: torch.Tensor, group: int) -> torch.Tensor:
    """Olah et al. 2017's diversity measure for maps (N x C x H x W, or N x C, as
    :func:`dvis.engine.geometry.to_maps` gives) in groups of ``group`` consecutive images (a unit's
    seeds): per image the mean cosine similarity of its channel Gram matrix with those of the
    other images of its group, (N,). The Gram inner products <A_i'A_i, A_j'A_j> = |A_i A_j'|^2 go
    through the smaller of the channel and the position axes, so deep layers with thousands of
    channels and early layers with thousands of positions both stay small."""
    a = maps.flatten(2) if maps.dim() == 4 else maps[:, :, None]  # N x C x P
    n, c, p = a.shape
    if group < 2:
        return a.new_zeros(n)
    a = a.reshape(n // group, group, c, p)
    if c <= p:
        g = torch.einsum("ugcp,ugdp->ugcd", a, a).flatten(2)  # Gram matrices, C x C
        inner = torch.einsum("ugk,uhk->ugh", g, g)
    else:
        inner = torch.einsum("ugcp,uhcq->ughpq", a, a).pow(2).sum((3, 4))
    norm = inner.diagonal(dim1=1, dim2=2).clamp_min(1e-20).sqrt()
    cos = inner / (norm[:, :, None] * norm[:, None, :])
    off = cos.sum(2) - cos.diagonal(dim1=1, dim2=2)
    return (off / (group - 1)).flatten()
