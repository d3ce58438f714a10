"""``dvis vis-info``: which per-unit images a model has, per layer, and what is missing."""
from __future__ import annotations

from pathlib import Path

from dvis.commands import args as a
from dvis.constants import COMPLETE_KINDS as KINDS
from dvis.errors import DvisError


def register(sub) -> None:
    p = sub.add_parser("vis-info", help="report the per-unit images of a model's unit_vis folder")
    a.add_model(p)
    a.add_device(p)
    p.add_argument("--unit-vis", default=None, metavar="DIR", help="unit_vis folder to report (default: the model's)")
    a.deprecated(p, "--out", "--unit-vis", "unit_vis")
    p.set_defaults(func=run)


def _ranges(units: list[int]) -> str:
    """[1, 2, 3, 7] -> '1-3,7'."""
    parts, start = [], None
    for i, u in enumerate(units):
        if start is None:
            start = u
        if i + 1 == len(units) or units[i + 1] != u + 1:
            parts.append(f"{start}" if start == u else f"{start}-{u}")
            start = None
    return ",".join(parts)


def run(args) -> int:
    from dvis.pipeline.maxes import layer_shapes
    from dvis.formats.paths import unit_vis_origin
    from dvis.formats.unit_vis import coverage

    model = a.load_model_from(args)
    root = Path(args.unit_vis) if args.unit_vis else model.unit_vis_dir
    if root is None:
        raise DvisError(f"model {model.name} has no model folder; give --unit-vis for its unit images")
    shapes = layer_shapes(model.net, model.layers, (model.channels,) + tuple(model.input_size), model.device)
    fallbacks = () if args.unit_vis else tuple(model.unit_vis_dirs[1:])  # e.g. shipped images under computed ones
    missing = coverage(root, {n: shapes[n][0] for n in model.layers}, KINDS, fallbacks)
    where = f"{root}" + ("" if args.unit_vis else f" ({unit_vis_origin(model).split(' ')[0]})")
    print(f"{model.name}: unit images in {where}" + "".join(f", then {d} (shipped)" for d in fallbacks))
    print(f"{'layer':<16}{'units':>7}" + "".join(f"{k:>9}" for k in KINDS) + "  missing")
    complete = True
    for layer in model.layers:
        n = shapes[layer][0]
        counts = "".join(f"{n - len(missing[layer][k]):>9}" for k in KINDS)
        gaps = "; ".join(f"{k}: {_ranges(missing[layer][k])}" for k in KINDS if missing[layer][k])
        complete &= not gaps
        print(f"{model.display_names.get(layer, layer):<16}{n:>7}{counts}  {gaps or '-'}")
    print("complete" if complete else "incomplete: run `dvis precompute` (or maxes/crops/optimize) to fill the gaps")
    return 0
