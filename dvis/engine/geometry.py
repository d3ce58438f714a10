"""Layer geometry of a whole net from one traced forward: shapes, layouts and receptive fields.

Usage::

    from dvis.engine.geometry import model_geometry, to_maps, extra_token_values
    geo = model_geometry(model)                   # {layer: LayerGeometry}, cached per net and input size
    g = geo["features.3.0.block.5"]               # ConvNeXt block internals: layout "hwc"
    g.layout, g.channels, g.grid, g.rf.box(y, x)  # "hwc", 96, (56, 56), input pixels of unit (y, x)
    maps = to_maps(acts[g.name], g)               # N x C x H x W whatever the layout (N x C for vectors)
    cls = extra_token_values(acts[name], geo[name])   # ViT class token(s): N x extra x C, else None
    [n for n, g in geo.items() if not g.runs]     # aux heads the eval forward never reaches
    g.global_context, g.reason                    # an SE gate / attention / global pool feeds it, and why

How it works. The net runs once on a fake input (``FakeTensorMode``: shapes only, no memory or
arithmetic; a real batch-2 input on the net's device if the net does something fake tensors cannot,
e.g. reads a value) under a ``TorchFunctionMode`` that gives every tensor a descriptor:

* what each of its dimensions holds, as a list of atoms: batch ``n``, channels ``c``, input rows
  ``h`` and columns ``w`` (a split atom's inner part gets a prime, ``h'``, and merges back), or
  ``?``; token dimensions may start with extra (class/register) tokens;
* per input axis, the field of one position: size, stride and effective padding in input pixels
  (unit ``i`` sees input rows ``i*stride - padding`` to ``+ size``), or "whole input";
* whether a global operation fed it (``global_context``) and why.

The layout rule follows the flow, never the sizes: the input is ``n c h w``; conv/pool/norm/pad
calls name their dimensions; permute/transpose/view/reshape/flatten/getitem/cat move and regroup the
atoms. A per-sample ``c h w`` is ``"chw"``, ``h w c`` is ``"hwc"`` (ConvNeXt after ``Permute``,
Swin), ``(h w) c`` is ``"tokens"`` (ViT: ``[class token] + gh*gw`` patches), ``c`` alone is
``"vector"``; any other arrangement of the batch (outermost, possibly merged with windows) and
parts of ``c``, ``h`` and ``w`` is ``"partitioned"`` (MaxViT window/grid partitions: ``to_maps``
undoes the permutation); anything else (attention maps) is ``"other"``.

Field rules: conv/pool (kernel, stride, padding, dilation, asymmetric), transposed conv,
interpolate, pixel (un)shuffle, pad and strided slices compose by the usual recurrence
(``size += d*(k-1)*stride; padding += p*stride; stride *= s``); element-wise joins and concat take
the union of their full-size inputs' fields; an input broadcast over space (an SE gate, N x C x 1 x 1)
adds global context but keeps the local field; reductions, softmax, attention, matmul/linear/einsum
over a spatial dimension, roll and adaptive pools that do not tile evenly make the field the whole
input on that axis, except that mixing only the finest part of a split axis (attention inside
windows) gives the window's field (``ReceptiveField.window``). GroupNorm/InstanceNorm/LayerNorm over space add global context. An operation
the trace does not know that changes the shape makes the field the whole input (``reason`` says
which). A fractional stride (resampling by a non-integer factor) becomes the nearest whole one,
with padding and size grown so that every position's box still contains its field. A position whose
field is the whole input along an axis gets stride = the grid's spacing (input side / positions)
and size/padding that make every position's box cover that side (clipped: the whole input).
"""
from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass
from fractions import Fraction
from weakref import WeakKeyDictionary

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary

from dvis.errors import DvisError
from dvis.engine.hooks import ACTIVATION_FUNCTIONS, activation_of, forward_hooks
from dvis.engine.net import as_net, expected_input

