"""Field rules of sliding windows and resampling: conv, transposed conv, max/avg/adaptive pools,
interpolate, pixel (un)shuffle and pad.

Windows compose by the usual recurrence (``size += d*(k-1)*stride; padding += p*stride; stride *= s``);
resampling gives a field that bounds every output position's taps; adaptive pools that do not tile
evenly (and global pools) make the field the whole input on that axis.
"""
from __future__ import annotations

from fractions import Fraction

import torch
import torch.nn.functional as F

from dvis.engine.geometry.arguments import _arg, _tup
from dvis.engine.geometry.descriptors import _Axis, _Desc, _base, _globalize, _is, _spatial_axes, _unknown


def _local(d: _Desc, in_shape, out_shape, dims: list[int], kernel, stride, pad, dil, note: str) -> _Desc:
    """Spatial ``dims`` through a sliding window; other dimensions keep their atoms."""
    field = list(d.field)
    new_dims = list(d.dims)
    extra = list(d.extra)
    lost = []
    for j, dim in enumerate(dims):
        atoms = d.dims[dim]
        if d.extra[dim] or len(atoms) > 1 or (atoms and _base(atoms[0][0]) not in ("h", "w")):
            lost.append(j)
            new_dims[dim] = (("?", out_shape[dim]),) if out_shape[dim] != 1 else ()
            extra[dim] = 0
            continue
        kind = atoms[0][0] if atoms else None
        if kind is None or kind != _base(kind):  # size 1 or a split part: no position to track
            new_dims[dim] = ((kind, out_shape[dim]),) if kind and out_shape[dim] != 1 else ()
            continue
        a = {"h": 0, "w": 1}[kind]
        f = field[a]
        if f is not None:
            field[a] = _Axis(f.size + dil[j] * (kernel[j] - 1) * f.stride, f.stride * stride[j], f.pad + pad[j] * f.stride)
        new_dims[dim] = ((kind, out_shape[dim]),) if out_shape[dim] != 1 else ()
    out = _Desc(tuple(new_dims), tuple(extra), tuple(field), d.gctx, d.note)
    if lost:
        axes = set().union(*(_spatial_axes(d.dims[dims[j]]) for j in lost)) or {0, 1}
        out = _globalize(out, axes, f"{note} over an untracked dimension")
    return out


def _scale(d: _Desc, dims, in_shape, out_shape, mode: str) -> _Desc:
    """Resampling by out/in along ``dims`` (interpolate, pixel shuffle); a bounding field."""
    field = list(d.field)
    new_dims = list(d.dims)
    for dim in dims:
        atoms = d.dims[dim]
        if len(atoms) != 1 or atoms[0][0] not in ("h", "w"):
            return _globalize(_unknown(out_shape, d.field, d.gctx, d.note), {0, 1}, "resampling an untracked dimension")
        a = {"h": 0, "w": 1}[atoms[0][0]]
        new_dims[dim] = ((atoms[0][0], out_shape[dim]),)
        f = field[a]
        if f is None:
            continue
        r = Fraction(out_shape[dim], in_shape[dim])
        j = f.stride / r
        if mode in ("nearest", "shuffle"):
            # output o reads input floor(o / r) > o/r - 1 (>= o/r - (r - 1)/r for a whole r)
            gap = max(f.stride - j if r.denominator == 1 else f.stride, Fraction(0))
            field[a] = _Axis(f.size + gap, j, f.pad + gap)
        elif mode == "nearest-exact":  # reads floor((o + 1/2) / r)
            field[a] = _Axis(f.size + f.stride, j, f.pad + f.stride - j / 2)
        else:  # (bi/tri)linear, bicubic: taps within t input steps of c = (o + 1/2)/r - 1/2
            t = 2 if mode == "bicubic" else 1
            field[a] = _Axis(f.size + 2 * t * f.stride, j, f.pad + (t + Fraction(1, 2)) * f.stride - j / 2)
    return _Desc(tuple(new_dims), d.extra, tuple(field), d.gctx, d.note)


