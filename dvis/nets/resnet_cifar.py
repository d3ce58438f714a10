"""A residual CNN for 32x32 CIFAR images, built of torchvision's own ``BasicBlock``.

The CIFAR ResNet of He et al. (2016): a 3x3 stride-1 stem (a 32x32 image has no room for
ImageNet's 7x7/2 convolution and max-pool), stages of torchvision ``BasicBlock``s (conv-BN-ReLU-
conv-BN plus the residual add), each later stage halving the grid with a 1x1/2 projection, then
global average pooling and one linear classifier. Module names follow torchvision's ``ResNet``
(``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``avgpool``, ``fc``), so dvis shows what a user's
torchvision ResNet shows. ``blocks=(3, 3, 3), widths=(16, 32, 64)`` is ResNet-20;
``blocks=(2, 2, 2, 2), widths=(64, 128, 256, 512)`` is torchvision's ResNet-18 with the CIFAR stem.
Batch norm stays as trained (not folded).
"""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, conv1x1

#: Default blocks per stage and stage widths: ResNet-20's depth at twice its width.
BLOCKS = (3, 3, 3)
WIDTHS = (32, 64, 128)


class CifarResNet(nn.Module):
    """torchvision's ``ResNet`` forward with a 3x3 stride-1 stem and any number of stages."""

    def __init__(self, blocks: tuple[int, ...], widths: tuple[int, ...], num_classes: int) -> None:
        super().__init__()
        if len(blocks) != len(widths) or not blocks:
            raise ValueError(f"blocks {blocks} and widths {widths} must name the same stages")
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        cin = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths), 1):
            stride = 1 if i == 1 else 2
            down = None
            if stride != 1 or cin != width:
                down = nn.Sequential(conv1x1(cin, width, stride), nn.BatchNorm2d(width))
            stage = [BasicBlock(cin, width, stride, down)] + [BasicBlock(width, width) for _ in range(n - 1)]
            self.add_module(f"layer{i}", nn.Sequential(*stage))
            cin = width
        self.num_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():  # torchvision ResNet's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for m in self.modules():  # zero-init the last BN of each residual branch, as zero_init_residual does
            if isinstance(m, BasicBlock):
                nn.init.zeros_(m.bn2.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        for i in range(1, self.num_stages + 1):
            x = getattr(self, f"layer{i}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet_cifar(num_classes: int = 10, blocks: tuple[int, ...] = BLOCKS, widths: tuple[int, ...] = WIDTHS) -> CifarResNet:
    """Build the CIFAR ResNet (``blocks`` BasicBlocks per stage, ``widths`` channels per stage)."""
    return CifarResNet(tuple(blocks), tuple(widths), num_classes)


def resnet_cifar_layers(net: CifarResNet) -> list[str]:
    """The layers its ``model.yaml`` lists: the stem, each block's inner conv and its output (chw),
    each stage, the pooled vector and the classifier output last."""
    layers = ["conv1", "relu"]
    for i in range(1, net.num_stages + 1):
        stage = getattr(net, f"layer{i}")
        last = len(stage) - 1
        layers += [f"layer{i}.0.conv1", f"layer{i}.0", f"layer{i}.{last}.conv2", f"layer{i}"]
    return list(dict.fromkeys(layers)) + ["avgpool", "fc"]
