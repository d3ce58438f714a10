"""A folder of bad and odd image files, the same for every command that reads images."""
from __future__ import annotations

import io
import struct
import threading
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

#: Files no command can read: each must be skipped with one warning naming it.
BAD = ("zero.png", "truncated.jpg", "text.png", "bomb.png")
#: Odd files that are readable images (converted to RGB).
ODD = ("gray16.png", "rgba.png", "gray.png", "palette.png", "one_px.png")
#: Plain images, so every command has something normal to work on.
PLAIN = ("cat_0.png", "cat_1.png")


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels and that has no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def write_bad_folder(folder: Path, size: int = 32) -> Path:
    """Write :data:`BAD`, :data:`ODD` and :data:`PLAIN` into ``folder``; returns it."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = lambda: rng.integers(0, 256, (size, size, 3), dtype=np.uint8)  # noqa: E731
    (folder / "zero.png").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(rgb()).save(buf, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "text.png").write_text("this is not an image\n")
    (folder / "bomb.png").write_bytes(_png_header_only(20000, 20000))
    Image.fromarray(rng.integers(0, 65536, (size, size), dtype=np.uint16)).save(folder / "gray16.png")
    Image.fromarray(rng.integers(0, 256, (size, size, 4), dtype=np.uint8), "RGBA").save(folder / "rgba.png")
    Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8), "L").save(folder / "gray.png")
    Image.fromarray(rgb()).convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "palette.png")
    Image.fromarray(rgb()[:1, :1]).save(folder / "one_px.png")
    for name in PLAIN:
        Image.fromarray(rgb()).save(folder / name)
    return folder


def returns_within(call, pipe: Path, seconds: float = 20):
    """``call()``'s result (or its exception, raised here); fails the test if ``call`` is still
    blocked on the named pipe ``pipe`` after ``seconds``, after opening ``pipe`` for writing, which
    lets the blocked reader return (so a regression fails instead of hanging the test run)."""
    done: dict = {}

    def run():
        try:
            done["result"] = call()
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            done["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        with open(pipe, "wb"):
            pass
        thread.join(seconds)
        pytest.fail(f"blocked on the named pipe {pipe}")
    if "error" in done:
        raise done["error"]
    return done["result"]