LAYOUTS = ("chw", "hwc", "tokens", "vector", "partitioned", "other")
#: Plain nets have no recorded input size; this is the usual ImageNet one.
DEFAULT_INPUT_SIZE = (224, 224)


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a layer's units: unit (y, x) sees input rows ``y*stride - padding`` on.

    ``size``, ``stride`` and ``padding`` (the effective padding) are (h, w) in input pixels;
    ``input_size`` is the (h, w) the field was computed for. Units that see the whole input
    (fc layers, after global pooling or attention) have size = stride = input size, padding 0.
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    input_size: tuple[int, int]
    #: Positions per window (h, w) that share one field (attention inside non-overlapping windows,
    #: MaxViT): unit (y, x) has the box of (y - y % window[0], x - x % window[1]), whose size covers
    #: the whole window. (1, 1) for everything else.
    window: tuple[int, int] = (1, 1)

    def box(self, y, x, clip: bool = True):
        """(top, left, bottom, right) of unit (y, x) in input pixels, bottom/right exclusive.

        ``clip=False`` gives the unclipped box (may extend past the image), for padding-aware
        crops. ``y``/``x`` may also be integer numpy arrays (then the four are arrays).
        """
        y, x = np.asarray(y), np.asarray(x)
        top = (y - y % self.window[0]) * self.stride[0] - self.padding[0]
        left = (x - x % self.window[1]) * self.stride[1] - self.padding[1]
        bottom, right = top + self.size[0], left + self.size[1]
        if clip:
            h, w = self.input_size
            top, bottom = np.clip(top, 0, h), np.clip(bottom, 0, h)
            left, right = np.clip(left, 0, w), np.clip(right, 0, w)
        if np.ndim(top) == 0:
            return int(top), int(left), int(bottom), int(right)
        return top, left, bottom, right


def whole_input(input_size: tuple[int, int]) -> ReceptiveField:
    """The field of a unit that sees the whole input."""
    return ReceptiveField(tuple(input_size), tuple(input_size), (0, 0), tuple(input_size))


INPUT_INDEPENDENT = "output does not depend on the input"


@dataclass(frozen=True)
class LayerGeometry:
    """Shape, layout and receptive field of one layer's output (see the module docstring)."""

    name: str
    shape: tuple[int, ...]        # per-sample output shape as the module produces it (no batch dim; windows
                                  # merged with the batch: the sample's share of the first dimension first)
    layout: str                   # "chw", "hwc", "tokens" (N, L, C with a patch grid), "vector" (N, C),
                                  # "partitioned" (windows/grid cells: any order of channel, row, column parts), "other"
    channels: int                 # units per position
    grid: tuple[int, int] | None  # (H, W) of unit positions for maps and token patch grids
    extra_tokens: int             # class/register/distillation tokens before the grid (tokens layout), else 0
    rf: ReceptiveField | None     # field of one position; the whole input for vectors and global layers
    global_context: bool          # a global op (SE gate, attention, global pool, linear over space) feeds it
    runs: bool                    # False when the forward never reaches it (GoogLeNet/Inception aux heads in eval)
    reason: str                   # why not visualizable / why global, "" otherwise
    #: "partitioned" only: the sizes of the tensor's parts per sample, in its own row-major order
    #: (batch excluded), and the order of those parts that lists channels, rows, columns (each coarse
    #: to fine): ``to_maps`` is a reshape, that permutation and a reshape.
    partition: tuple[tuple[int, ...], tuple[int, ...]] | None = None

    @property
    def input_dependent(self) -> bool:
        """False for a module whose output the trace finds no field of the input in (e.g. Swin-V2's
        relative-position-bias MLP, computed from a constant table): nothing of the image to show."""
        return self.reason != INPUT_INDEPENDENT

    @property
    def browsable(self) -> bool:
        """Runs and depends on the input: what ``default_layers`` lists. "other" layouts stay listed
        (shown disabled with the reason), so that a gap in the layout rules stays visible."""
        return self.runs and self.input_dependent

    @property
    def visualizable(self) -> bool:
        """Runs and has units to show: a map, a token grid or a vector."""
        return self.runs and self.layout != "other"

    @property
    def spatial(self) -> bool:
        """Units have positions (a map, a token grid or a partitioned map)."""
        return self.layout in ("chw", "hwc", "tokens", "partitioned")

    @property
    def reordered(self) -> bool:
        """Its values need :func:`to_maps` to be N x C x H x W (hwc, tokens, partitioned)."""
        return self.layout in ("hwc", "tokens", "partitioned")


# --- descriptors ---------------------------------------------------------------------------------

Atom = tuple[str, int]


