"""The ``dvis`` console command: the table of commands, grouped by purpose, and how one runs.

Each command is one module of :mod:`dvis.commands` whose ``register(subparsers)`` adds its parser
(flags from :mod:`dvis.commands.args`) and whose ``func(args)`` runs it.
"""
from __future__ import annotations

import argparse
import importlib
import sys
import warnings

from dvis.runtime.openmp import SPIN_COUNT, shorten_spin_wait

shorten_spin_wait()  # before anything loads PyTorch (and with it OpenMP)

from dvis.commands.args import resolve_model_alias  # noqa: E402
from dvis.formats.digest import weights_cache  # noqa: E402
from dvis.errors import DvisError  # noqa: E402

#: Every command, grouped by purpose for ``dvis --help``: (group, ((command, module in dvis.commands), ...)).
COMMANDS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    ("apps", (("toolbox", "toolbox"), ("serve", "serve"), ("keys", "keys"))),
    ("pipeline", (("maxes", "maxes"), ("crops", "crops"), ("optimize", "optimize"), ("precompute", "precompute"),
                  ("maxes-merge", "maxes_merge"), ("unit-stats", "unit_stats"), ("vis-info", "vis_info"),
                  ("atlas", "atlas"))),
    ("models", (("info", "info"), ("evaluate", "evaluate"))),
    ("experiments", (("filters", "filters"), ("occlusion", "occlusion"), ("invariance", "invariance"),
                     ("correspondence", "correspondence"), ("evolution", "evolution"))),
)


class _Recording:
    """The subparsers action, noting each command's one-line help for the grouped listing."""

    def __init__(self, sub):
        self.sub, self.help = sub, {}

    def add_parser(self, name: str, **kw):
        self.help[name] = kw.get("help", "")
        kw.setdefault("description", kw.get("help"))
        return self.sub.add_parser(name, **kw)


def build_parser() -> argparse.ArgumentParser:
    """The ``dvis`` parser with every command's (imports no heavy module: see dvis.commands.args)."""
    parser = argparse.ArgumentParser(
        prog="dvis", usage="%(prog)s [-h] COMMAND ...", description="Deep visualization toolbox for PyTorch CNNs.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", help=argparse.SUPPRESS, prog="dvis")
    recording = _Recording(sub)
    for _group, commands in COMMANDS:
        for _name, module in commands:
            importlib.import_module(f"dvis.commands.{module}").register(recording)
    width = max(len(name) for _g, commands in COMMANDS for name, _m in commands) + 2
    lines = []
    for group, commands in COMMANDS:
        lines += ["", f"{group}:"] if lines else [f"{group}:"]
        lines += [f"  {name:<{width}}{recording.help[name]}" for name, _m in commands]
    parser.epilog = ("\n".join(lines) + "\n\n`dvis COMMAND --help` shows a command's flags.\n\n"
                     f"dvis commands run with GOMP_SPINCOUNT={SPIN_COUNT} (idle OpenMP threads sleep sooner, leaving "
                     "the\ncores to the decoding workers) unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set; see "
                     "docs/pipeline.md.")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2

    def one_line(message, category, *_args, **_kw):  # warnings (e.g. a skipped image) as one line each
        print(f"dvis {args.command}: warning: {message}", file=sys.stderr)

    # A fresh warnings state per command: entering catch_warnings resets the "already shown" registry,
    # so each command run in one process (tests, notebooks) warns about each skipped file once, and
    # the caller's showwarning comes back afterwards.
    with warnings.catch_warnings(), weights_cache():  # and each net's weights hashed once per command
        warnings.showwarning = one_line
        try:
            resolve_model_alias(args)
            return int(args.func(args) or 0)
        except (DvisError, ValueError, FileNotFoundError) as exc:
            print(f"dvis {args.command}: error: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"dvis {args.command}: interrupted", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())
