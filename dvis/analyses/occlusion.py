"""Occlusion sensitivity (Zeiler & Fergus, Fig. 7): slide a grey square over the input and map the
class probability, the most probable class and one feature map's total activation."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib
import numpy as np
import torch
from matplotlib.colors import ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from tqdm import tqdm

from dvis.analyses.common import batch_slices, logits_and_features
from dvis.errors import DvisError
from dvis.engine.layers import check_layers


@dataclass
class OcclusionMaps:
    """Maps over occluder positions; cell (i, j) is the square centred at (centers_y[i], centers_x[j])."""

    centers_y: torch.Tensor
    centers_x: torch.Tensor
    size: int
    target: int                           # class whose probability ``target_prob`` maps
    target_prob: torch.Tensor             # ny x nx
    top_class: torch.Tensor               # ny x nx, most probable class
    top_prob: torch.Tensor                # ny x nx, its probability
    base_probs: torch.Tensor              # K, unoccluded
    layer: str | None = None
    unit: int | None = None
    unit_activation: torch.Tensor | None = None   # ny x nx, total rectified activation of the unit's map
    base_activation: float | None = None

    def min_position(self) -> tuple[int, int]:
        """(y, x) centre of the occluder that lowers the target probability most."""
        iy, ix = divmod(int(self.target_prob.argmin()), len(self.centers_x))
        return int(self.centers_y[iy]), int(self.centers_x[ix])

    def summary(self, labels: Sequence[str] = ()) -> dict:
        """JSON-ready numbers."""
        name = lambda k: labels[k] if k < len(labels) else str(k)  # noqa: E731
        return {
            "size": self.size,
            "centers_y": self.centers_y, "centers_x": self.centers_x,
            "target": self.target, "target_label": name(self.target),
            "base_target_prob": float(self.base_probs[self.target]),
            "min_target_prob": float(self.target_prob.min()),
            "min_target_at": self.min_position(),
            "target_prob": self.target_prob,
            "top_class": self.top_class, "top_prob": self.top_prob,
            "top_class_labels": sorted({name(int(k)) for k in self.top_class.unique()}),
            "layer": self.layer, "unit": self.unit,
            "base_activation": self.base_activation,
            "unit_activation": self.unit_activation,
        }


def occluder_grid(h: int, w: int, size: int, stride: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Square centres every ``stride`` pixels and the row/column masks of the squares they centre.

    Returns (centers_y, centers_x, row_masks ny x h, col_masks nx x w); a square near the border
    is clipped to the image.
    """
    if size < 1 or stride < 1:
        raise DvisError(f"occluder size and stride must be positive, got size {size}, stride {stride}")
    if size > min(h, w):
        raise DvisError(f"occluder size {size} exceeds the input size {h}x{w}")
    cy, cx = torch.arange(0, h, stride), torch.arange(0, w, stride)
    start = -(size // 2)
    rows = torch.arange(h)[None, :] - cy[:, None]
    cols = torch.arange(w)[None, :] - cx[:, None]
    return cy, cx, (rows >= start) & (rows < start + size), (cols >= start) & (cols < start + size)


def map_totals(act: torch.Tensor) -> torch.Tensor:
    """Total rectified activation of every channel (N x C) for conv (N x C x H x W) or fc (N x C) outputs."""
    return act.clamp_min(0).flatten(2).sum(2) if act.ndim > 2 else act.clamp_min(0)


@torch.no_grad()
def occlusion_maps(
    model_or_net,
    x: torch.Tensor,
    size: int = 8,
    stride: int = 2,
    target: int | None = None,
    layer: str | None = None,
    unit: int | None = None,
    fill: float | torch.Tensor = 0.0,
    batch_size: int = 64,
    progress: bool = False,
) -> OcclusionMaps:
    """Occlusion maps for one normalized image ``x`` (1 x C x H x W).

    ``fill`` is the occluder's value in normalized units (0 is the dataset mean for a model that
    normalizes by its training mean). ``target`` defaults to the top class of the unoccluded image,
    ``unit`` (when ``layer`` is given) to the channel with the largest total activation on it.
    All occluded copies are evaluated in batches of ``batch_size``.
    """
    if x.ndim != 4 or x.shape[0] != 1:
        raise DvisError(f"occlusion needs one image as a 1xCxHxW tensor, got shape {tuple(x.shape)}")
    layers = check_layers(model_or_net, [layer] if layer else [])
    logits, feats = logits_and_features(model_or_net, x, layers)
    base_probs = logits.softmax(1)[0]
    target = int(base_probs.argmax()) if target is None else target
    if not 0 <= target < len(base_probs):
        raise DvisError(f"target class {target} out of range 0..{len(base_probs) - 1}")
    base_act = None
    if layer:
        totals = map_totals(feats[layer])[0]
        unit = int(totals.argmax()) if unit is None else unit
        if not 0 <= unit < len(totals):
            raise DvisError(f"unit {unit} out of range 0..{len(totals) - 1} for layer {layer}")
        base_act = float(totals[unit])

    h, w = x.shape[-2:]
    cy, cx, row_masks, col_masks = occluder_grid(h, w, size, stride)
    n = len(cy) * len(cx)
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device).reshape(1, -1, 1, 1)
    probs, acts = [], []
    for sl in tqdm(list(batch_slices(n, batch_size)), desc="occlusion", disable=not progress, leave=False):
        idx = torch.arange(sl.start, sl.stop)
        mask = (row_masks[idx // len(cx), :, None] & col_masks[idx % len(cx), None, :])[:, None].to(x.device)
        logits, feats = logits_and_features(model_or_net, torch.where(mask, fill, x), layers)
        probs.append(logits.softmax(1).cpu())
        if layer:
            acts.append(map_totals(feats[layer])[:, unit].cpu())
    probs_t = torch.cat(probs).view(len(cy), len(cx), -1)
    top_prob, top_class = probs_t.max(2)
    return OcclusionMaps(
        centers_y=cy, centers_x=cx, size=size, target=target,
        target_prob=probs_t[..., target], top_class=top_class, top_prob=top_prob,
        base_probs=base_probs.cpu(), layer=layer, unit=unit,
        unit_activation=torch.cat(acts).view(len(cy), len(cx)) if layer else None,
        base_activation=base_act,
    )


def upsample_map(values: torch.Tensor, centers_y: torch.Tensor, centers_x: torch.Tensor, h: int, w: int) -> np.ndarray:
    """A map over occluder centres as an h x w float array, each pixel taking its nearest centre's value
    (for overlays on the input)."""
    iy = torch.bucketize(torch.arange(h) + 0.5, (centers_y[1:] + centers_y[:-1]).float() / 2)
    ix = torch.bucketize(torch.arange(w) + 0.5, (centers_x[1:] + centers_x[:-1]).float() / 2)
    return values[iy][:, ix].float().numpy()


def plot_occlusion(image: np.ndarray, maps: OcclusionMaps, labels: Sequence[str] = ()) -> Figure:
    """The paper's Fig. 7 panels: input with the occluder size, unit activation map (if any),
    target-class probability map and most-probable-class map."""
    name = lambda k: labels[k] if k < len(labels) else str(k)  # noqa: E731
    h, w = image.shape[:2]
    extent = (-0.5, w - 0.5, h - 0.5, -0.5)
    panels = 4 if maps.layer else 3
    fig = Figure(figsize=(3.4 * panels, 3.6), layout="constrained")
    axes = fig.subplots(1, panels)
    axes[0].imshow(image, interpolation="nearest")
    half = maps.size // 2
    axes[0].add_patch(_square(w // 2 - half - 0.5, h // 2 - half - 0.5, maps.size))
    axes[0].set_title(f"input, occluder {maps.size}px\n{name(maps.target)} p={float(maps.base_probs[maps.target]):.2f}", fontsize=9)
    shown = []
    if maps.layer:
        shown.append((maps.unit_activation, f"{maps.layer} unit {maps.unit}: total activation", "viridis"))
    shown.append((maps.target_prob, f"p({name(maps.target)})", "magma"))
    for ax, (values, title, cmap) in zip(axes[1:], shown):
        up = upsample_map(values, maps.centers_y, maps.centers_x, h, w)
        im = ax.imshow(up, cmap=cmap, extent=extent, interpolation="nearest")
        fig.colorbar(im, ax=ax, shrink=0.8)
        ax.set_title(title, fontsize=9)
    classes = maps.top_class.unique()
    index = torch.bucketize(maps.top_class, classes)
    cmap = _class_cmap(len(classes))
    up = upsample_map(index, maps.centers_y, maps.centers_x, h, w)
    axes[-1].imshow(up, cmap=cmap, vmin=-0.5, vmax=len(classes) - 0.5, extent=extent, interpolation="nearest")
    axes[-1].legend(handles=[_swatch(cmap(i), name(int(k))) for i, k in enumerate(classes)], fontsize=7,
                    loc="upper left", bbox_to_anchor=(1, 1))
    axes[-1].set_title("most probable class", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    return fig


def _square(x0: float, y0: float, size: int) -> Rectangle:
    return Rectangle((x0, y0), size, size, fill=True, facecolor="0.5", edgecolor="w", lw=1)


def _swatch(color, label: str) -> Patch:
    return Patch(color=color, label=label)


def _class_cmap(n: int) -> ListedColormap:
    return ListedColormap(matplotlib.colormaps["tab10" if n <= 10 else "tab20"].colors[:n])
