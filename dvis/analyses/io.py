"""The experiments' input and output: images in, figures and numbers out."""
from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from dvis.errors import DvisError
from dvis.formats.atomic import atomic_write_bytes, atomic_write_text
from dvis.imaging.datasets import read_sources
from dvis.imaging.labels import class_in_name


def auto_targets(paths: Sequence[str], labels: Sequence[str], spec: str | None) -> list[int | None]:
    """Target class per image: ``spec`` (name or index) for all, else the class named in each file name, else None (top class)."""
    if spec is not None:
        return [resolve_class(labels, spec)] * len(paths)
    return [class_in_name(p, labels) for p in paths]


def load_inputs(model, sources: Sequence[str]) -> tuple[torch.Tensor, list[np.ndarray], list[str]]:
    """Read every image named by ``sources`` (files, folders, list files or tars) through
    :func:`dvis.imaging.datasets.read_sources`: unreadable files are skipped with one warning each and
    counted in the line this prints.

    Returns the normalized batch (N x C x H x W on the model's device), the resized RGB uint8
    images for figures, and the paths of the images read.
    """
    read = read_sources(list(sources))
    print(f"images: {read.summary()}")
    x = torch.cat([model.preprocess(img) for img in read.images])
    return x, [model.deprocess(t) for t in x], read.names


def resolve_class(labels: Sequence[str], spec: str | int) -> int:
    """Class index from a label name or an index (checked against ``labels`` when the model has them)."""
    if isinstance(spec, int) or str(spec).isdigit():
        idx = int(spec)
        if labels and not 0 <= idx < len(labels):
            raise DvisError(f"class index {idx} out of range 0..{len(labels) - 1}")
        return idx
    if spec not in labels:
        raise DvisError(f"unknown class {spec!r}; known: {', '.join(labels) or 'none (model has no labels)'}")
    return list(labels).index(spec)


def save_figure(fig: Figure, path: Path, dpi: int = 100) -> Path:
    """Write ``fig`` as a PNG through the Agg canvas (no display needed); creates the folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format="png")
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_json(path: Path, data) -> Path:
    """Write ``data`` as indented JSON, converting tensors and numpy values to plain lists/numbers."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(data, indent=1, default=_plain) + "\n")
    return path


def _plain(value):
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, (np.ndarray, np.generic)):
        if np.issubdtype(value.dtype, np.floating):
            # 6 significant digits: enough for every figure, and the files stay small.
            return np.vectorize(lambda v: float(f"{v:.6g}"), otypes=[object])(value).tolist()
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")
