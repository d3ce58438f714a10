"""`dvis serve` in a real Chromium (Debian's, driven by Playwright; never a downloaded browser): the
page against the headless driver pixel for pixel, clicks, uploads, screenshots, the fake camera,
reconnects; `run_toolbox.py --web`. The security cases are in test_web_security.py."""
from __future__ import annotations

import base64
import io
import json
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import connect as ws_connect

from dvis.toolbox.app import Toolbox
from dvis.toolbox.drivers import run_keys
from helpers.toolbox import make_images, make_model_folder
from helpers.web import TOKEN, open_page, settle, tiny_settings

playwright_api = pytest.importorskip("playwright.sync_api")  # the test extra installs it


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