def _conv_like(func, args, kwargs, d, x, out):
    nd = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3}[func]
    weight = _arg(args, kwargs, 1, "weight")
    stride = _tup(_arg(args, kwargs, 3, "stride", 1), nd)
    padding = _arg(args, kwargs, 4, "padding", 0)
    dil = _tup(_arg(args, kwargs, 5, "dilation", 1), nd)
    kernel = tuple(weight.shape[2:])
    if padding == "valid":
        padding = (0,) * nd
    elif padding == "same":
        padding = tuple(di * (k - 1) // 2 for k, di in zip(kernel, dil))
    padding = _tup(padding, nd)
    return _channels_out(_local(d, x.shape, out.shape, list(range(x.dim() - nd, x.dim())), kernel, stride,
                                padding, dil, "convolution"), x.dim() - nd - 1, out)


def _channels_out(d: _Desc, cdim: int, out) -> _Desc:
    dims = list(d.dims)
    if cdim >= 0:
        dims[cdim] = (("c", out.shape[cdim]),) if out.shape[cdim] != 1 else ()
    return _Desc(tuple(dims), d.extra, d.field, d.gctx, d.note)


def _conv_transpose(func, args, kwargs, d, x, out):
    nd = {F.conv_transpose1d: 1, F.conv_transpose2d: 2, F.conv_transpose3d: 3}[func]
    weight = _arg(args, kwargs, 1, "weight")
    stride = _tup(_arg(args, kwargs, 3, "stride", 1), nd)
    padding = _tup(_arg(args, kwargs, 4, "padding", 0), nd)
    dil = _tup(_arg(args, kwargs, 7, "dilation", 1), nd)
    kernel = tuple(weight.shape[2:])
    field, dims = list(d.field), list(d.dims)
    first = x.dim() - nd
    for j in range(nd):
        dim = first + j
        atoms = d.dims[dim]
        if len(atoms) != 1 or atoms[0][0] not in ("h", "w"):
            return _globalize(_unknown(out.shape, d.field, d.gctx, d.note), {0, 1}, "transposed conv over an untracked dimension")
        a = {"h": 0, "w": 1}[atoms[0][0]]
        dims[dim] = ((atoms[0][0], out.shape[dim]),)
        f = field[a]
        if f is not None:
            # output o gets inputs i with i*s - p + t*d = o, t < k: i in [(o + p - d(k-1))/s, (o + p)/s],
            # so its field lies in [o*js + (p - d(k-1))*js - P, o*js + p*js - P + S) with js = J/s
            js = f.stride / stride[j]
            field[a] = _Axis(f.size + dil[j] * (kernel[j] - 1) * js, js,
                             f.pad + (dil[j] * (kernel[j] - 1) - padding[j]) * js)
    return _channels_out(_Desc(tuple(dims), d.extra, tuple(field), d.gctx, d.note), first - 1, out)


def _max_pool(nd):
    def rule(func, args, kwargs, d, x, out):
        k = _tup(_arg(args, kwargs, 1, "kernel_size"), nd)
        s = _arg(args, kwargs, 2, "stride", None)
        s = k if s in (None, [], ()) else _tup(s, nd)
        p = _tup(_arg(args, kwargs, 3, "padding", 0), nd)
        dil = _tup(_arg(args, kwargs, 4, "dilation", 1), nd)
        o = out[0] if isinstance(out, tuple) else out
        return _local(d, x.shape, o.shape, list(range(x.dim() - nd, x.dim())), k, s, p, dil, "pooling")
    return rule


def _avg_pool(nd):
    def rule(func, args, kwargs, d, x, out):
        k = _tup(_arg(args, kwargs, 1, "kernel_size"), nd)
        s = _arg(args, kwargs, 2, "stride", None)
        s = k if s in (None, [], ()) else _tup(s, nd)
        p = _tup(_arg(args, kwargs, 3, "padding", 0), nd)
        return _local(d, x.shape, out.shape, list(range(x.dim() - nd, x.dim())), k, s, p, (1,) * nd, "pooling")
    return rule


def _adaptive(nd):
    def rule(func, args, kwargs, d, x, out):
        o = out[0] if isinstance(out, tuple) else out
        dims = list(range(x.dim() - nd, x.dim()))
        k, s, whole = [], [], set()
        for dim in dims:
            n_in, n_out = x.shape[dim], o.shape[dim]
            if n_in % n_out == 0:  # even tiling: a plain pool (the identity when sizes match)
                k.append(n_in // n_out)
                s.append(n_in // n_out)
            else:
                k.append(1)
                s.append(1)
                whole |= _spatial_axes(d.dims[dim])
        r = _local(d, x.shape, o.shape, dims, k, s, (0,) * nd, (1,) * nd, "adaptive pooling")
        whole |= {a for dim in dims for a in _spatial_axes(d.dims[dim]) if o.shape[dim] == 1 and x.shape[dim] > 1}
        return _globalize(r, whole, "global pooling") if whole else r
    return rule


def _interpolate(func, args, kwargs, d, x, out):
    mode = _arg(args, kwargs, 3, "mode", "nearest")
    return _scale(d, list(range(2, x.dim())), x.shape, out.shape, mode)


def _pixel_shuffle(func, args, kwargs, d, x, out):
    n = x.dim()
    if func in (F.pixel_shuffle, torch.pixel_shuffle):
        r = _scale(d, [n - 2, n - 1], x.shape, out.shape, "shuffle")
    else:
        f = _arg(args, kwargs, 1, "downscale_factor")
        r = _local(d, x.shape, out.shape, [n - 2, n - 1], (f, f), (f, f), (0, 0), (1, 1), "pixel unshuffle")
    return _channels_out(r, n - 3, out)


def _pad(func, args, kwargs, d, x, out):
    pad = list(_arg(args, kwargs, 1, "pad"))
    field, dims = list(d.field), list(d.dims)
    for j in range(len(pad) // 2):
        dim = x.dim() - 1 - j
        before, after = pad[2 * j], pad[2 * j + 1]
        if before == after == 0:
            continue
        atoms = d.dims[dim]
        if _is(atoms, "c"):
            dims[dim] = (("c", out.shape[dim]),)
        elif len(atoms) == 1 and atoms[0][0] in ("h", "w") and not d.extra[dim]:
            a = {"h": 0, "w": 1}[atoms[0][0]]
            f = field[a]
            if f is not None:
                field[a] = _Axis(f.size, f.stride, f.pad + before * f.stride)
            dims[dim] = ((atoms[0][0], out.shape[dim]),)
        else:
            return _globalize(_unknown(out.shape, d.field, d.gctx, d.note), {0, 1}, "padding an untracked dimension")
    return _Desc(tuple(dims), d.extra, tuple(field), d.gctx, d.note)

