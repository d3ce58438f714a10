"""Load a model folder (``model.yaml``), a ``model.yaml`` file or a bare torchvision name.

The ``model.yaml`` format is documented in ``models/README.md``. :func:`load_model` returns a
:class:`LoadedModel`: the net in eval mode on its device plus everything needed to feed and
display it (layers, display names, input size, normalization, labels, folders).
"""
from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.util
import os
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Callable, Iterable, Iterator
from typing import Any
from urllib.parse import urlparse

import cv2
import numpy as np
import torch
import torchvision.models as tvm
import yaml
from torch import nn

from dvis.errors import DvisError, LayerNotFoundError
from dvis.images import to_rgb
from dvis.layers import check_layers, default_layers
from dvis.paths import model_search_path, unit_vis_read_dirs

#: The model :func:`load_model` loads when given no spec.
DEFAULT_MODEL = "zf-cifar10"
#: Keys a ``model.yaml`` may have.
MODEL_KEYS = (
    "name", "description", "architecture", "args", "weights", "input_size", "channels",
    "mean", "std", "labels", "layers", "unit_vis", "checkpoints",
)
_LAYER_KEYS = ("name", "display")
_WEIGHTS_ENUM = re.compile(r"^[A-Za-z]\w*_Weights\.\w+$")
_NO_WEIGHTS = "none (random init)"


# ---------------------------------------------------------------------------- model.yaml


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


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _closest(word: str, choices: Iterable[str]) -> str:
    return difflib.get_close_matches(word, list(choices), n=1, cutoff=0.0)[0]


def _did_you_mean(word: str, choices: list[str], cutoff: float = 0.6) -> str:
    close = difflib.get_close_matches(word, list(dict.fromkeys(choices)), n=3, cutoff=cutoff)
    return f" (did you mean {', '.join(close)}?)" if close else ""


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
                raise DvisError(f"{where}: unknown layer key {unknown[0]!r} (did you mean {_closest(str(unknown[0]), _LAYER_KEYS)!r}?)")
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
        hints = ", ".join(f"{k!r} (did you mean {_closest(k, MODEL_KEYS)!r}?)" for k in unknown)
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


# ---------------------------------------------------------------------------- finding models


def torchvision_architectures() -> list[str]:
    """Names of torchvision's classification models (``alexnet``, ``vgg16``, ``resnet18``, ...)."""
    return tvm.list_models(module=tvm)


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
    if spec in torchvision_architectures() or spec.startswith("timm:"):
        return None
    known = sorted({p.name for d in model_search_path() if d.is_dir() for p in d.iterdir() if p.is_dir()})
    raise DvisError(
        f"unknown model {spec!r}{_did_you_mean(spec, known + torchvision_architectures())}: no model folder of that "
        f"name in {os.pathsep.join(map(str, model_search_path()))} and not a torchvision architecture"
    )


# ---------------------------------------------------------------------------- building nets


