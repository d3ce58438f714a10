"""The apps' command line: ``run_toolbox.py``, ``dvis toolbox`` and ``dvis serve``.

Settings file + flags -> a window, a headless run or a served page (the flags that pick model,
inputs and settings are shared by all three).
"""
from __future__ import annotations

import argparse
import ast
import gc
import logging
import os
import shlex
import socket
import sys
import warnings
from pathlib import Path
from typing import Callable

from dvis.commands.args import add_model, resolve_model_alias
from dvis.errors import DvisError
from dvis.toolbox.settings import load_settings, takes_text

PROG = "run_toolbox.py"
SHUTDOWN_S = 1  # seconds Ctrl-C gives open tabs to close before dvis serve drops them


def add_settings_args(p: argparse.ArgumentParser) -> None:
    """The flags that choose the model, inputs and settings (shared by the window and ``dvis serve``)."""
    add_model(p, help="model folder, model.yaml or torchvision architecture (default: the settings', zf-cifar10)")
    p.add_argument("--device", help="torch device, e.g. cpu or cuda (default: the settings', cpu)")
    p.add_argument("--images", help="image folder, list file or one image (default input_images/)")
    p.add_argument("--pattern", metavar="REGEX", help="only image paths matching this regular expression")
    p.add_argument("--no-recursive", dest="recursive", action="store_false", default=None,
                   help="do not look in subfolders of --images")
    p.add_argument("--camera", type=int, metavar="ID", help="start on camera ID")
    p.add_argument("--scale", type=float, help="global_scale of the window")
    p.add_argument("--settings", metavar="FILE",
                   help="settings file (default: settings_local.py in the current folder, else the repository "
                        "root of a source checkout, else the user's config folder; see dvis info --paths)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override any setting, e.g. --set font_scale=1.2 (repeatable)")


def add_window_args(p: argparse.ArgumentParser) -> None:
    """Flags of the window and headless drivers (``run_toolbox.py`` and ``dvis toolbox``)."""
    add_settings_args(p)
    p.add_argument("--headless", action="store_true", help="no window: apply --keys and write PNGs to --out")
    p.add_argument("--keys", default="", help='headless key list, e.g. "right right b e" (names or click:X,Y)')
    p.add_argument("--out", default="out/toolbox", help="headless output folder (default out/toolbox)")
    p.add_argument("--web", action="store_true",
                   help="serve the toolbox to a browser instead of a window, as dvis serve (docs/web.md)")
    add_web_args(p.add_argument_group("with --web"))


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


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="The dvis deep visualization toolbox window.")
    add_window_args(p)
    return p


def parse_set(items: list[str]) -> dict:
    """``NAME=VALUE`` pairs: a text setting takes VALUE as written (``images=2024`` is a folder),
    ``None`` where it may be None; any other setting a Python literal when VALUE parses as one,
    else the text (the settings' type check then names a mismatch)."""
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise DvisError(f"--set {item}: expected NAME=VALUE")
        name = name.strip()
        if takes_text(name) and text.strip() != "None":
            values[name] = text
            continue
        try:
            values[name] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[name] = text
    return values


def has_display() -> bool:
    """False on Linux/BSD without an X11 or Wayland display (other platforms always have one)."""
    if not sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def serve_line(args: argparse.Namespace) -> str:
    """The ``dvis serve`` command line serving the same settings as the parsed window flags ``args``."""
    words = ["dvis", "serve"]
    for flag, value in (("--model", args.model), ("--weights", args.weights), ("--device", args.device),
                        ("--images", args.images), ("--pattern", args.pattern), ("--camera", args.camera),
                        ("--scale", args.scale), ("--settings", args.settings)):
        if value is not None:
            words += [flag, str(value)]
    if args.recursive is False:
        words.append("--no-recursive")
    for item in args.set:
        words += ["--set", item]
    return shlex.join(words)


def main(argv: list[str] | None = None, repo_root: Path | None = None) -> int:
    """``run_toolbox.py``: warnings print as one line each, as the ``dvis`` command prints them."""
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = lambda message, *_a, **_k: print(f"{PROG}: warning: {message}", file=sys.stderr)
        return execute(args, repo_root or Path.cwd(), PROG)


