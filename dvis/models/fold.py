"""Fold batch-norm into the preceding convolution so the net is plain conv/ReLU/pool/fc."""
from __future__ import annotations

from collections import OrderedDict

from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval


def fold_batchnorm(net: nn.Sequential) -> nn.Sequential:
    """Fold every Conv2d directly followed by BatchNorm2d in a Sequential (PyTorch's
    ``fuse_conv_bn_eval``, on eval-mode copies); other modules are kept."""
    items = list(net.named_children())
    out: list[tuple[str, nn.Module]] = []
    i = 0
    while i < len(items):
        name, mod = items[i]
        nxt = items[i + 1][1] if i + 1 < len(items) else None
        if isinstance(mod, nn.Conv2d) and isinstance(nxt, nn.BatchNorm2d):
            # Folding uses the running statistics, i.e. the eval-mode behaviour of the pair.
            out.append((name, fuse_conv_bn_eval(mod.eval(), nxt.eval())))
            i += 2
        else:
            out.append((name, mod))
            i += 1
    return nn.Sequential(OrderedDict(out))
