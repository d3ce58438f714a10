"""The session: the one shared view of ``dvis serve``. A Toolbox core run on one thread (inputs, render,
compare, encode), its frames sent to every tab, and each tab's messages checked and applied."""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace

import numpy as np
from starlette.websockets import WebSocketDisconnect

from dvis.errors import DvisError
from dvis.imaging.images import read_image
from dvis.toolbox.actions import SCREENSHOT
from dvis.toolbox.keys import is_key_name
from dvis.web.config import FORMATS, WebConfig
from dvis.web.encoding import encode_delta
from dvis.web.frames import LOSSY_MARGIN, Rect, changed_rects, merge_rects, regions
from dvis.web.pacing import Pacer
from dvis.web.protocol import is_ack, pack
from dvis.web.tabs import Client
from dvis.web.transport import Transport
from dvis.web.uploads import decode_upload

log = logging.getLogger(__name__)

IDLE_CHECK_S = 0.5  # settled and no camera: how often the frame loop looks anyway (acks that timed out)


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
        # Camera frames and uploads are decoded here, one at a time: never on the event loop (a large
        # image stalled every request for seconds), and at most one decoded image in flight.
        self.decoder = ThreadPoolExecutor(1, thread_name_prefix="dvis-web-decode")
        self.upload_side = config.upload_side  # see start: at least what the toolbox shows
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
        _, _, ih, iw = self.tb.panes["input"]
        self.upload_side = max(self.config.upload_side, ih, iw, *self.tb.model.input_size)
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
        self.decoder.shutdown(wait=False)

    async def call(self, fn, *args):
        """Run ``fn(*args)`` on the core thread."""
        return await self.loop.run_in_executor(self.core, fn, *args)

    async def decode(self, fn, *args):
        """Run ``fn(*args)`` (an image decoder) on the decoding thread."""
        return await self.loop.run_in_executor(self.decoder, fn, *args)

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

    async def upload(self, data: bytes, raw_name: str) -> tuple[str, np.ndarray]:
        """An uploaded image file (the page's ``POST /upload``, a widget's comm message): its name made
        safe, decoded on the decoding thread (one at a time, never on the event loop; the checks of
        :func:`~dvis.web.uploads.decode_upload`), added to the image list and shown. Returns (name,
        image); raises DvisError when it is refused."""
        name = re.sub(r"[^A-Za-z0-9._ -]", "_", raw_name)[:80] or "image"
        frame = await self.decode(decode_upload, data, name, self.upload_side)
        await self.call(self._upload, f"upload:{name}", frame)
        self.wake.set()
        return name, frame

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

    async def serve(self, ws: Transport) -> None:
        """Serve one viewer until it goes: a tab's WebSocket, or a notebook widget's comm."""
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
        for ack_timeout_s); anything else over the tab's rate limit is dropped. A message that fails,
        however it fails, is dropped with a log line and an error reply; the connection goes on."""
        try:
            text = msg.get("text") if msg.get("bytes") is None else None
            if text is not None and text.startswith("{") and len(text) < 64 and is_ack(text):
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
        except Exception as exc:  # noqa: BLE001 - a message must never end the connection silently
            log.warning("tab %d: dropped a message: %s: %s", client.number, type(exc).__name__, str(exc)[:200])
            client.say({"type": "error", "text": f"message dropped: {type(exc).__name__}"})

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
        # read_image refuses a header over the pixel limit of every input image before decoding.
        frame = await self.decode(read_image, data[1:], "camera frame")
        number = client.camera_frame[0] + 1 if client.camera_frame else 1
        client.camera_frame = (number, frame)
        self.wake.set()

    async def _text(self, client: Client, text: str) -> None:
        if len(text) > self.config.max_message_bytes:
            raise DvisError(f"message of {len(text)} bytes is over the limit")
        try:
            msg = json.loads(text)
        except ValueError:
            raise DvisError("message is not JSON") from None
        except RecursionError:  # brackets nested deeper than the parser recurses
            raise DvisError("message is not JSON: nested too deeply") from None
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

