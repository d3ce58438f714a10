"""Per-unit images on disk: the layout the precompute pipeline writes and the toolbox reads.

Layout (format ``dvis-unit-vis`` version 1) under a model's unit_vis folder::

    <unit_vis_dir>/
      manifest.json            {"format": "dvis-unit-vis", "version": 1, "model": ..., "layers": [...]}
      <layer>/
        layout.json            per kind: file, tile [h, w], cols, units, present (one 0/1 per unit)
        top9.jpg               sprite: unit u's 3x3 mosaic of its top-9 dataset patches
        deconv.jpg             sprite: the same patches' deconvnet projections (also guided.jpg, grad.jpg)
        opt.jpg                sprite: per unit its optimized image with the highest activation
        opt_seeds.jpg          sprite: per unit a 1 x S montage of the best image of each seed
        crops.json             provenance (maxes fingerprint, source, image count, date, modes) and
                               per unit: values, image names, boxes, positions, recheck
        opt.json               provenance (settings with the weights digest, method, date) and per
                               unit: activation per seed, best dataset activation
        opt_<m>.jpg, opt_seeds_<m>.jpg, opt_<m>.json
                               the same for optimization method <m> (fourier, maco, accentuate; the
                               plain names are the pixel method's), so several methods coexist
        attr_<m>.jpg           sprite: per unit the attribution map of its best image (MACO's
                               accumulated input-gradient magnitude, grey, 255 = the image's maximum)

Every sprite holds unit ``u`` in the tile at row ``u // cols``, column ``u % cols``, with no gap
between tiles; tile sides are multiples of 16 so JPEG blocks never straddle two units. Patches
from small inputs are upscaled for display (each patch to at least 48 px, bilinear; nearest for
patches under 8 px so single pixels stay crisp) and padded to the layer's receptive-field size,
so every tile of a layer has the same geometry. A unit whose ``present`` flag is 0 has no image
of that kind (its tile is black). Per-layer sprites keep the file count and size small.

This module is the one owner of that layout: its JSON files, the sprites (their tiles' pixel
geometry is :mod:`dvis.formats.unit_tiles`), the completeness check (:func:`coverage`, :func:`crops_complete`, :func:`opt_complete`) and
the provenance a refusal to overwrite names (:func:`provenance`). Every file is written
atomically, the sprite before its layout entry, so a kill at any moment leaves every unit of
a previous complete layer readable.
"""
from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import numpy as np

from dvis.formats.atomic import atomic_write_bytes as _atomic_write, read_format_json
from dvis.constants import OPT_METHODS
from dvis.constants import UNIT_IMAGE_KINDS as KINDS
from dvis.errors import DvisError
from dvis.formats.maxes import load_manifest
from dvis.imaging.encode import encode_image
from dvis.imaging.images import read_own_image
from dvis.formats.unit_tiles import attribution_tiles, mosaics, opt_tiles, seed_montages, sprite_cols
from dvis.render.tiling import tile

FORMAT = "dvis-unit-vis"
VERSION = 1
MANIFEST = "manifest.json"
JPEG_QUALITY = 85
def ensure_manifest(root: str | Path, model_name: str, layer: str | None = None) -> None:
    """Create or update ``manifest.json`` at the layout root, adding ``layer`` to its list."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / MANIFEST
    manifest = (read_format_json(path, FORMAT, VERSION, "") if path.is_file()
                else {"format": FORMAT, "version": VERSION, "model": model_name, "layers": []})
    if layer is not None and layer not in manifest["layers"]:
        manifest["layers"].append(layer)
    _atomic_write(path, json.dumps(manifest, indent=1).encode())


def write_sprite(root: str | Path, layer: str, kind: str, tiles: np.ndarray, present: np.ndarray,
                 quality: int = JPEG_QUALITY) -> Path:
    """Write all units' tiles (N x h x w x 3 uint8 RGB, h and w multiples of 16) as one JPEG sprite."""
    if kind not in KINDS:
        raise DvisError(f"unknown unit image kind {kind!r}; expected one of {', '.join(KINDS)}")
    n, h, w = tiles.shape[:3]
    cols = sprite_cols(n, (h, w))
    folder = Path(root) / layer
    folder.mkdir(parents=True, exist_ok=True)
    canvas = tile(tiles, cols=cols, sep=0)
    data = encode_image(canvas, "jpeg", quality)
    # A new file name per content, then the layout entry: a kill at any moment leaves the old
    # layout pointing at the old sprite (same geometry), or the new layout at the new one.
    path = folder / f"{kind}-{hashlib.sha1(data).hexdigest()[:10]}.jpg"
    _atomic_write(path, data)
    layout_path = folder / "layout.json"
    layout = json.loads(layout_path.read_text()) if layout_path.is_file() else {}
    layout[kind] = {"file": path.name, "tile": [h, w], "cols": cols, "units": n,
                    "present": [int(p) for p in np.asarray(present, bool)]}
    _atomic_write(layout_path, json.dumps(layout).encode())
    used = {e["file"] for e in layout.values()}
    for old in [folder / f"{kind}.jpg", *folder.glob(f"{kind}-*.jpg")]:  # earlier versions and orphans of kills
        if old.name not in used:
            old.unlink(missing_ok=True)
    return path


