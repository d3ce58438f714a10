"""Receptive fields of layer units in input pixels, for chains and for any graph.

Two methods give the same numbers where both apply:

* ``analytic``: when the path from the input to the layer is a plain chain of modules (conv, pool,
  element-wise), the usual recurrence ``size += (k_eff - 1) * stride; padding += pad * stride;
  stride *= s``.
* ``gradient``: for any graph (residual sums, concatenated branches, ``F.relu`` in forward()):
  back-propagate single units through the net made linear and positive (ReLUs and norms to
  identity, max-pools to average pools, weights 1/fan_in, biases 0, float64) so that a unit's
  gradient on the input is non-zero exactly on its receptive field, then read the box off the
  support of a few units. Where the field is larger than the input, the input is enlarged
  (only for layers whose map grows with the input, i.e. no adaptive pooling on the way).

Results are cached per (net, layer, input size, method).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from weakref import WeakKeyDictionary

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _ntuple, _pair
from torch.overrides import TorchFunctionMode

from dvis.errors import DvisError
from dvis.layers import as_net, check_layers, expected_input

METHODS = ("auto", "analytic", "gradient")
#: Plain nets have no recorded input size; this is the usual ImageNet one.
DEFAULT_INPUT_SIZE = (224, 224)
#: Largest input side the gradient method may enlarge to before giving up.
MAX_SIDE = 8192


@dataclass(frozen=True)
class ReceptiveField:
    """Receptive field of a layer's units: unit (y, x) sees input rows ``y*stride - padding`` on.

    ``size``, ``stride`` and ``padding`` (the effective padding) are (h, w) in input pixels;
    ``input_size`` is the (h, w) the field was computed for. fc layers see the whole input
    (size = stride = input size, padding 0).
    """

    size: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    input_size: tuple[int, int]

    def box(self, y, x, clip: bool = True):
        """(top, left, bottom, right) of unit (y, x) in input pixels, bottom/right exclusive.

        ``clip=False`` gives the unclipped box (may extend past the image), for padding-aware
        crops. ``y``/``x`` may also be integer numpy arrays (then the four are arrays).
        """
        top = np.asarray(y) * self.stride[0] - self.padding[0]
        left = np.asarray(x) * self.stride[1] - self.padding[1]
        bottom, right = top + self.size[0], left + self.size[1]
        if clip:
            h, w = self.input_size
            top, bottom = np.clip(top, 0, h), np.clip(bottom, 0, h)
            left, right = np.clip(left, 0, w), np.clip(right, 0, w)
        if np.ndim(top) == 0:
            return int(top), int(left), int(bottom), int(right)
        return top, left, bottom, right


def _whole(input_size: tuple[int, int]) -> ReceptiveField:
    return ReceptiveField(input_size, input_size, (0, 0), input_size)


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


def _run_to(net: nn.Module, layer: str, x: torch.Tensor, params: dict | None, record: list | None = None):
    """Output of ``layer`` in the linearized net.

    With ``record``, also log leaf calls and the target as (name, module, input, output,
    input version, output version).
    """
    modules = dict(net.named_modules())
    owner = threading.get_ident()

    def entry(name, module, args, output):
        inp = args[0] if args else None
        version = getattr(inp, "_version", None)
        record.append((name, module, inp, output, version, getattr(output, "_version", None)))

    def stop(module, args, output):
        if threading.get_ident() == owner:
            if record is not None:
                entry(layer, module, args, output)
            raise _Reached(output)

    def log(name):
        def hook(module, args, output):
            if threading.get_ident() == owner:
                entry(name, module, args, output)
        return hook

    handles = [modules[layer].register_forward_hook(stop)]
    if record is not None:
        handles += [
            m.register_forward_hook(log(n)) for n, m in modules.items()
            if n != layer and next(m.children(), None) is None
        ]
    try:
        with _Linearize():
            if params is None:
                net(x)
            else:
                torch.func.functional_call(net, params, (x,), strict=False)
    except _Reached as reached:
        return reached.output
    except RuntimeError as err:
        raise DvisError(
            f"receptive field: forward failed for input {'x'.join(map(str, x.shape))}: {str(err).splitlines()[0]}"
        ) from err
    finally:
        for handle in handles:
            handle.remove()
    raise DvisError(f"layer {layer!r} not reached in the forward pass")


# --- analytic: plain chains ------------------------------------------------------------------------

_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Hardtanh, nn.Sigmoid, nn.Tanh, nn.Identity,
    nn.BatchNorm2d, nn.InstanceNorm2d, nn.GroupNorm, nn.LocalResponseNorm,
    nn.Dropout, nn.Dropout2d, nn.AlphaDropout, nn.FeatureAlphaDropout,
)


def _geometry(module: nn.Module, inp: torch.Tensor, out: torch.Tensor):
    """Per-axis (kernel, stride, padding, dilation) of a 2-D module, "same" if element-wise, else None."""
    if not (isinstance(inp, torch.Tensor) and isinstance(out, torch.Tensor) and inp.dim() == out.dim() == 4):
        return None
    if isinstance(module, _ELEMENTWISE) or (
        isinstance(module, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)) and out.shape[2:] == inp.shape[2:]
    ):
        return "same" if out.shape[2:] == inp.shape[2:] else None
    if isinstance(module, nn.Conv2d):
        k, s, d = module.kernel_size, module.stride, module.dilation
        if module.padding == "same":
            p = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
        else:
            p = (0, 0) if module.padding == "valid" else module.padding
    elif isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        k = _pair(module.kernel_size)
        s = _pair(module.stride if module.stride is not None else module.kernel_size)
        p = _pair(module.padding)
        d = _pair(getattr(module, "dilation", 1))
    else:
        return None
    return tuple(zip(k, s, p, d))


def _chain(record: list, x: torch.Tensor, input_size: tuple[int, int]) -> ReceptiveField | None:
    """Field by the recurrence if the leaf calls form one chain from ``x`` to the layer, else None."""
    *leaves, (_, target, _, target_out, _, _) = record
    steps = leaves + [record[-1]] if next(target.children(), None) is None else leaves
    size, stride, pad = [1, 1], [1, 1], [0, 0]
    prev, version = x, x._version
    for _, module, inp, out, in_version, out_version in steps:
        # A changed version means an in-place op between the modules (ResNet's `out += identity`).
        geometry = _geometry(module, inp, out) if inp is prev and in_version == version else None
        if geometry is None:
            return None
        if geometry != "same":
            for a, (k, s, p, d) in enumerate(geometry):
                size[a] += (d * (k - 1)) * stride[a]
                pad[a] += p * stride[a]
                stride[a] *= s
        prev, version = out, out_version
    if prev is not target_out:
        return None
    return ReceptiveField(tuple(size), tuple(stride), tuple(pad), input_size)


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


# --- entry point -----------------------------------------------------------------------------------

_cache_lock = threading.Lock()
_cache: WeakKeyDictionary[nn.Module, dict] = WeakKeyDictionary()


def _input_size(model_or_net, input_size) -> tuple[int, int]:
    if input_size is None:
        input_size = getattr(model_or_net, "input_size", None) if not isinstance(model_or_net, nn.Module) else None
    if input_size is None:
        return DEFAULT_INPUT_SIZE
    size = _pair(input_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise DvisError(f"input_size must be a positive int or (h, w), got {input_size!r}")
    return int(size[0]), int(size[1])


def receptive_field(model_or_net, layer: str, input_size=None, method: str = "auto") -> ReceptiveField:
    """Receptive field of the units of ``layer`` for inputs of ``input_size`` (h, w).

    ``input_size`` defaults to the LoadedModel's, or 224x224 for a plain module. ``method``:
    ``"analytic"`` (plain chains only), ``"gradient"`` (any graph) or ``"auto"`` (analytic where
    the path is a chain, else gradient). fc layers see the whole input.
    """
    if method not in METHODS:
        raise DvisError(f"unknown receptive field method {method!r}; use one of {', '.join(METHODS)}")
    check_layers(model_or_net, [layer])
    net = as_net(model_or_net)
    size = _input_size(model_or_net, input_size)
    key = (layer, size, method)
    with _cache_lock:
        cached = _cache.get(net, {}).get(key)
    if cached is not None:
        return cached
    field = _compute(model_or_net, net, layer, size, method)
    with _cache_lock:
        _cache.setdefault(net, {})[key] = field
    return field


def _compute(model_or_net, net: nn.Module, layer: str, size: tuple[int, int], method: str) -> ReceptiveField:
    channels = expected_input(model_or_net)[1] or 3
    param = next(net.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    record: list = []
    x = torch.zeros((1, channels) + size, dtype=dtype, device=device)
    with torch.no_grad():
        out = _run_to(net, layer, x, None, record)
    if out.dim() == 2:
        return _whole(size)
    if out.dim() != 4:
        raise DvisError(f"receptive field needs an NCHW layer, {layer!r} outputs {out.dim()} dims")
    if method != "gradient":
        field = _chain(record, x, size)
        if field is not None:
            return field
        if method == "analytic":
            raise DvisError(f"layer {layer!r} is not on a plain chain of modules; use method 'gradient' or 'auto'")
    with torch.enable_grad():
        return _gradient(net, layer, size, channels, dtype, device)
