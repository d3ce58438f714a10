"""Layer names, the net behind a model, input checks and temporarily frozen parameters.

Layers are qualified module names from ``net.named_modules()``. Everything in the core engine
accepts either a ``LoadedModel`` (anything with an ``nn.Module`` in ``.net``) or a plain module.
"""
from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from weakref import WeakKeyDictionary

import torch
from torch import nn

from dvis.errors import DvisError, LayerNotFoundError

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_POOL = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
#: Module types whose output is always worth browsing.
VISUALIZABLE = _CONV + _POOL + (nn.Linear,)


def as_net(model_or_net) -> nn.Module:
    """The ``nn.Module`` of a ``LoadedModel`` (its ``.net``) or the module itself."""
    if isinstance(model_or_net, nn.Module):
        return model_or_net
    net = getattr(model_or_net, "net", None)
    if isinstance(net, nn.Module):
        return net
    raise DvisError(f"expected an nn.Module or a LoadedModel, got {type(model_or_net).__name__}")


def _visual_order(module: nn.Module, prefix: str, parent: nn.Module | None, root: bool) -> Iterator[str]:
    # Post-order so that a block comes after the layers inside it, as in execution order.
    for name, child in module.named_children():
        yield from _visual_order(child, f"{prefix}{name}.", module, parent is None)
    if parent is None:
        return
    is_leaf = next(module.children(), None) is None
    in_sequential = isinstance(parent, nn.Sequential)
    if (
        isinstance(module, VISUALIZABLE)
        or (is_leaf and in_sequential and isinstance(module, nn.ReLU))
        or (not is_leaf and (in_sequential or (root and not isinstance(module, nn.Sequential))))
    ):
        yield prefix[:-1]


def default_layers(model_or_net, input_size=None) -> list[str]:
    """Ordered layers worth browsing: ``model.layers`` for a ``LoadedModel``, else derived from the net.

    For a plain module: every conv, pool and linear module; ``nn.ReLU`` modules that are steps of an
    ``nn.Sequential`` (AlexNet/VGG style; a conv shows its own, pre-ReLU, output and the ReLU the
    rectified one); blocks that are steps of an ``nn.Sequential`` (a ResNet ``layer1.0`` gives the
    block output after its final ReLU) and non-Sequential blocks directly under the root (GoogLeNet
    ``inception3a``, Inception-v3 ``Mixed_5b``: the concatenated outputs). ReLUs owned by a block
    (ResNet's ``relu``, called twice) are left out because one name would stand for two tensors.
    Modules the geometry (at ``input_size``, default 224x224) finds never run or input-independent
    are left out too.
    """
    layers = getattr(model_or_net, "layers", None)
    if not isinstance(model_or_net, nn.Module) and layers is not None:
        return list(layers)
    names = list(_visual_order(as_net(model_or_net), "", None, False))
    from dvis.geometry import model_geometry

    try:
        geo = model_geometry(model_or_net, input_size)  # at the size the net is built for (MaxViT's is fixed)
    except DvisError:  # not an image net at the default size (e.g. a 1-D net): no geometry to filter by
        return names
    # left out: modules the eval forward never reaches and ones whose output does not depend on the
    # image (LayerGeometry.browsable)
    return [n for n in names if geo[n].browsable]


def check_layers(model_or_net, names: str | Iterable[str]) -> list[str]:
    """Return ``names`` as a list; raise :class:`LayerNotFoundError` listing valid names if one is unknown."""
    names = [names] if isinstance(names, str) else list(names)
    modules = dict(as_net(model_or_net).named_modules())
    unknown = [n for n in names if n not in modules or n == ""]
    if unknown:
        valid = default_layers(model_or_net)
        raise LayerNotFoundError(
            f"unknown layer {', '.join(map(repr, unknown))}; valid layers: {', '.join(valid)}"
            " (or any other module name of net.named_modules())"
        )
    return names


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
