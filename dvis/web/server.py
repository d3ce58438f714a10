"""``dvis serve``: the toolbox core behind a starlette app, streamed to browser tabs over a WebSocket.

Protocol (one WebSocket per tab, ``/ws``):

* page -> server, text JSON: ``{"t": "key", "key": NAME, "seq": N}``, ``{"t": "click", "x": X, "y": Y,
  "seq": N}``, ``{"t": "ack"}`` (a frame was drawn), ``{"t": "full"}`` (send the whole canvas next),
  ``{"t": "camera_error", "text": ...}``;
  binary: ``b"C"`` + JPEG bytes, a browser camera frame.
* server -> page, binary: ``b"F"`` or ``b"S"`` (screenshot), 4-byte big-endian header length, a JSON
  header (``w``, ``h``: the canvas, ``mime``, ``seq``: the last input of this tab the frame reflects,
  ``settled``: the worker has caught up, ``rects``: [x, y, w, h, nbytes] of each changed rectangle),
  then the rectangles' images (a frame carries only what changed since the one the tab drew last); text JSON: ``{"type": "seq"|"info"|"error"|
  "camera", ...}``.

Security (docs/web.md): every request needs the token (``?token=`` once, then the cookie set by the
page); WebSocket and upload requests must come from the page's own origin; messages, camera frames
and uploads have size limits; a tab sending too fast has the excess dropped; a malformed message is
dropped with a log line and the connection goes on. No request names a server path.
"""
from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
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
from dvis.images import read_image
from dvis.toolbox.actions import SCREENSHOT
from dvis.toolbox.keys import is_key_name

log = logging.getLogger(__name__)

COOKIE = "dvis_token"
FORMATS = {"jpeg": (".jpg", "image/jpeg"), "webp": (".webp", "image/webp"), "png": (".png", "image/png")}
STATIC = {"app.js": "application/javascript", "app.css": "text/css"}


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


