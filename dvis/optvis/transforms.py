"""Regularizers applied to the image batch between gradient steps (all batched over images)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gaussian_blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of every channel of N x C x H x W with reflected borders."""
    if sigma <= 0:
        return x
    radius = max(1, min(math.ceil(3 * sigma), min(x.shape[-2:]) - 1))
    t = torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = k / k.sum()
    n, c, h, w = x.shape
    y = F.pad(x.reshape(n * c, 1, h, w), (radius, radius, radius, radius), mode="reflect")
    y = F.conv2d(F.conv2d(y, k.view(1, 1, 1, -1)), k.view(1, 1, -1, 1))
    return y.view(n, c, h, w)


def _below_percentile(score: torch.Tensor, pct: float) -> torch.Tensor:
    """N x H x W mask of pixels whose score is below the image's ``pct`` percentile."""
    q = torch.quantile(score.flatten(1), pct / 100, dim=1)
    return score < q.view(-1, 1, 1)


def clip_small_norm(x: torch.Tensor, pct: float) -> torch.Tensor:
    """Zero (set to the mean) pixels whose colour-vector norm is in the lowest ``pct`` percent."""
    if pct <= 0:
        return x
    return x * ~_below_percentile(x.norm(dim=1), pct)[:, None]


def clip_small_contribution(x: torch.Tensor, grad: torch.Tensor, pct: float) -> torch.Tensor:
    """Zero pixels whose contribution |sum_c x * grad| (the first-order activation change if the
    pixel were set to zero) is in the lowest ``pct`` percent."""
    if pct <= 0:
        return x
    return x * ~_below_percentile((x * grad).sum(1).abs(), pct)[:, None]
