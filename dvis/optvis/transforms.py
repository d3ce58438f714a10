"""Regularizers applied to the image batch between gradient steps (Yosinski et al. 2015) and the
random transformations applied before each forward (transformation robustness): all batched over images."""
from __future__ import annotations

import math
from dataclasses import dataclass

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


# ---------------------------------------------------------------------------------------------
# Transformation robustness (Olah et al. 2017; MACO's random crops and noise)


@dataclass(frozen=True)
class Robustness:
    """Random transformations each optimization step applies before the forward: ``views`` per
    image, each a jitter (up to ``jitter`` of the side, uniform), a zoom (uniform in ``scale``), a
    rotation (uniform within +-``rotate`` degrees) and, with ``crop``, a MACO crop (side a uniform
    fraction in ``crop``, centre normal around the image centre with ``crop_sd``), resampled to the
    net's input size; then Gaussian plus uniform noise of scale ``noise`` (as horama adds)."""

    jitter: float = 0.0
    scale: tuple[float, float] = (1.0, 1.0)
    rotate: float = 0.0
    crop: tuple[float, float] | None = None
    crop_sd: float = 0.15
    views: int = 1
    noise: float = 0.0


@dataclass
class Views:
    """Drawn transformations: ``theta`` (M x 2 x 3) sampling matrices of :func:`torch.nn.functional.affine_grid`
    and ``noise`` (M x C x H x W, or None) added after resampling."""

    theta: torch.Tensor
    noise: torch.Tensor | None


def draw_views(r: Robustness, channels: int, size: tuple[int, int], generator: torch.Generator) -> Views:
    """``r.views`` random transformations of an image of ``size`` (H, W) from ``generator``."""
    k = r.views
    h, w = size
    u = torch.rand((k, 4), generator=generator)
    zoom = r.scale[0] + u[:, 0] * (r.scale[1] - r.scale[0])
    angle = torch.deg2rad((2 * u[:, 1] - 1) * r.rotate)
    shift = (2 * u[:, 2:4] - 1) * r.jitter * 2  # a fraction of the side, in [-1, 1] coordinates
    side = torch.ones(k)
    centre = torch.zeros(k, 2)
    if r.crop is not None:
        side = r.crop[0] + torch.rand(k, generator=generator) * (r.crop[1] - r.crop[0])
        centre = torch.randn((k, 2), generator=generator) * r.crop_sd * 2
    cos, sin = torch.cos(angle), torch.sin(angle)
    # Rotation in pixel units on the [-1, 1] grid of a non-square image: D^-1 R D with D = diag(W, H) / 2.
    a = (side / zoom).view(-1, 1, 1) * torch.stack([torch.stack([cos, -sin * h / w], 1),
                                                     torch.stack([sin * w / h, cos], 1)], 1)
    theta = torch.cat([a, (centre + shift).view(k, 2, 1)], 2)
    noise = None
    if r.noise > 0:
        shape = (k, channels, h, w)
        noise = (torch.randn(shape, generator=generator) + torch.rand(shape, generator=generator) - 0.5) * r.noise
    return Views(theta, noise)


def views_for(per_seed: list[Views], seed_of_image: torch.Tensor) -> Views:
    """The views of each image (its seed's draws, image-major: M = N x views), on ``seed_of_image``'s device."""
    dev = seed_of_image.device
    theta = torch.stack([v.theta for v in per_seed]).to(dev)[seed_of_image].flatten(0, 1)
    noise = None
    if per_seed[0].noise is not None:
        noise = torch.stack([v.noise for v in per_seed]).to(dev)[seed_of_image].flatten(0, 1)
    return Views(theta, noise)


def apply_views(x: torch.Tensor, views: Views, size: tuple[int, int]) -> torch.Tensor:
    """N x C x H x W images -> (N x views) x C x size transformed views: one ``affine_grid`` and one
    ``grid_sample`` for the whole batch (reflected borders), then the noise."""
    k = len(views.theta) // len(x)
    src = x.repeat_interleave(k, 0) if k > 1 else x
    grid = F.affine_grid(views.theta.to(x.dtype), [len(src), x.shape[1], *size], align_corners=False)
    out = F.grid_sample(src, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return out + views.noise.to(x.dtype) if views.noise is not None else out
