"""The local drivers of the toolbox core: the OpenCV window and the headless key list.

Each one shows :meth:`Toolbox.render`'s canvas its own way and performs the effects of keys
(``screenshot``: a PNG in ``settings.screenshot_dir``). The browser driver is :mod:`dvis.web`.
"""
from __future__ import annotations

import logging
import re
import time
from pathlib import Path

import cv2
import numpy as np

from dvis.errors import DvisError
from dvis.imaging.encode import write_png
from dvis.toolbox.actions import SCREENSHOT
from dvis.toolbox.app import Toolbox
from dvis.toolbox.keys import decode, is_key_name

log = logging.getLogger(__name__)


def parse_keys(text: str) -> list[str]:
    """Headless key list: space-separated key names or ``click:X,Y``; raises DvisError on a bad token."""
    tokens = text.split()
    for tok in tokens:
        if not (is_key_name(tok) or re.fullmatch(r"click:\d+,\d+", tok)):
            raise DvisError(f"--keys: '{tok}' is not a key name (e.g. right, pageup, esc, b) or click:X,Y")
    return tokens


def save_screenshot(canvas: np.ndarray, folder: str | Path) -> Path:
    """Write ``canvas`` as a new time-stamped PNG in ``folder`` (never over an existing file)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / time.strftime("dvis-%Y%m%d-%H%M%S.png")
    n = 1
    while path.exists():
        path, n = folder / time.strftime(f"dvis-%Y%m%d-%H%M%S-{n}.png"), n + 1
    write_png(path, canvas)
    return path


def perform(tb: Toolbox, effects: tuple[str, ...]) -> None:
    """Carry out key effects the file-writing way (window and headless drivers)."""
    if SCREENSHOT in effects:
        try:
            tb.message = f"saved {save_screenshot(tb.canvas, tb.settings.screenshot_dir)}"
        except (OSError, DvisError) as exc:
            tb.message = f"screenshot: {exc}"


def run_window(tb: Toolbox) -> None:
    """The interactive loop: keys, mouse, render, show; returns on 'q' or when the window closes."""
    title = tb.settings.window_title
    cv2.namedWindow(title, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)

    def on_mouse(event: int, x: int, y: int, flags: int, param) -> None:
        if event == cv2.EVENT_LBUTTONDOWN:
            try:
                tb.click(x, y)
            except Exception as exc:  # noqa: BLE001 - a click must not kill the window
                log.exception("click failed")
                tb.message = f"click: {exc}"

    cv2.setMouseCallback(title, on_mouse)
    period = 1.0 / tb.settings.max_fps
    try:
        while not tb.state.quit:
            start = time.perf_counter()
            tb.update()
            cv2.imshow(title, cv2.cvtColor(tb.render(), cv2.COLOR_RGB2BGR))
            tb.tick()
            wait_ms = max(1, int((period - (time.perf_counter() - start)) * 1000))
            name = decode(cv2.waitKeyEx(wait_ms))
            if name is not None:
                perform(tb, tb.press(name))
            if cv2.getWindowProperty(title, cv2.WND_PROP_VISIBLE) < 1:
                break
    finally:
        cv2.destroyAllWindows()


def apply_input(tb: Toolbox, key: str) -> tuple[str, ...]:
    """One headless input, a key name or ``click:X,Y``; returns the key's effects."""
    if key.startswith("click:"):
        tb.click(*map(int, key[6:].split(",")))
        return ()
    return tb.press(key)


def run_keys(tb: Toolbox, keys: list[str], out_dir: str | Path | None = None) -> list[Path]:
    """Apply ``keys`` (names or ``click:X,Y``), waiting for the worker after each, and write the
    canvas as ``NNN-<key>.png`` into ``out_dir`` (start frame first). Returns the written paths."""
    written = []
    folder = Path(out_dir) if out_dir is not None else None
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    for i, key in enumerate(["start"] + list(keys)):
        effects = apply_input(tb, key) if i else ()
        tb.settle()
        tb.render()
        perform(tb, effects)
        tb.tick()
        if folder is not None:
            path = folder / f"{i:03d}-{re.sub(r'[^A-Za-z0-9]', lambda m: f'x{ord(m.group()):02x}', key)}.png"
            write_png(path, tb.render())
            written.append(path)
        if tb.state.quit:
            break
    return written
