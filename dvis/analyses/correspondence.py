"""Correspondence analysis (Zeiler & Fergus, Table 1): occlude the same object part in several
images and measure how consistently the sign of the feature change agrees across the images."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from tqdm import tqdm

from dvis.analyses.common import batch_slices, logits_and_features
from dvis.errors import DvisError
from dvis.imaging.images import read_image
from dvis.engine.layers import check_layers

RANDOM = "random"


@dataclass
class PartSpec:
    """Images of one object kind with the same named part boxes in each.

    ``boxes[part]`` is N x 4 (top, left, bottom, right; bottom/right exclusive) in each image's own pixels.
    """

    paths: list[Path]
    boxes: dict[str, torch.Tensor]
    layers: list[str]
    random_count: int
    seed: int


def load_spec(path: str | Path) -> PartSpec:
    """Read a YAML spec::

        layers: [pool5, fc7]            # optional
        random: {count: 5, seed: 0}     # optional random boxes, part-sized
        images:
          - path: dog1.png              # relative to the spec file
            parts: {left_eye: [t, l, b, r], right_eye: [...], nose: [...]}
    """
    path = Path(path)
    if not path.is_file():
        raise DvisError(f"spec file not found: {path}")
    try:
        spec = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise DvisError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from exc
    images = spec.get("images") or []
    if len(images) < 2:
        raise DvisError(f"{path}: a correspondence spec needs at least 2 images, found {len(images)}")
    names = list((images[0].get("parts") or {}).keys())
    if not names or RANDOM in names:
        raise DvisError(f"{path}: the first image lists no parts (and '{RANDOM}' is reserved)")
    for i, item in enumerate(images):
        if sorted((item.get("parts") or {}).keys()) != sorted(names):
            raise DvisError(f"{path}: image {i} ({item.get('path')}) must list exactly the parts {', '.join(names)}")
    boxes = {}
    for name in names:
        values = [item["parts"][name] for item in images]
        if any(not isinstance(b, list) or len(b) != 4 for b in values):
            raise DvisError(f"{path}: every '{name}' box must be [top, left, bottom, right]")
        boxes[name] = torch.tensor(values, dtype=torch.float64)
    rnd = spec.get("random") or {}
    return PartSpec(
        paths=[(path.parent / item["path"]) for item in images],
        boxes=boxes,
        layers=list(spec.get("layers") or []),
        random_count=int(rnd.get("count", 5)),
        seed=int(rnd.get("seed", 0)),
    )


def scale_boxes(boxes: torch.Tensor, sizes: torch.Tensor, input_size: tuple[int, int], names: Sequence[str] = ()) -> torch.Tensor:
    """Boxes (N x 4, image pixels) of images of ``sizes`` (N x 2) mapped to the model input, as integers.

    A box that is empty or reaches outside its image raises a one-line :class:`DvisError`.
    """
    t, l, b, r = boxes.unbind(1)
    h, w = sizes.double().unbind(1)
    bad = (t < 0) | (l < 0) | (b > h) | (r > w) | (b <= t) | (r <= l)
    if bad.any():
        i = int(bad.nonzero()[0])
        label = names[i] if i < len(names) else f"image {i}"
        raise DvisError(f"box {boxes[i].int().tolist()} is empty or outside {label} ({int(h[i])}x{int(w[i])})")
    sy, sx = input_size[0] / h, input_size[1] / w
    scaled = torch.stack([(t * sy).floor(), (l * sx).floor(), (b * sy).ceil(), (r * sx).ceil()], 1)
    return scaled.long()


def random_boxes(n: int, count: int, box_hw: tuple[int, int], input_size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """``count`` x N x 4 boxes of size ``box_hw`` placed uniformly at random inside each image, independently per image."""
    gen = torch.Generator().manual_seed(seed)
    bh, bw = box_hw
    top = torch.randint(0, input_size[0] - bh + 1, (count, n), generator=gen)
    left = torch.randint(0, input_size[1] - bw + 1, (count, n), generator=gen)
    return torch.stack([top, left, top + bh, left + bw], 2)


def part_boxes(spec: PartSpec, names: Sequence[str], input_size: tuple[int, int], random_count: int,
               seed: int) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Each part's boxes of ``spec`` scaled from its images (``names`` for messages) to
    ``input_size``, plus ``random_count`` sets of random boxes (the :data:`RANDOM` part) of the
    parts' median height and width; returns (boxes per part, that median size)."""
    sizes = torch.tensor([read_image(p).shape[:2] for p in spec.paths])
    boxes = {part: scale_boxes(b, sizes, input_size, names) for part, b in spec.boxes.items()}
    hw = torch.cat([b[:, 2:] - b[:, :2] for b in boxes.values()]).median(0).values
    if random_count > 0:
        boxes[RANDOM] = random_boxes(len(names), random_count, tuple(hw.tolist()), input_size, seed)
    return boxes, hw


def occlude_boxes(x: torch.Tensor, boxes: torch.Tensor, fill: float = 0.0) -> torch.Tensor:
    """Copy of ``x`` (N x C x H x W) with box i (N x 4, integer) of image i set to ``fill``."""
    h, w = x.shape[-2:]
    ys, xs = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    b = boxes.to(x.device)
    rows = (ys[None] >= b[:, :1]) & (ys[None] < b[:, 2:3])
    cols = (xs[None] >= b[:, 1:2]) & (xs[None] < b[:, 3:4])
    mask = (rows[:, :, None] & cols[:, None, :])[:, None]
    return torch.where(mask, torch.as_tensor(fill, dtype=x.dtype, device=x.device), x)


