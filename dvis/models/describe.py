"""A model's description as ``dvis info`` prints it: the header, how each back-projection mode treats
its activations, and a table of its visualizable layers with their receptive fields."""
from __future__ import annotations

from dvis.engine.geometry import model_geometry, traced_activations
from dvis.engine.hooks import RULES, rule_table
from dvis.models.loaded import LoadedModel

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
