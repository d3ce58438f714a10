"""Window- and grid-partitioned layers (MaxViT, Swin/timm-style windows merged with the batch):
recognised as maps over the image grid, converted exactly by to_maps/from_maps, with window fields
checked against the gradient support (tests/helpers/geometry_reference.py) and grid attention global."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models.maxvit import SwapAxes, WindowDepartition, WindowPartition

from helpers.geometry_reference import support_box
from helpers.layout_modules import Windows
from dvis.engine.activations import activations
from dvis.engine.geometry import ReceptiveField, from_maps, model_geometry, to_maps
from dvis.engine.layers import default_layers

SIZE = (16, 24)


class _Attention(nn.Module):
    """x + softmax(x x^T) v(x) along dim -2 (the positions of a window or grid cell), by einsum."""

    def __init__(self, c: int):
        super().__init__()
        self.v = nn.Linear(c, c)

    def forward(self, x):
        a = torch.softmax(torch.einsum("bgic,bgjc->bgij", x, x), dim=-1)
        return x + torch.einsum("bgij,bgjc->bgic", a, self.v(x))


def _merged_back(t, n: int, h: int, w: int, p: int):
    """Hand-written inverse of layout_modules.Windows (the test's own, not dvis's)."""
    return t.reshape(n, h // p, w // p, p, p, -1).permute(0, 5, 1, 3, 2, 4).reshape(n, -1, h, w)


class _MergedBack(nn.Module):
    def __init__(self, p: int):
        super().__init__()
        self.p = p

    def forward(self, t, h: int, w: int):
        return _merged_back(t, t.shape[0] * self.p * self.p // (h * w), h, w, self.p)


class _SdpaAttention(nn.Module):
    """Two-head attention through F.scaled_dot_product_attention on (windows, positions, C)."""

    def __init__(self, c: int):
        super().__init__()
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, x):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, 2, c // 2).permute(2, 0, 3, 1, 4)
        return x + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)


class _MaxViTLike(nn.Module):
    """A conv; window attention in 4x4 windows merged with the batch; window attention in 8x8 windows
    and grid attention over a 2x2 grid with torchvision's MaxViT partition modules."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.merged = Windows(4)
        self.merged_attn = _SdpaAttention(8)
        self.merged_back = _MergedBack(4)
        self.window = WindowPartition()
        self.window_attn = _Attention(8)
        self.window_back = WindowDepartition()
        self.grid = WindowPartition()
        self.grid_swap = SwapAxes(-2, -3)
        self.grid_attn = _Attention(8)
        self.grid_unswap = SwapAxes(-2, -3)
        self.grid_back = WindowDepartition()

    def forward(self, x):
        y = self.conv(x)
        h, w = y.shape[-2:]
        y = self.merged_back(self.merged_attn(self.merged(y)), h, w)
        y = self.window_back(self.window_attn(self.window(y, 8)), 8, h // 8, w // 8)
        # grid: p = 2 cells per window side, attention across windows (dilated by 2)
        z = self.grid_unswap(self.grid_attn(self.grid_swap(self.grid(y, 2))))
        return self.grid_back(z, 2, h // 2, w // 2)


PARTITIONED = ["merged", "merged_attn", "window", "window_attn", "grid", "grid_swap", "grid_attn", "grid_unswap"]
#: layer -> the un-partitioned (N x C x H x W) tensor its maps must equal
SAME_AS = {"merged": "conv", "merged_attn": "merged_back", "window": "merged_back", "window_attn": "window_back",
           "grid": "window_back", "grid_swap": "window_back", "grid_attn": "grid_back", "grid_unswap": "grid_back"}


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    net = _MaxViTLike().eval()
    geo = model_geometry(net, SIZE)
    with torch.no_grad():
        acts = activations(net, torch.randn((2, 3) + SIZE), list(geo))
    return net, geo, acts


def test_partitioned_layers_are_maps_that_unpartition_exactly(tiny):
    net, geo, acts = tiny
    for name in PARTITIONED:
        g = geo[name]
        assert g.layout == "partitioned" and g.spatial and g.reordered, (name, g)
        assert (g.channels, g.grid) == (8, SIZE), name
        assert g.shape == tuple(acts[name].shape[1:]) or name.startswith("merged"), name
        maps = to_maps(acts[name], g)
        assert torch.equal(maps, acts[SAME_AS[name]]), name
        assert torch.equal(from_maps(maps, g, acts[name]), acts[name]), name
    # windows merged with the batch: a sample's share is 24 windows of 16 positions
    assert geo["merged"].shape == (24, 16, 8) and acts["merged"].shape == (48, 16, 8)
    assert geo["window"].shape == (6, 64, 8) and geo["grid_swap"].shape == (4, 96, 8)
    for name in ("merged_back", "window_back", "grid_back"):
        assert geo[name].layout == "chw"
    layers = default_layers(net)
    assert {"merged_attn", "window_attn", "grid_attn"} <= set(layers) and all(geo[n].visualizable for n in layers)


def test_window_attention_field_is_the_window(tiny):
    net, geo, _ = tiny
    h, w = SIZE
    conv = geo["conv"].rf
    assert conv == ReceptiveField((3, 3), (1, 1), (1, 1), SIZE)
    # 4x4 windows: every position sees its window's 4 rows/columns plus the conv's 1 px either side
    merged = geo["merged_attn"]
    assert merged.rf == ReceptiveField((6, 6), (1, 1), (1, 1), SIZE, window=(4, 4)) and not merged.global_context
    assert geo["merged_back"].rf == merged.rf
    # 8x8 windows over the 4x4-window field: 8 + 2
    window = geo["window_attn"]
    assert window.rf == ReceptiveField((10, 10), (1, 1), (1, 1), SIZE, window=(8, 8)) and not window.global_context
    assert window.rf.box(9, 17) == (7, 15, 16, 24) and window.rf.box(9, 17, clip=False) == (7, 15, 17, 25)
    as_maps = {
        "merged_attn": lambda t: _merged_back(t, 1, h, w, 4),
        "window_attn": lambda t: WindowDepartition()(t, 8, h // 8, w // 8),
        "window_back": None,
    }
    for name, convert in as_maps.items():
        for y, x in [(0, 0), (5, 6), (9, 13), (12, 21), (15, 23)]:
            assert support_box(net, name, SIZE, y, x, convert) == geo[name].rf.box(y, x), (name, y, x)


def test_grid_attention_is_global(tiny):
    net, geo, _ = tiny
    h, w = SIZE
    for name in ("grid_attn", "grid_unswap", "grid_back"):
        g = geo[name]
        assert g.global_context and "positions" in g.reason, (name, g.reason)
        assert g.rf.window == g.grid and g.rf.size == SIZE  # one field, the whole input, for every position
        for y, x in [(0, 0), (7, 11), (15, 23)]:
            assert g.rf.box(y, x) == (0, 0, h, w)
    # the true field is a dilated grid spread over the whole image, far beyond any window
    unswap = lambda t: WindowDepartition()(SwapAxes(-2, -3)(t), 2, h // 2, w // 2)  # noqa: E731
    top, left, bottom, right = support_box(net, "grid_attn", SIZE, 7, 11, unswap)
    assert top == 0 and left == 0 and bottom == h and right == w


def test_windows_of_other_sizes_bound_the_field():
    """A window field that meets a conv becomes a per-position field that contains it."""
    net = nn.Sequential()
    net.conv = nn.Conv2d(3, 4, 3, padding=1)
    net.part = Windows(4)
    net.attn = _SdpaAttention(4)
    net.back = _Lambda(lambda t: _merged_back(t, t.shape[0] // 6, 8, 12, 4))
    net.conv2 = nn.Conv2d(4, 4, 3, padding=1)
    geo = model_geometry(net, (8, 12))
    rf = geo["conv2"].rf
    assert rf.window == (1, 1) and not geo["conv2"].global_context
    for y, x in [(0, 0), (3, 4), (4, 5), (7, 11)]:
        top, left, bottom, right = support_box(net, "conv2", (8, 12), y, x)
        t, l_, b, r = rf.box(y, x)
        assert t <= top and l_ <= left and b >= bottom and r >= right, (y, x)


class _Lambda(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


@pytest.fixture(scope="module")
def maxvit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        net = torchvision.models.maxvit_t().eval()
    return net, model_geometry(net)


def test_maxvit_every_default_layer_has_a_layout(maxvit):
    net, geo = maxvit
    layers = default_layers(net)
    assert not [n for n in layers if geo[n].layout == "other"]
    assert not [n for n, g in geo.items() if g.runs and g.input_dependent and g.layout == "other"]
    win = "blocks.0.layers.0.layers.window_attention."
    grid = "blocks.0.layers.0.layers.grid_attention."
    for name in (win + "attn_layer.1", win + "attn_layer.1.to_qkv", win + "mlp_layer.3", grid + "attn_layer.1",
                 grid + "mlp_layer.1", "blocks.3.layers.0.layers.window_attention.attn_layer.1"):  # the last: one 7x7 window
        assert name in layers and geo[name].layout == "partitioned", name
    assert geo[win + "partition_op"].layout == geo[grid + "partition_swap"].layout == "partitioned"
    assert geo[win + "attn_layer.1.to_qkv"].channels == 3 * 64
    assert geo[win + "attn_layer.1"].grid == (56, 56) and geo[win + "attn_layer.1"].channels == 64
    assert geo["blocks.3.layers.0.layers.window_attention.attn_layer.1"].grid == (7, 7)


def test_maxvit_maps_round_trip_and_unpartition(maxvit):
    net, geo = maxvit
    win = "blocks.0.layers.0.layers.window_attention."
    grid = "blocks.1.layers.1.layers.grid_attention."
    names = [win + "partition_op", win + "attn_layer.1", win + "mlp_layer", "blocks.0.layers.0.layers.MBconv",
             win[:-1], grid + "partition_swap", grid + "attn_layer", grid + "departition_swap", grid[:-1],
             "blocks.1.layers.1.layers.window_attention", "blocks.3.layers.1.layers.window_attention.attn_layer.0"]
    with torch.no_grad():
        acts = activations(net, torch.randn(1, 3, 224, 224), names)
    for name in names:
        g, v = geo[name], acts[name]
        assert g.shape == tuple(v.shape[1:]), name
        maps = to_maps(v, g)
        assert maps.shape == (1, g.channels) + g.grid, name
        assert torch.equal(from_maps(maps, g, v), v), name
    # the partition of the MBConv output is that output, and the grid partition that of its input
    assert torch.equal(to_maps(acts[win + "partition_op"], geo[win + "partition_op"]),
                       acts["blocks.0.layers.0.layers.MBconv"])
    assert torch.equal(to_maps(acts[grid + "partition_swap"], geo[grid + "partition_swap"]),
                       acts["blocks.1.layers.1.layers.window_attention"])


def test_maxvit_fields(maxvit):
    net, geo = maxvit
    mb = geo["blocks.0.layers.0.layers.MBconv"].rf
    attn = geo["blocks.0.layers.0.layers.window_attention.attn_layer.1"]
    # the first window attention: the MBConv (conv path) field widened to the 7x7 window, at stride 4;
    # the SE gate inside the MBConv flags global context
    assert attn.rf == ReceptiveField((mb.size[0] + 6 * 4, mb.size[1] + 6 * 4), (4, 4), mb.padding, (224, 224), (7, 7))
    assert attn.global_context and "squeeze-and-excitation" in attn.reason
    # after the first grid attention every layer sees the whole image
    for name in ("blocks.0.layers.0.layers.grid_attention.attn_layer.1",
                 "blocks.1.layers.0.layers.window_attention.attn_layer.1", "blocks.2.layers.2"):
        g = geo[name]
        assert g.global_context and g.rf.box(*np.array(g.grid) // 2) == (0, 0, 224, 224), name


@pytest.mark.parametrize(("make", "size", "window"), [
    (torchvision.models.swin_t, (224, 224), 7),
    (torchvision.models.swin_v2_t, (256, 256), 8),
], ids=["swin_t", "swin_v2_t"])
def test_swin_first_block_sees_its_window(make, size, window):
    # Swin's first block attends inside unshifted windows (merged with the batch inside its functional
    # attention): the field is the window, exactly; the next block's shifted windows (torch.roll) are
    # taken as global
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = make().eval()
    geo = model_geometry(net, size)
    g = geo["features.1.0"]
    assert g.rf == ReceptiveField((4 * window,) * 2, (4, 4), (0, 0), size, (window, window)) and not g.global_context
    for y, x in [(0, 0), (10, 20), (size[0] // 4 - 1, 30)]:
        assert support_box(net, "features.1.0", size, y, x, lambda t: t.permute(0, 3, 1, 2)) == g.rf.box(y, x)
    shifted = geo["features.1.1"]
    assert shifted.global_context and shifted.rf.box(0, 0) == (0, 0) + size


# ------------------------------------------------------- a small MaxViT through maxes, crops, toolbox

TINY_MAXVIT = """architecture: torchvision.models.maxvit:MaxVit
args: {input_size: [64, 64], stem_channels: 16, partition_size: 4, block_channels: [16, 32], block_layers: [1, 1],
       head_dim: 8, stochastic_depth_prob: 0.0, num_classes: 10}
input_size: 64
mean: [0.5, 0.5, 0.5]
std: [0.25, 0.25, 0.25]
"""
#: window attention (windowed field), grid attention (global), an MBConv conv (a small local field:
#: crops try input windows, which MaxViT cannot run, and fall back to whole images)
PIPELINE_LAYERS = ["blocks.0.layers.0.layers.window_attention.attn_layer.1",
                   "blocks.0.layers.0.layers.grid_attention.mlp_layer.3",
                   "blocks.0.layers.0.layers.MBconv.layers.conv_a"]


@pytest.fixture(scope="module")
def tiny_maxvit(tmp_path_factory):
    from dvis.models.loading import load_model

    folder = tmp_path_factory.mktemp("tiny_maxvit")
    (folder / "model.yaml").write_text("name: tiny-maxvit\nweights: none\n" + TINY_MAXVIT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.manual_seed(0)
        torch.save(load_model(str(folder)).net.state_dict(), folder / "weights.pt")
    (folder / "model.yaml").write_text("name: tiny-maxvit\nweights: weights.pt\n" + TINY_MAXVIT)
    images = folder / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    from PIL import Image

    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(images / f"img{i}.png")
    return folder, images


def test_tiny_maxvit_maxes_and_crops(tiny_maxvit, tmp_path):
    import os
    import subprocess
    import sys

    from dvis.formats.unit_vis import UnitImages

    folder, images = tiny_maxvit
    yaml = (folder / "model.yaml").read_text()
    (folder / "model.yaml").write_text(yaml + f"layers: [{', '.join(PIPELINE_LAYERS)}]\n")
    run, uv = tmp_path / "run", tmp_path / "uv"
    cmd = [sys.executable, "-W", "ignore", "-m", "dvis"]
    try:
        for args in (["maxes", "--model", str(folder), "--images", str(images), "--run-dir", str(run), "--top", "2",
                      "--workers", "0", "--quiet"],
                     ["crops", "--run-dir", str(run), "--out", str(uv), "--workers", "0", "--quiet"]):
            proc = subprocess.run(cmd + args, capture_output=True, text=True, timeout=600,
                                  env={**os.environ, "DVIS_DATA_DIR": str(tmp_path / "data")})
            assert proc.returncode == 0, proc.stderr[-2000:]
    finally:
        (folder / "model.yaml").write_text(yaml)
    assert "0 activation mismatch" in proc.stdout + proc.stderr
    unit_images = UnitImages(uv)
    for layer in PIPELINE_LAYERS:
        for unit in (0, 15):
            for kind in ("top9", "deconv"):
                img = unit_images.load(layer, unit, kind)
                assert img is not None and img.ndim == 3 and img.any(), (layer, unit, kind)


def test_tiny_maxvit_toolbox_visits_every_layer(tiny_maxvit, tmp_path):
    from dvis.models.loading import load_model
    from dvis.toolbox.app import Toolbox
    from dvis.toolbox.settings import load_settings

    folder, images = tiny_maxvit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = load_model(str(folder))
    geo = model_geometry(model)
    assert sum(geo[n].layout == "partitioned" for n in model.layers) >= 20
    settings = load_settings(None, {"images": str(images), "pause_after_key_s": 0.0,
                                    "screenshot_dir": str(tmp_path / "shots")})
    tb = Toolbox(model, settings, headless=True)
    try:
        for i, key in enumerate(["b"] + ["o"] * (len(model.layers) - 1)):
            tb.press(key)
            tb.settle()
            tb.render()
            out = tb.worker.output
            assert tb.state.layer == i and i not in tb.disabled, model.layers[i]
            assert out is not None and out.error is None and np.isfinite(out.grad).all(), (model.layers[i], out.error)
            g = geo[model.layers[i]]
            if g.spatial:
                assert out.acts[model.layers[i]].shape == (g.channels,) + g.grid
    finally:
        tb.close()


class _SplitTwice(nn.Module):
    """Rows split as 4 x 4, then the coarse part split again (2 x 2 x 4), parts permuted."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)
        self.parts = _Lambda(lambda y: y.reshape(y.shape[0], 4, 4, 4, 8).reshape(y.shape[0], 4, 2, 2, 4, 8)
                             .permute(0, 3, 5, 1, 4, 2))
        self.mix_middle = _Lambda(lambda t: torch.softmax(t, dim=1))  # over the middle part of the rows

    def forward(self, x):
        return self.mix_middle(self.parts(self.conv(x)))


def test_splitting_a_split_axis_again_keeps_coarse_to_fine_order():
    net = _SplitTwice().eval()
    geo = model_geometry(net, (16, 8))
    g = geo["parts"]
    assert g.layout == "partitioned" and (g.channels, g.grid) == (4, (16, 8))
    x = torch.randn(2, 3, 16, 8)
    with torch.no_grad():
        acts = activations(net, x, ["conv", "parts"])
    assert torch.equal(to_maps(acts["parts"], g), acts["conv"])
    # the middle part of the rows (stride 4) is not a window: mixing it makes the rows global
    mixed = geo["mix_middle"]
    assert mixed.global_context and mixed.rf.window == (16, 1) and mixed.rf.box(5, 3)[::2] == (0, 16)
