"""Frame encoding: changed rectangles -> raw RGB bytes or images (JPEG, WebP, PNG), several rectangles
packed into one atlas image on JPEG's block grid."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from dvis.imaging.encode import encode_image
from dvis.web.frames import Rect

RAW_MAX_PIXELS = 4096  # a changed rectangle this small goes raw (RGB bytes): no encode, no decode

ATLAS_GRID = 16  # JPEG's largest block (the 4:2:0 MCU): a cell on this grid is coded in blocks of its own
# Pixels of a piece's own edge repeated around it inside its cell: the decoder's chroma upsampling
# blends each pixel with its neighbours' colour, so a piece touching its cell's border took colour
# from the next cell (a thin yellow outline bled 37-66 levels into the grey piece beside it).
ATLAS_PAD = 2


def encode(canvas: np.ndarray, fmt: str, quality: int) -> bytes:
    """RGB canvas -> image bytes in ``fmt`` (see :data:`FORMATS`); PNG at the fastest compression."""
    return encode_image(canvas, fmt, quality, png_compression=1)


def cells(v: int) -> int:
    """``v`` pixels and the padding on both sides, rounded up to whole :data:`ATLAS_GRID` cells."""
    return -(-(v + 2 * ATLAS_PAD) // ATLAS_GRID) * ATLAS_GRID


def atlas_layout(sizes: list[tuple[int, int]]) -> tuple[tuple[int, int], list[tuple[int, int, int, int, int, int]]]:
    """Shelf packing of rectangles of ``sizes`` (h, w) into one image, each in its own cells of
    :data:`ATLAS_GRID`, :data:`ATLAS_PAD` in from the cells' border: (height, width) of the atlas
    and the pieces (index into sizes, x offset in that rectangle, h, w, atlas y, atlas x of the
    piece). Rectangles wider than the atlas are cut into pieces."""
    width = max(4 * ATLAS_GRID, cells(math.isqrt(sum(h * w for h, w in sizes))))
    span = width - 2 * ATLAS_PAD  # the widest piece a row of cells holds
    pieces = sorted(((i, x, h, min(span, w - x)) for i, (h, w) in enumerate(sizes) for x in range(0, w, span)),
                    key=lambda p: -p[2])
    placed, y, x, shelf = [], 0, 0, 0
    for i, dx, h, w in pieces:
        if x + cells(w) > width:
            y, x, shelf = y + shelf, 0, 0
        placed.append((i, dx, h, w, y + ATLAS_PAD, x + ATLAS_PAD))
        x, shelf = x + cells(w), max(shelf, cells(h))
    return (y + shelf, width), placed


def atlas(subs: list[np.ndarray]) -> tuple[np.ndarray, list[tuple[int, int, int, int, int, int]]]:
    """The images ``subs`` packed by :func:`atlas_layout`, each cell's padding a copy of its piece's
    edge rows and columns (as JPEG pads an image's own edges)."""
    (ah, aw), placed = atlas_layout([s.shape[:2] for s in subs])
    out = np.zeros((ah, aw, 3), np.uint8)  # the space no cell covers: flat, so it costs no bytes
    p = ATLAS_PAD
    for i, dx, h, w, y, x in placed:
        out[y - p:y - p + cells(h), x - p:x - p + cells(w)] = cv2.copyMakeBorder(
            subs[i][:, dx:dx + w], p, cells(h) - h - p, p, cells(w) - w - p, cv2.BORDER_REPLICATE)
    return out, placed


def encode_delta(canvas: np.ndarray, rects: list[Rect], fmt: str, quality: int,
                 pool: ThreadPoolExecutor | None = None) -> tuple[list[list[int]], bytes]:
    """The images of ``rects`` of ``canvas``: header entries [x, y, w, h, nbytes, raw, sx, sy] and
    the data concatenated in their order. Small rectangles (<= RAW_MAX_PIXELS) are raw RGB bytes
    (raw = 1). The others are images in ``fmt``: the largest alone, the rest packed in one atlas
    (:func:`atlas`), since a browser pays ~1 ms per image on top of decoding; an entry with nbytes
    > 0 starts an image, one with 0 is a piece of the image before it, at (sx, sy) in it. With
    ``pool``, the atlas is encoded there while this thread encodes the largest (OpenCV releases
    the GIL)."""
    subs = [canvas[t:t + h, l:l + w] for t, l, h, w in rects]
    big = sorted((i for i, (_, _, h, w) in enumerate(rects) if h * w > RAW_MAX_PIXELS),
                 key=lambda i: -rects[i][2] * rects[i][3])
    groups = [big[:1], big[1:]] if len(big) > 2 else [[i] for i in big]
    images = []  # (the image, its pieces: (rect index, x offset in the rect, h, w, y, x in the image))
    for g in groups:
        if len(g) == 1:
            h, w = subs[g[0]].shape[:2]
            images.append((subs[g[0]], [(g[0], 0, h, w, 0, 0)]))
        else:
            img, placed = atlas([subs[i] for i in g])
            images.append((img, [(g[i], dx, h, w, y, x) for i, dx, h, w, y, x in placed]))
    futures = [pool.submit(encode, img, fmt, quality) for img, _ in images[1:]] if pool is not None else []
    data = [encode(images[0][0], fmt, quality)] if images else []
    data += [f.result() for f in futures] if pool is not None else [encode(img, fmt, quality) for img, _ in images[1:]]
    entries, parts = [], []
    for (_, pieces), blob in zip(images, data):
        for k, (i, dx, h, w, y, x) in enumerate(pieces):
            entries.append([rects[i][1] + dx, rects[i][0], w, h, len(blob) if k == 0 else 0, 0, x, y])
        parts.append(blob)
    for i, sub in enumerate(subs):
        if i not in big:
            entries.append([rects[i][1], rects[i][0], rects[i][3], rects[i][2], sub.nbytes, 1, 0, 0])
            parts.append(sub.tobytes())
    return entries, b"".join(parts)
