"""`dvis serve` in a real Chromium (Debian's, driven by Playwright; never a downloaded browser): the
page against the headless driver pixel for pixel, clicks, uploads, screenshots, the fake camera,
reconnects, and the security cases (token, origin, limits, garbage, floods)."""
from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time

import httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image
from websockets.sync.client import connect as ws_connect

from dvis.errors import DvisError
from dvis.toolbox.app import Toolbox
from dvis.toolbox.drivers import run_keys
from dvis.web.app import create_app
from dvis.web.config import WebConfig
from helpers.toolbox import make_images, make_model_folder

TOKEN = "test-token-123"
playwright_api = pytest.importorskip("playwright.sync_api")  # the test extra installs it


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
    """A dvis web server on a free loopback port, in a thread of this process."""

    def __init__(self, root, **config):
        self.model, self.settings = tiny_settings(root)
        self.port = free_port()
        self.config = WebConfig(port=self.port, token=TOKEN, **config)
        self.app = create_app(lambda cam: Toolbox(self.model, self.settings, camera_factory=cam), self.config)
        self.session = self.app.app.state.session
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    ws_max_size=self.config.max_camera_bytes + 1024,
                                                    ws_per_message_deflate=False))
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


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "srv", frame_format="png")
    yield s
    s.stop()


def open_page(browser, server, token=TOKEN):
    page = browser.new_page(viewport={"width": 1000, "height": 700}, accept_downloads=True)
    page.goto(server.url + f"?token={token}")
    page.wait_for_function("window.dvis && window.dvis.frames > 0", timeout=30000)
    return page


def settle(page, seq, timeout=30000):
    """Wait until the page shows a settled frame reflecting input ``seq``."""
    try:
        page.wait_for_function(f"dvis.ackedSeq >= {seq} && dvis.header && dvis.header.settled && "
                               f"dvis.header.seq >= {seq}", timeout=timeout)
    except playwright_api.TimeoutError:
        state = page.evaluate("JSON.stringify({seq: dvis.seq, acked: dvis.ackedSeq, header: dvis.header, "
                              "frames: dvis.frames, connected: dvis.connected, errors: dvis.errors})")
        raise AssertionError(f"input {seq} never showed settled: {state}") from None
    time.sleep(0.3)  # a later frame may still arrive (the unit images load after the pass)
    page.wait_for_function("dvis.header.settled", timeout=timeout)


def canvas_pixels(page) -> np.ndarray:
    """The page canvas's pixels (as a lossless PNG data URL: fast to move out of the browser)."""
    url = page.evaluate("document.getElementById('view').toDataURL('image/png')")
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))).convert("RGB"))


def without_status(img: np.ndarray, tb: Toolbox) -> np.ndarray:
    top = tb.panes["status"][0]
    return img[:top]


def test_page_shows_the_headless_drivers_canvas_pixel_for_pixel(browser, server, tmp_path):
    keys = ["right", "down", "b", "o", "left", "a", "e", "t"]
    page = open_page(browser, server)
    for k in keys:
        page.keyboard.press({"right": "ArrowRight", "down": "ArrowDown", "left": "ArrowLeft"}.get(k, k))
    settle(page, len(keys))
    shown = canvas_pixels(page)
    assert page.evaluate("dvis.atlasPieces") > 0  # frames with several images came as atlases, and rebuilt exactly
    model, settings = tiny_settings(tmp_path / "ref")
    ref = Toolbox(model, settings, headless=True)
    try:
        run_keys(ref, keys)
        assert ref.state == server.tb.state
        expected = ref.render()
        assert shown.shape == expected.shape
        np.testing.assert_array_equal(without_status(shown, ref), without_status(expected, ref))
    finally:
        ref.close()
    page.close()


