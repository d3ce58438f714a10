"""Pane renderers: pure functions that draw into numpy RGB uint8 canvases (or views of one).

Nothing here touches a window, a model or a thread, so every pane is testable on known arrays.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from dvis.render.tiling import grid_shape, tile, tile_origins

FONT = cv2.FONT_HERSHEY_SIMPLEX
RGB = tuple[int, int, int]


class NotThere(enum.Enum):
    """Why a unit image has no array: still loading, or absent (not computed, unreadable). Its value
    is the caption shown in its place."""

    LOADING = "loading"
    ABSENT = "not computed"



@dataclass(frozen=True)
class Style:
    """Colours and text size shared by all panes."""

    text: RGB = (230, 230, 230)
    background: RGB = (24, 24, 24)
    disabled: RGB = (60, 60, 60)
    stale: RGB = (77, 77, 51)
    selected: RGB = (255, 215, 0)
    frozen: RGB = (0, 200, 255)
    rf_box: RGB = (0, 255, 0)
    positive: RGB = (255, 170, 40)
    negative: RGB = (40, 140, 255)
    separator: int = 70  # gray level of the 1-px lines between tiles (visible around all-zero tiles)
    font_size: float = 0.45  # cv2 font scale of normal text

    @property
    def line_height(self) -> int:
        return max(8, int(round(self.font_size * 40)))


# ---------------------------------------------------------------- text and placement


def put_text(img: np.ndarray, text: str, y: int, x: int, style: Style, color: RGB | None = None,
             scale: float = 1.0, outline: bool = False) -> None:
    """Draw one line of text whose baseline is at row ``y``; ``outline`` gives it a dark backing (the
    box behind it at a quarter of its brightness) so it stays legible over bright images."""
    size = style.font_size * scale
    thickness = max(1, int(round(size * 2.2)))
    if outline:
        (w, h), base = cv2.getTextSize(text, FONT, size, thickness)
        box = img[max(0, int(y) - h - 3):int(y) + base, max(0, int(x) - 3):int(x) + w + 3]
        np.right_shift(box, 2, out=box)
    cv2.putText(img, text, (int(x), int(y)), FONT, size, color or style.text, thickness, cv2.LINE_AA)


def text_width(text: str, style: Style, scale: float = 1.0) -> int:
    size = style.font_size * scale
    return cv2.getTextSize(text, FONT, size, max(1, int(round(size * 2.2))))[0][0]


def wrap_text(text: str, max_w: int, style: Style, scale: float = 1.0) -> list[str]:
    """``text`` in lines at most ``max_w`` pixels wide, broken at newlines and spaces; a word wider than a line
    keeps its end (:func:`fit_text`: a layer name's end, with the unit number, tells it apart)."""
    lines: list[str] = []
    for paragraph in text.split("\n"):  # a newline always breaks
        start = len(lines)
        for word in paragraph.split():
            joined = f"{lines[-1]} {word}" if len(lines) > start else word
            if len(lines) > start and text_width(joined, style, scale) <= max_w:
                lines[-1] = joined
            else:
                lines.append(fit_text(word, max_w, style, scale))
    return lines


def draw_caption(pane: np.ndarray, text: str, style: Style, scale: float = 0.9, top: bool = False,
                 color: RGB | None = None) -> int:
    """``text`` wrapped to the pane's width on a dark backing, in lines up from its bottom edge (down
    from its top with ``top``); returns the rows it took."""
    lines = wrap_text(text, pane.shape[1] - 8, style, scale)
    lh = int(round(style.line_height * scale)) + 3
    lines = lines[-max(1, (pane.shape[0] - 4) // lh):]  # more than the pane holds: keep the last lines
    for i, line in enumerate(lines):
        y = (i + 1) * lh if top else pane.shape[0] - 6 - (len(lines) - 1 - i) * lh
        put_text(pane, line, y, 4, style, color, scale=scale, outline=True)
    return len(lines) * lh + 4

def paint(pane: np.ndarray, color: RGB) -> None:
    """Fill the pane with one colour (cv2 is many times faster than numpy broadcasting here)."""
    cv2.rectangle(pane, (0, 0), (pane.shape[1], pane.shape[0]), color, -1)


def fill(pane: np.ndarray, color: RGB, message: str | None = None, style: Style | None = None) -> None:
    """Paint the pane one colour, optionally with a message centred in lines that fit its width."""
    paint(pane, color)
    if message and style is not None:
        lines = wrap_text(message, pane.shape[1] - 8, style)
        lh = style.line_height + 4
        y0 = (pane.shape[0] - len(lines) * lh) // 2 + style.line_height
        for i, line in enumerate(lines):
            put_text(pane, line, y0 + i * lh, max(2, (pane.shape[1] - text_width(line, style)) // 2), style)

def fit_shape(src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> tuple[int, int]:
    """Largest (h, w) with the aspect of ``src_hw`` inside ``dst_hw``."""
    scale = min(dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1])
    return max(1, int(src_hw[0] * scale)), max(1, int(src_hw[1] * scale))


def blit_fit(pane: np.ndarray, img: np.ndarray, smooth: bool = False) -> tuple[int, int, float, float]:
    """Resize ``img`` (HxW or HxWx3 uint8) to fit ``pane`` centred; returns (top, left, sy, sx) scales."""
    h, w = fit_shape(img.shape[:2], pane.shape[:2])
    interp = cv2.INTER_AREA if smooth and h < img.shape[0] else (cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST)
    resized = cv2.resize(img, (w, h), interpolation=interp)
    if resized.ndim == 2:
        resized = cv2.cvtColor(resized, cv2.COLOR_GRAY2RGB)
    top, left = (pane.shape[0] - h) // 2, (pane.shape[1] - w) // 2
    pane[top:top + h, left:left + w] = resized
    return top, left, h / img.shape[0], w / img.shape[1]


# ---------------------------------------------------------------- normalization


def normalize_maps(maps: np.ndarray, boost_indiv: float = 0.0, boost_gamma: float = 1.0) -> np.ndarray:
    """Map N x ... activations to [0, 1]: global min-max, then per-channel boost and gamma.

    ``boost_indiv`` in [0, 1] blends from the global scale (0) to each channel's own max (1).
    """
    maps = np.asarray(maps, dtype=np.float32)
    lo, hi = float(maps.min()), float(maps.max())
    v = (maps - lo) / (hi - lo) if hi > lo else np.zeros_like(maps)
    if boost_indiv:
        peak = v.reshape(len(v), -1).max(axis=1) if v.ndim > 1 else v
        v = np.minimum(v / np.maximum(peak, 1e-6).reshape((-1,) + (1,) * (v.ndim - 1)) ** boost_indiv, 1.0)
    if boost_gamma != 1.0:
        v = v ** boost_gamma
    return v


def signed_colors(maps: np.ndarray, boost_indiv: float, boost_gamma: float, style: Style) -> np.ndarray:
    """N x ... signed values (back diffs) -> N x ... x 3 uint8, positive and negative in their colours."""
    maps = np.asarray(maps, dtype=np.float32)
    peak = float(np.abs(maps).max())
    s = maps / peak if peak > 0 else np.zeros_like(maps)
    mag = np.abs(s)
    if boost_indiv:
        per = mag.reshape(len(mag), -1).max(axis=1) if mag.ndim > 1 else mag
        mag = np.minimum(mag / np.maximum(per, 1e-6).reshape((-1,) + (1,) * (mag.ndim - 1)) ** boost_indiv, 1.0)
    if boost_gamma != 1.0:
        mag = mag ** boost_gamma
    colors = np.where((s >= 0)[..., None], np.float32(style.positive), np.float32(style.negative))
    return (mag[..., None] * colors).astype(np.uint8)


def to_u8(v: np.ndarray) -> np.ndarray:
    """[0, 1] floats -> uint8."""
    return (np.clip(v, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


# ---------------------------------------------------------------- layers pane


@dataclass(frozen=True)
class TileLayout:
    """Where each unit's tile sits in the layers pane."""

    rows: int
    cols: int
    tile_h: int
    tile_w: int
    sep: int
    top: int
    left: int

    def origins(self, n: int) -> np.ndarray:
        """(n, 2) top-left (y, x) of each tile in pane coordinates."""
        return tile_origins(self.rows, self.cols, self.tile_h, self.tile_w, self.sep)[:n] + (self.top, self.left)

    def unit_at(self, y: int, x: int, n: int) -> int | None:
        """Unit whose tile contains pane pixel (y, x), or None."""
        r, ry = divmod(y - self.top, self.tile_h + self.sep)
        c, rx = divmod(x - self.left, self.tile_w + self.sep)
        if not (0 <= r < self.rows and 0 <= c < self.cols) or ry >= self.tile_h or rx >= self.tile_w:
            return None
        unit = int(r * self.cols + c)
        return unit if unit < n else None


def tile_layout(n: int, map_hw: tuple[int, int], pane_hw: tuple[int, int], sep: int = 1,
                fc_tile_max: int = 24) -> TileLayout:
    """Grid fitted to the pane's aspect for ``n`` maps of ``map_hw`` (1x1 for fc units), centred."""
    mh, mw = map_hw
    ph, pw = pane_hw
    rows, cols = grid_shape(n, aspect=(pw / ph) * (mh / mw))
    scale = min((ph - (rows - 1) * sep) / (rows * mh), (pw - (cols - 1) * sep) / (cols * mw))
    th, tw = max(1, int(scale * mh)), max(1, int(scale * mw))
    if (mh, mw) == (1, 1):
        th = tw = min(th, tw, fc_tile_max)
    gh, gw = rows * th + (rows - 1) * sep, cols * tw + (cols - 1) * sep
    return TileLayout(rows, cols, th, tw, sep, max(0, (ph - gh) // 2), max(0, (pw - gw) // 2))


# Each entry is two float32 maps of a pane's size (1-5 MB for the layers pane) and rebuilds in ~2 ms;
# 8 keep the layers and views browsed recently without the cache growing toward 64 x 5 MB.
@lru_cache(maxsize=8)
def tile_maps(layout: TileLayout, map_h: int, map_w: int) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps drawing the layout's grid from a sep-less source grid of map_h x map_w tiles
    (same rows/cols): nearest-neighbour scaling and 1-px separators (-1: border colour) in one pass."""
    th, tw, sep = layout.tile_h, layout.tile_w, layout.sep
    gh, gw = layout.rows * (th + sep) - sep, layout.cols * (tw + sep) - sep
    r, ry = np.divmod(np.arange(gh), th + sep)
    c, rx = np.divmod(np.arange(gw), tw + sep)
    map_y = (r * map_h + ry * map_h // th).astype(np.float32)
    map_x = (c * map_w + rx * map_w // tw).astype(np.float32)
    map_y[ry >= th] = -1
    map_x[rx >= tw] = -1
    return np.broadcast_to(map_x, (gh, gw)).copy(), np.broadcast_to(map_y[:, None], (gh, gw)).copy()


def render_tiles(pane: np.ndarray, images: np.ndarray, layout: TileLayout, style: Style,
                 selected: int | None = None, frozen: int | None = None) -> None:
    """Draw N x h x w (gray) or N x h x w x 3 uint8 tiles at ``layout``, outlining selected/frozen units."""
    paint(pane, style.background)
    n, h, w = images.shape[:3]
    source = tile(images, layout.rows, layout.cols, sep=0)
    if source.ndim == 2:
        source = cv2.cvtColor(source, cv2.COLOR_GRAY2RGB)  # on the small source, not the big grid
    mx, my = tile_maps(layout, h, w)
    grid = cv2.remap(source, mx, my, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=(style.separator,) * 3)
    gh, gw = grid.shape[:2]
    pane[layout.top:layout.top + gh, layout.left:layout.left + gw] = grid[:pane.shape[0] - layout.top,
                                                                          :pane.shape[1] - layout.left]
    if n % layout.cols:  # the unused cells after the last unit get the background, not separator grey
        y, x = layout.origins(n + 1)[n]
        cv2.rectangle(pane, (int(x) - layout.sep, int(y) - layout.sep), (layout.left + gw, layout.top + gh),
                      style.background, -1)
    render_outlines(pane, layout, n, style, selected, frozen)


def render_outlines(pane: np.ndarray, layout: TileLayout, n: int, style: Style,
                    selected: int | None = None, frozen: int | None = None) -> list[tuple[int, int, int, int]]:
    """Outline the selected (and frozen) unit's tile on the separators around it; returns the pane
    rectangles (top, left, height, width) the outlines may have drawn on."""
    origins = layout.origins(n)
    thickness = 1 if layout.tile_w < 12 else 2
    boxes = []
    for unit, color in ((frozen, style.frozen), (selected, style.selected)):
        if unit is not None and 0 <= unit < n:
            y, x = (int(v) for v in origins[unit])
            cv2.rectangle(pane, (x - 1, y - 1), (x + layout.tile_w, y + layout.tile_h), color, thickness)
            # A thick line spreads about its centre: a margin of the thickness holds every pixel drawn.
            y0, x0 = max(0, y - 1 - thickness), max(0, x - 1 - thickness)
            y1 = min(pane.shape[0], y + layout.tile_h + thickness + 1)
            x1 = min(pane.shape[1], x + layout.tile_w + thickness + 1)
            if y1 > y0 and x1 > x0:
                boxes.append((y0, x0, y1 - y0, x1 - x0))
    return boxes


def layer_images(acts: np.ndarray, boost_indiv: float, boost_gamma: float, signed: bool,
                 style: Style) -> np.ndarray:
    """One layer's values (C x H x W or C) -> C x H x W tiles, gray uint8 or signed colours."""
    maps = acts.reshape(acts.shape[0], 1, 1) if acts.ndim == 1 else acts
    if signed:
        return signed_colors(maps, boost_indiv, boost_gamma, style)
    return to_u8(normalize_maps(maps, boost_indiv, boost_gamma))


# ---------------------------------------------------------------- other panes


def render_input(pane: np.ndarray, frame: np.ndarray | None, style: Style,
                 rf_box: tuple[int, int, int, int] | None = None, input_hw: tuple[int, int] | None = None,
                 top5: list[tuple[str, float]] | None = None, overlay: np.ndarray | None = None,
                 message: str | None = None, peak: tuple[float, float] | None = None) -> None:
    """The model's view of the frame, the receptive-field box (input coords), top-5 labels and an overlay.

    ``overlay`` is an HxWx3 uint8 heat map (e.g. occlusion) blended over the frame. ``peak`` (y, x in
    input pixels) is where the selected unit peaks, marked with a cross: the box alone says nothing once
    the field covers the whole input.
    """
    paint(pane, style.background)
    if frame is None:
        fill(pane, style.disabled, message or "no image", style)
        return
    shown = frame
    if overlay is not None:
        heat = cv2.resize(overlay, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
        shown = cv2.addWeighted(frame, 0.5, heat, 0.5, 0.0)
    top, left, sy, sx = blit_fit(pane, shown, smooth=frame.shape[0] > pane.shape[0])
    # Boxes and peaks are in model-input pixels; the shown frame may have another resolution.
    fy, fx = (sy * frame.shape[0] / input_hw[0], sx * frame.shape[1] / input_hw[1]) if input_hw else (sy, sx)
    if rf_box is not None and input_hw is not None:
        t, l, b, r = rf_box
        cv2.rectangle(pane, (left + int(l * fx), top + int(t * fy)),
                      (left + int(r * fx) - 1, top + int(b * fy) - 1), style.rf_box, 1)
    if top5:
        for i, (label, p) in enumerate(top5):
            put_text(pane, f"{p:5.1%} {label}", (i + 1) * style.line_height, 4, style, scale=0.9, outline=True)
    if peak is not None and input_hw is not None:  # over the labels: it must stay visible
        draw_peak(pane, (top + peak[0] * fy, left + peak[1] * fx), style)
    if message:
        draw_caption(pane, message, style, scale=0.8)


def draw_peak(pane: np.ndarray, yx: tuple[float, float], style: Style, arm: int = 7) -> None:
    """A cross in the receptive-field colour, outlined in black so it shows on any content, at pane (y, x)."""
    y, x = int(round(yx[0])), int(round(yx[1]))
    for color, width in (((0, 0, 0), 3), (style.rf_box, 1)):
        cv2.line(pane, (x - arm, y), (x + arm, y), color, width)
        cv2.line(pane, (x, y - arm), (x, y + arm), color, width)


def peak_point(rf_box_unclipped: tuple[int, int, int, int], stride: tuple[int, int], window: tuple[int, int],
               yx: tuple[int, int]) -> tuple[float, float]:
    """Where on the input unit position ``yx`` sits, in input pixels: the centre of its unclipped
    field (a conv's field is centred on it); for fields shared by a window of positions (MaxViT), the
    centre of the position's own ``stride`` cell."""
    if window != (1, 1):
        return (yx[0] + 0.5) * stride[0], (yx[1] + 0.5) * stride[1]
    t, l, b, r = rf_box_unclipped
    return (t + b) / 2, (l + r) / 2


def fit_text(text: str, max_w: int, style: Style, scale: float = 1.0) -> str:
    """``text``, or its end after "..", narrow enough for ``max_w`` pixels (layer names end in what
    tells them apart: denselayer16.conv2)."""
    if text_width(text, style, scale) <= max_w:
        return text
    lo, hi = 0, len(text)  # keep the longest tail that fits
    while lo < hi:
        mid = (lo + hi) // 2
        if text_width(".." + text[mid:], style, scale) <= max_w:
            hi = mid
        else:
            lo = mid + 1
    return ".." + text[lo:]


def render_aux(pane: np.ndarray, style: Style, unit_image: np.ndarray | None = None,
               top5: list[tuple[str, float]] | None = None, caption: str = "") -> None:
    """The selected unit enlarged (uint8 gray or RGB), or the top-5 classes with probability bars; the
    caption wraps to the pane's width on a dark backing."""
    paint(pane, style.background)
    if top5 is not None:
        lh = style.line_height
        put_text(pane, "top-5", lh, 6, style)
        bar_w = pane.shape[1] - 12
        for i, (label, p) in enumerate(top5):
            y = (2 * i + 2) * lh + 6
            cv2.rectangle(pane, (6, y + 4), (6 + int(bar_w * p), y + lh - 2), style.selected, -1)
            put_text(pane, f"{label}  {p:.1%}", y, 6, style)
        return
    if unit_image is None:
        fill(pane, style.disabled, caption or "no unit", style)
        return
    blit_fit(pane, unit_image)
    if caption:
        draw_caption(pane, caption, style)


def unit_zoom(values: np.ndarray, boost_gamma: float, signed: bool, style: Style,
              layer_tile: np.ndarray | None = None) -> tuple[np.ndarray, str]:
    """One unit's map (H x W, or a scalar for vectors) scaled by its own range, not the layer's (a weak
    unit's map is not near black), and the caption note saying so: its range, or that it is constant.
    A single value (fc units, 1x1 maps such as SE gates) has no range of its own: it keeps its tile
    from the layer (``layer_tile``), on the layer's scale."""
    v = np.asarray(values, dtype=np.float32).reshape(np.shape(values) or (1, 1))
    v = v.reshape(v.shape[0], -1) if v.ndim == 1 else v
    lo, hi = float(v.min()), float(v.max())
    if v.size == 1 and layer_tile is not None:
        return layer_tile, "one value, on the layer's scale"
    if signed:
        peak = max(abs(lo), abs(hi))
        note = f"own range +-{peak:.3g}" if peak > 0 else "unit is zero here"
        return signed_colors(v[None], 0.0, boost_gamma, style)[0], note
    if hi <= lo:
        return np.zeros(v.shape, np.uint8), ("unit is zero here" if hi == 0 else f"constant {hi:.3g}")
    return to_u8(normalize_maps(v, 0.0, boost_gamma)), f"own range {lo:.3g}..{hi:.3g}"


#: What the back pane says for a unit that is zero on the image: nothing flows back from it.
ZERO_UNIT = "unit is zero here, nothing to project"


def render_back(pane: np.ndarray, style: Style, image: np.ndarray | None, caption: str = "",
                stale: bool = False, zero: bool = False) -> None:
    """The back-projection image (from ``dvis.render.backfilter.back_filter``) or a disabled pane;
    ``zero``: the unit's gradient is zero everywhere, so the pane says so instead of showing a blank."""
    if zero:
        image, caption = None, f"{caption}: {ZERO_UNIT}" if caption else ZERO_UNIT
    if image is None:
        fill(pane, style.stale if stale else style.disabled, caption or "back-projection off (b)", style)
        return
    paint(pane, style.stale if stale else style.background)
    blit_fit(pane, image, smooth=True)
    if caption:
        draw_caption(pane, caption, style)


#: The unit-images pane's slots when none of them is computed: one compact box, not a grey pane each.
NOT_COMPUTED_ROWS = 0.3


def through_alpha(img: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """``img`` seen through a grey transparency map of the same size (255 opaque) over black, a
    quarter always showing: an optimized image where its attribution map says the unit looked."""
    if alpha.shape[:2] != img.shape[:2]:
        return img
    a = alpha[..., :1].astype(np.float32) / 255
    return (img * (0.25 + 0.75 * a)).astype(np.uint8)


def render_unit_images(pane: np.ndarray, style: Style, slots: list[tuple[str, np.ndarray | NotThere]],
                       how_to: str = "") -> None:
    """Stacked slots (title, image or :class:`NotThere`): loading slots in the stale colour, absent
    ones grey, each with its caption on a dark backing. When no slot is computed, one compact box at
    the top names them and ``how_to`` (the command that computes them); the rest stays background."""
    paint(pane, style.background)
    if not slots:
        return
    if all(img is NotThere.ABSENT for _, img in slots):
        box = pane[:max(style.line_height * 3, int(pane.shape[0] * NOT_COMPUTED_ROWS))]
        titles = "/".join(title for title, _ in slots)
        fill(box, style.disabled, f"{titles} not computed{':' + chr(10) + how_to if how_to else ''}", style)
        return
    h = pane.shape[0] // len(slots)
    for i, (title, img) in enumerate(slots):
        slot = pane[i * h:(i + 1) * h - 2]
        if isinstance(img, np.ndarray):
            blit_fit(slot, img, smooth=img.shape[0] > slot.shape[0])
        else:
            fill(slot, style.stale if img is NotThere.LOADING else style.disabled, img.value, style)
        put_text(slot, title, style.line_height, 4, style, scale=0.9, outline=True)


def render_status(pane: np.ndarray, text: str, style: Style) -> None:
    paint(pane, (0, 0, 0))
    put_text(pane, text, (pane.shape[0] + style.line_height) // 2 - 3, 6, style)


def render_help(canvas: np.ndarray, rows: list[tuple[str, str]], style: Style) -> None:
    """Darken the canvas and list the key bindings in two columns."""
    np.right_shift(canvas, 2, out=canvas)
    lh = style.line_height + 2
    per_col = max(1, (canvas.shape[0] - 3 * lh) // lh)
    col_w = canvas.shape[1] // 2
    put_text(canvas, "dvis toolbox keys (h closes)", lh + 4, 20, style, style.selected, scale=1.2)
    for i, (keys, text) in enumerate(rows):
        c, r = divmod(i, per_col)
        y, x = (r + 3) * lh, 20 + c * col_w
        put_text(canvas, keys, y, x, style, style.selected)
        put_text(canvas, text, y, x + 150, style)


def top_k(probs: np.ndarray, labels: list[str], k: int = 5) -> list[tuple[str, float]]:
    """The k most probable (label, probability) pairs; unnamed classes show their index."""
    order = np.argsort(-probs)[:k]
    return [(labels[i] if i < len(labels) else str(i), float(probs[i])) for i in order]
