"""Several optimization methods per layer: the '3' key switches the optimized-image pane between them."""
from __future__ import annotations

import time

import numpy as np

from dvis.formats.unit_vis import write_sprite
from dvis.toolbox import render as R
from dvis.toolbox.actions import apply
from dvis.toolbox.drivers import run_keys
from dvis.toolbox.settings import load_settings
from dvis.toolbox.state import Geometry, State
from helpers.toolbox import make_images, make_model_folder


def test_the_key_cycles_the_computed_methods():
    g = Geometry(grids=((1, 1),), n_units=(1,), opt_methods=("pixel", "maco", "accentuate"))
    s = State()
    seen = []
    for _ in range(4):
        s = apply(s, "opt_method", g).state
        seen.append(s.opt_method)
    assert seen == ["maco", "accentuate", "pixel", "maco"]
    assert "3" in load_settings(None, {}).key_bindings["opt_method"]


def test_through_alpha():
    img = np.full((2, 2, 3), 200, np.uint8)
    alpha = np.array([[0, 255], [255, 0]], np.uint8)[..., None].repeat(3, 2)
    assert R.through_alpha(img, alpha)[..., 0].tolist() == [[50, 200], [200, 50]]


def test_the_pane_switches_to_the_maco_images_seen_through_their_attribution(tmp_path):
    from dvis.models.loading import load_model
    from dvis.toolbox.app import Toolbox

    folder = make_model_folder(tmp_path)
    uv = folder / "unit_vis"
    present = np.ones(6, bool)
    write_sprite(uv, "conv1", "opt_maco", np.full((6, 16, 16, 3), (0, 0, 240), np.uint8), present)
    write_sprite(uv, "conv1", "attr_maco", np.full((6, 16, 16, 3), 255, np.uint8), present)
    tb = Toolbox(load_model(str(folder)), load_settings(None, {"images": str(make_images(tmp_path)),
                                                             "pause_after_key_s": 0.0, "global_scale": 0.6}),
                 headless=True)
    try:
        assert tb.geo.opt_methods == ("pixel", "maco") and tb.state.opt_method == "pixel"

        def blue_share():
            """Share of the unit-images pane in the maco tiles' blue (the loader reads sprites in the background)."""
            for _ in range(50):
                run_keys(tb, [])
                t, l, h, w = tb.panes["unit_images"]
                pane = tb.canvas[t:t + h, l:l + w].astype(int)
                blue = (pane[..., 2] > 200) & (pane[..., 0] < 40)
                if blue.mean() > 0.05:
                    return blue.mean()
                time.sleep(0.02)
            return 0.0

        assert blue_share() == 0.0  # pixel's grey tiles
        run_keys(tb, ["3"])
        assert tb.state.opt_method == "maco" and tb._unit_kinds()[0] == "opt_maco"
        assert "attr_maco" in tb._unit_kinds()
        assert blue_share() > 0.05
    finally:
        tb.close()
