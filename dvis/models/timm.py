"""timm models: ``architecture: timm:NAME`` in model.yaml, ``--model timm:NAME`` on the command line.

timm (``pip install dvis[timm]``) is optional: it is imported only when such a name is loaded, and a
missing timm is one line saying how to install it. ``NAME`` is any name ``timm.create_model`` takes,
with or without a pretrained tag (``resnet50``, ``resnet50.a1_in1k``). Weights:

* ``pretrained``: timm's own pretrained loading (downloads into the Hugging Face / torch hub cache
  once, then works offline from there);
* ``none`` or absent: random init (with a warning, as for a bare torchvision name);
* a state_dict file, relative to the model folder (or the current folder for ``--weights``).

Input size, mean and std come from the model's ``pretrained_cfg`` through
``timm.data.resolve_data_config`` unless model.yaml gives them; ImageNet class names come from timm's
dataset info when the head has the right number of classes. ``args`` go to ``timm.create_model``
(``num_classes``, ``drop_path_rate``, ...); ``in_chans`` defaults to the model's ``channels``.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from types import ModuleType

from torch import nn

from dvis.errors import DvisError, first_line, suggestions
from dvis.models.spec import TIMM_PREFIX, ModelSpec

#: The ``weights:`` value that asks for timm's pretrained weights.
PRETRAINED = "pretrained"
INSTALL_HINT = "pip install dvis[timm]"


def import_timm(architecture: str = TIMM_PREFIX + "NAME") -> ModuleType:
    """The ``timm`` module; a :class:`DvisError` saying how to install it when it is missing."""
    try:
        import timm
        import timm.data
    except ImportError as exc:
        raise DvisError(f"architecture {architecture!r} needs the timm package: {INSTALL_HINT}") from exc
    return timm


def model_name(architecture: str) -> str:
    """The timm model name of ``timm:NAME``, checked against timm's registry (with suggestions)."""
    timm = import_timm(architecture)
    name = architecture[len(TIMM_PREFIX):]
    if not name or not timm.is_model(name):
        base = name.split(".", 1)[0]
        close = suggestions(base, timm.list_models())
        hint = f" (did you mean {', '.join(TIMM_PREFIX + c for c in close)}?)" if close else ""
        raise DvisError(f"unknown timm model {name!r}{hint}: see timm.list_models()")
    return name


def build(spec: ModelSpec) -> tuple[nn.Module, str]:
    """Build ``spec``'s timm net on the CPU with its weights; returns (net, weights source).

    Also fills ``spec.input_size``, ``spec.mean`` and ``spec.std`` from timm's data config where
    model.yaml left them out.
    """
    from dvis.models.weights import load_state_dict_file, missing_weights, random_init_message

    name = model_name(spec.architecture)
    timm = import_timm(spec.architecture)
    weights = spec.weights
    pretrained = weights is not None and weights.lower() == PRETRAINED
    args = {"in_chans": spec.channels, **spec.args}
    try:
        net = timm.create_model(name, pretrained=pretrained, **args)
    except Exception as exc:  # bad args, a failed download, a model without weights: one line
        if pretrained:
            raise DvisError(
                f"{spec.architecture}: timm's pretrained weights are not available ({type(exc).__name__}: {first_line(exc)}); run once "
                f"with internet access (timm caches them) or use weights: none or a state_dict file") from exc
        raise DvisError(f"architecture {spec.architecture!r} failed to build ({type(exc).__name__}: {first_line(exc)})") from exc
    _fill_data_config(spec, timm.data.resolve_data_config({}, model=net))
    if pretrained:
        cfg = getattr(net, "pretrained_cfg", None) or {}
        tag = cfg.get("hf_hub_id") or cfg.get("url") or name
        return net, f"timm pretrained ({tag})"
    if weights is None or weights.lower() == "none":
        warnings.warn(random_init_message(spec.name, weights), stacklevel=3)
        return net, "none (random init)"
    file = (spec.folder or Path.cwd()) / weights
    if not file.is_file():
        raise missing_weights(spec.name, file, f", {PRETRAINED}")
    load_state_dict_file(net, file)
    return net, str(file)


def _fill_data_config(spec: ModelSpec, cfg: dict) -> None:
    def per_channel(values) -> tuple[float, ...]:
        values = tuple(float(v) for v in values)
        return values if len(values) == spec.channels else (sum(values) / len(values),) * spec.channels

    spec.input_size = spec.input_size or tuple(int(v) for v in cfg["input_size"][1:])
    spec.mean = spec.mean or per_channel(cfg["mean"])
    spec.std = spec.std or per_channel(cfg["std"])


def labels(net: nn.Module) -> list[str]:
    """Class names of a timm net with an ImageNet head (short names), else []."""
    timm = import_timm()
    subset = timm.data.infer_imagenet_subset(net)
    if not subset:
        return []
    return [d.split(",", 1)[0] for d in timm.data.ImageNetInfo(subset).label_descriptions()]