@dataclass(frozen=True)
class _Axis:
    size: Fraction
    stride: Fraction
    pad: Fraction
    win: int = 1  # positions per window sharing one field (the box of the window's first position)


@dataclass(frozen=True)
class _Desc:
    dims: tuple[tuple[Atom, ...], ...]   # per tensor dimension, its atoms (row-major)
    extra: tuple[int, ...]               # per dimension, leading extra tokens (0 almost always)
    field: tuple[_Axis | None, _Axis | None]   # per input axis (h, w); None = the whole input
    gctx: bool
    note: str = ""


def _base(kind: str) -> str:
    return kind.rstrip("'")


def _is(atoms: tuple[Atom, ...], base: str) -> bool:
    return bool(atoms) and all(_base(k) == base for k, _ in atoms)


def _spatial_axes(atoms) -> set[int]:
    return {{"h": 0, "w": 1}[_base(k)] for k, _ in atoms if _base(k) in ("h", "w")}


def _unknown(shape, field, gctx, note) -> _Desc:
    return _Desc(tuple((("?", s),) if s != 1 else () for s in shape), (0,) * len(shape), field, gctx, note)


def _globalize(d: _Desc, axes, note: str) -> _Desc:
    """``d`` with the field of ``axes`` made the whole input; the note names the first such cause."""
    if not axes:
        return d
    field = tuple(None if a in axes else f for a, f in enumerate(d.field))
    return _Desc(d.dims, d.extra, field, True, d.note if None in d.field else note)


def _unwindow_axis(f: _Axis | None) -> _Axis | None:
    """A windowed field as the per-position field that bounds it: position i's window starts
    within ``win - 1`` positions before i."""
    if f is None or f.win == 1:
        return f
    grow = (f.win - 1) * f.stride
    return _Axis(f.size + grow, f.stride, f.pad + grow)


def _unwindow(d: _Desc) -> _Desc:
    """``d`` with per-position fields, for rules that move positions (conv, pool, pad, slices, ...)."""
    if all(f is None or f.win == 1 for f in d.field):
        return d
    return _Desc(d.dims, d.extra, tuple(_unwindow_axis(f) for f in d.field), d.gctx, d.note)


def _window_axis(f: _Axis | None, win: int) -> _Axis | None:
    """The field of a position that sees every position of its window of ``win`` (aligned at 0)."""
    if f is None or f.win == win:
        return f
    if win % f.win:
        f = _unwindow_axis(f)
    return _Axis(f.size + (win - f.win) * f.stride, f.stride, f.pad, win)


def _union_axis(a: _Axis | None, b: _Axis | None) -> _Axis | None:
    if a is None or b is None:
        return None
    if a.win != b.win:  # a windowed field absorbs a per-position one (x + attention(x))
        win = max(a.win, b.win)
        if win % min(a.win, b.win):
            a, b = _unwindow_axis(a), _unwindow_axis(b)
        else:
            a, b = _window_axis(a, win), _window_axis(b, win)
    stride = max(a.stride, b.stride)
    pad = max(a.pad, b.pad)
    end = max(a.size - a.pad, b.size - b.pad)
    return _Axis(pad + end, stride, pad, a.win)


def _union(descs: list[_Desc]) -> tuple[tuple, bool, str]:
    field = descs[0].field
    for d in descs[1:]:
        field = tuple(_union_axis(a, b) for a, b in zip(field, d.field))
    notes = [d.note for d in descs if d.note and None in d.field] + [d.note for d in descs if d.note]
    return field, any(d.gctx for d in descs), notes[0] if notes else ""


def _consistent(d: _Desc, shape) -> bool:
    return len(d.dims) == len(shape) and all(
        math.prod(s for _, s in atoms) + e == n for atoms, e, n in zip(d.dims, d.extra, shape)
    )


def _known(d: _Desc) -> int:
    return sum(1 for atoms in d.dims for k, _ in atoms if k != "?")


# --- atom regrouping (view / reshape / flatten / unflatten / squeeze / unsqueeze) ---------------

def _finer(atom, kind: str):
    """``atom`` one prime finer if it is a finer part of ``kind``'s axis than ``kind`` itself."""
    if len(atom) == 2 and _base(atom[0]) == _base(kind) and atom[0].count("'") > kind.count("'"):
        return atom[0] + "'", atom[1]
    return atom


