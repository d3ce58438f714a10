"""The ``model.yaml`` schema: :class:`ModelSpec`, its validation, and finding a spec's folder.

The format is documented in ``models/README.md``; folders are searched along
:func:`dvis.formats.paths.model_search_path`.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from dvis.errors import DvisError, closest, did_you_mean
from dvis.formats.paths import model_search_path

#: The model :func:`dvis.load_model` loads when given no spec.
DEFAULT_MODEL = "zf-cifar10"
#: The scheme of timm architectures and model names: ``timm:NAME`` (built by :mod:`dvis.models.timm`).
TIMM_PREFIX = "timm:"
#: Keys a ``model.yaml`` may have.
MODEL_KEYS = (
    "name", "description", "architecture", "args", "weights", "input_size", "channels",
    "mean", "std", "labels", "layers", "unit_vis", "checkpoints",
)
_LAYER_KEYS = ("name", "display")


def is_timm(architecture: str) -> bool:
    """True for ``timm:NAME`` architectures and model names."""
    return architecture.startswith(TIMM_PREFIX)


def torchvision_architectures() -> list[str]:
    """Names of torchvision's classification models (``alexnet``, ``vgg16``, ``resnet18``, ...)."""
    import torchvision.models as tvm  # only when a name must be checked: torchvision is slow to import

    return tvm.list_models(module=tvm)


@dataclass
class ModelSpec:
    """A validated ``model.yaml`` (or the defaults for a bare torchvision name)."""

    name: str
    architecture: str
    folder: Path | None = None
    args: dict[str, Any] = field(default_factory=dict)
    weights: str | None = None
    input_size: tuple[int, int] | None = None
    channels: int = 3
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    labels: str | list[str] | None = None
    layers: list[str] | None = None
    display_names: dict[str, str] = field(default_factory=dict)
    unit_vis: str = "unit_vis"
    checkpoints: list[str] = field(default_factory=list)


def _pair(value: Any, where: str) -> tuple[int, int]:
    size = [value, value] if isinstance(value, int) else value
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
        raise DvisError(f"{where}: input_size must be a positive int or [height, width], got {value!r}")
    return size[0], size[1]


def _per_channel(value: Any, channels: int, key: str, where: str) -> tuple[float, ...]:
    values = [value] * channels if isinstance(value, (int, float)) else value
    if not (isinstance(values, list) and len(values) == channels and all(isinstance(v, (int, float)) for v in values)):
        raise DvisError(f"{where}: {key} must be a number or a list of {channels} numbers, got {value!r}")
    if key == "std" and min(values) <= 0:
        raise DvisError(f"{where}: std must be positive, got {value!r}")
    if max(abs(v) for v in values) > 1:  # Caffe-style 0..255 values
        raise DvisError(f"{where}: {key} is in [0, 1] pixel units, got {value!r} (divide 0..255 values by 255)")
    return tuple(float(v) for v in values)


def _parse_layers(entries: Any, where: str) -> tuple[list[str], dict[str, str]]:
    if not isinstance(entries, list) or not entries:
        raise DvisError(f"{where}: layers must be a non-empty list of names or {{name: ..., display: ...}} entries")
    layers: list[str] = []
    display: dict[str, str] = {}
    for entry in entries:
        if isinstance(entry, dict):
            unknown = [k for k in entry if k not in _LAYER_KEYS]
            if unknown:
                raise DvisError(f"{where}: unknown layer key {unknown[0]!r} (did you mean {closest(str(unknown[0]), _LAYER_KEYS)!r}?)")
            name, shown = entry.get("name"), entry.get("display", entry.get("name"))
        else:
            name, shown = entry, entry
        # YAML reads the index names of an nn.Sequential (0, 1, ...) as ints
        name, shown = (str(v) if isinstance(v, int) and not isinstance(v, bool) else v for v in (name, shown))
        if not isinstance(name, str) or not isinstance(shown, str):
            raise DvisError(f"{where}: bad layer entry {entry!r}: give a name or {{name: features.0, display: conv1}}")
        if name in display:
            raise DvisError(f"{where}: layer {name!r} is listed twice")
        layers.append(name)
        display[name] = shown
    return layers, display


