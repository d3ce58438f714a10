"""Weights: torchvision weights names (fetched into torch's hub cache by
``WeightsEnum.get_state_dict``) and state_dict files, loaded with one-line errors naming the file."""
from __future__ import annotations

import contextlib
import os
import pickle
import re
from collections.abc import Iterator
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from dvis.errors import DvisError, did_you_mean, first_line

#: What a LoadedModel's ``weights_source`` says for random init.
NO_WEIGHTS = "none (random init)"
_WEIGHTS_ENUM = re.compile(r"^[A-Za-z]\w*_Weights\.\w+$")


def random_init_message(model: str, weights: str | None) -> str:
    """The warning for a net left at random init: ``weights`` None (nothing given) or ``none`` (asked for)."""
    if weights is None:
        return (f"model {model}: no weights given, the net has random init (give --weights FILE or a "
                f"torchvision weights name; --weights none to ask for random init)")
    return f"model {model}: weights none, the net has random init"


def missing_weights(model: str, file: Path, alternatives: str = "") -> DvisError:
    """The error for a weights file that does not exist; names the ways out (``--weights none`` among them)."""
    return DvisError(f"model {model}: weights file {file} not found; give --weights with another file"
                     f"{alternatives}, or --weights none for random init")


def is_weights_name(text: str) -> bool:
    """Whether ``text`` names torchvision weights (``ResNet18_Weights.IMAGENET1K_V1``)."""
    return bool(_WEIGHTS_ENUM.match(text))


def hub_cache_file(weights: tvm.WeightsEnum) -> Path:
    """Where torch's hub cache keeps (or will keep) ``weights``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(weights.url.split("?")[0])


def weights_unavailable(weights: tvm.WeightsEnum, path: Path, exc: BaseException) -> DvisError:
    """The error for weights that are neither cached nor downloadable."""
    reason = " ".join(str(getattr(exc, "reason", exc)).split()) or type(exc).__name__
    return DvisError(f"weights {weights} not available: {path} is missing and downloading {weights.url} failed "
                     f"({reason}); run once with internet access or put the file there")


def weights_enum(name: str, architecture: str) -> tvm.WeightsEnum:
    try:
        weights = tvm.get_weight(name)
    except (ValueError, KeyError, AttributeError) as exc:
        enums = [str(w) for arch in tvm.list_models(module=tvm) for w in tvm.get_model_weights(arch)]
        raise DvisError(f"unknown torchvision weights {name!r}{did_you_mean(name, enums)}") from exc
    if ":" not in architecture and weights not in list(tvm.get_model_weights(architecture)):
        raise DvisError(f"weights {name} do not belong to architecture {architecture!r}; use one of "
                        f"{', '.join(str(w) for w in tvm.get_model_weights(architecture))}")
    return weights


def load_state_dict(net: nn.Module, obj, where: str | os.PathLike) -> None:
    """Load a state_dict (plain, or under a ``state_dict``/``model`` key) into ``net``; raises
    :class:`DvisError` naming ``where`` when it does not fit."""
    path = where
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


#: Lines of torch's weights_only refusal that give advice rather than the reason.
_ADVICE = re.compile(r"weights_only|torch\.load|trusted source|file an issue|documentation|safe_globals", re.I)


def refused_pickle(exc: BaseException) -> str | None:
    """The words for torch's refusal (``weights_only=True``) of a pickle that is not a plain
    state_dict, or None when ``exc`` is another error. torch's own text advises loading the file
    again with ``weights_only=False``, which runs whatever code the file names: that advice is never
    repeated, only the reason (the global the file refers to, else the loader's own complaint)."""
    text = str(exc)
    if not (isinstance(exc, pickle.UnpicklingError) and "Weights only load failed" in text):
        return None  # e.g. "invalid load key": a broken file, not a refused one
    found = re.search(r"(?:GLOBAL|Unsupported class) ([\w.]+)", text)
    if found:
        return (f"refused for safety: not a plain state_dict (it refers to {found.group(1)}; "
                "dvis loads tensors only, never code)")
    reason = next((line.strip(" :") for line in text.splitlines()[1:] if line.strip() and not _ADVICE.search(line)),
                  "it holds more than tensors")
    return f"refused for safety: not a plain state_dict of tensors ({reason})"


@contextlib.contextmanager
def tensors_only() -> Iterator[None]:
    """Every ``torch.load`` in the block loads tensors only, never code: torchvision's hub loader
    (``WeightsEnum.get_state_dict``) asks ``weights_only=False``, which torch's
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` overrides, so a tampered file in the hub cache is refused."""
    name = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def load_error(exc: BaseException) -> str:
    """One line for an error raised while building a net or loading its weights: the refusal's
    words (:func:`refused_pickle`) for torch's weights_only refusal, else the error's first line."""
    return refused_pickle(exc) or first_line(exc)


def load_state_dict_file(net: nn.Module, path: str | os.PathLike) -> None:
    """Load a state_dict file into ``net`` (see :func:`load_state_dict`).

    Raises :class:`DvisError` naming the file when it is unreadable, refused for safety
    (:func:`refused_pickle`) or does not fit the net.
    """
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch.load raises many types on corrupt files; report one line naming the file
        refusal = refused_pickle(exc)
        raise DvisError(f"{path}: {refusal or f'not a readable state_dict file ({first_line(exc)})'}") from exc
    load_state_dict(net, obj, path)
