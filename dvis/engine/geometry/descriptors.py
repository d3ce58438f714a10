"""The descriptor the trace gives every tensor, and its algebra.

A descriptor (:class:`_Desc`) says:

* what each of the tensor's dimensions holds, as a list of atoms: batch ``n``, channels ``c``, input
  rows ``h`` and columns ``w`` (a split atom's inner part gets a prime, ``h'``, and merges back), or
  ``?``; token dimensions may start with extra (class/register) tokens;
* per input axis, the field of one position (:class:`_Axis`): size, stride and effective padding in
  input pixels (unit ``i`` sees input rows ``i*stride - padding`` to ``+ size``), or "whole input";
* whether a global operation fed it (``global_context``) and why.

The rules (:mod:`dvis.engine.geometry.rules`) build new descriptors from these helpers: union of
fields (joins), windowed fields (attention inside windows), regrouping atoms (view/reshape).

A descriptor's field becomes whole pixels in :func:`_field`: a fractional stride (resampling by a
non-integer factor) becomes the nearest whole one, with padding and size grown so that every
position's box still contains its field. A position whose field is the whole input along an axis
gets stride = the grid's spacing (input side / positions) and size/padding that make every
position's box cover that side (clipped: the whole input).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from dvis.engine.geometry.types import ReceptiveField

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


# --- from a descriptor's field to pixels ------------------------------------------------------------

def _px(f: _Axis | None, side: int, n: int) -> tuple[int, int, int]:
    """(size, stride, padding) in whole pixels along one axis of n positions (a window's first)."""
    if f is None:
        # Every one of the n positions sees the whole side: its field is the side itself, one window
        # of all n positions (:func:`_field`), the grid's spacing as stride. (A box grown to cover the
        # side from every position, 2 * side - stride, shrank as the stride grew with depth.)
        return side, max(1, round(side / n)), 0
    # A fractional stride (resampling by a non-integer factor) becomes the nearest whole one; the
    # box then drifts from the field by up to (n - 1) * |stride error|, which padding and size absorb.
    stride = max(1, round(f.stride))
    pad = f.pad + max(Fraction(0), (n - 1) * (stride - f.stride))
    size = f.size + (pad - f.pad) + max(Fraction(0), (n - 1) * (f.stride - stride))
    whole_pad = math.ceil(pad)
    return math.ceil(size + (whole_pad - pad)), stride, whole_pad


def _field(d: _Desc, input_size, grid=(1, 1)) -> ReceptiveField:
    (sh, jh, ph), (sw, jw, pw) = (_px(f, s, n) for f, s, n in zip(d.field, input_size, grid))
    window = tuple(f.win if f is not None else n for f, n in zip(d.field, grid))
    return ReceptiveField((sh, sw), (jh, jw), (ph, pw), tuple(input_size), window)
