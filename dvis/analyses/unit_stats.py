"""The unit-statistics figure of ``dvis unit-stats``: dead and rare units, class selectivity and
correlation matrices per layer (from :mod:`dvis.formats.stats`)."""
from __future__ import annotations

import numpy as np

from dvis.errors import DvisError


def pick_corr_layers(stats, names: list[str] | None = None) -> list[str]:
    """The layers whose correlation matrices are drawn: ``names`` (checked), else up to four
    non-pool layers with more than one unit, evenly spaced."""
    if names:
        unknown = [n for n in names if n not in stats.layers]
        if unknown:
            raise DvisError(f"no statistics for {', '.join(unknown)}; they cover {', '.join(stats.layers)}")
        return list(names)
    cands = [n for n in stats.layers if not n.startswith("pool") and stats.shapes[n][0] > 1] or stats.layers
    return [cands[i] for i in sorted(set(np.linspace(0, len(cands) - 1, min(4, len(cands))).round().astype(int)))]


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


def plot_unit_stats(stats, summaries: list[dict], corr_layers: list[str], title: str):
    """The figure: dead/rare shares, selectivity and correlation per layer (``summaries`` from
    :func:`dvis.formats.stats.layer_summary`), then the correlation matrix of each of ``corr_layers``."""
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
