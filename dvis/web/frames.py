"""Frame diffing: which rectangles of the canvas changed since the frame a tab has (per pane and per gap
between panes), and how changes gathered over several frames merge."""
from __future__ import annotations

import cv2
import numpy as np

Rect = tuple[int, int, int, int]  # (top, left, height, width)

# Lossy frames also resend this many pixels around each change: with 4:2:0 chroma a decoded pixel's
# colour depends on its neighbours', so a pixel next to a thin saturated line (a selection outline)
# came out tinted and kept the tint after the line moved, since only changed pixels were resent
# (zf-cifar10, six keys: 982 pixels over 48 levels off a fresh frame, 25 with the margin).
LOSSY_MARGIN = 2


def regions(h: int, w: int, panes: list[Rect]) -> list[Rect]:
    """The panes (clipped to the canvas) plus the parts of the canvas outside every pane, as
    rectangles: together they cover the canvas, so comparing each finds every change."""
    panes = [(t, l, min(ph, h - t), min(pw, w - l)) for t, l, ph, pw in panes if t < h and l < w]
    ys = sorted({0, h, *(v for t, _, ph, _ in panes for v in (t, t + ph))})
    xs = sorted({0, w, *(v for _, l, _, pw in panes for v in (l, l + pw))})
    out = []
    for y0, y1 in zip(ys, ys[1:]):  # the grid the pane edges make: a cell is inside a pane or outside all
        for x0, x1 in zip(xs, xs[1:]):
            if not any(t <= y0 and y1 <= t + ph and l <= x0 and x1 <= l + pw for t, l, ph, pw in panes):
                out.append((y0, x0, y1 - y0, x1 - x0))
    return panes + out


def clip(rect: Rect, area: Rect) -> Rect | None:
    """The part of ``rect`` inside ``area`` (None: none)."""
    t, l = max(rect[0], area[0]), max(rect[1], area[1])
    b, r = min(rect[0] + rect[2], area[0] + area[2]), min(rect[1] + rect[3], area[1] + area[3])
    return (t, l, b - t, r - l) if b > t and r > l else None


def changed_rects(base: np.ndarray | None, canvas: np.ndarray, areas: list[Rect],
                  damage: list[Rect] | None = None, scratch: np.ndarray | None = None,
                  margin: int = 0) -> list[Rect]:
    """(top, left, height, width) rectangles covering every pixel where ``canvas`` differs from
    ``base``: the bounding box of the changes inside each of ``areas`` (:func:`regions`: panes and
    the gaps between them). The whole canvas when there is no base of the same size.

    ``damage``: rectangles outside of which ``canvas`` is known to equal ``base`` (the renderer's
    :attr:`~dvis.toolbox.app.Toolbox.damage`); only they are compared. ``scratch``: an array of the
    canvas's shape for the differences (a fresh one each call costs page faults). ``margin``: each
    box grown by that many pixels inside its area (see :data:`LOSSY_MARGIN`)."""
    h, w = canvas.shape[:2]
    if base is None or base.shape != canvas.shape:
        return [(0, 0, h, w)]
    if scratch is None or scratch.shape != canvas.shape:
        scratch = np.empty_like(canvas)
    rects = []
    for area in areas:
        parts = [area] if damage is None else [p for p in (clip(d, area) for d in damage) if p is not None]
        box = None
        for t, l, ph, pw in parts:
            # Rows x (columns * 3), views: one channel for OpenCV, which compares and boxes in one pass each.
            a = base[t:t + ph, l:l + pw].reshape(ph, pw * 3)
            b = canvas[t:t + ph, l:l + pw].reshape(ph, pw * 3)
            if cv2.norm(a, b, cv2.NORM_INF) == 0:
                continue
            x, y, bw, bh = cv2.boundingRect(cv2.absdiff(a, b, dst=scratch[t:t + ph, l:l + pw].reshape(ph, pw * 3)))
            r = (t + y, l + x // 3, t + y + bh, l + (x + bw - 1) // 3 + 1)  # top, left, bottom, right
            box = r if box is None else (min(box[0], r[0]), min(box[1], r[1]), max(box[2], r[2]), max(box[3], r[3]))
        if box is not None:
            t, l = box[0] - margin, box[1] - margin
            rects.append(clip((t, l, box[2] + margin - t, box[3] + margin - l), area))
    return rects


def merge_rects(rects: list[Rect], areas: list[Rect]) -> list[Rect]:
    """One bounding rectangle per area for ``rects`` gathered over several frames (each rect lies in
    one area, as :func:`changed_rects` makes them); a rect in no area (the whole canvas) stays."""
    boxes: dict[int, Rect] = {}
    loose = False
    for r in rects:
        t, l, h, w = r
        i = next((i for i, (at, al, ah, aw) in enumerate(areas)
                  if at <= t and t + h <= at + ah and al <= l and l + w <= al + aw), None)
        if i is None:
            loose = True
        elif i in boxes:
            bt, bl, bh, bw = boxes[i]
            top, left = min(t, bt), min(l, bl)
            boxes[i] = (top, left, max(t + h, bt + bh) - top, max(l + w, bl + bw) - left)
        else:
            boxes[i] = r
    if loose:  # the whole canvas (a first frame, a new size): one box around everything
        top, left = min(r[0] for r in rects), min(r[1] for r in rects)
        return [(top, left, max(r[0] + r[2] for r in rects) - top, max(r[1] + r[3] for r in rects) - left)]
    return [boxes[i] for i in sorted(boxes)]
