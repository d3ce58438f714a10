"""Modules that give a layer each non-chw layout (channels-last, tokens, merged window partitions),
shared by the layout tests. ``SOURCE`` is this file's text: the tests write it, plus a ``Net``, into
a model folder's net.py so the real model-folder loading code runs on it."""
from pathlib import Path

import torch
from torch import nn


class Permute(nn.Module):
    def __init__(self, *order):
        super().__init__()
        self.order = order

    def forward(self, x):
        return x.permute(*self.order)


class Tokens(nn.Module):
    """N x C x H x W -> N x (1 + H*W) x C with a class token first (as in ViT)."""

    def __init__(self, c):
        super().__init__()
        self.cls = nn.Parameter(torch.full((1, 1, c), 2.0))

    def forward(self, x):
        t = x.flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), t], dim=1)


class Windows(nn.Module):
    """N x C x H x W -> (N * windows) x (p * p) x C, windows merged with the batch (Swin, timm)."""

    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        n, c, h, w = x.shape
        p = self.p
        x = x.permute(0, 2, 3, 1).view(n, h // p, p, w // p, p, c)
        return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, p * p, c)


SOURCE = Path(__file__).read_text()
