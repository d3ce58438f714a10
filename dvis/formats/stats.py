"""Unit statistics on disk (format ``dvis-unit-stats``): the one writer, completeness check, exact
merge and reader of what the maxes pass gathers about every unit besides its top-k images (gathered
by :class:`dvis.pipeline.stats.StatsState`).

Gathered per unit over all readable images, from each image's *score* (the spatial max of a
map unit, the value of a vector unit; the same number the top-k ranks by):

- count, sum and sum of squares of the score (mean, std), its min and max;
- images where the unit is positive anywhere, positions where it is positive (maps), and the sum
  of per-image spatial means (mean over positions);
- a histogram of the score on a fixed grid shared by every layer and model (:data:`EDGES`),
  read off the float32 bit pattern: 4 bins per octave of ``|score|`` from 2**-14 to 2**14 on each
  side of an exact-zero bin, plus an underflow and an overflow bin per side (229 bins). The grid
  does not depend on the data, so shard histograms add up exactly;
- with class labels: per class the sum of the rectified score ``max(score, 0)`` and the image
  count (class means, Morcos et al. 2018 selectivity), and at the end the class counts of the
  unit's top-k images;
- sums of products of the scores of the layer's units (Pearson correlations across images):
  all units up to :data:`CORR_MAX_UNITS`, else the fixed subsample :func:`corr_units`;
- optionally the bottom-k (least-activating) images, kept by the tracker.

Everything but bottom-k and min/max is a sum, accumulated in float64 on the tensor side, so
shards, torchrun ranks and resumed runs merge to the one-process result up to float rounding.

On disk, next to the maxes of a run folder (format ``dvis-unit-stats`` version 1, no pickle):

- ``stats.npz``: the accumulators under ``<layer>:<name>`` keys (:data:`SUMS`, ``min``, ``max``,
  ``topk_classes`` (units x classes), ``corr_units``, and ``bottom_values``/``bottom_index``/
  ``bottom_pos`` (ascending) with bottom-k), plus ``@labels`` (one class index per image, ``-1``
  unknown) when classes are known;
- ``stats.json``: format, version, the maxes fingerprint, layers, shapes, classes, bottom k, the
  histogram grid, the rare threshold. Written last: a readable stats.json means complete.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dvis.formats.atomic import atomic_savez, atomic_write_text, read_format_json, read_npz
from dvis.errors import DvisError

FORMAT = "dvis-unit-stats"
VERSION = 1
ARRAYS = "stats.npz"
META = "stats.json"

#: Histogram grid, read off the float32 bit pattern (exact, and the same on every machine): each
#: octave of |score| from 2**MIN_EXP to 2**MAX_EXP is cut by its top OCTAVE_BITS mantissa bits
#: into 2**OCTAVE_BITS bins (edges 1, 1.25, 1.5, 1.75, 2, 2.5, ... times a power of two).
MIN_EXP, MAX_EXP, OCTAVE_BITS = -14, 14, 2
#: Positive magnitude edges (exact float32 values), ascending.
EDGES = np.array([2.0 ** e * (1 + m / 2 ** OCTAVE_BITS) for e in range(MIN_EXP, MAX_EXP)
                  for m in range(2 ** OCTAVE_BITS)] + [2.0 ** MAX_EXP])
CENTER = len(EDGES) + 1  # the exact-zero bin
N_BINS = 2 * CENTER + 1
#: A unit positive on fewer than this fraction of images (and not dead) is rare.
RARE_FRACTION = 1e-3
#: Layers with more units get correlations on an evenly spaced subsample of this many.
CORR_MAX_UNITS = 1024
#: Accumulators merged by addition (the rest: ``min``, ``max`` elementwise).
SUMS = ("n", "sum", "sumsq", "pos_images", "pos_positions", "map_sum", "hist", "class_sum", "class_n", "corr_sum")
#: Command that computes statistics, for messages where they are missing.
HOW_TO = "`dvis maxes` (or `dvis precompute`) computes unit statistics"


def bin_edges() -> np.ndarray:
    """(low, high) of every bin on the real line (N_BINS x 2): positive bins [low, high), negative
    bins (low, high] (magnitudes binned alike), the zero bin [0, 0]."""
    lo = np.concatenate([[0.0], EDGES])
    hi = np.concatenate([EDGES, [np.inf]])
    pos = np.stack([lo, hi], 1)
    return np.concatenate([-pos[::-1, ::-1], [[0.0, 0.0]], pos])


def bin_centers() -> np.ndarray:
    """A representative value per bin (the middle; the open ends get their finite edge)."""
    e = bin_edges()
    return np.where(np.isfinite(e).all(1), e.mean(1), np.where(np.isfinite(e[:, 0]), e[:, 0], e[:, 1]))


def corr_units(n_units: int) -> np.ndarray:
    """Units whose correlations are kept: all, or CORR_MAX_UNITS evenly spaced ones (first and last
    included), the same for every run of a layer of this size."""
    if n_units <= CORR_MAX_UNITS:
        return np.arange(n_units)
    return np.unique(np.linspace(0, n_units - 1, CORR_MAX_UNITS).round().astype(np.int64))


# ---------------------------------------------------------------------------------------------
# Merging shares


def merge_arrays(parts: list[dict[str, np.ndarray]], layers: list[str]) -> dict[str, np.ndarray]:
    """Accumulators of several shares of the images -> those of all of them (order-free up to rounding)."""
    out = {}
    for n in layers:
        for name in SUMS:
            out[f"{n}:{name}"] = np.sum([p[f"{n}:{name}"] for p in parts], axis=0)
        out[f"{n}:min"] = np.min([p[f"{n}:min"] for p in parts], axis=0)
        out[f"{n}:max"] = np.max([p[f"{n}:max"] for p in parts], axis=0)
    return out


def merge_bottom(parts: list[dict[str, np.ndarray]], layers: list[str], k: int) -> dict[str, np.ndarray]:
    """Bottom-k of several shares: value ascending, then image index ascending (as the tracker)."""
    out = {}
    for n in layers:
        v = np.concatenate([p[f"{n}:bottom_values"] for p in parts], 1)
        i = np.concatenate([p[f"{n}:bottom_index"] for p in parts], 1)
        pos = np.concatenate([p[f"{n}:bottom_pos"] for p in parts], 1)
        empty = i < 0
        order = np.lexsort((np.where(empty, np.iinfo(np.int64).max, i), np.where(empty, np.inf, v)), axis=1)[:, :k]
        out[f"{n}:bottom_values"] = np.take_along_axis(v, order, 1)
        out[f"{n}:bottom_index"] = np.take_along_axis(i, order, 1)
        out[f"{n}:bottom_pos"] = np.take_along_axis(pos, order[..., None], 1)
    return out


@dataclass
class StatsArrays:
    """What a run (or a share of it) gathered besides the top-k: accumulators (and bottom-k) under
    ``<layer>:<name>`` keys, the class names and one class index per image (``-1`` unknown)."""

    arrays: dict[str, np.ndarray]
    classes: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None
    bottom_k: int = 0

    PREFIX = "stats/"

    def to_npz(self) -> dict[str, np.ndarray]:
        """Arrays for embedding in a checkpoint or shard .npz (keys prefixed ``stats/``)."""
        meta = json.dumps({"classes": self.classes, "bottom_k": self.bottom_k})
        out = {self.PREFIX + k: v for k, v in self.arrays.items()}
        out[self.PREFIX + "@meta"] = np.array(meta)
        if self.labels is not None:
            out[self.PREFIX + "@labels"] = self.labels
        return out

    @classmethod
    def from_npz(cls, arrays) -> "StatsArrays | None":
        """Inverse of :meth:`to_npz`; None when the .npz has no statistics."""
        keys = [k for k in arrays.keys() if k.startswith(cls.PREFIX)] if hasattr(arrays, "keys") else []
        if cls.PREFIX + "@meta" not in keys:
            return None
        meta = json.loads(str(arrays[cls.PREFIX + "@meta"]))
        labels = np.asarray(arrays[cls.PREFIX + "@labels"]) if cls.PREFIX + "@labels" in keys else None
        body = {k[len(cls.PREFIX):]: np.asarray(arrays[k]) for k in keys if not k[len(cls.PREFIX):].startswith("@")}
        return cls(body, meta["classes"], labels, meta["bottom_k"])


def merge_stats(parts: list[StatsArrays | None], layers: list[str]) -> StatsArrays | None:
    """The statistics of all shares (None, with a warning when some have them, if any share has none)."""
    missing = [i for i, p in enumerate(parts) if p is None]
    if missing and len(missing) < len(parts):
        warnings.warn(f"shares {missing} of {len(parts)} have no unit statistics (run with --no-stats): "
                      "the merged run has none; rerun those shares with statistics to keep them", stacklevel=2)
    if not parts or missing:
        return None
    first = parts[0]
    if any(p.classes != first.classes or p.bottom_k != first.bottom_k for p in parts):
        raise DvisError("cannot merge unit statistics gathered with different classes or bottom k")
    arrays = merge_arrays([p.arrays for p in parts], layers)
    if first.bottom_k:
        arrays.update(merge_bottom([p.arrays for p in parts], layers, first.bottom_k))
    return StatsArrays(arrays, list(first.classes), first.labels, first.bottom_k)


# ---------------------------------------------------------------------------------------------
# Files


def save_stats(run_dir: str | Path, stats: StatsArrays, index: dict[str, np.ndarray], layers: list[str],
               shapes: dict[str, tuple[int, ...]], n_images: int, maxes_fingerprint: str | None) -> None:
    """Write ``stats.npz`` and then ``stats.json``; ``index`` is each layer's top-k image indices
    (units x k, ``-1`` empty), whose class counts are stored with the statistics."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / META).unlink(missing_ok=True)
    arrays = dict(stats.arrays)
    for n in layers:
        arrays[f"{n}:corr_units"] = corr_units(shapes[n][0])
        if stats.labels is not None:
            arrays[f"{n}:topk_classes"] = topk_class_counts(index[n], stats.labels, len(stats.classes))
    if stats.labels is not None:
        arrays["@labels"] = stats.labels
    atomic_savez(run / ARRAYS, compressed=True, **arrays)  # compressed: histograms are mostly zeros
    meta = dict(format=FORMAT, version=VERSION, maxes_fingerprint=maxes_fingerprint, layers=list(layers),
                shapes={n: list(shapes[n]) for n in layers}, n_images=n_images, classes=stats.classes,
                bottom_k=stats.bottom_k, rare_fraction=RARE_FRACTION, corr_max_units=CORR_MAX_UNITS,
                histogram={"grid": f"float32 bits: {2 ** OCTAVE_BITS} bins per octave of |score| from "
                                   f"2**{MIN_EXP} to 2**{MAX_EXP}, under/overflow and exact-zero bins",
                           "bins": N_BINS, "edges": EDGES.tolist(),
                           "of": "per-image score (spatial max for maps)"})
    atomic_write_text(run / META, json.dumps(meta, indent=1))


