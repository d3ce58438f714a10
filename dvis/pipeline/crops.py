"""Receptive-field crops of each unit's top images and their back-projections, as mosaics.

For every (unit, top image) pair the image is cropped to the unit's receptive field around the
recorded max position, padded with black where the field leaves the image so every patch of a
layer has the same size with the content where it belongs. The back-projection (deconv, guided
backprop or gradient) of that unit at that position is computed on the full image (so the net's
own border handling is exact) for a whole batch of pairs per forward/backward, and cropped to
the same box. The forward of that pass re-measures the activation, which must match the value
recorded by ``maxes``; a mismatch reveals nondeterminism or preprocessing drift.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from dvis.engine.backproject import backproject_batch
from dvis.constants import BACK_MODES
from dvis.imaging.datasets import ImageSource
from dvis.imaging.decode import decode_cpu, load_batches
from dvis.pipeline.distributed import Shard
from dvis.errors import DvisError
from dvis.engine.geometry import model_geometry, to_maps
from dvis.engine.hooks import forward_hooks
from dvis.formats.maxes import MaxResult
from dvis.engine.receptive_field import receptive_field

MODES = BACK_MODES
MAX_PATCH = 96  # larger patches (e.g. fc layers of 224 px nets) are shrunk: mosaics stay pane-sized
WINDOW_MAX_AREA = 0.5  # use receptive-field windows for fields under this fraction of the image


@dataclass
class LayerCrops:
    """Crops of one layer: ``patches`` and ``backs[mode]`` are (units, k, ph, pw, 3) uint8,
    ``boxes`` (units, k, 4) unclipped (top, left, bottom, right) in input pixels, ``recheck``
    (units, k) the re-measured activations (NaN for empty slots)."""

    layer: str
    patches: np.ndarray
    backs: dict[str, np.ndarray]
    boxes: np.ndarray
    recheck: np.ndarray
    valid: np.ndarray
    mismatches: int = 0
    fallbacks: int = 0  # pairs whose window result differed and were recomputed on the whole image
    done: np.ndarray | None = None  # (units, k) slots this process computed (all filled ones unsharded)


def layer_boxes(model, layer: str, result: MaxResult) -> tuple[np.ndarray, tuple[int, int]]:
    """(units, k, 4) receptive-field boxes (unclipped) around each recorded position, and the
    layer's stride in input pixels."""
    h, w = model.input_size
    units, k = result.index[layer].shape
    if not result.is_conv(layer):
        return np.broadcast_to(np.array([0, 0, h, w]), (units, k, 4)).copy(), (h, w)
    rf = receptive_field(model.net, layer, input_size=(h, w))
    pos = result.pos[layer].reshape(-1, 2)
    boxes = np.stack(rf.box(pos[:, 0], pos[:, 1], clip=False), axis=1)
    return boxes.reshape(units, k, 4).astype(np.int64), tuple(int(v) for v in rf.stride)


def window_boxes(boxes: np.ndarray, stride: tuple[int, int], input_size: tuple[int, int]) -> np.ndarray:
    """The input window a conv unit needs: its receptive field clipped to the image, with the start
    moved back to a multiple of the layer's stride so every feature map of the window lines up
    with the full image's. The unit's value and back-projection computed on that window equal the
    full image's (the re-run check verifies it, falling back to the full image)."""
    sy, sx = stride
    top = np.maximum(boxes[:, 0], 0) // sy * sy
    left = np.maximum(boxes[:, 1], 0) // sx * sx
    return np.stack([top, left, np.minimum(boxes[:, 2], input_size[0]), np.minimum(boxes[:, 3], input_size[1])], 1)


