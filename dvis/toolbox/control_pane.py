"""The control pane: the layer list (:mod:`dvis.toolbox.layer_list`) laid out in rows by block
(:func:`control_page`) and drawn onto a numpy canvas (:func:`render_control`)."""
from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np

from dvis.toolbox.layer_list import group_layers
from dvis.toolbox.render import Style, fit_text, paint, put_text, text_width


class ControlPage(NamedTuple):
    """The part of the layer list that fits the control pane: (index, (top, left, bottom, right)) of each
    visible name, which page of rows this is, the visible block labels ((text, box) each) and the
    text each visible layer shows (its name within its block, :mod:`dvis.toolbox.layer_list`)."""

    boxes: list[tuple[int, tuple[int, int, int, int]]]
    page: int
    pages: int
    labels: list[tuple[str, tuple[int, int, int, int]]] = []
    shown: dict[int, str] = {}


def control_page(names: list[str], pane_hw: tuple[int, int], style: Style, current: int = 0) -> ControlPage:
    """Lay the layer names out in rows by block (:func:`dvis.toolbox.layer_list.group_layers`): each
    block's label, then its layers by their names within it; a block that does not fit the rest of a
    row starts a new one. When the rows outnumber the pane's, show the page of rows holding
    ``current`` (so the current layer is always visible) with a page count at the right."""
    lh = style.line_height
    pane_h, pane_w = pane_hw
    groups = group_layers(names)
    marker = text_width("99/99", style) + 12
    right = pane_w - marker
    max_w = max(40, right // 3)
    rows: list[list[tuple[int | str, int, int]]] = [[]]  # per row: (index or label, left, right)
    x = 6
    for block, label in enumerate(groups.labels):
        members = groups.members(block)
        widths = [text_width(fit_text(groups.short[i], max_w - 12, style), style) + 12 for i in members]
        head = text_width(label + ":", style) + 8 if label else 0
        if rows[-1] and x + head + sum(widths) + 4 * len(widths) > right:
            rows.append([])  # the block does not fit the rest of this row: it starts the next
            x = 6
        if label:
            rows[-1].append((label, x, x + head))
            x += head
        for i, w in zip(members, widths):
            if x + w > right and rows[-1]:
                rows.append([])  # a block's continued rows repeat its label: each row (page) says where it is
                x = 6
                if label:
                    rows[-1].append((label, x, x + head))
                    x += head
            rows[-1].append((i, x, x + w))
            x += w + 4
        x += 10  # a gap between blocks sharing a row
    per_page = max(1, (pane_h - 4) // (lh + 4))
    row_of = next((r for r, row in enumerate(rows) if any(i == current for i, _, _ in row)), 0)
    page = row_of // per_page
    boxes, labels = [], []
    for k, row in enumerate(rows[page * per_page:(page + 1) * per_page]):
        y = 4 + k * (lh + 4)
        for i, l, r in row:
            if isinstance(i, str):
                labels.append((i, (y, l, y + lh, r)))
            else:
                boxes.append((i, (y, l, y + lh, r)))
    return ControlPage(boxes, page, -(-len(rows) // per_page), labels, {i: groups.short[i] for i, _ in boxes})


def render_control(pane: np.ndarray, names: list[str], current: int, style: Style,
                   frozen: int | None = None, on_list: bool = False,
                   disabled: frozenset[int] = frozenset()) -> None:
    """The layer list by block (its page holding ``current``): block labels in the selection colour,
    current layer framed (filled when the cursor is on the list), frozen layer underlined, layers that
    do not run greyed."""
    paint(pane, style.background)
    layout = control_page(names, pane.shape[:2], style, current)
    for label, (t, l, b, r) in layout.labels:
        put_text(pane, label + ":", b - style.line_height // 4 - 2, l, style, style.selected)
    for i, (t, l, b, r) in layout.boxes:
        color = tuple(min(255, c + 60) for c in style.disabled) if i in disabled else style.text
        if i == current:
            if on_list:
                cv2.rectangle(pane, (l, t), (r, b), style.selected, -1)
                color = (0, 0, 0)
            else:
                cv2.rectangle(pane, (l, t), (r, b), style.selected, 1)
        if i == frozen:
            cv2.line(pane, (l + 2, b - 2), (r - 2, b - 2), style.frozen, 2)
        put_text(pane, fit_text(layout.shown[i], r - l - 12, style), b - style.line_height // 4 - 2, l + 6, style, color)
    if layout.pages > 1:
        text = f"{layout.page + 1}/{layout.pages}"
        put_text(pane, text, style.line_height, pane.shape[1] - text_width(text, style) - 6, style, style.selected)
