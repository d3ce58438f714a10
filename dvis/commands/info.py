"""``dvis info MODEL``: the model's input, weights, labels and a table of its visualizable layers."""
from __future__ import annotations

import argparse

from dvis.commands import args as a


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="show a model's input, weights, labels and visualizable layers",
                              description="Show a model's input, weights, labels and a table of its visualizable layers.")
    a.add_model(p)
    a.add_device(p)
    p.add_argument("--paths", action="store_true", help="print every place dvis looks things up, in order, and exit")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.paths:
        from dvis.formats.paths import lookup_report

        for what, path in lookup_report():
            print(f"{what:<26} {path}{'' if path.exists() else '  (missing)'}")
        return 0
    from dvis.models.describe import format_info, layer_rows

    model = a.load_model_from(args)
    print(format_info(model, layer_rows(model)))
    return 0
