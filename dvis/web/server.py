"""``dvis serve``: the toolbox core behind a starlette app, streamed to browser tabs over a WebSocket.

Protocol (one WebSocket per tab, ``/ws``):

* page -> server, text JSON: ``{"t": "key", "key": NAME, "seq": N}``, ``{"t": "click", "x": X, "y": Y,
  "seq": N}``, ``{"t": "ack"}`` (a frame was drawn), ``{"t": "full"}`` (send the whole canvas next),
  ``{"t": "camera_error", "text": ...}``;
  binary: ``b"C"`` + JPEG bytes, a browser camera frame.
* server -> page, binary: ``b"F"`` or ``b"S"`` (screenshot), 4-byte big-endian header length, a JSON
  header (``w``, ``h``: the canvas, ``mime``, ``seq``: the last input of this tab the frame reflects,
  ``settled``: the worker has caught up, ``n``: the server's frame count, ``rects``: [x, y, w, h,
  nbytes, raw, sx, sy] of each changed rectangle or piece of one), then the data in that order: with
  raw = 1 (small rectangles) w * h * 3 bytes of RGB; else, when nbytes > 0, an image in ``mime``
  whose (sx, sy, w, h) part goes to (x, y), and each entry after it with nbytes = 0 another part of
  that image (an atlas of several rectangles, see :func:`encode_delta`). A frame carries only what
  changed since the frame the tab was sent last; the next one goes out after the tab acks this one
  (latest wins).
  Text JSON: ``{"type": "seq"|"info"|"error"|"camera", ...}``; ``seq``: inputs up to ``seq`` are
  shown (they changed nothing, or their frame is the one the tab has).

Acks are never rate-limited (a dropped ack would stall the tab's frames for ack_timeout_s).

Security (docs/web.md): every request needs the token (``?token=`` once, then the cookie set by the
page); WebSocket and upload requests must come from the page's own origin; messages, camera frames
and uploads have size limits; a tab sending too fast has the excess dropped; a malformed message is
dropped with a log line and the connection goes on. No request names a server path.
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import logging
import math
import re
import secrets
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from importlib import resources
from urllib.parse import urlsplit

import cv2
import numpy as np
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from dvis.errors import DvisError
from dvis.imaging.images import read_image
from dvis.toolbox.actions import SCREENSHOT
from dvis.toolbox.keys import is_key_name

log = logging.getLogger(__name__)

COOKIE = "dvis_token"
FORMATS = {"jpeg": (".jpg", "image/jpeg"), "webp": (".webp", "image/webp"), "png": (".png", "image/png")}
STATIC = {"app.js": "application/javascript", "app.css": "text/css"}
IDLE_CHECK_S = 0.5  # settled and no camera: how often the frame loop looks anyway (acks that timed out)


@dataclass(frozen=True)
class WebConfig:
    """Server settings (``dvis serve`` flags)."""

    host: str = "127.0.0.1"
    port: int = 8765
    token: str = ""  # "" only on loopback: no token asked (refused for other hosts)
    frame_format: str = "jpeg"  # jpeg, webp or png (lossless, larger)
    quality: int = 85  # JPEG / WebP quality
    max_message_bytes: int = 4096  # a text message from the page
    max_camera_bytes: int = 1 << 20  # one browser camera frame (JPEG)
    max_upload_bytes: int = 16 << 20  # one uploaded image file
    max_upload_pixels: int = 40_000_000  # decoded size of an upload
    max_uploads: int = 64  # uploads kept in memory per server
    max_messages_per_s: float = 200.0  # per tab; the excess is dropped
    ack_timeout_s: float = 2.0  # a tab that does not ack a frame gets the next one after this

    def check(self) -> None:
        if self.frame_format not in FORMATS:
            raise DvisError(f"--frame-format {self.frame_format}: choose {', '.join(FORMATS)}")
        if not self.token and not is_loopback(self.host):
            raise DvisError(f"--host {self.host} without a token would let anyone on the network run the "
                            "model and read the image folder; drop --no-token")


def is_loopback(host: str) -> bool:
    return host in ("127.0.0.1", "localhost", "::1") or host.startswith("127.")


def new_token() -> str:
    return secrets.token_urlsafe(24)


def encode(canvas: np.ndarray, fmt: str, quality: int) -> bytes:
    """RGB canvas -> image bytes in ``fmt`` (see :data:`FORMATS`)."""
    ext = FORMATS[fmt][0]
    params = {"jpeg": [cv2.IMWRITE_JPEG_QUALITY, quality], "webp": [cv2.IMWRITE_WEBP_QUALITY, quality],
              "png": [cv2.IMWRITE_PNG_COMPRESSION, 1]}[fmt]
    ok, data = cv2.imencode(ext, cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise DvisError(f"cannot encode a frame as {fmt}")
    return data.tobytes()


def pack(kind: bytes, header: dict, payload: bytes) -> bytes:
    """One binary message: kind byte, header length, JSON header, payload."""
    head = json.dumps(header).encode()
    return kind + struct.pack(">I", len(head)) + head + payload


Rect = tuple[int, int, int, int]  # (top, left, height, width)

RAW_MAX_PIXELS = 4096  # a changed rectangle this small goes raw (RGB bytes): no encode, no decode
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


ATLAS_GRID = 16  # JPEG's largest block (the 4:2:0 MCU): a cell on this grid is coded in blocks of its own
# Pixels of a piece's own edge repeated around it inside its cell: the decoder's chroma upsampling
# blends each pixel with its neighbours' colour, so a piece touching its cell's border took colour
# from the next cell (a thin yellow outline bled 37-66 levels into the grey piece beside it).
ATLAS_PAD = 2


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


class RateLimit:
    """Token bucket: ``rate`` messages per second, bursts up to twice that."""

    def __init__(self, rate: float):
        self.rate, self.tokens, self.last = rate, 2 * rate, time.monotonic()
        self.dropped, self._logged = 0, 0.0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(2 * self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.dropped += 1
        return False

    def should_log(self) -> bool:
        """At most one log line a second about dropped messages."""
        now = time.monotonic()
        if now - self._logged >= 1.0:
            self._logged = now
            return True
        return False


class Pacer:
    """At most one frame per ``period`` seconds for inputs, and as many again for everything else
    (worker results, unit images, camera frames). Only frames actually produced count, not the checks
    that found nothing new, so an input after a quiet spell is drawn at once, and an input right after
    a worker's frame does not wait for it."""

    def __init__(self, period: float):
        self.period, self.last, self.last_input = period, -math.inf, -math.inf

    def delay(self, now: float, for_input: bool = False) -> float:
        """Seconds to wait before the next frame (for an input, or any) may be produced (0: now)."""
        return max(0.0, (self.last_input if for_input else self.last) + self.period - now)

    def produced(self, now: float, for_input: bool = False) -> None:
        self.last = now
        if for_input:
            self.last_input = now


