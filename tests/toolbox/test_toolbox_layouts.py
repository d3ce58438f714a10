"""The toolbox on every layout (dvis.engine.geometry): channels-last maps and token layers shown as C maps
of their grid (class token apart), a layer that never runs in eval mode shown disabled with its
reason, and start-up from the one traced geometry pass."""
from __future__ import annotations

import numpy as np
import pytest

from dvis.toolbox.drivers import run_keys
from helpers.layout_modules import SOURCE
from helpers.toolbox import make_images

NET = SOURCE + '''

class Net(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.to_hwc = Permute(0, 2, 3, 1)
        self.mlp = nn.Linear(4, 6)  # on channels-last maps, as in ConvNeXt blocks
        self.to_chw = Permute(0, 3, 1, 2)
        self.pool = nn.MaxPool2d(2)
        self.tokens = Tokens(6)
        self.aux = nn.Linear(6, 3)  # a training-only head, like GoogLeNet's aux classifiers
        self.head = nn.Linear(6, 5)
        self.windows = Windows(4)
        self.win = nn.Linear(6, 5)  # on window partitions (MaxViT, Swin)

    def forward(self, x):
        x = self.to_chw(self.mlp(self.to_hwc(self.conv1(x))))
        x = self.pool(x)
        t = self.tokens(x)
        if self.training:
            self.aux(t[:, 0])
        return self.head(t[:, 0]) + self.win(self.windows(x)).mean((0, 1))


def build():
    return Net()
'''

YAML = """name: layouts
architecture: net.py:build
weights: none
input_size: [16, 16]
channels: 3
mean: 0.5
std: 0.25
labels: [a, b, c, d, e]
layers: [conv1, mlp, tokens, aux, win, head]
"""


@pytest.fixture
def tb(tmp_path):
    from dvis.models.loading import load_model
    from dvis.toolbox.app import Toolbox
    from dvis.toolbox.settings import load_settings

    folder = tmp_path / "layouts"
    folder.mkdir()
    (folder / "net.py").write_text(NET)
    (folder / "model.yaml").write_text(YAML)
    with pytest.warns(UserWarning):
        model = load_model(str(folder))
    toolbox = Toolbox(model, load_settings(None, {"images": str(make_images(tmp_path)), "pause_after_key_s": 0.0,
                                                  "global_scale": 0.6}), headless=True)
    yield toolbox
    toolbox.close()


def test_channels_last_and_token_layers_are_maps_of_their_grid(tb):
    assert tb.shapes == {"conv1": (4, 16, 16), "mlp": (6, 16, 16), "tokens": (6, 8, 8), "aux": (1,), "win": (5, 8, 8),
                         "head": (5,)}
    run_keys(tb, ["o"])  # mlp: N x H x W x C in the net, shown as 6 maps of 16 x 16
    out = tb.worker.output
    assert out.error is None and out.acts["mlp"].shape == (6, 16, 16)
    assert "hwc" in tb.status_text()
    assert tb.geo.grids[1] == (tb.tile_layouts[1].rows, tb.tile_layouts[1].cols)
    run_keys(tb, ["o", "b"])  # tokens: 6 maps of the 8 x 8 patch grid, the class token apart
    out = tb.worker.output
    assert out.error is None and out.acts["tokens"].shape == (6, 8, 8)
    np.testing.assert_allclose(out.extra["tokens"], np.full((1, 6), 2.0))
    assert "tokens+1" in tb.status_text()
    assert tb.rf_box(out.acts["tokens"]) is not None  # a patch has a field: the box is drawn
    assert out.grad is not None  # back-projection from a token unit
    run_keys(tb, ["o", "o"])  # win: (N * 4 windows) x 16 x 5 in the net, shown as 5 maps of 8 x 8
    out = tb.worker.output
    assert out.error is None and out.acts["win"].shape == (5, 8, 8)
    assert "5x8x8 partitioned" in tb.status_text()


def test_a_layer_that_never_runs_is_disabled_with_its_reason(tb):
    run_keys(tb, ["o", "o", "o", "b"])
    assert tb.state.layer == 3 and 3 in tb.disabled
    out = tb.worker.output
    assert out.error is None and "aux" not in out.acts and out.job.back is None
    t, l, h, w = tb.panes["layers"]
    assert (tb.canvas[t:t + h, l:l + w] == tb.style.disabled).mean() > 0.8
    reason = tb.why_disabled(3)  # e.g. "never called in the forward (an aux head in eval mode, ...)"
    assert reason and reason in tb.status_text()
    run_keys(tb, ["o"])
    assert tb.worker.output.probs is not None and tb.worker.output.job.back is not None
