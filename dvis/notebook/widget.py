"""``dvis.show``: the live toolbox in a notebook cell, as an anywidget.

The widget is ``dvis serve`` with another transport: the same :class:`~dvis.web.session.Session`
(core thread, frame diffing and encoding, message checks) and the same client code
(``dvis/web/static/app.js``), the frames and inputs carried over the widget's comm channel
(:class:`CommTransport`) instead of a WebSocket. The session runs on an event loop of its own, in a
thread, so the kernel's loop only forwards messages. Closing the widget (or the kernel) stops the
loop, the session's threads and the toolbox's workers; nothing stays behind.
"""
from __future__ import annotations

import asyncio
import json
import re
import threading
from importlib import resources
from pathlib import Path

import anywidget
import numpy as np

from dvis.errors import DvisError
from dvis.formats.paths import find_settings_local, packaged_data_dir
from dvis.notebook.models import as_model
from dvis.toolbox.app import Toolbox
from dvis.toolbox.settings import load_settings
from dvis.web.config import WebConfig
from dvis.web.session import Session

#: The canvas a notebook shows: 990 x 614 pixels, about a JupyterLab cell's width (global_scale).
NOTEBOOK_SCALE = 0.66
CLOSE_TIMEOUT_S = 10.0


def _client_code() -> tuple[str, str]:
    """The widget's ES module (the page's client, its elements from index.html, then the comm
    transport) and its style."""
    web = resources.files("dvis.web").joinpath("static")
    page = web.joinpath("index.html").read_text()
    markup = re.sub(r' id="[^"]*"', "", page[page.index("<!-- toolbox"):page.index("<!-- /toolbox -->")])
    esm = (web.joinpath("app.js").read_text() + f"\nconst MARKUP = {json.dumps(markup)};\n"
           + resources.files("dvis.notebook").joinpath("widget.js").read_text())
    css = web.joinpath("app.css").read_text() + (
        ".dvis { position: relative; }\n.dvis-stage { overflow: hidden; }\n")
    return esm, css


class CommTransport:
    """A :class:`~dvis.web.transport.Transport` over the widget's comm: messages from the kernel's
    thread are queued onto the session's loop; sends go out through the comm (thread-safe: ipykernel
    hands them to its IOPub thread)."""

    def __init__(self, widget: anywidget.AnyWidget, loop: asyncio.AbstractEventLoop):
        self.widget, self.loop = widget, loop
        self.inbox: asyncio.Queue[dict] = asyncio.Queue()

    def feed(self, message: dict) -> None:
        """Kernel thread: one message from the page (or the disconnect) for :meth:`receive`."""
        self.loop.call_soon_threadsafe(self.inbox.put_nowait, message)

    async def receive(self) -> dict:
        return await self.inbox.get()

    async def send_text(self, data: str) -> None:
        self.widget.send({"text": data})

    async def send_bytes(self, data: bytes) -> None:
        self.widget.send({"bin": 1}, buffers=[data])


