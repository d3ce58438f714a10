"""Reading a torch call's arguments (positional or keyword) and the tensors among them."""
from __future__ import annotations

import torch


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


def _all_tensors(args, kwargs):
    for a in list(args) + list(kwargs.values()):
        yield from _tensors(a)
