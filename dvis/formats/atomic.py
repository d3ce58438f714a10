"""Atomic file writes: a crash or SIGKILL at any moment leaves either the old file or the new one.

Every writer of a dvis file format goes through these (write to a temporary file in the same
folder, flush to disk, then ``os.replace``); :func:`read_format_json` is the matching reader of a
format's versioned JSON header.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from dvis.errors import DvisError


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def atomic_savez(path: str | Path, /, compressed: bool = False, **arrays) -> None:
    """``np.savez`` (no pickle; ``np.savez_compressed`` when ``compressed``) written atomically."""
    path = Path(path)
    tmp = _tmp(path)
    try:
        with open(tmp, "wb") as f:
            (np.savez_compressed if compressed else np.savez)(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_format_json(path: str | Path, fmt: str, version: int, missing: str) -> dict:
    """A format's JSON header (a dict with ``format`` and ``version``); DvisError (``missing`` when
    the file is absent) if it is absent, unreadable or of another format or version."""
    path = Path(path)
    if not path.is_file():
        raise DvisError(missing)
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError) as exc:
        raise DvisError(f"{path}: unreadable ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != fmt or data.get("version") != version:
        raise DvisError(f"{path}: not a {fmt} v{version} file")
    return data
