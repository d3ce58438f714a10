"""Layer geometry of a whole net from one traced forward: shapes, layouts and receptive fields.

Usage::

    from dvis.engine.geometry import model_geometry, to_maps, extra_token_values
    geo = model_geometry(model)                   # {layer: LayerGeometry}, cached per net and input size
    g = geo["features.3.0.block.5"]               # ConvNeXt block internals: layout "hwc"
    g.layout, g.channels, g.grid, g.rf.box(y, x)  # "hwc", 96, (56, 56), input pixels of unit (y, x)
    maps = to_maps(acts[g.name], g)               # N x C x H x W whatever the layout (N x C for vectors)
    cls = extra_token_values(acts[name], geo[name])   # ViT class token(s): N x extra x C, else None
    [n for n, g in geo.items() if not g.runs]     # aux heads the eval forward never reaches
    g.global_context, g.reason                    # an SE gate / attention / global pool feeds it, and why

How it works: the net runs once on a shapes-only input under a ``TorchFunctionMode`` that gives
every tensor a descriptor (what each dimension holds, and the field of one position), and each
named module's output descriptor becomes its :class:`LayerGeometry`. The parts, one job each:

* :mod:`.api`: the entry points, :func:`model_geometry`, :func:`traced_activations`, :func:`input_size_of`;
* :mod:`.types`: what they return, :class:`LayerGeometry` and :class:`ReceptiveField`;
* :mod:`.tracer`: the traced forward (meta, fake or real tensors) and its cache per net;
* :mod:`.descriptors`: the descriptor algebra (atoms, fields, union, windows, regrouping);
* :mod:`.rules`: the field rule of each family of torch operations, and which call goes to which;
* :mod:`.layouts`: a descriptor's layout (chw, hwc, tokens, vector, partitioned), and a layer's
  values to and from N x C x H x W maps.
"""
from dvis.engine.geometry.api import DEFAULT_INPUT_SIZE, input_size_of, model_geometry, traced_activations
from dvis.engine.geometry.layouts import LAYOUTS, extra_token_values, from_maps, to_maps
from dvis.engine.geometry.types import INPUT_INDEPENDENT, LayerGeometry, ReceptiveField, whole_input

__all__ = [
    "DEFAULT_INPUT_SIZE", "INPUT_INDEPENDENT", "LAYOUTS", "LayerGeometry", "ReceptiveField", "extra_token_values",
    "from_maps", "input_size_of", "model_geometry", "to_maps", "traced_activations", "whole_input",
]
