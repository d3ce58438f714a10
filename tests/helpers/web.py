"""A ``dvis serve`` server in a thread of the test process, and the ways tests reach it (the page in
Chromium, a WebSocket, raw HTTP): shared by tests/web."""
from __future__ import annotations

import socket
import threading
import time

import uvicorn
from websockets.sync.client import connect as ws_connect

from dvis.toolbox.app import Toolbox
from dvis.web.app import create_app
from dvis.web.config import WebConfig
from dvis.web.server import uvicorn_config
from helpers.toolbox import make_images, make_model_folder

TOKEN = "test-token-123"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tiny_settings(root, **overrides):
    from dvis.models.loading import load_model
    from dvis.toolbox.settings import load_settings

    model = load_model(str(make_model_folder(root)))
    values = {"images": str(make_images(root)), "pause_after_key_s": 0.0, "global_scale": 0.6,
              "screenshot_dir": str(root / "shots")}
    values.update(overrides)
    return model, load_settings(None, values)


class Server:
    """A dvis web server on a free loopback port, in a thread of this process, with the limits
    ``dvis serve`` sets (:func:`dvis.web.server.uvicorn_config`)."""

    def __init__(self, root, **config):
        self.model, self.settings = tiny_settings(root)
        self.port = free_port()
        self.config = WebConfig(**{"port": self.port, "token": TOKEN, **config})
        self.app = create_app(lambda cam: Toolbox(self.model, self.settings, camera_factory=cam), self.config)
        self.session = self.app.app.state.session
        self.server = uvicorn.Server(uvicorn_config(self.app, self.config, host="127.0.0.1", port=self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "server did not start"
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}/"

    @property
    def tb(self) -> Toolbox:
        return self.session.tb

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


def open_page(browser, server, token=TOKEN):
    page = browser.new_page(viewport={"width": 1000, "height": 700}, accept_downloads=True)
    page.goto(server.url + f"?token={token}")
    page.wait_for_function("window.dvis && window.dvis.frames > 0", timeout=30000)
    return page


def settle(page, seq, timeout=30000):
    """Wait until the page shows a settled frame reflecting input ``seq``."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    try:
        page.wait_for_function(f"dvis.ackedSeq >= {seq} && dvis.header && dvis.header.settled && "
                               f"dvis.header.seq >= {seq}", timeout=timeout)
    except PlaywrightTimeout:
        state = page.evaluate("JSON.stringify({seq: dvis.seq, acked: dvis.ackedSeq, header: dvis.header, "
                              "frames: dvis.frames, connected: dvis.connected, errors: dvis.errors})")
        raise AssertionError(f"input {seq} never showed settled: {state}") from None
    time.sleep(0.3)  # a later frame may still arrive (the unit images load after the pass)
    page.wait_for_function("dvis.header.settled", timeout=timeout)


def ws_url(server):
    return f"ws://127.0.0.1:{server.port}/ws"


def good_ws(server, **kw):
    return ws_connect(ws_url(server), origin=f"http://127.0.0.1:{server.port}",
                      additional_headers={"Cookie": f"dvis_token={TOKEN}"}, max_size=None, **kw)

