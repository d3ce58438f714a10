"""Pure renderers of the unit statistics (:mod:`dvis.formats.stats`) for the toolbox: the histogram
mode and the correlation mode (one tile image per unit, drawn by the usual tile grid) and the
unit pane's statistics lines. numpy/cv2 only: testable without a window."""
from __future__ import annotations

import numpy as np

from dvis.toolbox.render import Style, put_text
from dvis.errors import DvisError
from dvis.formats.stats import CENTER, HOW_TO, LayerStats, UnitStats, find_stats

#: Tile side of the histogram and correlation tiles (the tile grid scales them to the pane).
TILE = 48
DEAD: tuple[int, int, int] = (200, 40, 40)
RARE: tuple[int, int, int] = (220, 140, 0)
#: What the panes say without statistics (dvis.formats.stats.HOW_TO in pane-wide lines).
MISSING = ["no unit statistics:", "`dvis maxes` or `dvis precompute`", "computes them"]


def hist_range(hist: np.ndarray, tail: float = 1e-3) -> tuple[int, int]:
    """The bins (first, last + 1) holding the layer's pooled scores but for ``tail`` of them at each
    end: one x axis for every tile, not stretched by a few outliers over decades of the log grid."""
    pooled = np.cumsum(hist.sum(0))
    if not pooled[-1]:
        return 0, hist.shape[1]
    lo = int(np.searchsorted(pooled, tail * pooled[-1], side="right"))
    hi = int(np.searchsorted(pooled, (1 - tail) * pooled[-1], side="left")) + 1
    return lo, max(hi, lo + 1)


def hist_tiles(stats: LayerStats, style: Style, tile: int = TILE) -> np.ndarray:
    """N x tile x tile x 3 uint8: each unit's histogram of per-image scores (bar heights relative to
    its own fullest bin) on the layer's common bin range (:func:`hist_range`), the zero bin marked; dead units get a red
    frame and cross, rare ones an orange frame."""
    lo, hi = hist_range(stats.hist)
    h = stats.hist[:, lo:hi].astype(np.float64)
    n, bins = h.shape
    # Column x shows bins [start_x, start_x+1): summed when there are more bins than columns,
    # repeated when fewer.
    starts = (np.arange(tile) * bins) // tile
    cols = np.add.reduceat(h, starts, axis=1) if bins >= tile else h[:, starts]  # N x tile
    heights = np.round(cols / np.maximum(cols.max(1, keepdims=True), 1) * (tile - 4)).astype(np.int64)
    rows = (tile - 2 - np.arange(tile))[None, :, None]  # height above the baseline of each pixel row
    bar = (rows >= 0) & (rows < heights[:, None, :])
    out = np.empty((n, tile, tile, 3), np.uint8)
    out[:] = style.background
    out[bar] = style.positive
    if lo <= CENTER < hi:  # the exact-zero bin's column(s): blue bars, separator grey where empty
        zero = CENTER - lo
        zc = np.nonzero(starts == zero)[0] if bins < tile else [np.searchsorted(starts, zero, side="right") - 1]
        out[:, :, zc] = np.where(bar[:, :, zc][..., None], style.negative, style.separator).astype(np.uint8)
    for flags, color in ((stats.rare, RARE), (stats.dead, DEAD)):
        idx = np.nonzero(flags)[0]
        out[idx, :2], out[idx, -2:], out[idx, :, :2], out[idx, :, -2:] = color, color, color, color
    dead = np.nonzero(stats.dead)[0]
    if len(dead):
        diag = np.arange(2, tile - 2)
        out[dead[:, None], diag, diag] = DEAD
        out[dead[:, None], diag, tile - 1 - diag] = DEAD
    return out


def corr_tiles(corr: np.ndarray | None, selected: int, n_units: int, style: Style, tile: int = TILE) -> np.ndarray:
    """N x tile x tile x 3 uint8: tiles coloured by their correlation with ``selected`` (``corr``,
    one value per unit, NaN outside the subsample): positive towards ``style.positive``, negative
    towards ``style.negative``, NaN grey; the selected unit white."""
    out = np.empty((n_units, tile, tile, 3), np.uint8)
    if corr is None:
        out[:] = style.disabled
        return out
    c = np.nan_to_num(corr, nan=0.0)[:, None]
    bg = np.asarray(style.background, np.float64)
    colors = np.where(c >= 0, bg + c * (np.asarray(style.positive) - bg), bg - c * (np.asarray(style.negative) - bg))
    colors[np.isnan(corr)] = style.disabled
    colors[selected] = (255, 255, 255)
    out[:] = np.round(colors).astype(np.uint8)[:, None, None, :]
    return out


def unit_lines(stats: LayerStats | None, unit: int, classes: list[str], corr_k: int = 3) -> list[str]:
    """The unit pane's statistics lines (or how to compute them)."""
    if stats is None:
        return MISSING
    lines = []
    if stats.dead[unit]:
        lines.append("DEAD: never positive")
    elif stats.rare[unit]:
        lines.append(f"RARE: positive on {stats.frac_images[unit]:.2%} of images")
    else:
        share = lambda f: f"{f:.0%}" if f >= 0.01 or f == 0 else f"{f:.2%}"  # noqa: E731
        lines.append(f"positive on {share(stats.frac_images[unit])} of images, {share(stats.frac_positions[unit])} pos")
    lines.append(f"mean {stats.mean[unit]:.3g} std {stats.std[unit]:.3g} max {stats.max[unit]:.3g}")
    if stats.selectivity is not None:
        si = stats.selectivity[unit]
        lines.append(f"selectivity {si:.2f}" if np.isfinite(si) else "selectivity n/a")
        top = stats.top_classes(unit, 3)
        if top:
            lines.append("top: " + ", ".join(f"{classes[c]} {share:.0%}" for c, share in top))
    near = stats.most_correlated(unit, corr_k)
    if near:
        lines.append("corr: " + ", ".join(f"{u} ({r:.2f})" for u, r in near))
    return lines


def render_lines(pane: np.ndarray, lines: list[str], style: Style) -> None:
    """Draw ``lines`` from the pane's top, outlined so they stay legible over the unit image."""
    lh = style.line_height
    for i, line in enumerate(lines):
        put_text(pane, line, (i + 1) * lh + 2, 4, style, scale=0.85, outline=True)



def correlated_table(stats: UnitStats | None, layers: list[str]) -> tuple[tuple[int, ...], ...]:
    """Per layer, per unit, its most correlated other unit (-1: none or outside the subsample); the
    table :class:`~dvis.toolbox.state.Geometry` carries for the jump key. Empty without statistics."""
    if stats is None:
        return ()
    out = []
    for layer in layers:
        if layer not in stats.shapes:
            out.append(())
            continue
        s = stats.layer(layer)
        c = s.corr.copy()
        np.fill_diagonal(c, np.nan)
        key = np.where(np.isfinite(c), c, -np.inf)
        j = key.argmax(1)
        best = np.full(len(s.mean), -1, np.int64)
        ok = np.isfinite(key.max(1))
        best[s.corr_units[ok]] = s.corr_units[j[ok]]
        out.append(tuple(int(b) for b in best))
    return tuple(out)


def load_stats(model) -> tuple[UnitStats | None, str]:
    """The model's unit statistics and a status message (why there are none, or "")."""
    try:
        stats = find_stats(model)
    except DvisError as exc:
        return None, str(exc)
    return stats, "" if stats is not None else HOW_TO