def execute(args: argparse.Namespace, repo_root: Path, prog: str) -> int:
    """Run parsed window flags: the window, or the headless key list; errors are one line, exit 2."""
    if args.web:
        try:
            return serve(args)
        except DvisError as exc:
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 130
    logging.basicConfig(level=logging.WARNING, format=f"{prog}: %(levelname)s: %(message)s")
    if not args.headless and not has_display():
        print(f"{prog}: no display (DISPLAY is not set); use --headless to run without a window, or serve "
              f"the toolbox to a browser (docs/web.md):\n  {serve_line(args)}", file=sys.stderr)
        return 2
    try:
        return run(args, repo_root, prog)
    except DvisError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def load_from_args(args: argparse.Namespace, repo_root: Path, loading: Callable[[str], None] | None = None):
    """(settings, model) from the shared flags of :func:`add_settings_args`; ``loading`` hears the
    model's name before it loads (which can take a minute)."""
    from dvis.formats.paths import find_settings_local, packaged_data_dir
    from dvis.models.loading import DEFAULT_MODEL, load_model

    resolve_model_alias(args)  # run_toolbox.py MODEL (dvis toolbox has folded it already)
    local = Path(args.settings) if args.settings else find_settings_local()
    if args.settings and not local.is_file():
        raise DvisError(f"--settings {args.settings}: no such file")
    overrides = {"model": args.model, "weights": args.weights, "device": args.device, "images": args.images,
                 "images_pattern": args.pattern, "images_recursive": args.recursive, "global_scale": args.scale}
    if args.camera is not None:
        overrides.update(camera_id=args.camera, start_in_camera=True)
    overrides.update(parse_set(args.set))
    settings = load_settings(local, overrides)
    for base in (repo_root, packaged_data_dir()):  # e.g. the default input_images/ from elsewhere, or shipped
        if not Path(settings.images).exists() and (base / settings.images).exists():
            settings.images = str(base / settings.images)
    if loading is not None:
        loading(settings.model or DEFAULT_MODEL)
    return settings, load_model(settings.model, settings.device, weights=settings.weights)


def run(args: argparse.Namespace, repo_root: Path, prog: str = PROG) -> int:
    from dvis.toolbox.app import Toolbox
    from dvis.toolbox.drivers import parse_keys, run_keys, run_window

    keys = parse_keys(args.keys)
    settings, model = load_from_args(args, repo_root)
    toolbox = Toolbox(model, settings, headless=args.headless)
    try:
        if args.headless:
            paths = run_keys(toolbox, keys, args.out)
            print(f"{prog}: wrote {len(paths)} PNGs to {args.out}")
        else:
            run_window(toolbox)
    finally:
        toolbox.close()
    return 0


def serve(args: argparse.Namespace) -> int:
    """Serve the toolbox to a browser (``dvis serve``, ``--web``) until interrupted."""
    try:
        import uvicorn
    except ImportError:
        raise DvisError("dvis serve needs the web extra: pip install 'dvis[web]' (starlette, uvicorn)") from None
    from dvis.web.app import create_app
    from dvis.web.config import WebConfig, is_loopback
    from dvis.web.security import new_token
    from dvis.web.server import uvicorn_config

    logging.basicConfig(level=logging.INFO, format="dvis serve: %(levelname)s: %(message)s")
    token = "" if args.no_token else (args.token or new_token())
    config = WebConfig(host=args.host, port=args.port, token=token, frame_format=args.frame_format,
                       quality=args.quality)
    config.check()
    settings, model = load_from_args(
        args, Path.cwd(), lambda name: print(f"dvis serve: loading {name} ...", file=sys.stderr, flush=True))
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
    server = uvicorn.Server(uvicorn_config(app, config, timeout_graceful_shutdown=SHUTDOWN_S))  # limits: dvis.web.server
    try:
        server.run(sockets=[sock])
    finally:
        gc.freeze()  # the process ends here: no last garbage collection through the model (seconds under load)
    return 0


def make_toolbox(model, settings, camera_factory):
    """The shared Toolbox core of a server (see dvis.web: every tab shares this one view)."""
    from dvis.toolbox.app import Toolbox

    return Toolbox(model, settings, headless=False, camera_factory=camera_factory)
