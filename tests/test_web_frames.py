"""Frame deltas of `dvis serve` (pure, no browser): the rectangles a tab needs cover every change."""
import cv2
import numpy as np

from dvis.web.server import changed_rects, encode_delta

PANES = [(0, 0, 40, 50), (0, 50, 40, 70), (40, 0, 20, 120)]  # a 60 x 130 canvas, a 10-px gap at the right


def apply(base, rects, payload):
    out = base.copy()
    offset = 0
    for x, y, w, h, n in rects:
        img = cv2.imdecode(np.frombuffer(payload[offset:offset + n], np.uint8), cv2.IMREAD_COLOR)
        out[y:y + h, x:x + w] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        offset += n
    return out


def test_deltas_rebuild_the_canvas_exactly():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (60, 130, 3), dtype=np.uint8)
    assert changed_rects(None, base, PANES) == [(0, 0, 60, 130)]
    assert changed_rects(base, base.copy(), PANES) == []
    new = base.copy()
    new[5:8, 60:64] = 0  # inside pane 2
    new[50, 125] = 1  # in the gap outside every pane
    rects = changed_rects(base, new, PANES)
    assert rects == [(5, 60, 3, 4), (50, 125, 1, 1)]
    shown = apply(base, *encode_delta(base, new, PANES, "png", 85))
    np.testing.assert_array_equal(shown, new)
    small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)  # another size: the whole canvas
    assert changed_rects(base, small, PANES) == [(0, 0, 30, 40)]
