"""The net behind a model, the input it expects, input checks and temporarily frozen parameters.

Everything in the engine accepts either a ``LoadedModel`` (anything with an ``nn.Module`` in
``.net``) or a plain module; :func:`as_net` is the one place that tells them apart.
"""
from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from weakref import WeakKeyDictionary

import torch
from torch import nn

from dvis.errors import DvisError


def as_net(model_or_net) -> nn.Module:
    """The ``nn.Module`` of a ``LoadedModel`` (its ``.net``) or the module itself."""
    if isinstance(model_or_net, nn.Module):
        return model_or_net
    net = getattr(model_or_net, "net", None)
    if isinstance(net, nn.Module):
        return net
    raise DvisError(f"expected an nn.Module or a LoadedModel, got {type(model_or_net).__name__}")


def expected_input(model_or_net) -> tuple[int, int | None, tuple[int, int] | None]:
    """(rank, channels, (h, w)) the net takes; unknown parts are None.

    A ``LoadedModel`` knows its channels and input size; for a plain module the first conv or
    linear layer gives rank and channels.
    """
    channels = getattr(model_or_net, "channels", None)
    size = getattr(model_or_net, "input_size", None)
    if not isinstance(model_or_net, nn.Module) and channels is not None:
        return 4, int(channels), tuple(size) if size is not None else None
    for module in as_net(model_or_net).modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return module.weight.dim(), module.in_channels, None
        if isinstance(module, nn.Linear):
            return 2, module.in_features, None
    return 0, None, None


def describe_input(model_or_net) -> str:
    """Expected input shape as text, e.g. ``Nx3x224x224`` or ``Nx3xHxW``."""
    rank, channels, size = expected_input(model_or_net)
    if rank == 0:
        return "any shape"
    if rank == 4 and size:
        spatial = [str(size[0]), str(size[1])]
    else:
        spatial = {3: ["L"], 4: ["H", "W"], 5: ["D", "H", "W"]}.get(rank, [])
    return "x".join(["N", str(channels) if channels is not None else "C"] + spatial)


def check_input(model_or_net, x) -> torch.Tensor:
    """Validate ``x`` against the net's expected input and move it to the net's device."""
    want = describe_input(model_or_net)
    if not isinstance(x, torch.Tensor):
        raise DvisError(f"input must be a torch.Tensor shaped {want}, got {type(x).__name__}")
    if not x.is_floating_point():
        raise DvisError(f"input must be a float tensor (normalized), got {x.dtype}")
    rank, channels, _ = expected_input(model_or_net)
    shape = "x".join(map(str, x.shape))
    # The spatial size is not enforced: conv layers also take crops or other sizes.
    if rank and (x.dim() != rank or (channels is not None and x.shape[1] != channels)):
        raise DvisError(f"input of shape {shape} does not fit the net: expected {want}")
    param = next(as_net(model_or_net).parameters(), None)
    return x if param is None else x.to(param.device)


_freeze_lock = threading.Lock()
_frozen: WeakKeyDictionary[nn.Module, tuple[int, list[tuple[nn.Parameter, bool]]]] = WeakKeyDictionary()


@contextmanager
def frozen_params(net: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` on all parameters, restoring the original flags afterwards.

    Reference-counted per net so that overlapping uses from several threads restore the flags
    the user had, not the frozen ones.
    """
    with _freeze_lock:
        count, saved = _frozen.get(net, (0, None))
        if count == 0:
            saved = [(p, p.requires_grad) for p in net.parameters()]
            for p, _ in saved:
                p.requires_grad_(False)
        _frozen[net] = (count + 1, saved)
    try:
        yield
    finally:
        with _freeze_lock:
            count, saved = _frozen[net]
            if count == 1:
                for p, flag in saved:
                    p.requires_grad_(flag)
                del _frozen[net]
            else:
                _frozen[net] = (count - 1, saved)
