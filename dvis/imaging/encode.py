"""Encoding RGB images as PNG, JPEG or WebP: the one encoder of every image dvis writes or sends
(unit sprites, screenshots, the browser page's frames). Decoding is :mod:`dvis.imaging.images`."""
from __future__ import annotations

import os

import cv2
import numpy as np

from dvis.errors import DvisError

#: Format name -> file extension OpenCV encodes by.
EXTENSIONS = {"png": ".png", "jpeg": ".jpg", "webp": ".webp"}


def encode_image(rgb: np.ndarray, fmt: str = "png", quality: int | None = None,
                 png_compression: int | None = None) -> bytes:
    """An HxWx3 uint8 RGB image as ``fmt`` bytes (``png``, ``jpeg`` or ``webp``).

    ``quality`` (0-100) is for JPEG and WebP, ``png_compression`` (zlib level 0-9) for PNG; None
    keeps OpenCV's default (JPEG 95, WebP 100, PNG 3)."""
    if fmt not in EXTENSIONS:
        raise DvisError(f"unknown image format {fmt!r}; expected one of {', '.join(EXTENSIONS)}")
    params = []
    if quality is not None and fmt != "png":
        params = [cv2.IMWRITE_JPEG_QUALITY if fmt == "jpeg" else cv2.IMWRITE_WEBP_QUALITY, quality]
    elif png_compression is not None and fmt == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, png_compression]
    ok, data = cv2.imencode(EXTENSIONS[fmt], cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise DvisError(f"cannot encode a {'x'.join(map(str, rgb.shape[:2]))} image as {fmt}")
    return data.tobytes()


def write_png(path: str | os.PathLike, rgb: np.ndarray) -> None:
    """Write an HxWx3 uint8 RGB image as a PNG file; DvisError naming the file when it cannot."""
    data = encode_image(rgb, "png")
    try:
        with open(path, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise DvisError(f"cannot write {os.fspath(path)}: {exc.strerror or exc}") from None
