"""Gradient ascent through a parameterization with transformation robustness (Olah et al. 2017,
Fel et al. 2023, Hamblin et al. 2024), for a whole batch of images at once.

Per step: the parameterization's images (N x C x H x W in (0, 1)), each image's views (one
batched affine resampling plus noise, drawn per seed so that a unit's images do not depend on
its batch mates), one forward of all views, the objective averaged over each image's views,
minus the diversity term and the distance to the start (accentuation), one backward and one
Adam step. The input gradient's magnitude is accumulated per image: MACO's attribution map.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from dvis.optvis.objectives import gram_similarity
from dvis.optvis.transforms import Robustness, Views, apply_views, draw_views, views_for

#: Offset of the transformation draws' generator seeds from the start draws' (one stream per seed).
VIEW_STREAM = 1_000_003


@dataclass
class AscentResult:
    """``pixels`` (N x C x H x W in (0, 1)), ``values`` (N,) each image's objective on the image
    itself (no transformation) and ``attribution`` (N x H x W) the summed |d loss / d pixel|."""

    pixels: torch.Tensor
    values: torch.Tensor
    attribution: torch.Tensor


def seed_views(robustness: Robustness, n_seeds: int, channels: int, size: tuple[int, int]
               ) -> Callable[[], list[Views]]:
    """A function giving each seed's views for the next step, from one generator per seed."""
    gens = [torch.Generator().manual_seed(VIEW_STREAM + s) for s in range(n_seeds)]
    return lambda: [draw_views(robustness, channels, size, g) for g in gens]


def robust_ascent(param, forward: Callable[[torch.Tensor], torch.Tensor],
                  score: Callable[[torch.Tensor, int], torch.Tensor], steps: int, lr: float,
                  robustness: Robustness, seed_of_image: torch.Tensor, n_seeds: int,
                  size: tuple[int, int], optimizer: str = "adam", diversity: float = 0.0,
                  maps: Callable[[torch.Tensor], torch.Tensor] | None = None,
                  penalty: float = 0.0, on_step: Callable[[int], None] | None = None) -> AscentResult:
    """Run ``steps`` steps on ``param`` (a :mod:`dvis.optvis.fourier` parameterization, its ``param``
    a leaf of N images). ``forward`` maps pixel views to the layer's output, ``score(out, k)`` that output
    to one value per view of images with ``k`` views each (sign included). ``seed_of_image`` (N,) says which seed's draws each image
    uses. ``diversity`` weighs :func:`gram_similarity` over groups of ``n_seeds`` consecutive images
    (``maps`` turns the output into maps); ``penalty`` weighs the squared distance of each image's
    parameter from its start (feature accentuation). ``on_step`` is called with the number of
    steps done after each step."""
    n = len(param.param)
    k = robustness.views
    channels = param.param.shape[1]
    start = param.param.detach().clone()
    opt = (torch.optim.NAdam if optimizer == "nadam" else torch.optim.Adam)([param.param], lr=lr)
    next_views = seed_views(robustness, n_seeds, channels, size)
    attribution = torch.zeros((n,) + tuple(size), device=param.param.device)
    for it in range(steps):
        opt.zero_grad(set_to_none=True)
        with torch.enable_grad():
            x = param.image()
            x.retain_grad()
            out = forward(apply_views(x, views_for(next_views(), seed_of_image), size))
            values = score(out, k).view(n, k).mean(1)
            loss = -values.sum()
            if diversity:
                loss = loss + diversity * gram_similarity(maps(out)[::k], n_seeds).sum()
            if penalty:
                loss = loss + penalty * (param.param - start).pow(2).flatten(1).mean(1).sum()
            loss.backward()
        attribution += x.grad.abs().sum(1)
        opt.step()
        if on_step is not None:
            on_step(it + 1)
    with torch.no_grad():
        x = param.image()
        values = score(forward(x), 1)
    return AscentResult(x.detach(), values.detach(), attribution)
