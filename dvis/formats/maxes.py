"""The maxes run folder (format ``dvis-maxes`` version 1, no pickle): the one reader, writer,
completeness check and merge of what ``dvis maxes`` computes.

- ``manifest.json``: format, version, model spec and name, input size, source, top k, batch size,
  weights digest, fingerprint, layers with their output shapes (``[C, H, W]`` for conv, ``[C]``
  for fc), image count, skipped images. Written last, so a manifest means the run is complete;
- ``images.txt``: the source's image names, one per line; an image index is a line number (from 0);
- ``maxes.npz``: per layer ``<layer>:values`` (units x k float32, descending, ``-inf`` when fewer than k
  images), ``<layer>:index`` (units x k int64 image indices, ``-1`` for empty slots) and, for conv
  layers, ``<layer>:pos`` (units x k x 2 int32 ``(y, x)`` of the max in the layer's output);
- ``spectrum.npz``: the images' mean amplitude spectrum (what MACO fixes its magnitude to): ``sum``
  (C x H x W//2+1 int64, each image's amplitude in decorrelated colour rounded to 1/:data:`SPECTRUM_SCALE`,
  summed: integer sums, so shards and batches merge exactly), ``count`` (images summed) and ``scale``;
- ``checkpoint*.npz`` while running (the tracker's state, same array keys);
- ``shards/<i>-of-<n>.npz`` for ``--shard`` jobs: the arrays plus the manifest as a JSON string.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from dvis.formats.digest import weights_digest
from dvis.formats.atomic import atomic_savez, atomic_write_text, read_format_json, read_npz
from dvis.errors import DvisError
from dvis.formats.stats import StatsArrays, merge_stats, save_stats


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


FORMAT = "dvis-maxes"
VERSION = 1
FIELDS = ("values", "index", "pos")
MANIFEST = "manifest.json"
ARRAYS = "maxes.npz"
NAMES = "images.txt"
SPECTRUM = "spectrum.npz"
#: Fixed-point resolution of the summed amplitudes (an amplitude of a 224 x 224 image is at most 50,176).
SPECTRUM_SCALE = 4096


def array_key(layer: str, name: str) -> str:
    """The .npz key of one layer's array (``name`` in :data:`FIELDS`)."""
    return f"{layer}:{name}"


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
    stats: StatsArrays | None = None  # unit statistics gathered in the same pass (dvis.formats.stats)
    spectrum: np.ndarray | None = None  # summed fixed-point amplitude spectra (see SPECTRUM)
    spectrum_images: int = 0  # how many images the spectrum sums

    def spectrum_arrays(self) -> dict[str, np.ndarray]:
        """The spectrum's arrays under their .npz keys in shards and checkpoints (none without one)."""
        if self.spectrum is None:
            return {}
        return {"spectrum/sum": self.spectrum, "spectrum/count": np.array(self.spectrum_images, np.int64)}

    def is_conv(self, layer: str) -> bool:
        return len(self.shapes[layer]) == 3


def fixed_point_amplitudes(amplitude: torch.Tensor) -> torch.Tensor:
    """Amplitude spectra (float) as int64 multiples of 1/SPECTRUM_SCALE, the unit the run sums in."""
    return torch.round(amplitude.double() * SPECTRUM_SCALE).to(torch.int64)


def spectrum_from_arrays(arrays) -> tuple[np.ndarray | None, int]:
    """(summed spectrum, image count) from a shard's or checkpoint's arrays; (None, 0) without one."""
    if "spectrum/sum" not in arrays:
        return None, 0
    return np.asarray(arrays["spectrum/sum"]), int(arrays["spectrum/count"])


def load_spectrum(run_dir: str | Path) -> tuple[np.ndarray, int] | None:
    """The run's mean amplitude spectrum (C x H x W//2+1 float32, decorrelated colour) and its image
    count; None when the run has none (runs made before it was gathered)."""
    path = Path(run_dir) / SPECTRUM
    if not path.is_file():
        return None
    with read_npz(path, "maxes spectrum", recover_run(run_dir)) as z:
        count = int(z["count"])
        if count == 0:
            return None
        return (z["sum"].astype(np.float64) / (float(z["scale"]) * count)).astype(np.float32), count


def result_arrays(result: MaxResult, conv_pos_only: bool = False) -> dict[str, np.ndarray]:
    """The result's arrays under their .npz keys (``pos`` of fc layers left out with ``conv_pos_only``)."""
    out = {}
    for n in result.layers:
        for name in FIELDS:
            if name == "pos" and conv_pos_only and not result.is_conv(n):
                continue
            out[array_key(n, name)] = getattr(result, name)[n]
    return out


