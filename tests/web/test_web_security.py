"""`dvis serve`'s security (docs/web.md, "Security"): the token, the Host and the origin; no paths;
the limits on messages, uploads, camera frames and connections; garbage, floods and a bounded fuzz
of the protocol while another tab keeps its frames."""
from __future__ import annotations

import io
import json
import sys
import time

import httpx
import numpy as np
import pytest
from PIL import Image
from websockets.sync.client import connect as ws_connect

from dvis.errors import DvisError
from dvis.web.config import WebConfig
from helpers.web import TOKEN, Server, good_ws, open_page, settle, ws_url

playwright_api = pytest.importorskip("playwright.sync_api")  # the test extra installs it

HUNG_S = 300  # only ends a test that hangs: every wait here is for an event, however slow the machine


def error_texts(messages: list[dict]) -> list[str]:
    return [m.get("text", "") for m in messages if m.get("type") == "error"]


def read_until(ws, done, what: str) -> list[dict]:
    """The text messages ``ws`` receives (frames acked as the page acks them) until ``done(messages)``."""
    messages: list[dict] = []
    start = time.monotonic()
    while not done(messages):
        assert time.monotonic() - start < HUNG_S, f"never got {what}: {messages[-5:]}"
        try:
            msg = ws.recv(timeout=1)
        except TimeoutError:
            continue  # look at done() again: it may wait on the server's state too
        if isinstance(msg, str):
            messages.append(json.loads(msg))
        else:
            ws.send(json.dumps({"t": "ack"}))
    return messages


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


def test_garbage_and_floods_are_dropped_while_another_tab_keeps_its_frames(browser, tmp_path):
    # 10 messages a second (bursts of 20): the server reads a tab's messages one after the other, so a
    # flood is cut down only where the server takes in messages faster than the limit; at 200 a second
    # a loaded machine took in 1,000 keys slowly enough to drop few (the limit is the same code).
    server = Server(tmp_path / "srv", frame_format="png", max_messages_per_s=10.0)
    try:
        flood(browser, server)
    finally:
        server.stop()


def flood(browser, server):
    page = open_page(browser, server)
    with good_ws(server) as ws:
        ws.recv(timeout=HUNG_S)  # the first frame: however slow the machine, only a hang ends the wait
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
        # Wait for the replies and for the server to have taken in the whole flood, however long a busy
        # machine makes that take: on events, not on a time budget.
        errors = read_until(ws, lambda errors: (
            all(any(w in t for t in error_texts(errors)) for w in ("not JSON", "not a key name", "over the limit",
                                                                     "too many messages"))
            and max((c.limit.dropped for c in server.session.clients), default=0) > 100),
            "the replies to the garbage and the flood")
        texts = [e.get("text", "") for e in errors if e.get("type") == "error"]
        assert any("not JSON" in t for t in texts) and any("not a key name" in t for t in texts)
        assert any("over the limit" in t for t in texts)
        assert any("too many messages" in t for t in texts)  # the flood was cut down to the rate limit
        assert server.session.clients and max(c.limit.dropped for c in server.session.clients) > 100
        frames = page.evaluate("dvis.frames")
        page.keyboard.press("o")  # the other tab is still served
        settle(page, 1, timeout=HUNG_S * 1000)
        assert page.evaluate("dvis.frames") > frames
        ws.send(json.dumps({"t": "ack"}))  # the flooding connection itself goes on
    page.close()


def test_open_host_without_token_is_refused():
    with pytest.raises(DvisError, match="without a token"):
        WebConfig(host="0.0.0.0", token="").check()
    WebConfig(host="127.0.0.1", token="").check()
    WebConfig(host="0.0.0.0", token="t").check()


# ------------------------------------------------------------------ the red-team findings (issue 25)


def raw_http(port: int, request: bytes) -> bytes:
    """Send ``request`` on a fresh connection and return what comes back until the server closes it
    (b"" when it closes without answering) or has sent a whole response head."""
    import socket

    with socket.create_connection(("127.0.0.1", port), timeout=HUNG_S) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                chunk = sock.recv(4096)
            except ConnectionResetError:  # closed with the request unread
                break
            if not chunk:
                break
            data += chunk
    return data


