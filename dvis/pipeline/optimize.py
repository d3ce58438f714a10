"""Optimized images of units, batched across units and seeds: one forward/backward per step
moves a whole batch of images, each maximizing its own unit.

The ``pixel`` method is regularized gradient ascent on the input image (Yosinski et al. 2015,
"Understanding Neural Networks Through Deep Visualization"). Per step, as in the paper's
optimizer: clamp pixels to the valid range, forward to the layer, record the best image so far,
backward, then x += lr * grad, x *= (1 - decay), blur every n steps, zero pixels of small norm
and of small contribution (percentiles). The spectral methods (``fourier``, ``maco``,
``accentuate``: :mod:`dvis.optvis.methods`) run on the same batches.
"""
from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from dvis.engine.activations import forward_to
from dvis.pipeline.distributed import Shard
from dvis.errors import DvisError
from dvis.engine.geometry import model_geometry
from dvis.engine.layers import check_layers
from dvis.optvis.fourier import FourierImage
from dvis.optvis.methods import optimize_batch, seed_start
from dvis.optvis.objectives import objective_values
from dvis.optvis.param import clamp_pixels, pixels_to_display, start_images, to_display, to_input
from dvis.optvis.presets import preset
from dvis.optvis.redirect import RedirectedReLUs
from dvis.optvis.settings import OptSettings
from dvis.optvis.transforms import clip_small_contribution, clip_small_norm, gaussian_blur

@dataclass
class OptResult:
    """``images`` (units, seeds, H, W, 3) uint8 display images of each seed's best iterate (pixel)
    or final image (the other methods), ``activations`` (units, seeds) their activations,
    ``pixels`` the same images as mean-subtracted float (units, seeds, C, H, W); None when merged
    from several processes (the float images are not sent between them: AlexNet's fc layers would
    need gigabytes). ``attribution`` (units, seeds, H, W): the spectral methods' accumulated input
    gradient magnitude (MACO's attribution map); None for pixel."""

    layer: str
    units: np.ndarray
    images: np.ndarray
    activations: np.ndarray
    pixels: np.ndarray | None
    attribution: np.ndarray | None = None


def step_sizes(grad: torch.Tensor, s: OptSettings) -> torch.Tensor:
    """Per-image learning rate (N x 1 x 1 x 1) for the chosen policy."""
    if s.lr_policy == "constant":
        return torch.full((len(grad), 1, 1, 1), s.lr, device=grad.device)
    sq = grad.flatten(1).pow(2).sum(1).clamp_min(1e-20)
    return (s.desired_prog / sq).clamp_max(s.max_lr).view(-1, 1, 1, 1)