def result_from_arrays(arrays, layers: list[str], shapes: dict[str, tuple[int, ...]], top: int, n_images: int,
                       skipped) -> MaxResult:
    """Inverse of :func:`result_arrays`; fc layers without ``pos`` get zero positions."""
    values = {n: np.asarray(arrays[array_key(n, "values")]) for n in layers}
    index = {n: np.asarray(arrays[array_key(n, "index")]) for n in layers}
    pos = {n: (np.asarray(arrays[array_key(n, "pos")]) if array_key(n, "pos") in arrays
               else np.zeros(index[n].shape + (2,), np.int32)) for n in layers}
    return MaxResult(list(layers), {n: tuple(shapes[n]) for n in layers}, top, values, index, pos, n_images,
                     sorted(int(i) for i in skipped))


# ---------------------------------------------------------------------------------------------
# Identity of a computation


def fingerprint(model, source, layers: list[str], top: int, batch_size: int, precision: str = "fp32") -> str:
    """Identifies a computation (model weights, images, layers, k, batching, forward precision): a
    checkpoint or a finished run is only reused by the same command on the same data and weights."""
    h = hashlib.sha1()
    h.update(json.dumps([model.name, weights_digest(model.net), source.spec, layers, top, batch_size]).encode())
    if precision != "fp32":  # fp32 runs keep the fingerprints they always had
        h.update(precision.encode())
    h.update("\n".join(source.names).encode())
    return h.hexdigest()


def build_manifest(model, model_spec: str | None, source, batch_size: int, fp: str) -> dict:
    """The manifest fields that describe how a run was made (the result adds layers, shapes, counts).

    ``model_spec`` is what reloads the model (None: the default model)."""
    return dict(model=model_spec, model_name=model.name, input_size=list(model.input_size), channels=model.channels,
                source=str(Path(source.spec).resolve()), source_kind=source.kind, batch_size=batch_size,
                weights=weights_digest(model.net), fingerprint=fp)


# ---------------------------------------------------------------------------------------------
# Run folder


def save_result(result: MaxResult, run_dir: str | Path, manifest: dict, names: list[str]) -> None:
    """Write ``maxes.npz``, ``images.txt`` and ``manifest.json`` (last, so a manifest means complete)."""
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    (run / MANIFEST).unlink(missing_ok=True)  # a kill below must not leave an old manifest over new arrays
    atomic_savez(run / ARRAYS, **result_arrays(result, conv_pos_only=True))
    atomic_write_text(run / NAMES, "".join(f"{s}\n" for s in names))
    if result.stats is not None:
        save_stats(run, result.stats, result.index, result.layers, result.shapes, result.n_images,
                   manifest.get("fingerprint"))
    if result.spectrum is None:
        (run / SPECTRUM).unlink(missing_ok=True)
    else:
        atomic_savez(run / SPECTRUM, sum=result.spectrum, count=np.array(result.spectrum_images, np.int64),
                     scale=np.array(SPECTRUM_SCALE, np.int64))
    manifest = dict(manifest, format=FORMAT, version=VERSION, top=result.top, layers=result.layers,
                    shapes={n: list(result.shapes[n]) for n in result.layers}, n_images=result.n_images,
                    skipped=[names[i] for i in result.skipped])
    atomic_write_text(run / MANIFEST, json.dumps(manifest, indent=1))


def load_manifest(run_dir: str | Path) -> dict:
    return read_format_json(Path(run_dir) / MANIFEST, FORMAT, VERSION,
                            f"{run_dir} has no maxes result ({MANIFEST}); run `dvis maxes` first")


def is_complete(run_dir: str | Path, fp: str) -> bool:
    """Whether ``run_dir`` holds the finished computation with fingerprint ``fp``."""
    try:
        return load_manifest(run_dir).get("fingerprint") == fp
    except DvisError:
        return False


def recover_run(run_dir: str | Path) -> str:
    """How to get a good run folder back when one of its files is damaged."""
    return (f"the maxes run is damaged: recompute it with `dvis maxes --run-dir {run_dir} ... --force`, "
            f"or delete {run_dir} and run dvis maxes (or dvis precompute) again")


def load_result(run_dir: str | Path) -> tuple[MaxResult, dict, list[str]]:
    """Read a run folder back: (result, manifest, image names). A damaged file is one DvisError
    naming it and the way out (:func:`recover_run`)."""
    run = Path(run_dir)
    manifest = load_manifest(run)
    try:
        names = (run / NAMES).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DvisError(f"{run / NAMES}: unreadable ({getattr(exc, 'strerror', None) or exc}); "
                        f"{recover_run(run)}") from None
    name_index = {s: i for i, s in enumerate(names)}
    lost = [s for s in manifest.get("skipped", []) if s not in name_index]
    if lost:
        raise DvisError(f"{run / NAMES} does not list the skipped image {lost[0]}; {recover_run(run)}")
    skipped = [name_index[s] for s in manifest.get("skipped", [])]
    layers, shapes, top, n_images = manifest["layers"], manifest["shapes"], manifest["top"], manifest["n_images"]
    with read_npz(run / ARRAYS, "maxes array file", recover_run(run)) as z:
        result = result_from_arrays(z, layers, shapes, top, n_images, skipped)
    if (run / SPECTRUM).is_file():
        with read_npz(run / SPECTRUM, "maxes spectrum", recover_run(run)) as z:
            result.spectrum, result.spectrum_images = z["sum"], int(z["count"])
    return result, manifest, names