def changed_rects(base: np.ndarray | None, canvas: np.ndarray,
                  panes: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
    """(top, left, height, width) rectangles covering every pixel where ``canvas`` differs from
    ``base``: the changed part of each pane, plus one for changes outside the panes. The whole canvas
    when there is no base of the same size."""
    h, w = canvas.shape[:2]
    if base is None or base.shape != canvas.shape:
        return [(0, 0, h, w)]
    # Rows x (columns * 3): reductions over a last axis of 3 are very slow in numpy.
    diff = cv2.absdiff(base, canvas).reshape(h, w * 3)
    rects = []

    def bbox(t: int, l: int, sub: np.ndarray) -> None:
        rows, cols = np.flatnonzero(sub.any(axis=1)), np.flatnonzero(sub.any(axis=0)) // 3
        if rows.size:
            rects.append((t + int(rows[0]), l + int(cols[0]), int(rows[-1] - rows[0]) + 1,
                          int(cols[-1] - cols[0]) + 1))

    for t, l, ph, pw in panes:
        bbox(t, l, diff[t:t + ph, 3 * l:3 * (l + pw)])
        diff[t:t + ph, 3 * l:3 * (l + pw)] = 0
    bbox(0, 0, diff)  # changes outside the panes, e.g. the gaps between them under the help overlay
    return rects


def encode_delta(base: np.ndarray | None, canvas: np.ndarray, panes, fmt: str,
                 quality: int) -> tuple[list[list[int]], bytes]:
    """The frame a tab needs to turn ``base`` (what it shows) into ``canvas``: rectangles
    [x, y, w, h, nbytes] and their images concatenated."""
    rects, parts = [], []
    for t, l, h, w in changed_rects(base, canvas, panes):
        data = encode(canvas[t:t + h, l:l + w], fmt, quality)
        rects.append([l, t, w, h, len(data)])
        parts.append(data)
    return rects, b"".join(parts)


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


class Client:
    """One connected tab: its socket, the newest frame waiting for it (latest wins) and its input seq."""

    def __init__(self, ws: WebSocket, config: WebConfig, number: int, session: Session | None = None):
        self.ws, self.number, self.session = ws, number, session
        self.config = config
        self.base: np.ndarray | None = None  # the canvas this tab shows (what the next delta is against)
        self.wake = asyncio.Event()
        self.frame: tuple[dict, np.ndarray] | None = None  # newest unsent (header, canvas); a newer one replaces it
        self.told_settled = False  # the settled flag the tab last got
        self.texts: list[dict] = []  # small JSON messages (bounded)
        self.files: list[bytes] = []  # screenshots to download (bounded)
        self.acked_at: float | None = 0.0  # None while a frame is in flight (sent, not drawn yet)
        self.seq = 0  # last input seq of this tab applied to the core
        self.told_seq = 0  # last seq a frame or a seq message carries to the tab
        self.limit = RateLimit(config.max_messages_per_s)
        self.ack_timeout = config.ack_timeout_s
        self.camera_frame: tuple[int, np.ndarray] | None = None

    def offer(self, header: dict, canvas: np.ndarray) -> None:
        self.frame = (header, canvas)
        self.told_seq, self.told_settled = max(self.told_seq, header["seq"]), header["settled"]
        self.wake.set()

    def unchanged(self, seq: int, settled: bool) -> None:
        """Inputs up to ``seq`` were applied without changing the canvas (or the worker settled on the
        same canvas): tell the tab, in the waiting frame's header if there is one (it stays in order)."""
        if self.frame is not None:
            header = self.frame[0]
            header["seq"], header["settled"] = max(header["seq"], seq), settled
        elif seq > self.told_seq or settled != self.told_settled:
            self.say({"type": "seq", "seq": seq, "settled": settled})
        self.told_seq, self.told_settled = max(self.told_seq, seq), settled

    def say(self, message: dict) -> None:
        if len(self.texts) < 32:
            self.texts.append(message)
        self.wake.set()

    def send_file(self, data: bytes) -> None:
        if len(self.files) < 4:
            self.files.append(data)
        self.wake.set()

    def can_send_frame(self) -> bool:
        return self.acked_at is not None or time.monotonic() - self._sent_at > self.ack_timeout

    async def run_sender(self) -> None:
        """Send what is waiting: text messages at once, a frame when the previous one was drawn."""
        self._sent_at = 0.0
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=self.ack_timeout)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            while self.texts:
                await self.ws.send_text(json.dumps(self.texts.pop(0)))
            while self.files:
                await self.ws.send_bytes(self.files.pop(0))
            if self.frame is not None and self.can_send_frame():
                (header, canvas), self.frame = self.frame, None
                self.acked_at, self._sent_at = None, time.monotonic()
                rects, payload = await asyncio.get_running_loop().run_in_executor(None, self._delta, canvas)
                self.base = canvas
                await self.ws.send_bytes(pack(b"F", {**header, "rects": rects}, payload))

    def _delta(self, canvas: np.ndarray) -> tuple[list[list[int]], bytes]:
        start = time.thread_time()
        out = encode_delta(self.base, canvas, self.session.panes if self.session else [],
                           self.config.frame_format, self.config.quality)
        if self.session is not None:
            self.session.web_seconds += time.thread_time() - start
            self.session.frame_bytes += len(out[1])
        return out

    def ack(self) -> None:
        self.acked_at = time.monotonic()
        self.wake.set()


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
    """The one shared view: a Toolbox core run on one thread, its frames sent to every tab."""

    def __init__(self, make_toolbox, config: WebConfig):
        self.config = config
        self.core = ThreadPoolExecutor(1, thread_name_prefix="dvis-web-core")  # the Toolbox is not thread-safe
        self._make_toolbox = make_toolbox
        self.tb = None
        self.clients: set[Client] = set()
        self.wake = asyncio.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None
        self._last_key = None
        self._last_canvas: np.ndarray | None = None
        self._input_from: Client | None = None  # the tab whose input is being applied
        self._numbers = 0
        self.uploads = 0
        self.frames = 0
        self.frame_bytes = 0
        self.web_seconds = 0.0  # CPU spent comparing and encoding frames (what the window does not do)
        self.panes: list[tuple[int, int, int, int]] = []

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.tb = await self.loop.run_in_executor(self.core, self._build)
        self.panes = list(self.tb.panes.values())
        self._task = asyncio.create_task(self._frames())

    def _build(self):
        return self._make_toolbox(self._open_camera)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
        if self.tb is not None:
            await self.loop.run_in_executor(self.core, self.tb.close)
        self.core.shutdown(wait=False)

    async def call(self, fn, *args):
        """Run ``fn(*args)`` on the core thread."""
        return await self.loop.run_in_executor(self.core, fn, *args)

    # ---------------------------------------------------------------- inputs (core thread)

    def _open_camera(self, camera_id: int, mirror: bool) -> BrowserCamera:
        client = self._input_from
        if client is None or client not in self.clients:
            raise DvisError("no browser tab to take the camera from")
        h, w = self.tb.model.input_size
        self.loop.call_soon_threadsafe(client.say, {"type": "camera", "on": True, "mirror": mirror,
                                                    "size": [h, w]})
        return BrowserCamera(self, client)

    def _key(self, client: Client, name: str, seq: int) -> bytes | None:
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
        return None

    def _click(self, client: Client, x: int, y: int, seq: int) -> None:
        self.tb.click(x, y)
        client.seq = max(client.seq, seq)

    def _camera_failed(self, text: str) -> None:
        self.tb.message = f"browser camera: {text}"[:200]
        if self.tb.state.camera:
            self.tb.set_state(replace(self.tb.state, camera=False))

    def _upload(self, name: str, frame: np.ndarray) -> None:
        if self.uploads >= self.config.max_uploads:
            raise DvisError(f"{self.config.max_uploads} uploads already; restart the server for more")
        self.uploads += 1
        self.tb.add_image(name, frame)

    # ---------------------------------------------------------------- frames

    def _revision(self):
        tb = self.tb
        out = tb.worker.output
        return (tb.state, id(out), tb.loader.version, tb.message, tb.frame_id, tb.worker.busy)

    def _produce(self) -> tuple[np.ndarray | None, bool, dict]:
        """Core thread: update; when anything shown may have changed, render. Returns (a copy of the
        canvas, or None when it did not change, settled, each tab's last input applied before it).
        Each tab's sender encodes what it lacks."""
        # Inputs are applied on this thread too, so these are exactly the inputs this frame shows.
        seqs = {c: c.seq for c in list(self.clients)}
        tb = self.tb
        tb.update()
        rev = self._revision()
        if rev == self._last_key:
            return None, self.settled(), seqs
        self._last_key = rev
        canvas = tb.render()
        start = time.thread_time()  # what the web adds to the window's loop: compare, copy, encode
        if self._last_canvas is not None and np.array_equal(canvas, self._last_canvas):
            self.web_seconds += time.thread_time() - start
            return None, self.settled(), seqs
        self._last_canvas = canvas.copy()  # frames are immutable from here: tabs encode from them
        self.web_seconds += time.thread_time() - start
        tb.tick()
        return self._last_canvas, self.settled(), seqs

    def settled(self) -> bool:
        tb = self.tb
        out = tb.worker.output
        return (not tb.worker.busy and tb.loader.idle and
                (tb.frame is None or (out is not None and out.job.key == tb.job().key)))

    async def _frames(self) -> None:
        period = 1.0 / max(1.0, self.tb.settings.max_fps)
        last = 0.0
        while True:
            try:
                await asyncio.wait_for(self.wake.wait(), timeout=period)
            except asyncio.TimeoutError:
                pass
            self.wake.clear()
            if not self.clients:
                continue
            wait = last + period - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            last = time.monotonic()
            try:
                canvas, settled, seqs = await self.call(self._produce)
            except Exception:  # a render failure must not stop the stream
                log.exception("frame failed")
                continue
            if canvas is None:
                for c, seq in seqs.items():
                    c.unchanged(seq, settled)
                continue
            mime = FORMATS[self.config.frame_format][1]
            self.frames += 1
            h, w = canvas.shape[:2]
            for c in list(self.clients):
                c.offer({"w": w, "h": h, "mime": mime, "seq": seqs.get(c, 0), "settled": settled,
                         "n": self.frames}, canvas)

    # ---------------------------------------------------------------- one tab

    async def serve(self, ws: WebSocket) -> None:
        self._numbers += 1
        client = Client(ws, self.config, self._numbers, self)
        self.clients.add(client)
        self._last_key = None  # a new tab needs the current frame
        self._last_canvas = None
        self.wake.set()
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
            if not client.limit.allow():
                if client.limit.should_log():
                    log.warning("tab %d: too many messages, dropped %d", client.number, client.limit.dropped)
                    client.say({"type": "error", "text": "too many messages: some were dropped"})
                continue
            try:
                if msg.get("bytes") is not None:
                    await self._binary(client, msg["bytes"])
                else:
                    await self._text(client, msg.get("text") or "")
            except DvisError as exc:
                log.warning("tab %d: dropped a message: %s", client.number, exc)
                client.say({"type": "error", "text": str(exc)})

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
            client.ack()
        elif kind == "full":
            client.base = None  # the next frame is the whole canvas
        elif kind == "key":
            name = msg.get("key")
            if not isinstance(name, str) or not is_key_name(name):
                raise DvisError(f"not a key name: {str(name)[:20]!r}")
            shot = await self.call(self._key, client, name, seq)
            if shot is not None:
                client.send_file(shot)
            self.wake.set()
        elif kind == "click":
            x, y = msg.get("x"), msg.get("y")
            if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 100_000 for v in (x, y)):
                raise DvisError("click needs integer x and y")
            await self.call(self._click, client, x, y, seq)
            self.wake.set()
        elif kind == "camera_error":
            await self.call(self._camera_failed, str(msg.get("text", "not available")))
            self.wake.set()
        else:
            raise DvisError(f"unknown message type {str(kind)[:20]!r}")


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
