"""Fold batch-norm into the preceding convolution so the net is plain conv/ReLU/pool/fc."""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """Return a new conv equal to ``bn(conv(x))`` in eval mode."""
    scale = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(bn.running_mean)
    fused = nn.Conv2d(
        conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
        conv.dilation, conv.groups, bias=True, padding_mode=conv.padding_mode,
    )
    with torch.no_grad():
        fused.weight.copy_(conv.weight.detach() * scale.reshape(-1, 1, 1, 1))
        fused.bias.copy_((bias - bn.running_mean) * scale + bn.bias.detach())
    return fused


def fold_batchnorm(net: nn.Sequential) -> nn.Sequential:
    """Fold every Conv2d directly followed by BatchNorm2d in a Sequential; other modules are kept."""
    items = list(net.named_children())
    out: list[tuple[str, nn.Module]] = []
    i = 0
    while i < len(items):
        name, mod = items[i]
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        if isinstance(mod, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            out.append((name, fold_conv_bn(mod, nxt)))
            i += 2
        else:
            out.append((name, mod))
            i += 1
    return nn.Sequential(OrderedDict(out))
