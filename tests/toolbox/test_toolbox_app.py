"""The toolbox app in headless mode on a tiny model: keys, panes, inputs, workers, CLI."""
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dvis.errors import DvisError
from dvis.toolbox.drivers import parse_keys, run_keys
from dvis.toolbox.keys import SPECIAL_NAMES
from helpers.toolbox import make_images, make_model_folder, make_toolbox

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def tb(tmp_path):
    toolbox = make_toolbox(tmp_path)
    yield toolbox
    toolbox.close()


def pane(tb, name):
    t, l, h, w = tb.panes[name]
    return tb.canvas[t:t + h, l:l + w].copy()


def press(tb, *keys):
    run_keys(tb, list(keys))


def test_start_shows_every_pane(tb):
    press(tb)
    assert tb.worker.output is not None and tb.worker.output.error is None
    assert set(tb.worker.output.acts) == {"conv1", "pool1", "conv2", "pool2", "fc3"}
    assert tb.shapes == {"conv1": (6, 16, 16), "pool1": (6, 8, 8), "conv2": (10, 8, 8), "pool2": (10, 4, 4),
                         "fc3": (5,)}
    assert pane(tb, "layers").std() > 10  # tiles drawn
    assert (pane(tb, "back") == tb.style.disabled).mean() > 0.9  # back-projection off
    status = tb.status_text()
    assert "img1.png" in status and "conv1:0 [6x16x16]" in status and "back off" in status
    np.testing.assert_array_equal(pane(tb, "unit_images")[60, 60], [40, 40, 40])  # opt image of conv1:0


def test_b_turns_on_back_projection_and_e_changes_image(tb):
    press(tb)
    layers0, input0 = pane(tb, "layers"), pane(tb, "input")
    press(tb, "b")
    assert tb.state.back_on and tb.worker.output.grad is not None
    back = pane(tb, "back")
    assert (back == tb.style.disabled).mean() < 0.5
    assert "back grad/raw" in tb.status_text()
    press(tb, "e")
    assert tb.state.image == 1 and "img2.png" in tb.status_text()
    assert not np.array_equal(pane(tb, "input"), input0)
    press(tb, "a")  # tiles show signed back diffs: coloured, not gray
    tiles = pane(tb, "layers").astype(int)
    assert np.abs(tiles[..., 0] - tiles[..., 2]).max() > 50
    assert not np.array_equal(tiles, layers0)


def test_above_the_memory_budget_a_pass_keeps_only_the_shown_layers(tmp_path):
    """all_layers_budget=0: each pass keeps the selected layer and the class output; a layer change
    recomputes, and every pane shows what the all-layers toolbox shows."""
    full, lean = make_toolbox(tmp_path / "full"), make_toolbox(tmp_path / "lean", all_layers_budget=0.0)
    try:
        assert full.all_layers and not lean.all_layers
        for keys in ([], ["o", "right"], ["b", "o"], ["a"], ["o", "o", "o", "up", "up"]):
            press(full, *keys)
            press(lean, *keys)
            layer = lean.model.layers[lean.state.layer]
            assert lean.job().layers == tuple(dict.fromkeys((layer, "fc3")))
            assert set(lean.worker.output.acts) == set(lean.job().layers)
            np.testing.assert_array_equal(lean.worker.output.acts[layer], full.worker.output.acts[layer])
            np.testing.assert_array_equal(lean.worker.output.probs, full.worker.output.probs)
            if lean.state.back_on:
                np.testing.assert_array_equal(lean.worker.output.grad, full.worker.output.grad)
            for name in ("layers", "aux", "input", "back"):  # (the status line shows pass rates)
                np.testing.assert_array_equal(pane(lean, name), pane(full, name), err_msg=f"{keys} {name}")
        assert lean.state.layer == 4 and lean.state.on_layer_list
    finally:
        full.close()
        lean.close()


def test_unreadable_file_is_skipped_with_message(tb):
    press(tb, "pageup")  # backwards from img1: img10.bmp, then img6.jpg is unreadable -> skipped
    assert tb.state.image == 6 and "img10.bmp" in tb.status_text()
    press(tb, "w")
    assert tb.state.image == 4 and "skipped 1" in tb.message and "img6.jpg" in tb.message


