"""dvis: deep visualization toolbox for PyTorch CNNs.

Load a model, capture every layer, compute receptive fields and exact back-projections
(Zeiler & Fergus deconvnet, guided backprop, gradient), and precompute per-unit images for the
toolbox window (``python run_toolbox.py``) and the ``dvis`` command.
"""
from dvis.activations import activations, forward_to
from dvis.backproject import VisResult, backproject, backproject_batch, forward_and_back
from dvis.crops import compute_crops
from dvis.display import back_filter
from dvis.errors import DvisError, LayerNotFoundError
from dvis.geometry import LayerGeometry, model_geometry, to_maps
from dvis.images import list_images, read_image
from dvis.layers import default_layers
from dvis.maxes import track_maxes
from dvis.model_loading import LoadedModel, load_model
from dvis.optimize import optimize_units
from dvis.precompute import precompute
from dvis.receptive_field import ReceptiveField, receptive_field
from dvis.tiling import grid_shape, tile
from dvis.unit_vis import UnitImages

__version__ = "0.1.0"

__all__ = [
    "DvisError",
    "LayerGeometry",
    "LayerNotFoundError",
    "LoadedModel",
    "ReceptiveField",
    "UnitImages",
    "VisResult",
    "activations",
    "back_filter",
    "backproject",
    "backproject_batch",
    "compute_crops",
    "default_layers",
    "forward_and_back",
    "forward_to",
    "grid_shape",
    "list_images",
    "load_model",
    "model_geometry",
    "optimize_units",
    "precompute",
    "read_image",
    "receptive_field",
    "tile",
    "to_maps",
    "track_maxes",
]