def hamming_consistency(signs: torch.Tensor) -> tuple[float, float]:
    """Mean and std over image pairs i < j of the normalized Hamming distance between sign vectors (N x D, values -1/0/1).

    This is the paper's Delta: 0 when every image's features change the same way.
    """
    n, d = signs.shape
    equal = sum((signs == v).double() @ (signs == v).double().T for v in (-1, 0, 1))
    i, j = torch.triu_indices(n, n, 1)
    dist = 1 - equal[i, j] / d
    return float(dist.mean()), float(dist.std()) if len(dist) > 1 else 0.0


@torch.no_grad()
def correspondence(
    model_or_net,
    x: torch.Tensor,
    part_boxes: dict[str, torch.Tensor],
    layers: Sequence[str],
    fill: float = 0.0,
    rectify: bool = True,
    batch_size: int = 64,
    progress: bool = False,
) -> dict[str, dict[str, tuple[float, float]]]:
    """Delta (mean, std) per part and layer for normalized images ``x`` (N x C x H x W).

    ``part_boxes[part]`` holds one integer box per image in input pixels (N x 4), or several
    box sets (R x N x 4) whose Deltas are pooled, as for random boxes. The feature difference is
    original minus occluded, rectified first when ``rectify`` (conv/fc outputs that are pre-ReLU).
    """
    layers = check_layers(model_or_net, layers)
    n = x.shape[0]
    _, feats = logits_and_features(model_or_net, x, layers)
    base = {k: (v.clamp_min(0) if rectify else v).flatten(1) for k, v in feats.items()}
    sets = {p: (b if b.ndim == 3 else b[None]) for p, b in part_boxes.items()}
    for p, b in sets.items():
        if b.shape[1:] != (n, 4):
            raise DvisError(f"part {p}: expected one box per image ({n} x 4), got {tuple(b.shape)}")
    # All occluded copies of all parts as one stream of images, batched.
    order = [(p, r) for p, b in sets.items() for r in range(len(b))]
    occluded_boxes = torch.cat([sets[p][r] for p, r in order])
    image_of = torch.arange(n).repeat(len(order))
    signs = {k: [] for k in layers}
    for sl in tqdm(list(batch_slices(len(image_of), batch_size)), desc="correspondence", disable=not progress, leave=False):
        idx = image_of[sl].to(x.device)
        _, f = logits_and_features(model_or_net, occlude_boxes(x[idx], occluded_boxes[sl], fill), layers)
        for k, v in f.items():
            signs[k].append(torch.sign(base[k][idx] - (v.clamp_min(0) if rectify else v).flatten(1)).to(torch.int8).cpu())
    signs = {k: torch.cat(v).view(len(order), n, -1) for k, v in signs.items()}
    table: dict[str, dict[str, tuple[float, float]]] = {}
    for p in sets:
        rows = [i for i, (q, _) in enumerate(order) if q == p]
        table[p] = {}
        for k in layers:
            stats = torch.tensor([hamming_consistency(signs[k][i]) for i in rows])
            table[p][k] = (float(stats[:, 0].mean()), float(stats[:, 1].mean()))
    return table


def plot_correspondence(images: Sequence[np.ndarray], boxes: dict[str, torch.Tensor], table: dict[str, dict[str, tuple[float, float]]]) -> Figure:
    """The images with their part boxes (random boxes: first set) above a bar chart of Delta per part and layer."""
    n = len(images)
    fig = Figure(figsize=(max(8, 1.6 * n), 6), layout="constrained")
    top, bottom = fig.subfigures(2, 1, height_ratios=(1, 1.6))
    axes = top.subplots(1, n, squeeze=False)[0]
    colors = {p: f"C{i}" for i, p in enumerate(table)}
    for i, (ax, img) in enumerate(zip(axes, images)):
        ax.imshow(img, interpolation="nearest")
        for p, b in boxes.items():
            t, l, btm, r = (b[0] if b.ndim == 3 else b)[i].tolist()
            ax.add_patch(_rect(l - 0.5, t - 0.5, r - l, btm - t, colors[p]))
        ax.set_axis_off()
    ax = bottom.subplots()
    parts, layers = list(table), list(next(iter(table.values())))
    width = 0.8 / len(parts)
    for i, p in enumerate(parts):
        means = [table[p][k][0] for k in layers]
        stds = [table[p][k][1] for k in layers]
        ax.bar(np.arange(len(layers)) + (i - (len(parts) - 1) / 2) * width, means, width, yerr=stds,
               color=colors[p], label=p, capsize=2)
    ax.set_xticks(np.arange(len(layers)), layers)
    ax.set_ylabel("Delta (mean Hamming distance of sign changes)")
    ax.set_title("lower = more consistent correspondence", fontsize=9)
    ax.legend(fontsize=8)
    return fig


def _rect(x0: float, y0: float, w: float, h: float, color: str) -> Rectangle:
    return Rectangle((x0, y0), w, h, fill=False, edgecolor=color, lw=1.5)
