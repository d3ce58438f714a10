"""Invariance sweeps (Zeiler & Fergus, Fig. 5): translate, scale and rotate the inputs and measure,
per layer, how far the feature vector moves and how the true-class probability changes."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from tqdm import tqdm

from dvis.analyses.common import batch_slices, logits_and_features
from dvis.constants import TRANSFORMS
from dvis.errors import DvisError
from dvis.engine.layers import check_layers
from dvis.render.tiling import tile


def default_amounts(kind: str, size: int) -> list[float]:
    """The paper's sweeps scaled to a ``size``-pixel input: shifts up to a quarter of the height,
    scales 0.6-1.6x, rotations 0-350 degrees in steps of 10."""
    if kind == "translate":
        step = max(1, size // 32)
        return [float(s) for s in range(-(size // 4), size // 4 + 1, step)]
    if kind == "scale":
        return [round(0.6 + 0.1 * i, 2) for i in range(11)]
    if kind == "rotate":
        return [float(a) for a in range(0, 360, 10)]
    raise DvisError(f"unknown transform {kind!r}; choose from {', '.join(TRANSFORMS)}")


def affine_thetas(kind: str, amounts: Sequence[float], h: int, w: int) -> torch.Tensor:
    """Sampling matrices (A x 2 x 3) for ``F.affine_grid`` mapping output to input coordinates.

    translate: content moves down by the amount in pixels; scale: content grows by the factor
    about the centre; rotate: content turns counter-clockwise by the amount in degrees.
    """
    a = torch.tensor(amounts, dtype=torch.float64)
    zero, one = torch.zeros_like(a), torch.ones_like(a)
    if kind == "translate":
        rows = [[one, zero, zero], [zero, one, -2 * a / h]]
    elif kind == "scale":
        if (a <= 0).any():
            raise DvisError("scale factors must be positive")
        rows = [[1 / a, zero, zero], [zero, 1 / a, zero]]
    elif kind == "rotate":
        # Rotation in pixel units, expressed in affine_grid's [-1, 1] coordinates of a possibly non-square image.
        c, s = torch.cos(a * math.pi / 180), torch.sin(a * math.pi / 180)
        rows = [[c, -s * h / w, zero], [s * w / h, c, zero]]
    else:
        raise DvisError(f"unknown transform {kind!r}; choose from {', '.join(TRANSFORMS)}")
    return torch.stack([torch.stack(r, 1) for r in rows], 1).float()


def transform_images(x: torch.Tensor, thetas: torch.Tensor) -> torch.Tensor:
    """Image i of ``x`` (B x C x H x W) under transform i of ``thetas`` (B x 2 x 3).

    Uncovered pixels become 0, the dataset mean in normalized units.
    """
    grid = F.affine_grid(thetas.to(x.device, x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def transform_examples(model, image: torch.Tensor, kind: str, amounts: Sequence[float], count: int) -> np.ndarray:
    """One row of ``count`` transformed copies of ``image`` (1 x C x H x W, normalized), amounts
    evenly spaced over ``amounts``, as an RGB strip for the figure."""
    shown = np.unique(np.linspace(0, len(amounts) - 1, count).round().astype(int))
    copies = transform_images(image.expand(len(shown), -1, -1, -1),
                              affine_thetas(kind, [amounts[i] for i in shown], *image.shape[-2:]))
    return tile(np.stack([model.deprocess(c) for c in copies]), rows=1, sep=2, sep_value=255)


@dataclass
class Sweep:
    """One transform's sweep: distances[layer] and probs are N images x A amounts."""

    kind: str
    amounts: list[float]
    distances: dict[str, torch.Tensor]
    probs: torch.Tensor
    targets: torch.Tensor

    def summary(self) -> dict:
        """JSON-ready numbers, with the means over images."""
        return {
            "kind": self.kind, "unit": TRANSFORMS[self.kind], "amounts": self.amounts,
            "targets": self.targets,
            "mean_distance": {k: v.mean(0) for k, v in self.distances.items()},
            "distance": self.distances,
            "mean_true_prob": self.probs.mean(0), "true_prob": self.probs,
        }


def feature_vectors(feats: dict[str, torch.Tensor], rectify: bool) -> dict[str, torch.Tensor]:
    """Flattened (N x D) feature vectors, rectified if the layer's output is pre-ReLU."""
    return {k: (v.clamp_min(0) if rectify else v).flatten(1) for k, v in feats.items()}


