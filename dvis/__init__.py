"""dvis: deep visualization toolbox for PyTorch CNNs.

Load a model, capture every layer, compute receptive fields and exact back-projections
(Zeiler & Fergus deconvnet, guided backprop, gradient), and precompute per-unit images for the
toolbox window (``python run_toolbox.py``) and the ``dvis`` command.

The names below are imported on first use, so ``import dvis`` (and the ``dvis`` command before
it picks its OpenMP settings, see :mod:`dvis.openmp`) does not load PyTorch.
"""
from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "DvisError": "dvis.errors",
    "LayerGeometry": "dvis.geometry",
    "LayerNotFoundError": "dvis.errors",
    "LoadedModel": "dvis.model_loading",
    "ReceptiveField": "dvis.receptive_field",
    "UnitImages": "dvis.unit_vis",
    "VisResult": "dvis.backproject",
    "activations": "dvis.activations",
    "back_filter": "dvis.display",
    "backproject": "dvis.backproject",
    "backproject_batch": "dvis.backproject",
    "compute_crops": "dvis.crops",
    "default_layers": "dvis.layers",
    "forward_and_back": "dvis.backproject",
    "forward_to": "dvis.activations",
    "grid_shape": "dvis.tiling",
    "list_images": "dvis.images",
    "load_model": "dvis.model_loading",
    "model_geometry": "dvis.geometry",
    "optimize_units": "dvis.optimize",
    "precompute": "dvis.precompute",
    "read_image": "dvis.images",
    "receptive_field": "dvis.receptive_field",
    "tile": "dvis.tiling",
    "to_maps": "dvis.geometry",
    "track_maxes": "dvis.maxes",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dvis' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


class _Package(types.ModuleType):
    """``dvis.backproject`` stays the function when its module ``dvis.backproject`` is imported:
    the import system binds a new submodule on its package, which would hide the export."""

    def __setattr__(self, name: str, value) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package
