"""The WebSocket protocol of ``dvis serve``: what the page and the server send each other.

Protocol (one WebSocket per tab, ``/ws``):

* page -> server, text JSON: ``{"t": "key", "key": NAME, "seq": N}``, ``{"t": "click", "x": X, "y": Y,
  "seq": N}``, ``{"t": "ack"}`` (a frame was drawn), ``{"t": "full"}`` (send the whole canvas next),
  ``{"t": "camera_error", "text": ...}``;
  binary: ``b"C"`` + JPEG bytes, a browser camera frame.
* server -> page, binary: ``b"F"`` or ``b"S"`` (screenshot), 4-byte big-endian header length, a JSON
  header (``w``, ``h``: the canvas, ``mime``, ``seq``: the last input of this tab the frame reflects,
  ``settled``: the worker has caught up, ``n``: the server's frame count, ``rects``: [x, y, w, h,
  nbytes, raw, sx, sy] of each changed rectangle or piece of one), then the data in that order: with
  raw = 1 (small rectangles) w * h * 3 bytes of RGB; else, when nbytes > 0, an image in ``mime``
  whose (sx, sy, w, h) part goes to (x, y), and each entry after it with nbytes = 0 another part of
  that image (an atlas of several rectangles, see :func:`dvis.web.encoding.encode_delta`). A frame carries only what
  changed since the frame the tab was sent last; the next one goes out after the tab acks this one
  (latest wins).
  Text JSON: ``{"type": "seq"|"info"|"error"|"camera", ...}``; ``seq``: inputs up to ``seq`` are
  shown (they changed nothing, or their frame is the one the tab has).

Acks are never rate-limited (a dropped ack would stall the tab's frames for ack_timeout_s).
"""
from __future__ import annotations

import json
import struct


def pack(kind: bytes, header: dict, payload: bytes) -> bytes:
    """One binary message: kind byte, header length, JSON header, payload."""
    head = json.dumps(header).encode()
    return kind + struct.pack(">I", len(head)) + head + payload


def is_ack(text: str) -> bool:
    """``text`` is a bare ack, ``{"t": "ack"}`` (checked before the rate limit, which acks bypass)."""
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        return False
    return isinstance(msg, dict) and msg.get("t") == "ack" and len(msg) == 1