def write_layer_json(root: str | Path, layer: str, name: str, data: dict) -> None:
    """Write ``<layer>/<name>.json`` (``crops`` or ``opt``)."""
    folder = Path(root) / layer
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / f"{name}.json", json.dumps(data).encode())


def read_layer_json(root: str | Path, layer: str, name: str) -> dict | None:
    """``<layer>/<name>.json``, or None when absent or unreadable."""
    path = Path(root) / layer / f"{name}.json"
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (ValueError, OSError):
        return None
    return data if isinstance(data, dict) else None


def layout(root: str | Path, layer: str) -> dict:
    """Per kind of ``layer``: file, tile, cols, units, present (empty dict when there are no images)."""
    path = Path(root) / layer / "layout.json"
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (ValueError, OSError):
        return {}


def present_units(root: str | Path, layer: str, kind: str, n: int) -> np.ndarray:
    """(n,) bool: which units of ``layer`` have an image of ``kind``."""
    present = np.zeros(n, bool)
    flags = np.array(layout(root, layer).get(kind, {}).get("present", []), bool)[:n]
    present[:len(flags)] = flags
    return present


def coverage(root: str | Path, layer_units: dict[str, int], kinds=("top9", "deconv", "opt"),
             fallbacks: tuple[str | Path, ...] = ()) -> dict[str, dict[str, list[int]]]:
    """Per layer and kind, the units that have no image (all units when the kind is absent); with
    ``fallbacks`` each kind is taken from the first folder that has it (see :class:`UnitImages`)."""
    reader = UnitImages(root, *fallbacks)
    out = {}
    for layer, n in layer_units.items():
        merged = reader.layout(layer)
        out[layer] = {}
        for kind in kinds:
            present = np.zeros(n, bool)
            flags = np.array(merged.get(kind, {}).get("present", []), bool)[:n]
            present[:len(flags)] = flags
            out[layer][kind] = np.flatnonzero(~present).tolist()
    return out


def crops_complete(root: str | Path, layer: str, modes, maxes_fingerprint: str) -> bool:
    """Whether ``layer``'s top-9 and ``modes`` mosaics were made from the maxes run ``maxes_fingerprint``."""
    meta = read_layer_json(root, layer, "crops")
    have = layout(root, layer)
    return bool(meta) and meta.get("maxes_fingerprint") == maxes_fingerprint and all(
        k in have for k in ("top9",) + tuple(modes))


def opt_kinds(method: str = "pixel") -> tuple[str, str, str | None]:
    """The (best image, seed montage, attribution) kinds of ``method``'s optimized images; the
    best image's kind also names its JSON (``opt``, ``opt_maco``, ...). The pixel method has no
    attribution map."""
    if method not in OPT_METHODS:
        raise DvisError(f"unknown optimization method {method!r}; expected one of {', '.join(OPT_METHODS)}")
    if method == "pixel":
        return "opt", "opt_seeds", None
    return f"opt_{method}", f"opt_seeds_{method}", f"attr_{method}"