class Client:
    """One connected tab: its socket, what goes out to it (in order) and its frame bookkeeping.

    The frame fields are the core thread's: the changes the tab has not been sent yet (``dirty``),
    whether it needs the whole canvas, how many frames went out; the event loop only counts acks."""

    def __init__(self, ws: WebSocket, config: WebConfig, number: int):
        self.ws, self.number, self.config = ws, number, config
        self.outbox: collections.deque[tuple[str, object]] = collections.deque()  # ("text"|"bytes", data)
        self.wake = asyncio.Event()
        self.limit = RateLimit(config.max_messages_per_s)
        self.camera_frame: tuple[int, np.ndarray] | None = None
        self.seq = 0  # last input seq of this tab applied to the core (core thread)
        # core thread:
        self.need_full = True  # a new tab, or one whose page lost track: the whole canvas next
        self.dirty: list[Rect] = []  # changed since the last frame sent to it
        self.frame_seq = 0  # last input of this tab the shown canvas reflects
        self.told_seq, self.told_settled = 0, None  # what the tab was last told
        self.sent, self.sent_at = 0, 0.0  # frames sent, when the last one went
        # event loop:
        self.acked = 0  # frames the page drew (never more than were sent)
        self.flush_queued = False

    def in_flight(self, now: float) -> bool:
        """A frame was sent and not drawn yet (given up on after ack_timeout_s)."""
        return self.acked < self.sent and now - self.sent_at < self.config.ack_timeout_s

    def push(self, kind: str, data) -> None:
        """Queue a message (event loop). Texts and files are bounded: a tab that reads nothing loses them."""
        if kind != "frame":
            if sum(k == kind for k, _ in self.outbox) >= (32 if kind == "text" else 4):
                return
        self.outbox.append((kind, data))
        self.wake.set()

    def say(self, message: dict) -> None:
        self.push("text", json.dumps(message))

    def send_file(self, data: bytes) -> None:
        self.push("file", data)

    async def run_sender(self) -> None:
        """Send what is queued, in order (frames are gated by acks where they are made)."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.outbox:
                kind, data = self.outbox.popleft()
                if kind == "text":
                    await self.ws.send_text(data)
                else:
                    await self.ws.send_bytes(data)


class BrowserCamera:
    """The camera of the tab that pressed ``c``: it streams downscaled JPEG frames, decoded here."""

    def __init__(self, session: Session, client: Client):
        self.session, self.client = session, client
        self.name = f"of tab {client.number}"
        client.camera_frame = None

    def latest(self) -> tuple[int, np.ndarray] | None:
        return self.client.camera_frame

    def close(self) -> None:
        self.session.loop.call_soon_threadsafe(self.client.say, {"type": "camera", "on": False})


class Session:
    """The one shared view: a Toolbox core run on one thread, its frames sent to every tab.

    The core thread applies inputs, renders, compares the canvas with the one last produced and
    encodes each tab's frame; the event loop only moves messages. A key is one hop: press, render
    and encode in one core call when the pacer allows a frame."""

    def __init__(self, make_toolbox, config: WebConfig):
        self.config = config
        self.core = ThreadPoolExecutor(1, thread_name_prefix="dvis-web-core")  # the Toolbox is not thread-safe
        self.encoders = ThreadPoolExecutor(2, thread_name_prefix="dvis-web-encode")  # a frame's images at once
        self._make_toolbox = make_toolbox
        self.tb = None
        self.clients: set[Client] = set()
        self.wake = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self.pacer = Pacer(1.0)
        self._busy = True  # the worker, the loader or the camera may change the canvas: poll each period
        self._last_key = None
        self._shown: np.ndarray | None = None  # the canvas as of the last frame produced
        self._shown_settled = False
        self._input_from: Client | None = None  # the tab whose input is being applied
        self._numbers = 0
        self.uploads = 0
        self.frames = 0
        self.frame_bytes = 0
        self.web_seconds = 0.0  # CPU spent comparing and encoding frames (what the window does not do)
        self.panes: list[Rect] = []
        self.areas: list[Rect] = []
        self._renders = 0  # the Toolbox's render count when _shown was last compared with its canvas
        self._scratch: np.ndarray | None = None  # changed_rects' differences, kept between frames

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.tb = await self.loop.run_in_executor(self.core, self._build)
        self.panes = list(self.tb.panes.values())
        h, w = self.tb.canvas.shape[:2]
        self.areas = regions(h, w, self.panes)
        self.pacer = Pacer(1.0 / max(1.0, self.tb.settings.max_fps))
        self._task = asyncio.create_task(self._frames())

    def _build(self):
        return self._make_toolbox(self._open_camera)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.tb is not None:
            await self.loop.run_in_executor(self.core, self.tb.close)
        self.core.shutdown(wait=False)
        self.encoders.shutdown(wait=False)

    async def call(self, fn, *args):
        """Run ``fn(*args)`` on the core thread."""
        return await self.loop.run_in_executor(self.core, fn, *args)

    def _to_tab(self, client: Client, kind: str, data) -> None:
        """Core thread: queue a message for ``client`` (in order with everything else it gets)."""
        self.loop.call_soon_threadsafe(client.push, kind, data)

    # ---------------------------------------------------------------- inputs (core thread)

    def _open_camera(self, camera_id: int, mirror: bool) -> BrowserCamera:
        client = self._input_from
        if client is None or client not in self.clients:
            raise DvisError("no browser tab to take the camera from")
        h, w = self.tb.model.input_size
        self._to_tab(client, "text", json.dumps({"type": "camera", "on": True, "mirror": mirror, "size": [h, w]}))
        return BrowserCamera(self, client)

    def _key(self, client: Client, name: str, seq: int, clients: tuple[Client, ...]) -> bytes | None:
        """Press key ``name``, then (when the pacer allows) produce the frame showing it at once."""
        self._input_from = client
        try:
            effects = self.tb.press(name)
        finally:
            self._input_from = None
        client.seq = max(client.seq, seq)
        if SCREENSHOT in effects:
            self.tb.render()
            self.tb.message = "screenshot downloaded"
            stamp = time.strftime("%Y%m%d-%H%M%S")
            return pack(b"S", {"name": f"dvis-{stamp}.png", "mime": "image/png"}, self.tb.png())
        self._produce_if_due(clients)
        return None

    def _click(self, client: Client, x: int, y: int, seq: int, clients: tuple[Client, ...]) -> None:
        self.tb.click(x, y)
        client.seq = max(client.seq, seq)
        self._produce_if_due(clients)

    def _camera_failed(self, text: str) -> None:
        self.tb.message = f"browser camera: {text}"[:200]
        if self.tb.state.camera:
            self.tb.set_state(replace(self.tb.state, camera=False))

    def _upload(self, name: str, frame: np.ndarray) -> None:
        if self.uploads >= self.config.max_uploads:
            raise DvisError(f"{self.config.max_uploads} uploads already; restart the server for more")
        self.uploads += 1
        self.tb.add_image(name, frame)

    # ---------------------------------------------------------------- frames (core thread)

    def _revision(self):
        tb = self.tb
        out = tb.worker.output
        return (tb.state, id(out), tb.loader.version, tb.message, tb.frame_id, tb.worker.busy)

    def _produce_if_due(self, clients: tuple[Client, ...]) -> None:
        if self.pacer.delay(time.monotonic(), for_input=True) == 0:
            self._produce(clients, for_input=True)

    def _produce(self, clients: tuple[Client, ...], for_input: bool = False) -> None:
        """Update; when anything shown may have changed, render and compare with the canvas last
        produced; then send each tab of ``clients`` (the event loop's snapshot) what it lacks."""
        # Inputs are applied on this thread too, so these are exactly the inputs this frame shows.
        seqs = [c.seq for c in clients]
        tb = self.tb
        tb.update()
        rev = self._revision()
        rects: list[Rect] = []
        if rev != self._last_key:
            self._last_key = rev
            canvas = tb.render()
            start = time.thread_time()  # what the web adds to the window's loop: compare, copy, encode
            # The render's damage is relative to the render before it: usable when that one is _shown.
            damage = tb.damage if tb.renders == self._renders + 1 else None
            self._renders = tb.renders
            if self._scratch is None or self._scratch.shape != canvas.shape:
                self._scratch = np.empty_like(canvas)
            margin = 0 if self.config.frame_format == "png" else LOSSY_MARGIN
            rects = changed_rects(self._shown, canvas, self.areas, damage, self._scratch, margin)
            if rects:
                if self._shown is None or self._shown.shape != canvas.shape:
                    self._shown = canvas.copy()
                else:
                    for t, l, h, w in rects:
                        self._shown[t:t + h, l:l + w] = canvas[t:t + h, l:l + w]
                self.frames += 1
                self.pacer.produced(time.monotonic(), for_input)
            self.web_seconds += time.thread_time() - start
        self._shown_settled = settled = self.settled()
        self._busy = not settled or tb.state.camera
        for c, seq in zip(clients, seqs):
            c.frame_seq = max(c.frame_seq, seq)
            c.dirty += rects
        self._serve(clients)
        if rects:
            tb.tick()  # after the frame is on its way: it may hand freed heap back to the OS (ms)

    def _serve(self, clients) -> None:
        """Send each tab that has no frame in flight the changes it lacks (one encoding per distinct
        set of rectangles), or, when nothing changed, the inputs it sent that are now shown."""
        if self._shown is None:
            return
        start = time.thread_time()
        now = time.monotonic()
        encoded: dict[tuple, tuple[list, bytes]] = {}
        settled, (h, w) = self._shown_settled, self._shown.shape[:2]
        for c in clients:
            if c.in_flight(now):
                continue  # its dirty rectangles wait for the ack: the newest canvas then
            if c.need_full or c.dirty:
                rects = tuple([(0, 0, h, w)] if c.need_full else merge_rects(c.dirty, self.areas))
                if rects not in encoded:
                    encoded[rects] = encode_delta(self._shown, list(rects), self.config.frame_format,
                                                  self.config.quality, self.encoders)
                    self.frame_bytes += len(encoded[rects][1])
                entries, payload = encoded[rects]
                header = {"w": w, "h": h, "mime": FORMATS[self.config.frame_format][1], "seq": c.frame_seq,
                          "settled": settled, "n": self.frames, "rects": entries}
                c.need_full, c.dirty = False, []
                c.sent, c.sent_at = c.sent + 1, now
                self._to_tab(c, "frame", pack(b"F", header, payload))
            elif c.frame_seq > c.told_seq or settled != c.told_settled:
                self._to_tab(c, "text", json.dumps({"type": "seq", "seq": c.frame_seq, "settled": settled}))
            c.told_seq, c.told_settled = c.frame_seq, settled
        self.web_seconds += time.thread_time() - start

    def _flush(self, client: Client) -> None:
        """Core thread, after an ack: the tab may take the changes that piled up meanwhile."""
        client.flush_queued = False
        self._serve((client,))

    def _want_full(self, client: Client) -> None:
        client.need_full = True

    def settled(self) -> bool:
        tb = self.tb
        out = tb.worker.output
        return (not tb.worker.busy and tb.loader.idle and
                (tb.frame is None or (out is not None and out.job.key == tb.job().key)))

    async def _frames(self) -> None:
        """Produce a frame when woken (an input) or, while the worker, the loader or the camera may
        still change the canvas, every period; otherwise only an idle check now and then (acks that
        timed out)."""
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.pacer.period if self._busy else IDLE_CHECK_S)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            if not self.clients:
                continue
            delay = self.pacer.delay(time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)
            try:
                await self.call(self._produce, tuple(self.clients))
            except Exception:  # a render failure must not stop the stream
                log.exception("frame failed")

    # ---------------------------------------------------------------- one tab

    async def serve(self, ws: WebSocket) -> None:
        self._numbers += 1
        client = Client(ws, self.config, self._numbers)
        self.clients.add(client)
        self.wake.set()  # it needs the whole canvas
        sender = asyncio.create_task(client.run_sender())
        receiver = asyncio.create_task(self._receive(client))
        try:
            done, _ = await asyncio.wait({sender, receiver}, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                exc = task.exception()
                if exc is not None and not isinstance(exc, (WebSocketDisconnect, RuntimeError, OSError)):
                    log.warning("tab %d: %s: %s", client.number, type(exc).__name__, exc)
        finally:
            sender.cancel()
            receiver.cancel()
            self.clients.discard(client)
            if self.tb.camera is not None and getattr(self.tb.camera, "client", None) is client:
                await self.call(self._camera_failed, "the tab with the camera closed")

    async def _receive(self, client: Client) -> None:
        while True:
            msg = await client.ws.receive()
            if msg["type"] == "websocket.disconnect":
                return
            await self.handle(client, msg)

    async def handle(self, client: Client, msg: dict) -> None:
        """One message from a tab: acks always count (dropping one would stall that tab's frames
        for ack_timeout_s); anything else over the tab's rate limit is dropped."""
        try:
            text = msg.get("text") if msg.get("bytes") is None else None
            if text is not None and text.startswith("{") and len(text) < 64 and _is_ack(text):
                self._ack(client)
                return
            if not client.limit.allow():
                if client.limit.should_log():
                    log.warning("tab %d: too many messages, dropped %d", client.number, client.limit.dropped)
                    client.say({"type": "error", "text": "too many messages: some were dropped"})
                return
            if text is None:
                await self._binary(client, msg.get("bytes") or b"")
            else:
                await self._text(client, text)
        except DvisError as exc:
            log.warning("tab %d: dropped a message: %s", client.number, exc)
            client.say({"type": "error", "text": str(exc)})

    def _ack(self, client: Client) -> None:
        client.acked = min(client.acked + 1, client.sent)
        if not client.flush_queued:  # one core call however many acks come meanwhile
            client.flush_queued = True
            self.loop.run_in_executor(self.core, self._flush, client)

    async def _binary(self, client: Client, data: bytes) -> None:
        if data[:1] != b"C":
            raise DvisError("unknown binary message")
        if len(data) > self.config.max_camera_bytes:
            raise DvisError(f"camera frame of {len(data)} bytes is over the limit")
        if self.tb.camera is None or getattr(self.tb.camera, "client", None) is not client:
            return  # a late frame after the camera was switched off
        buf = np.frombuffer(data, np.uint8, offset=1)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if bgr is None or bgr.shape[0] * bgr.shape[1] > 4096 * 4096:
            raise DvisError("camera frame is not a readable image")
        number = client.camera_frame[0] + 1 if client.camera_frame else 1
        client.camera_frame = (number, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        self.wake.set()

    async def _text(self, client: Client, text: str) -> None:
        if len(text) > self.config.max_message_bytes:
            raise DvisError(f"message of {len(text)} bytes is over the limit")
        try:
            msg = json.loads(text)
        except ValueError:
            raise DvisError("message is not JSON") from None
        if not isinstance(msg, dict):
            raise DvisError("message is not a JSON object")
        kind = msg.get("t")
        seq = msg.get("seq", 0)
        if not isinstance(seq, int) or isinstance(seq, bool):
            raise DvisError("seq is not an integer")
        if kind == "ack":
            self._ack(client)
        elif kind == "full":
            self.loop.run_in_executor(self.core, self._want_full, client)  # before the ack that follows it
        elif kind == "key":
            name = msg.get("key")
            if not isinstance(name, str) or not is_key_name(name):
                raise DvisError(f"not a key name: {str(name)[:20]!r}")
            shot = await self.call(self._key, client, name, seq, tuple(self.clients))
            if shot is not None:
                client.send_file(shot)
            self.wake.set()  # the worker's result, unit images and a frame the pacer held back
        elif kind == "click":
            x, y = msg.get("x"), msg.get("y")
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 100_000 for v in (x, y)):
                raise DvisError("click needs integer x and y")
            await self.call(self._click, client, x, y, seq, tuple(self.clients))
            self.wake.set()
        elif kind == "camera_error":
            await self.call(self._camera_failed, str(msg.get("text", "not available")))
            self.wake.set()
        else:
            raise DvisError(f"unknown message type {str(kind)[:20]!r}")


def _is_ack(text: str) -> bool:
    try:
        msg = json.loads(text)
    except ValueError:
        return False
    return isinstance(msg, dict) and msg.get("t") == "ack" and len(msg) == 1



# -------------------------------------------------------------------- HTTP


def _static(name: str) -> bytes:
    return resources.files("dvis.web").joinpath("static", name).read_bytes()


def _token_ok(config: WebConfig, given: str | None) -> bool:
    return not config.token or (given is not None and secrets.compare_digest(given, config.token))


def _origin_ok(headers) -> bool:
    """The request comes from a page served by this server (same scheme-less host:port)."""
    origin, host = headers.get("origin"), headers.get("host")
    if not origin or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


class TokenGate:
    """ASGI middleware: every HTTP and WebSocket request needs the token, in ``?token=`` or the cookie."""

    def __init__(self, app, config: WebConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        from starlette.requests import HTTPConnection

        conn = HTTPConnection(scope)
        given = conn.query_params.get("token") or conn.cookies.get(COOKIE)
        if _token_ok(self.config, given):
            return await self.app(scope, receive, send)
        log.warning("refused %s %s from %s: no or wrong token", scope["type"], scope.get("path"),
                    conn.client.host if conn.client else "?")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = PlainTextResponse("dvis serve: this page needs the token printed by `dvis serve` "
                                     "(open the URL with ?token=...)", status_code=403)
        await response(scope, receive, send)


def create_app(make_toolbox, config: WebConfig) -> Starlette:
    """The starlette app. ``make_toolbox(camera_factory)`` builds the Toolbox core (called once, on the
    core thread, at start-up)."""
    config.check()
    session = Session(make_toolbox, config)

    async def index(request: Request) -> Response:
        response = HTMLResponse(_static("index.html"), headers={"Cache-Control": "no-store"})
        if config.token:
            response.set_cookie(COOKIE, config.token, httponly=True, samesite="strict")
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:  # a fixed set of names: no path from the request reaches the disk
            return PlainTextResponse("not found", status_code=404)
        return Response(_static(name), media_type=STATIC[name], headers={"Cache-Control": "no-store"})

    async def upload(request: Request) -> Response:
        if not _origin_ok(request.headers):
            log.warning("refused an upload from origin %s", request.headers.get("origin"))
            return JSONResponse({"error": "uploads must come from the dvis page"}, status_code=403)
        limit = config.max_upload_bytes
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > limit):
            return JSONResponse({"error": f"upload over the {limit >> 20} MiB limit"}, status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return JSONResponse({"error": f"upload over the {limit >> 20} MiB limit"}, status_code=413)
        raw = re.sub(r"[^A-Za-z0-9._ -]", "_", request.headers.get("x-filename", "image"))[:80] or "image"
        try:
            frame = await asyncio.get_running_loop().run_in_executor(None, _decode_upload, bytes(body), raw,
                                                                     config.max_upload_pixels)
            await session.call(session._upload, f"upload:{raw}", frame)
        except DvisError as exc:
            log.warning("upload %s refused: %s", raw, exc)
            return JSONResponse({"error": str(exc)}, status_code=400)
        session.wake.set()
        return JSONResponse({"ok": True, "name": raw, "shape": list(frame.shape)})

    async def ws_endpoint(ws: WebSocket) -> None:
        if not _origin_ok(ws.headers):
            log.warning("refused a WebSocket from origin %s", ws.headers.get("origin"))
            await ws.close(code=1008)
            return
        await ws.accept()
        await session.serve(ws)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await session.start()
        try:
            yield
        finally:
            await session.stop()

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    app = Starlette(routes=[Route("/", index), Route("/static/{name}", static), Route("/favicon.ico", favicon),
                            Route("/upload", upload, methods=["POST"]), WebSocketRoute("/ws", ws_endpoint)],
                    lifespan=lifespan)
    app.state.session = session
    return TokenGate(app, config)


def _decode_upload(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """An uploaded file decoded in memory with the same checks as image files (never written to disk)."""
    if not data:
        raise DvisError(f"{name}: empty upload")
    try:  # the header alone gives the size: refuse huge images before decoding them
        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
    except Exception:  # noqa: BLE001 - not an image Pillow knows: read_image says so below
        w = h = 0
    if w * h > max_pixels:
        raise DvisError(f"{name}: {w}x{h} is over the {max_pixels} pixel limit")
    frame = read_image(data)
    if frame.shape[0] * frame.shape[1] > max_pixels:
        raise DvisError(f"{name}: {frame.shape[1]}x{frame.shape[0]} is over the {max_pixels} pixel limit")
    return frame