def ascend(model, layer: str, units: torch.Tensor, c: torch.Tensor, s: OptSettings,
           on_step: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``s.iters`` regularized ascent steps on the batch ``c`` (N x C x H x W mean-subtracted
    pixels, image b maximizing unit ``units[b]``: a channel of the layer's maps in any layout at
    ``s.objective``, see :func:`dvis.optvis.objectives.objective_values`, minimized with
    ``s.negative``); returns (best images, their objective values). ``on_step`` is called with
    the number of steps done after each step."""
    reg = preset(s.preset)
    geom = model_geometry(model)[layer]
    mean = torch.tensor(model.mean, device=c.device)
    std = torch.tensor(model.std, device=c.device)
    best = c.clone()
    best_act = torch.full((len(c),), -torch.inf, device=c.device)
    for it in range(s.iters):
        c = clamp_pixels(c, mean).detach().requires_grad_(True)
        redirect = RedirectedReLUs() if it < s.redirect_iters else nullcontext()
        with torch.enable_grad(), redirect:
            act = objective_values(forward_to(model.net, to_input(c, std), layer), geom, units,
                                   where=s.objective, sign=-1.0 if s.negative else 1.0)
            (grad,) = torch.autograd.grad(act.sum(), c)
        c, act = c.detach(), act.detach()
        better = act > best_act
        best = torch.where(better.view(-1, 1, 1, 1), c, best)
        best_act = torch.where(better, act, best_act)
        if on_step is not None:
            on_step(it + 1)
        if it == s.iters - 1:
            break
        c = (c + step_sizes(grad, s) * grad) * (1 - reg.decay)
        if reg.blur_every and reg.blur_width > 0 and it % reg.blur_every == 0:
            c = gaussian_blur(c, reg.blur_width)
        c = clip_small_norm(c, reg.norm_pct)
        c = clip_small_contribution(c, grad, reg.contrib_pct)
    return best, best_act


def step_credit(progress: Callable[[int], None], n_images: int, iters: int) -> Callable[[int], None]:
    """An ``on_step`` for :func:`ascend` that credits ``progress`` with a batch's ``n_images`` in
    proportion to its steps done (whole images; all of them after the last step), so a progress
    bar moves within a batch rather than once per batch (minutes apart on a CPU)."""
    credited = 0

    def on_step(done: int) -> None:
        nonlocal credited
        now = n_images * done // iters
        if now > credited:
            progress(now - credited)
            credited = now

    return on_step


def opt_batches(n_units: int, s: OptSettings) -> list[np.ndarray]:
    """Positions (into the unit list) of each batch: ``batch_size // seeds`` whole units (at least
    one), all their seeds together. The same batches for one process or many, so a sharded run
    optimizes every image exactly as one process does."""
    per = max(1, s.batch_size // s.seeds)
    return [np.arange(lo, min(lo + per, n_units)) for lo in range(0, n_units, per)]


def optimize_units(model, layer: str, units: list[int] | np.ndarray | None = None, settings: OptSettings | None = None,
                   progress: Callable[[int], None] | None = None, shard: Shard = Shard(),
                   magnitude: torch.Tensor | np.ndarray | None = None, start_pixels: np.ndarray | None = None
                   ) -> OptResult:
    """Optimize an image per (unit, seed) of ``layer`` (all units when ``units`` is None) with
    ``settings.method``.

    Seed s starts every unit from the same draw of a generator seeded with s (and, for the
    spectral methods, sees the same random transformations), so results depend neither on
    batching nor on which process optimizes the unit. Units of maps (channels first or last, token
    grids, window partitions) are optimized at ``settings.objective`` (the centre of the layer's
    grid by default). ``magnitude`` is MACO's amplitude spectrum (None: the 1/f template);
    ``start_pixels`` (units x C x H x W in [0, 1], one per unit of ``units``) are accentuate's
    starting images. With a ``shard`` of several processes only its batches (:func:`opt_batches`
    dealt by :meth:`Shard.mine`) are optimized: the result lists those units. ``progress`` is
    called with numbers of images done, step by step (see :func:`step_credit`).
    """
    s = settings or OptSettings()
    s.validate()
    dev = model.device
    geom = model_geometry(model)[check_layers(model, layer)[0]]
    if not geom.visualizable:
        raise DvisError(f"layer {layer} has no units to optimize: {geom.reason}")
    n_units = geom.channels
    units = np.arange(n_units) if units is None else np.asarray(units, dtype=np.int64)
    if len(units) and (units.min() < 0 or units.max() >= n_units):
        raise DvisError(f"layer {layer} has units 0..{n_units - 1}; got {units.min()}..{units.max()}")
    size = tuple(model.input_size)
    if s.method == "accentuate" and (start_pixels is None or len(start_pixels) != len(units)):
        raise DvisError("accentuate starts from each unit's top-1 dataset image: give one start image per unit "
                        "(dvis optimize reads them from the maxes run)")
    mean = torch.tensor(model.mean)
    if s.method == "pixel":
        starts = torch.stack([start_images(1, model.channels, size, mean, s.start,
                                           torch.Generator().manual_seed(seed))[0] for seed in range(s.seeds)])
    elif s.method != "accentuate":
        starts = torch.stack([seed_start(s.method, model.channels, size, seed) for seed in range(s.seeds)])
    mag = None if magnitude is None else torch.as_tensor(magnitude, dtype=torch.float32).to(dev)
    positions = shard.mine(opt_batches(len(units), s))
    mine = units[np.concatenate(positions)] if positions else units[:0]
    best = torch.empty((len(mine), s.seeds, model.channels) + size)
    acts = torch.empty(len(mine), s.seeds)
    attribution = torch.empty((len(mine), s.seeds) + size) if s.method != "pixel" else None
    lo = 0
    for batch in positions:
        hi = lo + len(batch)
        # Unit-major (unit, seed) pairs: a unit's seeds sit in one batch.
        ids = torch.from_numpy(mine[lo:hi]).repeat_interleave(s.seeds).to(dev)
        on_step = step_credit(progress, len(ids), s.iters) if progress else None
        if s.method == "pixel":
            b, a = ascend(model, layer, ids, starts.repeat(hi - lo, 1, 1, 1).to(dev), s, on_step)
            a = -a if s.negative else a  # the activation, not the objective
        else:
            if s.method == "accentuate":
                top1 = torch.as_tensor(np.asarray(start_pixels)[batch], dtype=torch.float32)
                start = FourierImage.start_from(top1, s.decay).repeat_interleave(s.seeds, 0).to(dev)
            else:
                start = starts.repeat(hi - lo, *[1] * (starts.dim() - 1)).to(dev)
            r = optimize_batch(model, layer, geom, start, s, units=ids, magnitude=mag, on_step=on_step)
            b, a = r.pixels - mean.to(dev).view(1, -1, 1, 1), r.values
            attribution[lo:hi] = r.attribution.cpu().view(attribution[lo:hi].shape)
        best[lo:hi], acts[lo:hi] = b.cpu().view(best[lo:hi].shape), a.cpu().view(hi - lo, s.seeds)
        lo = hi
    flat = best.flatten(0, 1)
    # The spectral methods' images are in range by construction: shown as they are, not stretched.
    images = to_display(flat, mean) if s.method == "pixel" else pixels_to_display(flat + mean.view(1, -1, 1, 1))
    images = images.numpy()
    u, k = len(mine), s.seeds
    return OptResult(layer, mine, images.reshape((u, k) + images.shape[1:]), acts.numpy(), best.numpy(),
                     None if attribution is None else attribution.numpy())


def step_seconds(model, layer: str, settings: OptSettings) -> float:
    """Seconds one ascent step of ``layer``'s first (full) batch takes, timed once: what a layer's
    optimization costs is about ``len(opt_batches(...)) * iters`` of these, however many images
    the other steps see."""
    s = replace(settings, iters=1)
    geom = model_geometry(model)[check_layers(model, layer)[0]]
    n = len(opt_batches(geom.channels, s)[0]) * s.seeds
    ids = torch.arange(n, device=model.device) // s.seeds
    size = tuple(model.input_size)
    t0 = time.perf_counter()
    if s.method == "pixel":
        ascend(model, layer, ids, torch.zeros((n, model.channels) + size, device=model.device), s)
    else:
        if s.method == "accentuate":
            start = FourierImage.start_from(torch.full((n, model.channels) + size, 0.5), s.decay)
        else:
            p0 = seed_start(s.method, model.channels, size, 0)
            start = p0.expand(n, *p0.shape)
        optimize_batch(model, layer, geom, start.to(model.device), s, units=ids)
    return time.perf_counter() - t0


def merge_opt(layer: str, units: np.ndarray, parts: list[dict[str, np.ndarray]]) -> OptResult:
    """Join every process's share (``units``, ``images``, ``activations`` arrays) into the result for
    ``units``, in that order."""
    got = np.concatenate([p["units"] for p in parts])
    if len(got) != len(units) or set(got.tolist()) != set(np.asarray(units).tolist()):
        raise DvisError(f"optimize {layer}: shards cover {len(set(got.tolist()))} of {len(units)} units")
    order = np.argsort(got)[np.searchsorted(np.sort(got), units)]
    fields = ("images", "activations") + (("attribution",) if "attribution" in parts[0] else ())
    cat = {f: np.concatenate([p[f] for p in parts])[order] for f in fields}
    return OptResult(layer, np.asarray(units), cat["images"], cat["activations"], None, cat.get("attribution"))


def sharded_optimize(model, layer: str, units: np.ndarray, settings: OptSettings, shard: Shard, folder, key,
                     progress: Callable[[int], None] | None = None, magnitude=None,
                     start_pixels: np.ndarray | None = None) -> OptResult | None:
    """:func:`optimize_units` of this process's share, merged with the other shares where the
    merge happens (:meth:`Shard.collect`); None elsewhere."""
    res = optimize_units(model, layer, units, settings, progress, shard, magnitude, start_pixels)
    if not shard.split:
        return res
    print(f"optimize {layer}: shard {shard.rank}/{shard.world} optimized {len(res.units)} of {len(units)} units",
          flush=True)
    part = {"units": res.units, "images": res.images, "activations": res.activations}
    if res.attribution is not None:
        part["attribution"] = res.attribution
    parts = shard.collect(part, folder, f"opt-{layer}", key)
    return None if parts is None else merge_opt(layer, units, parts)
