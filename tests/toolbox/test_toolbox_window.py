"""The real window under Xvfb, driven by xdotool: start on the default model, press keys, capture the
window, check the panes changed, and check that 'q' exits 0. Needs xvfb, xdotool and imagemagick
(installed by .ci/run)."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from dvis.toolbox.settings import Settings

REPO = Path(__file__).resolve().parents[2]


def x(env, *args, check=True) -> str:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, timeout=30, check=check).stdout


def capture(env, win: str, path: Path) -> np.ndarray:
    x(env, "import", "-window", win, str(path))
    img = cv2.imread(str(path))
    assert img is not None, f"could not capture window {win}"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


#: Only ends a hang (say, a key lost by the X server): every wait is for an event, however slow the machine.
HUNG_S = 900.0


def running(proc, what: str, since: float) -> None:
    """Fail at once, with ``proc``'s stderr, if it exited while a test waits on it (or if the wait
    that began at ``since`` has hung for :data:`HUNG_S`)."""
    if proc.poll() is not None:
        raise AssertionError(f"{what}: the process exited with {proc.returncode}: {proc.stderr.read()}")
    assert time.monotonic() - since < HUNG_S, f"{what} within {HUNG_S:.0f} s: hung"


def find_window(env, proc, title: str) -> str:
    """The X window id of ``title``, polling for as long as ``proc`` runs: a loaded machine may take
    minutes to start it, so only its exit (or a hang of HUNG_S) ends the wait."""
    since = time.monotonic()
    while True:
        found = x(env, "xdotool", "search", "--onlyvisible", "--name", title, check=False).split()
        if found:
            return found[0]
        running(proc, f"no window named {title!r}", since)
        time.sleep(0.2)


def wait_change(env, proc, win, path, before, region) -> np.ndarray:
    """Capture until ``region`` (top, left, h, w) differs from ``before``, for as long as ``proc``
    runs (no budget but the hang guard: under load a key's effect can take minutes to be drawn)."""
    t, l, h, w = region
    since = time.monotonic()
    while True:
        img = capture(env, win, path)
        if img.shape == before.shape and not np.array_equal(img[t:t + h, l:l + w], before[t:t + h, l:l + w]):
            return img
        running(proc, f"region {region} never changed", since)
        time.sleep(0.3)


def test_real_window_keys_and_quit(display, tmp_path):
    env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb")
    layout = Settings().layout  # the default model at global_scale 1: canvas is 930 x 1500
    proc = subprocess.Popen([sys.executable, str(REPO / "run_toolbox.py"), "--images", str(REPO / "input_images")],
                            env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        win = find_window(env, proc, "dvis toolbox")
        x(env, "xdotool", "windowfocus", "--sync", win, check=False)
        shot = tmp_path / "shot.png"
        img = capture(env, win, shot)
        since = time.monotonic()
        while img.shape[:2] != (930, 1500) or (img[layout["layers"][0] + 100, layout["layers"][1]:][:900] ==
                                                Settings().color_stale).all():
            running(proc, f"the window never showed the tiles (shape {img.shape})", since)
            time.sleep(0.3)
            img = capture(env, win, shot)

        def key(name, region):
            nonlocal img
            before = img
            x(env, "xdotool", "key", "--window", win, name)
            img = wait_change(env, proc, win, shot, before, region)
            return before, img

        key("Right", layout["aux"])  # unit 1 enlarged in the aux pane
        key("Down", layout["aux"])
        before, after = key("b", layout["back"])  # back-projection appears
        assert (before[700, 100] == Settings().color_disabled).all()
        assert not (after[layout["back"][0]:layout["back"][0] + 300, :300] == Settings().color_disabled).all(axis=2).all()
        key("e", layout["input"])  # next image
        before, after = key("h", layout["layers"])  # help overlay darkens the canvas
        assert after.mean() < before.mean() / 2
        key("h", layout["layers"])
        x(env, "xdotool", "key", "--window", win, "q")
        assert proc.wait() == 0, proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_dvis_keys_decodes_real_x11_keys(display, tmp_path):
    env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb")
    proc = subprocess.Popen([sys.executable, "-m", "dvis", "keys"], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        win = find_window(env, proc, "dvis keys")
        x(env, "xdotool", "windowfocus", "--sync", win, check=False)
        time.sleep(0.5)
        for name in ("Left", "Prior", "Next", "Down", "b", "Escape", "q"):
            x(env, "xdotool", "key", "--window", win, name)
            time.sleep(0.2)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    decoded = [line.split("->")[1].strip() for line in out.splitlines() if "->" in line]
    assert decoded == ["left", "pageup", "pagedown", "down", "b", "esc", "q"], out
    assert "-> pageup -> prev_image" in out and "-> b -> cycle_back" in out
