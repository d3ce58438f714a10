"""Decoded sprites are cached within a byte bound: walking every layer and kind of the default model
(about 290 MB decoded) keeps at most SPRITE_CACHE_BYTES, and cached arrays are never handed out
for writing. The manifest is read as a format header."""
from __future__ import annotations

import numpy as np
import pytest

from dvis.errors import DvisError
from dvis.formats import unit_vis
from dvis.formats.unit_vis import UnitImages, ensure_manifest
from dvis.models.loading import load_model


def test_sprite_cache_stays_within_its_byte_bound():
    vis = unit_vis.UnitImages(load_model(None).shipped_unit_vis_dir)
    for layer in vis.layers():
        for kind in ("top9", "deconv", "opt", "opt_seeds"):
            assert vis.load(layer, 0, kind) is not None
            held = sum(a.nbytes for a in unit_vis._sprites._items.values())
            assert held <= unit_vis.SPRITE_CACHE_BYTES
    tile = vis.load("fc8", 0, "top9")
    tile[:] = 0  # a copy: the cached sprite is untouched
    assert vis.load("fc8", 0, "top9").any()
    sprite = vis.sprite("fc8", "opt")
    assert sprite.flags.writeable and not np.shares_memory(sprite, next(iter(unit_vis._sprites._items.values())))


def test_manifest_is_read_as_a_format_header(tmp_path):
    """The unit_vis manifest goes through dvis.formats.atomic.read_format_json: another format or
    version, or a broken file, is one DvisError line naming it; a folder without one reads empty."""
    assert UnitImages(tmp_path).layers() == []
    ensure_manifest(tmp_path, "m", "conv1")
    assert UnitImages(tmp_path).layers() == ["conv1"]
    for text in ('{"format": "dvis-maxes", "version": 1, "layers": []}', '{"format": "dvis-unit-vis", "version": 2}',
                 "{broken"):
        (tmp_path / "manifest.json").write_text(text)
        for read in (lambda: UnitImages(tmp_path), lambda: ensure_manifest(tmp_path, "m", "conv2")):
            with pytest.raises(DvisError, match="manifest.json") as info:
                read()
            assert "\n" not in str(info.value)
