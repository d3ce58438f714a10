"""Feature evolution during training (Zeiler & Fergus, Fig. 4): for chosen units, the strongest
patch over a probe set at each checkpoint and its deconvnet projection; plus, per layer, how
close each checkpoint's unit responses already are to the final ones."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from matplotlib.figure import Figure
from tqdm import tqdm

from dvis.analyses.common import batch_slices, logits_and_features
from dvis.engine.backproject import backproject_batch
from dvis.render.backfilter import back_filter
from dvis.errors import DvisError
from dvis.engine.geometry import model_geometry, to_maps
from dvis.engine.layers import check_layers
from dvis.engine.receptive_field import receptive_field
from dvis.render.tiling import tile

#: Side of one patch or projection in the figure, in pixels.
CELL = 32


@torch.no_grad()
def unit_maxima(model_or_net, x: torch.Tensor, layers: Sequence[str], batch_size: int = 64) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, every unit's largest response in each image and where it is.

    Returns layer -> (values N x C, flat spatial index N x C; 0 for fc layers).
    """
    out: dict[str, list] = {k: [] for k in layers}
    geo = model_geometry(model_or_net, tuple(x.shape[-2:]), channels=x.shape[1])
    for sl in batch_slices(x.shape[0], batch_size):
        _, feats = logits_and_features(model_or_net, x[sl], layers)
        for k, v in feats.items():
            v = to_maps(v, geo[k])  # channels-last and token layers as C x H x W maps
            flat = v.flatten(2) if v.ndim > 2 else v[..., None]
            out[k].append(flat.max(2))
    return {k: (torch.cat([m.values for m in v]).cpu(), torch.cat([m.indices for m in v]).cpu()) for k, v in out.items()}


