"""Helpers shared by the experiments: one forward giving class logits plus chosen layers."""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import nn

from dvis.engine.activations import activations
from dvis.errors import DvisError
from dvis.engine.net import as_net
from dvis.engine.layers import check_layers, default_layers


def output_layer(model_or_net) -> str:
    """The layer whose output is the class scores: the model's last visualizable layer."""
    names = default_layers(model_or_net)
    if not names:
        raise DvisError("the model has no visualizable layers")
    return names[-1]


def logits_and_features(model_or_net, x: torch.Tensor, layers: Sequence[str]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Class logits (N x K) and the activations of ``layers`` from one forward pass."""
    out = output_layer(model_or_net)
    acts = activations(model_or_net, x, list(dict.fromkeys([*layers, out])))
    if acts[out].ndim != 2:
        raise DvisError(f"the last layer {out} gives {tuple(acts[out].shape[1:])} maps, not class scores; "
                        "list the classifier as the model's last layer")
    return acts[out], {name: acts[name] for name in layers}


def batch_slices(n: int, batch_size: int) -> Iterator[slice]:
    """Consecutive slices of at most ``batch_size`` covering ``range(n)``."""
    if batch_size < 1:
        raise DvisError(f"batch size must be positive, got {batch_size}")
    return (slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size))


def conv_layers(model_or_net) -> list[str]:
    """The visualizable layers that are ``nn.Conv2d``, in order; raises if there are none."""
    modules = dict(as_net(model_or_net).named_modules())
    convs = [n for n in default_layers(model_or_net) if isinstance(modules.get(n), nn.Conv2d)]
    if not convs:
        raise DvisError("the model has no Conv2d among its visualizable layers; pass the layer explicitly")
    return convs


def layer_widths(model_or_net, x: torch.Tensor, layers: Sequence[str]) -> dict[str, int]:
    """Units (channels) of each of ``layers`` (checked) on input ``x``."""
    feats = logits_and_features(model_or_net, x, check_layers(model_or_net, list(layers)))[1]
    return {k: v.shape[1] for k, v in feats.items()}
