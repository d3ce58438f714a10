"""The toolbox in a browser: ``dvis serve`` (see docs/web.md).

:mod:`dvis.web.server` is a starlette app driving one :class:`dvis.toolbox.app.Toolbox` core: every
tab shares that one view (keys from any tab act on it, every tab sees the same canvas). Frames go
out only when the canvas changed, as JPEG (or WebP / PNG), one in flight per tab: a slow tab gets
the newest frame when it is ready, never a queue of old ones. ``static/`` holds the page (plain
HTML + JS, no build step, no CDN).
"""
