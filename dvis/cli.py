"""The ``dvis`` console command."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys

import dvis.commands
from dvis.errors import DvisError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dvis", description="Deep visualization toolbox for PyTorch CNNs.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(dvis.commands.__path__), key=lambda m: m.name):
        importlib.import_module(f"dvis.commands.{info.name}").register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (DvisError, ValueError, FileNotFoundError) as exc:
        print(f"dvis {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"dvis {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
