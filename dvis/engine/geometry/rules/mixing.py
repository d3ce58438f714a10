"""Field rules of operations that mix positions: reductions, softmax, roll, linear, norms over
space, attention, matrix products and einsum.

Mixing along a spatial dimension makes the field the whole input on that axis, except that mixing
only the finest part of a split axis (attention inside windows) gives the window's field
(``ReceptiveField.window``). GroupNorm/InstanceNorm/LayerNorm over space add global context.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dvis.engine.geometry.arguments import _all_tensors, _arg, _norm_dim, _tensors, _tup
from dvis.engine.geometry.descriptors import (_Desc, _base, _consistent, _globalize, _spatial_axes, _union,
                                              _unknown, _window_axis)


def _reduce_dims(dim_arg, ndim):
    if dim_arg is None:
        return list(range(ndim))
    if isinstance(dim_arg, int):
        return [_norm_dim(dim_arg, ndim)]
    return [_norm_dim(x, ndim) for x in dim_arg]


def _reduction(func, args, kwargs, d, x, out):
    dim_arg = _arg(args, kwargs, 1, "dim", None)
    if dim_arg is not None and not isinstance(dim_arg, (int, list, tuple)):
        dim_arg = None  # e.g. a dtype in the second position
    dims = _reduce_dims(dim_arg, x.dim())
    keep = bool(_arg(args, kwargs, 2, "keepdim", False))
    o = out[0] if isinstance(out, tuple) else out
    whole = set().union(*(_spatial_axes(d.dims[i]) for i in dims)) if dims else set()
    if any(d.extra[i] for i in dims):
        whole |= {0, 1}
    new_dims = [() if i in dims else a for i, a in enumerate(d.dims) if keep or i not in dims]
    new_extra = [0 if i in dims else e for i, e in enumerate(d.extra) if keep or i not in dims]
    r = _Desc(tuple(new_dims), tuple(new_extra), d.field, d.gctx, d.note)
    if not _consistent(r, o.shape):
        r = _unknown(o.shape, d.field, d.gctx, d.note)
    return _globalize(r, whole, "a reduction over positions (global pooling)") if whole else r


def _mixing(d: _Desc, dims) -> tuple[set[int], dict[int, int]]:
    """The input axes an op that mixes positions along ``dims`` of ``d`` (softmax, a contraction)
    makes whole, and those it mixes only inside windows: ``(whole axes, {axis: window})``.

    Mixing only the finest part of a split axis (``h'``, its coarse part ``h`` kept in another
    dimension) stays inside aligned windows of that part's size: MaxViT window attention. Anything
    else that mixes an axis (its coarse part, as MaxViT grid attention does: a dilated grid over
    the whole axis) makes the axis whole.
    """
    if any(d.extra[i] for i in dims):
        return {0, 1}, {}
    whole, windows = set(), {}
    for a, base in ((0, "h"), (1, "w")):
        mixed = [(k, s) for i in dims for k, s in d.dims[i] if _base(k) == base]
        if not mixed:
            continue
        levels = [k.count("'") for atoms in d.dims for k, _ in atoms if _base(k) == base]
        deepest = max(levels)
        finest = {s for atoms in d.dims for k, s in atoms if _base(k) == base and k.count("'") == deepest}
        if len(mixed) == 1 and mixed[0][0].count("'") == deepest and min(levels) < deepest and len(finest) == 1:
            windows[a] = mixed[0][1]
        else:
            whole.add(a)
    return whole, windows


def _mixed(d: _Desc, mixes, note: str) -> _Desc:
    """``d`` after the mixing ``mixes`` (from :func:`_mixing`, one per operand): windowed fields for
    the windowed axes, the whole input for the others (and for axes two operands window differently)."""
    whole, windows = set(), {}
    for w, win in mixes:
        whole |= w
        for a, p in win.items():
            if windows.setdefault(a, p) != p:
                whole.add(a)
    field = tuple(_window_axis(f, windows[a]) if a in windows and a not in whole else f for a, f in enumerate(d.field))
    r = _Desc(d.dims, d.extra, field, d.gctx, d.note)
    return _globalize(r, whole, note) if whole else r


def _softmax(func, args, kwargs, d, x, out):
    dim = _norm_dim(_arg(args, kwargs, 1, "dim"), x.dim())
    return _mixed(d, [_mixing(d, [dim])], "softmax over positions (attention)")


def _roll(func, args, kwargs, d, x, out):
    dims = _arg(args, kwargs, 2, "dims", None)
    dims = _reduce_dims(dims, x.dim())
    whole = set().union(*(_spatial_axes(d.dims[i]) for i in dims))
    return _globalize(d, whole, "roll (wraps around)") if whole else d


def _linear(func, args, kwargs, d, x, out):
    mix = _mixing(d, [x.dim() - 1])
    dims = d.dims[:-1] + ((("c", out.shape[-1]),) if out.shape[-1] != 1 else (),)
    return _mixed(_Desc(dims, d.extra[:-1] + (0,), d.field, d.gctx, d.note), [mix], "linear over positions")


def _norm_over(func, args, kwargs, d, x, out):
    if func is F.layer_norm:
        n = len(_tup(_arg(args, kwargs, 1, "normalized_shape"), 1))
        dims = range(x.dim() - n, x.dim())
    else:  # group/instance norm: statistics over the spatial dimensions
        dims = range(1, x.dim())
    if any(_spatial_axes(d.dims[i]) or d.extra[i] for i in dims):
        return _Desc(d.dims, d.extra, d.field, True, d.note or "normalization over positions (global context)")
    return d


def _attention(func, args, kwargs, descs, out):
    q = next(_tensors(args[0] if args else kwargs.get("query")))
    o = out[0] if isinstance(out, tuple) else out
    d = descs.get(q)
    described = [descs[t] for t in _all_tensors(args, kwargs) if t in descs]
    field, gctx, note = _union(described)
    if d is None or not _consistent(d, o.shape):
        return _globalize(_unknown(o.shape, field, True, note), {0, 1}, "attention")
    if func is not F.scaled_dot_product_attention:  # (L, N, E) layouts: taken as global
        return _globalize(_Desc(d.dims, d.extra, field, True, note), {0, 1}, "attention")
    # keys and values (N..., S, E) are mixed along S: global, or inside windows (partitioned inputs)
    kv = [_arg(args, kwargs, i, name) for i, name in ((1, "key"), (2, "value"))]
    mixes = [_mixing(descs[t], [t.dim() - 2]) if t in descs else ({0, 1}, {}) for t in kv if isinstance(t, torch.Tensor)]
    return _mixed(_Desc(d.dims, d.extra, field, gctx, note), mixes or [({0, 1}, {})], "attention")


def _matmul(func, args, kwargs, descs, out):
    a, b = args[0], args[1] if len(args) > 1 else kwargs.get("other", kwargs.get("mat2"))
    if func in (torch.baddbmm, torch.Tensor.baddbmm, torch.addmm, torch.Tensor.addmm):
        a, b = args[1], args[2]
    da, db = descs.get(a), descs.get(b)
    if da is not None and db is None:
        if a.dim() >= 1:
            dims = da.dims[:-1] + ((("c", out.shape[-1]),) if out.shape[-1] != 1 else (),)
            r = _Desc(dims, da.extra[:-1] + (0,), da.field, da.gctx, da.note)
            if _consistent(r, out.shape):
                return _mixed(r, [_mixing(da, [a.dim() - 1])], "linear over positions")
        return _globalize(_unknown(out.shape, da.field, da.gctx, da.note), {0, 1}, "matrix product")
    described = [dd for dd in (da, db) if dd is not None]
    field, gctx, note = _union(described)
    mixes = []
    if da is not None and a.dim() >= 1:
        mixes.append(_mixing(da, [a.dim() - 1]))
    if db is not None and b.dim() >= 2:
        mixes.append(_mixing(db, [b.dim() - 2]))
    if da is not None and db is not None and a.dim() >= 2 and b.dim() >= 2:
        dims = da.dims[:-1] + db.dims[-1:]
        extra = da.extra[:-1] + db.extra[-1:]
        r = _Desc(dims, extra, field, gctx, note)
        if _consistent(r, out.shape):
            # an attention map has positions in two dimensions: every use of it mixes positions
            return _mixed(r, mixes, "attention (matrix product over positions)")
    whole = set().union(*(w | set(win) for w, win in mixes))
    return _globalize(_unknown(out.shape, field, gctx, note), whole or {0, 1}, "matrix product")


def _einsum(func, args, kwargs, descs, out):
    eq = args[0]
    ops = list(args[1]) if len(args) == 2 and isinstance(args[1], (list, tuple)) else list(args[1:])
    ins, _, res = eq.replace(" ", "").partition("->")
    ins = ins.split(",")
    described = [descs[t] for t in ops if isinstance(t, torch.Tensor) and t in descs]
    field, gctx, note = _union(described)
    if "..." in eq or not res or len(ins) != len(ops):
        return _globalize(_unknown(out.shape, field, gctx, note), {0, 1}, "einsum")
    letter: dict[str, tuple] = {}
    mixes = []
    for spec, t in zip(ins, ops):
        dd = descs.get(t) if isinstance(t, torch.Tensor) else None
        if dd is None:
            continue
        for ch, i in zip(spec, range(len(spec))):
            letter.setdefault(ch, (dd.dims[i], dd.extra[i]))
        mixes.append(_mixing(dd, [i for i, ch in enumerate(spec) if ch not in res]))
    dims = tuple(letter.get(ch, ((("?", s),) if s != 1 else (), 0))[0] for ch, s in zip(res, out.shape))
    extra = tuple(letter.get(ch, ((), 0))[1] for ch in res)
    r = _Desc(dims, extra, field, gctx, note)
    if not _consistent(r, out.shape):
        r = _unknown(out.shape, field, gctx, note)
        mixes = [(w | set(win), {}) for w, win in mixes]
    return _mixed(r, mixes, "einsum over positions")

