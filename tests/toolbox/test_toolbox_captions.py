"""Captions fit their pane on a dark backing, a unit's zoom is scaled by its own range, the input pane
marks where the unit peaks, and the unit-images pane without images is one compact box naming the command."""
import numpy as np

from dvis.toolbox import render as R
from dvis.toolbox.render import NotThere

STYLE = R.Style()
VIT = "encoder.layers.encoder_layer_11.mlp.3:146 max 0.468 | tokens -0.706 | own range -1.64..0.468"
DENSE = "grad norm: features.denseblock4.denselayer16.conv2:1023 frozen"


def test_wrap_text_fits_every_line_and_keeps_every_word():
    for text in (VIT, DENSE):
        lines = R.wrap_text(text, 200, STYLE, 0.9)
        assert all(R.text_width(line, STYLE, 0.9) <= 200 for line in lines)
        shown = [w for line in lines for w in line.split()]
        assert len(shown) == len(text.split())  # every word, in order; a too-wide one keeps its end
        assert all(w == o or (w.startswith("..") and o.endswith(w[2:])) for w, o in zip(shown, text.split()))
    lines = R.wrap_text(VIT, 200, STYLE, 0.9)
    assert "tokens" in " ".join(lines) and "-0.706" in " ".join(lines)  # the class token's value is shown
    long = R.wrap_text("features.denseblock4.denselayer16.conv2:1023", 120, STYLE)
    assert len(long) == 1 and long[0].startswith("..") and long[0].endswith(":1023")  # the unit number stays
    assert R.wrap_text("a b\ncommand --x", 1000, STYLE) == ["a b", "command --x"]


def test_caption_is_on_a_dark_backing_inside_the_pane():
    pane = np.full((200, 220, 3), 255, np.uint8)  # bright content (EfficientNet's 1x1 SE maps)
    rows = R.draw_caption(pane, VIT, STYLE)
    assert rows > 2 * STYLE.line_height  # wrapped, not clipped
    band = pane[200 - rows + 6:]
    dark = (band.max(axis=2) <= 64).mean()
    assert dark > 0.4  # the backing: the bright content at a quarter
    assert (band.max(axis=2) >= 200).any()  # light text on it
    assert (pane[:200 - rows - 4] == 255).all()  # above the caption the content is untouched


def test_aux_and_back_captions_wrap_on_narrow_panes():
    for render in (lambda p: R.render_aux(p, STYLE, np.full((8, 8), 255, np.uint8), caption=VIT),
                   lambda p: R.render_back(p, STYLE, np.full((8, 8, 3), 255, np.uint8), caption=DENSE)):
        pane = np.zeros((260, 260, 3), np.uint8)
        render(pane)
        bottom = pane[-STYLE.line_height:]
        assert (bottom.max(axis=2) <= 64).any() and (bottom.max(axis=2) >= 200).any()
        assert (pane[-3 * STYLE.line_height:, -2:] == 255).any()  # the image shows right of the caption's end


def test_unit_image_titles_have_a_backing():
    pane = np.zeros((300, 100, 3), np.uint8)
    white = np.full((10, 10, 3), 255, np.uint8)
    R.render_unit_images(pane, STYLE, [("opt", white), ("top9", white), ("deconv", white)])
    title = pane[2:STYLE.line_height + 2, 2:R.text_width("opt", STYLE, 0.9) + 4].max(axis=2)
    assert (title <= 64).any() and (title >= 200).any()


def test_unit_images_not_computed_is_one_compact_box_naming_the_command():
    pane = np.zeros((600, 240, 3), np.uint8)
    absent = [(k, NotThere.ABSENT) for k in ("opt", "top9", "deconv")]
    R.render_unit_images(pane, STYLE, absent, "dvis precompute --model vit_b_16 --images DIR")
    grey = (pane == STYLE.disabled).all(axis=2).any(axis=1)
    assert grey[:100].all() and not grey[300:].any()  # under a third of the pane
    assert (pane[300:] == STYLE.background).all()
    text = (pane[:200].max(axis=2) > 150).any(axis=1).sum()
    assert text >= 3 * 8  # title and the command, in lines


