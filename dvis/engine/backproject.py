"""Back-projection of a unit to input space: deconvnet, guided backprop and plain gradient.

All three modes are one autograd backward pass; they differ only in how a ReLU passes the signal
back (``grad``: where its forward input was positive; ``guided``: there and only positive signal;
``deconv`` (Zeiler & Fergus): positive signal anywhere, ignoring the forward). The other activations
(GELU, SiLU, Hardswish, ReLU6, LeakyReLU, ELU/SELU/CELU, Mish; :mod:`dvis.engine.hooks`) get the same
rules generalized (:data:`dvis.engine.hooks.RULES`): deconv passes ``max(g, 0)``, guided
``max(g, 0) * max(f'(x), 0)``; ``rectify="relu"`` keeps the plain gradient at all but ReLU/ReLU6. Max-pools use
autograd's own backward, which routes through the switches recorded in the forward (exact also
for overlapping pools), and convolutions use the transposed filters, which is autograd's
backward too (computed as a forward convolution over the stride phases, which is faster on CPU).
Activations and convolutions are swapped for custom autograd Functions by a ``TorchFunctionMode``
while the forward runs, so ``nn.ReLU`` (in-place or not, called once or twice), ``F.relu``,
``torch.relu``, ``Tensor.relu_``, ``nn.GELU`` and ``F.gelu`` alike are all caught and the user's
modules are never touched.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair
from torch.overrides import TorchFunctionMode

from dvis.engine.activations import activations, capture
from dvis.constants import BACK_MODES
from dvis.errors import DvisError
from dvis.engine.geometry import LayerGeometry, from_maps, model_geometry, to_maps
from dvis.engine.hooks import INPLACE_RELUS, RECTIFY, RELU, activation_of, activation_params, back_rule, forward_hooks, leaf_names
from dvis.engine.net import as_net, check_input, frozen_params
from dvis.engine.layers import check_layers

MODES = BACK_MODES

#: Memory the vmapped backward may use for one chunk of targets, and the most targets per chunk
#: (beyond about 128 the batched convolutions get no faster).
CHUNK_MEMORY = 1 << 30
MAX_CHUNK = 128


def _relu_function(guided: bool, inplace: bool) -> type[torch.autograd.Function]:
    """A ReLU whose backward passes the positive part of the signal (masked by the forward if guided)."""

    class _BackReLU(torch.autograd.Function):
        generate_vmap_rule = True  # backproject_batch vmaps the backward over targets

        @staticmethod
        def forward(x):
            return x.clamp_(min=0) if inplace else x.clamp(min=0)

        @staticmethod
        def setup_context(ctx, inputs, output):
            if inplace:
                ctx.mark_dirty(inputs[0])
            if guided:
                # The output is positive exactly where the input was, and survives in-place use.
                ctx.save_for_backward(output)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.clamp(min=0)
            if guided:
                (out,) = ctx.saved_tensors
                grad = grad * (out > 0)
            return grad

    _BackReLU.__name__ = f"{'Guided' if guided else 'Deconv'}ReLU{'_' if inplace else ''}"
    return _BackReLU


_FUNCTIONS = {(g, i): _relu_function(g, i) for g in (False, True) for i in (False, True)}


class _BackActivation(torch.autograd.Function):
    """A non-ReLU activation (out of place) whose backward applies the deconv or guided rule of
    :data:`dvis.engine.hooks.RULES`: deconv ``max(g, 0)`` (LeakyReLU: its own slope on the signal), guided
    ``max(g, 0) * max(f'(x), 0)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, act, params, guided):
        return act.forward(x, **params)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.act, ctx.params, ctx.guided = inputs
        if ctx.guided:
            ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad):
        if ctx.guided:
            (x,) = ctx.saved_tensors
            grad = grad.clamp(min=0) * ctx.act.derivative(x, **ctx.params).clamp(min=0)
        elif ctx.act.leaky:
            grad = torch.where(grad > 0, grad, grad * ctx.params.get("negative_slope", 0.01))
        else:
            grad = grad.clamp(min=0)
        return grad, None, None, None


