"""The transport a :class:`~dvis.web.session.Session` talks to one viewer over: what ``dvis serve``'s
WebSocket offers (starlette's ``WebSocket`` is one as it is) and what the notebook widget's comm channel
offers (:class:`dvis.notebook.widget.CommTransport`). One protocol over both (:mod:`dvis.web.protocol`)."""
from __future__ import annotations

from typing import Protocol


class Transport(Protocol):
    """One viewer's message channel, in ASGI WebSocket terms."""

    async def receive(self) -> dict:
        """The next message: ``{"type": "websocket.receive", "text": str}`` or ``{..., "bytes": bytes}``,
        or ``{"type": "websocket.disconnect"}`` once the viewer is gone."""

    async def send_text(self, data: str) -> None:
        """Send a text (JSON) message."""

    async def send_bytes(self, data: bytes) -> None:
        """Send a binary message (a frame or a screenshot)."""
