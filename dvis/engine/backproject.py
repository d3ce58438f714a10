"""Back-projection of a unit to input space: deconvnet, guided backprop and plain gradient.

All three modes are one autograd backward pass from seeds at the unit (:mod:`dvis.engine.back_seeds`),
through the forward run under the mode's rules (:mod:`dvis.engine.back_modes`): ``grad`` is the
plain gradient; ``guided`` and ``deconv`` (Zeiler & Fergus) change only how activations pass the
signal back. :func:`backproject` takes one unit, :func:`backproject_batch` many (one forward, a
batched backward), :func:`forward_and_back` is the live toolbox's one forward and one backward.
"""
from __future__ import annotations

import operator
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch

from dvis.engine.activations import activations, capture
from dvis.engine.back_modes import _back_mode
from dvis.engine.back_seeds import _check_units, _each_unit, _layer_seeds, _layout, _positions, _units
from dvis.engine.geometry import to_maps
from dvis.engine.hooks import forward_hooks, leaf_names
from dvis.engine.layers import check_layers
from dvis.engine.net import as_net, check_input, frozen_params
from dvis.errors import DvisError

#: Memory the vmapped backward may use for one chunk of targets, and the most targets per chunk
#: (beyond about 128 the batched convolutions get no faster).
CHUNK_MEMORY = 1 << 30
MAX_CHUNK = 128


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
