"""Independent check of dvis.engine.geometry: receptive fields by gradient support (tests only).

Back-propagate single units through the net made linear and positive (ReLU-like activations and
norms to identity, max-pools to average pools, weights 1/fan_in, biases 0, float64) so that a
unit's gradient on the input is non-zero exactly on its receptive field, then read the box off the
support of a few units. Where the field is larger than the input, the input is enlarged (only for
layers whose map grows with the input). This was dvis's method before the one-pass geometry: slow
(one backward per layer) and unbounded in memory on some nets, but it shares no code with the trace.
"""
from __future__ import annotations

import threading

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _ntuple
from torch.overrides import TorchFunctionMode

from dvis.errors import DvisError
from dvis.engine.geometry import ReceptiveField, whole_input
from dvis.engine.net import as_net, expected_input

MAX_SIDE = 8192


def _whole(input_size):
    return whole_input(input_size)


# --- the net made linear and positive ------------------------------------------------------------

_IDENTITY = {
    F.relu, F.relu_, torch.relu, torch.relu_, torch.Tensor.relu, torch.Tensor.relu_,
    F.relu6, F.hardtanh, F.hardtanh_, F.leaky_relu, F.leaky_relu_, F.elu, F.elu_, F.selu, F.celu,
    F.gelu, F.silu, F.mish, F.hardswish,
    F.batch_norm, F.instance_norm, F.layer_norm, F.group_norm, F.local_response_norm,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
}
# F.max_pool2d & co. are boolean dispatchers; the torch-function mode sees them, not their targets.
_MAX_POOLS = {
    F.max_pool1d: 1, F._max_pool1d: 1, F.max_pool1d_with_indices: 1, torch.max_pool1d: 1,
    F.max_pool2d: 2, F._max_pool2d: 2, F.max_pool2d_with_indices: 2, torch.max_pool2d: 2,
    F.max_pool3d: 3, F._max_pool3d: 3, F.max_pool3d_with_indices: 3, torch.max_pool3d: 3,
}
_ADAPTIVE_MAX_POOLS = {
    F.adaptive_max_pool1d: F.adaptive_avg_pool1d, F.adaptive_max_pool2d: F.adaptive_avg_pool2d,
    F.adaptive_max_pool3d: F.adaptive_avg_pool3d,
    F._adaptive_max_pool1d: F.adaptive_avg_pool1d, F.adaptive_max_pool1d_with_indices: F.adaptive_avg_pool1d,
    F._adaptive_max_pool2d: F.adaptive_avg_pool2d, F.adaptive_max_pool2d_with_indices: F.adaptive_avg_pool2d,
    F._adaptive_max_pool3d: F.adaptive_avg_pool3d, F.adaptive_max_pool3d_with_indices: F.adaptive_avg_pool3d,
}
_AVG_POOLS = {1: F.avg_pool1d, 2: F.avg_pool2d, 3: F.avg_pool3d}
_CONVS = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _avg_for_max(dims: int, input, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False,
                 return_indices=False):
    """The max-pool's window as a positive average (every window element gets weight)."""
    stride = stride if stride not in (None, []) else kernel_size
    if all(d == 1 for d in _ntuple(dims)(dilation)):
        out = _AVG_POOLS[dims](input, kernel_size, stride, padding, ceil_mode, count_include_pad=True)
    elif ceil_mode:
        raise DvisError("receptive field: dilated max-pool with ceil_mode is not supported")
    else:
        k = _ntuple(dims)(kernel_size)
        c = input.shape[1]
        weight = input.new_ones(()).expand(c, 1, *k) / float(np.prod(k))
        out = _CONVS[dims](input, weight, None, stride, padding, dilation, c)
    return (out, torch.zeros(out.shape, dtype=torch.long, device=out.device)) if return_indices else out


