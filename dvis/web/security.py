"""The security checks of ``dvis serve`` (docs/web.md, "Security"): the ``Host`` a request names (DNS
rebinding), the token on every request (``?token=`` once, then the cookie), and the page's own origin
for WebSockets and uploads."""
from __future__ import annotations

import ipaddress
import logging
import secrets
from urllib.parse import urlsplit

from starlette.requests import HTTPConnection
from starlette.responses import PlainTextResponse

from dvis.web.config import WebConfig, is_loopback

log = logging.getLogger(__name__)

COOKIE = "dvis_token"


def new_token() -> str:
    """A fresh random access token (32 URL-safe characters)."""
    return secrets.token_urlsafe(24)


def token_ok(config: WebConfig, given: str | None) -> bool:
    """``given`` is the token (compared in constant time), or the server asks none."""
    return not config.token or (given is not None and secrets.compare_digest(given, config.token))


def host_name(host_header: str) -> str:
    """The name or address in a ``Host`` header, without port or IPv6 brackets, lower case."""
    host = host_header.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def is_local_name(name: str) -> bool:
    """``name`` (from a ``Host`` header) can only mean this machine: ``localhost`` or a loopback address."""
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def host_ok(config: WebConfig, host_header: str | None) -> bool:
    """The request names this server. A server on loopback answers only requests whose ``Host`` is
    loopback: a page of another site whose name was rebound to 127.0.0.1 names its own host, and is
    refused. A server on another address (only with a token) answers any name the machine may be
    reached under, as Jupyter's ``allow_remote_access``."""
    return not is_loopback(config.host) or is_local_name(host_name(host_header or ""))


def origin_ok(headers, scheme: str) -> bool:
    """The request comes from a page served by this server: the ``Origin`` has the request's scheme
    (http for ws, https for wss) and its ``Host``."""
    origin, host = headers.get("origin"), headers.get("host")
    if not origin or not host:
        return False
    parts = urlsplit(origin)
    page_scheme = {"ws": "http", "wss": "https"}.get(scheme, scheme)
    return parts.scheme.lower() == page_scheme and parts.netloc.lower() == host.lower()


class TokenGate:
    """ASGI middleware: every HTTP and WebSocket request must name this server in ``Host``
    (:func:`host_ok`) and carry the token, in ``?token=`` or the cookie."""

    def __init__(self, app, config: WebConfig):
        self.app, self.config = app, config

    async def __call__(self, scope, receive, send):
        if scope["type"] not in ("http", "websocket"):
            return await self.app(scope, receive, send)
        conn = HTTPConnection(scope)
        client = conn.client.host if conn.client else "?"
        host = conn.headers.get("host")
        if not host_ok(self.config, host):
            log.warning("refused %s %s from %s: Host %r is not this server", scope["type"], scope.get("path"),
                        client, (host or "")[:100])
            return await self._refuse(scope, receive, send, "dvis serve: this server answers only to "
                                      "127.0.0.1 or localhost (open the URL printed by `dvis serve`)")
        given = conn.query_params.get("token") or conn.cookies.get(COOKIE)
        if token_ok(self.config, given):
            return await self.app(scope, receive, send)
        log.warning("refused %s %s from %s: no or wrong token", scope["type"], scope.get("path"), client)
        await self._refuse(scope, receive, send, "dvis serve: this page needs the token printed by `dvis serve` "
                           "(open the URL with ?token=...)")

    @staticmethod
    async def _refuse(scope, receive, send, text: str) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await PlainTextResponse(text, status_code=403)(scope, receive, send)
