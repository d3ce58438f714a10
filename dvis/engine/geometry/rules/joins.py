"""Field rules of joins: concatenation and element-wise operations on several tensors.

Element-wise joins and concat take the union of their full-size inputs' fields; an input broadcast
over space (an SE gate, N x C x 1 x 1) adds global context but keeps the local field; concatenating
extra tokens before a token grid (ViT's class token) keeps the grid.
"""
from __future__ import annotations

from dvis.engine.geometry.arguments import _all_tensors, _arg, _norm_dim
from dvis.engine.geometry.descriptors import (_Desc, _globalize, _is, _known, _spatial_axes, _union, _unknown,
                                              _unwindow_axis)


def _cat(func, args, kwargs, descs, out):
    tensors = list(_arg(args, kwargs, 0, "tensors"))
    dim = _norm_dim(_arg(args, kwargs, 1, "dim", 0), out.dim())
    parts = [(t, descs.get(t)) for t in tensors]
    described = [dd for _, dd in parts if dd is not None]
    field, gctx, note = _union(described)
    ref = max(described, key=_known)
    dims, extra = list(ref.dims), list(ref.extra)
    if all(_is(dd.dims[dim], "c") or not dd.dims[dim] for dd in described):
        dims[dim] = (("c", out.shape[dim]),)
        extra[dim] = 0
    else:
        grid = [dd for dd in described if _spatial_axes(dd.dims[dim])]
        lead = 0
        for t, dd in parts:
            if dd is not None and _spatial_axes(dd.dims[dim]):
                break
            lead += t.shape[dim]
        if len(grid) == 1 and lead + t.shape[dim] == out.shape[dim] and not grid[0].extra[dim]:
            dims[dim], extra[dim] = grid[0].dims[dim], lead  # [class token, patches]
            field = tuple(_unwindow_axis(f) for f in field)
        else:
            axes = set().union(*(_spatial_axes(dd.dims[dim]) for dd in described)) or {0, 1}
            return _globalize(_unknown(out.shape, field, gctx, note), axes, "concatenation along positions")
    return _Desc(tuple(dims), tuple(extra), field, gctx, note)


def _join(descs, args, kwargs, out) -> _Desc | None:
    """Element-wise op: dims from the best-known full-size input; union of full-size fields; inputs
    broadcast over positions (SE gates) add global context only."""
    shape = tuple(out.shape)
    full, broadcast = [], []
    for t in _all_tensors(args, kwargs):
        dd = descs.get(t)
        if dd is None or t.dim() > len(shape):
            continue
        tshape = (1,) * (len(shape) - t.dim()) + tuple(t.shape)
        lead = len(shape) - t.dim()
        if tshape == shape and not any(k == "b" for atoms in dd.dims for k, _ in atoms):
            full.append(dd)
        elif all(a == b or a == 1 for a, b in zip(tshape, shape)):
            broadcast.append((dd, lead, tshape))
        else:
            return None
    if not full:
        if not broadcast:
            return None
        dd, lead, tshape = broadcast[0]
        dims = [()] * lead + list(dd.dims)
        dims = [a if tshape[i] == shape[i] else (("b", shape[i]),) for i, a in enumerate(dims)]
        return _Desc(tuple(dims), (0,) * lead + dd.extra, dd.field, dd.gctx, dd.note)
    ref = max(full, key=_known)
    field, gctx, note = _union(full)
    if broadcast:
        gctx = True
        if None not in field and not note:
            note = "scaled by a gate computed over all positions (squeeze-and-excitation)"
    return _Desc(ref.dims, ref.extra, field, gctx, note)

