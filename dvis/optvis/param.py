"""Image parameterization: the optimized variable is the mean-subtracted image in [0, 1] pixel
units (as the original works on mean-subtracted Caffe input), so zero means "the dataset mean",
decay pulls towards the mean and clipped pixels are set to the mean."""
from __future__ import annotations

import torch

from dvis.errors import DvisError

from dvis.optvis.settings import STARTS
NOISE_STD = 10 / 255  # the original's N(0, 10) on the 0..255 scale


def start_images(n: int, channels: int, size: tuple[int, int], mean: torch.Tensor, start: str,
                 generator: torch.Generator) -> torch.Tensor:
    """n starting images (n x C x H x W, mean-subtracted pixels) drawn from ``generator``."""
    shape = (n, channels) + tuple(size)
    if start == "mean_plus_noise":
        return torch.randn(shape, generator=generator) * NOISE_STD
    if start == "uniform":
        return torch.rand(shape, generator=generator) - mean.view(1, -1, 1, 1)
    if start == "mean":
        return torch.zeros(shape)
    raise DvisError(f"unknown start {start!r}; expected one of {', '.join(STARTS)}")


def to_input(c: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Mean-subtracted pixels -> the net's normalized input."""
    return c / std.view(1, -1, 1, 1)


def clamp_pixels(c: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Keep mean + c inside the valid pixel range [0, 1]."""
    m = mean.view(1, -1, 1, 1)
    return torch.maximum(torch.minimum(c, 1 - m), -m)


def to_display(c: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """N x C x H x W mean-subtracted -> N x H x W x 3 uint8, each image stretched to the full range
    (as the original saves its best images) so low-contrast results stay visible."""
    p = c + mean.view(1, -1, 1, 1)
    lo = p.flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = p.flatten(1).amax(1).view(-1, 1, 1, 1)
    p = (p - lo) / (hi - lo).clamp_min(1e-8)
    return pixels_to_display(p)


def pixels_to_display(p: torch.Tensor) -> torch.Tensor:
    """N x C x H x W pixels in [0, 1] -> N x H x W x 3 uint8 (grey images repeated in 3 channels)."""
    img = (p * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
    return img.expand(-1, -1, -1, 3) if img.shape[3] == 1 else img
