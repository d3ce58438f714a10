"""Frames of `dvis serve` without a browser: the rectangles a tab needs cover every change, the pacer
counts only real frames, a key after a quiet spell is drawn in its own core call, acks are never
rate-limited."""
import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np

from dvis.toolbox.app import Toolbox
from dvis.web import encoding, frames
from dvis.web.config import WebConfig
from dvis.web.encoding import ATLAS_GRID, ATLAS_PAD, atlas, atlas_layout, cells, encode, encode_delta
from dvis.web.frames import changed_rects, merge_rects, regions
from dvis.web.pacing import Pacer
from dvis.web.session import Session
from dvis.web.tabs import Client
from helpers.toolbox import make_images, make_model_folder

PANES = [(0, 0, 40, 50), (0, 50, 40, 70), (40, 0, 20, 120)]  # a 60 x 130 canvas, a 10-px gap at the right


def apply(base, rects, payload):
    """What the page does with a frame's entries (dvis/web/static/app.js)."""
    out = base.copy()
    offset, image = 0, None
    for x, y, w, h, n, raw, sx, sy in rects:
        data = np.frombuffer(payload[offset:offset + n], np.uint8)
        offset += n
        if raw:
            out[y:y + h, x:x + w] = data.reshape(h, w, 3)
            continue
        if n:
            image = cv2.cvtColor(cv2.imdecode(data, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
        out[y:y + h, x:x + w] = image[sy:sy + h, sx:sx + w]
    assert offset == len(payload)
    return out


def test_regions_cover_the_canvas_once():
    areas = regions(60, 130, PANES)
    assert areas[:3] == PANES
    cover = np.zeros((60, 130), int)
    for t, l, h, w in areas:
        cover[t:t + h, l:l + w] += 1
    assert (cover == 1).all()
    assert regions(30, 40, [(0, 0, 30, 40)]) == [(0, 0, 30, 40)]


def test_deltas_rebuild_the_canvas_exactly(monkeypatch):
    monkeypatch.setattr(encoding, "RAW_MAX_PIXELS", 100)
    rng = np.random.default_rng(0)
    areas = regions(60, 130, PANES)
    base = rng.integers(0, 255, (60, 130, 3), dtype=np.uint8)
    assert changed_rects(None, base, areas) == [(0, 0, 60, 130)]
    assert changed_rects(base, base.copy(), areas) == []
    new = base.copy()
    new[5:8, 60:64] = 0  # inside pane 2
    new[5, 70, 2] += 1  # one channel of one pixel, same pane: the box grows to it
    new[50, 125] = 1  # in the gap outside every pane
    rects = changed_rects(base, new, areas)
    assert rects == [(5, 60, 3, 11), (50, 125, 1, 1)]
    entries, payload = encode_delta(new, rects, "png", 85)
    assert [e[5] for e in entries] == [1, 1]  # small: raw RGB
    np.testing.assert_array_equal(apply(base, entries, payload), new)
    new[0:40, 0:50] = 7  # a whole pane (over RAW_MAX_PIXELS): an image, lossless as PNG
    rects = changed_rects(base, new, areas)
    entries, payload = encode_delta(new, rects, "png", 85)
    assert [e[5] for e in entries] == [0, 1, 1]
    np.testing.assert_array_equal(apply(base, entries, payload), new)
    new[0:40, 50:120] = rng.integers(0, 255, (40, 70, 3), dtype=np.uint8)  # three images: the largest alone,
    new[40:60, 0:120] = rng.integers(0, 255, (20, 120, 3), dtype=np.uint8)  # the others in one atlas
    rects = changed_rects(base, new, areas)
    entries, payload = encode_delta(new, rects, "png", 85, ThreadPoolExecutor(2))
    assert sum(e[4] > 0 and not e[5] for e in entries) == 2 and sum(not e[5] for e in entries) >= 3
    np.testing.assert_array_equal(apply(base, entries, payload), new)
    small = rng.integers(0, 255, (30, 40, 3), dtype=np.uint8)  # another size: the whole canvas
    assert changed_rects(base, small, areas) == [(0, 0, 30, 40)]


def test_lossy_deltas_leave_no_tint_where_a_thin_line_was(monkeypatch):
    """A JPEG pixel next to a thin saturated line comes out tinted (4:2:0 chroma); when the line
    moves, the resent box must take that pixel along (LOSSY_MARGIN), or the tint stays for good."""
    monkeypatch.setattr(encoding, "RAW_MAX_PIXELS", 0)  # every box an image, as for big panes
    areas = regions(128, 128, [(0, 0, 128, 128)])

    def outlined(y: int) -> np.ndarray:
        img = np.full((128, 128, 3), 128, np.uint8)
        img[y:y + 2, 10:118] = (230, 200, 40)  # a selection outline's edge
        return img

    def page_after(margin: int) -> np.ndarray:
        page, shown = None, None
        for y in (31, 61, 91):
            canvas = outlined(y)
            rects = changed_rects(shown, canvas, areas, margin=margin)
            entries, payload = encode_delta(canvas, rects, "jpeg", 85)
            page = apply(page if page is not None else np.zeros_like(canvas), entries, payload)
            shown = canvas
        return page

    fresh = apply(np.zeros((128, 128, 3), np.uint8), *encode_delta(outlined(91), [(0, 0, 128, 128)], "jpeg", 85))
    stale = np.abs(page_after(0).astype(int) - fresh).max(2)
    assert stale[20:80].max() > 40  # without the margin the old lines' neighbours keep their tint (65)
    # With it what stays is the old blocks' faint ringing (16 here; JPEG's own error at the line is 109).
    assert np.abs(page_after(frames.LOSSY_MARGIN).astype(int) - fresh).max(2)[20:80].max() <= 20


def test_atlas_pieces_sit_on_their_own_jpeg_blocks_and_rebuild_the_rectangles():
    rng = np.random.default_rng(1)
    sizes = [(300, 300), (103, 201), (15, 763), (37, 46), (1, 1), (16, 16)]
    subs = [rng.integers(0, 255, (h, w, 3), dtype=np.uint8) for h, w in sizes]
    img, placed = atlas(subs)
    (ah, aw), same = atlas_layout(sizes)
    assert img.shape == (ah, aw, 3) and same == placed
    used = np.zeros((ah, aw), int)
    covered = [np.zeros(s, bool) for s in sizes]
    p = ATLAS_PAD
    for i, dx, h, w, y, x in placed:
        cy, cx = y - p, x - p  # the piece's cells start on the grid, the piece p pixels in
        assert cy % ATLAS_GRID == 0 and cx % ATLAS_GRID == 0
        used[cy:cy + cells(h), cx:cx + cells(w)] += 1  # its cells hold nothing else (JPEG codes them alone)
        np.testing.assert_array_equal(img[y:y + h, x:x + w], subs[i][:, dx:dx + w])
        np.testing.assert_array_equal(img[y + h - 1:cy + cells(h), x + w - 1], subs[i][h - 1, dx + w - 1][None].repeat(
            cy + cells(h) - y - h + 1, 0))  # padding: the piece's edge repeated, after it
        np.testing.assert_array_equal(img[cy:y + 1, x], subs[i][0, dx][None].repeat(p + 1, 0))  # and before it
        covered[i][:, dx:dx + w] = True
    assert used.max() == 1 and all(c.all() for c in covered)
    assert ah * aw < 1.6 * sum(h * w for h, w in sizes)  # the padding (ATLAS_PAD around each piece) stays small


def test_atlas_pieces_decode_as_if_alone():
    """JPEG's chroma upsampling blends each pixel with its neighbours: pieces keep a margin of
    their own edge, so a saturated thin piece does not bleed into the one beside it (it did by
    37-66 levels when pieces touched their cells' border)."""
    grey = np.full((32, 48, 3), 128, np.uint8)
    yellow = np.empty((4, 48, 3), np.uint8)
    yellow[:] = (230, 200, 40)  # a selection outline's colour
    subs = [grey, yellow, grey.copy(), yellow.transpose(1, 0, 2).copy()]
    img, placed = atlas(subs)
    shown = cv2.cvtColor(cv2.imdecode(np.frombuffer(encode(img, "jpeg", 85), np.uint8), cv2.IMREAD_COLOR),
                         cv2.COLOR_BGR2RGB)
    for i, dx, h, w, y, x in placed:
        alone = cv2.cvtColor(cv2.imdecode(np.frombuffer(encode(subs[i], "jpeg", 85), np.uint8), cv2.IMREAD_COLOR),
                             cv2.COLOR_BGR2RGB)
        assert np.abs(shown[y:y + h, x:x + w].astype(int) - alone[:, dx:dx + w]).max() <= 2, i


def test_changes_gathered_over_frames_merge_per_pane():
    areas = regions(60, 130, PANES)
    assert merge_rects([(5, 60, 3, 4), (30, 100, 2, 2), (50, 125, 1, 1), (45, 5, 1, 1)], areas) == [
        (5, 60, 27, 42), (45, 5, 1, 1), (50, 125, 1, 1)]
    assert merge_rects([(5, 60, 3, 4), (0, 0, 60, 130)], areas) == [(0, 0, 60, 130)]
    assert merge_rects([], areas) == []


def test_pacer_counts_only_frames_produced():
    p = Pacer(0.02)
    assert p.delay(100.0) == 0 and p.delay(100.0, for_input=True) == 0  # nothing produced yet
    p.produced(100.0)  # a worker's frame
    assert abs(p.delay(100.005) - 0.015) < 1e-9  # the next one waits for the rest of the period
    assert p.delay(100.005, for_input=True) == 0  # an input does not wait for it
    p.produced(100.005, for_input=True)
    assert abs(p.delay(100.01, for_input=True) - 0.015) < 1e-9  # inputs: at most one frame a period
    assert p.delay(100.5) == 0 and p.delay(100.5, for_input=True) == 0  # after a quiet spell: at once


class FakeSocket:
    async def send_bytes(self, data):
        pass

    async def send_text(self, data):
        pass


def frames_in(client):
    """(header, payload) of each frame queued for ``client``."""
    out = []
    for kind, data in client.outbox:
        if kind == "frame":
            n = int.from_bytes(data[1:5], "big")
            out.append((json.loads(data[5:5 + n]), data[5 + n:]))
    return out


def run_session(tmp_path, scenario):
    from dvis.models.loading import load_model
    from dvis.toolbox.settings import load_settings

    model = load_model(str(make_model_folder(tmp_path)))
    settings = load_settings(None, {"images": str(make_images(tmp_path)), "pause_after_key_s": 0.0,
                                    "global_scale": 0.6})
    config = WebConfig(frame_format="png")

    async def main():
        session = Session(lambda cam: Toolbox(model, settings, camera_factory=cam), config)
        await session.start()
        session._task.cancel()  # no frame loop: the test makes each frame itself
        try:
            client = Client(FakeSocket(), config, 1)
            session.clients.add(client)
            await session.call(session.tb.settle)  # the worker and the loader done: frames change only by keys
            await scenario(session, client)
        finally:
            await session.stop()

    asyncio.run(main())


def test_a_key_after_a_quiet_spell_is_drawn_in_its_own_core_call(tmp_path):
    async def scenario(session, client):
        await session.call(session._produce, (client,))
        (head, _), = frames_in(client)
        assert head["rects"][0][:4] == [0, 0, head["w"], head["h"]]  # a new tab: the whole canvas
        client.outbox.clear()
        session._ack(client)
        await session.call(lambda: None)  # the flush the ack queued
        for _ in range(3):  # idle checks: nothing new, and they do not hold the next frame back
            await session.call(session._produce, (client,))
        assert frames_in(client) == []
        session.pacer.last = session.pacer.last_input = -1.0  # a quiet spell since the last frame
        await session.call(session._key, client, "right", 1, (client,))
        (head, _), = frames_in(client)  # drawn by the key's own call, not by the frame loop later
        assert head["seq"] == 1 and len(head["rects"]) >= 1
        client.outbox.clear()
        session._ack(client)
        await session.call(lambda: None)
        session.pacer.period = 1000.0  # an input's frame just went: the next key waits for the frame loop
        await session.call(session._key, client, "right", 2, (client,))
        assert frames_in(client) == [] and session.tb.state.unit == 2

    run_session(tmp_path, scenario)


def test_acks_are_never_rate_limited_and_frames_wait_for_them(tmp_path):
    async def scenario(session, client):
        await session.call(session._produce, (client,))
        assert client.in_flight(client.sent_at) and len(frames_in(client)) == 1
        session.pacer.period = 0.0
        client.limit.tokens, client.limit.rate = 0, 1e-6  # a flooding tab: its bucket is empty
        await session.handle(client, {"type": "websocket.receive", "text": json.dumps({"t": "key", "key": "right",
                                                                                        "seq": 1})})
        assert client.limit.dropped == 1 and session.tb.state.unit == 0  # the key was dropped
        await session.call(session._key, client, "right", 1, (client,))  # a change while a frame is in flight
        assert len(frames_in(client)) == 1 and client.dirty  # it waits for the ack
        await session.handle(client, {"type": "websocket.receive", "text": json.dumps({"t": "ack"})})
        await session.call(lambda: None)
        assert client.acked == 1 and client.limit.dropped == 1
        (_, _), (head, _) = frames_in(client)  # the ack let the newest canvas out
        assert head["seq"] == 1 and not client.dirty

    run_session(tmp_path, scenario)


def test_render_damage_covers_every_changed_pixel(tmp_path):
    """Toolbox.damage (what the web compares) holds every pixel a render changed, over keys that keep
    the layers pane's grid (only its outlines move), change it, zoom, freeze, show help and step
    images; compared with a full-canvas diff after each render, settled or not."""
    from helpers.toolbox import make_toolbox

    tb = make_toolbox(tmp_path)
    try:
        tb.settle()
        before = tb.render().copy()
        narrowed = 0  # renders where the layers pane's damage was only the outlines, and they moved
        keys = ["right", "right", "down", "left", "b", "right", "d", "right", "z", "z", "left", "h", "right",
                "h", "right", "a", "right", "a", "o", "right", "left", "u", "L", "e", "right", "s", "right", "s",
                "1", "right", "1", "9", "right", "9", "left"]
        lt, ll, lh, lw = tb.panes["layers"]
        for i, key in enumerate(keys):
            tb.press(key)
            for settle in (False, True):  # the frame right after the key, then the settled one
                tb.settle() if settle else tb.update()
                canvas = tb.render()
                covered = np.zeros(canvas.shape[:2], bool)
                for t, l, h, w in tb.damage:
                    covered[max(t, 0):t + h, max(l, 0):l + w] = True
                changed = (canvas != before).any(axis=2)
                assert not (changed & ~covered).any(), f"key {i} {key!r}: changed pixels outside the damage"
                whole = any(t <= lt and lt + lh <= t + h and l <= ll and ll + lw <= l + w for t, l, h, w in tb.damage)
                if not whole and changed[lt:lt + lh, ll:ll + lw].any():
                    narrowed += 1  # only the outlines' boxes, and the outlines moved
                before = canvas.copy()
        assert narrowed >= 5  # the outline-only case was exercised (and the outlines did move)
        # The web's compare with the damage finds exactly what a full compare finds.
        areas = regions(*before.shape[:2], list(tb.panes.values()))
        tb.press("right")
        tb.update()
        canvas = tb.render()
        assert changed_rects(before, canvas, areas, tb.damage) == changed_rects(before, canvas, areas)
    finally:
        tb.close()
