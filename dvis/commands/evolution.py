"""``dvis evolution``: strongest patches and projections of chosen units across training checkpoints (ZF Fig. 4)."""
from __future__ import annotations

from pathlib import Path

from dvis.commands import args as a
from dvis.constants import BACK_MODES
from dvis.errors import DvisError

#: Units per layer picked when --units is not given.
DEFAULT_UNITS = 3


def register(subparsers) -> None:
    p = subparsers.add_parser("evolution", help="top patch and deconv of units at each training checkpoint (ZF Fig. 4)")
    a.add_experiment_args(p, "dvis-evolution")
    p.add_argument("--checkpoints", action=a.ListAction, default=None, metavar="FILE[,FILE...]",
                   help="comma-separated state-dict files in training order (default: the model's)")
    a.add_images(p, "probe images: files, folders or list files, comma-separated", many=True)
    a.add_layers(p, "the model's conv layers")
    p.add_argument("--units", action=a.ListAction, default=None, metavar="UNITS",
                   help="comma-separated unit indices for every layer, or LAYER:UNIT pairs "
                        f"(default: {DEFAULT_UNITS} evenly spaced units per layer)")
    p.add_argument("--mode", choices=BACK_MODES, default="deconv", help="projection method (default: deconv)")
    p.set_defaults(func=run)


def parse_units(items: list[str] | None, layers: list[str], widths: dict[str, int]) -> list[tuple[str, int]]:
    """(layer, unit) pairs from ``LAYER:UNIT`` items or plain indices applied to every layer."""
    import numpy as np

    if not items:
        return [(k, int(u)) for k in layers for u in np.unique(np.linspace(0, widths[k] - 1, DEFAULT_UNITS).round())]
    plain, pairs = [], []
    for item in items:
        layer, sep, unit = item.rpartition(":")
        if not unit.isdigit():
            raise DvisError(f"bad unit {item!r}: use an index or LAYER:INDEX")
        if sep:
            pairs.append((layer, int(unit)))
        else:
            plain.append(int(unit))
    # Plain indices apply to every layer, grouped by layer so the figure's rows stay in layer order.
    return [(k, u) for k in layers for u in plain] + pairs


def run(args) -> int:
    from dvis.analyses.common import conv_layers, layer_widths
    from dvis.analyses.evolution import feature_evolution, plot_evolution
    from dvis.analyses.io import load_inputs, save_figure, write_json

    model = a.load_model_from(args)
    checkpoints = args.checkpoints or [str(c) for c in model.checkpoints]
    missing = [c for c in checkpoints if not Path(c).is_file()]
    if missing:
        raise DvisError(f"checkpoint not found: {missing[0]}")
    x, _, paths = load_inputs(model, args.images)
    layers = a.parse_layers(args.layers, model) or conv_layers(model)
    units = parse_units(args.units, layers, layer_widths(model, x[:1], layers))
    evo = feature_evolution(model, checkpoints, x, units, args.batch_size, args.mode, progress=True)
    out = Path(args.out)
    save_figure(plot_evolution(evo), out / "evolution.png")
    write_json(out / "evolution.json", evo.summary(paths))
    for k, v in evo.convergence.items():
        print(f"{k}: correlation with final responses " + " ".join(f"{float(c):.2f}" for c in v))
    print(f"wrote {out / 'evolution.png'} and {out / 'evolution.json'}")
    return 0