def resolve_device(device: str | torch.device) -> torch.device:
    """Parse a device name; raises :class:`DvisError` when it is unknown or not available here."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DvisError(f"unknown device {device!r} (use cpu, cuda or cuda:N)") from exc
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DvisError(f"device {device!r} requested but CUDA is not available on this machine")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DvisError(f"device {device!r} requested but only {torch.cuda.device_count()} CUDA device(s) exist")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise DvisError(f"device {device!r} requested but MPS is not available on this machine")
    return dev


@contextlib.contextmanager
def _on_sys_path(folder: Path | None) -> Iterator[None]:
    # The model folder is importable only while its code is imported and built, so model
    # folders with same-named modules do not shadow each other.
    if folder is None:
        yield
        return
    sys.path.insert(0, str(folder))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(folder))


def _import_factory(architecture: str, folder: Path | None) -> Callable[..., nn.Module]:
    module_name, _, attr = architecture.rpartition(":")
    if not module_name or not attr:
        raise DvisError(f"bad architecture {architecture!r}: use a torchvision name or module:factory / file.py:factory")
    try:
        if module_name.endswith(".py"):
            file = (folder or Path.cwd()) / module_name
            if not file.is_file():
                raise DvisError(f"architecture {architecture!r}: no file {file}")
            unique = re.sub(r"\W", "_", f"dvis_model_{file.parent.name}_{file.stem}")
            spec = importlib.util.spec_from_file_location(unique, file)
            module = importlib.util.module_from_spec(spec)
            sys.modules[unique] = module  # dataclasses and pickling look the module up by name
            spec.loader.exec_module(module)
        else:
            module = importlib.import_module(module_name)
    except DvisError:
        raise
    except Exception as exc:  # user code: any error becomes one line naming the module
        raise DvisError(f"architecture {architecture!r}: cannot import {module_name} ({type(exc).__name__}: {_first_line(exc)})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise DvisError(f"architecture {architecture!r}: {module_name} has no callable {attr!r}")
    return factory


def _cached_weights_file(weights: tvm.WeightsEnum) -> Path:
    """Path of the weights in torch's hub cache, downloaded there (torch's progress bar) if missing."""
    path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(weights.url).path)
    if path.is_file():
        return path
    match = torch.hub.HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # As torchvision's own check_hash=True: the hash prefix in the file name is checked on download.
        torch.hub.download_url_to_file(weights.url, str(path), match.group(1) if match else None, progress=True)
    except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError; hash mismatch a RuntimeError
        reason = " ".join(str(getattr(exc, "reason", exc)).split()) or type(exc).__name__
        raise DvisError(
            f"weights {weights} not available: {path} is missing and downloading {weights.url} failed ({reason}); "
            f"run once with internet access or put the file there"
        ) from exc
    return path


def _weights_enum(name: str, architecture: str) -> tvm.WeightsEnum:
    try:
        weights = tvm.get_weight(name)
    except (ValueError, KeyError, AttributeError) as exc:
        enums = [str(w) for arch in torchvision_architectures() for w in tvm.get_model_weights(arch)]
        raise DvisError(f"unknown torchvision weights {name!r}{_did_you_mean(name, enums)}") from exc
    if ":" not in architecture and weights not in list(tvm.get_model_weights(architecture)):
        raise DvisError(f"weights {name} do not belong to architecture {architecture!r}; use one of "
                        f"{', '.join(str(w) for w in tvm.get_model_weights(architecture))}")
    return weights


def load_state_dict_file(net: nn.Module, path: str | os.PathLike) -> None:
    """Load a state_dict file (plain, or under a ``state_dict``/``model`` key) into ``net``.

    Raises :class:`DvisError` naming the file when it is unreadable or does not fit the net.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on corrupt files; report one line naming the file
        raise DvisError(f"{path}: not a readable state_dict file ({_first_line(exc)})") from exc
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise DvisError(f"{path}: not a state_dict (expected a dict of tensors)")
    if obj and all(k.startswith("module.") for k in obj):  # saved from nn.DataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    own = net.state_dict()
    problems = [
        f"{label} {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
        for label, keys in (
            ("missing", [k for k in own if k not in obj]),
            ("unexpected", [k for k in obj if k not in own]),
            ("shape mismatch in", [k for k in own if k in obj and obj[k].shape != own[k].shape]),
        )
        if keys
    ]
    if problems:
        raise DvisError(f"{path}: weights do not fit the net: {'; '.join(problems)}")
    net.load_state_dict(obj)


def check_architecture(architecture: str) -> None:
    """Raise :class:`DvisError` unless ``architecture`` is module:factory or a torchvision classification name."""
    if ":" not in architecture and architecture not in torchvision_architectures():
        raise DvisError(f"unknown architecture {architecture!r}{_did_you_mean(architecture, torchvision_architectures())}: "
                        "use a torchvision classification model name or module:factory")