def crop_batch(x: torch.Tensor, boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Crop NxCxHxW ``x`` to per-image ``boxes`` (N, 4: top, left, ...) of one ``size`` (ph, pw),
    zero-filled outside the image; one gather for the whole batch."""
    n, c, h, w = x.shape
    ph, pw = size
    pad = max(ph, pw)
    xp = F.pad(x, (pad, pad, pad, pad))
    rows = (boxes[:, 0:1] + pad + torch.arange(ph, device=x.device)).clamp(0, h + 2 * pad - 1)
    cols = (boxes[:, 1:2] + pad + torch.arange(pw, device=x.device)).clamp(0, w + 2 * pad - 1)
    b = torch.arange(n, device=x.device)[:, None, None]
    return xp.permute(0, 2, 3, 1)[b, rows[:, :, None], cols[:, None, :]]  # N x ph x pw x C


def shrink(patches: torch.Tensor, max_side: int) -> torch.Tensor:
    """N x h x w x C -> at most ``max_side`` on the longer side (area averaging), batched."""
    h, w = patches.shape[1:3]
    if max(h, w) <= max_side:
        return patches
    size = (max(1, round(h * max_side / max(h, w))), max(1, round(w * max_side / max(h, w))))
    out = F.interpolate(patches.permute(0, 3, 1, 2).float(), size=size, mode="area").permute(0, 2, 3, 1)
    return out.round().to(patches.dtype) if not patches.is_floating_point() else out


def backs_to_uint8(g: torch.Tensor) -> torch.Tensor:
    """N x ph x pw x C back-projections -> uint8 RGB with 0 at mid-gray and each patch's largest
    magnitude at 0 or 255 (as the original toolbox's deconv crops)."""
    scale = g.flatten(1).abs().amax(1).clamp_min(1e-12).view(-1, 1, 1, 1)
    out = ((g / scale) * 127.5 + 127.5).round().clamp(0, 255).to(torch.uint8)
    return out.expand(-1, -1, -1, 3) if out.shape[3] == 1 else out


def images_to_uint8(x: torch.Tensor) -> torch.Tensor:
    return x.expand(-1, -1, -1, 3) if x.shape[3] == 1 else x


class _EntryImages(Dataset):
    def __init__(self, source: ImageSource, indices: np.ndarray, size, channels):
        self.source, self.indices, self.size, self.channels = source, indices, size, channels

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, j):
        # Images were readable during maxes; a failure now is a real error, not a skip. The cpu
        # decoder is the one maxes uses by default, so the re-measured activations match.
        i = int(self.indices[j])
        return torch.from_numpy(decode_cpu(self.source.read_bytes(i), self.size, self.channels, self.source.names[i]))


def _back_and_value(model, layer: str, x: torch.Tensor, units: torch.Tensor, at, rel_boxes: torch.Tensor,
                    size: tuple[int, int], modes, conv: bool, captured: list) -> tuple[dict, torch.Tensor]:
    """Back-projections of ``units`` at ``at`` for the batch ``x`` (one unit per image), cropped to
    ``rel_boxes``, and the activations the forward measured."""
    crops = {}
    for mode in modes:
        captured.clear()
        g = backproject_batch(model, x, layer, units, mode=mode, at=at)  # model: layouts at its input size
        crops[mode] = crop_batch(g.detach().float(), rel_boxes.to(g.device), size)
    out = captured[0]
    r = torch.arange(len(units), device=out.device)
    return crops, (out[r, units, at[:, 0], at[:, 1]] if conv else out[r, units]).float().cpu()


def crop_batches(index: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Flat (unit * k + slot) entries of a layer's filled top-k slots, in batches of whole units
    (``batch_size // k`` units, at least one): the same batches for one process or many, so sharded
    runs compute every patch exactly as one process does."""
    units, k = index.shape
    per = max(1, batch_size // k)
    filled = index.reshape(-1) >= 0
    return [e for lo in range(0, units, per)
            if len(e := np.flatnonzero(filled[lo * k:min(lo + per, units) * k]) + lo * k)]


def compute_crops(model, result: MaxResult, source: ImageSource, layer: str, modes: tuple[str, ...] = ("deconv",),
                  batch_size: int = 64, workers: int = 2, rtol: float = 1e-3, max_patch: int = MAX_PATCH,
                  windows: bool = True, progress=None, shard: Shard = Shard()) -> LayerCrops:
    """Patches, back-projections (``modes``) and re-measured activations of ``layer``'s top images.

    With ``windows`` conv units whose receptive field covers less than ``WINDOW_MAX_AREA`` of the
    image are computed on the input window that field needs
    (:func:`window_boxes`), grouped by window size, instead of the whole image; any pair whose
    re-measured value then differs from the recorded one is recomputed on the whole image.
    Patches (and back-projections) larger than ``max_patch`` pixels are shrunk as they are cut.
    With a ``shard`` of several processes only its batches (:func:`crop_batches`, dealt by
    :meth:`Shard.mine`) are computed; ``LayerCrops.done`` marks them and :func:`merge_crops` joins shares.
    """
    bad = [m for m in modes if m not in MODES]
    if bad:
        raise DvisError(f"unknown crop mode {bad[0]!r}; expected {', '.join(MODES)}")
    index, pos = result.index[layer], result.pos[layer]
    units, k = index.shape
    boxes, stride = layer_boxes(model, layer, result)
    ph, pw = int(boxes[0, 0, 2] - boxes[0, 0, 0]), int(boxes[0, 0, 3] - boxes[0, 0, 1])
    sh, sw = shrink(torch.zeros(1, ph, pw, 1), max_patch).shape[1:3]
    flat_valid = (index >= 0).reshape(-1)
    batches = shard.mine(crop_batches(index, batch_size))
    entries = np.concatenate(batches) if batches else np.zeros(0, np.int64)
    recorded = torch.from_numpy(result.values[layer].reshape(-1).astype(np.float32))
    atol = rtol * float(recorded[flat_valid].abs().max() if flat_valid.any() else 1)
    patches = torch.zeros((units * k, sh, sw, 3), dtype=torch.uint8)
    backs = {m: torch.zeros((units * k, sh, sw, 3), dtype=torch.uint8) for m in modes}
    recheck = torch.full((units * k,), torch.nan)
    done = np.zeros(units * k, bool)
    conv = result.is_conv(layer)
    geom = model_geometry(model)[layer]
    # Windows pay off when fields are small; near whole-image fields only split the batch by size.
    # Token grids and partitioned maps have a fixed size, and a windowed field's attention windows
    # would not line up: whole images. Behind a global gate (squeeze-and-excitation) a window
    # changes the gate, so the back-projection too, even where the value still passes the check.
    use_windows = windows and conv and ph * pw < WINDOW_MAX_AREA * model.input_size[0] * model.input_size[1] \
        and geom.layout in ("chw", "hwc") and geom.rf.window == (1, 1) and not geom.global_context
    captured: list[torch.Tensor] = []
    fallbacks = 0

    def hook(_name, _m, _i, out):
        captured.append(to_maps(out.detach(), geom))  # channels-last and token layers as maps

    dataset = _EntryImages(source, index.reshape(-1)[entries], model.input_size, model.channels)
    offsets = np.cumsum([0] + [len(b) for b in batches])
    loader = load_batches(dataset, model.device, num_workers=workers,
                          batch_sampler=[list(range(offsets[j], offsets[j + 1])) for j in range(len(batches))])
    with forward_hooks(model.net, [layer], hook):
        for sel, images in zip(batches, loader):
            u = torch.from_numpy(sel // k).to(model.device)
            x = model.normalize(images.to(model.device).float().div_(255), inplace=True)
            b = torch.from_numpy(boxes.reshape(-1, 4)[sel]).to(model.device)
            at = torch.from_numpy(pos.reshape(-1, 2)[sel].astype(np.int64)).to(model.device) if conv else "max"
            crops = {m: torch.zeros((len(sel), ph, pw, x.shape[1]), device=model.device) for m in modes}
            values = torch.full((len(sel),), torch.nan)
            todo = torch.ones(len(sel), dtype=torch.bool)
            if use_windows:
                win = torch.from_numpy(window_boxes(boxes.reshape(-1, 4)[sel], stride, model.input_size)).to(model.device)
                hw = win[:, 2:] - win[:, :2]
                try:
                    for shape in torch.unique(hw, dim=0):
                        idx = (hw == shape).all(1).nonzero().squeeze(1)
                        size = (int(shape[0]), int(shape[1]))
                        xw = crop_batch(x[idx], win[idx], size).permute(0, 3, 1, 2).contiguous()
                        at_w = at[idx] - win[idx, :2] // torch.tensor(stride, device=model.device)
                        rel = b[idx] - win[idx][:, [0, 1, 0, 1]]
                        part, v = _back_and_value(model, layer, xw, u[idx], at_w, rel, (ph, pw), modes, conv, captured)
                        for m in modes:
                            crops[m][idx] = part[m]
                        values[idx.cpu()] = v
                except DvisError:  # the net runs at its own input size only (MaxViT): whole images
                    values[:] = torch.nan
                    use_windows = False
                todo = ~torch.isclose(values, recorded[sel], rtol=rtol, atol=atol)
                fallbacks += int(todo.sum())
            if todo.any():
                idx = todo.nonzero().squeeze(1).to(model.device)
                part, v = _back_and_value(model, layer, x[idx], u[idx], at[idx] if conv else at, b[idx], (ph, pw),
                                          modes, conv, captured)
                for m in modes:
                    crops[m][idx] = part[m]
                values[idx.cpu()] = v
            for m in modes:
                backs[m][sel] = backs_to_uint8(shrink(crops[m], max_patch)).cpu()
            recheck[sel] = values
            patches[sel] = images_to_uint8(shrink(crop_batch(images, b.cpu(), (ph, pw)), max_patch))
            done[sel] = True
            if progress is not None:
                progress(len(images))
    ok = torch.isclose(recheck, recorded, rtol=rtol, atol=atol)
    mismatches = int((~ok & torch.from_numpy(done)).sum())
    shape = (units, k, sh, sw, 3)
    return LayerCrops(layer, patches.view(shape).numpy(), {m: v.view(shape).numpy() for m, v in backs.items()},
                      boxes, recheck.view(units, k).numpy(), flat_valid.reshape(units, k), mismatches, fallbacks,
                      done.reshape(units, k))


def crops_part(lc: LayerCrops) -> dict[str, np.ndarray]:
    """The arrays of the entries ``lc`` computed (its share), for :meth:`Shard.collect`."""
    sel = lc.done.reshape(-1)
    flat = lambda a: a.reshape((-1,) + a.shape[2:])[sel]  # noqa: E731
    part = {"done": lc.done, "patches": flat(lc.patches), "recheck": flat(lc.recheck),
            "counts": np.array([lc.mismatches, lc.fallbacks])}
    part.update({f"back:{m}": flat(v) for m, v in lc.backs.items()})
    return part


def merge_crops(like: LayerCrops, parts: list[dict[str, np.ndarray]]) -> LayerCrops:
    """Join the shares ``parts`` (from :func:`crops_part`) of every process into ``like``'s layout
    (any process's LayerCrops of the layer); every filled slot must be computed exactly once."""
    done = np.zeros_like(like.valid)
    patches, recheck = np.zeros_like(like.patches), np.full(like.recheck.shape, np.nan, np.float32)
    backs = {m: np.zeros_like(v) for m, v in like.backs.items()}
    mismatches = fallbacks = 0
    for p in parts:
        sel = p["done"]
        if (done & sel).any():
            raise DvisError(f"crops {like.layer}: shards overlap")
        done |= sel
        patches[sel], recheck[sel] = p["patches"], p["recheck"]
        for m in backs:
            backs[m][sel] = p[f"back:{m}"]
        mismatches += int(p["counts"][0])
        fallbacks += int(p["counts"][1])
    if not np.array_equal(done, like.valid):
        raise DvisError(f"crops {like.layer}: shards cover {int(done.sum())} of {int(like.valid.sum())} patches")
    return LayerCrops(like.layer, patches, backs, like.boxes, recheck, like.valid, mismatches, fallbacks, done)


def layer_crops(model, result: MaxResult, source: ImageSource, layer: str, modes: tuple[str, ...], batch_size: int,
                workers: int, shard: Shard, folder, key, progress=None) -> LayerCrops | None:
    """:func:`compute_crops` of this process's share, merged with the other processes' shares
    where the merge happens (:meth:`Shard.collect`: rank 0, or the last ``--shard`` to finish);
    None elsewhere. ``folder`` holds ``--shard`` part files, ``key`` identifies the settings."""
    lc = compute_crops(model, result, source, layer, modes, batch_size, workers, progress=progress, shard=shard)
    if shard.split:
        n_units = int(lc.done.any(1).sum())
        print(f"crops {layer}: shard {shard.rank}/{shard.world} computed {n_units} of {len(lc.done)} units "
              f"({int(lc.done.sum())} patches)", flush=True)
    parts = shard.collect(crops_part(lc), folder, f"crops-{layer}", key)
    return None if parts is None else merge_crops(lc, parts)
