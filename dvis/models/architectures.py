"""Resolving a model.yaml ``architecture``: a torchvision classification name, ``module:factory``
or ``file.py:factory`` (imported from the model folder), or ``timm:NAME`` (:mod:`dvis.models.timm`);
and building the net with its weights (:mod:`dvis.models.weights`).
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.util
import re
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import torchvision.models as tvm
from torch import nn

from dvis.errors import DvisError, did_you_mean, first_line
from dvis.models.spec import is_timm, torchvision_architectures
from dvis.models.weights import (NO_WEIGHTS, hub_cache_file, is_weights_name, load_error, load_state_dict,
                                load_state_dict_file, missing_weights, random_init_message, tensors_only, weights_enum,
                                weights_unavailable)


def check_architecture(architecture: str) -> None:
    """Raise :class:`DvisError` unless ``architecture`` is module:factory or a torchvision classification name."""
    if ":" not in architecture and architecture not in torchvision_architectures():
        raise DvisError(f"unknown architecture {architecture!r}{did_you_mean(architecture, torchvision_architectures())}: "
                        "use a torchvision classification model name or module:factory")


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
        raise DvisError(f"architecture {architecture!r}: cannot import {module_name} ({type(exc).__name__}: {first_line(exc)})") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise DvisError(f"architecture {architecture!r}: {module_name} has no callable {attr!r}")
    return factory


def _construct(spec, enum) -> nn.Module:
    with _on_sys_path(spec.folder):
        if ":" in spec.architecture:
            net = _import_factory(spec.architecture, spec.folder)(**spec.args)
        else:
            # torchvision's builder fetches the weights with WeightsEnum.get_state_dict(progress=True)
            # into torch's hub cache (or reads them there) and adapts the net's arguments to them.
            net = tvm.get_model(spec.architecture, weights=enum, **spec.args)
    if not isinstance(net, nn.Module):
        raise DvisError(f"architecture {spec.architecture!r} returned {type(net).__name__}, not a torch.nn.Module")
    return net


def build_net(spec, weights: str | None) -> tuple[nn.Module, str]:
    """Build the net of ``spec`` (a :class:`dvis.models.spec.ModelSpec`) on the CPU with ``weights``
    loaded; returns (net, weights source).

    ``weights`` is None/``none`` (random init, with a warning), a torchvision weights name (from
    torch's hub cache, downloaded there if missing), or a state_dict file (relative to the folder).
    ``timm:NAME`` architectures are built by :mod:`dvis.models.timm`.
    """
    if is_timm(spec.architecture):  # the one place architectures dispatch to timm
        from dvis.models import timm as timm_models

        return timm_models.build(spec)
    check_architecture(spec.architecture)
    enum = weights_enum(weights, spec.architecture) if weights and is_weights_name(weights) else None
    cached = hub_cache_file(enum) if enum is not None else None
    try:
        with tensors_only():
            net = _construct(spec, enum if ":" not in spec.architecture else None)
            if enum is not None and ":" in spec.architecture:
                load_state_dict(net, enum.get_state_dict(progress=True, check_hash=True), cached)
    except DvisError:
        raise
    except Exception as exc:  # user factories, downloads and torch.load raise anything; report one line
        if cached is not None and not cached.is_file() and isinstance(exc, (OSError, RuntimeError)):
            raise weights_unavailable(enum, cached, exc) from exc
        if cached is None or isinstance(exc, (TypeError, ValueError)):  # bad args, not a bad file
            raise DvisError(f"architecture {spec.architecture!r} failed to build ({type(exc).__name__}: {load_error(exc)})") from exc
        raise DvisError(f"{cached}: cannot load weights {enum} ({load_error(exc)}); delete the file to download it again") from exc
    if enum is not None:
        return net, f"{enum} ({cached})"
    if weights is None or weights.lower() == "none":
        warnings.warn(random_init_message(spec.name, weights), stacklevel=3)
        return net, NO_WEIGHTS
    file = (spec.folder or Path.cwd()) / weights
    if not file.is_file():
        raise missing_weights(spec.name, file, ", a torchvision weights name")
    load_state_dict_file(net, file)
    return net, str(file)