def test_unit_zoom_scales_by_the_units_own_range():
    weak = np.zeros((4, 4), np.float32)
    weak[1, 2] = 0.01
    image, note = R.unit_zoom(weak, 1.0, False, STYLE)
    assert image.max() == 255 and image.min() == 0 and "own range 0..0.01" in note
    image, note = R.unit_zoom(np.zeros((4, 4)), 1.0, False, STYLE)
    assert not image.any() and note == "unit is zero here"
    image, note = R.unit_zoom(np.float32(3.0), 1.0, False, STYLE)  # a vector unit
    assert image.shape == (1, 1) and note == "constant 3"
    tile = np.full((1, 1), 77, np.uint8)  # a single value keeps its tile: no range of its own
    image, note = R.unit_zoom(np.full((1, 1), -0.2), 1.0, False, STYLE, tile)
    assert image is tile and "layer's scale" in note
    signed = np.array([[0.002, -0.001]], np.float32)
    image, note = R.unit_zoom(signed, 1.0, True, STYLE)
    assert image.shape == (1, 2, 3) and tuple(image[0, 0]) == STYLE.positive and "+-0.002" in note


def test_peak_is_marked_when_the_field_covers_the_input():
    pane = np.zeros((320, 320, 3), np.uint8)
    frame = np.full((32, 32, 3), 128, np.uint8)
    R.render_input(pane, frame, STYLE, rf_box=(0, 0, 32, 32), input_hw=(32, 32), peak=(10.0, 22.0))
    assert tuple(pane[100, 220]) == STYLE.rf_box  # the cross's centre, 10x scale
    assert tuple(pane[100, 220 + 5]) == STYLE.rf_box and tuple(pane[100 + 5, 220]) == STYLE.rf_box
    assert not (pane[200:318, 2:200] == STYLE.rf_box).all(axis=2).any()  # inside the box: only the cross


def test_peak_point():
    # ViT patch 4 with a global field: size 60, padding 28 -> the centre of patch (y, x)
    assert R.peak_point((4 * 2 - 28, 4 * 5 - 28, 4 * 2 + 32, 4 * 5 + 32), (4, 4), (1, 1), (2, 5)) == (10.0, 22.0)
    assert R.peak_point((0, 0, 64, 64), (32, 32), (2, 2), (1, 0)) == (48.0, 16.0)  # a window's field: its own cell


def test_fill_wraps_long_messages():
    pane = np.zeros((100, 150, 3), np.uint8)
    R.fill(pane, STYLE.disabled, "no images: input_images/ holds no readable image file", STYLE)
    lit = np.nonzero((pane.max(axis=2) > 150).any(axis=1))[0]
    assert lit.max() - lit.min() > 2 * STYLE.line_height  # more than one line
    assert not (pane[:, :2].max(axis=2) > 150).any() and not (pane[:, -2:].max(axis=2) > 150).any()


def test_back_pane_says_why_a_zero_unit_is_blank():
    pane = np.zeros((200, 260, 3), np.uint8)
    R.render_back(pane, STYLE, np.zeros((8, 8, 3), np.uint8), "grad raw: conv5:3", zero=True)
    assert (pane[2, 2] == STYLE.disabled).all()  # not a blank image: the disabled pane with its words
    assert R.wrap_text(f"grad raw: conv5:3: {R.ZERO_UNIT}", 252, STYLE)[-1].endswith("project")
    lit = (pane.max(axis=2) > 150).any(axis=1).sum()
    assert lit > STYLE.line_height  # the message, in more than one line
    quiet = np.zeros_like(pane)
    R.render_back(quiet, STYLE, np.full((8, 8, 3), 90, np.uint8), "grad raw: conv5:3")
    assert (quiet[100, 130] == 90).all()  # a unit with a gradient shows its image
