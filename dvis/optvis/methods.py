"""The spectral methods (``fourier``, ``maco``, ``accentuate``) on one batch of a model's units:
their parameterization, their starts and their objective, run by :func:`dvis.optvis.ascent.robust_ascent`.
The pixel method's loop is :func:`dvis.pipeline.optimize.ascend`."""
from __future__ import annotations

from collections.abc import Callable

import torch

from dvis.engine.activations import forward_to
from dvis.engine.geometry import LayerGeometry, to_maps
from dvis.errors import DvisError
from dvis.optvis.ascent import AscentResult, robust_ascent
from dvis.optvis.fourier import FourierImage, MacoImage, one_over_f_magnitude
from dvis.optvis.objectives import objective_values
from dvis.optvis.settings import OptSettings
from dvis.optvis.transforms import Robustness


def robustness(s: OptSettings) -> Robustness:
    """The transformation robustness of settings ``s``."""
    return Robustness(jitter=s.jitter, scale=tuple(s.scale), rotate=s.rotate,
                      crop=tuple(s.crop) if s.crop is not None else None, views=s.views, noise=s.noise)


def seed_start(method: str, channels: int, size: tuple[int, int], seed: int) -> torch.Tensor:
    """Seed ``seed``'s starting parameter (one image) of ``method``, from a generator seeded with it:
    every unit's image of that seed starts from the same draw, whatever its batch or process."""
    g = torch.Generator().manual_seed(seed)
    if method == "maco":
        return MacoImage.random(1, channels, size, g)[0]
    if method == "fourier":
        return FourierImage.random(1, channels, size, g)[0]
    raise DvisError(f"method {method!r} has no random start (accentuate starts from dataset images)")


def parameterization(method: str, start: torch.Tensor, size: tuple[int, int], s: OptSettings,
                     magnitude: torch.Tensor | None):
    """The method's parameterization of a batch started at ``start`` (N parameters)."""
    if method == "maco":
        mag = magnitude if magnitude is not None else one_over_f_magnitude(start.shape[1], size)
        return MacoImage(start, size, mag)
    return FourierImage(start, size, s.decay)


def optimize_batch(model, layer: str, geom: LayerGeometry, start: torch.Tensor, s: OptSettings,
                   units: torch.Tensor | None = None, directions: torch.Tensor | None = None,
                   magnitude: torch.Tensor | None = None, on_step: Callable[[int], None] | None = None
                   ) -> AscentResult:
    """Optimize a batch of unit-major (unit, seed) images of ``model``'s ``layer`` with settings ``s``: image b starts at ``start[b]`` (a parameter of ``s.method``; accentuate: a
    :meth:`FourierImage.start_from` of its dataset image) and maximizes channel ``units[b]`` (or
    its dot product with ``directions[b]``) at ``s.objective``. Returned values are the
    activations themselves (not negated for ``s.negative``). ``on_step`` is called after each step."""
    size = tuple(model.input_size)
    sign = -1.0 if s.negative else 1.0
    mean = torch.tensor(model.mean, device=start.device).view(1, -1, 1, 1)
    std = torch.tensor(model.std, device=start.device).view(1, -1, 1, 1)
    n = len(start)
    r = robustness(s)

    def forward(x):
        return forward_to(model.net, (x - mean) / std, layer)

    def score(out, k):
        u = None if units is None else units.repeat_interleave(k)
        d = None if directions is None else directions.repeat_interleave(k, 0)
        return sign * objective_values(out, geom, u, d, s.objective)

    param = parameterization(s.method, start, size, s, magnitude)
    res = robust_ascent(param, forward, score, s.iters, s.lr, r,
                        torch.arange(n, device=start.device) % s.seeds, s.seeds, size,
                        optimizer="nadam" if s.method == "maco" else "adam", diversity=s.diversity,
                        maps=lambda out: to_maps(out, geom), penalty=s.penalty if s.method == "accentuate" else 0.0, on_step=on_step)
    res.values = sign * res.values
    return res
