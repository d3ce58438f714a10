"""``dvis.show_image``: arrays as images in a notebook cell, with no plotting code.

What the toolbox shows, shown the same way: a uint8 image as it is, a back-projection (a
1xCxHxW / CxHxW gradient, what :func:`dvis.backproject` returns) through
:func:`~dvis.render.backfilter.back_filter`, a float map (an occlusion map, an activation channel)
scaled to its range in a colour map. Small images are enlarged with square pixels.
"""
from __future__ import annotations

import base64
import html

import cv2
import numpy as np

from dvis.errors import DvisError
from dvis.imaging.encode import encode_image
from dvis.render.backfilter import back_filter
from dvis.render.tiling import tile

MIN_SIDE = 160  # smaller images are enlarged by whole pixels to about this size


def _numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor (torch is not imported here for it)
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def to_rgb(x, mode: str = "raw") -> np.ndarray:
    """``x`` as an HxWx3 uint8 image: uint8 HxW / HxWx3 / HxWx4 kept; a float 1xCxHxW / CxHxW with
    C in (1, 3) a gradient (``back_filter(x, mode)``); a float HxW map scaled to its range (viridis)."""
    arr = _numpy(x)
    if arr.dtype == np.uint8 and arr.ndim == 2:
        return np.repeat(arr[..., None], 3, axis=2)
    if arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] in (3, 4):
        return np.ascontiguousarray(arr[..., :3])
    if arr.dtype == bool:
        arr = arr.astype(np.float32)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 3 and arr.shape[0] in (1, 3):
        return back_filter(arr, mode)
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim == 2 and arr.size:
        finite = np.where(np.isfinite(arr), arr, np.nan).astype(np.float64)
        lo, hi = np.nanmin(finite), np.nanmax(finite)
        scaled = np.nan_to_num((finite - lo) / (hi - lo) if hi > lo else finite * 0)
        grey = np.round(scaled * 255).astype(np.uint8)
        return cv2.cvtColor(cv2.applyColorMap(grey, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    raise DvisError(f"show_image: cannot show an array of shape {arr.shape} and type {arr.dtype}; give an HxW(x3) "
                    "image, a 1xCxHxW / CxHxW gradient or an HxW map")


def enlarge(img: np.ndarray, min_side: int = MIN_SIDE) -> np.ndarray:
    """``img`` repeated by a whole factor so that its longer side is about ``min_side`` (never shrunk)."""
    k = max(1, min_side // max(img.shape[:2]))
    return np.repeat(np.repeat(img, k, axis=0), k, axis=1) if k > 1 else img


class Picture:
    """An RGB image that a notebook shows (PNG), with an optional title; ``array`` is the image."""

    def __init__(self, array: np.ndarray, title: str | None = None):
        self.array, self.title = array, title

    def png(self) -> bytes:
        return encode_image(self.array, "png", 0, png_compression=3)

    def _repr_png_(self) -> bytes:
        return self.png()

    def _repr_html_(self) -> str | None:
        if not self.title:
            return None  # the PNG alone
        src = "data:image/png;base64," + base64.b64encode(self.png()).decode()
        caption = f"<figcaption>{html.escape(self.title)}</figcaption>"
        return (f'<figure class="dvis-image" style="margin:0"><img src="{src}" '
                f'style="image-rendering:pixelated" alt="{html.escape(self.title)}">{caption}</figure>')

    def __repr__(self) -> str:
        return f"Picture({self.array.shape[1]}x{self.array.shape[0]}{', ' + repr(self.title) if self.title else ''})"


def show_image(x, *, mode: str = "raw", title: str | None = None, min_side: int = MIN_SIDE) -> Picture:
    """``x`` as an image in the notebook (see :func:`to_rgb` for what it takes; ``mode``: the back
    filter of a gradient: raw, gray, norm, normblur). A list shows its images side by side. Images
    under ``min_side`` pixels are enlarged with square pixels."""
    if isinstance(x, (list, tuple)):
        if not x:
            raise DvisError("show_image: an empty list")
        images = [enlarge(to_rgb(a, mode), min_side) for a in x]
        h, w = max(a.shape[0] for a in images), max(a.shape[1] for a in images)
        padded = [np.pad(a, ((0, h - a.shape[0]), (0, w - a.shape[1]), (0, 0)), constant_values=255) for a in images]
        img = tile(np.stack(padded), rows=1, sep=4, sep_value=255)
    else:
        img = enlarge(to_rgb(x, mode), min_side)
    return Picture(img, title)