class ToolboxWidget(anywidget.AnyWidget):
    """The toolbox of one model in a notebook cell (see :func:`show`). ``toolbox`` is its core;
    :meth:`close` stops it."""

    _esm, _css = _client_code()

    def __init__(self, model, settings, images: list[np.ndarray] | None = None):
        super().__init__()
        self.model = model
        self.config = WebConfig()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="dvis-notebook-loop", daemon=True)
        self._thread.start()
        self.session = Session(lambda camera_factory: Toolbox(model, settings, camera_factory=camera_factory),
                               self.config)
        self._closed = False
        try:
            self._run(self.session.start())
            for i, image in enumerate(images or []):
                self._run(self.session.call(self.session.tb.add_image, f"image {i}", image))
        except BaseException:
            self.close()
            raise
        self.transport = CommTransport(self, self._loop)
        self._serving = asyncio.run_coroutine_threadsafe(self.session.serve(self.transport), self._loop)
        self.on_msg(self._on_msg)

    @property
    def toolbox(self) -> Toolbox:
        return self.session.tb

    def _run(self, coroutine, timeout: float | None = None):
        """Run ``coroutine`` on the session's loop and wait for its result (kernel thread)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _on_msg(self, _widget, content: dict, buffers: list) -> None:
        """Kernel thread: a message from the page, as the WebSocket would have carried it."""
        if not isinstance(content, dict):
            return
        if "upload" in content:
            asyncio.run_coroutine_threadsafe(self._upload(str(content["upload"]), bytes(buffers[0]) if buffers else b""),
                                             self._loop)
        elif isinstance(content.get("text"), str):
            self.transport.feed({"type": "websocket.receive", "text": content["text"]})
        elif buffers:
            self.transport.feed({"type": "websocket.receive", "bytes": bytes(buffers[0])})

    async def _upload(self, raw: str, data: bytes) -> None:
        """An image file dropped or chosen in the widget: ``dvis serve``'s upload (the same checks and
        limits), answered in the comm."""
        try:
            if len(data) > self.config.max_upload_bytes:
                raise DvisError(f"upload over the {self.config.max_upload_bytes >> 20} MiB limit")
            name, _ = await self.session.upload(data, raw)
            self.send({"upload": {"name": name}})
        except DvisError as exc:
            self.send({"upload": {"error": str(exc)}})

    async def _stop(self) -> None:
        self.transport.feed({"type": "websocket.disconnect"})
        await asyncio.wrap_future(self._serving)
        await self.session.stop()

    def close(self) -> None:
        """Stop the toolbox (its workers, the session's threads, the loop) and close the widget."""
        if not self._closed:
            self._closed = True
            try:
                if self.session.tb is not None and hasattr(self, "_serving"):
                    self._run(self._stop(), CLOSE_TIMEOUT_S)
                elif self.session.tb is not None:
                    self._run(self.session.stop(), CLOSE_TIMEOUT_S)
            finally:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._thread.join(CLOSE_TIMEOUT_S)
                self._loop.close()
                for pool in (self.session.core, self.session.encoders, self.session.decoder):
                    pool.shutdown(wait=True)  # stop() let them finish alone: here they are joined
        super().close()


def show(model="zf-cifar10", images=None, *, preprocess=None, labels: list[str] | None = None,
         layers: list[str] | None = None, **settings) -> ToolboxWidget:
    """The live toolbox of ``model`` in the notebook: keys while it has the focus, clicks, image
    upload (drop or choose a file) and the camera, as on the ``dvis serve`` page.

    ``model``: what :func:`dvis.load_model` takes (None: the default model), a LoadedModel, or an
    ``nn.Module`` of yours with ``preprocess`` (its input size, mean and std: a dict, a torchvision
    weights' ``transforms()`` or a ``transforms.Compose``), ``labels`` and ``layers``.
    ``images``: an image folder, list file or image (default: the settings', input_images/), or a
    list of HxWx3 uint8 arrays shown in memory. ``settings``: any toolbox setting (docs/toolbox.md),
    e.g. ``global_scale=1.0``; ``settings_local.py`` applies as for ``dvis serve``.
    ``widget.close()`` stops it (a kernel's end ends its threads with the process)."""
    arrays = None
    if images is not None and not isinstance(images, (str, Path)):
        arrays = [np.asarray(a) for a in (images if isinstance(images, (list, tuple)) else [images])]
        if not arrays or any(a.dtype != np.uint8 or a.ndim not in (2, 3) for a in arrays):
            raise DvisError("images: a folder, list file or image path, or HxW(x3) uint8 arrays")
        images = None
    overrides = {"global_scale": NOTEBOOK_SCALE, **settings, "images": str(images) if images is not None else None}
    resolved = load_settings(find_settings_local(), overrides)
    if not Path(resolved.images).exists() and (packaged_data_dir() / resolved.images).exists():
        resolved.images = str(packaged_data_dir() / resolved.images)  # the default input_images/ from anywhere
    module_options = {k: v for k, v in (("preprocess", preprocess), ("labels", labels), ("layers", layers))
                      if v is not None}
    loaded = as_model(model if model is not None else resolved.model, device=resolved.device,
                      weights=resolved.weights, **module_options)
    return ToolboxWidget(loaded, resolved, arrays)