def _regroup(d: _Desc, out_shape) -> _Desc | None:
    """The descriptor of ``d``'s tensor viewed as ``out_shape``, or None if the atoms do not line up."""
    atoms: list[Atom] = []
    for dim_atoms, e in zip(d.dims, d.extra):
        if e:  # a token dimension with extra tokens moves only as a whole
            atoms.append(("T", math.prod(s for _, s in dim_atoms) + e, dim_atoms, e))
        else:
            atoms.extend(a for a in dim_atoms if a[1] != 1)
    dims, extra, i = [], [], 0
    for size in out_shape:
        if size == 1:
            dims.append(())
            extra.append(0)
            continue
        group, prod = [], 1
        while prod < size and i < len(atoms):
            atom = atoms[i]
            if prod * atom[1] <= size:
                group.append(atom)
                prod *= atom[1]
                i += 1
            elif size % prod == 0 and atom[1] % (size // prod) == 0 and len(atom) == 2:
                f = size // prod  # split the atom: outer part keeps the kind, inner gets a prime
                # Primes count from coarse to fine along an axis: finer parts that exist already
                # (splitting the outer part of an earlier split) move one prime down.
                dims = [tuple(_finer(a, atom[0]) for a in g) for g in dims]
                group = [_finer(a, atom[0]) for a in group]
                atoms[i + 1:] = [_finer(a, atom[0]) for a in atoms[i + 1:]]
                group.append((atom[0], f))
                atoms[i] = (atom[0] + "'", atom[1] // f)
                prod = size
            else:
                return None
        if prod != size:
            return None
        tokens = [a for a in group if len(a) == 4]
        if tokens:
            if len(group) != 1:
                return None
            dims.append(tokens[0][2])
            extra.append(tokens[0][3])
            continue
        merged: list[Atom] = []
        for kind, s in group:  # (h, a) followed by (h', b) is h again
            if merged and kind == merged[-1][0] + "'":
                merged[-1] = (merged[-1][0], merged[-1][1] * s)
            else:
                merged.append((kind, s))
        dims.append(tuple(merged))
        extra.append(0)
    if i != len(atoms):
        return None
    return _Desc(tuple(dims), tuple(extra), d.field, d.gctx, d.note)


# --- argument helpers ------------------------------------------------------------------------------

def _arg(args, kwargs, i, name, default=None):
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _tup(v, n):
    if isinstance(v, (list, tuple)):
        return tuple(v) if len(v) == n else tuple(v) * n if len(v) == 1 else tuple(v)
    return (v,) * n


def _norm_dim(dim, ndim):
    return dim + ndim if dim < 0 else dim


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            if isinstance(o, torch.Tensor):
                yield o


# --- the rules -------------------------------------------------------------------------------------

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


def _all_tensors(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        yield from _tensors(a)


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


_MAXPOOLS = {
    1: (F.max_pool1d, F._max_pool1d, F.max_pool1d_with_indices, torch.max_pool1d),
    2: (F.max_pool2d, F._max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d),
    3: (F.max_pool3d, F._max_pool3d, F.max_pool3d_with_indices, torch.max_pool3d),
}
_ADAPTIVE = {
    1: (F.adaptive_avg_pool1d, F.adaptive_max_pool1d, F._adaptive_max_pool1d, F.adaptive_max_pool1d_with_indices,
        torch.adaptive_avg_pool1d),
    2: (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F._adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices),
    3: (F.adaptive_avg_pool3d, F.adaptive_max_pool3d, F._adaptive_max_pool3d, F.adaptive_max_pool3d_with_indices),
}
_T = torch.Tensor
#: Rules that read one input descriptor (the first tensor argument's).
_UNARY = {
    F.conv1d: _conv_like, F.conv2d: _conv_like, F.conv3d: _conv_like,
    F.conv_transpose1d: _conv_transpose, F.conv_transpose2d: _conv_transpose, F.conv_transpose3d: _conv_transpose,
    F.avg_pool1d: _avg_pool(1), F.avg_pool2d: _avg_pool(2), F.avg_pool3d: _avg_pool(3),
    F.interpolate: _interpolate, F.upsample: _interpolate,
    F.pixel_shuffle: _pixel_shuffle, torch.pixel_shuffle: _pixel_shuffle,
    F.pixel_unshuffle: _pixel_shuffle, torch.pixel_unshuffle: _pixel_shuffle,
    F.pad: _pad, torch.constant_pad_nd: _pad,
    F.linear: _linear,
    F.layer_norm: _norm_over, F.group_norm: _norm_over, F.instance_norm: _norm_over,
    _T.__getitem__: _getitem,
    F.softmax: _softmax, F.log_softmax: _softmax, torch.softmax: _softmax, _T.softmax: _softmax,
    torch.log_softmax: _softmax, _T.log_softmax: _softmax,
    torch.roll: _roll, _T.roll: _roll,
    _T.expand: _expand, _T.expand_as: _expand,
}
for _nd, _fs in _MAXPOOLS.items():
    _UNARY.update({f: _max_pool(_nd) for f in _fs})
for _nd, _fs in _ADAPTIVE.items():
    _UNARY.update({f: _adaptive(_nd) for f in _fs})
for _f in (_T.view, _T.reshape, torch.reshape, _T.flatten, torch.flatten, _T.unflatten, torch.unflatten,
           _T.squeeze, torch.squeeze, _T.unsqueeze, torch.unsqueeze, _T.view_as, _T.reshape_as, _T.squeeze_,
           _T.unsqueeze_):
    _UNARY[_f] = _reshape
for _f in (_T.permute, torch.permute, _T.transpose, torch.transpose, _T.swapaxes, torch.swapaxes, _T.t, torch.t,
           _T.movedim, torch.movedim, _T.moveaxis, torch.moveaxis, _T.transpose_):
    _UNARY[_f] = _permute
for _f in (torch.mean, _T.mean, torch.sum, _T.sum, torch.amax, _T.amax, torch.amin, _T.amin, torch.max, _T.max,
           torch.min, _T.min, torch.std, _T.std, torch.var, _T.var, torch.logsumexp, _T.logsumexp, torch.nansum,
           _T.nansum, torch.norm, _T.norm, torch.prod, _T.prod, torch.std_mean, torch.var_mean):
    _UNARY[_f] = _reduction
for _f in (torch.split, _T.split, torch.chunk, _T.chunk, torch.unbind, _T.unbind, torch.tensor_split,
           _T.tensor_split):
    _UNARY[_f] = _split
#: Rules that keep every position's field (or handle windowed fields themselves); the others see
#: windowed fields as the per-position fields that bound them.
_KEEPS_POSITIONS = {_reshape, _permute, _linear, _norm_over, _softmax, _reduction, _roll, _expand, _split, _getitem}
#: Rules that read every input's descriptor.
_MULTI = {
    torch.cat: _cat, torch.concat: _cat, torch.concatenate: _cat,
    F.scaled_dot_product_attention: _attention, F.multi_head_attention_forward: _attention,
    torch.matmul: _matmul, _T.matmul: _matmul, _T.__matmul__: _matmul, torch.bmm: _matmul, _T.bmm: _matmul,
    torch.mm: _matmul, _T.mm: _matmul, torch.baddbmm: _matmul, _T.baddbmm: _matmul, torch.addmm: _matmul,
    _T.addmm: _matmul,
    torch.einsum: _einsum,
}
if hasattr(torch, "_native_multi_head_attention"):
    _MULTI[torch._native_multi_head_attention] = _attention
#: Size-only queries: no tensor comes out, nothing to track.
_SKIP = {_T.size, _T.dim, _T.numel, _T.__len__, _T.shape.__get__, _T.ndim.__get__, _T.dtype.__get__,
         _T.device.__get__, _T.is_floating_point, _T.requires_grad.__get__, _T.data_ptr}


#: Calls whose output has the input's shape; on fake tensors only the shape matters, and fake
#: batch norm alone costs tens of ms a call (a third of resnet50's trace).
_SAME_SHAPE = {
    F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm, F.local_response_norm,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    F.hardtanh, F.hardtanh_, F.hardsigmoid, F.sigmoid, torch.sigmoid, _T.sigmoid, F.tanh, torch.tanh,
} | set(ACTIVATION_FUNCTIONS)


def _fits(func, x, args, kwargs) -> bool:
    """The shape checks a norm would make (the rest of :data:`_SAME_SHAPE` takes any shape)."""
    if func is F.batch_norm:
        mean = _arg(args, kwargs, 1, "running_mean")
        return x.dim() >= 2 and (mean is None or mean.numel() == x.shape[1])
    if func is F.layer_norm:
        shape = tuple(_tup(_arg(args, kwargs, 1, "normalized_shape"), 1))
        return tuple(x.shape[x.dim() - len(shape):]) == shape
    if func is F.group_norm:
        return x.dim() >= 2 and x.shape[1] % _arg(args, kwargs, 1, "num_groups") == 0
    return True


def _shape_only(func, args, kwargs):
    """The output of ``func`` computed from shapes alone (fake tensors), or None to run it."""
    if func in _SAME_SHAPE:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or not _fits(func, x, args, kwargs):
            return None  # the real call raises the error
        name = getattr(func, "__name__", "")
        return x if name.endswith("_") or kwargs.get("inplace") else torch.empty_like(x)
    if func is F.linear:
        x, w = args[0] if args else kwargs["input"], args[1] if len(args) > 1 else kwargs["weight"]
        if x.dim() < 1 or w.dim() != 2 or x.shape[-1] != w.shape[1]:
            return None
        return x.new_empty(tuple(x.shape[:-1]) + (w.shape[0],))
    if func is F.conv2d:
        x = args[0] if args else kwargs["input"]
        w = args[1] if len(args) > 1 else kwargs["weight"]
        groups = _arg(args, kwargs, 6, "groups", 1)
        if x.dim() != 4 or w.dim() != 4 or x.shape[1] != w.shape[1] * groups:
            return None
        stride = _tup(_arg(args, kwargs, 3, "stride", 1), 2)
        pad = _arg(args, kwargs, 4, "padding", 0)
        dil = _tup(_arg(args, kwargs, 5, "dilation", 1), 2)
        k = w.shape[2:]
        if pad == "same":
            return x.new_empty((x.shape[0], w.shape[0]) + tuple(x.shape[2:]))
        pad = (0, 0) if pad == "valid" else _tup(pad, 2)
        hw = tuple((n + 2 * p - d * (kk - 1) - 1) // s_ + 1 for n, p, d, kk, s_ in zip(x.shape[2:], pad, dil, k, stride))
        if min(hw) < 1:
            return None  # let the real call raise its error
        return x.new_empty((x.shape[0], w.shape[0]) + hw)
    return None


class _Tracer(TorchFunctionMode):
    """Propagates descriptors through every torch call of the forward."""

    def __init__(self, shapes_only: bool = False, meta: bool = False):
        super().__init__()
        self.descs = WeakTensorKeyDictionary()
        self.activations: dict[str, int] = {}
        self.shapes_only = shapes_only
        self.meta = meta
        self.twins: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _twin(self, obj):
        """A meta tensor standing for a real one (a parameter, buffer or constant) in a meta trace."""
        if isinstance(obj, torch.Tensor) and obj.device.type != "meta":
            got = self.twins.get(id(obj))
            if got is None or got[0] is not obj:
                got = self.twins[id(obj)] = (obj, torch.empty_strided(obj.shape, obj.stride(), dtype=obj.dtype,
                                                                      device="meta"))
            return got[1]
        if isinstance(obj, (list, tuple)) and any(isinstance(o, torch.Tensor) for o in obj):
            return type(obj)(self._twin(o) for o in obj)
        return obj

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.meta and func not in _SKIP:
            args = tuple(self._twin(a) for a in args)
            kwargs = {k: self._twin(v) for k, v in kwargs.items()}
        out = _shape_only(func, args, kwargs) if self.shapes_only else None
        if out is None:
            out = func(*args, **kwargs)
        if func in _SKIP:
            return out
        act = activation_of(func, args, kwargs)
        if act is not None:
            self.activations[act.name] = self.activations.get(act.name, 0) + 1
        try:
            self._track(func, args, kwargs, out)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError):
            self._fallback(func, args, kwargs, out, f"untracked call {getattr(func, '__name__', func)}")
        return out

    def _track(self, func, args, kwargs, out):
        descs = self.descs
        if func in _MULTI:
            if not any(t in descs for t in _all_tensors(args, kwargs)):
                return
            result = _MULTI[func](func, args, kwargs, descs, out)
        elif func in _UNARY:
            x = next(_tensors(args[0] if args else next(iter(kwargs.values()))), None)
            d = descs.get(x) if x is not None else None
            if d is None:
                return
            rule = _UNARY[func]
            if rule not in _KEEPS_POSITIONS:
                d = _unwindow(d)
            result = rule(func, args, kwargs, d, x, out)
        else:
            if not isinstance(out, torch.Tensor) and not (
                isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) for o in out)
            ):
                return
            if not any(t in descs for t in _all_tensors(args, kwargs)):
                return
            first = out if isinstance(out, torch.Tensor) else next(o for o in out if isinstance(o, torch.Tensor))
            result = _join(descs, args, kwargs, first)
            if result is None:
                name = getattr(func, "__name__", str(func))
                self._fallback(func, args, kwargs, out, f"{name} changes the shape in a way the trace does not follow")
                return
        if result is None:
            self._fallback(func, args, kwargs, out, f"untracked use of {getattr(func, '__name__', func)}")
            return
        outs = [out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)] \
            if isinstance(out, (tuple, list)) else []
        results = result if isinstance(result, list) else [result] * len(outs)
        for o, r in zip(outs, results):
            if o.dim() == len(r.dims) and _consistent(r, o.shape):
                descs[o] = r
            elif o is outs[0]:
                descs[o] = _unknown(o.shape, r.field, r.gctx, r.note)

    def _fallback(self, func, args, kwargs, out, note):
        described = [self.descs[t] for t in _all_tensors(args, kwargs) if t in self.descs]
        if not described:
            return
        field, gctx, first = _union(described)
        for o in ([out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)]
                  if isinstance(out, (tuple, list)) else []):
            self.descs[o] = _globalize(_unknown(o.shape, field, gctx, first), {0, 1}, note)