def topk_class_counts(index: np.ndarray, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Per unit, how many of its top-k images are of each class (units x classes int64)."""
    lab = np.where(index >= 0, labels[np.clip(index, 0, None)], -1).astype(np.int64)
    units = np.repeat(np.arange(len(index)), index.shape[1])
    counts = np.zeros((len(index), n_classes), np.int64)
    ok = lab.ravel() >= 0
    np.add.at(counts, (units[ok], lab.ravel()[ok]), 1)
    return counts


def stats_complete(run_dir: str | Path, maxes_fingerprint: str, classes: list[str] | None = None,
                   bottom_k: int | None = None) -> bool:
    """Whether ``run_dir`` holds statistics of the maxes computation ``maxes_fingerprint`` (with
    these classes and bottom k, when given)."""
    try:
        meta = _read_meta(Path(run_dir))
    except DvisError:
        return False
    return (meta.get("maxes_fingerprint") == maxes_fingerprint and (classes is None or meta["classes"] == classes)
            and (bottom_k is None or meta["bottom_k"] == bottom_k) and (Path(run_dir) / ARRAYS).is_file())


def _read_meta(run: Path) -> dict:
    path = run / META
    meta = read_format_json(path, FORMAT, VERSION, f"{run} has no unit statistics ({META}); {HOW_TO}")
    if meta.get("histogram", {}).get("bins") != N_BINS:
        raise DvisError(f"{path}: histograms on another grid than this dvis's {N_BINS} bins; {HOW_TO} again")
    return meta


# ---------------------------------------------------------------------------------------------
# Reading: derived statistics


@dataclass
class LayerStats:
    """One layer's derived statistics (numpy, one entry per unit unless noted)."""

    n: int
    mean: np.ndarray
    std: np.ndarray
    min: np.ndarray
    max: np.ndarray
    frac_images: np.ndarray       # fraction of images where the unit is positive somewhere
    frac_positions: np.ndarray    # fraction of (image, position) pairs where it is positive
    mean_map: np.ndarray          # mean over images and positions
    dead: np.ndarray              # bool: never positive
    rare: np.ndarray              # bool: positive on fewer than RARE_FRACTION of images, not dead
    hist: np.ndarray              # units x N_BINS counts of the per-image score
    class_mean: np.ndarray | None  # units x classes mean rectified score
    selectivity: np.ndarray | None  # Morcos class-selectivity index in [0, 1] (NaN: never positive)
    topk_classes: np.ndarray | None  # units x classes counts among the top-k images
    corr_units: np.ndarray        # units the correlation matrix covers
    corr: np.ndarray              # len(corr_units) x len(corr_units) Pearson correlation (NaN: constant unit)
    bottom_values: np.ndarray | None = None
    bottom_index: np.ndarray | None = None
    bottom_pos: np.ndarray | None = None

    def most_correlated(self, unit: int, k: int = 8) -> list[tuple[int, float]]:
        """The ``k`` other units most correlated with ``unit`` (highest correlation first); [] when
        ``unit`` is outside the correlation subsample."""
        where = np.nonzero(self.corr_units == unit)[0]
        if not len(where):
            return []
        row = self.corr[where[0]].copy()
        row[where[0]] = np.nan
        order = np.argsort(-np.where(np.isfinite(row), row, -np.inf), kind="stable")[:k]
        order = order[np.isfinite(row[order])]
        return [(int(u), float(r)) for u, r in zip(self.corr_units[order], row[order])]

    def corr_with(self, unit: int) -> np.ndarray | None:
        """Correlation of every unit of the layer with ``unit`` (NaN outside the subsample), or None."""
        where = np.nonzero(self.corr_units == unit)[0]
        if not len(where):
            return None
        out = np.full(len(self.mean), np.nan)
        out[self.corr_units] = self.corr[where[0]]
        return out

    def top_classes(self, unit: int, k: int = 3) -> list[tuple[int, float]]:
        """(class index, share of the unit's top-k images) for its ``k`` most frequent classes."""
        if self.topk_classes is None:
            return []
        counts = self.topk_classes[unit]
        total = counts.sum()
        order = np.argsort(-counts, kind="stable")[:k]
        return [(int(c), float(counts[c] / total)) for c in order if counts[c] > 0]


def selectivity_index(class_mean: np.ndarray) -> np.ndarray:
    """Morcos et al. (2018): (mu_max - mu_rest) / (mu_max + mu_rest) per row of units x classes
    non-negative class means; NaN where both are 0."""
    best = class_mean.max(1)
    rest = (class_mean.sum(1) - best) / max(class_mean.shape[1] - 1, 1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(best + rest > 0, (best - rest) / (best + rest), np.nan)


def derive(arrays, layer: str, shape: tuple[int, ...], has_classes: bool) -> LayerStats:
    """Derived statistics of ``layer`` from its accumulators (a stats.npz or merged arrays)."""
    g = lambda name: np.asarray(arrays[f"{layer}:{name}"])  # noqa: E731
    n = int(g("n")[0])
    positions = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = g("sum") / n
        std = np.sqrt(np.maximum(g("sumsq") / n - mean ** 2, 0))
        cu = corr_units(shape[0])
        cmean = mean[cu]
        cov = g("corr_sum") / n - np.outer(cmean, cmean)
        sd = np.sqrt(np.maximum(np.diag(cov), 0))
        corr = np.clip(cov / np.outer(sd, sd), -1, 1)
        corr[:, sd == 0] = np.nan
        corr[sd == 0, :] = np.nan
        class_mean = selectivity = None
        if has_classes:
            class_mean = (g("class_sum") / np.maximum(g("class_n"), 1)[:, None]).T
            selectivity = selectivity_index(class_mean)
    frac = g("pos_images") / max(n, 1)
    dead = g("pos_images") == 0
    keys = arrays.keys() if hasattr(arrays, "keys") else arrays.files
    bottom = {k: g(k) for k in ("bottom_values", "bottom_index", "bottom_pos") if f"{layer}:{k}" in keys}
    topk = g("topk_classes") if has_classes and f"{layer}:topk_classes" in keys else None
    return LayerStats(n, mean, std, g("min"), g("max"), frac, g("pos_positions") / max(n * positions, 1),
                      g("map_sum") / max(n, 1), dead, ~dead & (frac < RARE_FRACTION), g("hist"), class_mean,
                      selectivity, topk, cu, corr, **bottom)


class UnitStats:
    """Reader of a run folder's statistics (see the module docstring)."""

    def __init__(self, run_dir: str | Path):
        self.root = Path(run_dir)
        self.meta = _read_meta(self.root)
        with read_npz(self.root / ARRAYS, "unit statistics file",
                      f"recompute them with `dvis maxes --run-dir {self.root} ... --force`") as z:
            self.arrays = {k: z[k] for k in z.files}
        self.layers: list[str] = list(self.meta["layers"])
        self.classes: list[str] = list(self.meta["classes"])
        self.shapes = {n: tuple(s) for n, s in self.meta["shapes"].items()}
        self.labels = self.arrays.get("@labels")
        self._cache: dict[str, LayerStats] = {}

    def layer(self, layer: str) -> LayerStats:
        if layer not in self.shapes:
            raise DvisError(f"no unit statistics for layer {layer}; they cover {', '.join(self.layers)}")
        if layer not in self._cache:
            self._cache[layer] = derive(self.arrays, layer, self.shapes[layer], bool(self.classes))
        return self._cache[layer]


def find_stats(model) -> UnitStats | None:
    """The statistics of a LoadedModel: those of the maxes run in its unit_vis folder (the user's
    computed folder first, then the shipped one), or None."""
    folders = list(getattr(model, "unit_vis_dirs", None) or [getattr(model, "unit_vis_dir", None)])
    for folder in folders:
        if folder is not None and (Path(folder) / "maxes" / META).is_file():
            return UnitStats(Path(folder) / "maxes")
    return None


def layer_summary(stats: UnitStats, layer: str) -> dict:
    """One layer's headline numbers: units, dead and rare counts and shares, selectivity (mean,
    median, share above 0.5, over units that are ever positive), correlations (mean |r| and share
    of |r| > 0.5 over distinct pairs of the kept units)."""
    s = stats.layer(layer)
    n = len(s.mean)
    off = ~np.eye(len(s.corr_units), dtype=bool)
    r = s.corr[off]
    r = r[np.isfinite(r)]
    out = {"layer": layer, "units": n, "dead": int(s.dead.sum()), "rare": int(s.rare.sum()),
           "dead_share": float(s.dead.mean()), "rare_share": float(s.rare.mean()),
           "mean_abs_corr": float(np.abs(r).mean()) if len(r) else None,
           "share_abs_corr_over_0.5": float((np.abs(r) > 0.5).mean()) if len(r) else None,
           "corr_units": int(len(s.corr_units))}
    if s.selectivity is not None:
        si = s.selectivity[np.isfinite(s.selectivity)]
        out.update(mean_selectivity=float(si.mean()) if len(si) else None,
                   median_selectivity=float(np.median(si)) if len(si) else None,
                   **{'share_selectivity_over_0.5': float((si > 0.5).mean()) if len(si) else None})
    return out