def parse_model_yaml(path: str | os.PathLike) -> ModelSpec:
    """Read and validate a ``model.yaml``; raises :class:`DvisError` with one line on any problem."""
    path = Path(path)
    if not path.is_file():
        raise DvisError(f"{path}: no such model.yaml")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise DvisError(f"{path}: invalid YAML ({' '.join(str(exc).split())})") from exc
    if not isinstance(data, dict):
        raise DvisError(f"{path}: expected a mapping of keys ({', '.join(MODEL_KEYS)})")
    unknown = [str(k) for k in data if k not in MODEL_KEYS]
    if unknown:
        hints = ", ".join(f"{k!r} (did you mean {closest(k, MODEL_KEYS)!r}?)" for k in unknown)
        raise DvisError(f"{path}: unknown key {hints}")
    where = str(path)
    for key in ("name", "description", "architecture", "unit_vis"):
        if key in data and not isinstance(data[key], str):
            raise DvisError(f"{where}: {key} must be a string, got {data[key]!r}")
    if "architecture" not in data:
        raise DvisError(f"{where}: architecture is required (a torchvision name such as resnet18, or module:factory)")
    channels = data.get("channels", 3)
    if channels not in (1, 3):
        raise DvisError(f"{where}: channels must be 3 or 1, got {channels!r}")
    args = data.get("args") or {}
    if not isinstance(args, dict):
        raise DvisError(f"{where}: args must be a mapping of keyword arguments for the architecture, got {args!r}")
    weights = data.get("weights")
    if weights is not None and not isinstance(weights, str):
        raise DvisError(f"{where}: weights must be a file name, a torchvision weights name or none, got {weights!r}")
    labels = data.get("labels")
    if labels is not None and not (isinstance(labels, str) or (isinstance(labels, list) and all(isinstance(v, str) for v in labels))):
        raise DvisError(f"{where}: labels must be a file name or a list of class names")
    checkpoints = data.get("checkpoints") or []
    if not (isinstance(checkpoints, list) and all(isinstance(v, str) for v in checkpoints)):
        raise DvisError(f"{where}: checkpoints must be a list of file names")
    layers, display = _parse_layers(data["layers"], where) if "layers" in data else (None, {})
    return ModelSpec(
        name=data.get("name", path.parent.name),
        architecture=data["architecture"],
        folder=path.parent.resolve(),
        args=args,
        weights=weights,
        input_size=_pair(data["input_size"], where) if "input_size" in data else None,
        channels=channels,
        mean=_per_channel(data["mean"], channels, "mean", where) if "mean" in data else None,
        std=_per_channel(data["std"], channels, "std", where) if "std" in data else None,
        labels=labels,
        layers=layers,
        display_names=display,
        unit_vis=data.get("unit_vis", "unit_vis"),
        checkpoints=checkpoints,
    )


def find_model_yaml(spec: str) -> Path | None:
    """The ``model.yaml`` a spec names, or None when it is a bare torchvision architecture name.

    A path to a folder or a yaml file wins; then a folder of that name in :func:`model_search_path`;
    then a torchvision name.
    """
    path = Path(spec).expanduser()
    if path.is_dir():
        return path / "model.yaml"
    if path.is_file():
        if path.suffix.lower() not in (".yaml", ".yml"):
            raise DvisError(f"{spec}: not a model folder or model.yaml")
        return path
    if any(sep in spec for sep in ("/", os.sep)) or spec.endswith((".yaml", ".yml")):
        raise DvisError(f"{spec}: no such model folder or model.yaml")
    for d in model_search_path():
        if (d / spec).is_dir():
            return d / spec / "model.yaml"
    if spec in torchvision_architectures() or is_timm(spec):
        return None
    known = sorted({p.name for d in model_search_path() if d.is_dir() for p in d.iterdir() if p.is_dir()})
    raise DvisError(
        f"unknown model {spec!r}{did_you_mean(spec, known + torchvision_architectures())}: no model folder of that "
        f"name in {os.pathsep.join(map(str, model_search_path()))} and not a torchvision architecture"
    )