def opt_methods(layers: dict) -> list[str]:
    """The methods with optimized images in a layer's ``layout`` (see :func:`layout`), in
    :data:`dvis.constants.OPT_METHODS` order."""
    return [m for m in OPT_METHODS if opt_kinds(m)[0] in layers]


def opt_complete(root: str | Path, layer: str, settings: dict, method: str = "pixel") -> bool:
    """Whether ``layer``'s ``method`` images were made with ``settings`` (which include the weights)."""
    kind = opt_kinds(method)[0]
    meta = read_layer_json(root, layer, kind)
    return bool(meta) and meta.get("settings") == settings and kind in layout(root, layer)


def provenance(root: str | Path, layer: str, name: str) -> dict | None:
    """What made ``layer``'s ``crops`` or ``opt`` (``opt_<method>``) images: the JSON's fields other
    than ``units`` (for crops: maxes fingerprint, source, image count; for opt: settings), ``date`` and whether
    every unit has them (``complete``); None when there are none. Crops written before sources
    were recorded take them from the maxes run kept beside them (``<root>/maxes``)."""
    meta = read_layer_json(root, layer, name)
    if not meta:
        return None
    kinds = ("top9",) + tuple(meta.get("modes", ())) if name == "crops" else (name,)
    entries = [layout(root, layer).get(k) for k in kinds]
    info = {k: v for k, v in meta.items() if k != "units"}
    info["complete"] = all(e and e.get("present") and all(e["present"]) for e in entries)
    if "date" not in info:
        info["date"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime((Path(root) / layer / f"{name}.json").stat().st_mtime))
    if name == "crops" and "source" not in info:
        try:
            run = load_manifest(Path(root) / "maxes")
        except DvisError:
            run = {}
        if run.get("fingerprint") == info.get("maxes_fingerprint"):
            info.update(source=run.get("source"), n_images=run.get("n_images"))
    return info


def describe(info: dict | None) -> str:
    """One phrase for a provenance: 'crops of 10000 images from /data/test (2026-01-02 10:00 UTC)'."""
    if not info:
        return "nothing"
    if "settings" in info:
        s = info["settings"]
        what = f"{info.get('method', 'pixel')} optimized images (" + ", ".join(
            f"{k}={v}" for k, v in s.items() if k not in ("weights", "method")) + ")"
    else:
        what = f"crops of {info.get('n_images', '?')} images from {info.get('source') or 'an unknown source'}"
    return f"{what}, {info.get('date', 'date unknown')}"


