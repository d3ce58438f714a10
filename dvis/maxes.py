"""Top-k max tracker: for every unit of the chosen layers, the k dataset images that excite it most.

Conv units are scored by their spatial max (with its position), fc units by their value. Ties are
broken by the lower image index, so the result does not depend on how images are split into
batches, checkpoints, processes or shards.

On disk (a *run* folder, format ``dvis-maxes`` version 1, no pickle):

- ``manifest.json``: format, version, model spec and name, input size, source, top k, batch size,
  layers with their output shapes (``[C, H, W]`` for conv, ``[C]`` for fc), image count, skipped images;
- ``images.txt``: the source's image names, one per line; an image index is a line number (from 0);
- ``maxes.npz``: per layer ``<layer>:values`` (units x k float32, descending, ``-inf`` when fewer than k
  images), ``<layer>:index`` (units x k int64 image indices, ``-1`` for empty slots) and, for conv
  layers, ``<layer>:pos`` (units x k x 2 int32 ``(y, x)`` of the max in the layer's output);
- ``checkpoint*.npz`` while running, ``shards/<i>-of-<n>.npz`` for ``--shard`` jobs.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from dvis.datasets import ImageDataset, ImageSource
from dvis.errors import DvisError
from dvis.layers import check_layers

FORMAT = "dvis-maxes"
VERSION = 1


@dataclass
class MaxResult:
    """Top-k per unit for each layer (numpy arrays, see the module docstring for shapes)."""

    layers: list[str]
    shapes: dict[str, tuple[int, ...]]
    top: int
    values: dict[str, np.ndarray]
    index: dict[str, np.ndarray]
    pos: dict[str, np.ndarray]
    n_images: int = 0
    skipped: list[int] = field(default_factory=list)

    def is_conv(self, layer: str) -> bool:
        return len(self.shapes[layer]) == 3


# ---------------------------------------------------------------------------------------------
# Pure top-k bookkeeping


def topk_order(values: torch.Tensor, index: torch.Tensor, k: int, index_ordered: bool = False) -> torch.Tensor:
    """Columns of the k best of (units x n) candidates: value descending, then image index ascending.

    Two stable sorts (index, then value) give the deterministic tie order in one batched op; with
    ``index_ordered`` the columns already list tied values in ascending index order (a stored
    top-k followed by later images in order), so the value sort alone gives the same result.
    """
    if index_ordered:
        return torch.argsort(values, dim=1, descending=True, stable=True)[:, :k]
    order = torch.argsort(index, dim=1, stable=True)
    by_value = torch.argsort(values.gather(1, order), dim=1, descending=True, stable=True)[:, :k]
    return order.gather(1, by_value)


def merge_topk(values: torch.Tensor, index: torch.Tensor, pos: torch.Tensor, k: int
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the k best of (units x n) candidates (see :func:`topk_order`)."""
    order = topk_order(values, index, k)
    return values.gather(1, order), index.gather(1, order), pos.gather(1, order[..., None].expand(-1, -1, 2))


