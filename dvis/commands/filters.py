"""``dvis filters``: first-layer filter grids and the architecture-selection numbers, side by side per model."""
from __future__ import annotations

from pathlib import Path

from dvis.commands import args as a
from dvis.errors import DvisError


def register(subparsers) -> None:
    p = subparsers.add_parser("filters", help="filter grid, dead filters, spatial frequencies and aliasing (ZF Sec. 4.1)")
    a.add_model(p, help="one or more models to compare, comma-separated (default: zf-cifar10)", many=True)
    a.add_device(p)
    a.add_layers(p, "the model's first conv", one=True, old=("--layer",))
    p.add_argument("--dead-threshold", type=float, default=0.05,
                   help="dead if the filter norm is below this share of the largest (default: 0.05)")
    a.add_out(p, "folder for filters.png and filters.json (default: dvis-filters)", default="dvis-filters")
    p.set_defaults(func=run)


def _columns(args) -> list[tuple[str | None, str | None]]:
    models = args.model or [None]
    if not args.weights:
        return [(m, None) for m in models]
    if len(models) == 1:
        return [(models[0], w) for w in args.weights]
    if len(args.weights) != len(models):
        raise DvisError(f"--weights needs one file per model ({len(models)}) or a single --model")
    return list(zip(models, args.weights))


def run(args) -> int:
    from tqdm import tqdm

    from dvis.analyses.common import conv_layers
    from dvis.analyses.filters import conv_weight, filter_grid, filter_stats, plot_filters
    from dvis.analyses.io import save_figure, write_json
    from dvis.models.loading import load_model

    chosen = a.one_layer(args.layers)
    names, grids, stats = [], [], []
    for spec, weights in tqdm(_columns(args), desc="models", leave=False):
        model = load_model(spec, device=args.device, weights=weights)
        layer = chosen or conv_layers(model)[0]
        names.append(model.name + (f" ({Path(weights).stem})" if weights else ""))
        grids.append(filter_grid(conv_weight(model, layer)))
        stats.append(filter_stats(model, layer, model.input_size, args.dead_threshold))
    out = Path(args.out)
    save_figure(plot_filters(names, grids, stats), out / "filters.png")
    write_json(out / "filters.json", [{"model": n, **s.summary()} for n, s in zip(names, stats)])
    for n, s in zip(names, stats):
        alias = "" if s.aliased is None else f", {float(s.aliased.mean()):.1%} of power aliases at {s.second_layer}'s stride {s.stride}"
        print(f"{n} {s.layer}: {float(s.dead.float().mean()):.0%} dead{alias}")
    print(f"wrote {out / 'filters.png'} and {out / 'filters.json'}")
    return 0
