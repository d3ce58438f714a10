"""Receptive fields of layer units in input pixels, read from the one-pass layer geometry.

:func:`receptive_field` is the public entry; the numbers come from :func:`dvis.engine.geometry.model_geometry`
(one traced forward for all layers, cached per net and input size). Units of vectors (fc layers) and
of layers behind a global operation (global pooling, attention) see the whole input: size = stride =
input size, padding 0. Layers behind a squeeze-and-excitation gate keep their local (conv-path)
field; ``model_geometry(...)[layer].global_context`` says a global gate also feeds them.
"""
from __future__ import annotations

from dvis.errors import DvisError
from dvis.engine.geometry import DEFAULT_INPUT_SIZE, ReceptiveField, input_size_of, model_geometry, whole_input
from dvis.engine.layers import check_layers

__all__ = ["DEFAULT_INPUT_SIZE", "ReceptiveField", "receptive_field", "whole_input"]


def receptive_field(model_or_net, layer: str, input_size=None) -> ReceptiveField:
    """Receptive field of the units of ``layer`` for inputs of ``input_size`` (h, w).

    ``input_size`` defaults to the LoadedModel's, or 224x224 for a plain module. Raises
    :class:`DvisError` for a layer the forward never reaches or whose output has no unit positions
    or vector units (the message says why).
    """
    check_layers(model_or_net, [layer])
    size = input_size_of(model_or_net, input_size)
    geom = model_geometry(model_or_net, size)[layer]
    if not geom.runs:
        raise DvisError(f"layer {layer!r} not reached in the forward pass: {geom.reason}")
    if geom.rf is None:
        raise DvisError(f"layer {layer!r} has no receptive field: {geom.reason}")
    return geom.rf
