"""``dvis info MODEL``: the model's input, weights, labels and a table of its visualizable layers."""
from __future__ import annotations

import argparse

import torch

from dvis.activations import activations
from dvis.cli import add_model_argument
from dvis.errors import DvisError
from dvis.model_loading import LoadedModel, load_model
from dvis.receptive_field import receptive_field

_COLUMNS = ("layer", "display", "output", "rf size", "rf stride", "units")


def _hw(value: int | tuple[int, ...] | list[int]) -> str:
    values = [value] if isinstance(value, int) else list(value)
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def layer_rows(model: LoadedModel) -> list[dict[str, str]]:
    """One row per visualizable layer: name, display name, output shape (one forward of a zero
    input), receptive field size and stride ('-' where it cannot be computed), number of units."""
    h, w = model.input_size
    with torch.no_grad():
        acts = activations(model, torch.zeros(1, model.channels, h, w, device=model.device), model.layers)
    rows = []
    for layer in model.layers:
        if layer in acts:
            shape = tuple(acts[layer].shape[1:])
            output, units = "x".join(map(str, shape)) or "1", str(shape[0]) if shape else "1"
        else:  # activations() skips (with a warning) layers the forward never reaches
            output = units = "-"
        try:
            rf = receptive_field(model, layer, model.input_size)
            size, stride = _hw(rf.size), _hw(rf.stride)
        except (DvisError, ValueError):  # e.g. a layer the forward never reaches
            size = stride = "-"
        rows.append({
            "layer": layer,
            "display": model.display_names[layer],
            "output": output,
            "rf size": size,
            "rf stride": stride,
            "units": units,
        })
    return rows


def format_info(model: LoadedModel, rows: list[dict[str, str]]) -> str:
    """The header lines and the aligned layer table that ``dvis info`` prints."""
    h, w = model.input_size
    header = [
        ("model", model.name + (f"  ({model.folder})" if model.folder else "  (torchvision)")),
        ("input", f"{h}x{w}x{model.channels}  mean {list(model.mean)}  std {list(model.std)}"),
        ("weights", model.weights_source),
        ("labels", str(len(model.labels))),
        ("device", str(model.device)),
        ("layers", str(len(model.layers))),
    ]
    lines = [f"{key:<9}{value}" for key, value in header] + [""]
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in _COLUMNS]
    lines.append("  ".join(c.ljust(wd) for c, wd in zip(_COLUMNS, widths)).rstrip())
    lines += ["  ".join(r[c].ljust(wd) for c, wd in zip(_COLUMNS, widths)).rstrip() for r in rows]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.paths:
        from dvis.paths import lookup_report

        for what, path in lookup_report():
            print(f"{what:<26} {path}{'' if path.exists() else '  (missing)'}")
        return 0
    model = load_model(args.model, device=args.device, weights=args.weights)
    print(format_info(model, layer_rows(model)))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="show a model's input, weights, labels and visualizable layers",
                              description="Show a model's input, weights, labels and a table of its visualizable layers.")
    add_model_argument(p, positional=True)
    p.add_argument("--paths", action="store_true", help="print every place dvis looks things up, in order, and exit")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument("--weights", default=None,
                   help="override model.yaml's weights: a state_dict file, a torchvision weights name, or none")
    p.set_defaults(func=run)