def _construct(spec: ModelSpec, enum: tvm.WeightsEnum | None) -> nn.Module:
    with _on_sys_path(spec.folder):
        if ":" in spec.architecture:
            net = _import_factory(spec.architecture, spec.folder)(**spec.args)
        else:
            net = tvm.get_model(spec.architecture, weights=enum, **spec.args)  # torchvision loads its cache
    if not isinstance(net, nn.Module):
        raise DvisError(f"architecture {spec.architecture!r} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def build_net(spec: ModelSpec, weights: str | None) -> tuple[nn.Module, str]:
    """Build the net of ``spec`` on the CPU with ``weights`` loaded; returns (net, weights source).

    ``weights`` is None/``none`` (random init, with a warning), a torchvision weights name (from
    torch's hub cache, downloaded there if missing), or a state_dict file (relative to the folder).
    """
    check_architecture(spec.architecture)
    enum = _weights_enum(weights, spec.architecture) if weights and _WEIGHTS_ENUM.match(weights) else None
    cached = _cached_weights_file(enum) if enum is not None else None
    try:
        net = _construct(spec, enum if ":" not in spec.architecture else None)
    except DvisError:
        raise
    except Exception as exc:  # user factories and torch.load raise anything; report one line
        if cached is None or isinstance(exc, (TypeError, ValueError)):  # bad args, not a bad file
            raise DvisError(f"architecture {spec.architecture!r} failed to build ({type(exc).__name__}: {_first_line(exc)})") from exc
        raise DvisError(f"{cached}: cannot load weights {enum} ({_first_line(exc)}); delete the file to download it again") from exc
    if enum is not None:
        if ":" in spec.architecture:
            load_state_dict_file(net, cached)
        return net, f"{enum} ({cached})"
    if weights is None or weights.lower() == "none":
        warnings.warn(f"model {spec.name}: no weights given, the net has random init", stacklevel=3)
        return net, _NO_WEIGHTS
    file = (spec.folder or Path.cwd()) / weights
    if not file.is_file():
        raise DvisError(f"model {spec.name}: weights file {file} not found")
    load_state_dict_file(net, file)
    return net, str(file)


# ---------------------------------------------------------------------------- pre/deprocessing


def prepare_image(img: np.ndarray, input_size: tuple[int, int], channels: int) -> np.ndarray:
    """HxW / HxWx3 / HxWx4 uint8 of any size -> input_size HxWxC uint8 (grayscale when ``channels`` is 1)."""
    rgb = to_rgb(img)
    h, w = input_size
    shrink = rgb.shape[0] >= h and rgb.shape[1] >= w
    # Area averaging avoids aliasing when shrinking; bilinear is smoother when enlarging.
    resized = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if channels == 1:
        return cv2.cvtColor(resized, cv2.COLOR_RGB2GRAY)[:, :, None]
    return resized


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """NxCxHxW in [0, 1] -> (x - mean) / std with per-channel ``mean``/``std`` (C-vectors)."""
    if x.ndim != 4 or x.shape[1] != mean.numel():
        raise DvisError(f"expected an Nx{mean.numel()}xHxW batch, got shape {tuple(x.shape)}")
    return (x - mean.to(x).view(1, -1, 1, 1)) / std.to(x).view(1, -1, 1, 1)


def deprocess(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> np.ndarray:
    """1xCxHxW or CxHxW normalized tensor -> HxWx3 uint8 (1-channel images repeated to gray RGB)."""
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise DvisError(f"deprocess takes one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.ndim != 3 or x.shape[0] != mean.numel():
        raise DvisError(f"expected a {mean.numel()}xHxW image tensor, got shape {tuple(x.shape)}")
    x = x.detach().float().cpu() * std.view(-1, 1, 1) + mean.view(-1, 1, 1)
    img = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else np.ascontiguousarray(img)


# ---------------------------------------------------------------------------- LoadedModel


@dataclass(repr=False)
class LoadedModel:
    """A net ready to visualize; see docs/architecture.md for the contract."""

    name: str
    net: nn.Module
    layers: list[str]
    display_names: dict[str, str]
    input_size: tuple[int, int]
    channels: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    labels: list[str]
    folder: Path | None
    unit_vis_dir: Path | None
    checkpoints: list[Path]
    device: torch.device
    weights_source: str = _NO_WEIGHTS
    #: Unit image folders in order of preference (computed before shipped); unit_vis_dir is the first.
    unit_vis_dirs: list[Path] = field(default_factory=list)
    #: The model folder's own unit images (what a model folder ships).
    shipped_unit_vis_dir: Path | None = None
    _mean_t: torch.Tensor = field(init=False)
    _std_t: torch.Tensor = field(init=False)

    def __post_init__(self) -> None:
        self._mean_t = torch.tensor(self.mean, dtype=torch.float32)
        self._std_t = torch.tensor(self.std, dtype=torch.float32)

    def __repr__(self) -> str:
        return (f"LoadedModel(name={self.name!r}, input_size={self.input_size}, channels={self.channels}, "
                f"layers={len(self.layers)}, labels={len(self.labels)}, device={self.device}, weights={self.weights_source!r})")

    def preprocess(self, img: np.ndarray) -> torch.Tensor:
        """HxW / HxWx3 / HxWx4 uint8 image of any size -> normalized 1xCxHxW tensor on the device."""
        arr = prepare_image(img, self.input_size, self.channels)
        x = torch.from_numpy(arr).permute(2, 0, 1)[None].to(self.device, torch.float32) / 255.0
        return self.normalize(x)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """NxCxHxW float in [0, 1], already resized -> normalized (batched path for pipelines)."""
        return normalize(x, self._mean_t, self._std_t)

    def deprocess(self, x: torch.Tensor) -> np.ndarray:
        """1xCxHxW or CxHxW normalized tensor -> displayable HxWx3 uint8."""
        return deprocess(x, self._mean_t, self._std_t)

    def load_weights(self, path: str | os.PathLike) -> None:
        """Load a state_dict file (e.g. a training checkpoint) into ``.net``."""
        load_state_dict_file(self.net, path)
        self.weights_source = str(path)


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
        keep = _WEIGHTS_ENUM.match(weights) or weights.lower() in ("none", "pretrained")
        model_spec.weights = weights if keep else str(Path(weights).resolve())
    if model_spec.architecture.startswith("timm:"):  # timm nets: dvis/timm_models.py
        from dvis import timm_models

        net, source = timm_models.build(model_spec)
        labels = _read_labels(model_spec) or timm_models.labels(net)
    else:
        model_spec = _with_defaults(model_spec)
        labels = _read_labels(model_spec)
        net, source = build_net(model_spec, model_spec.weights)
    if model_spec.layers is None:
        layers, display = default_layers(net), {}
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
