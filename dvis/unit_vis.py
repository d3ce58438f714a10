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
        crops.json             per unit: values, image names, boxes, positions, recheck
        opt.json               per unit: activation per seed, best dataset activation, settings

Every sprite holds unit ``u`` in the tile at row ``u // cols``, column ``u % cols``, with no gap
between tiles; tile sides are multiples of 16 so JPEG blocks never straddle two units. Patches
from small inputs are upscaled for display (each patch to at least 48 px, bilinear; nearest for
patches under 8 px so single pixels stay crisp) and padded to the layer's receptive-field size,
so every tile of a layer has the same geometry. A unit whose ``present`` flag is 0 has no image
of that kind (its tile is black). Per-layer sprites keep the file count and size small.
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from dvis.errors import DvisError
from dvis.tiling import tile

FORMAT = "dvis-unit-vis"
VERSION = 1
KINDS = ("top9", "deconv", "guided", "grad", "opt", "opt_seeds")
JPEG_QUALITY = 85


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def round16(n: int) -> int:
    return -(-n // 16) * 16


def sprite_cols(n: int, tile_hw: tuple[int, int], max_side: int = 16384) -> int:
    """Columns for ``n`` tiles: roughly square, and never wider than ``max_side`` pixels."""
    cols = max(1, math.ceil(math.sqrt(n * tile_hw[0] / tile_hw[1])))
    return max(1, min(cols, max_side // tile_hw[1], n))


def ensure_manifest(root: str | Path, model_name: str, layer: str | None = None) -> None:
    """Create or update ``manifest.json`` at the layout root, adding ``layer`` to its list."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    path = root / "manifest.json"
    manifest = json.loads(path.read_text()) if path.is_file() else {"format": FORMAT, "version": VERSION,
                                                                       "model": model_name, "layers": []}
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
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise DvisError(f"cannot encode sprite {layer}/{kind}")
    path = folder / f"{kind}.jpg"
    _atomic_write(path, buf.tobytes())
    layout_path = folder / "layout.json"
    layout = json.loads(layout_path.read_text()) if layout_path.is_file() else {}
    layout[kind] = {"file": path.name, "tile": [h, w], "cols": cols, "units": n,
                    "present": [int(p) for p in np.asarray(present, bool)]}
    _atomic_write(layout_path, json.dumps(layout).encode())
    return path


def write_layer_json(root: str | Path, layer: str, name: str, data: dict) -> None:
    folder = Path(root) / layer
    folder.mkdir(parents=True, exist_ok=True)
    _atomic_write(folder / f"{name}.json", json.dumps(data).encode())


@lru_cache(maxsize=64)
def _decode_sprite(path: str, mtime: float) -> np.ndarray:
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None:
        raise DvisError(f"cannot read sprite {path}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class UnitImages:
    """Reader of a unit_vis folder (see the module docstring for the layout)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        path = self.root / "manifest.json"
        self.manifest = json.loads(path.read_text()) if path.is_file() else {"layers": []}
        if self.manifest.get("format", FORMAT) != FORMAT or self.manifest.get("version", VERSION) != VERSION:
            raise DvisError(f"{path}: not a {FORMAT} v{VERSION} folder")

    def layers(self) -> list[str]:
        return list(self.manifest.get("layers", []))

    def layout(self, layer: str) -> dict:
        """Per kind: file, tile, cols, units, present (empty dict when the layer has no images)."""
        path = self.root / layer / "layout.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def _sprite_image(self, layer: str, kind: str) -> tuple[np.ndarray, dict] | None:
        entry = self.layout(layer).get(kind)
        if not entry:
            return None
        path = self.root / layer / entry["file"]
        if not path.is_file():
            return None
        return _decode_sprite(str(path), path.stat().st_mtime), entry

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
        return np.ascontiguousarray(grid.reshape(rows * cols, h, w, 3)[:n])

    def info(self, layer: str, unit: int) -> dict | None:
        """Values, image names, boxes and positions of the unit's top patches and its optimization
        results; None if neither was computed."""
        out = {}
        for name in ("crops", "opt"):
            path = self.root / layer / f"{name}.json"
            if path.is_file():
                units = _read_json(str(path), path.stat().st_mtime)["units"]
                if 0 <= unit < len(units) and units[unit] is not None:
                    out.update(units[unit])
        return out or None


@lru_cache(maxsize=64)
def _read_json(path: str, mtime: float) -> dict:
    return json.loads(Path(path).read_text())
