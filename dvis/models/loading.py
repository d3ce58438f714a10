"""Load a model folder (``model.yaml``), a ``model.yaml`` file or a bare torchvision/timm name.

:func:`load_model` returns a :class:`LoadedModel`: the net in eval mode on its device plus
everything needed to feed and display it. The parts live in their own modules:
:mod:`dvis.models.spec` (the yaml schema and the search), :mod:`dvis.models.architectures` (building the
net), :mod:`dvis.models.weights`, :mod:`dvis.runtime.devices`, :mod:`dvis.imaging.preprocess`, :mod:`dvis.models.loaded`
and :mod:`dvis.formats.paths` (where things are looked up).
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import torch
import torchvision.models as tvm

from dvis.models.architectures import build_net, check_architecture
from dvis.runtime.devices import resolve_device
from dvis.errors import DvisError, LayerNotFoundError
from dvis.engine.layers import check_layers, default_layers
from dvis.models.loaded import LoadedModel
from dvis.models.spec import DEFAULT_MODEL, ModelSpec, find_model_yaml, is_timm, parse_model_yaml
from dvis.formats.paths import unit_vis_read_dirs
from dvis.models.weights import is_weights_name

__all__ = ["DEFAULT_MODEL", "LoadedModel", "load_model", "load_model_layout"]


def _read_labels(spec: ModelSpec) -> list[str]:
    if isinstance(spec.labels, list):
        return list(spec.labels)
    if isinstance(spec.labels, str):
        path = (spec.folder or Path.cwd()) / spec.labels
        if not path.is_file():
            raise DvisError(f"model {spec.name}: labels file {path} not found")
        return path.read_text(encoding="utf-8").rstrip("\n").split("\n")
    if ":" not in spec.architecture and "num_classes" not in spec.args:
        return list(tvm.get_model_weights(spec.architecture).DEFAULT.meta["categories"])
    return []


def _with_defaults(spec: ModelSpec) -> ModelSpec:
    """Fill input size and normalization: torchvision nets from their default weights' transforms."""
    check_architecture(spec.architecture)
    if ":" in spec.architecture:
        if spec.input_size is None:
            raise DvisError(f"model {spec.name}: input_size is required for architecture {spec.architecture!r}")
        # No normalization unless model.yaml says so: pixels go in as [0, 1].
        spec.mean = spec.mean or (0.0,) * spec.channels
        spec.std = spec.std or (1.0,) * spec.channels
        return spec
    t = tvm.get_model_weights(spec.architecture).DEFAULT.transforms()
    spec.input_size = spec.input_size or (t.crop_size[0], t.crop_size[0])
    gray = lambda v: (sum(v) / len(v),) if spec.channels == 1 else tuple(v)  # noqa: E731
    spec.mean = spec.mean or gray(t.mean)
    spec.std = spec.std or gray(t.std)
    return spec


def load_model(spec: str | os.PathLike | None = None, device: str | torch.device = "cpu", *, weights: str | None = None) -> LoadedModel:
    """Load a model: a model folder name (searched in ``$DVIS_MODELS``, ``./models``, the repo's
    ``models/``), a path to a model folder or ``model.yaml``, or a bare torchvision architecture
    name (ImageNet defaults, random init with a warning, ``default_layers``). None loads
    :data:`DEFAULT_MODEL`. ``weights`` overrides model.yaml's ``weights:`` (same forms; ``"none"``
    for random init; a relative file is taken from the current directory).
    """
    dev = resolve_device(device)
    spec = os.fspath(spec) if spec is not None else DEFAULT_MODEL
    yaml_path = find_model_yaml(spec)
    if yaml_path is None:
        model_spec = ModelSpec(name=spec, architecture=spec)
    else:
        if not yaml_path.is_file():
            raise DvisError(f"{yaml_path.parent}: model folder has no model.yaml")
        model_spec = parse_model_yaml(yaml_path)
    if weights is not None:
        keep = is_weights_name(weights) or weights.lower() in ("none", "pretrained")
        model_spec.weights = weights if keep else str(Path(weights).resolve())
    if is_timm(model_spec.architecture):  # timm fills input size and normalization from its data config
        from dvis.models import timm as timm_models

        net, source = build_net(model_spec, model_spec.weights)
        labels = _read_labels(model_spec) or timm_models.labels(net)
    else:
        given = model_spec.input_size
        model_spec = _with_defaults(model_spec)
        labels = _read_labels(model_spec)
        net, source = build_net(model_spec, model_spec.weights)
        # the size the net is built for wins over the default weights' crop: vit_h_14 at random init is a
        # 224 px net while its default (SWAG) weights' transforms say 518
        built = getattr(net, "image_size", None)
        if given is None and isinstance(built, int):
            model_spec.input_size = (built, built)
    if model_spec.layers is None:
        layers, display = default_layers(net, model_spec.input_size), {}
    else:
        layers, display = model_spec.layers, model_spec.display_names
        try:
            check_layers(net, layers)
        except LayerNotFoundError as exc:
            raise LayerNotFoundError(f"{yaml_path}: {exc}") from exc
    folder = model_spec.folder
    checkpoints = [folder / c for c in model_spec.checkpoints] if folder else []
    missing = [c for c in checkpoints if not c.is_file()]
    if missing:
        warnings.warn(f"model {model_spec.name}: skipping {len(missing)} missing checkpoint(s), first: {missing[0]}", stacklevel=2)
    net.eval().requires_grad_(False).to(dev)  # visualizations need input gradients only
    shipped = folder / model_spec.unit_vis if folder else None
    read_dirs = unit_vis_read_dirs(model_spec.name, folder, shipped)
    return LoadedModel(
        name=model_spec.name,
        net=net,
        layers=list(layers),
        display_names={layer: display.get(layer, layer) for layer in layers},
        input_size=model_spec.input_size,
        channels=model_spec.channels,
        mean=model_spec.mean,
        std=model_spec.std,
        labels=labels,
        folder=folder,
        unit_vis_dir=(read_dirs or [shipped])[0],
        unit_vis_dirs=read_dirs,
        shipped_unit_vis_dir=shipped,
        checkpoints=[c for c in checkpoints if c.is_file()],
        device=dev,
        weights_source=source,
    )


def load_model_layout(spec: str | os.PathLike | None = None) -> LoadedModel:
    """``spec``'s names, layers, labels and folders without its weights: the net at random init, on
    the CPU, and no random-init warning. For what only reads the model's files (``dvis atlas``,
    ``dvis unit-stats``): a missing or undownloaded weights file does not stop them."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"model .*random init")
        return load_model(spec, weights="none")
