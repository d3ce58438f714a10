"""The starlette app of ``dvis serve``: its routes (the page, its static files, uploads, the WebSocket)
behind the token gate, around one :class:`~dvis.web.session.Session`."""
from __future__ import annotations

import contextlib
import logging
from importlib import resources

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from dvis.errors import DvisError
from dvis.web.config import WebConfig
from dvis.web.security import COOKIE, TokenGate, origin_ok
from dvis.web.session import Session

log = logging.getLogger(__name__)

STATIC = {"app.js": "application/javascript", "app.css": "text/css"}


def _static(name: str) -> bytes:
    return resources.files("dvis.web").joinpath("static", name).read_bytes()


def create_app(make_toolbox, config: WebConfig) -> Starlette:
    """The starlette app. ``make_toolbox(camera_factory)`` builds the Toolbox core (called once, on the
    core thread, at start-up)."""
    config.check()
    session = Session(make_toolbox, config)

    async def index(request: Request) -> Response:
        response = HTMLResponse(_static("index.html"), headers={"Cache-Control": "no-store"})
        if config.token:
            response.set_cookie(COOKIE, config.token, httponly=True, samesite="strict")
        return response

    async def static(request: Request) -> Response:
        name = request.path_params["name"]
        if name not in STATIC:  # a fixed set of names: no path from the request reaches the disk
            return PlainTextResponse("not found", status_code=404)
        return Response(_static(name), media_type=STATIC[name], headers={"Cache-Control": "no-store"})

    async def upload(request: Request) -> Response:
        if not origin_ok(request.headers, request.scope["scheme"]):
            log.warning("refused an upload from origin %s", request.headers.get("origin"))
            return JSONResponse({"error": "uploads must come from the dvis page"}, status_code=403)
        limit = config.max_upload_bytes
        size = request.headers.get("content-length")
        if size is not None and (not size.isdigit() or int(size) > limit):
            return JSONResponse({"error": f"upload over the {limit >> 20} MiB limit"}, status_code=413)
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                return JSONResponse({"error": f"upload over the {limit >> 20} MiB limit"}, status_code=413)
        raw = request.headers.get("x-filename", "image")
        try:
            name, frame = await session.upload(bytes(body), raw)
        except DvisError as exc:
            log.warning("upload %r refused: %s", raw[:80], exc)
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse({"ok": True, "name": name, "shape": list(frame.shape)})

    async def ws_endpoint(ws: WebSocket) -> None:
        if not origin_ok(ws.headers, ws.scope["scheme"]):
            log.warning("refused a WebSocket from origin %s", ws.headers.get("origin"))
            await ws.close(code=1008)
            return
        await ws.accept()
        await session.serve(ws)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await session.start()
        try:
            yield
        finally:
            await session.stop()

    async def favicon(request: Request) -> Response:
        return Response(status_code=204)

    app = Starlette(routes=[Route("/", index), Route("/static/{name}", static), Route("/favicon.ico", favicon),
                            Route("/upload", upload, methods=["POST"]), WebSocketRoute("/ws", ws_endpoint)],
                    lifespan=lifespan)
    # A path with a trailing slash would be redirected to a URL built from the request's Host header,
    # query (the token) included: 404 instead, nothing sends the token elsewhere.
    app.router.redirect_slashes = False
    app.state.session = session
    return TokenGate(app, config)
