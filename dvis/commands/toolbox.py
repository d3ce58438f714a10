"""``dvis toolbox``: the toolbox window (or a headless key list), the same flags as ``run_toolbox.py``."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers) -> None:
    from dvis.commands.apps import add_window_args

    p = subparsers.add_parser("toolbox", help="open the toolbox window (same flags as run_toolbox.py)",
                              description="The deep visualization toolbox window; see docs/toolbox.md. "
                                          "On a machine without a display use `dvis serve` (docs/web.md).")
    add_window_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dvis.commands.apps import execute

    return execute(args, Path.cwd(), "dvis toolbox")
