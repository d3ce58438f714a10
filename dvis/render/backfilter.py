"""Back filters: turn an input-space gradient into an RGB image, as the original toolbox's back pane."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from dvis.constants import BACK_FILTERS
from dvis.errors import DvisError


#: The original toolbox blurred with sigma 4 px on 227 px inputs; other sizes scale with it.
BLUR_SIGMA_PER_PX = 4.0 / 227


def _chw(grad) -> np.ndarray:
    arr = grad.detach().cpu().numpy() if isinstance(grad, torch.Tensor) else np.asarray(grad)
    if arr.ndim == 4 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 3 or arr.size == 0:
        raise DvisError(f"back filter needs a 1xCxHxW or CxHxW gradient, got shape {arr.shape}")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        raise DvisError("back filter got a gradient with NaN or inf values")
    return arr


def _to_unit(img: np.ndarray) -> np.ndarray:
    """Scale a non-negative map to [0, 1] by its max; an all-zero map stays zero."""
    peak = img.max()
    return img / peak if peak > 0 else img


def back_filter(grad, mode: str = "raw", blur_sigma: float | None = None) -> np.ndarray:
    """Render a 1xCxHxW / CxHxW gradient as an HxWx3 uint8 image.

    ``raw``: signed values around grey 128, scaled by the max absolute value (C must be 1 or 3);
    ``gray``: mean absolute value over channels; ``norm``: L2 norm over channels; ``normblur``:
    the norm blurred with a Gaussian (``blur_sigma`` px, default scaled from the original
    toolbox's 4 px at 227 px). The last three are scaled so the maximum is white.
    """
    if mode not in BACK_FILTERS:
        raise DvisError(f"unknown back filter {mode!r}; use one of {', '.join(BACK_FILTERS)}")
    arr = _chw(grad)
    if mode == "raw":
        if arr.shape[0] not in (1, 3):
            raise DvisError(f"raw back filter needs 1 or 3 channels, got {arr.shape[0]}")
        peak = np.abs(arr).max()
        img = 0.5 + 0.5 * (arr / peak if peak > 0 else arr)
        img = np.broadcast_to(img.transpose(1, 2, 0), arr.shape[1:] + (3,))
    else:
        if mode == "gray":
            img = np.abs(arr).mean(axis=0)
        else:
            img = np.sqrt((arr**2).sum(axis=0))
        if mode == "normblur":
            sigma = blur_sigma if blur_sigma is not None else BLUR_SIGMA_PER_PX * max(img.shape)
            img = cv2.GaussianBlur(img, (0, 0), sigma) if sigma > 0 else img
        img = np.repeat(_to_unit(img)[:, :, None], 3, axis=2)
    return np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