class _SpriteCache:
    """Decoded sprites, least recently used first out, bounded by bytes (a model's sprites decode to
    hundreds of MB; the toolbox keeps its own bounded cache of the unit images cut from them)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, float], np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: str, mtime: float) -> np.ndarray:
        key = (path, mtime)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        img = read_own_image(path)
        img.setflags(write=False)  # shared by every reader
        with self._lock:
            self._items[key] = img
            total = self.bytes()
            while total > self.max_bytes and len(self._items) > 1:
                total -= self._items.popitem(last=False)[1].nbytes
        return img

    def bytes(self) -> int:
        """What the cache holds now."""
        return sum(v.nbytes for v in self._items.values())


#: Decoded sprites kept in memory (bytes), shared by every UnitImages reader of the process: the
#: kinds of the layer in view (zf-cifar10's largest, fc6, decodes to 41 MB for top9, deconv, opt).
SPRITE_CACHE_BYTES = 48 * 2**20
_sprites = _SpriteCache(SPRITE_CACHE_BYTES)


class UnitImages:
    """Reader of a unit_vis folder (see the module docstring for the layout).

    With ``fallbacks`` (further folders, in order of preference) each layer is read from the first
    folder whose manifest lists it: a model's computed images before the shipped ones, layer by layer.
    """

    def __init__(self, root: str | Path, *fallbacks: str | Path):
        self.roots = [Path(r) for r in (root, *fallbacks)]
        self.root = self.roots[0]
        self.manifests = [self._manifest(r) for r in self.roots]
        self.manifest = self.manifests[0]

    @staticmethod
    def _manifest(root: Path) -> dict:
        path = root / MANIFEST
        return read_format_json(path, FORMAT, VERSION, "") if path.is_file() else {"layers": []}

    def layers(self) -> list[str]:
        return list(dict.fromkeys(n for m in self.manifests for n in m.get("layers", [])))

    def origin(self, layer: str, kind: str | None = None) -> Path:
        """The folder ``layer``'s images (of ``kind``) are read from: the first that has them."""
        for root, manifest in zip(self.roots, self.manifests):
            if layer in manifest.get("layers", []) and (kind is None or kind in layout(root, layer)):
                return root
        return self.root

    def layout(self, layer: str) -> dict:
        """Per kind: file, tile, cols, units, present (empty dict when the layer has no images),
        each kind from the folder it is read from."""
        merged: dict = {}
        for root in reversed([r for r, m in zip(self.roots, self.manifests) if layer in m.get("layers", [])]):
            merged.update(layout(root, layer))
        return merged or layout(self.root, layer)

    def _sprite_image(self, layer: str, kind: str) -> tuple[np.ndarray, dict] | None:
        root = self.origin(layer, kind)
        entry = layout(root, layer).get(kind)
        if not entry:
            return None
        path = root / layer / entry["file"]
        if not path.is_file():
            return None
        return _sprites.get(str(path), path.stat().st_mtime), entry

    def load(self, layer: str, unit: int, kind: str) -> np.ndarray | None:
        """The unit's image of ``kind`` (HxWx3 uint8 RGB), or None if it was not computed."""
        found = self._sprite_image(layer, kind)
        if found is None:
            return None
        canvas, entry = found
        if not 0 <= unit < entry["units"] or not entry["present"][unit]:
            return None
        (h, w), cols = entry["tile"], entry["cols"]
        r, c = divmod(unit, cols)
        return canvas[r * h:(r + 1) * h, c * w:(c + 1) * w].copy()

    def sprite(self, layer: str, kind: str = "opt") -> np.ndarray | None:
        """All units' images of ``kind`` as an (N, h, w, 3) uint8 array (black where missing), or None."""
        found = self._sprite_image(layer, kind)
        if found is None:
            return None
        canvas, entry = found
        (h, w), cols, n = entry["tile"], entry["cols"], entry["units"]
        rows = -(-n // cols)
        grid = canvas[:rows * h, :cols * w].reshape(rows, h, cols, w, 3).transpose(0, 2, 1, 3, 4)
        out = np.ascontiguousarray(grid.reshape(rows * cols, h, w, 3)[:n])
        return out if out.flags.writeable else out.copy()  # never a view of the shared cache

    def info(self, layer: str, unit: int) -> dict | None:
        """Values, image names, boxes and positions of the unit's top patches and its optimization
        results; None if neither was computed."""
        out = {}
        for name, kind in (("crops", "top9"), ("opt", "opt")):
            path = self.origin(layer, kind) / layer / f"{name}.json"
            if path.is_file():
                units = _read_json(str(path), path.stat().st_mtime)["units"]
                if 0 <= unit < len(units) and units[unit] is not None:
                    out.update(units[unit])
        return out or None


@lru_cache(maxsize=64)
def _read_json(path: str, mtime: float) -> dict:
    return json.loads(Path(path).read_text())


# ---------------------------------------------------------------------------------------------
# Writing a layer's images (the pipeline's crops and optimize steps)


def _r(v: float) -> float | None:
    return None if not np.isfinite(v) else float(f"{v:.6g}")


def now() -> str:
    """The date a provenance records (UTC, minutes)."""
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())


def write_crops_layer(root: str | Path, model_name: str, layer: str, crops, result, names: list[str],
                      meta: dict) -> None:
    """Write ``layer``'s top-9 and back-projection mosaics and ``crops.json`` from ``crops`` (a
    :class:`dvis.pipeline.crops.LayerCrops`) of the maxes ``result``; ``meta`` is the provenance
    (maxes fingerprint, source, image count) recorded with them."""
    present = crops.valid.any(1)
    ensure_manifest(root, model_name, layer)
    write_sprite(root, layer, "top9", mosaics(crops.patches), present)
    for mode, backs in crops.backs.items():
        write_sprite(root, layer, mode, mosaics(backs), present)
    units = []
    for u in range(len(present)):  # JSON assembly only; the images above are batched
        ok = crops.valid[u]
        units.append({
            "values": [_r(v) for v in result.values[layer][u][ok]],
            "images": [names[i] for i in result.index[layer][u][ok]],
            "boxes": crops.boxes[u][ok].tolist(),
            "positions": result.pos[layer][u][ok].tolist() if result.is_conv(layer) else [],
            "recheck": [_r(v) for v in crops.recheck[u][ok]],
        })
    write_layer_json(root, layer, "crops", dict(meta, date=now(), modes=list(crops.backs),
                                                mismatches=crops.mismatches, window_fallbacks=crops.fallbacks,
                                                units=units))


