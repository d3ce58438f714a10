"""Layer activations from one forward pass, captured with forward hooks.

A layer's value is its module's output at the module's first call in the forward pass. A conv
layer therefore shows its own (pre-ReLU) output even when an in-place ReLU follows it, because
values are cloned at capture time; the ReLU module (where one exists) shows the rectified values.
The forward stops as soon as every requested layer has been captured.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable

import torch
from torch import nn

from dvis.errors import DvisError
from dvis.engine.hooks import forward_hooks
from dvis.engine.net import as_net, check_input, describe_input
from dvis.engine.layers import check_layers, default_layers


class _StopForward(Exception):
    """Raised by a hook once everything needed is captured, to skip the rest of the net."""


def capture(
    model_or_net,
    x: torch.Tensor,
    detached: Iterable[str] = (),
    attached: Iterable[str] = (),
    required: bool = True,
    grad_until: str | None = None,
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Run the net on ``x`` once and return ``(detached_values, attached_values)``.

    ``detached`` layers are stored as detached clones. ``attached`` layers are stored as the live
    autograd tensors, and the forward continues on a clone of them, so a later in-place op cannot
    change the stored tensor or its graph (gradients w.r.t. it are w.r.t. the layer's output).
    A layer the forward never reaches raises :class:`DvisError`, or is skipped with a warning when
    ``required`` is False and it is only in ``detached`` (GoogLeNet's aux heads in eval mode).
    ``grad_until``: once that layer's output is captured, autograd stops recording for the rest of
    the forward (grad mode is thread-local), so a backward from it keeps only the graph up to it and
    later layers come without graph (their values do not change). The caller's grad mode is restored.
    Hooks only act in the calling thread and are removed even when the forward raises. Names must
    already be checked; ``x`` must already be on the net's device.
    """
    net = as_net(model_or_net)
    detached, attached = set(detached), set(attached)
    wanted = detached | attached
    if not wanted:
        return {}, {}
    seen: set[str] = set()
    values: dict[str, torch.Tensor] = {}
    graph: dict[str, torch.Tensor] = {}

    def hook(name: str, module: nn.Module, args, output):
        if name in seen:
            return None
        seen.add(name)
        if not isinstance(output, torch.Tensor):
            if name in attached:
                raise DvisError(f"layer {name!r} outputs a {type(output).__name__}, not a tensor")
            warnings.warn(f"layer {name!r} outputs a {type(output).__name__}, not a tensor; skipped")
        else:
            if name in detached:
                values[name] = output.detach().clone()
            if name in attached:
                graph[name] = output
        if len(seen) == len(wanted):
            raise _StopForward
        if name == grad_until:
            torch.set_grad_enabled(False)  # nothing after it is on the way back
        return output.clone() if name in attached else None

    grad_mode = torch.is_grad_enabled()
    try:
        with forward_hooks(net, wanted, hook):
            net(x)
    except _StopForward:
        pass
    except RuntimeError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        shape = "x".join(map(str, x.shape))
        raise DvisError(
            f"forward pass failed for input {shape} (expected {describe_input(model_or_net)}): {first}"
        ) from err
    finally:
        torch.set_grad_enabled(grad_mode)
    missing = sorted(name for name in wanted if name not in seen)
    if missing and (required or attached & set(missing)):
        raise DvisError(f"layer(s) {', '.join(missing)} not reached in the forward pass")
    if missing:
        warnings.warn(f"layer(s) {', '.join(missing)} not reached in the forward pass; skipped")
    return values, graph


def activations(model_or_net, x: torch.Tensor, layers: str | Iterable[str] | None = None) -> dict[str, torch.Tensor]:
    """Values of ``layers`` (default: :func:`default_layers`) for input ``x``, in the order asked.

    One forward pass without autograd; values are detached clones of any rank (NCHW conv maps,
    NC fc outputs, ...). Layers the forward never reaches or whose output is not a tensor are
    skipped with a warning.
    """
    names = check_layers(model_or_net, default_layers(model_or_net) if layers is None else layers)
    x = check_input(model_or_net, x)
    with torch.no_grad():
        values, _ = capture(model_or_net, x, detached=names, required=False)
    return {name: values[name] for name in names if name in values}


def forward_to(model_or_net, x: torch.Tensor, layer: str) -> torch.Tensor:
    """Output of ``layer`` for input ``x``; the forward stops right after it.

    Runs under the caller's grad mode, so the result can be back-propagated (activation
    maximization, crops).
    """
    check_layers(model_or_net, [layer])
    x = check_input(model_or_net, x)
    return capture(model_or_net, x, attached=[layer])[1][layer]