class _Linearize(TorchFunctionMode):
    """ReLU-like activations, norms and dropout to identity; max-pools to average pools."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _IDENTITY:
            return args[0] if args else kwargs["input"]
        if func in _MAX_POOLS:
            return _avg_for_max(_MAX_POOLS[func], *args, **kwargs)
        if func in _ADAPTIVE_MAX_POOLS:
            out = _ADAPTIVE_MAX_POOLS[func](args[0], args[1] if len(args) > 1 else kwargs["output_size"])
            indices = func.__name__.endswith("with_indices") or kwargs.get("return_indices") or args[2:3] == (True,)
            return (out, torch.zeros(out.shape, dtype=torch.long, device=out.device)) if indices else out
        return func(*args, **kwargs)


def _positive_params(net: nn.Module, device: torch.device) -> dict[str, torch.Tensor]:
    """Weights 1/fan_in, other scales 1, biases 0, all float64 and stride-0 (no memory)."""
    params = {}
    for name, p in net.named_parameters():
        if name.rsplit(".", 1)[-1] == "bias":
            value = 0.0
        elif p.dim() >= 2:
            value = 1.0 / p[0].numel()
        else:
            value = 1.0
        params[name] = torch.full((), value, dtype=torch.float64, device=device).expand(p.shape)
    return params


class _Reached(Exception):
    def __init__(self, output):
        super().__init__()
        self.output = output


def _run_to(net: nn.Module, layer: str, x: torch.Tensor, params: dict | None):
    """Output of ``layer`` in the linearized net; the forward stops there."""
    owner = threading.get_ident()

    def stop(module, args, output):
        if threading.get_ident() == owner:
            raise _Reached(output)

    handle = dict(net.named_modules())[layer].register_forward_hook(stop)
    try:
        with _Linearize():
            if params is None:
                net(x)
            else:
                torch.func.functional_call(net, params, (x,), strict=False)
    except _Reached as reached:
        return reached.output
    finally:
        handle.remove()
    raise DvisError(f"layer {layer!r} not reached in the forward pass")


# --- gradient support: any graph -------------------------------------------------------------------

def _probe_units(m: int, ends: bool) -> list[int]:
    # The middle pair gives size and stride when the field fits in the input; units near both ends
    # give unclipped tops and bottoms when it fits only off-centre (AlexNet pool5 at 224 px).
    units = (0, 1, m // 2, m // 2 + 1, m - 2, m - 1) if ends else (m // 2, m // 2 + 1)
    return sorted({min(max(u, 0), m - 1) for u in units})


def _support(net: nn.Module, layer: str, size: tuple[int, int], channels: int, device, ends: bool):
    """Map size and, for probe units along both axes, their input support (units, tops, bottoms) per axis."""
    params = _positive_params(net, device)
    x = torch.ones((1, channels) + tuple(size), dtype=torch.float64, device=device)
    value, pull_back = torch.func.vjp(lambda inp: _run_to(net, layer, inp, params), x)
    if value.dim() == 2:
        return None
    if value.dim() != 4:
        raise DvisError(f"receptive field needs an NCHW layer, {layer!r} outputs {value.dim()} dims")
    m = value.shape[2:]
    ys, xs = _probe_units(m[0], ends), _probe_units(m[1], ends)
    k = max(len(ys), len(xs))
    ys, xs = ys + ys[-1:] * (k - len(ys)), xs + xs[-1:] * (k - len(xs))
    seeds = torch.zeros((k, 1) + tuple(value.shape[1:]), dtype=value.dtype, device=device)
    seeds[torch.arange(k), 0, :, torch.tensor(ys), torch.tensor(xs)] = 1
    grad = torch.func.vmap(pull_back)(seeds)[0].abs().sum(dim=(1, 2))  # k x H x W
    axes = []
    for a, units in enumerate((ys, xs)):
        hit = grad.sum(dim=2 - a) > 0  # k x side: rows (a=0) or columns (a=1) touched
        idx = torch.arange(hit.shape[1], device=device)
        tops = torch.where(hit, idx, hit.shape[1]).min(1).values
        bottoms = torch.where(hit, idx + 1, 0).max(1).values
        axes.append((units, tops.tolist(), bottoms.tolist()))
    return tuple(m), axes


def _solve_axis(units: list[int], tops: list[int], bottoms: list[int], side: int):
    """((size, stride, padding), exact) along one axis from probe supports, or None if clipping hides it.

    A measured support is the unit's true box cut by the image and, near the map's ends, by the
    padding of inner layers, so it can only be smaller: with the stride known, the effective padding
    is the largest ``u * stride - top`` and the far edge the largest ``bottom - u * stride`` over
    units not cut by the image. ``exact`` says some probe's whole box lies inside the image, which
    rules out inner-padding cuts everywhere.
    """
    steps = [
        (v1 - v0) // (u1 - u0)
        for values in (tops, bottoms)
        for (u0, v0), (u1, v1) in zip(zip(units, values), zip(units[1:], values[1:]))
        if u1 != u0 and 0 < v0 < side and 0 < v1 < side
    ]
    if not steps:
        return None
    stride = max(set(steps), key=steps.count)
    starts = [u * stride - t for u, t in zip(units, tops) if 0 < t < side]
    ends = [b - u * stride for u, b in zip(units, bottoms) if 0 < b < side]
    if not starts or not ends:
        return None
    pad = max(starts)
    size = pad + max(ends)
    exact = any(0 < u * stride - pad and u * stride - pad + size < side for u in units)
    return (size, stride, pad), exact


def _map_size(net: nn.Module, layer: str, size: tuple[int, int], channels: int, dtype, device):
    x = torch.zeros((1, channels) + size, dtype=dtype, device=device)
    with torch.no_grad():
        return tuple(_run_to(net, layer, x, None).shape[2:])


def _gradient(net: nn.Module, layer: str, input_size: tuple[int, int], channels: int, dtype, device) -> ReceptiveField:
    size = input_size
    solved: list = [None, None]
    ends = True
    while True:
        support = _support(net, layer, size, channels, device, ends)
        if support is None:
            return _whole(input_size)
        m, axes = support
        tentative = [None, None]
        for a in range(2):
            if solved[a] is None:
                found = _solve_axis(*axes[a], size[a])
                if found is not None and found[1]:
                    solved[a] = found[0]
                elif found is not None:
                    tentative[a] = found[0]
        if None not in solved:
            break
        # The field is cut by the image: measure again on a larger input, if the map grows with it.
        bigger = tuple(side * 2 if s is None else side for side, s in zip(size, solved))
        if max(bigger) > MAX_SIDE:
            raise DvisError(f"receptive field of {layer!r} is wider than {MAX_SIDE} px")
        grown = _map_size(net, layer, bigger, channels, dtype, device)
        for a in range(2):
            if solved[a] is None and grown[a] == m[a]:
                # Adaptive pooling ties the map to the input size: keep what this size shows; a
                # single unit sees the whole input.
                if size != input_size or (tentative[a] is None and m[a] != 1):
                    raise DvisError(f"receptive field of {layer!r} cannot be measured at input {input_size}")
                solved[a] = tentative[a] or (input_size[a], input_size[a], 0)
        if None not in solved:
            break
        size, ends = bigger, False
    (sh, jh, ph), (sw, jw, pw) = solved
    return ReceptiveField((sh, sw), (jh, jw), (ph, pw), input_size)


def gradient_field(model_or_net, layer: str, input_size=(224, 224)) -> ReceptiveField:
    """Receptive field of ``layer`` by gradient support (see the module docstring)."""
    net = as_net(model_or_net)
    channels = expected_input(model_or_net)[1] or 3
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    size = tuple(input_size)
    with torch.no_grad():
        out = _run_to(net, layer, torch.zeros((1, channels) + size, dtype=dtype, device=device), None)
    if out.dim() == 2:
        return _whole(size)
    with torch.enable_grad():
        return _gradient(net, layer, size, channels, dtype, device)


def support_box(net: nn.Module, layer: str, input_size, y: int, x: int, as_maps=None) -> tuple[int, int, int, int]:
    """(top, left, bottom, right) of the input pixels that map position (y, x) of ``layer`` (all its
    channels) depends on in the linear, positive net: the measured box of one position's field,
    whatever its shape (windowed fields included). ``as_maps`` turns the layer's output into
    N x C x H x W (written by the caller, e.g. a hand-made un-partition); default: it already is."""
    params = _positive_params(net, torch.device("cpu"))
    params.update({n: b.double() for n, b in net.named_buffers() if b.is_floating_point()})  # float64 tables
    inp = torch.ones((1, expected_input(net)[1] or 3) + tuple(input_size), dtype=torch.float64, requires_grad=True)
    with torch.enable_grad():
        out = _run_to(net, layer, inp, params)
        maps = as_maps(out) if as_maps is not None else out
        (grad,) = torch.autograd.grad(maps[0, :, y, x].sum(), inp)
    hit = grad[0].abs().sum(0) > 0
    rows, cols = hit.any(1).nonzero()[:, 0], hit.any(0).nonzero()[:, 0]
    return int(rows.min()), int(cols.min()), int(rows.max()) + 1, int(cols.max()) + 1