def write_opt_layer(root: str | Path, model_name: str, layer: str, n_total: int, units: np.ndarray,
                    images: np.ndarray, activations: np.ndarray, settings: dict,
                    dataset_best: np.ndarray | None = None, method: str = "pixel",
                    attribution: np.ndarray | None = None, provenance: dict | None = None) -> list[float]:
    """Write ``layer``'s sprites of ``method`` (:func:`opt_kinds`: best image, seed montage and,
    given ``attribution`` ((units, seeds, H, W) maps), the best image's attribution map) and its
    JSON for ``units`` ((units, seeds, H, W, 3) display ``images``, (units, seeds) ``activations``)
    of its ``n_total``; ``provenance`` adds fields to the JSON (e.g. which amplitude spectrum).
    A subset run with the same ``settings`` adds to the images already there. Returns each unit's
    best activation over its best dataset activation (where that is positive)."""
    units = np.asarray(units)
    kind, seeds_kind, attr_kind = opt_kinds(method)
    n_seeds = images.shape[1]
    best_seed = activations.argmax(1)
    seeds_tiles = opt_tiles(images.reshape((-1,) + images.shape[2:]))
    side = seeds_tiles.shape[1]
    opt = np.zeros((n_total, side, side, 3), np.uint8)
    montage = np.zeros((n_total, side, side * n_seeds, 3), np.uint8)
    attr = np.zeros((n_total, side, side, 3), np.uint8)
    present = np.zeros(n_total, bool)
    entries: list = [None] * n_total
    old = read_layer_json(root, layer, kind)
    if len(units) < n_total and old and old.get("settings") == settings:
        reader = UnitImages(root)
        prev_opt, prev_montage = reader.sprite(layer, kind), reader.sprite(layer, seeds_kind)
        prev_attr = reader.sprite(layer, attr_kind) if attr_kind and attribution is not None else None
        prev_present = present_units(root, layer, kind, n_total)
        if prev_opt is not None and prev_montage is not None and prev_opt.shape == opt.shape \
                and prev_montage.shape == montage.shape and len(old["units"]) == n_total:
            opt[:], montage[:], present[:], entries = prev_opt, prev_montage, prev_present, old["units"]
            if prev_attr is not None and prev_attr.shape == attr.shape:
                attr[:] = prev_attr
    pick = np.arange(len(units)), best_seed
    opt[units] = seeds_tiles.reshape(len(units), n_seeds, side, side, 3)[pick]
    montage[units] = seed_montages(seeds_tiles, n_seeds)
    present[units] = True
    ensure_manifest(root, model_name, layer)
    write_sprite(root, layer, kind, opt, present)
    write_sprite(root, layer, seeds_kind, montage, present)
    if attr_kind and attribution is not None:
        attr[units] = opt_tiles(attribution_tiles(np.asarray(attribution)[pick]))
        write_sprite(root, layer, attr_kind, attr, present)
    ratios = []
    for i, u in enumerate(units):  # JSON assembly only
        best = float(activations[i].max())
        ds = float(dataset_best[u]) if dataset_best is not None and np.isfinite(dataset_best[u]) else None
        ratio = best / ds if ds is not None and ds > 0 else None
        if ratio is not None:
            ratios.append(ratio)
        entries[int(u)] = {"opt_activations": [_r(v) for v in activations[i]], "opt_best_seed": int(best_seed[i]),
                           "dataset_best": _r(ds) if ds is not None else None,
                           "opt_vs_dataset": _r(ratio) if ratio is not None else None}
    write_layer_json(root, layer, kind, dict(provenance or {}, settings=settings, method=method, date=now(),
                                             units=entries))
    return ratios
