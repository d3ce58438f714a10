"""Top-k max tracker: for every unit of the chosen layers, the k dataset images that excite it most.

Conv units are scored by their spatial max (with its position), fc units by their value. Ties are
broken by the lower image index, so the result does not depend on how images are split into
batches, checkpoints, processes or shards.

The run folder format (manifest, arrays, shards, merge) is owned by :mod:`dvis.formats.maxes`; the
unit statistics gathered in the same pass (and bottom-k images) are accumulated by
:mod:`dvis.pipeline.stats` and written, merged and read by :mod:`dvis.formats.stats`.
"""
from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from dvis.formats.atomic import atomic_savez, read_npz
from dvis.imaging.datasets import ImageDataset, ImageSource
from dvis.imaging.decode import load_batches
from dvis.pipeline.distributed import shard_batches
from dvis.runtime.precision import autocast
from dvis.errors import DvisError
from dvis.engine.geometry import model_geometry, to_maps
from dvis.engine.hooks import forward_hooks
from dvis.engine.layers import check_layers
from dvis.formats.maxes import (MaxResult, array_key, fingerprint, fixed_point_amplitudes, merge_topk, result_from_arrays,
                                spectrum_from_arrays, topk_order)
from dvis.formats.stats import StatsArrays
from dvis.pipeline.stats import StatsState
from dvis.optvis.fourier import amplitude_spectrum


# ---------------------------------------------------------------------------------------------
# Pure top-k bookkeeping

#: Images whose candidates the tracker collects before merging them into the top-k.
MERGE_ROWS = 512


