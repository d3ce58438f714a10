"""Atomic file writes: a crash or SIGKILL at any moment leaves either the old file or the new one.

Every writer of a dvis file format goes through these (write to a temporary file in the same
folder, flush to disk, then ``os.replace``); :func:`read_format_json` is the matching reader of a
format's versioned JSON header and :func:`read_npz` of its arrays.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

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


#: What reading a truncated, garbage or incomplete .npz raises (numpy, zipfile, zlib, a missing key).
_BROKEN_NPZ = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


def _npz_problem(exc: BaseException) -> str:
    if isinstance(exc, KeyError):
        return f"no array {exc.args[0]!r}" if exc.args else "an array is missing"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    # numpy's text for a file that is no .npz at all suggests unpickling it: never repeated here
    return "truncated or not an .npz file"


@contextmanager
def read_npz(path: str | Path, what: str, recover: str) -> Iterator[np.lib.npyio.NpzFile]:
    """The arrays of a format's .npz file (``np.load``, no pickle) for the ``with`` block.

    A missing, truncated, garbage or incomplete file (an array the block asks for is absent) is one
    :class:`DvisError` naming the file, ``what`` it should be and ``recover``: how to get a good one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            yield z
    except _BROKEN_NPZ as exc:
        raise DvisError(f"{path}: not a readable {what} ({_npz_problem(exc)}); {recover}") from None
