"""Where a back-projection starts: the seeds of the backward for each target (a unit of a layer, at
its max, at a position or over its whole map), and the checks of units and positions."""
from __future__ import annotations

from collections.abc import Sequence

import torch

from dvis.engine.geometry import LayerGeometry, from_maps, model_geometry, to_maps
from dvis.errors import DvisError


def _units(units) -> torch.Tensor:
    try:
        units = torch.as_tensor(units).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DvisError(f"units must be integers, got {units!r}") from err
    if units.numel() == 0 or units.is_floating_point() or units.is_complex() or units.dtype == torch.bool:
        raise DvisError(f"units must be a non-empty sequence of integers, got {units.tolist()}")
    return units.long()


def _positions(at, n: int, rank: int, sizes: Sequence[int]) -> torch.Tensor:
    """``at`` given as positions: one (rank,) position for all targets or an (n, rank) tensor."""
    pos = torch.as_tensor(at)
    if pos.is_floating_point() or pos.dim() not in (1, 2) or pos.shape[-1] != rank:
        raise DvisError(f"at must be 'max', 'map' or {rank} integer position(s) per target, got {at!r}")
    pos = pos.long().reshape(-1, rank).expand(n, rank)
    if pos.shape[0] != n:
        raise DvisError(f"at has {pos.shape[0]} positions for {n} targets")
    limits = torch.tensor(sizes, device=pos.device)
    if ((pos < 0) | (pos >= limits)).any():
        raise DvisError(f"position(s) {pos.tolist()} outside the layer's {'x'.join(map(str, sizes))} map")
    return pos


def _check_units(units: torch.Tensor, c: int) -> None:
    bad = units[(units < 0) | (units >= c)]
    if bad.numel():
        raise DvisError(f"unit(s) {bad.tolist()} out of range: the layer has {c} units")


def _seeds(value: torch.Tensor, units: torch.Tensor, at) -> torch.Tensor:
    """Backward seeds for ``n`` targets: ``value`` is (n, C, ...) and target i is channel ``units[i]``."""
    n, c = value.shape[:2]
    _check_units(units, c)
    units = units.to(value.device)
    rows = torch.arange(n, device=value.device)
    seeds = torch.zeros(value.shape, dtype=value.dtype, device=value.device)
    if value.dim() == 2:  # fc: the unit is the target, `at` does not apply
        seeds[rows, units] = 1
        return seeds
    maps = value[rows, units].reshape(n, -1)
    flat = seeds.view(n, c, -1)
    if isinstance(at, str) and at == "map":
        flat[rows, units] = maps
    elif isinstance(at, str) and at == "max":
        flat[rows, units, maps.argmax(1)] = 1
    elif isinstance(at, str):
        raise DvisError(f"at must be 'max', 'map' or a position, got {at!r}")
    else:
        sizes = value.shape[2:]
        pos = _positions(at, n, len(sizes), sizes).to(value.device)
        strides = torch.tensor(flat.new_empty(sizes).stride(), device=value.device)
        flat[rows, units, (pos * strides).sum(1)] = 1
    return seeds


def _layout(model_or_net, layer: str, x: torch.Tensor) -> LayerGeometry | None:
    """The layer's geometry where its values are not channels-first (hwc, tokens, partitioned), else None.

    Taken at the model's input size (a plain net: ``x``'s), so crops of other sizes reuse it."""
    if x.dim() != 4:
        return None
    size = None if getattr(model_or_net, "input_size", None) is not None else tuple(x.shape[-2:])
    try:
        geom = model_geometry(model_or_net, size, channels=x.shape[1])[layer]
    except DvisError:  # no geometry at that size: the values are taken as channels-first
        return None
    return geom if geom.reordered else None


def _layer_seeds(value: torch.Tensor, units: torch.Tensor, at, geom: LayerGeometry | None) -> torch.Tensor:
    """:func:`_seeds` on the layer's maps (channels-last and token layers included)."""
    if geom is None:
        return _seeds(value, units, at)
    return from_maps(_seeds(to_maps(value, geom), units, at), geom, value)


def _each_unit(x: torch.Tensor, units: torch.Tensor) -> None:
    if x.shape[0] != len(units):
        raise DvisError(
            f"{x.shape[0]} images for {len(units)} units: give one image (shared) or one image per unit"
        )
