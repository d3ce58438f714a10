"""Regularized activation maximization: presets, regularizers, batching, and that it beats the dataset."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from dvis.engine.activations import forward_to
from dvis.imaging.datasets import open_source
from dvis.engine.geometry import model_geometry, to_maps
from dvis.pipeline.maxes import TrackConfig, track_maxes
from dvis.models.loading import load_model
from dvis.pipeline.optimize import OptSettings, optimize_units
from dvis.optvis.param import start_images, to_input
from dvis.optvis.presets import PRESETS, preset
from dvis.optvis.transforms import clip_small_contribution, clip_small_norm, gaussian_blur
from dvis.errors import DvisError

from helpers.layout_modules import SOURCE  # noqa: E402
from helpers.pipeline import make_images, make_model  # noqa: E402


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("opt")
    model = load_model(str(make_model(root / "tiny-blob")))
    make_images(root / "images", n=24)
    result = track_maxes(model, open_source(root / "images"), config=TrackConfig(top=1, batch_size=8, workers=0,
                                                                                   progress=False))
    return model, result


def test_presets_are_the_papers_table_1():
    rows = {n: (p.decay, p.blur_width, p.blur_every, p.norm_pct, p.contrib_pct) for n, p in PRESETS.items()}
    assert rows == {1: (0, 0.5, 4, 50, 0), 2: (0.3, 0, 0, 20, 0), 3: (0.0001, 1.0, 4, 0, 0), 4: (0, 0.5, 4, 0, 90)}
    with pytest.raises(DvisError, match="preset"):
        preset(5)


def test_regularizers():
    x = torch.randn(2, 3, 12, 12)
    const = torch.full((1, 3, 9, 9), 0.3)
    assert torch.allclose(gaussian_blur(const, 1.0), const, atol=1e-6)
    assert gaussian_blur(x, 1.0).std() < x.std()
    clipped = clip_small_norm(x, 50)
    zero_px = (clipped.norm(dim=1) == 0).flatten(1).sum(1)
    assert zero_px.tolist() == [72, 72]  # half of each image's 144 pixels
    grad = torch.randn_like(x)
    kept = clip_small_contribution(x, grad, 90)
    assert ((kept != 0).any(1).flatten(1).sum(1) <= 15).all()
    score = (x * grad).sum(1).abs().flatten(1)
    kept_px = (kept != 0).any(1).flatten(1)
    for b in range(2):  # per image: every kept pixel contributes more than every zeroed one
        assert score[b][kept_px[b]].min() > score[b][~kept_px[b]].max()


@pytest.mark.parametrize("layer", ["conv1", "pool1", "conv2", "fc"])
def test_optimized_images_beat_the_best_dataset_image(tiny, layer):
    model, result = tiny
    res = optimize_units(model, layer, None, OptSettings(iters=40, seeds=2))
    best = res.activations.max(1)
    dataset = result.values[layer][:, 0]
    live = dataset > 0.05  # units no image excites at all have nothing to beat
    assert live.any()
    assert (best[live] > 1.3 * dataset[live]).all(), (best, dataset)
    assert res.images.shape[:2] == (len(dataset), 2) and res.images.dtype == np.uint8


def test_batching_does_not_change_results(tiny):
    model, _ = tiny
    # Each image's run is independent of its batch mates (percentiles, step sizes and blur are per
    # image); only float rounding of differently sized convolutions may differ.
    s = OptSettings(iters=8, seeds=2, preset=3)
    whole = optimize_units(model, "conv2", [0, 2], s)
    s.batch_size = 1
    single = optimize_units(model, "conv2", [0, 2], s)
    np.testing.assert_allclose(whole.activations, single.activations, rtol=1e-3)
    assert np.abs(whole.images.astype(int) - single.images.astype(int)).max() <= 2
    assert not np.allclose(whole.activations[:, 0], whole.activations[:, 1])  # seeds differ


def test_bad_settings_are_one_line_errors(tiny):
    model, _ = tiny
    with pytest.raises(DvisError, match="lr policy"):
        optimize_units(model, "conv1", [0], OptSettings(lr_policy="adam"))
    with pytest.raises(DvisError, match="units 0..1"):
        optimize_units(model, "conv1", [5], OptSettings(iters=1))
    with pytest.raises(DvisError, match="unknown layer 'conv9'"):
        optimize_units(model, "conv9", [0], OptSettings(iters=1))


LAYOUT_NET = SOURCE + '''

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
        self.windows = Windows(4)
        self.win = nn.Linear(6, 5)  # on window partitions (MaxViT, Swin)
        self.head = nn.Linear(6, 5)

    def forward(self, x):
        x = self.pool(self.to_chw(self.mlp(self.to_hwc(self.conv1(x)))))
        w = self.win(self.windows(x))
        return self.head(self.tokens(x)[:, 0]) + w.mean((0, 1))


def build():
    return Net()
'''


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    (root / "net.py").write_text(LAYOUT_NET)
    (root / "model.yaml").write_text("name: layouts\narchitecture: net.py:build\nweights: none\n"
                                     "input_size: [16, 16]\nchannels: 3\nmean: 0.5\nstd: 0.25\n")
    return load_model(str(root))


@pytest.mark.parametrize("layer, layout", [("mlp", "hwc"), ("tokens", "tokens"), ("win", "partitioned")])
def test_units_of_reordered_layouts_are_channels_at_the_centre_of_their_maps(layouts, layer, layout):
    model = layouts
    geom = model_geometry(model)[layer]
    assert geom.layout == layout and geom.reordered
    s = OptSettings(iters=20, seeds=1)
    res = optimize_units(model, layer, None, s)
    assert res.units.tolist() == list(range(geom.channels))

    def centre(pixels: torch.Tensor) -> np.ndarray:
        """Images x channels: every channel's activation at the centre of the layer's maps."""
        with torch.no_grad():
            maps = to_maps(forward_to(model.net, to_input(pixels, torch.tensor(model.std)), layer), geom)
        return maps[:, :, geom.grid[0] // 2, geom.grid[1] // 2].numpy()

    got = centre(torch.from_numpy(res.pixels[:, 0]))  # row u: unit u's best image
    own = np.diag(got)
    # The reported objective of unit c is channel c at the map centre (not dimension 1 of the output).
    np.testing.assert_allclose(res.activations[:, 0], own, rtol=1e-4, atol=1e-5)
    start = centre(start_images(1, model.channels, model.input_size, torch.tensor(model.mean), s.start,
                                torch.Generator().manual_seed(0)))[0]
    assert (own > start + 0.1).all(), (own, start)  # the ascent raised its own channel
