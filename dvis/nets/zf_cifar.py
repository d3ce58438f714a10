"""A Zeiler & Fergus style CNN scaled to 32x32 CIFAR-10 input.

ZFNet's shape (conv1..conv5, overlapping 3x3/2 max-pools after conv1, conv2 and conv5,
then fc6, fc7, fc8) with 3x3 kernels and stride 1 in conv1, because a 32x32 image has no
room for ZFNet's 7x7/2 first layer.  Training uses batch-norm after every conv; the shipped
net has it folded into the conv weights (:func:`dvis.models.fold.fold_batchnorm`) so the visualized
path is plain conv/ReLU/pool/fc and deconvnet projections stay exact.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn

#: Default channel widths of conv1..conv5 and the fc6/fc7 width.
WIDTHS = (64, 128, 192, 192, 128)
FC_WIDTH = 256


def _conv_block(name: str, cin: int, cout: int, batch_norm: bool) -> list[tuple[str, nn.Module]]:
    layers: list[tuple[str, nn.Module]] = [(f"conv{name}", nn.Conv2d(cin, cout, 3, padding=1, bias=not batch_norm))]
    if batch_norm:
        layers.append((f"bn{name}", nn.BatchNorm2d(cout)))
    layers.append((f"relu{name}", nn.ReLU(inplace=True)))
    return layers


def zf_cifar10(
    num_classes: int = 10,
    widths: tuple[int, int, int, int, int] = WIDTHS,
    fc_width: int = FC_WIDTH,
    batch_norm: bool = False,
    dropout: float = 0.5,
) -> nn.Sequential:
    """Build the ZF-style CIFAR-10 net; module names are conv1..conv5, pool1/2/5, fc6..fc8."""
    c1, c2, c3, c4, c5 = widths
    pool = lambda: nn.MaxPool2d(3, stride=2, padding=1)  # noqa: E731 - overlapping, as in ZFNet
    layers: list[tuple[str, nn.Module]] = []
    layers += _conv_block("1", 3, c1, batch_norm) + [("pool1", pool())]
    layers += _conv_block("2", c1, c2, batch_norm) + [("pool2", pool())]
    layers += _conv_block("3", c2, c3, batch_norm)
    layers += _conv_block("4", c3, c4, batch_norm)
    layers += _conv_block("5", c4, c5, batch_norm) + [("pool5", pool())]
    layers += [
        ("flatten", nn.Flatten()),
        ("fc6", nn.Linear(c5 * 4 * 4, fc_width)),
        ("relu6", nn.ReLU(inplace=True)),
        ("drop6", nn.Dropout(dropout)),
        ("fc7", nn.Linear(fc_width, fc_width)),
        ("relu7", nn.ReLU(inplace=True)),
        ("drop7", nn.Dropout(dropout)),
        ("fc8", nn.Linear(fc_width, num_classes)),
    ]
    return nn.Sequential(OrderedDict(layers))


def zf_cifar10_layers(net: nn.Sequential | None = None) -> list[str]:
    """The layers its ``model.yaml`` lists: convs and pools (chw), fc6..fc8 (vectors), fc8 last."""
    return ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"]
