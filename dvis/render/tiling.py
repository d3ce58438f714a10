"""Tile many small images into one canvas (feature maps, top-9 mosaics, sprites)."""
from __future__ import annotations

import math

import numpy as np


def grid_shape(n: int, aspect: float = 1.0) -> tuple[int, int]:
    """Rows and columns for ``n`` square tiles so the grid's width/height is close to ``aspect``.

    Chooses the column count minimizing the aspect mismatch among layouts that waste less than a
    row, so a wide pane gets a wide grid.
    """
    if n <= 0:
        return 0, 0
    best = None
    for cols in range(1, n + 1):
        rows = math.ceil(n / cols)
        if (rows - 1) * cols >= n:
            continue
        err = abs(math.log((cols / rows) / aspect))
        if best is None or err < best[0]:
            best = (err, rows, cols)
    return best[1], best[2]


def tile(
    images: np.ndarray,
    rows: int | None = None,
    cols: int | None = None,
    sep: int = 1,
    sep_value: float | int = 0,
    aspect: float = 1.0,
) -> np.ndarray:
    """Tile ``images`` (N x H x W or N x H x W x C) row-major into one array with ``sep``-pixel gaps.

    Missing ``rows``/``cols`` are derived from ``aspect`` (see :func:`grid_shape`); unused cells
    keep ``sep_value``.
    """
    images = np.asarray(images)
    n, h, w = images.shape[:3]
    if rows is None and cols is None:
        rows, cols = grid_shape(n, aspect)
    elif rows is None:
        rows = math.ceil(n / cols)
    elif cols is None:
        cols = math.ceil(n / rows)
    if rows * cols < n:
        raise ValueError(f"a {rows}x{cols} grid cannot hold {n} images")
    canvas = np.full((rows * h + (rows - 1) * sep, cols * w + (cols - 1) * sep) + images.shape[3:],
                     sep_value, dtype=images.dtype)
    padded = np.full((rows * cols,) + images.shape[1:], sep_value, dtype=images.dtype)
    padded[:n] = images
    # Write all tiles at once through a strided view of the canvas instead of a Python loop per tile.
    view = np.lib.stride_tricks.as_strided(
        canvas,
        shape=(rows, cols, h, w) + images.shape[3:],
        strides=(canvas.strides[0] * (h + sep), canvas.strides[1] * (w + sep)) + canvas.strides,
        writeable=True,
    )
    view[...] = padded.reshape((rows, cols) + images.shape[1:])
    return canvas


def tile_origins(rows: int, cols: int, h: int, w: int, sep: int = 1) -> np.ndarray:
    """(rows*cols, 2) array of each tile's top-left (y, x) in a canvas made by :func:`tile`."""
    r, c = np.divmod(np.arange(rows * cols), cols)
    return np.stack([r * (h + sep), c * (w + sep)], axis=1)
