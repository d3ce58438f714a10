"""``dvis unit-stats``: per-layer dead/rare shares, class selectivity and correlation matrices of a
model's unit statistics (figure PNG + numbers JSON, like the analyses)."""
from __future__ import annotations

from pathlib import Path

from dvis.commands import args as a
from dvis.errors import DvisError


def register(sub) -> None:
    p = sub.add_parser("unit-stats", help="figure of dead/rare units, class selectivity and correlations per layer",
                       description="Summarise the unit statistics `dvis maxes` gathered (the model's shipped ones, "
                                   "or those of --run-dir) into unit_stats.png and unit_stats.json. Reads the model's "
                                   "files only: its weights are not needed.")
    a.add_model(p, weights=False)
    a.add_run(p, "a `dvis maxes` run folder (default: the model's unit_vis/maxes)")
    a.add_layers(p, "up to four non-pool layers, evenly spaced; their correlation matrices are drawn",
                 old=("--corr-layers",))
    a.add_out(p, "folder for unit_stats.png and unit_stats.json (default: dvis-unit-stats)", default="dvis-unit-stats")
    p.set_defaults(func=run)


def run(args) -> int:
    from dvis.analyses.io import save_figure, write_json
    from dvis.analyses.unit_stats import pick_corr_layers, plot_unit_stats
    from dvis.formats.stats import UnitStats, find_stats, layer_summary

    if args.run:
        stats = UnitStats(args.run)
        name = Path(args.run).name
    else:
        from dvis.models.loading import load_model_layout

        model = load_model_layout(args.model)
        stats = find_stats(model)
        if stats is None:
            raise DvisError(f"model {model.name} has no unit statistics; `dvis maxes` (or `dvis precompute`) "
                            "computes them, or give --run-dir")
        name = model.name
    summaries = [layer_summary(stats, n) for n in stats.layers]
    corr_layers = pick_corr_layers(stats, a.parse_layers(args.layers))
    out = Path(args.out)
    fig = plot_unit_stats(stats, summaries, corr_layers, f"{name}: unit statistics over {stats.meta['n_images']} images")
    save_figure(fig, out / "unit_stats.png")
    write_json(out / "unit_stats.json", {"model": name, "n_images": stats.meta["n_images"], "classes": stats.classes,
                                         "corr_layers": corr_layers, "layers": summaries})
    for d in summaries:
        sel = d.get("mean_selectivity")
        print(f"{d['layer']:>8}: {d['units']:5d} units, {d['dead']:4d} dead ({d['dead_share']:.1%}), {d['rare']:3d} rare"
              + (f", selectivity mean {sel:.3f} median {d['median_selectivity']:.3f}" if sel is not None else "")
              + (f", mean |r| {d['mean_abs_corr']:.3f}" if d["mean_abs_corr"] is not None else ""))
    print(f"wrote {out / 'unit_stats.png'} and {out / 'unit_stats.json'}")
    return 0