class TopKState:
    """Running top-k of every unit of several layers (torch tensors on the tracking device)."""

    def __init__(self, units: dict[str, int], k: int, device: torch.device | str = "cpu"):
        self.k = k
        self.values = {n: torch.full((u, k), -torch.inf, device=device) for n, u in units.items()}
        self.index = {n: torch.full((u, k), -1, dtype=torch.int64, device=device) for n, u in units.items()}
        self.pos = {n: torch.zeros((u, k, 2), dtype=torch.int32, device=device) for n, u in units.items()}

    def update(self, layer: str, values: torch.Tensor, index: torch.Tensor, maps: torch.Tensor | None = None) -> None:
        """Merge a batch: ``values`` (B x units) per-image scores, ``index`` (B,) image indices (``-1``
        marks images to ignore), ``maps`` the conv layer's B x units x H x W output (positions).

        Only units with a candidate at least as good as their current k-th entry are merged, and
        max positions are computed only for entries that enter a top-k: after the first batches
        few units change, so tracking costs little beyond the forward. Skipped units could not
        change, so the result equals a full merge.
        """
        valid = index >= 0
        if not valid.any():
            return
        v = torch.where(valid[:, None], torch.nan_to_num(values.float(), nan=-torch.inf), -torch.inf)
        kth = self.values[layer][:, -1]
        # A tie with the k-th entry only wins for a lower image index; batches in index order never have one.
        later = bool(index[valid].min() > self.index[layer].max())
        rows = ((v > kth) if later else (v >= kth)).any(0).nonzero().squeeze(1)
        if not len(rows):
            return
        k = self.k
        values = torch.cat([self.values[layer][rows], v[:, rows].t()], 1)
        images = torch.cat([self.index[layer][rows], index[None, :].expand(len(rows), -1)], 1)
        in_order = later and bool(valid.all()) and bool((index[1:] > index[:-1]).all())
        order = topk_order(values, images, k, index_ordered=in_order)
        pos = self.pos[layer][rows].gather(1, order.clamp(max=k - 1)[..., None].expand(-1, -1, 2))
        # Positions only for the batch entries that made it into the top-k: a fraction of the
        # (units x batch) maps, which is most of the tracking cost while the top-k still change.
        r, j = (order >= k).nonzero(as_tuple=True)
        if maps is not None:
            flat = maps[order[r, j] - k, rows[r]].flatten(1).argmax(1)  # first maximum, as the recorded value
            pos[r, j] = torch.stack([flat // maps.shape[3], flat % maps.shape[3]], dim=1).to(torch.int32)
        else:
            pos[r, j] = 0
        self.values[layer][rows] = values.gather(1, order)
        self.index[layer][rows] = images.gather(1, order)
        self.pos[layer][rows] = pos

    def merge(self, other: "TopKState") -> None:
        for n in self.values:
            self.values[n], self.index[n], self.pos[n] = merge_topk(
                torch.cat([self.values[n], other.values[n].to(self.values[n].device)], 1),
                torch.cat([self.index[n], other.index[n].to(self.index[n].device)], 1),
                torch.cat([self.pos[n], other.pos[n].to(self.pos[n].device)], 1), self.k)

    def to_arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for n in self.values:
            out[f"{n}:values"] = self.values[n].cpu().numpy()
            out[f"{n}:index"] = self.index[n].cpu().numpy()
            out[f"{n}:pos"] = self.pos[n].cpu().numpy()
        return out

    @classmethod
    def from_arrays(cls, arrays, layers: list[str], k: int, device="cpu") -> "TopKState":
        state = cls({n: arrays[f"{n}:values"].shape[0] for n in layers}, k, device)
        for n in layers:
            state.values[n] = torch.from_numpy(np.array(arrays[f"{n}:values"])).to(device)
            state.index[n] = torch.from_numpy(np.array(arrays[f"{n}:index"])).to(device)
            state.pos[n] = torch.from_numpy(np.array(arrays[f"{n}:pos"])).to(device)
        return state


# ---------------------------------------------------------------------------------------------
# Capturing per-image maxima during the forward pass


@contextmanager
def max_hooks(net: nn.Module, state: TopKState, layers: list[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks merging each layer's output into ``state`` at capture time (before any
    in-place ReLU that follows), so no feature map is kept or cloned. Yields a dict whose
    ``"index"`` (B image indices, ``-1`` to ignore) the caller sets before each forward."""
    batch: dict[str, torch.Tensor] = {}
    modules = dict(net.named_modules())

    def make(name: str):
        def hook(_module, _inputs, out):
            if isinstance(out, (tuple, list)):
                out = out[0]
            if out.dim() == 4:
                state.update(name, out.flatten(2).amax(2), batch["index"], maps=out)
            elif out.dim() == 2:
                state.update(name, out, batch["index"])
            else:
                raise DvisError(f"layer {name} has {out.dim()}-d output; only conv (NxCxHxW) and fc (NxC) layers are tracked")
        return hook

    handles = [modules[n].register_forward_hook(make(n)) for n in layers]
    try:
        yield batch
    finally:
        for h in handles:
            h.remove()


def layer_shapes(net: nn.Module, layers: list[str], input_shape: tuple[int, ...], device) -> dict[str, tuple[int, ...]]:
    """Output shape (without batch) of each layer for one input of ``input_shape`` (C, H, W)."""
    shapes: dict[str, tuple[int, ...]] = {}
    modules = dict(net.named_modules())

    def make(name):
        def hook(_m, _i, out):
            shapes[name] = tuple((out[0] if isinstance(out, (tuple, list)) else out).shape[1:])
        return hook

    handles = [modules[n].register_forward_hook(make(n)) for n in layers]
    try:
        with torch.inference_mode():
            net(torch.zeros((1,) + tuple(input_shape), device=device))
    finally:
        for h in handles:
            h.remove()
    for n, s in shapes.items():
        if len(s) not in (1, 3):
            raise DvisError(f"layer {n} has output shape {list(s)}; only conv (CxHxW) and fc (C) layers are tracked")
    return shapes


# ---------------------------------------------------------------------------------------------
# Files


def atomic_savez(path: Path, **arrays) -> None:
    """Write an .npz so that a crash at any moment leaves either the old file or the new one."""
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_result(result: MaxResult, run_dir: str | Path, manifest: dict, names: list[str]) -> None:
    """Write ``maxes.npz``, ``images.txt`` and ``manifest.json`` (last, so a manifest means complete)."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for n in result.layers:
        arrays[f"{n}:values"] = result.values[n]
        arrays[f"{n}:index"] = result.index[n]
        if result.is_conv(n):
            arrays[f"{n}:pos"] = result.pos[n]
    atomic_savez(run / "maxes.npz", **arrays)
    atomic_write_text(run / "images.txt", "".join(f"{s}\n" for s in names))
    manifest = dict(manifest, format=FORMAT, version=VERSION, top=result.top, layers=result.layers,
                    shapes={n: list(result.shapes[n]) for n in result.layers}, n_images=result.n_images,
                    skipped=[names[i] for i in result.skipped])
    atomic_write_text(run / "manifest.json", json.dumps(manifest, indent=1))


def load_manifest(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "manifest.json"
    if not path.is_file():
        raise DvisError(f"{run_dir} has no maxes result (manifest.json); run `dvis maxes` first")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise DvisError(f"{path}: not a {FORMAT} v{VERSION} manifest")
    return manifest


def load_result(run_dir: str | Path) -> tuple[MaxResult, dict, list[str]]:
    """Read a run folder back: (result, manifest, image names)."""
    run = Path(run_dir)
    manifest = load_manifest(run)
    names = (run / "images.txt").read_text().splitlines()
    layers = manifest["layers"]
    shapes = {n: tuple(manifest["shapes"][n]) for n in layers}
    pos = {}
    with np.load(run / "maxes.npz", allow_pickle=False) as z:
        values = {n: z[f"{n}:values"] for n in layers}
        index = {n: z[f"{n}:index"] for n in layers}
        for n in layers:
            pos[n] = z[f"{n}:pos"] if len(shapes[n]) == 3 else np.zeros(index[n].shape + (2,), np.int32)
    name_index = {s: i for i, s in enumerate(names)}
    result = MaxResult(layers, shapes, manifest["top"], values, index, pos, manifest["n_images"],
                       [name_index[s] for s in manifest.get("skipped", [])])
    return result, manifest, names


def state_to_result(state: TopKState, layers, shapes, top, n_images, skipped) -> MaxResult:
    arrays = state.to_arrays()
    return MaxResult(list(layers), dict(shapes), top, {n: arrays[f"{n}:values"] for n in layers},
                     {n: arrays[f"{n}:index"] for n in layers}, {n: arrays[f"{n}:pos"] for n in layers},
                     n_images, sorted(skipped))


# ---------------------------------------------------------------------------------------------
# Running over a dataset


def weights_digest(net: nn.Module) -> str:
    """Hash of the net's parameters and buffers: maxes of other weights must not be reused."""
    h = hashlib.sha1()
    for name, t in net.state_dict().items():
        h.update(name.encode())
        h.update(t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def fingerprint(model, source: ImageSource, layers: list[str], top: int, batch_size: int) -> str:
    """Identifies a computation (model weights, images, layers, k, batching): a checkpoint or a
    finished run is only reused by the same command on the same data and weights."""
    h = hashlib.sha1()
    h.update(json.dumps([model.name, weights_digest(model.net), source.spec, layers, top, batch_size]).encode())
    h.update("\n".join(source.names).encode())
    return h.hexdigest()


def shard_batches(n_images: int, batch_size: int, shard: tuple[int, int]) -> list[list[int]]:
    """Image indices of the batches that shard ``i`` of ``n`` processes: batch b goes to b % n.

    Sharding whole batches keeps each image in the same batch as a single-process run, so values
    are bit-identical however the work is split.
    """
    i, n = shard
    starts = range(i * batch_size, n_images, n * batch_size)
    return [list(range(s, min(s + batch_size, n_images))) for s in starts]


@dataclass
class TrackConfig:
    top: int = 9
    batch_size: int = 64
    workers: int = 2
    checkpoint_every: float = 30.0  # seconds between checkpoints
    progress: bool = True


def track_maxes(model, source: ImageSource, layers: list[str] | None = None, config: TrackConfig | None = None,
                shard: tuple[int, int] = (0, 1), checkpoint: str | Path | None = None,
                on_batch: Callable[[int], None] | None = None) -> MaxResult:
    """Track the top-k images of every unit of ``layers`` over this shard's batches of ``source``.

    ``model`` is a LoadedModel. With ``checkpoint`` (an .npz path) the state is saved atomically at
    least every ``config.checkpoint_every`` seconds and a matching checkpoint is resumed from.
    ``on_batch(done)`` is called after each batch (and its checkpoint, if any) with the number of
    this shard's batches done. Returns the shard's result (the full result when unsharded).
    """
    from tqdm import tqdm

    cfg = config or TrackConfig()
    net = model.net
    layers = list(layers or model.layers)
    check_layers(net, layers)
    shapes = layer_shapes(net, layers, (model.channels,) + tuple(model.input_size), model.device)
    batches = shard_batches(len(source), cfg.batch_size, shard)
    fp = fingerprint(model, source, layers, cfg.top, cfg.batch_size)

    state = TopKState({n: s[0] for n, s in shapes.items()}, cfg.top, model.device)
    done, skipped = 0, []
    ckpt = Path(checkpoint) if checkpoint else None
    if ckpt and ckpt.is_file():
        with np.load(ckpt, allow_pickle=False) as z:
            if str(z["fingerprint"]) == fp and tuple(z["shard"]) == tuple(shard):
                state = TopKState.from_arrays(z, layers, cfg.top, model.device)
                done, skipped = int(z["done"]), z["skipped"].tolist()

    def save_checkpoint():
        if ckpt:
            atomic_savez(ckpt, fingerprint=np.array(fp), shard=np.array(shard), done=np.array(done),
                         skipped=np.array(skipped, dtype=np.int64), **state.to_arrays())

    dataset = ImageDataset(source, model.input_size, model.channels)
    loader = DataLoader(dataset, batch_sampler=batches[done:], num_workers=cfg.workers,
                        pin_memory=model.device.type == "cuda", persistent_workers=False)
    last_save = time.monotonic()
    bar = tqdm(total=len(batches), initial=done, unit="batch", desc="maxes", disable=not cfg.progress)
    with max_hooks(net, state, layers) as batch, torch.inference_mode():
        for images, ok, index in loader:
            x = model.normalize(images.to(model.device, non_blocking=True).float().div_(255))
            skipped += index[~ok].tolist()
            batch["index"] = torch.where(ok, index, -1).to(model.device)
            net(x)
            done += 1
            bar.update(1)
            if ckpt and (time.monotonic() - last_save >= cfg.checkpoint_every or done == len(batches)):
                save_checkpoint()
                last_save = time.monotonic()
            if on_batch:
                on_batch(done)
    bar.close()
    return state_to_result(state, layers, shapes, cfg.top, len(source), skipped)


def merge_results(results: list[MaxResult]) -> MaxResult:
    """Merge per-shard results into the result of one pass over all images."""
    first = results[0]
    for r in results[1:]:
        if r.layers != first.layers or r.top != first.top or r.shapes != first.shapes:
            raise DvisError("cannot merge maxes of different layers, shapes or top k")
    state = TopKState.from_arrays(_flat(first), first.layers, first.top)
    for r in results[1:]:
        state.merge(TopKState.from_arrays(_flat(r), r.layers, r.top))
    skipped = sorted({i for r in results for i in r.skipped})
    return state_to_result(state, first.layers, first.shapes, first.top, first.n_images, skipped)


def _flat(r: MaxResult) -> dict[str, np.ndarray]:
    out = {}
    for n in r.layers:
        out[f"{n}:values"], out[f"{n}:index"], out[f"{n}:pos"] = r.values[n], r.index[n], r.pos[n]
    return out