def big_jpeg_header(width: int, height: int) -> bytes:
    """A small JPEG whose header declares ``width`` x ``height`` (a decompression bomb)."""
    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (90, 120, 30)).save(buf, "JPEG", progressive=True)
    data = bytearray(buf.getvalue())
    i = 2
    while data[i + 1] not in (0xC0, 0xC1, 0xC2):  # walk the segments to the frame header
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    data[i + 5:i + 9] = height.to_bytes(2, "big") + width.to_bytes(2, "big")
    return bytes(data)


def camera_on(ws) -> None:
    """Press ``c`` on ``ws``'s tab: the toolbox takes its camera."""
    ws.send(json.dumps({"t": "key", "key": "c", "seq": 1}))
    read_until(ws, lambda ms: any(m.get("type") == "camera" and m.get("on") for m in ms), "the camera on")


def test_camera_frames_are_checked_from_their_header_and_decoded_off_the_event_loop(server, monkeypatch):
    import threading

    from dvis.web import session as session_module

    with good_ws(server) as ws:
        camera_on(ws)
        # 1 KB declaring 81 and 256 megapixels: refused from the header (the second by Pillow itself).
        ws.send(b"C" + big_jpeg_header(9000, 9000))
        ws.send(b"C" + big_jpeg_header(16000, 16000))
        errors = error_texts(read_until(ws, lambda ms: len(error_texts(ms)) == 2, "the replies to the camera frames"))
        assert "9000x9000" in errors[0] and "pixel limit" in errors[0]
        assert "DecompressionBomb" in errors[1] or "pixel limit" in errors[1]

        started, release, threads = threading.Event(), threading.Event(), []
        real = session_module.read_image

        def slow_read(data, name):  # a decode that takes as long as the test wants
            threads.append(threading.current_thread().name)
            started.set()
            assert release.wait(HUNG_S)
            return real(data, name)

        monkeypatch.setattr(session_module, "read_image", slow_read)
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), (200, 30, 30)).save(buf, "JPEG")
        ws.send(b"C" + buf.getvalue())
        assert started.wait(HUNG_S)
        # While the frame decodes, the event loop answers requests and other tabs.
        assert httpx.get(server.url, cookies={"dvis_token": TOKEN}, timeout=HUNG_S).status_code == 200
        with good_ws(server) as other:
            assert isinstance(other.recv(timeout=HUNG_S), bytes)  # its first frame
        release.set()
        read_until(ws, lambda ms: server.tb.frame_id is not None and server.tb.frame_id[0] == "camera",
                   "the camera frame shown")
        assert threads == ["dvis-web-decode_0"]


def test_host_must_name_this_server_and_origin_must_match_its_scheme(tmp_path):
    """DNS rebinding: with --no-token, a page of evil.example whose name now points at 127.0.0.1
    sends Host and Origin of evil.example; nothing may answer it. No redirect carries the token."""
    server = Server(tmp_path / "srv", token="")  # --no-token on loopback
    try:
        port, evil = server.port, f"evil.example:{server.port}"
        assert httpx.get(server.url).status_code == 200
        assert httpx.get(f"http://localhost:{port}/").status_code == 200
        assert httpx.get(server.url, headers={"Host": evil}).status_code == 403
        png = io.BytesIO()
        Image.new("RGB", (8, 8)).save(png, "PNG")
        r = httpx.post(server.url + "upload", content=png.getvalue(),
                       headers={"Host": evil, "Origin": f"http://{evil}"})
        assert r.status_code == 403
        upgrade = ("GET /ws HTTP/1.1\r\nHost: {host}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n"
                   "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                   "Sec-WebSocket-Version: 13\r\n\r\n")
        ok = raw_http(port, upgrade.format(host=f"127.0.0.1:{port}", origin=f"http://127.0.0.1:{port}").encode())
        assert ok.startswith(b"HTTP/1.1 101")
        for host, origin in ((evil, f"http://{evil}"), (f"127.0.0.1:{port}", f"https://127.0.0.1:{port}")):
            refused = raw_http(port, upgrade.format(host=host, origin=origin).encode())
            assert not refused.startswith(b"HTTP/1.1 101"), (host, origin)
        r = httpx.post(server.url + "upload", content=png.getvalue(), headers={"Origin": f"https://127.0.0.1:{port}"})
        assert r.status_code == 403  # same host, other scheme
    finally:
        server.stop()


def test_no_redirect_sends_the_token_to_another_host(server):
    for host in (f"127.0.0.1:{server.port}", "evil.example"):
        r = httpx.get(server.url + f"static/app.js/?token={TOKEN}", headers={"Host": host})
        assert not r.is_redirect and "location" not in r.headers, (host, r.status_code, r.headers)
        assert r.status_code in (403, 404)


def test_every_message_error_gets_the_error_reply_and_a_log_line(server, caplog):
    # Python's default recursion limit, which the server's thread shares: a library loaded earlier in
    # the test run may have raised it, and 2,000 nested brackets would then parse
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)
    try:
        with good_ws(server) as ws:
            ws.recv(timeout=HUNG_S)
            ws.send("[" * 2000 + "]" * 2000)  # json.loads raises RecursionError, not ValueError
            errors = error_texts(read_until(ws, error_texts, "the reply to nested brackets"))
            assert "nested too deeply" in errors[0]
            assert any("dropped a message" in r.getMessage() and "nested" in r.getMessage() for r in caplog.records)
            ws.send(json.dumps({"t": "key", "key": "o", "seq": 1}))  # the connection goes on
            read_until(ws, lambda ms: server.tb.state.layer == 1, "the key after it")
    finally:
        sys.setrecursionlimit(limit)