# ---------------------------------------------------------------------------------------------
# Shards


def shard_path(run_dir: str | Path, shard: tuple[int, int]) -> Path:
    return Path(run_dir) / "shards" / f"{shard[0]}-of-{shard[1]}.npz"


def checkpoint_path(run_dir: str | Path, shard: tuple[int, int] = (0, 1)) -> Path:
    tag = f".{shard[0]}-of-{shard[1]}" if shard[1] > 1 else ""
    return Path(run_dir) / f"checkpoint{tag}.npz"


def save_shard(run_dir: str | Path, result: MaxResult, manifest: dict, names: list[str], shard: tuple[int, int]) -> Path:
    """Write one ``--shard`` job's result (and the shared ``images.txt``)."""
    path = shard_path(run_dir, shard)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = dict(manifest, shard=list(shard), layers=result.layers, shapes={n: list(s) for n, s in result.shapes.items()},
                top=result.top, n_images=result.n_images)
    atomic_write_text(Path(run_dir) / NAMES, "".join(f"{s}\n" for s in names))
    atomic_savez(path, manifest=np.array(json.dumps(meta)), skipped=np.array(result.skipped, dtype=np.int64),
                 **result_arrays(result), **(result.stats.to_npz() if result.stats is not None else {}),
                 **result.spectrum_arrays())
    return path


def load_shard(path: str | Path) -> tuple[MaxResult, dict]:
    with read_npz(path, "maxes shard", "rerun its `dvis maxes --shard I/N ... --force` job, or delete it") as z:
        m = json.loads(str(z["manifest"]))  # a JSONDecodeError is a ValueError: read_npz words it too
        result = result_from_arrays(z, m["layers"], m["shapes"], m["top"], m["n_images"], z["skipped"].tolist())
        result.stats = StatsArrays.from_npz(z)
        result.spectrum, result.spectrum_images = spectrum_from_arrays(z)
        return result, m


def shard_complete(run_dir: str | Path, shard: tuple[int, int], fp: str) -> bool:
    path = shard_path(run_dir, shard)
    if not path.is_file():
        return False
    try:
        return load_shard(path)[1].get("fingerprint") == fp
    except DvisError:
        return False


def merge_results(results: list[MaxResult]) -> MaxResult:
    """Merge per-shard results into the result of one pass over all images."""
    first = results[0]
    for r in results[1:]:
        if r.layers != first.layers or r.top != first.top or r.shapes != first.shapes:
            raise DvisError("cannot merge maxes of different layers, shapes or top k")
    parts = [result_arrays(r) for r in results]
    arrays = {}
    for n in first.layers:
        keys = [array_key(n, f) for f in FIELDS]
        cat = [torch.from_numpy(np.concatenate([a[k] for a in parts], 1)) for k in keys]
        arrays.update(zip(keys, (t.numpy() for t in merge_topk(*cat, first.top))))
    skipped = {i for r in results for i in r.skipped}
    merged = result_from_arrays(arrays, first.layers, first.shapes, first.top, first.n_images, skipped)
    merged.stats = merge_stats([r.stats for r in results], first.layers)
    if all(r.spectrum is not None for r in results):
        merged.spectrum = np.sum([r.spectrum for r in results], axis=0)
        merged.spectrum_images = sum(r.spectrum_images for r in results)
    return merged


def merge_shards(run_dir: str | Path, extra: list[str | Path] = ()) -> MaxResult:
    """Merge ``run_dir/shards/*.npz`` (and ``extra`` shard files) into ``run_dir``; returns the result."""
    out = Path(run_dir)
    files = sorted((out / "shards").glob("*-of-*.npz")) + [Path(s) for s in extra]
    if not files:
        raise DvisError(f"no shard files in {out / 'shards'}")
    results, manifests = zip(*(load_shard(f) for f in files))
    if len({m["fingerprint"] for m in manifests}) != 1:
        raise DvisError("shards come from different commands (model, images, layers, top or batch size differ)")
    n = manifests[0]["shard"][1]
    have = sorted(m["shard"][0] for m in manifests)
    if len(set(have)) != len(have) or any(m["shard"][1] != n for m in manifests):
        raise DvisError(f"shard files overlap or disagree on N: {[str(f) for f in files]}")
    if have != list(range(n)):
        raise DvisError(f"missing shards: {sorted(set(range(n)) - set(have))} of {n}")
    result = merge_results(list(results))
    manifest = {k: v for k, v in manifests[0].items() if k not in ("shard", "layers", "shapes", "top", "n_images")}
    save_result(result, out, manifest, (out / NAMES).read_text().splitlines())
    return result