class TopKState:
    """Running top-k of every unit of several layers (torch tensors on the tracking device).

    With ``sign=-1`` it keeps the bottom-k: values are stored negated (so the k "best" are the
    least activating) and positions are those of each map's first minimum.

    A batch's candidates (entries that beat their unit's k-th entry, with their positions) are
    picked when it arrives and merged with those of the following batches, up to
    :data:`MERGE_ROWS` images at a time, or until they number as many as the layer's units: the
    merge's two dozen tensor operations per layer then serve several batches once the top-k
    settle. The top-k of the union does not depend on the grouping, and reading ``values``,
    ``index`` or ``pos`` merges what is pending first."""

    def __init__(self, units: dict[str, int], k: int, device: torch.device | str = "cpu", sign: int = 1):
        self.k, self.sign = k, sign
        self._values = {n: torch.full((u, k), -torch.inf, device=device) for n, u in units.items()}
        self._index = {n: torch.full((u, k), -1, dtype=torch.int64, device=device) for n, u in units.items()}
        self._pos = {n: torch.zeros((u, k, 2), dtype=torch.int32, device=device) for n, u in units.items()}
        self.merge_rows = MERGE_ROWS
        # Per layer: candidate (unit, value, image, position) tensors of the batches not merged yet,
        # their image count, whether every one of them came in index order after the merged ones,
        # and the highest image index passed (stored or pending).
        self._pending: dict[str, list[tuple[torch.Tensor, ...]]] = {n: [] for n in units}
        self._pending_images = dict.fromkeys(units, 0)
        self._pending_found = dict.fromkeys(units, 0)
        self._in_order = dict.fromkeys(units, True)
        self._seen = dict.fromkeys(units, -1)

    @property
    def values(self) -> dict[str, torch.Tensor]:
        self.flush()
        return self._values

    @property
    def index(self) -> dict[str, torch.Tensor]:
        self.flush()
        return self._index

    @property
    def pos(self) -> dict[str, torch.Tensor]:
        self.flush()
        return self._pos

    def update(self, layer: str, values: torch.Tensor, index: torch.Tensor, maps: torch.Tensor | None = None) -> None:
        """Add a batch: ``values`` (B x units) per-image scores, ``index`` (B,) image indices (``-1``
        marks images to ignore), ``maps`` the conv layer's B x units x H x W output (positions).

        Only entries at least as good as their unit's current k-th entry are kept (a superset of
        those that enter, as the k-th entries only rise), and max positions are computed only for
        them: after the first batches a unit has a candidate in a few batches, so tracking costs
        little beyond the forward. The rest could not enter, so the result equals a full merge.
        """
        valid = index >= 0
        if not valid.any():
            return
        v = values.float() if self.sign == 1 else -values.float()
        first, last = int(index[valid].min()), int(index[valid].max())
        # A tie with the k-th entry only wins for a lower image index; batches in index order never have one.
        later = first > self._seen[layer]
        cand = (v > self._values[layer][:, -1]) if later else (v >= self._values[layer][:, -1])  # NaN: never
        all_valid = bool(valid.all())
        if not all_valid:
            cand &= valid[:, None]
        self._in_order[layer] &= later and all_valid and bool((index[1:] > index[:-1]).all())
        self._seen[layer] = max(self._seen[layer], last)
        b, u = cand.nonzero(as_tuple=True)  # batch-major: each unit's candidates in batch order
        if len(b):
            if maps is not None:
                sel = maps[b, u].flatten(1)
                flat = (sel if self.sign == 1 else -sel).argmax(1)  # first maximum, as the recorded value
                where = torch.stack([flat // maps.shape[3], flat % maps.shape[3]], dim=1).to(torch.int32)
            else:
                where = torch.zeros((len(b), 2), dtype=torch.int32, device=v.device)
            self._pending[layer].append((u, v[b, u], index[b], where))
        self._pending_images[layer] += len(index)
        self._pending_found[layer] += len(b)
        # Merged at once while candidates abound (the first batches: the k-th entries rise fast and
        # prune the next batches' candidates, each of which costs a map read for its position).
        if self._pending_images[layer] >= self.merge_rows or self._pending_found[layer] >= cand.shape[1]:
            self._merge_pending(layer)

    def flush(self) -> None:
        """Merge every layer's pending candidates."""
        for layer in self._pending:
            self._merge_pending(layer)

    def _merge_pending(self, layer: str) -> None:
        pending, in_order = self._pending[layer], self._in_order[layer]
        self._pending[layer], self._pending_images[layer], self._in_order[layer] = [], 0, True
        self._pending_found[layer] = 0
        if not pending:
            return
        u, v, img, where = (torch.cat(t) for t in zip(*pending)) if len(pending) > 1 else pending[0]
        # Each unit's candidates packed into the first columns of a units x C block, in arrival
        # order (C: the most any unit has), padded like the state (-inf, image -1): the merge then
        # sorts k + C columns.
        o = torch.argsort(u, stable=True)
        u, v, img, where = u[o], v[o], img[o], where[o]
        rows, counts = torch.unique_consecutive(u, return_counts=True)
        r = torch.repeat_interleave(torch.arange(len(rows), device=u.device), counts)
        slot = torch.arange(len(u), device=u.device) - (counts.cumsum(0) - counts)[r]
        width = int(counts.max())
        new_v = v.new_full((len(rows), width), -torch.inf)
        new_v[r, slot] = v
        new_i = img.new_full((len(rows), width), -1)
        new_i[r, slot] = img
        new_p = where.new_zeros((len(rows), width, 2))
        new_p[r, slot] = where
        k = self.k
        values = torch.cat([self._values[layer][rows], new_v], 1)
        images = torch.cat([self._index[layer][rows], new_i], 1)
        order = topk_order(values, images, k, index_ordered=in_order)
        self._values[layer][rows] = values.gather(1, order)
        self._index[layer][rows] = images.gather(1, order)
        self._pos[layer][rows] = torch.cat([self._pos[layer][rows], new_p], 1).gather(1, order[..., None].expand(-1, -1, 2))

    def merge(self, other: "TopKState") -> None:
        other.flush()
        for n in self.values:
            self._values[n], self._index[n], self._pos[n] = merge_topk(
                torch.cat([self.values[n], other.values[n].to(self.values[n].device)], 1),
                torch.cat([self.index[n], other.index[n].to(self.index[n].device)], 1),
                torch.cat([self.pos[n], other.pos[n].to(self.pos[n].device)], 1), self.k)
            self._seen[n] = max(self._seen[n], other._seen[n])  # later batches' tie rule sees the merged images

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for n in self.values:
            for name in ("values", "index", "pos"):
                out[array_key(n, name)] = getattr(self, name)[n].cpu().numpy()
        return out

    @classmethod
    def from_arrays(cls, arrays, layers: list[str], k: int, device="cpu") -> "TopKState":
        state = cls({n: arrays[array_key(n, "values")].shape[0] for n in layers}, k, device)
        for n in layers:
            for name in ("values", "index", "pos"):
                getattr(state, name)[n] = torch.from_numpy(np.array(arrays[array_key(n, name)])).to(device)
            state._seen[n] = int(state._index[n].max())
        return state


# ---------------------------------------------------------------------------------------------
# Capturing per-image maxima during the forward pass


@contextmanager
def max_hooks(net: nn.Module, state: TopKState, layers: list[str], stats: StatsState | None = None,
              bottom: TopKState | None = None, geometry: dict | None = None) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks merging each layer's output into ``state`` (and ``stats``, ``bottom``) at
    capture time (before any in-place ReLU that follows), so no feature map is kept or cloned.
    Yields a dict whose ``"index"`` (B image indices, ``-1`` to ignore) and, with statistics,
    ``"labels"`` (B class indices, ``-1`` unknown, or None) the caller sets before each forward.
    With ``geometry`` (:func:`dvis.engine.geometry.model_geometry`), channels-last and token layers are
    tracked as N x C x H x W maps (class tokens left out)."""
    batch: dict[str, torch.Tensor] = {}

    def make(name: str):
        geom = geometry.get(name) if geometry else None

        def hook(_module, _inputs, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            if geom is not None and geom.reordered:
                out = to_maps(out, geom)
            summaries = None
            if out.dim() == 4 and stats is not None:  # the max with the statistics' map sums, in one read
                summaries = stats.map_summaries(out)
                scores, maps = summaries[0], out
            elif out.dim() == 4:
                scores, maps = out.flatten(2).amax(2), out
            elif out.dim() == 2:
                scores, maps = out, None
            else:
                raise DvisError(f"layer {name} has {out.dim()}-d output; only conv (NxCxHxW) and fc (NxC) layers are tracked")
            index = batch["index"]
            state.update(name, scores, index, maps=maps)
            if bottom is not None:
                bottom.update(name, scores, index, maps=maps)
            if stats is not None:
                stats.update(name, scores, index >= 0, maps=maps, labels=batch.get("labels"), summaries=summaries)
        return hook

    hooks = {n: make(n) for n in layers}
    # The calling thread's forwards only: a forward of the same net in another thread (the toolbox's
    # workers) is not one of this run's batches.
    with forward_hooks(net, layers, lambda name, m, i, out: hooks[name](m, i, out)):
        yield batch


def layer_shapes(net: nn.Module, layers: list[str], input_shape: tuple[int, ...], device) -> dict[str, tuple[int, ...]]:
    """Tracked shape (without batch) of each layer for inputs of ``input_shape`` (C, H, W), from
    :func:`dvis.engine.geometry.model_geometry`: C x H x W for maps and token grids (whatever their
    layout), C for vectors. ``device`` is unused (the geometry trace runs on the net's device)."""
    geo = model_geometry(net, tuple(input_shape[1:]), channels=input_shape[0])
    shapes: dict[str, tuple[int, ...]] = {}
    for n in layers:
        g = geo[n]
        if not g.runs:
            raise DvisError(f"layer {n} is never reached by the forward pass: {g.reason}")
        if g.layout == "vector":
            shapes[n] = (g.channels,)
        elif g.spatial:
            shapes[n] = (g.channels,) + tuple(g.grid)
        else:
            raise DvisError(f"layer {n} has output shape {list(g.shape)}; only maps, token grids and vectors are tracked ({g.reason})")
    return shapes


# ---------------------------------------------------------------------------------------------
# Running over a dataset


@dataclass
class TrackConfig:
    top: int = 9
    batch_size: int = 64
    workers: int = 2
    checkpoint_every: float = 30.0  # seconds between checkpoints
    progress: bool = True
    decode: str = "cpu"  # "cpu" or "gpu" (dvis.imaging.decode.resolve)
    precision: str = "fp32"  # forward precision (dvis.runtime.precision)
    stats: bool = True  # gather unit statistics (dvis.pipeline.stats) in the same pass
    bottom_k: int = 0  # also keep each unit's bottom-k (least-activating) images

    def __post_init__(self) -> None:
        # the CLI's argparse types check its flags; this checks the same for API callers
        for name, least in (("top", 1), ("batch_size", 1), ("workers", 0), ("bottom_k", 0)):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < least:
                raise DvisError(f"TrackConfig.{name} must be an integer of at least {least}, got {value!r}")


def track_maxes(model, source: ImageSource, layers: list[str] | None = None, config: TrackConfig | None = None,
                shard: tuple[int, int] = (0, 1), checkpoint: str | Path | None = None,
                on_batch: Callable[[int], None] | None = None,
                labels: tuple[list[str], np.ndarray | None] | None = None) -> MaxResult:
    """Track the top-k images of every unit of ``layers`` over this shard's batches of ``source``.

    ``model`` is a LoadedModel. With ``checkpoint`` (an .npz path) the state is saved atomically at
    least every ``config.checkpoint_every`` seconds and a matching checkpoint is resumed from.
    ``on_batch(done)`` is called after each batch (and its checkpoint, if any) with the number of
    this shard's batches done. Returns the shard's result (the full result when unsharded).
    With ``config.stats`` the result's ``stats`` holds the unit statistics; ``labels`` is
    (class names, one class index per source image) as :func:`dvis.imaging.labels.source_labels` gives.
    """
    from tqdm import tqdm

    cfg = config or TrackConfig()
    net = model.net
    layers = list(layers or model.layers)
    check_layers(net, layers)
    shapes = layer_shapes(net, layers, (model.channels,) + tuple(model.input_size), model.device)
    batches = shard_batches(len(source), cfg.batch_size, shard)
    ckpt = Path(checkpoint) if checkpoint else None
    resume = bool(ckpt and ckpt.is_file())
    # Hashing the weights takes ~0.3 s for AlexNet: done here only to resume, else while the
    # workers decode the first batches (below), and not at all without checkpoints.
    fp = fingerprint(model, source, layers, cfg.top, cfg.batch_size, cfg.precision) if resume else None

    units = {n: s[0] for n, s in shapes.items()}
    state = TopKState(units, cfg.top, model.device)
    classes, image_labels = labels if labels and labels[1] is not None else ([], None)
    stats = StatsState(shapes, len(classes), model.device) if cfg.stats else None
    bottom = TopKState(units, cfg.bottom_k, model.device, sign=-1) if cfg.stats and cfg.bottom_k else None
    # Checkpoints of other statistics settings are not resumed from (the fingerprint names the maxes).
    stats_key = json.dumps([cfg.stats, cfg.bottom_k, classes,
                            None if image_labels is None else hashlib.sha1(image_labels.tobytes()).hexdigest()])
    lab = None if image_labels is None else torch.as_tensor(image_labels.astype(np.int64), device=model.device)
    done, skipped = 0, []
    spectrum, spectrum_images = None, 0  # summed fixed-point amplitudes of the readable images
    if resume:
        with read_npz(ckpt, "maxes checkpoint", "delete it, or rerun dvis maxes with --force, to start the run over") as z:
            if (str(z["fingerprint"]) == fp and tuple(z["shard"]) == tuple(shard)
                    and "stats_key" in z and str(z["stats_key"]) == stats_key and "spectrum/sum" in z):
                state = TopKState.from_arrays(z, layers, cfg.top, model.device)
                if stats is not None:
                    stats.load_arrays({k[len("stats/"):]: z[k] for k in z.files if k.startswith("stats/")})
                if bottom is not None:
                    bottom = TopKState.from_arrays({k[len("bottom/"):]: z[k] for k in z.files if k.startswith("bottom/")},
                                                   layers, cfg.bottom_k, model.device)
                    bottom.sign = -1
                done, skipped = int(z["done"]), z["skipped"].tolist()
                spectrum, spectrum_images = spectrum_from_arrays(z)
                spectrum = torch.from_numpy(spectrum).to(model.device)

    def save_checkpoint():
        if ckpt:
            extra = {}
            if stats is not None:
                extra.update({f"stats/{k}": v for k, v in stats.to_arrays(pending=True).items()})
            if bottom is not None:
                extra.update({f"bottom/{k}": v for k, v in bottom.to_arrays().items()})
            if spectrum is not None:
                extra.update({"spectrum/sum": spectrum.cpu().numpy(),
                              "spectrum/count": np.array(spectrum_images, np.int64)})
            atomic_savez(ckpt, fingerprint=np.array(fp), shard=np.array(shard), done=np.array(done),
                         skipped=np.array(skipped, dtype=np.int64), stats_key=np.array(stats_key),
                         **state.to_arrays(), **extra)

    dataset = ImageDataset(source, model.input_size, model.channels, cfg.decode)
    batch_iter = load_batches(dataset, model.device, batch_sampler=batches[done:], num_workers=cfg.workers,
                              collate_fn=dataset.decoder.collate, pin_memory=model.device.type == "cuda")  # decoding starts now
    if ckpt and fp is None:
        fp = fingerprint(model, source, layers, cfg.top, cfg.batch_size, cfg.precision)
    last_save = time.monotonic()
    bar = tqdm(total=len(batches), initial=done, unit="batch", desc="maxes", disable=not cfg.progress)
    with max_hooks(net, state, layers, stats, bottom, model_geometry(model)) as batch, torch.inference_mode(), \
            autocast(cfg.precision, model.device):
        for raw in batch_iter:
            images, ok, index = dataset.decoder.finish(raw, model.device)
            amp = fixed_point_amplitudes(amplitude_spectrum(images.float() / 255))
            amp = (amp * ok.view(-1, 1, 1, 1).to(amp.device)).sum(0)
            spectrum = amp if spectrum is None else spectrum + amp
            spectrum_images += int(ok.sum())
            x = model.normalize(images.float().div_(255), inplace=True)
            skipped += index[~ok].tolist()
            batch["index"] = torch.where(ok, index, -1).to(model.device)
            batch["labels"] = None if lab is None else lab[batch["index"].clamp(min=0)]
            net(x)
            done += 1
            bar.update(1)
            if ckpt and (time.monotonic() - last_save >= cfg.checkpoint_every or done == len(batches)):
                save_checkpoint()
                last_save = time.monotonic()
            if on_batch:
                on_batch(done)
    bar.close()
    result = result_from_arrays(state.to_arrays(), layers, shapes, cfg.top, len(source), skipped)
    if spectrum is not None:
        result.spectrum, result.spectrum_images = spectrum.cpu().numpy(), spectrum_images
    if stats is not None:
        arrays = stats.to_arrays()
        if bottom is not None:
            for n, (v, i, p) in bottom_arrays(bottom).items():
                arrays.update({f"{n}:bottom_values": v, f"{n}:bottom_index": i, f"{n}:bottom_pos": p})
        result.stats = StatsArrays(arrays, list(classes), image_labels, cfg.bottom_k)
    return result


def bottom_arrays(bottom: TopKState) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per layer (values ascending, image indices, positions) of a bottom-k state."""
    return {n: ((-bottom.values[n]).cpu().numpy(), bottom.index[n].cpu().numpy(), bottom.pos[n].cpu().numpy())
            for n in bottom.values}
