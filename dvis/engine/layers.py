"""Layer names: the layers worth browsing in a net, and the check that names exist.

Layers are qualified module names from ``net.named_modules()``.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

from torch import nn

from dvis.engine.geometry import model_geometry
from dvis.engine.net import as_net
from dvis.errors import DvisError, LayerNotFoundError, did_you_mean

_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_POOL = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
#: Module types whose output is always worth browsing.
VISUALIZABLE = _CONV + _POOL + (nn.Linear,)


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
    try:
        geo = model_geometry(model_or_net, input_size)  # at the size the net is built for (MaxViT's is fixed)
    except DvisError:  # not an image net at the default size (e.g. a 1-D net): no geometry to filter by
        return names
    # left out: modules the eval forward never reaches and ones whose output does not depend on the
    # image (LayerGeometry.browsable)
    return [n for n in names if geo[n].browsable]


def check_layers(model_or_net, names: str | Iterable[str]) -> list[str]:
    """Return ``names`` as a list; raise :class:`LayerNotFoundError` naming the closest layers to each
    unknown name and listing the valid ones if one is unknown."""
    names = [names] if isinstance(names, str) else list(names)
    modules = dict(as_net(model_or_net).named_modules())
    unknown = [n for n in names if n not in modules or n == ""]
    if unknown:
        valid = default_layers(model_or_net)
        known = list(valid) + [m for m in modules if m]
        named = ", ".join(f"{n!r}{did_you_mean(n, known, n=1)}" for n in unknown)
        raise LayerNotFoundError(
            f"unknown layer {named}; valid layers: {', '.join(valid)}"
            " (or any other module name of net.named_modules())"
        )
    return names