def test_selection_moves_rf_box_and_layer_list_shows_top5(tb):
    press(tb, "right", "down")
    rows, cols = tb.geo.grids[0]
    assert tb.state.unit == cols + 1
    assert tb.rf_box(tb.worker.output.acts["conv1"]) is not None
    inp = pane(tb, "input")
    assert (inp == tb.style.rf_box).all(axis=2).any()
    press(tb, "up", "up")
    assert tb.state.on_layer_list
    aux = pane(tb, "aux")
    assert (aux == tb.style.selected).all(axis=2).sum() > 20  # probability bars
    press(tb, "right", "right", "down")
    assert tb.state.layer == 2 and not tb.state.on_layer_list


def test_freeze_keeps_back_projection_while_browsing(tb):
    press(tb, "b", "right", "d", "o", "o")
    assert tb.state.frozen == (0, 1) and tb.state.layer == 2
    assert tb.worker.output.job.back == ("conv1", 1, "grad")
    assert "from conv1:1" in tb.status_text()
    press(tb, "d")
    assert tb.worker.output.job.back == ("conv2", 1, "grad")


def test_unit_images_missing_unit_and_layer_show_not_computed(tb):
    press(tb, "down", "right", "right")
    assert tb.state.unit == 5  # 2 x 3 grid
    slot = pane(tb, "unit_images")[: tb.panes["unit_images"][2] // 3]
    assert (slot == tb.style.disabled).mean() > 0.5
    press(tb, "9")
    assert not tb.state.show_unit_images and (pane(tb, "unit_images") == tb.style.disabled).mean() > 0.8


def test_pattern_mode_shows_optimized_images_as_tiles(tb):
    press(tb, "s")
    lay = tb.tile_layouts[0]
    y, x = lay.origins(6)[2]
    t, l = tb.panes["layers"][:2]
    np.testing.assert_allclose(tb.canvas[t + y + lay.tile_h // 2, l + x + lay.tile_w // 2], [120] * 3, atol=3)
    press(tb, "o")  # pool1 has no patterns
    assert (pane(tb, "layers") == tb.style.disabled).mean() > 0.5


def test_zoom_cycles_unit_and_back(tb):
    press(tb, "b")
    press(tb, "z")
    assert tb.state.zoom == "unit"
    unit_zoom = pane(tb, "layers")
    press(tb, "z")
    assert tb.state.zoom == "back"
    assert not np.array_equal(pane(tb, "layers"), unit_zoom)
    press(tb, "z")
    assert tb.state.zoom == "off"


def test_help_overlay_and_screenshot(tb, tmp_path):
    press(tb)
    before = tb.canvas.mean()
    press(tb, "h")
    assert tb.canvas.mean() < before / 2
    press(tb, "h", "p")
    shots = list((tmp_path / "shots").glob("*.png"))
    assert len(shots) == 1 and cv2.imread(str(shots[0])).shape[:2] == tb.canvas.shape[:2]


def test_mouse_clicks_select_layer_and_unit(tb):
    press(tb)
    t, l = tb.panes["control"][:2]
    from dvis.toolbox.control_pane import control_page
    boxes = dict(control_page(tb._names(), tb.panes["control"][2:], tb.style, tb.state.layer).boxes)
    bt, bl, bb, br = boxes[2]
    press(tb, f"click:{l + bl + 3},{t + bt + 3}")
    assert tb.state.layer == 2 and tb.state.on_layer_list
    lay = tb.tile_layouts[2]
    y, x = lay.origins(10)[7]
    t, l = tb.panes["layers"][:2]
    press(tb, f"click:{l + x + 1},{t + y + 1}")
    assert (tb.state.layer, tb.state.unit, tb.state.on_layer_list) == (2, 7, False)


def test_checkpoint_key_swaps_weights_and_back(tb):
    press(tb)
    final = tb.worker.output.acts["fc3"].copy()
    shared = {k: v.clone() for k, v in tb.model.net.state_dict().items()}
    press(tb, "v")
    assert tb.state.checkpoint == 0 and "ckpt-1" in tb.status_text()
    assert not np.allclose(tb.worker.output.acts["fc3"], final)
    # the checkpoint ran on a copy: the shared LoadedModel keeps its weights (other tabs/threads use it)
    assert all(torch.equal(v, shared[k]) for k, v in tb.model.net.state_dict().items())
    press(tb, "v")
    assert tb.state.checkpoint == -1
    np.testing.assert_allclose(tb.worker.output.acts["fc3"], final, rtol=1e-5, atol=1e-6)


def test_occlusion_overlay(tb):
    press(tb)
    before = pane(tb, "input")
    press(tb, "x")
    occ = tb.worker.output.occlusion
    assert occ is not None and occ.shape == (16, 16) and 0 <= occ.min() <= occ.max() <= 1
    assert not np.array_equal(pane(tb, "input"), before)


def test_camera_missing_is_one_message_and_files_continue(tmp_path):
    tb = make_toolbox(tmp_path, camera_id=97)
    try:
        press(tb, "c")
        assert not tb.state.camera and "camera 97 is not available" in tb.message
        press(tb, "e")
        assert tb.state.image == 1
    finally:
        tb.close()


def test_empty_folder_shows_message(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    tb = make_toolbox(tmp_path, images=str(empty))
    try:
        press(tb, "e", "right", "b")
        assert tb.frame is None and "no images" in tb.status_text() and str(empty) in tb.status_text()
        assert (pane(tb, "input") == tb.style.disabled).mean() > 0.5
    finally:
        tb.close()


def test_worker_errors_go_to_the_status_line(tmp_path):
    tb = make_toolbox(tmp_path)

    def boom(model, job, settings):
        raise RuntimeError("model exploded\nwith detail")

    tb.worker._compute = boom
    try:
        press(tb)
        assert "worker: RuntimeError: model exploded" in tb.status_text()
        assert "with detail" not in tb.status_text()
    finally:
        tb.close()


def test_2000_random_keys_leave_a_well_formed_canvas(tb):
    names = sorted(set(tb.keymap) | set(SPECIAL_NAMES) | {"y", "Q", "5"}) + ["click:400,100", "click:200,40"]
    names.remove("q")
    rng = np.random.default_rng(0)
    keys = [names[i] for i in rng.integers(0, len(names), 2000)]
    run_keys(tb, keys)
    assert tb.canvas.shape == tb.settings.canvas_shape() + (3,) and tb.canvas.dtype == np.uint8
    assert tb.worker.output.error is None
    assert 0 <= tb.state.layer < 5 and 0 <= tb.state.unit < tb.geo.n_units[tb.state.layer]


def test_gray_rectangular_custom_model(tmp_path):
    from dvis.models.loading import load_model
    from dvis.toolbox.app import Toolbox
    from dvis.toolbox.settings import load_settings

    model = load_model(str(REPO / "examples" / "custom_model"))
    tb = Toolbox(model, load_settings(None, {"images": str(make_images(tmp_path)), "global_scale": 0.5}),
                 headless=True)
    try:
        run_keys(tb, ["b", "right", "o", "o", "o", "o", "e"])
        assert tb.frame.shape[0] / tb.frame.shape[1] == pytest.approx(48 / 64, abs=0.03)  # cropped to 48x64
        assert (tb.frame[..., 0] == tb.frame[..., 1]).all()  # grayscale model: gray frames
        assert tb.worker.output.error is None
    finally:
        tb.close()


def test_parse_keys():
    assert parse_keys("right  b click:3,4 pagedown") == ["right", "b", "click:3,4", "pagedown"]
    with pytest.raises(DvisError, match="'rigth' is not a key name"):
        parse_keys("rigth")


def test_run_toolbox_headless_cli_writes_pngs(tmp_path):
    model = make_model_folder(tmp_path)
    images = make_images(tmp_path)
    out = tmp_path / "out"
    env = dict(os.environ, DISPLAY="")
    proc = subprocess.run([sys.executable, str(REPO / "run_toolbox.py"), "--headless", "--model", str(model),
                           "--images", str(images), "--keys", "right right b e", "--out", str(out),
                           "--scale", "0.5"], capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == ["000-start.png", "001-right.png", "002-right.png", "003-b.png", "004-e.png"]
    first, last = (cv2.imread(str(out / n)) for n in (pngs[0], pngs[-1]))
    assert first.shape == (465, 750, 3) and not np.array_equal(first, last)


def test_run_toolbox_without_display_names_the_flag(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    proc = subprocess.run([sys.executable, str(REPO / "run_toolbox.py"), "--model", "alexnet", "--set",
                           "font_scale=1.2", "--no-recursive"], capture_output=True, text=True,
                          env=env, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2 and "--headless" in lines[0] and "display" in lines[0]
    # the same settings, served to a browser
    assert lines[1].split() == ["dvis", "serve", "--model", "alexnet", "--no-recursive", "--set", "font_scale=1.2"]


def test_run_toolbox_reports_unknown_setting(tmp_path):
    (tmp_path / "settings_local.py").write_text("fnt_scale = 2\n")
    proc = subprocess.run([sys.executable, str(REPO / "run_toolbox.py"), "--headless"], capture_output=True,
                          text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 2 and "did you mean 'font_scale'" in proc.stderr
