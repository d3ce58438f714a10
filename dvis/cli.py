"""The ``dvis`` console command."""
from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings

from dvis.runtime.openmp import SPIN_COUNT, shorten_spin_wait

shorten_spin_wait()  # before anything loads PyTorch (and with it OpenMP)

import dvis.commands  # noqa: E402
from dvis.errors import DvisError  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dvis", description="Deep visualization toolbox for PyTorch CNNs.",
        epilog=f"dvis commands run with GOMP_SPINCOUNT={SPIN_COUNT} (idle OpenMP threads sleep sooner, leaving the "
               "cores to the decoding workers) unless OMP_WAIT_POLICY or GOMP_SPINCOUNT is set; see docs/pipeline.md.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for info in sorted(pkgutil.iter_modules(dvis.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"dvis.commands.{info.name}")
        if hasattr(module, "register"):
            module.register(sub)
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
    from dvis.formats.maxes import weights_cache

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


def add_model_argument(p: argparse.ArgumentParser, positional: bool = False, **kw) -> None:
    """``--model`` (anything :func:`dvis.load_model` accepts); with ``positional`` also as an
    optional first argument (``dvis info alexnet``), resolved by :func:`resolve_model_alias`."""
    help_text = kw.pop("help", "model folder name or path, model.yaml, or torchvision/timm architecture "
                               "(default: zf-cifar10)")
    p.add_argument("--model", default=None, help=help_text, **kw)
    if positional:
        p.add_argument("model_positional", nargs="?", default=None, metavar="MODEL", help="same as --model")


def resolve_model_alias(args: argparse.Namespace) -> None:
    """Fold the positional MODEL into ``args.model``."""
    alias = getattr(args, "model_positional", None)
    if alias is None:
        return
    if args.model is not None and args.model != alias:
        raise DvisError(f"two models given: {alias!r} and --model {args.model!r}")
    args.model = alias


def add_layers_argument(p: argparse.ArgumentParser, default_help: str) -> None:
    """``--layers``: a comma-separated list of layer names, or ``all`` (resolved by :func:`parse_layers`)."""
    p.add_argument("--layers", default=None, help=f"comma-separated layer names or 'all' (default: {default_help})")


def parse_layers(text: str | None, model=None) -> list[str] | None:
    """``--layers`` text -> names (None when not given); ``all`` -> every layer of ``model``."""
    if not text:
        return None
    if text.strip() == "all":
        if model is None:
            raise DvisError("--layers all needs a model")
        return list(model.layers)
    return [s.strip() for s in text.split(",") if s.strip()]


def parse_list(text: str | None) -> list[str]:
    """A comma-separated option (``--modes deconv,guided``, ``--skip maxes``) -> its items."""
    return [s.strip() for s in text.split(",") if s.strip()] if text else []


def default_workers() -> int:
    """Decoding workers: two, or fewer when this process may use fewer CPU cores."""
    import os

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(2, cores))


if __name__ == "__main__":
    sys.exit(main())
