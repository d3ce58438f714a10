"""Field rules of operations that move or regroup dimensions: permute/transpose/movedim,
view/reshape/flatten/squeeze, indexing and slicing, split/chunk/unbind, expand.

They move atoms (:func:`~dvis.engine.geometry.descriptors._regroup`) and keep every position's
field, except strided slices (a new stride and padding) and indexing across positions.
"""
from __future__ import annotations

import math

import torch

from dvis.engine.geometry.arguments import _arg, _norm_dim, _tup
from dvis.engine.geometry.descriptors import (_Axis, _Desc, _base, _globalize, _is, _regroup, _spatial_axes,
                                              _unknown, _unwindow_axis)


def _permute_order(func, args, kwargs, ndim):
    name = getattr(func, "__name__", "")
    rest = args[1:]
    if name == "permute":
        order = rest[0] if len(rest) == 1 and isinstance(rest[0], (list, tuple)) else rest
        order = kwargs.get("dims", order)
        return [_norm_dim(o, ndim) for o in order]
    if name in ("transpose", "swapaxes", "swapdims"):
        a = _norm_dim(_arg(args, kwargs, 1, "dim0"), ndim)
        b = _norm_dim(_arg(args, kwargs, 2, "dim1"), ndim)
        order = list(range(ndim))
        order[a], order[b] = b, a
        return order
    if name == "t":
        return list(range(ndim))[::-1]
    if name in ("movedim", "moveaxis"):
        src, dst = _arg(args, kwargs, 1, "source"), _arg(args, kwargs, 2, "destination")
        src = [_norm_dim(s, ndim) for s in _tup(src, 1)] if not isinstance(src, int) else [_norm_dim(src, ndim)]
        dst = [_norm_dim(s, ndim) for s in _tup(dst, 1)] if not isinstance(dst, int) else [_norm_dim(dst, ndim)]
        order = [None] * ndim
        for s, t in zip(src, dst):
            order[t] = s
        others = iter(i for i in range(ndim) if i not in src)
        return [o if o is not None else next(others) for o in order]
    raise KeyError(name)


def _permute(func, args, kwargs, d, x, out):
    order = _permute_order(func, args, kwargs, x.dim())
    return _Desc(tuple(d.dims[o] for o in order), tuple(d.extra[o] for o in order), d.field, d.gctx, d.note)


def _reshape(func, args, kwargs, d, x, out):
    r = _regroup(d, out.shape)
    if r is None:
        return _unknown(out.shape, d.field, d.gctx, d.note)
    return r


def _getitem(func, args, kwargs, d, x, out):
    idx = args[1]
    idx = idx if isinstance(idx, tuple) else (idx,)
    if any(isinstance(i, torch.Tensor) or isinstance(i, (list, bool)) for i in idx):
        return None
    n_real = sum(1 for i in idx if i is not None and i is not Ellipsis)
    expanded = []
    for i in idx:
        if i is Ellipsis:
            expanded.extend([slice(None)] * (x.dim() - n_real))
        else:
            expanded.append(i)
    expanded.extend([slice(None)] * (x.dim() - sum(1 for i in expanded if i is not None)))
    dims, extra, field = [], [], list(d.field)
    gctx, note, whole = d.gctx, d.note, set()
    dim = 0
    for i in expanded:
        if i is None:
            dims.append(())
            extra.append(0)
            continue
        atoms, e, n = d.dims[dim], d.extra[dim], x.shape[dim]
        if isinstance(i, int):
            if e and _norm_dim(i, n) < e:  # an extra (class) token: it has no position
                whole |= _spatial_axes(atoms) or {0, 1}
            elif len(atoms) > 1 or e:
                whole |= _spatial_axes(atoms)
            elif atoms and atoms[0][0] in ("h", "w"):
                pass  # one row or column: its field stays that of its positions
            dim += 1
            continue
        start, stop, step = i.indices(n)
        size = len(range(start, stop, step))
        if (start, step, size) == (0, 1, n):
            dims.append(atoms)
            extra.append(e)
        elif e and step == 1 and start == e and size == n - e:
            dims.append(atoms)
            extra.append(0)
        elif e or len(atoms) > 1:
            dims.append((("?", size),) if size != 1 else ())
            extra.append(0)
            whole |= _spatial_axes(atoms)
        elif atoms and atoms[0][0] in ("h", "w"):
            a = {"h": 0, "w": 1}[atoms[0][0]]
            f = _unwindow_axis(field[a])
            if f is not None:
                field[a] = _Axis(f.size, f.stride * step, f.pad - start * f.stride)
            dims.append(((atoms[0][0], size),) if size != 1 else ())
            extra.append(0)
        else:
            kind = _base(atoms[0][0]) if atoms else "?"
            dims.append(((kind, size),) if size != 1 else ())
            extra.append(0)
        dim += 1
    r = _Desc(tuple(dims), tuple(extra), tuple(field), gctx, note)
    return _globalize(r, whole, "indexing across positions") if whole else r


def _split(func, args, kwargs, d, x, out):
    name = func.__name__
    if name == "unbind":
        dim = _norm_dim(_arg(args, kwargs, 1, "dim", 0), x.dim())
        if _spatial_axes(d.dims[dim]) or d.extra[dim]:
            return None
        r = _Desc(d.dims[:dim] + d.dims[dim + 1:], d.extra[:dim] + d.extra[dim + 1:], d.field, d.gctx, d.note)
        return [r] * len(out)
    dim = _norm_dim(_arg(args, kwargs, 2, "dim", 0), x.dim())
    atoms = d.dims[dim]
    pieces, offset = [], 0
    for piece in out:
        n = piece.shape[dim]
        dims, field = list(d.dims), list(d.field)
        if _is(atoms, "c") or not atoms:
            dims[dim] = (("c", n),) if n != 1 else ()
        elif len(atoms) == 1 and atoms[0][0] in ("h", "w") and not d.extra[dim]:
            a = {"h": 0, "w": 1}[atoms[0][0]]
            if field[a] is not None:
                f = _unwindow_axis(field[a])
                field[a] = _Axis(f.size, f.stride, f.pad - offset * f.stride)
            dims[dim] = ((atoms[0][0], n),) if n != 1 else ()
        else:
            return None
        pieces.append(_Desc(tuple(dims), d.extra, tuple(field), d.gctx, d.note))
        offset += n
    return pieces


def _expand(func, args, kwargs, d, x, out):
    dims = list(d.dims)
    lead = out.dim() - x.dim()
    dims = [()] * lead + dims
    extra = [0] * lead + list(d.extra)
    for i, n in enumerate(out.shape):
        if math.prod(s for _, s in dims[i]) + extra[i] != n:
            dims[i] = (("b", n),)  # broadcast copies: joins treat it as size 1
            extra[i] = 0
    return _Desc(tuple(dims), tuple(extra), d.field, d.gctx, d.note)

