"""Unit statistics: the one reader, writer, completeness check and merge of what the maxes pass
gathers about every unit besides its top-k images.

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
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dvis.formats.atomic import atomic_write_text, read_format_json
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
#: Map elements :meth:`StatsState.map_summaries` reads at a time (4 MB of float32: fits in cache).
MAP_CHUNK = 1 << 20
#: Images whose per-image numbers a layer keeps before adding them up, and the memory all layers'
#: buffers may take (layers with many units keep fewer images; a batch that does not fit is added at once).
BUFFER_ROWS, BUFFER_BYTES = 512, 64 << 20
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


def score_bins(scores: torch.Tensor, offset: torch.Tensor | int = 0) -> torch.Tensor:
    """Histogram bin (0..N_BINS-1) of each float32 score plus ``offset`` (same shape, int32), from
    its bit pattern: no search, exact at every edge. All in int32 and in place (a few passes over
    the batch instead of a dozen int64 ones: 3.5 -> 0.24 ms for 64 x 4096 scores on 2 cores)."""
    raw = scores.contiguous().view(torch.int32)
    mag = raw & 0x7FFFFFFF  # the bits of |score|
    # 1 + the edges at or below |score| (clamped to the under/overflow bins) ...
    out = (mag >> (23 - OCTAVE_BITS)).sub_(((127 + MIN_EXP) << OCTAVE_BITS) - 1).clamp_(0, len(EDGES)).add_(1)
    torch.minimum(out, mag, out=out)  # ... and 0 for an exact zero (any other |score| has bits >= 1 >= out, or out == 1)
    out.mul_((raw >> 31).bitwise_or_(1))  # the sign: -1 or 1
    return out.add_(CENTER + offset)


# ---------------------------------------------------------------------------------------------
# Accumulating


class StatsState:
    """Running statistics of several layers (torch tensors on the tracking device).

    ``shapes``: per layer ``(C,)`` or ``(C, H, W)``; ``n_classes``: 0 without labels.

    Each layer's per-image numbers (scores, and positive counts and sums of maps) are kept for up
    to :data:`BUFFER_ROWS` images (within :data:`BUFFER_BYTES` for all layers) and added to the
    accumulators together: about 30 tensor operations per layer then serve several batches
    instead of one (AlexNet on 2 cores: 18.1 -> 9.6 ms per 64 images). :meth:`to_arrays` adds
    what is pending first."""

    def __init__(self, shapes: dict[str, tuple[int, ...]], n_classes: int = 0, device: torch.device | str = "cpu"):
        self.shapes = {n: tuple(s) for n, s in shapes.items()}
        self.n_classes = n_classes
        self.device = torch.device(device)
        self.acc: dict[str, torch.Tensor] = {}
        # Bytes per buffered image: float32 scores (+ counts and sums for maps) and a class index.
        row = sum(4 * s[0] * (3 if len(s) == 3 else 1) + 8 for s in self.shapes.values())
        self.buffer_rows = min(BUFFER_ROWS, BUFFER_BYTES // max(1, row))
        self._buffers: dict[str, dict[str, torch.Tensor]] = {}
        self._filled = dict.fromkeys(self.shapes, 0)
        f64, i64 = dict(dtype=torch.float64, device=device), dict(dtype=torch.int64, device=device)
        self.corr_index: dict[str, torch.Tensor | None] = {}
        for n, s in self.shapes.items():
            u, cu = s[0], corr_units(s[0])
            self.corr_index[n] = None if len(cu) == u else torch.as_tensor(cu, device=device)
            self.acc.update({
                f"{n}:n": torch.zeros(1, **i64), f"{n}:sum": torch.zeros(u, **f64), f"{n}:sumsq": torch.zeros(u, **f64),
                f"{n}:min": torch.full((u,), torch.inf, **f64), f"{n}:max": torch.full((u,), -torch.inf, **f64),
                f"{n}:pos_images": torch.zeros(u, **i64), f"{n}:pos_positions": torch.zeros(u, **i64),
                f"{n}:map_sum": torch.zeros(u, **f64), f"{n}:hist": torch.zeros(u, N_BINS, **i64),
                f"{n}:class_sum": torch.zeros(n_classes, u, **f64), f"{n}:class_n": torch.zeros(n_classes, **i64),
                f"{n}:corr_sum": torch.zeros(len(cu), len(cu), **f64)})

    def map_summaries(self, maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per image and unit of a B x units x H x W map: (spatial max, positive positions, spatial
        sum), the last two float32. Computed a few MB of maps at a time, so the 0/1 buffer and the
        second read stay in cache: 2-2.5x faster than three whole-batch passes, same numbers."""
        out = maps.new_empty(maps.shape[:2])
        counts = torch.empty(maps.shape[:2], dtype=torch.float32, device=maps.device)
        sums = torch.empty(maps.shape[:2], dtype=torch.float32, device=maps.device)
        step = max(1, MAP_CHUNK // max(1, maps[0].numel()))
        for i in range(0, len(maps), step):
            part = maps[i:i + step]
            torch.amax(part.flatten(2), 2, out=out[i:i + step])
            # A float 0/1 map in a reused buffer: summing floats is several times faster than
            # summing a bool tensor, and counts per image (<= H*W) are exact in float32.
            torch.sum(torch.gt(part, 0, out=self._scratch(part)), (2, 3), out=counts[i:i + step])
            torch.sum(part, (2, 3), dtype=torch.float32, out=sums[i:i + step])  # float32 also for half maps
        return out, counts, sums

    def update(self, layer: str, scores: torch.Tensor, valid: torch.Tensor, maps: torch.Tensor | None = None,
               labels: torch.Tensor | None = None,
               summaries: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None) -> None:
        """Add a batch: ``scores`` B x units, ``valid`` (B,) bool (images to count), ``maps`` the
        B x units x H x W output of a map layer, ``labels`` (B,) class indices (``-1`` unknown);
        ``summaries`` is :meth:`map_summaries` of ``maps`` when the caller has it already. The
        numbers are copied (``scores`` may be a layer output that an in-place op changes next)."""
        counts = sums = None
        if maps is not None:
            _, counts, sums = summaries if summaries is not None else self.map_summaries(maps)
        if self.n_classes and labels is None:
            labels = torch.full((len(scores),), -1, dtype=torch.int64, device=scores.device)
        if not bool(valid.all()):
            scores, labels = scores[valid], labels[valid] if labels is not None else None
            counts, sums = (counts[valid], sums[valid]) if counts is not None else (None, None)
        n = len(scores)
        if not n:
            return
        if n > self.buffer_rows:  # more than the buffer holds: straight in
            self._accumulate(layer, scores.float(), counts, sums, labels if self.n_classes else None)
            return
        if self._filled[layer] + n > self.buffer_rows:
            self._flush(layer)
        buf, at = self._buffer(layer), self._filled[layer]
        buf["scores"][at:at + n] = scores
        if counts is not None:
            buf["counts"][at:at + n] = counts
            buf["sums"][at:at + n] = sums
        if self.n_classes:
            buf["labels"][at:at + n] = labels
        self._filled[layer] = at + n

    def _buffer(self, layer: str) -> dict[str, torch.Tensor]:
        if layer not in self._buffers:
            u, r = self.shapes[layer][0], self.buffer_rows
            f32 = dict(dtype=torch.float32, device=self.device)
            buf = {"scores": torch.empty(r, u, **f32)}
            if len(self.shapes[layer]) == 3:
                buf.update(counts=torch.empty(r, u, **f32), sums=torch.empty(r, u, **f32))
            if self.n_classes:
                buf["labels"] = torch.empty(r, dtype=torch.int64, device=self.device)
            self._buffers[layer] = buf
        return self._buffers[layer]

    def _flush(self, layer: str) -> None:
        n = self._filled[layer]
        if n:
            buf = {k: v[:n] for k, v in self._buffers[layer].items()}
            self._accumulate(layer, buf["scores"], buf.get("counts"), buf.get("sums"), buf.get("labels"))
            self._filled[layer] = 0

    def flush(self) -> None:
        """Add every layer's pending images to the accumulators."""
        for layer in self.shapes:
            self._flush(layer)

    def _accumulate(self, layer: str, s: torch.Tensor, counts: torch.Tensor | None, sums: torch.Tensor | None,
                    labels: torch.Tensor | None) -> None:
        """Add n images' float32 scores (n x units), positive counts and sums of maps (or None),
        and class indices (or None) to the accumulators."""
        a, p = self.acc, layer + ":"
        if bool(s.sum().isnan()) and bool(torch.isnan(s).any()):  # the cheap test first
            s = torch.nan_to_num(s, nan=0.0)
        d = s.double()
        u = d.shape[1]
        a[p + "n"] += len(d)
        total = d.sum(0)
        a[p + "sum"] += total
        a[p + "sumsq"] += (d * d).sum(0)
        torch.minimum(a[p + "min"], d.amin(0), out=a[p + "min"])
        torch.maximum(a[p + "max"], d.amax(0), out=a[p + "max"])
        positive = (s > 0).sum(0)
        a[p + "pos_images"] += positive
        if counts is not None:
            shape = self.shapes[layer]
            a[p + "pos_positions"] += counts.double().sum(0).long()
            a[p + "map_sum"] += (sums.double() / (shape[1] * shape[2])).sum(0)
        else:
            a[p + "pos_positions"] += positive
            a[p + "map_sum"] += total
        flat = score_bins(s, self._hist_offset(u, s.device)).view(-1)
        # index_add_ of ones: ~4x faster on the CPU than index_put_(accumulate=True), and exact (integers).
        a[p + "hist"].view(-1).index_add_(0, flat, self._ones(len(flat), s.device))
        if self.n_classes and labels is not None:
            known = labels >= 0
            lab = labels[known]
            a[p + "class_sum"].index_add_(0, lab, d[known].clamp_(min=0))
            a[p + "class_n"] += torch.bincount(lab, minlength=self.n_classes)
        ci = self.corr_index[layer]
        sub = d if ci is None else d[:, ci]
        a[p + "corr_sum"].addmm_(sub.t(), sub)

    def _hist_offset(self, u: int, device) -> torch.Tensor:
        """Each unit's first bin in a flattened units x N_BINS histogram (int32, cached per size)."""
        cache = self.__dict__.setdefault("_offsets", {})
        key = (u, str(device))
        if key not in cache:
            cache[key] = (N_BINS * torch.arange(u, device=device)).int()
        return cache[key]

    def _ones(self, n: int, device) -> torch.Tensor:
        """n int64 ones (a shared buffer, grown as needed)."""
        buf = getattr(self, "_ones_buf", None)
        if buf is None or len(buf) < n or buf.device != torch.device(device):
            buf = self._ones_buf = torch.ones(n, dtype=torch.int64, device=device)
        return buf[:n]

    def _scratch(self, like: torch.Tensor) -> torch.Tensor:
        """A float32 buffer shaped like ``like`` (one flat allocation shared by all layers, grown as
        needed; float32 so that counts stay exact for half-precision maps too)."""
        buf = getattr(self, "_buf", None)
        if buf is None or buf.numel() < like.numel() or buf.device != like.device:
            buf = self._buf = torch.empty(like.numel(), dtype=torch.float32, device=like.device)
        return buf[:like.numel()].view(like.shape)

    def to_arrays(self, pending: bool = False) -> dict[str, np.ndarray]:
        """The accumulators, with the pending images added; with ``pending`` (a checkpoint) they
        are left pending and saved as well (``<layer>:pending_<name>``), so that a resumed run adds
        the same images together as an uninterrupted one and gets the same sums bit for bit."""
        if not pending:
            self.flush()
        out = {k: v.cpu().numpy() for k, v in self.acc.items()}
        if pending:
            for layer, n in self._filled.items():
                if n:
                    out.update({f"{layer}:pending_{name}": v[:n].cpu().numpy() for name, v in self._buffers[layer].items()})
        return out

    def load_arrays(self, arrays) -> None:
        """Restore what :meth:`to_arrays` saved (a checkpoint), pending images included."""
        self._filled = dict.fromkeys(self.shapes, 0)
        for layer in self.shapes:
            if f"{layer}:pending_scores" in arrays:
                n = len(arrays[f"{layer}:pending_scores"])
                for name, v in self._buffer(layer).items():
                    v[:n] = torch.from_numpy(np.array(arrays[f"{layer}:pending_{name}"]))
                self._filled[layer] = n
        for k in self.acc:
            self.acc[k] = torch.from_numpy(np.array(arrays[k])).to(self.acc[k].device)


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
# Class labels of images


def image_labels(class_names: list[str | None] | None, known: list[str] = ()) -> tuple[list[str], np.ndarray | None]:
    """(classes, per-image class index) from per-image class names (None: unknown).

    Classes follow ``known`` (a model's labels, so that class i is output unit i) when every name
    is one of them, else natural order of the names. ``([], None)`` without labels."""
    from dvis.imaging.images import natural_key

    if not class_names:
        return [], None
    names = sorted({c for c in class_names if c is not None}, key=natural_key)
    if not names:
        return [], None
    classes = list(known) if known and set(names) <= set(known) else names
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, np.array([lookup[c] if c is not None else -1 for c in class_names], dtype=np.int16)


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
    tmp = run / f".{ARRAYS}.tmp{os.getpid()}"
    try:  # compressed (histograms are mostly zeros), written atomically like dvis.formats.atomic.atomic_savez
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, run / ARRAYS)
    finally:
        tmp.unlink(missing_ok=True)
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
        try:
            with np.load(self.root / ARRAYS, allow_pickle=False) as z:
                self.arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise DvisError(f"{self.root / ARRAYS}: unreadable unit statistics ({exc})") from None
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


