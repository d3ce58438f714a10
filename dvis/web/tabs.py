"""One connected tab (a page over a WebSocket, or a notebook widget): its transport, its queue of
outgoing messages, its frame bookkeeping."""
from __future__ import annotations

import asyncio
import collections
import json

import numpy as np

from dvis.web.config import WebConfig
from dvis.web.frames import Rect
from dvis.web.pacing import RateLimit
from dvis.web.transport import Transport


class Client:
    """One connected tab: its socket, what goes out to it (in order) and its frame bookkeeping.

    The frame fields are the core thread's: the changes the tab has not been sent yet (``dirty``),
    whether it needs the whole canvas, how many frames went out; the event loop only counts acks."""

    def __init__(self, ws: Transport, config: WebConfig, number: int):
        self.ws, self.number, self.config = ws, number, config
        self.outbox: collections.deque[tuple[str, object]] = collections.deque()  # ("text"|"bytes", data)
        self.wake = asyncio.Event()
        self.limit = RateLimit(config.max_messages_per_s)
        self.camera_frame: tuple[int, np.ndarray] | None = None
        self.seq = 0  # last input seq of this tab applied to the core (core thread)
        # core thread:
        self.need_full = True  # a new tab, or one whose page lost track: the whole canvas next
        self.dirty: list[Rect] = []  # changed since the last frame sent to it
        self.frame_seq = 0  # last input of this tab the shown canvas reflects
        self.told_seq, self.told_settled = 0, None  # what the tab was last told
        self.sent, self.sent_at = 0, 0.0  # frames sent, when the last one went
        # event loop:
        self.acked = 0  # frames the page drew (never more than were sent)
        self.flush_queued = False

    def in_flight(self, now: float) -> bool:
        """A frame was sent and not drawn yet (given up on after ack_timeout_s)."""
        return self.acked < self.sent and now - self.sent_at < self.config.ack_timeout_s

    def push(self, kind: str, data) -> None:
        """Queue a message (event loop). Texts and files are bounded: a tab that reads nothing loses them."""
        if kind != "frame":
            if sum(k == kind for k, _ in self.outbox) >= (32 if kind == "text" else 4):
                return
        self.outbox.append((kind, data))
        self.wake.set()

    def say(self, message: dict) -> None:
        self.push("text", json.dumps(message))

    def send_file(self, data: bytes) -> None:
        self.push("file", data)

    async def run_sender(self) -> None:
        """Send what is queued, in order (frames are gated by acks where they are made)."""
        while True:
            await self.wake.wait()
            self.wake.clear()
            while self.outbox:
                kind, data = self.outbox.popleft()
                if kind == "text":
                    await self.ws.send_text(data)
                else:
                    await self.ws.send_bytes(data)
