#!/usr/bin/env python
"""`dvis serve` driven by a real Chromium: key-to-frame latency, frames per second with keys held,
bytes per frame and the server CPU the web adds, against the window driver (bench/frame.py).

For each model (zf-cifar10 and AlexNet at random init by default) `dvis serve` runs on loopback in
its own process (JPEG frames) and Debian's chromium
opens the page through Playwright; the window figures are bench/frame.py's key loop with the same
settings. Then:

* ``--keys`` arrow presses one at a time with back-projection on and the default settings (the
  worker waits pause_after_key_s = 0.15 s after a key, as in the window): p50/p95 of key -> first
  frame showing the key (the page's own clock, keydown to drawn) and key -> first settled frame (the
  network pass for the new unit drawn); after each key the driver waits 0.25 s before it polls the
  page, so its own work does not share the cores with the key being timed;
* ``--hold`` seconds of keys held (right/left at 30 per second) on a server with no pause after
  keys, so each key can start a pass: frames and settled (network result) frames per second,
  bytes per frame, server process CPU per frame against the window driver's (bench/frame.py's key
  loop, network passes included in both), frames dropped for newer ones, and the backlog: how long after the last key the page shows its result (latest frame wins, so
  this stays one pass however long the keys were held).

Goals on 2 cores: key->frame p95 <= 1.5 x the window's + 15 ms; backlog after 60 s of held keys
<= a few passes (no queue).

    python bench/web.py [--models zf-cifar10 alexnet] [--keys 40] [--hold 60]
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from playwright.sync_api import sync_playwright

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "bench"))
from frame import window_key_to_frame  # noqa: E402 - bench/frame.py, the window's figures

TOKEN = "bench"
QUIET_S = 0.25  # after each single key (far longer than its first frame, about its result): no polling meanwhile


def server_cpu(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start_server(name: str, fmt: str, pause: float | None = None):
    """`dvis serve` in its own process, as a user runs it; returns (process, URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "dvis", "serve", "--model", name, "--images", str(REPO / "input_images"),
           "--port", str(port), "--token", TOKEN, "--frame-format", fmt]
    if pause is not None:
        cmd += ["--set", f"pause_after_key_s={pause}"]
    if name != "zf-cifar10":
        cmd += ["--weights", "none"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    for line in proc.stderr:  # the URL line comes once the model is loaded
        if "open  http" in line:
            break
    else:
        raise SystemExit(f"dvis serve {name} did not start (exit {proc.wait()})")
    threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining its log
    return proc, f"http://127.0.0.1:{port}/?token={TOKEN}"


def pct(values, q) -> float:
    return float(np.percentile(values, q)) if len(values) else float("nan")


def ready_page(browser, url: str):
    """The page with back-projection on and a unit selected, everything settled."""
    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(url)
    page.wait_for_function("dvis.frames > 0", timeout=120000)
    for key in ("b", "ArrowDown"):
        page.keyboard.press(key)
    page.wait_for_function("dvis.ackedSeq >= 2 && dvis.header.settled && dvis.unsettled.size == 0",
                           timeout=120000)
    return page


def latency(name: str, browser, keys: int, fmt: str) -> dict:
    """Single arrow presses with the default settings (pause_after_key_s 0.15 s, as in the window)."""
    proc, url = start_server(name, fmt)
    page = None
    try:
        page = ready_page(browser, url)
        page.evaluate("dvis.latencies.length = 0; dvis.results.length = 0")
        for i in range(keys):
            page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
            # The page times the key itself; Playwright's polling (a check in the page every animation
            # frame, and its driver processes) would share the 2 cores with it: 1-1.5 ms on p50 and
            # 4-6 ms on p95 for zf-cifar10. A user's browser runs no test driver, so wait quietly first.
            time.sleep(QUIET_S)
            page.wait_for_function(f"dvis.results.length + dvis.unchanged.length >= {i + 1}", timeout=120000)
        return {"first": page.evaluate("dvis.latencies"), "results": page.evaluate("dvis.results")}
    finally:  # the server goes even when the page never got ready
        if page is not None:
            page.close()
        proc.terminate()
        proc.wait(timeout=30)


def held_keys(name: str, browser, hold: float, fmt: str) -> dict:
    """Arrow keys held (30 presses a second) with no pause after keys, so each can start a pass."""
    proc, url = start_server(name, fmt, pause=0.0)
    page = None
    try:
        page = ready_page(browser, url)
        frames0, bytes0, n0, settled0 = page.evaluate("[dvis.frames, dvis.bytes, dvis.header.n, dvis.settledFrames]")
        cpu0 = server_cpu(proc.pid)
        start = time.perf_counter()
        i = 0
        while time.perf_counter() - start < hold:
            page.keyboard.press("ArrowRight" if i % 2 == 0 else "ArrowLeft")
            i += 1
            time.sleep(max(0.0, start + i / 30 - time.perf_counter()))
        released = time.perf_counter()
        page.wait_for_function(f"dvis.ackedSeq >= {2 + i} && dvis.header.settled && dvis.unsettled.size == 0",
                               timeout=120000)
        backlog = time.perf_counter() - released
        held = released - start
        frames1, bytes1, n1, settled1 = page.evaluate("[dvis.frames, dvis.bytes, dvis.header.n, dvis.settledFrames]")
        made = n1 - n0  # frames the server produced; the ones it replaced before sending were dropped
        return {"fps": (frames1 - frames0) / held, "results_fps": (settled1 - settled0) / held,
                "bytes": (bytes1 - bytes0) / max(1, frames1 - frames0), "held_keys": i,
                "cpu_ms": 1000 * (server_cpu(proc.pid) - cpu0) / max(1, made),
                "dropped": made - (frames1 - frames0), "backlog_s": backlog}
    finally:  # the server goes even when the page never got ready
        if page is not None:
            page.close()
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["zf-cifar10", "alexnet"])
    p.add_argument("--keys", type=int, default=40, help="single key presses for the latency figures")
    p.add_argument("--hold", type=float, default=60.0, help="seconds of held keys")
    p.add_argument("--format", default="jpeg", choices=("jpeg", "webp", "png"))
    p.add_argument("--chromium-arg", dest="chromium_args", action="append", default=[],
                   help="extra chromium flag (repeatable), e.g. --chromium-arg=--disable-gpu")
    args = p.parse_args()
    chromium = shutil.which("chromium")
    if chromium is None:
        sys.exit("bench/web.py needs Debian's chromium (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=["--no-sandbox"] + args.chromium_args)
        rows = []
        for name in args.models:
            window = window_key_to_frame(name, args.keys)
            r = {"model": name, **latency(name, browser, args.keys, args.format),
                 **held_keys(name, browser, args.hold, args.format)}
            rows.append((r, window))
        browser.close()
    print(f"{'model':<11} {'window key->frame':>18} {'web key->frame':>15} {'goal p95':>9} "
          f"{'window key->result':>19} {'web key->result':>16}   (p50 / p95 ms)")
    for r, w in rows:
        goal = 1.5 * w["first_p95"] + 15
        ok = "ok" if pct(r["first"], 95) <= goal else "MISSED"
        print(f"{r['model']:<11} {w['first_p50']:8.1f} /{w['first_p95']:7.1f} {pct(r['first'], 50):6.1f} /"
              f"{pct(r['first'], 95):6.1f} {goal:6.1f} {ok:<3}{w['result_p50']:8.1f} /{w['result_p95']:7.1f}"
              f"  {pct(r['results'], 50):6.1f} /{pct(r['results'], 95):6.1f}")
    print(f"\n{'model':<11} {'held s':>6} {'keys':>5} {'frames/s':>9} {'settled/s':>10} {'KB/frame':>9} "
          f"{'server CPU ms/frame':>20} {'window':>7} {'extra':>6} {'dropped':>8} {'backlog s':>10}")
    for r, w in rows:
        print(f"{r['model']:<11} {args.hold:6.0f} {r['held_keys']:5d} {r['fps']:9.1f} {r['results_fps']:10.1f} "
              f"{r['bytes'] / 1000:9.1f} {r['cpu_ms']:20.1f} {w['cpu_ms_per_frame']:7.1f} "
              f"{r['cpu_ms'] - w['cpu_ms_per_frame']:6.1f} {r['dropped']:8d} {r['backlog_s']:10.2f}")


if __name__ == "__main__":
    main()
