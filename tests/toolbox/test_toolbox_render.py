"""Pane renderers on known inputs: tile layout, normalization, sign colouring, outlines, text, panes."""
import numpy as np
import pytest

from dvis.toolbox import render as R
from dvis.toolbox.control_pane import control_page, render_control
from dvis.toolbox.render import NotThere

STYLE = R.Style()


def test_normalize_maps_global_min_max_then_boost_and_gamma():
    maps = np.array([[[0.0, 1.0]], [[2.0, 4.0]]])  # 2 channels of 1x2
    np.testing.assert_allclose(R.normalize_maps(maps), [[[0, 0.25]], [[0.5, 1.0]]])
    boosted = R.normalize_maps(maps, boost_indiv=1.0)
    np.testing.assert_allclose(boosted.reshape(2, -1).max(axis=1), [1.0, 1.0])  # each channel its own max
    np.testing.assert_allclose(boosted[0, 0], [0, 1.0])
    np.testing.assert_allclose(R.normalize_maps(maps, boost_gamma=0.5), np.sqrt([[[0, 0.25]], [[0.5, 1.0]]]))
    assert not R.normalize_maps(np.full((3, 2, 2), 7.0)).any()  # constant input: no division by zero


def test_signed_colors_by_sign():
    maps = np.array([[[2.0, -1.0, 0.0]]])
    rgb = R.signed_colors(maps, 0.0, 1.0, STYLE)
    assert rgb.shape == (1, 1, 3, 3) and rgb.dtype == np.uint8
    np.testing.assert_array_equal(rgb[0, 0, 0], STYLE.positive)
    np.testing.assert_array_equal(rgb[0, 0, 1], (np.array(STYLE.negative) * 0.5).astype(np.uint8))
    np.testing.assert_array_equal(rgb[0, 0, 2], 0)


def test_tile_layout_fits_pane_aspect_and_hit_tests():
    lay = R.tile_layout(96, (8, 8), (300, 600), sep=1)
    assert lay.cols > lay.rows  # a wide pane gets a wide grid
    assert lay.rows * lay.cols >= 96
    assert lay.top + lay.rows * (lay.tile_h + 1) - 1 <= 300 and lay.left + lay.cols * (lay.tile_w + 1) - 1 <= 600
    origins = lay.origins(96)
    for unit in (0, 17, 95):
        y, x = origins[unit]
        assert lay.unit_at(y, x, 96) == unit
        assert lay.unit_at(y + lay.tile_h - 1, x + lay.tile_w - 1, 96) == unit
    y, x = origins[0]
    assert lay.unit_at(y, x + lay.tile_w, 96) is None  # the separator
    assert lay.unit_at(0, 0, 96) in (None, 0)


def test_fc_units_are_small_squares():
    lay = R.tile_layout(10, (1, 1), (800, 900), fc_tile_max=20)
    assert lay.tile_h == lay.tile_w == 20


