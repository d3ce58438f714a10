"""A user's own small CNN, loaded by dvis through ``architecture: tinynet.py:build`` in model.yaml.

dvis imports this file from the model folder (the folder is on ``sys.path`` while it is imported,
so sibling modules can be imported too) and calls ``build(**args)`` with model.yaml's ``args``.
"""
from collections import OrderedDict

from torch import nn


def build(num_classes: int = 4, width: int = 8) -> nn.Module:
    """Grayscale 48x64 input -> conv1/pool1/conv2/pool2 -> fc3 class scores."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(1, width, 5, padding=2)),
        ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(width, 2 * width, 3, padding=1)),
        ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc3", nn.Linear(2 * width * 12 * 16, num_classes)),
    ]))