def test_uploads_are_kept_at_the_size_the_toolbox_shows(server):
    png = io.BytesIO()  # 40 megapixels in a 40 KB file: 119 MB if kept as decoded
    Image.new("L", (6300, 6300), 128).save(png, "PNG")
    r = httpx.post(server.url + "upload", content=png.getvalue(), cookies={"dvis_token": TOKEN},
                   headers={"Origin": f"http://127.0.0.1:{server.port}"}, timeout=HUNG_S)
    assert r.status_code == 200
    side = server.session.upload_side
    assert side >= max(server.model.input_size) and side < 6300
    _, frame, _ = server.tb.files.read(len(server.tb.files) - 1)
    assert max(frame.shape[:2]) == side and frame.shape[0] == frame.shape[1]
    assert r.json()["shape"] == list(frame.shape)


def open_partial(server, n: int) -> list:
    """``n`` connections that began a request head and never finish it (slowloris), once the server
    has taken them all."""
    import socket

    partial = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", server.port), timeout=HUNG_S)
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        partial.append(s)
    wait_for(lambda: len(server.server.server_state.connections) >= n, "the connections accepted")
    return partial


def wait_for(condition, what: str) -> None:
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < HUNG_S, f"never: {what}"
        time.sleep(0.01)


def full_get(server) -> bytes:
    return raw_http(server.port, f"GET /?token={TOKEN} HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n\r\n".encode())


def test_connections_without_a_whole_request_head_are_closed(tmp_path):
    server = Server(tmp_path / "srv", header_timeout_s=2.0)
    try:
        for s in open_partial(server, 20):
            assert s.recv(100) == b""  # closed by the server once the head's deadline passed
            s.close()
        assert full_get(server).startswith(b"HTTP/1.1 200")  # whole heads are answered
    finally:
        server.stop()


def test_connections_over_the_count_are_closed_as_they_arrive(tmp_path):
    server = Server(tmp_path / "srv", max_connections=8, header_timeout_s=HUNG_S)
    try:
        partial = open_partial(server, 8)
        assert full_get(server) == b""  # the ninth: closed at once, nothing answered
        for s in partial:
            s.close()
        wait_for(lambda: not server.server.server_state.connections, "the connections closed")
        assert full_get(server).startswith(b"HTTP/1.1 200")
    finally:
        server.stop()


@pytest.mark.parametrize("flag", [["--port", "70000"], ["--quality", "1000"], ["--quality", "0"]])
def test_serve_flags_out_of_range_get_one_line(flag, tmp_path):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "dvis", "serve", *flag], capture_output=True, text=True,
                          timeout=HUNG_S, cwd=tmp_path)
    assert proc.returncode == 2 and " ".join(flag) in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    with pytest.raises(DvisError, match=flag[0]):
        WebConfig(**{flag[0][2:]: int(flag[1])}).check()