def _conv2d_input_grad(grad, weight, size, stride, padding):
    """Gradient of ``conv2d(x, weight, stride, padding)`` w.r.t. x (HxW ``size``) as one forward conv.

    The transposed convolution is split into its ``stride`` output phases: phase (a, b) of the
    input gradient is a plain correlation of ``grad`` with the kernel taps ``a::stride, b::stride``
    (flipped). All phases run as one conv2d with ``stride_h * stride_w`` times the channels and are
    interleaved back, which is faster on CPU than the backward-data kernel (2.5x for AlexNet's
    stride-4 conv1, 1.1x-1.5x for its stride-1 convs).
    """
    c_out, c_in, kh, kw = weight.shape
    (sh, sw), (ph, pw), (h, w) = stride, padding, size
    mh, mw = -(-kh // sh), -(-kw // sw)  # taps per phase
    taps = F.pad(weight, (0, sw * mw - kw, 0, sh * mh - kh)).view(c_out, c_in, mh, sh, mw, sw).flip(2, 4)
    taps = taps.permute(3, 5, 1, 0, 2, 4).reshape(sh * sw * c_in, c_out, mh, mw)
    # Only the phase rows q0..q1 that land inside the input are computed (negative pads crop).
    q0h, q0w = ph // sh, pw // sw
    q1h, q1w = (h + ph - 1) // sh, (w + pw - 1) // sw
    gh, gw = grad.shape[-2:]
    pads = (mw - 1 - q0w, q1w - gw + 1, mh - 1 - q0h, q1h - gh + 1)
    if pads[0] == pads[1] >= 0 and pads[2] == pads[3] >= 0:  # the usual case: let the conv pad
        phases = F.conv2d(grad, taps, padding=(pads[2], pads[0]))
    else:
        phases = F.conv2d(F.pad(grad, pads), taps)
    n, _, qh, qw = phases.shape
    full = phases.view(n, sh, sw, c_in, qh, qw).permute(0, 3, 4, 1, 5, 2).reshape(n, c_in, qh * sh, qw * sw)
    top, left = ph - q0h * sh, pw - q0w * sw
    return full[:, :, top:top + h, left:left + w]


class _Conv2d(torch.autograd.Function):
    """conv2d whose input gradient is computed by :func:`_conv2d_input_grad` (weights frozen)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, stride, padding):
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, ctx.stride, ctx.padding = inputs
        ctx.size = tuple(x.shape[-2:])
        ctx.save_for_backward(weight)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return _conv2d_input_grad(grad, weight, ctx.size, ctx.stride, ctx.padding), None, None, None, None


class _Conv2dWeightOnly(torch.autograd.Function):
    """conv2d (any groups, dilation) keeping only the weight for the backward: the input gradient is
    autograd's own ``convolution_backward`` for the input alone, which needs the input's shape, not
    its values (the native conv saves the whole input; depthwise convs in EfficientNets are most of
    the graph's memory)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, ctx.stride, ctx.padding, ctx.dilation, ctx.groups = inputs
        ctx.size = tuple(x.shape)
        ctx.save_for_backward(weight)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        gx = torch.nn.grad.conv2d_input(ctx.size, weight, grad, ctx.stride, ctx.padding, ctx.dilation, ctx.groups)
        return gx, None, None, None, None, None, None


def _fast_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d where only the input needs grad: plain 2-D convs on CPU through :class:`_Conv2d`
    (faster; other devices keep the native kernel, the gain measured is against the CPU one), the
    rest through :class:`_Conv2dWeightOnly` (same backward, the input not kept)."""
    padding = (0, 0) if padding == "valid" else padding
    input_only = (
        input.dim() == 4 and not isinstance(padding, str)
        and input.requires_grad and not weight.requires_grad and (bias is None or not bias.requires_grad)
    )
    if not input_only:
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    if input.device.type == "cpu" and groups == 1 and _pair(dilation) == (1, 1):
        return _Conv2d.apply(input, weight, bias, _pair(stride), _pair(padding))
    return _Conv2dWeightOnly.apply(input, weight, bias, _pair(stride), _pair(padding), _pair(dilation), groups)


class _FrozenBatchNorm(torch.autograd.Function):
    """Batch norm with running statistics (eval mode): per channel ``x * scale + shift``, so the
    backward is ``grad * scale`` and keeps no activation (the native one saves the input)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, mean, var, weight, bias, eps):
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, var, weight, _, eps = inputs
        scale = torch.rsqrt(var + eps)
        if weight is not None:
            scale = scale * weight
        ctx.save_for_backward(scale.view((-1,) + (1,) * (x.dim() - 2)))

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale, None, None, None, None, None


def _frozen_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
                       momentum=0.1, eps=1e-5):
    """F.batch_norm through :class:`_FrozenBatchNorm` in eval mode (running statistics, frozen affine)."""
    frozen = (
        not training and running_mean is not None and running_var is not None and input.dim() >= 2
        and input.requires_grad and not any(t is not None and t.requires_grad for t in (weight, bias))
    )
    if not frozen:
        return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    return _FrozenBatchNorm.apply(input, running_mean, running_var, weight, bias, eps)


