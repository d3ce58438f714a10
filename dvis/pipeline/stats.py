"""Running unit statistics of the maxes pass: :class:`StatsState` accumulates, on the tracking
device, what :mod:`dvis.formats.stats` defines, writes, merges and reads (its module docstring
lists the numbers); :func:`score_bins` puts scores in the format's histogram bins."""
from __future__ import annotations

import numpy as np
import torch

from dvis.formats.stats import CENTER, EDGES, MIN_EXP, N_BINS, OCTAVE_BITS, corr_units

#: Map elements :meth:`StatsState.map_summaries` reads at a time (4 MB of float32: fits in cache).
MAP_CHUNK = 1 << 20
#: Images whose per-image numbers a layer keeps before adding them up, and the memory all layers'
#: buffers may take (layers with many units keep fewer images; a batch that does not fit is added at once).
BUFFER_ROWS, BUFFER_BYTES = 512, 64 << 20


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
