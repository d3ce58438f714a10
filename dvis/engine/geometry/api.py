"""The entry points: :func:`model_geometry` and :func:`traced_activations` of a model or net, and
the input size they trace at (:func:`input_size_of`)."""
from __future__ import annotations

import numpy as np
from torch import nn

from dvis.engine.geometry.tracer import _traced
from dvis.engine.geometry.types import LayerGeometry
from dvis.engine.net import as_net, expected_input
from dvis.errors import DvisError

#: Plain nets have no recorded input size; this is the usual ImageNet one.
DEFAULT_INPUT_SIZE = (224, 224)


def input_size_of(model_or_net, input_size=None) -> tuple[int, int]:
    """(h, w): ``input_size`` if given, else the LoadedModel's, else :data:`DEFAULT_INPUT_SIZE`."""
    from torch.nn.modules.utils import _pair

    if input_size is None and not isinstance(model_or_net, nn.Module):
        input_size = getattr(model_or_net, "input_size", None)
    if input_size is None:
        return DEFAULT_INPUT_SIZE
    size = _pair(input_size)
    if len(size) != 2 or not all(isinstance(s, (int, np.integer)) and s > 0 for s in size):
        raise DvisError(f"input_size must be a positive int or (h, w), got {input_size!r}")
    return int(size[0]), int(size[1])


def model_geometry(model_or_net, input_size=None, channels=None) -> dict[str, LayerGeometry]:
    """:class:`LayerGeometry` of every named module (except the root), in execution order.

    One traced forward at ``input_size`` (default: the LoadedModel's, else 224x224) with
    ``channels`` input channels (default: the model's or its first conv's), in eval mode (the
    net's train/eval flags are restored). Cached per net, input size and channels (geometry does
    not depend on the weights). Modules the eval forward never reaches come last with ``runs=False``.
    """
    net = as_net(model_or_net)
    size = input_size_of(model_or_net, input_size)
    if channels is None:
        channels = expected_input(model_or_net)[1] or 3
    return _traced(net, size, int(channels))[0]


def traced_activations(model_or_net, input_size=None, channels=None) -> dict[str, int]:
    """{activation name: calls} seen by the same traced forward as :func:`model_geometry`."""
    channels = channels if channels is not None else expected_input(model_or_net)[1] or 3
    return dict(_traced(as_net(model_or_net), input_size_of(model_or_net, input_size), int(channels))[1])

