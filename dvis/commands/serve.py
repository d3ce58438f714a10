"""``dvis serve``: the toolbox as a web page, for machines without a display (docs/web.md)."""
from __future__ import annotations

import argparse
import logging
import socket
import sys
from pathlib import Path

from dvis.errors import DvisError


def add_web_args(p: argparse.ArgumentParser) -> None:
    """The server's own flags."""
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: reachable only through an ssh tunnel)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765; 0 picks a free one)")
    p.add_argument("--token", help="the access token (default: a new random one, printed in the URL)")
    p.add_argument("--no-token", action="store_true", help="ask no token (refused unless --host is loopback)")
    p.add_argument("--frame-format", choices=("jpeg", "webp", "png"), default="jpeg",
                   help="encoding of the frames (default jpeg; png is lossless and larger)")
    p.add_argument("--quality", type=int, default=85, help="JPEG / WebP quality (default 85)")


def register(subparsers) -> None:
    from dvis.toolbox.main import add_settings_args

    p = subparsers.add_parser("serve", help="serve the toolbox to a browser (remote GPU machines; docs/web.md)",
                              description="Serve the toolbox as a web page: the same settings, keys and panes "
                                          "as the window. Open the printed URL (through the printed ssh "
                                          "tunnel on a remote machine). Needs the web extra: "
                                          "pip install 'dvis[web]'.")
    add_settings_args(p)
    add_web_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn
    except ImportError:
        raise DvisError("dvis serve needs the web extra: pip install 'dvis[web]' (starlette, uvicorn)") from None
    from dvis.toolbox.main import load_from_args
    from dvis.web.server import WebConfig, create_app, is_loopback, new_token

    logging.basicConfig(level=logging.INFO, format="dvis serve: %(levelname)s: %(message)s")
    token = "" if args.no_token else (args.token or new_token())
    config = WebConfig(host=args.host, port=args.port, token=token, frame_format=args.frame_format,
                       quality=args.quality)
    config.check()
    settings, model = load_from_args(args, Path.cwd())
    app = create_app(lambda camera_factory: make_toolbox(model, settings, camera_factory), config)
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        raise DvisError(f"cannot listen on {args.host}:{args.port}: {exc.strerror}") from None
    sock.listen(128)  # connections wait in the backlog until the server accepts them
    port = sock.getsockname()[1]
    shown = "127.0.0.1" if is_loopback(args.host) or args.host in ("0.0.0.0", "::") else args.host
    url = f"http://{shown}:{port}/" + (f"?token={token}" if token else "")
    print(f"dvis serve: {model.name} on {args.host}:{port}\n  open  {url}\n"
          f"  from another machine: ssh -N -L {port}:127.0.0.1:{port} {socket.gethostname()}  "
          f"then open the URL above there", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(app, log_level="warning", ws_max_size=config.max_camera_bytes + 1024,
                                  ws_ping_interval=20, ws_ping_timeout=20,
                                  ws_per_message_deflate=False)).run(sockets=[sock])  # frames are JPEG: deflate only costs
    return 0


def make_toolbox(model, settings, camera_factory):
    """The shared Toolbox core of a server (see dvis.web: every tab shares this one view)."""
    from dvis.toolbox.app import Toolbox

    return Toolbox(model, settings, headless=False, camera_factory=camera_factory)