# --- from descriptors to LayerGeometry --------------------------------------------------------------

def _px(f: _Axis | None, side: int, n: int) -> tuple[int, int, int]:
    """(size, stride, padding) in whole pixels along one axis of n positions (a window's first)."""
    if f is None:
        # Every one of the n positions sees the whole side: with the grid's spacing as stride, the
        # box of position i (i*stride - padding, + size) covers the input for all i.
        stride = max(1, round(side / n))
        return side + (n - 1) * stride, stride, (n - 1) * stride
    # A fractional stride (resampling by a non-integer factor) becomes the nearest whole one; the
    # box then drifts from the field by up to (n - 1) * |stride error|, which padding and size absorb.
    stride = max(1, round(f.stride))
    pad = f.pad + max(Fraction(0), (n - 1) * (stride - f.stride))
    size = f.size + (pad - f.pad) + max(Fraction(0), (n - 1) * (f.stride - stride))
    whole_pad = math.ceil(pad)
    return math.ceil(size + (whole_pad - pad)), stride, whole_pad


def _field(d: _Desc, input_size, grid=(1, 1)) -> ReceptiveField:
    (sh, jh, ph), (sw, jw, pw) = (_px(f, s, n) for f, s, n in zip(d.field, input_size, grid))
    window = tuple(f.win if f is not None else 1 for f in d.field)
    return ReceptiveField((sh, sw), (jh, jw), (ph, pw), tuple(input_size), window)


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


