"""``dvis unit-stats``: per-layer dead/rare shares, class selectivity and correlation matrices of a
model's unit statistics (figure PNG + numbers JSON, like the analyses)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from dvis.cli import add_model_argument
from dvis.errors import DvisError


def register(sub) -> None:
    p = sub.add_parser("unit-stats", help="figure of dead/rare units, class selectivity and correlations per layer",
                       description="Summarise the unit statistics `dvis maxes` gathered (the model's shipped ones, "
                                   "or those of --run) into unit_stats.png and unit_stats.json.")
    add_model_argument(p, positional=True)
    p.add_argument("--run", help="a `dvis maxes` run folder (default: the model's unit_vis/maxes)")
    p.add_argument("--corr-layers", help="comma-separated layers whose correlation matrices are drawn "
                                         "(default: up to four non-pool layers, evenly spaced)")
    p.add_argument("--out", default="dvis-unit-stats", help="folder for unit_stats.png and unit_stats.json")
    p.set_defaults(func=run)


def corr_order(s) -> np.ndarray:
    """Positions into ``s.corr_units`` grouped by each unit's majority top-image class, most
    selective first, so class-specific blocks show on the diagonal."""
    units = s.corr_units
    if s.topk_classes is None:
        return np.arange(len(units))
    top = s.topk_classes[units].argmax(1)
    sel = np.nan_to_num(s.selectivity[units], nan=-1)
    return np.lexsort((-sel, top))


def _nan(v) -> float:
    return np.nan if v is None else v


def plot(stats, summaries: list[dict], corr_layers: list[str], title: str):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4 * max(3, len(corr_layers)), 8.2))
    grid = fig.add_gridspec(2, max(3, len(corr_layers)))
    names = [d["layer"] for d in summaries]
    x = np.arange(len(names))
    ax = fig.add_subplot(grid[0, 0])
    ax.bar(x, [100 * d["dead_share"] for d in summaries], color="#c82828", label="dead (never positive)")
    ax.bar(x, [100 * d["rare_share"] for d in summaries], bottom=[100 * d["dead_share"] for d in summaries],
           color="#dc8c00", label="rare (<0.1% of images)")
    ax.set_xticks(x, names, rotation=60, fontsize=8)
    ax.set_ylabel("% of units")
    ax.set_title("dead and rare units")
    ax.legend(fontsize=8)
    ax = fig.add_subplot(grid[0, 1])
    if stats.classes:
        sel = [stats.layer(n).selectivity for n in names]
        sel = [v[np.isfinite(v)] for v in sel]
        ax.boxplot([v if len(v) else [np.nan] for v in sel], positions=x, widths=0.6, showfliers=False)
        ax.plot(x, [_nan(d.get("mean_selectivity")) for d in summaries], "o-", color="#ffaa28", label="mean")
        ax.set_xticks(x, names, rotation=60, fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_title("class selectivity (Morcos 2018)")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no class labels", ha="center")
    ax = fig.add_subplot(grid[0, 2])
    ax.plot(x, [_nan(d["mean_abs_corr"]) for d in summaries], "o-", label="mean |r|")
    ax.plot(x, [_nan(d["share_abs_corr_over_0.5"]) for d in summaries], "s-", label="share |r| > 0.5")
    ax.set_xticks(x, names, rotation=60, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title("correlation of per-image scores")
    ax.legend(fontsize=8)
    for i, layer in enumerate(corr_layers):
        s = stats.layer(layer)
        order = corr_order(s)
        ax = fig.add_subplot(grid[1, i])
        im = ax.imshow(s.corr[np.ix_(order, order)], cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"{layer}: r, units by top class", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if corr_layers:
        fig.colorbar(im, ax=fig.axes[-1], fraction=0.046)
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def run(args) -> int:
    from dvis.analyses.io import save_figure, write_json
    from dvis.formats.stats import UnitStats, find_stats, layer_summary

    if args.run:
        stats = UnitStats(args.run)
        name = Path(args.run).name
    else:
        from dvis.models.loading import load_model

        model = load_model(args.model)
        stats = find_stats(model)
        if stats is None:
            raise DvisError(f"model {model.name} has no unit statistics; `dvis maxes` (or `dvis precompute`) "
                            "computes them, or give --run")
        name = model.name
    summaries = [layer_summary(stats, n) for n in stats.layers]
    if args.corr_layers:
        corr_layers = [s.strip() for s in args.corr_layers.split(",") if s.strip()]
        unknown = [n for n in corr_layers if n not in stats.layers]
        if unknown:
            raise DvisError(f"no statistics for {', '.join(unknown)}; they cover {', '.join(stats.layers)}")
    else:
        cands = [n for n in stats.layers if not n.startswith("pool") and stats.shapes[n][0] > 1] or stats.layers
        corr_layers = [cands[i] for i in sorted(set(np.linspace(0, len(cands) - 1, min(4, len(cands))).round().astype(int)))]
    out = Path(args.out)
    fig = plot(stats, summaries, corr_layers, f"{name}: unit statistics over {stats.meta['n_images']} images")
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
