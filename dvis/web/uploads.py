"""Uploaded images: decoded in memory (never written to disk) with the same checks as image files, and
kept at the size the toolbox shows them, not the size they came in at."""
from __future__ import annotations

import cv2
import numpy as np

from dvis.errors import DvisError
from dvis.imaging.images import read_image


def fit_side(frame: np.ndarray, side: int) -> np.ndarray:
    """``frame`` downscaled (area averaging) so that its longer side is at most ``side`` pixels; a
    smaller frame is returned as it is."""
    h, w = frame.shape[:2]
    if max(h, w) <= side:
        return frame
    scale = side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)


def decode_upload(data: bytes, name: str, side: int) -> np.ndarray:
    """An uploaded file decoded in memory with the same checks as image files (never written to
    disk): :func:`read_image` refuses images over its pixel limit from the header, before decoding.
    The image is kept at most ``side`` pixels on its longer side (:func:`fit_side`), so the memory
    uploads hold is bounded by their count, not by the sizes sent."""
    if not data:
        raise DvisError(f"{name}: empty upload")
    return fit_side(read_image(data, name=name), side)
