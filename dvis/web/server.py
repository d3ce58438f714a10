"""The HTTP server of ``dvis serve``: uvicorn, with its limits set on purpose (docs/web.md, "Security").

uvicorn bounds a request head's size (h11: 16 KiB), an idle connection between requests
(``timeout_keep_alive``) and, once a request head has arrived, the number of connections it serves
(``limit_concurrency``: 503 beyond it). It has no deadline for the head itself, so a client that
sends headers a byte at a time, or never finishes them, held its connection for good (50 such
connections stayed open). :class:`LimitedH11Protocol` adds that deadline and refuses connections
over the count as they arrive.
"""
from __future__ import annotations

import asyncio
import logging
import time

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from dvis.web.config import WebConfig

log = logging.getLogger(__name__)


class LimitedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline for each request head and a cap on open connections
    (set by :func:`uvicorn_config` on a subclass)."""

    header_timeout_s = 10.0
    max_connections = 100
    _logged = 0.0  # when a refusal was last logged (at most one line a second)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        over = len(self.connections) >= self.max_connections
        self._head_timer: asyncio.TimerHandle | None = None
        super().connection_made(transport)
        if over:
            self._log(f"refused a connection: {self.max_connections} open already")
            transport.close()
            return
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:  # a request head begun and not finished
            self._arm()
        else:  # the head is in (or the connection became a WebSocket): the deadline is met
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timeout)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timeout(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._log(f"closed a connection from {self.client[0] if self.client else '?'}: no whole request "
                      f"head within {self.header_timeout_s:g} s")
            self.transport.close()

    @classmethod
    def _log(cls, text: str) -> None:
        now = time.monotonic()
        if now - cls._logged >= 1.0:
            cls._logged = now
            log.warning(text)


def uvicorn_config(app, config: WebConfig, **options) -> uvicorn.Config:
    """The uvicorn settings ``dvis serve`` runs ``app`` with (``options``: more uvicorn settings, e.g.
    host and port when uvicorn opens the socket)."""
    protocol = type("DvisH11Protocol", (LimitedH11Protocol,), {
        "header_timeout_s": config.header_timeout_s, "max_connections": config.max_connections})
    return uvicorn.Config(
        app, log_level="warning", http=protocol,
        timeout_keep_alive=config.keep_alive_s,
        limit_concurrency=config.max_connections + 1,  # uvicorn counts the connection asking among them
        ws_max_size=config.max_camera_bytes + 1024,  # the largest message: a camera frame
        ws_ping_interval=20, ws_ping_timeout=20,  # a tab gone without a close frame is noticed
        ws_per_message_deflate=False,  # frames are JPEG: deflate would only cost CPU on both ends
        **options)
