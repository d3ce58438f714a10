"""The layouts of a layer's values, and turning them into N x C x H x W maps and back.

The layout rule follows the flow, never the sizes: the input is ``n c h w``; conv/pool/norm/pad
calls name their dimensions; permute/transpose/view/reshape/flatten/getitem/cat move and regroup the
atoms. A per-sample ``c h w`` is ``"chw"``, ``h w c`` is ``"hwc"`` (ConvNeXt after ``Permute``,
Swin), ``(h w) c`` is ``"tokens"`` (ViT: ``[class token] + gh*gw`` patches), ``c`` alone is
``"vector"``; any other arrangement of the batch (outermost, possibly merged with windows) and
parts of ``c``, ``h`` and ``w`` is ``"partitioned"`` (MaxViT window/grid partitions: ``to_maps``
undoes the permutation); anything else (attention maps) is ``"other"``.
"""
from __future__ import annotations

import math

import torch

from dvis.engine.geometry.descriptors import _Desc, _base, _consistent, _field, _is
from dvis.engine.geometry.types import INPUT_INDEPENDENT, LayerGeometry, whole_input
from dvis.errors import DvisError

LAYOUTS = ("chw", "hwc", "tokens", "vector", "partitioned", "other")


def _layer(name: str, out, d: _Desc | None, input_size) -> LayerGeometry:
    if isinstance(out, (tuple, list)):
        out = next((o for o in out if isinstance(o, torch.Tensor)), None)
    if not isinstance(out, torch.Tensor):
        return LayerGeometry(name, (), "other", 0, None, 0, None, False, True,
                             f"outputs a {type(out).__name__}, not a tensor")
    shape = tuple(out.shape)
    if d is None or not _consistent(d, shape):
        return LayerGeometry(name, shape[1:], "other", 0, None, 0, None, False, True,
                             INPUT_INDEPENDENT if d is None else "untracked layout")
    gctx = d.gctx or None in d.field
    if not _is(d.dims[0], "n"):
        part = _partition(d)
        if part is None:
            return LayerGeometry(name, shape[1:], "other", 0, None, 0, None, gctx, True,
                                 f"the batch is not the first dimension (traced with a batch of 2 as "
                                 f"{'x'.join(map(str, shape))})")
        channels, grid, partition = part  # windows merged with the batch (Swin/timm style)
        share = (shape[0] // d.dims[0][0][1],) + shape[1:]
        return LayerGeometry(name, share, "partitioned", channels, grid, 0, _field(d, input_size, grid), gctx,
                             True, d.note if gctx else "", partition)
    dims, extra, shape = d.dims[1:], d.extra[1:], shape[1:]
    rf = _field(d, input_size)
    kinds = [tuple(_base(k) for k, _ in atoms) for atoms in dims]
    layout, channels, grid, n_extra = "other", 0, None, 0
    plain = [(dims[i][0][0] if len(dims[i]) == 1 else None) for i in range(len(dims))]
    if len(dims) == 1 and not extra[0]:  # (N, C), also C = a flattened map (AlexNet's classifier.0)
        layout, channels = "vector", shape[0]
        rf = whole_input(input_size)
    elif len(dims) == 3 and not any(extra):
        c_first = _is(dims[0], "c") or not dims[0]
        c_last = _is(dims[2], "c") or not dims[2]
        if c_first and plain[1:] in (["h", "w"], ["h", None], [None, "w"]) and (dims[1] or dims[2]) and \
                all(not a or a[0][0] in ("h", "w") for a in dims[1:]):
            layout, channels, grid = "chw", shape[0], (shape[1], shape[2])
        elif c_last and all(not a or (len(a) == 1 and a[0][0] == k) for a, k in zip(dims[:2], "hw")) and \
                (dims[0] or dims[1]):
            layout, channels, grid = "hwc", shape[2], (shape[0], shape[1])
        elif all(not a for a in dims[1:]) and _is(dims[0], "c"):
            layout, channels, grid = "chw", shape[0], (1, 1)
    elif len(dims) == 2 and (_is(dims[1], "c") or not dims[1]) and kinds[0] in (("h", "w"), ("h",), ("w",)) \
            and all(k in ("h", "w") for k, _ in dims[0]):
        sizes = {k: s for k, s in dims[0]}
        layout, channels, n_extra = "tokens", shape[1], extra[0]
        grid = (sizes.get("h", 1), sizes.get("w", 1))
    reason = d.note if gctx else ""
    partition = None
    if layout == "other":
        part = _partition(d)
        if part is not None:  # windows or grid cells: (n, windows, positions in window, c), ...
            layout, (channels, grid, partition) = "partitioned", part
    if grid is not None:
        rf = _field(d, input_size, grid)
    if layout == "other":
        rf = None
        reason = "not a map, token grid or vector: per-sample dimensions " + " x ".join(
            "(" + " ".join(f"{k}{s}" for k, s in atoms) + (f" +{e}" if e else "") + ")" if atoms or e else "1"
            for atoms, e in zip(dims, extra))
    return LayerGeometry(name, shape, layout, channels, grid, n_extra, rf, gctx, True, reason, partition)


def _partition(d: _Desc):
    """(channels, grid, LayerGeometry.partition) of a tensor whose parts are the batch (outermost)
    and parts of channels, rows and columns in any order, each axis's parts distinct (split and
    permuted by window/grid partitioning); else None."""
    if any(d.extra) or not d.dims[0] or d.dims[0][0][0] != "n":
        return None
    parts = [a for atoms in d.dims for a in atoms][1:]
    key = {}
    for i, (k, _) in enumerate(parts):
        base = _base(k)
        if base not in ("c", "h", "w") or (base, k.count("'")) in key:
            return None
        key[(base, k.count("'"))] = i
    if not any(b in ("h", "w") for b, _ in key):
        return None
    order = tuple(key[kl] for kl in sorted(key, key=lambda kl: ("chw".index(kl[0]), kl[1])))
    sizes = tuple(s for _, s in parts)
    size = {b: math.prod(s for (k, s) in parts if _base(k) == b) for b in "chw"}
    return size["c"], (size["h"], size["w"]), (sizes, order)


def to_maps(t: torch.Tensor, geom: LayerGeometry) -> torch.Tensor:
    """A batch of ``geom``'s layer values as N x C x H x W (maps, token grids without extra tokens)
    or N x C (vectors)."""
    if geom.layout in ("chw", "vector"):
        return t
    if geom.layout == "hwc":
        return t.permute(0, 3, 1, 2)
    if geom.layout == "tokens":
        grid = t[:, geom.extra_tokens:, :]
        if grid.shape[1] != geom.grid[0] * geom.grid[1]:
            raise DvisError(f"layer {geom.name!r}: {grid.shape[1]} tokens do not fill its {geom.grid[0]}x{geom.grid[1]} grid")
        return grid.transpose(1, 2).reshape(t.shape[0], t.shape[2], *geom.grid)
    if geom.layout == "partitioned":
        sizes, order = geom.partition
        parts = t.reshape(-1, *sizes)  # the batch is the outermost part (windows merged with it too)
        return parts.permute(0, *(1 + i for i in order)).reshape(parts.shape[0], geom.channels, *geom.grid)
    raise DvisError(f"layer {geom.name!r} has no maps: {geom.reason}")


def from_maps(maps: torch.Tensor, geom: LayerGeometry, like: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`to_maps`: ``maps`` back in the layer's own layout, shaped like ``like``
    (extra tokens zero), e.g. to seed a backward pass at a map position."""
    if geom.layout in ("chw", "vector"):
        return maps
    if geom.layout == "hwc":
        return maps.permute(0, 2, 3, 1)
    if geom.layout == "tokens":
        out = maps.new_zeros(like.shape)
        out[:, geom.extra_tokens:, :] = maps.flatten(2).transpose(1, 2)
        return out
    if geom.layout == "partitioned":
        sizes, order = geom.partition
        parts = maps.reshape(maps.shape[0], *(sizes[i] for i in order))
        inverse = sorted(range(len(order)), key=order.__getitem__)
        return parts.permute(0, *(1 + i for i in inverse)).reshape(like.shape)
    raise DvisError(f"layer {geom.name!r} has no maps: {geom.reason}")


def extra_token_values(t: torch.Tensor, geom: LayerGeometry) -> torch.Tensor | None:
    """N x extra x C values of the class/register tokens of a token layer, else None."""
    if geom.layout != "tokens" or not geom.extra_tokens:
        return None
    return t[:, :geom.extra_tokens, :]
