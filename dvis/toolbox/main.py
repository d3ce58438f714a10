"""Command line of ``run_toolbox.py``: settings file + flags -> a window or a headless run."""
from __future__ import annotations

import argparse
import ast
import logging
import os
import sys
from pathlib import Path

from dvis.errors import DvisError
from dvis.toolbox.settings import load_settings

PROG = "run_toolbox.py"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description="The dvis deep visualization toolbox window.")
    p.add_argument("--model", help="model folder, model.yaml or torchvision architecture (default zf-cifar10)")
    p.add_argument("--weights", help="override the model's weights: a state_dict file, a torchvision weights name or none")
    p.add_argument("--device", help="torch device (cpu, cuda, ...)")
    p.add_argument("--images", help="image folder, list file or one image (default input_images/)")
    p.add_argument("--pattern", metavar="REGEX", help="only image paths matching this regular expression")
    p.add_argument("--no-recursive", dest="recursive", action="store_false", default=None,
                   help="do not look in subfolders of --images")
    p.add_argument("--camera", type=int, metavar="ID", help="start on camera ID")
    p.add_argument("--scale", type=float, help="global_scale of the window")
    p.add_argument("--settings", metavar="FILE",
                   help="settings file (default: settings_local.py in the current folder or the repository root)")
    p.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                   help="override any setting, e.g. --set font_scale=1.2 (repeatable)")
    p.add_argument("--headless", action="store_true", help="no window: apply --keys and write PNGs to --out")
    p.add_argument("--keys", default="", help='headless key list, e.g. "right right b e" (names or click:X,Y)')
    p.add_argument("--out", default="out/toolbox", help="headless output folder (default out/toolbox)")
    return p


def parse_set(items: list[str]) -> dict:
    """``NAME=VALUE`` pairs; values are Python literals when they parse as one, else strings."""
    values = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep:
            raise DvisError(f"--set {item}: expected NAME=VALUE")
        try:
            values[name.strip()] = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            values[name.strip()] = text
    return values


def default_settings_file(repo_root: Path) -> Path | None:
    for folder in (Path.cwd(), repo_root):
        if (folder / "settings_local.py").is_file():
            return folder / "settings_local.py"
    return None


def has_display() -> bool:
    """False on Linux/BSD without an X11 or Wayland display (other platforms always have one)."""
    if not sys.platform.startswith(("linux", "freebsd", "openbsd")):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def main(argv: list[str] | None = None, repo_root: Path | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format=f"{PROG}: %(levelname)s: %(message)s")
    if not args.headless and not has_display():
        print(f"{PROG}: no display (DISPLAY is not set); use --headless to run without a window", file=sys.stderr)
        return 2
    try:
        return run(args, repo_root or Path.cwd())
    except DvisError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace, repo_root: Path) -> int:
    from dvis.model_loading import load_model
    from dvis.toolbox.app import Toolbox, parse_keys

    local = Path(args.settings) if args.settings else default_settings_file(repo_root)
    if args.settings and not local.is_file():
        raise DvisError(f"--settings {args.settings}: no such file")
    overrides = {"model": args.model, "weights": args.weights, "device": args.device, "images": args.images,
                 "images_pattern": args.pattern, "images_recursive": args.recursive, "global_scale": args.scale}
    if args.camera is not None:
        overrides.update(camera_id=args.camera, start_in_camera=True)
    overrides.update(parse_set(args.set))
    settings = load_settings(local, overrides)
    if not Path(settings.images).exists() and (repo_root / settings.images).exists():
        settings.images = str(repo_root / settings.images)  # e.g. the default input_images/ from elsewhere
    keys = parse_keys(args.keys)
    model = load_model(settings.model, settings.device, weights=settings.weights)
    toolbox = Toolbox(model, settings, headless=args.headless)
    try:
        if args.headless:
            paths = toolbox.run_headless(keys, args.out)
            print(f"{PROG}: wrote {len(paths)} PNGs to {args.out}")
        else:
            toolbox.run_window()
    finally:
        toolbox.close()
    return 0
