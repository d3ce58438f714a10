"""dvis: deep visualization toolbox for PyTorch CNNs.

Load a model, capture every layer, compute receptive fields and exact back-projections
(Zeiler & Fergus deconvnet, guided backprop, gradient), and precompute per-unit images for the
toolbox window (``python run_toolbox.py``) and the ``dvis`` command.

The names below are imported on first use, so ``import dvis`` (and the ``dvis`` command before
it picks its OpenMP settings, see :mod:`dvis.runtime.openmp`) does not load PyTorch.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "DvisError": "dvis.errors",
    "LayerGeometry": "dvis.engine.geometry",
    "LayerNotFoundError": "dvis.errors",
    "LoadedModel": "dvis.models.loading",
    "ReceptiveField": "dvis.engine.receptive_field",
    "UnitImages": "dvis.formats.unit_vis",
    "VisResult": "dvis.engine.backproject",
    "activations": "dvis.engine.activations",
    "back_filter": "dvis.render.backfilter",
    "backproject": "dvis.engine.backproject",
    "backproject_batch": "dvis.engine.backproject",
    "compute_crops": "dvis.pipeline.crops",
    "default_layers": "dvis.engine.layers",
    "forward_and_back": "dvis.engine.backproject",
    "forward_to": "dvis.engine.activations",
    "grid_shape": "dvis.render.tiling",
    "list_images": "dvis.imaging.images",
    "load_model": "dvis.models.loading",
    "model_geometry": "dvis.engine.geometry",
    "optimize_units": "dvis.pipeline.optimize",
    "precompute": "dvis.pipeline.precompute",
    "read_image": "dvis.imaging.images",
    "receptive_field": "dvis.engine.receptive_field",
    "show": "dvis.notebook.widget",
    "show_image": "dvis.notebook.images",
    "tile": "dvis.render.tiling",
    "to_maps": "dvis.engine.geometry",
    "track_maxes": "dvis.pipeline.maxes",
    "unit_card": "dvis.notebook.cards",
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

