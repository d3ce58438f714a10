"""The pixel geometry of per-unit image tiles (:mod:`dvis.formats.unit_vis`'s sprites): top-9
mosaics, optimized-image tiles, seed montages, attribution tiles and sprite columns. Tile sides are
multiples of 16 so JPEG blocks never straddle two units; patches from small inputs are upscaled for
display (bilinear; nearest under 8 px so single pixels stay crisp)."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from dvis.render.tiling import tile

MIN_PATCH = 48  # display size of the smallest patches (32x32 inputs give 3 px conv1 patches)
MOSAIC_SEP = 2
OPT_MIN_SIDE = 64  # optimized images of small inputs (32x32) are upscaled to this for display


def round16(n: int) -> int:
    return -(-n // 16) * 16


def display_size(patch: int, min_patch: int = MIN_PATCH, sep: int = MOSAIC_SEP, n: int = 3) -> int:
    """Patch side (>= ``patch`` and ``min_patch``) making an n x n mosaic a multiple of 16 pixels wide."""
    p = max(patch, min_patch)
    while (n * p + (n - 1) * sep) % 16:
        p += 1
    return p


def upscale(patches: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w, 3) uint8 -> (N, size*, size*, 3), the longer side scaled to ``size``; nearest for
    tiny patches so single pixels stay crisp, bilinear otherwise."""
    n, h, w, _ = patches.shape
    scale = size / max(h, w)
    if scale == 1 or n == 0:
        return patches
    x = torch.from_numpy(patches).permute(0, 3, 1, 2).float()
    mode = "nearest" if max(h, w) < 8 else "bilinear"
    kw = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(x, size=(round(h * scale), round(w * scale)), mode=mode, **kw)
    return out.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def mosaics(patches: np.ndarray, min_patch: int = MIN_PATCH) -> np.ndarray:
    """(units, k, h, w, 3) patches -> (units, S, S, 3) square mosaics (S a multiple of 16), all units
    tiled in one call by folding the units into the channel axis."""
    units, k, h, w, _ = patches.shape
    n = math.ceil(math.sqrt(k))
    p = display_size(max(h, w), min_patch, MOSAIC_SEP, n)
    big = upscale(patches.reshape(units * k, h, w, 3), p)
    bh, bw = big.shape[1:3]
    cells = np.zeros((units, k, p, p, 3), np.uint8)
    oy, ox = (p - bh) // 2, (p - bw) // 2
    cells[:, :, oy:oy + bh, ox:ox + bw] = big.reshape(units, k, bh, bw, 3)
    stacked = cells.transpose(1, 2, 3, 0, 4).reshape(k, p, p, units * 3)
    canvas = tile(stacked, rows=n, cols=n, sep=MOSAIC_SEP, sep_value=0)
    side = canvas.shape[0]
    out = canvas.reshape(side, side, units, 3).transpose(2, 0, 1, 3)
    s16 = round16(side)
    if s16 != side:
        out = np.pad(out, ((0, 0), (0, s16 - side), (0, s16 - side), (0, 0)))
    return np.ascontiguousarray(out)


def opt_tiles(images: np.ndarray) -> np.ndarray:
    """(N, H, W, 3) optimized images -> display tiles with sides multiples of 16 (>= OPT_MIN_SIDE)."""
    n, h, w, _ = images.shape
    side = round16(max(OPT_MIN_SIDE, h, w))
    big = upscale(images, side)
    tiles = np.zeros((n, side, side, 3), np.uint8)
    bh, bw = big.shape[1:3]
    tiles[:, (side - bh) // 2:(side - bh) // 2 + bh, (side - bw) // 2:(side - bw) // 2 + bw] = big
    return tiles


def seed_montages(tiles: np.ndarray, n_seeds: int) -> np.ndarray:
    """(units * seeds, s, s, 3) tiles (unit-major) -> (units, s, s * seeds, 3) one-row montages."""
    side = tiles.shape[1]
    units = len(tiles) // n_seeds
    return tiles.reshape(units, n_seeds, side, side, 3).transpose(0, 2, 1, 3, 4).reshape(units, side, side * n_seeds, 3)


def sprite_cols(n: int, tile_hw: tuple[int, int], max_side: int = 16384) -> int:
    """Columns for ``n`` tiles: roughly square, and never wider than ``max_side`` pixels."""
    cols = max(1, math.ceil(math.sqrt(n * tile_hw[0] / tile_hw[1])))
    return max(1, min(cols, max_side // tile_hw[1], n))


def attribution_tiles(attribution: np.ndarray) -> np.ndarray:
    """(N, H, W) attribution maps -> (N, H, W, 3) uint8 grey images, each scaled to its own maximum."""
    a = np.asarray(attribution, np.float64)
    peak = a.reshape(len(a), -1).max(1).reshape(-1, 1, 1) if len(a) else np.ones((0, 1, 1))
    grey = np.round(255 * a / np.where(peak > 0, peak, 1)).clip(0, 255).astype(np.uint8)
    return np.repeat(grey[..., None], 3, axis=3)