def test_click_tile_upload_screenshot_and_status(browser, server, tmp_path):
    page = open_page(browser, server)
    tb = server.tb
    lay = tb.tile_layouts[0]
    y, x = lay.origins(6)[4]
    t, l = tb.panes["layers"][:2]
    box = page.locator("#view").bounding_box()
    w = page.evaluate("document.getElementById('view').width")
    s = box["width"] / w
    page.mouse.click(box["x"] + (l + x + 2) * s, box["y"] + (t + y + 2) * s)
    settle(page, 1)
    assert (tb.state.layer, tb.state.unit) == (0, 4)

    img = tmp_path / "cat.png"
    Image.fromarray(np.full((50, 70, 3), (200, 30, 30), np.uint8)).save(img)
    page.set_input_files("#file", str(img))
    page.wait_for_function("document.getElementById('note').textContent.startsWith('showing')", timeout=20000)
    n = len(tb.files)
    assert tb.files.paths[-1] == "upload:cat.png" and tb.state.image == n - 1
    assert "cat.png" in tb.status_text()
    it, il, ih, iw = tb.panes["input"]
    deadline = time.monotonic() + 20
    while tuple(canvas_pixels(page)[it + ih // 2, il + iw // 2]) != (200, 30, 30):  # the upload on the input pane
        if time.monotonic() > deadline:
            Image.fromarray(canvas_pixels(page)).save(tmp_path / "page.png")
            raise AssertionError(f"the uploaded image never showed; see {tmp_path / 'page.png'}")
        time.sleep(0.2)

    with page.expect_download(timeout=20000) as dl:
        page.keyboard.press("p")
    path = dl.value.path()
    assert dl.value.suggested_filename.endswith(".png")
    shot = np.asarray(Image.open(path))
    assert shot.shape[:2] == tb.canvas.shape[:2]
    assert not (tmp_path / "srv" / "shots").exists()  # downloaded, not written on the server
    page.close()


def test_two_tabs_share_one_view_and_reconnect(browser, server):
    a, b = open_page(browser, server), open_page(browser, server)
    a.keyboard.press("o")
    b.wait_for_function("dvis.header && dvis.header.n > 1", timeout=20000)
    settle(a, 1)
    b.wait_for_function("dvis.header.settled", timeout=20000)
    assert server.tb.state.layer == 1
    np.testing.assert_array_equal(without_status(canvas_pixels(a), server.tb),
                                  without_status(canvas_pixels(b), server.tb))
    frames = b.evaluate("dvis.frames")
    b.evaluate("dvis.drop()")  # a network drop: the page reconnects by itself
    b.wait_for_function(f"dvis.connections == 2 && dvis.connected && dvis.frames > {frames}", timeout=20000)
    b.keyboard.press("u")
    settle(b, 1)
    assert server.tb.state.layer == 0
    a.close()
    b.close()


def test_fake_camera_drives_the_model(browser, server):
    page = open_page(browser, server)
    page.keyboard.press("c")
    deadline = time.monotonic() + 30
    while server.tb.frame_id is None or server.tb.frame_id[0] != "camera":
        assert time.monotonic() < deadline, f"no camera frame; message {server.tb.message!r}"
        time.sleep(0.1)
    assert server.tb.state.camera and isinstance(server.tb.frame, np.ndarray)
    while (out := server.tb.worker.output) is None or out.job.frame_id[0] != "camera":  # the net ran on it
        assert time.monotonic() < deadline, "the worker never ran on a camera frame"
        time.sleep(0.1)
    assert out.error is None and out.job.frame.shape[:2] == (224, 224)  # cropped and downscaled by the page
    page.keyboard.press("c")
    page.wait_for_function("dvis.ackedSeq >= 2", timeout=20000)
    assert not server.tb.state.camera
    page.close()


def test_page_closing_mid_frame_leaves_the_server_serving(browser, server):
    for _ in range(3):
        page = open_page(browser, server)
        page.keyboard.press("b")
        page.keyboard.press("o")
        page.close()  # while frames are computed and sent
    page = open_page(browser, server)
    page.keyboard.press("u")
    settle(page, 1)
    page.close()


# ------------------------------------------------------------------ security


def ws_url(server):
    return f"ws://127.0.0.1:{server.port}/ws"


def good_ws(server, **kw):
    return ws_connect(ws_url(server), origin=f"http://127.0.0.1:{server.port}",
                      additional_headers={"Cookie": f"dvis_token={TOKEN}"}, max_size=None, **kw)


def test_http_needs_the_token_and_serves_no_paths(server):
    base = server.url
    assert httpx.get(base).status_code == 403
    assert httpx.get(base + "?token=wrong").status_code == 403
    assert httpx.get(base + "static/app.js").status_code == 403
    r = httpx.get(base + f"?token={TOKEN}")
    assert r.status_code == 200 and r.cookies.get("dvis_token") == TOKEN and "<canvas" in r.text
    cookies = {"dvis_token": TOKEN}
    assert httpx.get(base + "static/app.js", cookies=cookies).status_code == 200
    for path in ("static/..%2F..%2Fserver.py", "static/%2e%2e/server.py", "../../etc/passwd",
                 "static/../../../../etc/passwd", "static/index.html%00.js", "images/0"):
        assert httpx.get(base + path, cookies=cookies).status_code == 404, path
    assert "no or wrong token" not in r.text


def test_websocket_refuses_no_token_wrong_token_and_bad_origin(server):
    origin = f"http://127.0.0.1:{server.port}"
    cases = [dict(origin=origin),
             dict(origin=origin, additional_headers={"Cookie": "dvis_token=wrong"}),
             dict(origin="http://evil.example", additional_headers={"Cookie": f"dvis_token={TOKEN}"}),
             dict(additional_headers={"Cookie": f"dvis_token={TOKEN}"})]  # no Origin at all
    for kw in cases:
        with pytest.raises(Exception):
            with ws_connect(ws_url(server), open_timeout=10, **kw) as ws:
                ws.recv(timeout=5)  # refused before or right after the handshake
    with good_ws(server) as ws:
        assert isinstance(ws.recv(timeout=20), bytes)  # the first frame


def test_upload_limits_and_origin(server, tmp_path):
    url = server.url + "upload"
    cookies = {"dvis_token": TOKEN}
    origin = {"Origin": f"http://127.0.0.1:{server.port}"}
    big = b"\x89PNG" + b"0" * (server.config.max_upload_bytes + 10)
    r = httpx.post(url, content=big, cookies=cookies, headers=origin)
    assert r.status_code == 413 and "limit" in r.json()["error"]
    r = httpx.post(url, content=b"not an image", cookies=cookies, headers=origin)
    assert r.status_code == 400 and "not a readable image" in r.json()["error"]
    bomb = io.BytesIO()  # 72 megapixels in a 70 KB file: refused from its header, before decoding
    Image.new("L", (9000, 8000)).save(bomb, "PNG")
    r = httpx.post(url, content=bomb.getvalue(), cookies=cookies, headers=origin)
    assert r.status_code == 400 and "pixel limit" in r.json()["error"]
    png = tmp_path / "x.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png)
    assert httpx.post(url, content=png.read_bytes(), cookies=cookies,
                      headers={"Origin": "http://evil.example"}).status_code == 403
    assert httpx.post(url, content=png.read_bytes()).status_code == 403  # no token
    r = httpx.post(url, content=png.read_bytes(), cookies=cookies,
                   headers={**origin, "X-Filename": "../../etc/passwd"})
    assert r.status_code == 200 and "/" not in r.json()["name"]
    assert server.tb.files.paths[-1] == "upload:.._.._etc_passwd"


def test_garbage_and_floods_are_dropped_while_another_tab_keeps_its_frames(browser, server):
    page = open_page(browser, server)
    with good_ws(server) as ws:
        ws.recv(timeout=20)
        for junk in ["", "{", "[]", "null", json.dumps({"t": "key", "key": "notakey"}),
                     json.dumps({"t": "key", "key": "b", "seq": "x"}), json.dumps({"t": "click", "x": -1, "y": 2}),
                     json.dumps({"t": "nope"}), "x" * 10_000]:
            ws.send(junk)
        ws.send(b"garbage binary")
        ws.send(b"C" + b"\xff\xd8 not a jpeg")
        start = time.monotonic()
        for i in range(1000):  # 1000 messages in about a second, from one client
            ws.send(json.dumps({"t": "key", "key": "right" if i % 2 else "left", "seq": i + 1}))
            if i % 100 == 99:
                time.sleep(max(0.0, start + (i + 1) / 1000 - time.monotonic()))
        errors = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                msg = ws.recv(timeout=0.5)
            except TimeoutError:
                break
            if isinstance(msg, str):
                errors.append(json.loads(msg))
            else:
                ws.send(json.dumps({"t": "ack"}))
        texts = [e.get("text", "") for e in errors if e.get("type") == "error"]
        assert any("not JSON" in t for t in texts) and any("not a key name" in t for t in texts)
        assert any("over the limit" in t for t in texts)
        assert any("too many messages" in t for t in texts)  # the flood was cut down to the rate limit
        assert server.session.clients and max(c.limit.dropped for c in server.session.clients) > 100
        frames = page.evaluate("dvis.frames")
        page.keyboard.press("o")  # the other tab is still served
        settle(page, 1)
        assert page.evaluate("dvis.frames") > frames
        ws.send(json.dumps({"t": "ack"}))  # the flooding connection itself goes on
    page.close()


def test_open_host_without_token_is_refused():
    with pytest.raises(DvisError, match="without a token"):
        WebConfig(host="0.0.0.0", token="").check()
    WebConfig(host="127.0.0.1", token="").check()
    WebConfig(host="0.0.0.0", token="t").check()


def test_run_toolbox_web_serves_the_same_settings(tmp_path):
    import os
    import re
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    model = make_model_folder(tmp_path)
    images = make_images(tmp_path)
    proc = subprocess.Popen([sys.executable, str(repo / "run_toolbox.py"), "--web", "--port", "0", "--token", TOKEN,
                             "--model", str(model), "--images", str(images), "--scale", "0.5"],
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=dict(os.environ, DISPLAY=""))
    try:
        lines = []
        for line in proc.stderr:
            lines.append(line)
            if "ssh -N -L" in line:
                break
        url = re.search(r"open\s+(http://\S+)", "".join(lines)).group(1)
        assert url.startswith("http://127.0.0.1:") and f"token={TOKEN}" in url
        r = httpx.get(url, timeout=30)
        assert r.status_code == 200 and "<canvas" in r.text
        port = int(re.search(r":(\d+)/", url).group(1))
        with ws_connect(f"ws://127.0.0.1:{port}/ws", origin=f"http://127.0.0.1:{port}",
                        additional_headers={"Cookie": f"dvis_token={TOKEN}"}) as ws:
            frame = ws.recv(timeout=30)
        head = json.loads(frame[5:5 + int.from_bytes(frame[1:5], "big")])
        assert (head["h"], head["w"]) == (465, 750)  # --scale 0.5 of the 930 x 1500 canvas
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_dvis_serve_refuses_an_open_host_without_token(tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dvis", "serve", "--host", "0.0.0.0", "--no-token"],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert proc.returncode == 2 and "without a token" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
