"""The layer list of deep nets by block: names shortened within their block, blocks packed into rows,
pages that hold far more layers, and the block-jump keys."""
import numpy as np

from dvis.toolbox import render as R
from dvis.toolbox.actions import BY_NAME, apply
from dvis.toolbox.control_pane import control_page, render_control
from dvis.toolbox.layer_list import OUTPUT, block_step, group_layers
from dvis.toolbox.state import Geometry, State

STYLE = R.Style()


def densenet201() -> list[str]:
    """densenet201's default layer list (216 names)."""
    names = ["features.conv0", "features.relu0", "features.pool0"]
    for b, n in enumerate((6, 12, 48, 32), 1):
        names += [f"features.denseblock{b}.denselayer{i}.conv{k}" for i in range(1, n + 1) for k in (1, 2)]
        names.append(f"features.denseblock{b}")
        if b < 4:
            names += [f"features.transition{b}.{m}" for m in ("relu", "conv", "pool")] + [f"features.transition{b}"]
    return names + ["classifier"]


def vit_b_16() -> list[str]:
    names = ["conv_proj"]
    for k in range(12):
        names += [f"encoder.layers.encoder_layer_{k}.mlp.{m}" for m in (0, 3)] + [f"encoder.layers.encoder_layer_{k}"]
    return names + ["encoder", "heads.head"]


def test_densenet_blocks_and_short_names():
    names = densenet201()
    assert len(names) == 216
    g = group_layers(names)
    assert g.labels == ("", "denseblock1", "transition1", "denseblock2", "transition2", "denseblock3",
                        "transition3", "denseblock4", "")
    i = names.index("features.denseblock4.denselayer16.conv2")
    assert g.labels[g.block_of[i]] == "denseblock4" and g.short[i] == "16.conv2"
    assert g.short[names.index("features.denseblock2")] == OUTPUT
    assert g.short[names.index("features.transition3.conv")] == "conv"
    assert g.short[0] == "features.conv0" and g.short[-1] == "classifier"  # standing alone: the whole name
    assert [names[s] for s in g.starts][:2] == ["features.conv0", "features.denseblock1.denselayer1.conv1"]


def test_vit_drops_the_repeated_prefix():
    names = vit_b_16()
    g = group_layers(names)
    assert g.labels[1:4] == ("encoder_layer_0", "encoder_layer_1", "encoder_layer_2")
    i = names.index("encoder.layers.encoder_layer_7.mlp.3")
    assert g.labels[g.block_of[i]] == "encoder_layer_7" and g.short[i] == "mlp.3"  # not a bare "3"
    assert g.short[names.index("encoder.layers.encoder_layer_7")] == OUTPUT


def test_stages_keep_their_block_index():
    # maxvit_t's
    names = ["stem.0.0", "stem.0"] + [f"blocks.{s}.layers.{j}.layers.{m}" for s in range(4) for j in range(2)
                                      for m in ("MBconv.layers.conv_a", "window_attention.attn_layer.1.merge")]
    g = group_layers(names)
    assert g.labels == ("stem.0", "blocks.0", "blocks.1", "blocks.2", "blocks.3")
    assert g.short[2:6] == ("0.MBconv.layers.conv_a", "0.window_attention.attn_layer.1.merge",
                            "1.MBconv.layers.conv_a", "1.window_attention.attn_layer.1.merge")  # "layers." dropped
    assert group_layers(["conv1", "pool1", "fc8"]).labels == ("",)  # a plain list stays one row of names
    assert group_layers(["features.0", "features.3", "classifier.1"]).short == ("features.0", "features.3", "classifier.1")


def test_densenet201_fits_about_20_pages_of_readable_names():
    names = densenet201()
    pane_hw = (60, 900)  # the default control pane
    pages, per_page = set(), []
    for current in range(len(names)):
        layout = control_page(names, pane_hw, STYLE, current)
        shown = dict(layout.boxes)
        assert current in shown and all(b <= pane_hw[0] and r <= pane_hw[1] for t, l, b, r in shown.values())
        if layout.page not in pages:
            pages.add(layout.page)
            per_page.append(len(shown))
            assert all(not text.startswith("..") for text in layout.shown.values())  # short names: whole
    assert layout.pages <= 20 and pages == set(range(layout.pages))
    assert np.mean(per_page) >= 10
    first = control_page(names, pane_hw, STYLE, 10)
    assert [label for label, _ in first.labels][:1] == ["denseblock1"]


def test_blocks_share_rows_and_labels_are_drawn():
    names = vit_b_16()
    layout = control_page(names, (60, 900), STYLE, 5)
    rows = {box[0] for _, box in layout.labels}
    assert len(layout.labels) > len(rows)  # several small blocks in one row
    assert layout.pages <= 4
    pane = np.zeros((60, 900, 3), np.uint8)
    render_control(pane, names, 5, STYLE)
    t, l, b, r = layout.labels[0][1]
    assert (pane[t:b, l:r] == STYLE.selected).all(axis=2).any()  # the label, in the selection colour


def test_block_step():
    starts = (0, 3, 16, 20)
    assert block_step(starts, 0, 1) == 3 and block_step(starts, 5, 1) == 16 and block_step(starts, 20, 1) == 20
    assert block_step(starts, 5, -1) == 3  # back from inside a block: its own start
    assert block_step(starts, 3, -1) == 0 and block_step(starts, 0, -1) == 0
    assert block_step((), 4, 1) == 4


def test_block_keys_jump_between_blocks():
    names = vit_b_16()
    g = group_layers(names)
    geo = Geometry(grids=((4, 4),) * len(names), n_units=(16,) * len(names), block_starts=g.starts)
    s = State(layer=0)
    s = apply(s, "next_block", geo).state
    assert names[s.layer] == "encoder.layers.encoder_layer_0.mlp.0"
    s = apply(s, "next_block", geo).state
    assert names[s.layer] == "encoder.layers.encoder_layer_1.mlp.0"
    s = apply(State(layer=names.index("encoder.layers.encoder_layer_4")), "prev_block", geo).state
    assert names[s.layer] == "encoder.layers.encoder_layer_4.mlp.0"
    assert BY_NAME["next_block"].keys == ("O", ".") and BY_NAME["prev_block"].keys == ("U", ",")