def source_labels(source, labels_file: str | Path | None = None, known: list[str] = ()
                  ) -> tuple[list[str], np.ndarray | None]:
    """(classes, per-image class index) of an ImageSource: from ``labels_file`` (lines
    ``<image name> <class>``, names as the source lists them; images not listed are unknown), else
    from class folders (each image's parent folder, when the images lie in two or more folders).
    Classes follow ``known`` (the model's labels) when they name every class."""
    if labels_file is not None:
        table = {}
        try:
            lines = Path(labels_file).read_text().splitlines()
        except OSError as exc:
            raise DvisError(f"cannot read labels file {labels_file}: {exc}") from None
        for i, line in enumerate(lines):
            if line.strip():
                parts = line.rsplit(None, 1)
                if len(parts) != 2:
                    raise DvisError(f"{labels_file}:{i + 1}: expected '<image name> <class>', got {line!r}")
                table[parts[0]] = parts[1]
        names = [table.get(s) for s in source.names]
        if not any(c is not None for c in names):
            raise DvisError(f"{labels_file} names none of the {len(source.names)} images of {source.spec}")
        return image_labels(names, known)
    folders = [os.path.basename(os.path.dirname(s)) or None for s in source.names]
    if len(set(folders) - {None}) < 2:
        return [], None
    return image_labels(folders, known)


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