class _BackMode(TorchFunctionMode):
    """While the forward runs: activations through the deconv/guided Functions (all of
    :data:`dvis.engine.hooks.ACTIVATION_FUNCTIONS`, or ReLU/ReLU6 only with ``rectify="relu"``), conv2d
    through :class:`_Conv2d` / :class:`_Conv2dWeightOnly` and eval-mode batch norm through
    :class:`_FrozenBatchNorm` (the same backward, less of the forward kept for it)."""

    def __init__(self, mode: str, rectify: str):
        super().__init__()
        self.mode = mode
        self.rectify = rectify

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            return _fast_conv2d(*args, **kwargs)
        if func is F.batch_norm:
            return _frozen_batch_norm(*args, **kwargs)
        act = activation_of(func, args, kwargs) if self.mode != "grad" else None
        if act is None or back_rule(act, self.mode, self.rectify) == "grad":
            return func(*args, **kwargs)
        x = args[0] if args else kwargs["input"]
        if act is RELU:
            inplace = func in INPLACE_RELUS or (
                func is F.relu and bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            )
            return _FUNCTIONS[self.mode == "guided", inplace].apply(x)
        # Out of place: the module's `inplace` only saves memory, and the guided rule needs x.
        return _BackActivation.apply(x, act, activation_params(act, func, args, kwargs), self.mode == "guided")


def _back_mode(mode: str, rectify: str = "all") -> _BackMode:
    if mode not in MODES:
        raise DvisError(f"unknown back-projection mode {mode!r}; use one of {', '.join(MODES)}")
    if rectify not in RECTIFY:
        raise DvisError(f"unknown rectify setting {rectify!r}; use one of {', '.join(RECTIFY)}")
    return _BackMode(mode, rectify)


def _units(units) -> torch.Tensor:
    try:
        units = torch.as_tensor(units).reshape(-1)
    except (TypeError, ValueError, RuntimeError) as err:
        raise DvisError(f"units must be integers, got {units!r}") from err
    if units.numel() == 0 or units.is_floating_point() or units.is_complex() or units.dtype == torch.bool:
        raise DvisError(f"units must be a non-empty sequence of integers, got {units.tolist()}")
    return units.long()


def _positions(at, n: int, rank: int, sizes: Sequence[int]) -> torch.Tensor:
    """``at`` given as positions: one (rank,) position for all targets or an (n, rank) tensor."""
    pos = torch.as_tensor(at)
    if pos.is_floating_point() or pos.dim() not in (1, 2) or pos.shape[-1] != rank:
        raise DvisError(f"at must be 'max', 'map' or {rank} integer position(s) per target, got {at!r}")
    pos = pos.long().reshape(-1, rank).expand(n, rank)
    if pos.shape[0] != n:
        raise DvisError(f"at has {pos.shape[0]} positions for {n} targets")
    limits = torch.tensor(sizes, device=pos.device)
    if ((pos < 0) | (pos >= limits)).any():
        raise DvisError(f"position(s) {pos.tolist()} outside the layer's {'x'.join(map(str, sizes))} map")
    return pos


def _check_units(units: torch.Tensor, c: int) -> None:
    bad = units[(units < 0) | (units >= c)]
    if bad.numel():
        raise DvisError(f"unit(s) {bad.tolist()} out of range: the layer has {c} units")


def _seeds(value: torch.Tensor, units: torch.Tensor, at) -> torch.Tensor:
    """Backward seeds for ``n`` targets: ``value`` is (n, C, ...) and target i is channel ``units[i]``."""
    n, c = value.shape[:2]
    _check_units(units, c)
    units = units.to(value.device)
    rows = torch.arange(n, device=value.device)
    seeds = torch.zeros(value.shape, dtype=value.dtype, device=value.device)
    if value.dim() == 2:  # fc: the unit is the target, `at` does not apply
        seeds[rows, units] = 1
        return seeds
    maps = value[rows, units].reshape(n, -1)
    flat = seeds.view(n, c, -1)
    if isinstance(at, str) and at == "map":
        flat[rows, units] = maps
    elif isinstance(at, str) and at == "max":
        flat[rows, units, maps.argmax(1)] = 1
    elif isinstance(at, str):
        raise DvisError(f"at must be 'max', 'map' or a position, got {at!r}")
    else:
        sizes = value.shape[2:]
        pos = _positions(at, n, len(sizes), sizes).to(value.device)
        strides = torch.tensor(flat.new_empty(sizes).stride(), device=value.device)
        flat[rows, units, (pos * strides).sum(1)] = 1
    return seeds