@torch.no_grad()
def invariance_sweep(
    model_or_net,
    x: torch.Tensor,
    layers: Sequence[str],
    kind: str,
    amounts: Sequence[float],
    targets: Sequence[int | None] | None = None,
    rectify: bool = True,
    batch_size: int = 64,
    progress: bool = False,
) -> Sweep:
    """Distances and true-class probabilities of ``x`` (N x C x H x W, normalized) under one transform.

    The distance is the paper's Euclidean distance between the feature vectors of the original
    and the transformed image, divided by the original's norm so layers share one axis.
    ``targets`` (true classes; None entries or None for all) default to each original image's top class.
    """
    layers = check_layers(model_or_net, layers)
    n = x.shape[0]
    logits, feats = logits_and_features(model_or_net, x, layers)
    base = feature_vectors(feats, rectify)
    tgt = logits.argmax(1).cpu()
    if targets is not None:
        if len(targets) != n:
            raise DvisError(f"{len(targets)} target classes given for {n} images")
        tgt = torch.tensor([int(t) if t is not None else int(top) for t, top in zip(targets, tgt)])
    if ((tgt < 0) | (tgt >= logits.shape[1])).any():
        raise DvisError(f"target classes must lie in 0..{logits.shape[1] - 1}")
    thetas = affine_thetas(kind, amounts, *x.shape[-2:])
    total = n * len(thetas)
    img_of, amount_of = torch.arange(total) // len(thetas), torch.arange(total) % len(thetas)
    dists = {k: [] for k in layers}
    probs = []
    for sl in tqdm(list(batch_slices(total, batch_size)), desc=kind, disable=not progress, leave=False):
        idx = img_of[sl]
        batch = transform_images(x[idx.to(x.device)], thetas[amount_of[sl]])
        logits, feats = logits_and_features(model_or_net, batch, layers)
        for k, v in feature_vectors(feats, rectify).items():
            ref = base[k][idx.to(v.device)]
            dists[k].append(((v - ref).norm(dim=1) / ref.norm(dim=1).clamp_min(1e-12)).cpu())
        probs.append(logits.softmax(1).cpu()[torch.arange(len(idx)), tgt[idx]])
    shape = (n, len(thetas))
    return Sweep(kind=kind, amounts=[float(a) for a in amounts],
                 distances={k: torch.cat(v).view(shape) for k, v in dists.items()},
                 probs=torch.cat(probs).view(shape), targets=tgt)


def plot_invariance(sweeps: Sequence[Sweep], examples: dict[str, np.ndarray], labels: Sequence[str] = ()) -> Figure:
    """One row per transform: example strip, mean normalized distance per layer, true-class probability per image."""
    fig = Figure(figsize=(14, 3.3 * len(sweeps)), layout="constrained")
    axes = fig.subplots(len(sweeps), 3, squeeze=False, width_ratios=(1.6, 1, 1))
    for row, sw in zip(axes, sweeps):
        strip, dist, prob = row
        strip.imshow(examples[sw.kind], interpolation="nearest")
        strip.set_axis_off()
        strip.set_title(f"{sw.kind}: example image", fontsize=9)
        for k, v in sw.distances.items():
            dist.plot(sw.amounts, v.mean(0).numpy(), marker=".", label=k)
        dist.set_xlabel(TRANSFORMS[sw.kind], fontsize=8)
        dist.set_ylabel("||f(Tx) - f(x)|| / ||f(x)||", fontsize=8)
        dist.legend(fontsize=6, ncol=2)
        few = len(sw.probs) <= 10
        for i, p in enumerate(sw.probs):
            t = int(sw.targets[i])
            # Many images: faint lines under the mean; a few: one labelled line each.
            prob.plot(sw.amounts, p.numpy(), lw=1, alpha=1 if few else 0.15, color=None if few else "tab:blue",
                      label=(labels[t] if t < len(labels) else str(t)) if few else None)
        if not few:
            prob.plot(sw.amounts, sw.probs.mean(0).numpy(), lw=2.5, color="k", label=f"mean of {len(sw.probs)} images")
        prob.set_ylim(0, 1)
        prob.set_xlabel(TRANSFORMS[sw.kind], fontsize=8)
        prob.set_ylabel("p(true class)", fontsize=8)
        prob.legend(fontsize=6)
    return fig
