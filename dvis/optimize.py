"""Regularized gradient ascent on the input image (Yosinski et al. 2015, "Understanding Neural
Networks Through Deep Visualization"), batched across units and seeds: one forward/backward per
step moves a whole batch of images, each maximizing its own unit.

Per step, as in the paper's optimizer: clamp pixels to the valid range, forward to the layer,
record the best image so far, backward, then x += lr * grad, x *= (1 - decay), blur every n
steps, zero pixels of small norm and of small contribution (percentiles).
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from dvis.activations import forward_to
from dvis.errors import DvisError
from dvis.optvis.objectives import unit_activations
from dvis.optvis.param import clamp_pixels, start_images, to_display, to_input
from dvis.optvis.presets import preset
from dvis.optvis.redirect import RedirectedReLUs
from dvis.optvis.settings import OptSettings
from dvis.optvis.transforms import clip_small_contribution, clip_small_norm, gaussian_blur

@dataclass
class OptResult:
    """``images`` (units, seeds, H, W, 3) uint8 display images of each seed's best iterate,
    ``activations`` (units, seeds) their activations, ``pixels`` the same images as
    mean-subtracted float (units, seeds, C, H, W)."""

    layer: str
    units: np.ndarray
    images: np.ndarray
    activations: np.ndarray
    pixels: np.ndarray


def step_sizes(grad: torch.Tensor, s: OptSettings) -> torch.Tensor:
    """Per-image learning rate (N x 1 x 1 x 1) for the chosen policy."""
    if s.lr_policy == "constant":
        return torch.full((len(grad), 1, 1, 1), s.lr, device=grad.device)
    sq = grad.flatten(1).pow(2).sum(1).clamp_min(1e-20)
    return (s.desired_prog / sq).clamp_max(s.max_lr).view(-1, 1, 1, 1)


def ascend(model, layer: str, units: torch.Tensor, c: torch.Tensor, s: OptSettings
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``s.iters`` regularized ascent steps on the batch ``c`` (N x C x H x W mean-subtracted
    pixels, image b maximizing unit ``units[b]``); returns (best images, best activations)."""
    reg = preset(s.preset)
    mean = torch.tensor(model.mean, device=c.device)
    std = torch.tensor(model.std, device=c.device)
    best = c.clone()
    best_act = torch.full((len(c),), -torch.inf, device=c.device)
    for it in range(s.iters):
        c = clamp_pixels(c, mean).detach().requires_grad_(True)
        redirect = RedirectedReLUs() if it < s.redirect_iters else nullcontext()
        with torch.enable_grad(), redirect:
            act = unit_activations(forward_to(model.net, to_input(c, std), layer), units)
            (grad,) = torch.autograd.grad(act.sum(), c)
        c, act = c.detach(), act.detach()
        better = act > best_act
        best = torch.where(better.view(-1, 1, 1, 1), c, best)
        best_act = torch.where(better, act, best_act)
        if it == s.iters - 1:
            break
        c = (c + step_sizes(grad, s) * grad) * (1 - reg.decay)
        if reg.blur_every and reg.blur_width > 0 and it % reg.blur_every == 0:
            c = gaussian_blur(c, reg.blur_width)
        c = clip_small_norm(c, reg.norm_pct)
        c = clip_small_contribution(c, grad, reg.contrib_pct)
    return best, best_act


def optimize_units(model, layer: str, units: list[int] | np.ndarray | None = None, settings: OptSettings | None = None,
                   progress: Callable[[int], None] | None = None) -> OptResult:
    """Optimize an image per (unit, seed) of ``layer`` (all units when ``units`` is None).

    Seed s starts every unit from the same draw of a generator seeded with s, so results do not
    depend on batching. Conv units are optimized at the centre of the layer's output.
    """
    s = settings or OptSettings()
    s.validate()
    dev = model.device
    with torch.no_grad():
        shape = forward_to(model.net, torch.zeros((1, model.channels) + tuple(model.input_size), device=dev), layer).shape
    n_units = shape[1]
    units = np.arange(n_units) if units is None else np.asarray(units, dtype=np.int64)
    if len(units) and (units.min() < 0 or units.max() >= n_units):
        raise DvisError(f"layer {layer} has units 0..{n_units - 1}; got {units.min()}..{units.max()}")
    mean = torch.tensor(model.mean)
    starts = []
    for seed in range(s.seeds):
        g = torch.Generator().manual_seed(seed)
        starts.append(start_images(1, model.channels, model.input_size, mean, s.start, g).expand(len(units), -1, -1, -1))
    # Order (unit, seed) pairs unit-major so a unit's seeds sit in one batch.
    c0 = torch.stack(starts, 1).reshape((-1, model.channels) + tuple(model.input_size))
    unit_ids = torch.from_numpy(units).repeat_interleave(s.seeds)
    best, acts = torch.empty_like(c0), torch.empty(len(c0))
    for lo in range(0, len(c0), s.batch_size):
        hi = min(lo + s.batch_size, len(c0))
        b, a = ascend(model, layer, unit_ids[lo:hi].to(dev), c0[lo:hi].to(dev), s)
        best[lo:hi], acts[lo:hi] = b.cpu(), a.cpu()
        if progress:
            progress(hi - lo)
    images = to_display(best, mean).numpy()
    u, k = len(units), s.seeds
    return OptResult(layer, units, images.reshape((u, k) + images.shape[1:]), acts.view(u, k).numpy(),
                     best.view((u, k) + best.shape[1:]).numpy())