def response_correlation(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per unit, Pearson correlation over images between two N x C response matrices (0 for a constant unit)."""
    a, b = a - a.mean(0), b - b.mean(0)
    den = a.norm(dim=0) * b.norm(dim=0)
    return torch.where(den > 0, (a * b).sum(0) / den.clamp_min(1e-30), torch.zeros_like(den))


@dataclass
class Evolution:
    """Per checkpoint (E) and unit (U): the top probe image, its position, value, and the display crops."""

    checkpoints: list[str]
    units: list[tuple[str, int]]
    values: torch.Tensor          # E x U
    images: torch.Tensor          # E x U, probe index
    positions: torch.Tensor       # E x U x 2 (y, x) in the layer's map; 0, 0 for fc
    patches: np.ndarray           # E x U x CELL x CELL x 3 uint8
    projections: np.ndarray       # E x U x CELL x CELL x 3 uint8
    convergence: dict[str, torch.Tensor]  # layer -> E, mean correlation with the final checkpoint

    def summary(self, paths: Sequence[str] = ()) -> dict:
        """JSON-ready numbers."""
        return {
            "checkpoints": self.checkpoints,
            "units": [f"{k}:{u}" for k, u in self.units],
            "max_activation": self.values,
            "top_image": self.images,
            "top_image_path": [[paths[i] for i in row] for row in self.images.tolist()] if paths else None,
            "position": self.positions,
            "convergence": self.convergence,
        }


def _cell(img: np.ndarray) -> np.ndarray:
    """An HxWx3 crop resized to the figure's CELL x CELL, keeping pixels crisp."""
    return cv2.resize(np.ascontiguousarray(img), (CELL, CELL), interpolation=cv2.INTER_NEAREST)


def _top_units(maxima: dict, units: Sequence[tuple[str, int]], spatial_w: dict[str, int]) -> tuple[torch.Tensor, ...]:
    """Value, probe index and (y, x) of each unit's strongest response, one batched lookup per layer."""
    values = torch.empty(len(units))
    images = torch.empty(len(units), dtype=torch.long)
    positions = torch.empty(len(units), 2, dtype=torch.long)
    for layer in dict.fromkeys(k for k, _ in units):
        sel = torch.tensor([i for i, (k, _) in enumerate(units) if k == layer])
        channels = torch.tensor([units[i][1] for i in sel])
        vals, where = maxima[layer]
        values[sel], images[sel] = vals[:, channels].max(0)
        flat = where[images[sel], channels]
        positions[sel] = torch.stack([flat // spatial_w[layer], flat % spatial_w[layer]], 1)
    return values, images, positions


def feature_evolution(
    model,
    checkpoints: Sequence[str | Path],
    x: torch.Tensor,
    units: Sequence[tuple[str, int]],
    batch_size: int = 64,
    mode: str = "deconv",
    progress: bool = False,
) -> Evolution:
    """Top patch and projection of each (layer, unit) over probe images ``x`` at every checkpoint.

    ``model`` is a :class:`dvis.models.loading.LoadedModel` (its ``load_weights`` loads each
    checkpoint); its original weights are restored afterwards.
    """
    if not checkpoints:
        raise DvisError("no checkpoints given (and the model lists none)")
    layers = check_layers(model, list(dict.fromkeys(k for k, _ in units)))
    original = {k: v.clone() for k, v in model.net.state_dict().items()}
    source = model.weights_source
    geo = model_geometry(model, tuple(x.shape[-2:]), channels=x.shape[1])
    for layer, unit in units:
        if not 0 <= unit < geo[layer].channels:
            raise DvisError(f"unit {unit} out of range 0..{geo[layer].channels - 1} for layer {layer}")
    spatial_w = {k: geo[k].grid[1] if geo[k].spatial else 1 for k in layers}
    fields = {k: receptive_field(model, k, tuple(x.shape[-2:])) for k in layers}  # fc: the whole input
    pixels = [model.deprocess(t) for t in x]
    rows = []
    try:
        for ckpt in tqdm(checkpoints, desc="checkpoints", disable=not progress, leave=False):
            model.load_weights(ckpt)
            maxima = unit_maxima(model, x, layers, batch_size)
            values, images, positions = _top_units(maxima, units, spatial_w)
            projections = torch.empty((len(units),) + tuple(x.shape[1:]))
            for layer in layers:
                sel = [i for i, (k, _) in enumerate(units) if k == layer]
                # backproject_batch ignores positions for fc layers.
                projections[sel] = backproject_batch(model, x[images[sel].to(x.device)], layer,
                                                     [units[i][1] for i in sel], mode, positions[sel]).cpu()
            boxes = [fields[k].box(y, xx) for (k, _), (y, xx) in zip(units, positions.tolist())]
            patches = np.stack([_cell(pixels[int(n)][t:b, l:r]) for n, (t, l, b, r) in zip(images, boxes)])
            # Signed projections around grey, as in the paper, each scaled within its own field.
            projs = np.stack([_cell(back_filter(p[:, t:b, l:r], "raw")) for p, (t, l, b, r) in zip(projections, boxes)])
            rows.append((values, images, positions, patches, projs, {k: maxima[k][0] for k in layers}))
    finally:
        model.net.load_state_dict(original)
        model.weights_source = source
    final = rows[-1][5]
    return Evolution(
        checkpoints=[Path(c).stem for c in checkpoints],
        units=list(units),
        values=torch.stack([r[0] for r in rows]),
        images=torch.stack([r[1] for r in rows]),
        positions=torch.stack([r[2] for r in rows]),
        patches=np.stack([r[3] for r in rows]),
        projections=np.stack([r[4] for r in rows]),
        convergence={k: torch.stack([response_correlation(r[5][k], final[k]).mean() for r in rows]) for k in layers},
    )


def plot_evolution(evo: Evolution) -> Figure:
    """Units as rows, checkpoints as columns, each cell the projection beside its patch (the paper's
    Fig. 4), with the per-layer convergence curves below."""
    e, u = evo.patches.shape[:2]
    pairs = np.concatenate([evo.projections, np.full((e, u, CELL, 2, 3), 255, np.uint8), evo.patches], axis=3)
    canvas = tile(pairs.transpose(1, 0, 2, 3, 4).reshape((u * e,) + pairs.shape[2:]), rows=u, cols=e, sep=4, sep_value=255)
    fig = Figure(figsize=(max(6, 1.2 * e + 1.5), 0.62 * u + 3.2), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(0.62 * u + 0.4, 2.6))
    ax = top.subplots()
    ax.imshow(canvas, interpolation="nearest")
    cell_w, cell_h = 2 * CELL + 2 + 4, CELL + 4
    ax.set_xticks(np.arange(e) * cell_w + cell_w / 2 - 2, evo.checkpoints, fontsize=8)
    ax.set_yticks(np.arange(u) * cell_h + CELL / 2, [f"{k}:{n}" for k, n in evo.units], fontsize=8)
    ax.tick_params(length=0)
    ax.xaxis.tick_top()
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_title("strongest probe patch per checkpoint: projection | patch", fontsize=9)
    conv = bottom.subplots()
    for k, v in evo.convergence.items():
        conv.plot(range(e), v.numpy(), marker="o", label=k)
    conv.set_xticks(range(e), evo.checkpoints, fontsize=8)
    conv.set_ylabel("corr. with final responses", fontsize=8)
    conv.legend(fontsize=7)
    return fig
