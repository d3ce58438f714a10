"""The security checks of ``dvis serve`` (docs/web.md, "Security model"): the token on every request
(``?token=`` once, then the cookie), the page's own origin for WebSockets and uploads."""
from __future__ import annotations

import logging
import secrets
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse

from dvis.web.config import WebConfig

log = logging.getLogger(__name__)

COOKIE = "dvis_token"


def new_token() -> str:
    """A fresh random access token (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def token_ok(config: WebConfig, given: str | None) -> bool:
    """``given`` is the token (compared in constant time), or the server asks none."""
    return not config.token or (given is not None and secrets.compare_digest(given, config.token))


def origin_ok(headers) -> bool:
    """The request comes from a page served by this server (same scheme-less host:port)."""
    origin, host = headers.get("origin"), headers.get("host")
    if not origin or not host:
        return False
    return urlsplit(origin).netloc.lower() == host.lower()


class TokenGate:
    """ASGI middleware: every HTTP and WebSocket request needs the token, in ``?token=`` or the cookie."""

    def __init__(self, app, config: WebConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        conn = HTTPConnection(scope)
        given = conn.query_params.get("token") or conn.cookies.get(COOKIE)
        if token_ok(self.config, given):
            return await self.app(scope, receive, send)
        log.warning("refused %s %s from %s: no or wrong token", scope["type"], scope.get("path"),
                    conn.client.host if conn.client else "?")
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        response = PlainTextResponse("dvis serve: this page needs the token printed by `dvis serve` "
                                     "(open the URL with ?token=...)", status_code=403)
        await response(scope, receive, send)