def test_render_tiles_places_values_with_one_pixel_separators_and_outlines():
    images = np.stack([np.full((4, 4), v, np.uint8) for v in (50, 100, 150, 200, 250, 30)])
    lay = R.tile_layout(6, (4, 4), (60, 90), sep=1)
    pane = np.zeros((60, 90, 3), np.uint8)
    R.render_tiles(pane, images, lay, STYLE, selected=5, frozen=1)
    assert (lay.rows, lay.cols) == (2, 3)
    origins = lay.origins(6)
    for unit in (0, 2, 3, 4):
        y, x = origins[unit]
        c = (y + lay.tile_h // 2, x + lay.tile_w // 2)
        np.testing.assert_array_equal(pane[c], [images[unit, 0, 0]] * 3)
    y, x = origins[3]
    np.testing.assert_array_equal(pane[y + 5, x + lay.tile_w], [STYLE.separator] * 3)  # 1-px separator, tiles 3|4
    np.testing.assert_array_equal(pane[y + 5, x + lay.tile_w - 1], [200] * 3)
    np.testing.assert_array_equal(pane[y + 5, x + lay.tile_w + 1], [250] * 3)
    lay7 = R.tile_layout(7, (4, 4), (60, 120), sep=1)
    R.render_tiles(pane7 := np.zeros((60, 120, 3), np.uint8), np.full((7, 4, 4), 255, np.uint8), lay7, STYLE)
    y, x = lay7.origins(8)[7]  # the cell after the last unit: background
    np.testing.assert_array_equal(pane7[y + 2, x + 2], STYLE.background)
    ys, xs = origins[5]
    assert (pane[ys - 1, xs:xs + lay.tile_w] == STYLE.selected).all()  # outline on the separator row
    yf, xf = origins[1]
    assert (pane[yf + lay.tile_h, xf:xf + lay.tile_w - 2] == STYLE.frozen).all()


def test_tiles_scale_each_map_by_nearest_neighbour():
    imgs = np.arange(8, dtype=np.uint8).reshape(2, 2, 2) * 30
    lay = R.TileLayout(rows=1, cols=2, tile_h=4, tile_w=4, sep=1, top=0, left=0)
    pane = np.zeros((4, 9, 3), np.uint8)
    R.render_tiles(pane, imgs, lay, STYLE)
    np.testing.assert_array_equal(pane[:, 5:, 0], np.kron(imgs[1], np.ones((2, 2), np.uint8)))
    np.testing.assert_array_equal(pane[:, 4, 0], STYLE.separator)


def test_layer_images_gray_and_signed_shapes():
    acts = np.random.default_rng(0).normal(size=(5, 3, 3)).astype(np.float32)
    gray = R.layer_images(acts, 0.0, 1.0, False, STYLE)
    assert gray.shape == (5, 3, 3) and gray.dtype == np.uint8 and gray.max() == 255 and gray.min() == 0
    assert R.layer_images(acts, 0.5, 0.7, True, STYLE).shape == (5, 3, 3, 3)
    assert R.layer_images(np.arange(4.0), 0, 1, False, STYLE).shape == (4, 1, 1)


def test_render_input_draws_the_receptive_field_box_scaled():
    frame = np.full((32, 32, 3), 128, np.uint8)
    pane = np.zeros((320, 320, 3), np.uint8)
    R.render_input(pane, frame, STYLE, rf_box=(4, 8, 12, 16), input_hw=(32, 32))
    assert (pane[40, 80:160] == STYLE.rf_box).all()  # top edge of the box, 10x scale
    assert (pane[40:120, 80] == STYLE.rf_box).all()
    np.testing.assert_array_equal(pane[200, 200], [128] * 3)


def test_render_input_without_frame_is_disabled_with_message():
    pane = np.zeros((100, 200, 3), np.uint8)
    R.render_input(pane, None, STYLE, message="no images in x")
    assert (pane[2, 2] == STYLE.disabled).all() and (pane != STYLE.disabled).any()  # the text


def test_control_pane_marks_current_and_frozen_layers():
    names = ["conv1", "pool1", "conv2", "fc8"]
    pane = np.zeros((60, 900, 3), np.uint8)
    render_control(pane, names, 2, STYLE, frozen=0, on_list=True)
    boxes = dict(control_page(names, (60, 900), STYLE, 2).boxes)
    t, l, b, r = boxes[2]
    assert (pane[t + 1, l + 1] == STYLE.selected).all()  # filled: cursor on the list
    t0, l0, b0, r0 = boxes[0]
    assert (pane[b0 - 2, l0 + 4] == STYLE.frozen).all()
    assert all(boxes[i][3] <= boxes[i + 1][1] for i in range(3))  # left to right, no overlap


def test_control_boxes_wrap_to_new_rows():
    layout = control_page([f"layer{i}" for i in range(30)], (120, 300), STYLE)
    boxes = [b for _, b in layout.boxes]
    assert len({b[0] for b in boxes}) > 1 and max(b[3] for b in boxes) <= 300


def test_layer_list_pages_keep_the_current_layer_visible_and_readable():
    # densenet201-like: 200+ long names in the default 60 x 900 control pane
    names = [f"features.denseblock{b}.denselayer{i}.conv2" for b in range(1, 5) for i in range(1, 52)]
    pane_hw = (60, 900)
    seen = set()
    for current in range(len(names)):
        layout = control_page(names, pane_hw, STYLE, current)
        shown = dict(layout.boxes)
        assert current in shown and layout.pages > 5
        t, l, b, r = shown[current]
        assert b <= pane_hw[0] and r <= pane_hw[1]
        seen.add(layout.page)
    assert seen == set(range(layout.pages))
    # long names keep their informative tail and fit their box
    text = R.fit_text(names[-1], 150, STYLE)
    assert text.startswith("..") and text.endswith("denselayer51.conv2") or text.endswith(".conv2")
    assert R.text_width(text, STYLE) <= 150
    pane = np.zeros(pane_hw + (3,), np.uint8)
    render_control(pane, names, 150, STYLE, disabled=frozenset({151}))
    assert (pane == STYLE.selected).all(axis=2).any()  # current framed on its page


def test_unit_images_pane_slots():
    pane = np.zeros((300, 100, 3), np.uint8)
    img = np.full((10, 10, 3), 200, np.uint8)
    R.render_unit_images(pane, STYLE, [("opt", img), ("top9", NotThere.ABSENT), ("deconv", NotThere.LOADING)])
    np.testing.assert_array_equal(pane[50, 50], [200] * 3)
    assert (pane[190, 2] == STYLE.disabled).all()  # below the title's dark backing
    assert (pane[290, 2] == STYLE.stale).all()


def test_text_panes_and_help_overlay():
    pane = np.zeros((30, 600, 3), np.uint8)
    R.render_status(pane, "conv1:3 [64x32x32] | 60 fps", STYLE)
    assert pane.max() > 200
    canvas = np.full((400, 800, 3), 200, np.uint8)
    R.render_help(canvas, [("q", "quit"), ("h", "this help")], STYLE)
    assert canvas[-1, -1, 0] == 50 and (canvas == STYLE.selected).all(axis=2).any()


def test_aux_top5_bars_and_unit():
    pane = np.zeros((300, 300, 3), np.uint8)
    R.render_aux(pane, STYLE, top5=[("cat", 0.9), ("dog", 0.1)])
    row = (pane == STYLE.selected).all(axis=2).sum(axis=1)
    assert row.max() > 200  # the 90 % bar is long
    R.render_aux(pane, STYLE, np.full((4, 4), 255, np.uint8), caption="conv1:0")
    np.testing.assert_array_equal(pane[150, 150], [255] * 3)


def test_top_k_orders_and_names():
    probs = np.array([0.1, 0.6, 0.3])
    assert R.top_k(probs, ["a", "b"], 2) == [("b", pytest.approx(0.6)), ("2", pytest.approx(0.3))]