def fuzz_messages(rng, n: int) -> list[tuple[object, bool]]:
    """``n`` random and adversarial messages, each with whether the server must answer it with an error
    (False: a valid input). Camera frames assume the tab's camera is on; no key here turns it off."""
    keys = ["right", "left", "up", "down", "b", "o", "u", "a", "e", "z", "9", "1", "h", "pagedown"]
    junk_values = [None, True, -1, 1.5, 2 ** 70, "", "x" * 50, [], {}, [[[]]], {"a": {"b": None}}, "\u202e\u0000"]
    out = []
    for _ in range(n):
        kind = rng.randrange(14)
        if kind == 0:
            out.append((json.dumps({"t": "key", "key": rng.choice(keys), "seq": rng.randrange(10 ** 6)}), False))
        elif kind == 1:
            out.append((json.dumps({"t": "click", "x": rng.randrange(1500), "y": rng.randrange(1000)}), False))
        elif kind == 2:
            out.append((json.dumps({"t": rng.choice(["ack", "full"])}), False))
        elif kind == 3:
            out.append(("".join(chr(rng.randrange(1, 0x3000)) for _ in range(rng.randrange(1, 200))), True))
        elif kind == 4:
            d = rng.randrange(50, 2000)
            out.append((rng.choice("[{") * d if rng.random() < 0.5 else "[" * d + "]" * d, True))
        elif kind == 5:
            out.append((json.dumps(rng.choice(junk_values)), True))
        elif kind == 6:
            out.append((json.dumps({"t": "key", "key": rng.choice(junk_values + ["notakey", "F99", "ctrl+w", "../x"])}), True))
        elif kind == 7:
            x, y = rng.choice(junk_values), rng.choice([-5, 100_000, 3.5, "1", None])
            out.append((json.dumps({"t": "click", "x": x, "y": y}), True))
        elif kind == 8:
            out.append((json.dumps({"t": rng.choice(junk_values[1:] + ["nope", "KEY", "camera"]), "seq": 1}), True))
        elif kind == 9:
            out.append((json.dumps({"t": "key", "key": "b", "seq": rng.choice(["1", 1.5, None, [], True])}), True))
        elif kind == 10:
            out.append(("{" + "x" * rng.randrange(4100, 9000) + "}", True))  # over the 4 KiB limit
        elif kind == 11:
            out.append((bytes(rng.randrange(256) for _ in range(rng.randrange(1, 300))).lstrip(b"C") or b"\x00", True))
        elif kind == 12:
            out.append((b"C" + bytes(rng.randrange(256) for _ in range(rng.randrange(0, 3000))), True))
        else:
            out.append((b"C" + big_jpeg_header(rng.randrange(9000, 60000), rng.randrange(9000, 60000)), True))
    return out


def test_fuzzed_protocol_gets_answers_while_another_tab_keeps_its_frames_and_memory_stays_bounded(tmp_path):
    """400 seeded random and adversarial messages from one tab (its camera on, so camera frames are
    decoded): each bad one gets its error reply, the server answers HTTP, another tab's key gets its
    frame, and the server's memory grows by less than the images it was sent would take decoded."""
    import random

    from dvis.runtime.memory import resident_bytes

    server = Server(tmp_path / "srv", frame_format="png", max_messages_per_s=1e6)  # no drops: every reply counts
    try:
        with good_ws(server) as other, good_ws(server) as ws:
            assert isinstance(other.recv(timeout=HUNG_S), bytes)
            other.send(json.dumps({"t": "ack"}))
            camera_on(ws)
            before = resident_bytes()
            for i, (msg, bad) in enumerate(fuzz_messages(random.Random(25), 400)):
                ws.send(msg)
                if bad:  # its reply comes before anything a later message causes
                    read_until(ws, error_texts, f"a reply to message {i} {str(msg)[:80]!r}")
            grown = resident_bytes() - before
            assert grown < 300 << 20, f"{grown >> 20} MiB more after the fuzz"
            assert max(len(c.outbox) for c in server.session.clients) <= 40  # queues stay bounded
            assert httpx.get(server.url, cookies={"dvis_token": TOKEN}, timeout=HUNG_S).status_code == 200
            other.send(json.dumps({"t": "key", "key": "o", "seq": 7}))  # the other tab is still served
            shown = []  # the inputs of that tab its frames and seq messages say are shown
            start = time.monotonic()
            while not any(seq >= 7 for seq in shown):
                assert time.monotonic() - start < HUNG_S, "the other tab's key never showed"
                try:
                    msg = other.recv(timeout=1)
                except TimeoutError:
                    continue
                if isinstance(msg, bytes) and msg[:1] == b"F":
                    shown.append(json.loads(msg[5:5 + int.from_bytes(msg[1:5], "big")])["seq"])
                    other.send(json.dumps({"t": "ack"}))
                elif isinstance(msg, str) and json.loads(msg).get("type") == "seq":
                    shown.append(json.loads(msg)["seq"])
    finally:
        server.stop()