def _layout(model_or_net, layer: str, x: torch.Tensor) -> LayerGeometry | None:
    """The layer's geometry where its values are not channels-first (hwc, tokens, partitioned), else None.

    Taken at the model's input size (a plain net: ``x``'s), so crops of other sizes reuse it."""
    if x.dim() != 4:
        return None
    size = None if getattr(model_or_net, "input_size", None) is not None else tuple(x.shape[-2:])
    try:
        geom = model_geometry(model_or_net, size, channels=x.shape[1])[layer]
    except DvisError:  # no geometry at that size: the values are taken as channels-first
        return None
    return geom if geom.reordered else None


def _layer_seeds(value: torch.Tensor, units: torch.Tensor, at, geom: LayerGeometry | None) -> torch.Tensor:
    """:func:`_seeds` on the layer's maps (channels-last and token layers included)."""
    if geom is None:
        return _seeds(value, units, at)
    return from_maps(_seeds(to_maps(value, geom), units, at), geom, value)


def _each_unit(x: torch.Tensor, units: torch.Tensor) -> None:
    if x.shape[0] != len(units):
        raise DvisError(
            f"{x.shape[0]} images for {len(units)} units: give one image (shared) or one image per unit"
        )


def _graph_output(model_or_net, x: torch.Tensor, layer: str) -> torch.Tensor:
    value = capture(model_or_net, x, attached=[layer])[1][layer]
    if not value.requires_grad:
        raise DvisError(f"layer {layer!r} does not depend on the input")
    return value


@contextmanager
def _largest_output(net: torch.nn.Module) -> Iterator[list[int]]:
    """Track the size in bytes of the largest leaf-module output of the forward run inside."""
    largest = [0]

    def hook(name, module, args, output):
        if isinstance(output, torch.Tensor):
            largest[0] = max(largest[0], output.numel() * output.element_size())

    with forward_hooks(net, leaf_names(net), hook):
        yield largest


