"""What ``model=`` means in a notebook: a model name or path (as :func:`dvis.load_model` takes), a
:class:`~dvis.models.loaded.LoadedModel`, or the user's own ``nn.Module`` with its preprocessing."""
from __future__ import annotations

import os

from torch import nn

from dvis.engine.layers import check_layers, default_layers
from dvis.engine.net import expected_input
from dvis.errors import DvisError
from dvis.models.loaded import LoadedModel
from dvis.models.loading import load_model
from dvis.runtime.devices import resolve_device

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def preprocessing_of(preprocess) -> dict:
    """``input_size``, ``mean`` and ``std`` read from ``preprocess``: a dict of those keys, a torchvision
    weights' transform (``weights.transforms()``: ``crop_size``, ``mean``, ``std``) or a
    ``transforms.Compose`` (its ``Normalize`` and last ``CenterCrop`` / ``Resize``)."""
    if preprocess is None:
        return {}
    if isinstance(preprocess, dict):
        unknown = set(preprocess) - {"input_size", "mean", "std"}
        if unknown:
            raise DvisError(f"preprocess: unknown keys {', '.join(sorted(unknown))}; use input_size, mean, std")
        return dict(preprocess)
    out = {}
    for t in getattr(preprocess, "transforms", [preprocess]):
        if hasattr(t, "mean") and hasattr(t, "std"):
            out.update(mean=tuple(t.mean), std=tuple(t.std))
        size = getattr(t, "crop_size", None) or getattr(t, "size", None)
        if size is not None and type(t).__name__ in ("CenterCrop", "Resize", "ImageClassification"):
            size = [size] * 2 if isinstance(size, int) else list(size) * (2 if len(size) == 1 else 1)
            out["input_size"] = (int(size[0]), int(size[1]))
    if not out:
        raise DvisError(f"preprocess: found no Normalize or size in {type(preprocess).__name__}")
    return out


def module_model(net: nn.Module, *, preprocess=None, labels: list[str] | None = None,
                 layers: list[str] | None = None, name: str | None = None, device: str = "cpu") -> LoadedModel:
    """A LoadedModel around the user's ``net`` (put in eval mode and moved to ``device``; its
    parameters are left as they are). Without ``preprocess`` the input is 224 x 224, ImageNet's
    normalization; ``layers`` defaults to :func:`~dvis.engine.layers.default_layers`."""
    pre = preprocessing_of(preprocess)
    size = tuple(int(v) for v in pre.get("input_size", (224, 224)))
    _, channels, _ = expected_input(net)
    channels = channels or 3
    mean = tuple(pre.get("mean", IMAGENET_MEAN if channels == 3 else (0.5,) * channels))
    std = tuple(pre.get("std", IMAGENET_STD if channels == 3 else (0.5,) * channels))
    dev = resolve_device(device)
    net.eval().to(dev)
    if layers is None:
        layers = default_layers(net, size)
    else:
        check_layers(net, layers)
    return LoadedModel(name=name or type(net).__name__, net=net, layers=list(layers),
                       display_names={n: n for n in layers}, input_size=size, channels=channels, mean=mean,
                       std=std, labels=list(labels or []), folder=None, unit_vis_dir=None, checkpoints=[],
                       device=dev, weights_source="the notebook's module")


def as_model(model, *, device: str | None = None, weights: str | None = None, **module_options) -> LoadedModel:
    """``model`` as a LoadedModel: one already (kept), an ``nn.Module`` (:func:`module_model` with
    ``module_options``), else what :func:`dvis.load_model` takes (None: the default model)."""
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, nn.Module):
        return module_model(model, device=device or "cpu", **module_options)
    if module_options:
        raise DvisError(f"{', '.join(sorted(module_options))}: only for an nn.Module model")
    if model is not None and not isinstance(model, (str, os.PathLike)):
        raise DvisError(f"model: expected a name, a path, a LoadedModel or an nn.Module, got {type(model).__name__}")
    return load_model(model, device or "cpu", weights=weights)
