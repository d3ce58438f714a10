"""Uploaded images: decoded in memory (never written to disk) with the same checks as image files."""
from __future__ import annotations


import numpy as np

from dvis.errors import DvisError
from dvis.imaging.images import read_image


def decode_upload(data: bytes, name: str) -> np.ndarray:
    """An uploaded file decoded in memory with the same checks as image files (never written to
    disk): :func:`read_image` refuses images over its pixel limit from the header, before decoding."""
    if not data:
        raise DvisError(f"{name}: empty upload")
    return read_image(data, name=name)
