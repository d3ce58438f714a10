"""``dvis info MODEL``: the model's input, weights, labels and a table of its visualizable layers."""
from __future__ import annotations

import argparse

from dvis.cli import add_model_argument
from dvis.engine.geometry import model_geometry
from dvis.engine.geometry import traced_activations
from dvis.engine.hooks import RULES, rule_table
from dvis.models.loading import LoadedModel, load_model

_COLUMNS = ("layer", "display", "output", "rf size", "rf stride", "units", "layout")


def _hw(value: int | tuple[int, ...] | list[int]) -> str:
    values = [value] if isinstance(value, int) else list(value)
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def layer_rows(model: LoadedModel) -> list[dict[str, str]]:
    """One row per layer of ``model.layers`` from the one-pass geometry: name, display name, output
    shape, receptive field size and stride, units per position, and the layout (``chw``, ``hwc``,
    ``tokens+N`` with N class tokens, ``vector``, ``other``; ``*`` marks global context).
    '-' where a layer never runs or has no field."""
    geo = model_geometry(model)
    rows = []
    for layer in model.layers:
        g = geo[layer]
        if g.runs:
            output = "x".join(map(str, g.shape)) or "1"
            units = str(g.channels) if g.layout != "other" else "-"
            layout = g.layout + (f"+{g.extra_tokens}" if g.extra_tokens else "") + ("*" if g.global_context else "")
        else:
            output = units = "-"
            layout = "not run"
        size, stride = (_hw(g.rf.size), _hw(g.rf.stride)) if g.rf is not None else ("-", "-")
        rows.append({
            "layer": layer,
            "display": model.display_names[layer],
            "output": output,
            "rf size": size,
            "rf stride": stride,
            "units": units,
            "layout": layout,
        })
    return rows


def activation_lines(model) -> list[str]:
    """The activations the forward calls (modules and functional forms) and how each back mode treats them."""
    counts = traced_activations(model)
    if not counts:
        return ["activations  none"]
    lines = ["activations  " + ", ".join(f"{name} x{n}" for name, n in sorted(counts.items()))]
    lines += [f"  {mode:<10} {rule}" for mode, rule in RULES.items()]
    others = [n for n, rules in rule_table(counts, rectify="relu").items() if rules["guided"] == RULES["grad"]]
    if others:
        lines.append(f"  rectify=relu: {', '.join(sorted(others))} pass the plain gradient in every mode")
    return lines


def format_info(model: LoadedModel, rows: list[dict[str, str]]) -> str:
    """The header lines, the activation rules and the aligned layer table that ``dvis info`` prints."""
    h, w = model.input_size
    header = [
        ("model", model.name + (f"  ({model.folder})" if model.folder else "  (torchvision)")),
        ("input", f"{h}x{w}x{model.channels}  mean {list(model.mean)}  std {list(model.std)}"),
        ("weights", model.weights_source),
        ("labels", str(len(model.labels))),
        ("device", str(model.device)),
        ("layers", str(len(model.layers))),
    ]
    lines = [f"{key:<9}{value}" for key, value in header] + activation_lines(model) + [""]
    widths = [max(len(c), *(len(r[c]) for r in rows)) for c in _COLUMNS]
    lines.append("  ".join(c.ljust(wd) for c, wd in zip(_COLUMNS, widths)).rstrip())
    lines += ["  ".join(r[c].ljust(wd) for c, wd in zip(_COLUMNS, widths)).rstrip() for r in rows]
    if any(r["layout"].endswith("*") for r in rows):
        lines += ["", "* a global operation (squeeze-and-excitation gate, attention, global pooling) feeds the layer"]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.paths:
        from dvis.formats.paths import lookup_report

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
