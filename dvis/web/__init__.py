"""The toolbox in a browser: ``dvis serve`` (see docs/web.md).

A starlette app (:func:`dvis.web.app.create_app`) driving one :class:`dvis.toolbox.app.Toolbox` core:
every tab shares that one view (keys from any tab act on it, every tab sees the same canvas). Frames
go out only when the canvas changed, as JPEG (or WebP / PNG), one in flight per tab: a slow tab gets
the newest frame when it is ready, never a queue of old ones. ``static/`` holds the page (plain
HTML + JS, no build step, no CDN).

One job per module:

* :mod:`~dvis.web.config` - the settings and limits (:class:`WebConfig`), checked at start;
* :mod:`~dvis.web.server` - uvicorn with its limits (connections, request-head deadline);
* :mod:`~dvis.web.app` - the routes (page, static files, uploads, WebSocket);
* :mod:`~dvis.web.security` - the Host, token, cookie and origin checks;
* :mod:`~dvis.web.session` - the shared view: the core thread, inputs, frame production, messages;
* :mod:`~dvis.web.tabs` - one connected tab and its outgoing queue;
* :mod:`~dvis.web.protocol` - the WebSocket message format;
* :mod:`~dvis.web.frames` - frame diffing (changed rectangles per pane);
* :mod:`~dvis.web.encoding` - encoding the changed rectangles, atlas packing;
* :mod:`~dvis.web.pacing` - the per-tab rate limit and the frame pacer;
* :mod:`~dvis.web.uploads` - decoding uploaded images, kept at the size the toolbox shows.
"""