def backproject_batch(
    model_or_net,
    x: torch.Tensor,
    layer: str,
    units,
    mode: str = "deconv",
    at="max",
    *,
    chunk_size: int | None = None,
    rectify: str = "all",
) -> torch.Tensor:
    """Back-project many targets of ``layer`` at once; returns N x (x's C x H x W).

    ``x`` is 1xCxHxW shared by all ``units`` (e.g. every channel of a layer: one forward, then one
    backward vmapped over the targets, ``chunk_size`` at a time, by default as many as fit in
    :data:`CHUNK_MEMORY` given the net's largest activation) or NxCxHxW with one unit per image
    (one batched forward and backward). ``at``: ``"max"`` seeds 1 at the channel's argmax,
    ``"map"`` seeds the whole channel map with its own values, a (y, x) position or an (N, 2)
    LongTensor of positions seeds 1 there; ignored for fc layers. Channels-last (ConvNeXt, Swin)
    and token (ViT) layers are addressed as maps: unit = channel, position = (row, column) of the
    grid (class tokens are never seeded). The forward stops at ``layer``.
    ``rectify``: ``"all"`` (deconv/guided rules at every activation) or ``"relu"`` (ReLU/ReLU6 only).
    """
    check_layers(model_or_net, [layer])
    x = check_input(model_or_net, x)
    units = _units(units)
    back_mode = _back_mode(mode, rectify)
    net = as_net(model_or_net)
    if x.shape[0] != 1 or len(units) == 1:
        _each_unit(x, units)
        xx = x.detach().requires_grad_(True)
        with frozen_params(net):
            with back_mode, torch.enable_grad():
                value = _graph_output(model_or_net, xx, layer)
            seeds = _layer_seeds(value.detach(), units, at, _layout(model_or_net, layer, x))
            return torch.autograd.grad(value, xx, seeds)[0]

    # Parameters stay frozen through the backward too: the backward formulas use the weights, and
    # weights that require grad would make autograd record a double-backward graph.
    with frozen_params(net):
        with back_mode, _largest_output(net) as largest:
            value, pull_back = torch.func.vjp(lambda inp: _graph_output(model_or_net, inp, layer), x.detach())
        pull_back = torch.func.vmap(pull_back)
        n = len(units)
        geom = _layout(model_or_net, layer, x)
        maps = value if geom is None else to_maps(value, geom)
        _check_units(units, maps.shape[1])
        if chunk_size is None:
            # The backward of one target holds about three activation-sized tensors at its widest layer.
            chunk_size = max(1, min(MAX_CHUNK, CHUNK_MEMORY // max(1, 3 * largest[0])))
        elif chunk_size < 1:
            raise DvisError(f"chunk_size must be positive, got {chunk_size}")
        spatial = maps.dim() > 2 and not isinstance(at, str)
        positions = _positions(at, n, maps.dim() - 2, maps.shape[2:]) if spatial else at
        out = x.new_empty((n,) + x.shape[1:])
        for start in range(0, n, chunk_size):
            part = units[start:start + chunk_size]
            where = positions[start:start + chunk_size] if spatial else positions
            seeds = _layer_seeds(value.detach().expand((len(part),) + value.shape[1:]), part, where, geom)
            out[start:start + len(part)] = pull_back(seeds.unsqueeze(1))[0].squeeze(1)
    return out


def backproject(model_or_net, x: torch.Tensor, layer: str, unit: int, mode: str = "deconv", at="max",
                *, rectify: str = "all") -> torch.Tensor:
    """Back-project one unit of ``layer`` to the input; returns a tensor shaped like ``x``.

    ``mode``: ``"deconv"`` (Zeiler & Fergus deconvnet), ``"guided"`` (guided backprop) or ``"grad"``.
    ``at``: ``"max"`` (seed 1 at the channel's argmax), ``(y, x)`` (seed 1 at that unit) or ``"map"``
    (the channel's whole map seeded with its own activation); ignored for fc layers, where
    ``unit`` is the index. With several images the same unit is back-projected in each.
    ``rectify``: ``"all"`` or ``"relu"`` (see :func:`backproject_batch`).
    """
    try:
        unit = operator.index(unit)
    except TypeError as err:
        raise DvisError(f"unit must be an integer, got {unit!r}") from err
    x = check_input(model_or_net, x)
    return backproject_batch(model_or_net, x, layer, [unit] * x.shape[0], mode, at, rectify=rectify)


class VisResult(NamedTuple):
    """Everything the live toolbox needs from one forward and one backward."""

    activations: dict[str, torch.Tensor]
    input_grad: torch.Tensor | None
    diffs: dict[str, torch.Tensor]


def forward_and_back(
    model_or_net,
    x: torch.Tensor,
    layers: Iterable[str],
    back_layer: str | None,
    unit: int | None = None,
    mode: str = "deconv",
    at="max",
    diff_layers: Iterable[str] = (),
    *,
    rectify: str = "all",
) -> VisResult:
    """One forward capturing ``layers`` plus one backward from ``unit`` of ``back_layer``.

    Forward values are the same in every mode. ``diffs`` holds the backward signal (gradient
    w.r.t. the layer's output) at each of ``diff_layers``; zeros where the layer is not on the
    way back (e.g. past ``back_layer``). ``back_layer=None`` runs the forward only. ``rectify``:
    ``"all"`` or ``"relu"`` (see :func:`backproject_batch`). Autograd records the forward only up to
    ``back_layer`` (:func:`dvis.engine.activations.capture`'s ``grad_until``): the layers after it, needed
    for their values only, hold no graph.
    """
    layers = check_layers(model_or_net, layers)
    if back_layer is None:
        return VisResult(activations(model_or_net, x, layers), None, {})
    diff_layers = check_layers(model_or_net, diff_layers)
    check_layers(model_or_net, [back_layer])
    x = check_input(model_or_net, x)
    try:
        units = _units([operator.index(unit)] * x.shape[0])
    except TypeError as err:
        raise DvisError(f"unit must be an integer, got {unit!r}") from err
    back_mode = _back_mode(mode, rectify)
    xx = x.detach().requires_grad_(True)
    with frozen_params(as_net(model_or_net)):
        with back_mode, torch.enable_grad():
            values, graph = capture(
                model_or_net, xx, detached=layers, attached=[back_layer, *diff_layers], required=False,
                grad_until=back_layer,
            )
        value = graph[back_layer]
        if not value.requires_grad:
            raise DvisError(f"layer {back_layer!r} does not depend on the input")
        seeds = _layer_seeds(value.detach(), units, at, _layout(model_or_net, back_layer, x))
        # Diff layers reached after back_layer have no graph: off the way back, their diffs are zero.
        on_path = [name for name in diff_layers if graph[name].requires_grad]
        grads = torch.autograd.grad(value, [xx] + [graph[name] for name in on_path], seeds,
                                    allow_unused=True, materialize_grads=True)
    diffs = dict(zip(on_path, grads[1:]))
    return VisResult(
        {name: values[name] for name in layers if name in values},
        grads[0],
        {name: diffs[name] if name in diffs else torch.zeros_like(graph[name]) for name in diff_layers},
    )
