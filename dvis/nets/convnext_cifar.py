"""A ConvNeXt for 32x32 CIFAR images: torchvision's own ``ConvNeXt`` with a stem suited to 32 px.

torchvision's ``ConvNeXt`` (its ``CNBlock``: 7x7 depthwise conv, ``Permute`` to channels-last,
LayerNorm, Linear 4x, GELU, Linear, layer scale, ``Permute`` back, stochastic depth and the residual
add; LayerNorm2d + 2x2/2 conv between stages) built from ``CNBlockConfig``s, with the 4x4/4 patchify
stem replaced by a ``stem`` x ``stem`` one (2: a 32x32 image becomes 16x16, then 8x8 and 4x4 over three
stages). Module names are torchvision's (``features.1.0.block.2`` is a block's LayerNorm on its
channels-last ``hwc`` values), so dvis shows what a user's torchvision ConvNeXt shows. LayerNorm and
GELU stay as trained.
"""
from __future__ import annotations

from functools import partial

from torch import nn
from torchvision.models.convnext import CNBlockConfig, ConvNeXt, LayerNorm2d
from torchvision.ops.misc import Conv2dNormActivation

#: Default stage widths and blocks per stage, and the stem's patch size.
WIDTHS = (64, 128, 256)
DEPTHS = (2, 2, 4)
STEM = 2


def convnext_cifar(
    num_classes: int = 10,
    widths: tuple[int, ...] = WIDTHS,
    depths: tuple[int, ...] = DEPTHS,
    stem: int = STEM,
    stochastic_depth_prob: float = 0.1,
    layer_scale: float = 1e-6,
) -> ConvNeXt:
    """Build torchvision's ConvNeXt with ``widths``/``depths`` per stage and a ``stem``-pixel patchify stem."""
    widths, depths = tuple(widths), tuple(depths)
    if len(widths) != len(depths) or not widths:
        raise ValueError(f"widths {widths} and depths {depths} must name the same stages")
    setting = [CNBlockConfig(w, nxt, d) for w, nxt, d in zip(widths, widths[1:] + (None,), depths)]
    net = ConvNeXt(setting, stochastic_depth_prob=stochastic_depth_prob, layer_scale=layer_scale, num_classes=num_classes)
    net.features[0] = Conv2dNormActivation(3, widths[0], kernel_size=stem, stride=stem, padding=0,
                                           norm_layer=partial(LayerNorm2d, eps=1e-6), activation_layer=None, bias=True)
    nn.init.trunc_normal_(net.features[0][0].weight, std=0.02)  # as ConvNeXt initialises its convs
    nn.init.zeros_(net.features[0][0].bias)
    return net


def convnext_cifar_layers(net: ConvNeXt) -> list[str]:
    """The layers its ``model.yaml`` lists: the stem and each stage (chw), the first block's depthwise
    conv (chw), LayerNorm and GELU (hwc, channels-last) in each stage, the pooled map, the flattened
    vector and the classifier output last."""
    layers = ["features.0"]
    for i in range(1, len(net.features), 2):  # stages sit at odd indices, downsamplings between them
        layers += [f"features.{i}.0.block.0", f"features.{i}.0.block.2", f"features.{i}.0.block.4", f"features.{i}"]
    return layers + ["avgpool", "classifier.1", "classifier.2"]