# --- entry points ----------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: WeakKeyDictionary[nn.Module, dict] = WeakKeyDictionary()


def input_size_of(model_or_net, input_size=None) -> tuple[int, int]:
    """(h, w): ``input_size`` if given, else the LoadedModel's, else :data:`DEFAULT_INPUT_SIZE`."""
    from torch.nn.modules.utils import _pair

    if input_size is None and not isinstance(model_or_net, nn.Module):
        input_size = getattr(model_or_net, "input_size", None)
    if input_size is None:
        return DEFAULT_INPUT_SIZE
    size = _pair(input_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise DvisError(f"input_size must be a positive int or (h, w), got {input_size!r}")
    return int(size[0]), int(size[1])


def model_geometry(model_or_net, input_size=None, channels=None) -> dict[str, LayerGeometry]:
    """:class:`LayerGeometry` of every named module (except the root), in execution order.

    One traced forward at ``input_size`` (default: the LoadedModel's, else 224x224) with
    ``channels`` input channels (default: the model's or its first conv's), in eval mode (the
    net's train/eval flags are restored). Cached per net, input size and channels (geometry does
    not depend on the weights). Modules the eval forward never reaches come last with ``runs=False``.
    """
    net = as_net(model_or_net)
    size = input_size_of(model_or_net, input_size)
    if channels is None:
        channels = expected_input(model_or_net)[1] or 3
    return _traced(net, size, int(channels))[0]


def traced_activations(model_or_net, input_size=None, channels=None) -> dict[str, int]:
    """{activation name: calls} seen by the same traced forward as :func:`model_geometry`."""
    channels = channels if channels is not None else expected_input(model_or_net)[1] or 3
    return dict(_traced(as_net(model_or_net), input_size_of(model_or_net, input_size), int(channels))[1])


def _traced(net: nn.Module, size, channels):
    key = (size, channels)
    with _cache_lock:
        cached = _cache.get(net, {}).get(key)
    if cached is None:
        try:
            cached = _trace(net, size, channels)
        except DvisError as err:  # remembered: a net that does not run at this size will not later
            cached = err
        with _cache_lock:
            _cache.setdefault(net, {})[key] = cached
    if isinstance(cached, DvisError):
        raise DvisError(str(cached))
    return cached


def _trace(net: nn.Module, size, channels) -> tuple[dict[str, LayerGeometry], dict[str, int]]:
    """Trace on meta tensors (parameters met on the way get meta twins), else on fake tensors,
    else for real: each tier runs what the one before cannot (e.g. code that reads a value)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(logging.CRITICAL)  # a failing fake op logs a traceback; the real run reports the error
    try:
        for how in ("meta", "fake"):
            try:
                if how == "meta":
                    return _run(net, torch.zeros((2, channels) + tuple(size), dtype=_dtype(net), device="meta"),
                                size, how, None)
                with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                    x = torch.zeros((2, channels) + tuple(size), dtype=_dtype(net), device=_device(net))
                return _run(net, x, size, how, mode)
            except DvisError:
                raise
            except Exception:  # noqa: BLE001 - the next tier runs what this one cannot
                continue
    finally:
        log.setLevel(level)
    x = torch.zeros((2, channels) + tuple(size), dtype=_dtype(net), device=_device(net))
    return _run(net, x, size, "real", None)


def _dtype(net):
    p = next(net.parameters(), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float32


def _device(net):
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _run(net: nn.Module, x: torch.Tensor, size, how: str, fake_mode) -> tuple[dict[str, LayerGeometry], dict[str, int]]:
    tracer = _Tracer(shapes_only=how != "real", meta=how == "meta")
    tracer.descs[x] = _Desc(((("n", x.shape[0]),), (("c", x.shape[1]),) if x.shape[1] != 1 else (),
                             (("h", size[0]),), (("w", size[1]),)), (0,) * 4,
                            (_Axis(Fraction(1), Fraction(1), Fraction(0)),) * 2, False)
    found: dict[str, LayerGeometry] = {}

    def record(name, module, args, output):
        if name not in found:
            d = tracer.descs.get(output) if isinstance(output, torch.Tensor) else next(
                (tracer.descs.get(o) for o in output if isinstance(o, torch.Tensor)), None
            ) if isinstance(output, (tuple, list)) else None
            found[name] = _layer(name, output, d, size)

    names = [n for n, _ in net.named_modules() if n]
    # Geometry is that of the eval forward (what dvis runs): aux heads off, batch norm per channel.
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        with forward_hooks(net, names, record), torch.no_grad():
            if fake_mode is not None:
                with fake_mode, tracer:
                    net(x)
            else:
                with tracer:
                    net(x)
    except DvisError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the user's forward becomes one line
        if how != "real":
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DvisError(f"geometry: forward failed for input {'x'.join(map(str, x.shape[1:]))}: {first}") from err
    finally:
        for m, training in modes:
            m.training = training
    for name in names:
        if name not in found:
            found[name] = LayerGeometry(name, (), "other", 0, None, 0, None, False, False,
                                        "never called in the forward (an aux head in eval mode, or weights used directly by its parent)")
    return found, tracer.activations


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
