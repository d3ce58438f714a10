"""The CI subset of the model zoo (bench/zoo.py runs all of it): modern torchvision classifiers and
two timm CNNs at their default input sizes and random init.

Per model: geometry against a real forward (shapes, layouts, token grids, boxes inside the image),
exact fields against the independent gradient-support method where it applies, and the headless
toolbox visiting every layer with back-projection on. Then ``dvis maxes`` + ``dvis crops`` on a
small folder for a channels-last layer, a token layer and an SE-gated layer.
"""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from dvis.engine.activations import activations
from dvis.engine.geometry import model_geometry, to_maps
from dvis.models.loading import load_model
from helpers.geometry_reference import gradient_field

TORCHVISION = ["resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "googlenet", "densenet121",
               "regnet_y_400mf", "vit_b_16", "swin_t"]
TIMM = ["timm:efficientnet_b0", "timm:convnext_atto"]

#: Named layers whose layout, grid and extra tokens are known by construction.
LAYOUTS = {
    "resnet18": [("layer1.0", "chw", (56, 56), 0), ("fc", "vector", None, 0)],
    "mobilenet_v3_small": [("features.1", "chw", (56, 56), 0)],
    "efficientnet_b0": [("features.2.0", "chw", (56, 56), 0)],
    # ConvNeXt block internals after Permute are N,H,W,C (issue 9: they were tiled as if H were C)
    "convnext_tiny": [("features.1.0.block.5", "hwc", (56, 56), 0), ("features.1.0", "chw", (56, 56), 0)],
    "googlenet": [("inception3a", "chw", (28, 28), 0)],
    "densenet121": [("features.denseblock1", "chw", (56, 56), 0)],
    "regnet_y_400mf": [("trunk_output.block2", "chw", (28, 28), 0)],
    "vit_b_16": [("conv_proj", "chw", (14, 14), 0), ("encoder.layers.encoder_layer_0", "tokens", (14, 14), 1)],
    "swin_t": [("features.1.0", "hwc", (56, 56), 0), ("features.3", "hwc", (28, 28), 0)],
    "timm:efficientnet_b0": [("blocks.1.0", "chw", (56, 56), 0)],
    "timm:convnext_atto": [("stages.0", "chw", (56, 56), 0)],
}
#: Layers behind a squeeze-and-excitation gate: a local field smaller than the input, global context.
SE_GATED = {"mobilenet_v3_small": "features.4", "efficientnet_b0": "features.3.1",
            "regnet_y_400mf": "trunk_output.block2", "timm:efficientnet_b0": "blocks.2.1"}
#: Modules the eval forward never calls (aux heads) that the default layer list must not offer as live.
NOT_RUN = {"googlenet": "aux1.conv.conv"}


@pytest.fixture(scope="module", params=TORCHVISION + TIMM)
def model(request):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # random init
        torch.manual_seed(0)
        return load_model(request.param, weights="none")


@pytest.fixture(scope="module")
def geometry(model):
    return model_geometry(model)


def test_geometry_matches_the_forward(model, geometry):
    geo = geometry
    assert set(model.layers) <= set(geo)
    running = [layer for layer in model.layers if geo[layer].runs]
    for layer in set(model.layers) - set(running):
        assert geo[layer].reason, layer
    x = torch.randn((1, model.channels) + model.input_size)
    with torch.no_grad():
        acts = activations(model, x, running)
    h, w = model.input_size
    for layer in running:
        g, a = geo[layer], acts[layer]
        assert g.shape == tuple(a.shape[1:]), layer
        assert g.layout in ("chw", "hwc", "tokens", "vector"), (layer, g.layout, g.reason)
        maps = to_maps(a, g)
        assert g.rf is not None and g.rf.input_size == (h, w), layer
        if g.layout == "vector":
            assert maps.shape == (1, g.channels), layer
            continue
        assert maps.shape == (1, g.channels) + g.grid, layer
        # every position's field is a non-empty box inside the image
        gh, gw = g.grid
        tops, lefts, bottoms, rights = g.rf.box(np.array([0, gh - 1, gh // 2]), np.array([0, gw - 1, gw // 2]))
        assert (bottoms > tops).all() and (rights > lefts).all(), (layer, g.rf)
    for layer, layout, grid, extra in LAYOUTS[model.name]:
        g = geo[layer]
        assert (g.layout, g.grid, g.extra_tokens) == (layout, grid, extra), layer
    if model.name in SE_GATED:
        g = geo[SE_GATED[model.name]]
        assert g.global_context and g.rf.size[0] < h and g.rf.size[1] < w, g
    if model.name in NOT_RUN:
        assert not geo[NOT_RUN[model.name]].runs


def _sample(items: list, k: int) -> list:
    if len(items) <= k:
        return items
    return [items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)]


def test_fields_match_the_gradient_method(model, geometry):
    # Where no global operation feeds a layer and its field fits in the input, the gradient-support
    # method (tests/helpers/geometry_reference.py) measures it exactly: both must agree.
    h, w = model.input_size
    local = [layer for layer in model.layers if geometry[layer].runs and geometry[layer].layout == "chw"
             and not geometry[layer].global_context and geometry[layer].rf.size[0] < h and geometry[layer].rf.size[1] < w]
    assert local, "no layer with a local field"
    for layer in _sample(local, 2):  # the shallowest and the deepest (one float64 backward each)
        ref = gradient_field(model, layer, model.input_size)
        got = geometry[layer].rf
        assert (got.size, got.stride, got.padding) == (ref.size, ref.stride, ref.padding), layer


def _images(folder, n: int, size=(96, 128)) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, size + (3,), dtype=np.uint8)).save(folder / f"img{i}.png")
    return str(folder)


def test_toolbox_visits_every_layer_with_back_projection(model, tmp_path):
    from dvis.toolbox.app import Toolbox
    from dvis.toolbox.settings import load_settings

    settings = load_settings(None, {"images": _images(tmp_path / "images", 2), "pause_after_key_s": 0.0,
                                    "screenshot_dir": str(tmp_path / "shots")})
    tb = Toolbox(model, settings, headless=True)
    try:
        keys = ["b"] + ["o"] * (len(model.layers) - 1)
        for i, key in enumerate(keys):
            tb.press(key)
            tb.settle()
            canvas = tb.render()
            assert tb.state.layer == i and tb.state.back_on
            out = tb.worker.output
            assert out is not None and out.error is None, (model.layers[i], out and out.error)
            assert out.grad is not None and np.isfinite(out.grad).all(), model.layers[i]
            assert not tb.message.startswith("worker:"), tb.message
        assert canvas.shape[2] == 3 and canvas.any()
    finally:
        tb.close()


# ---------------------------------------------------------------------------- maxes + crops

PIPELINE = {
    # a channels-last layer, an SE-gated one and a token layer (a small 64 px ViT keeps the crops cheap)
    "convnext": ("architecture: convnext_tiny\nlayers: [features.1.0.block.5]\n", "features.1.0.block.5", 96),
    "timm_se": ("architecture: timm:efficientnet_b0\nlayers: [blocks.1.0]\n", "blocks.1.0", 24),
    "vit": ("architecture: torchvision.models.vision_transformer:VisionTransformer\n"
            "args: {image_size: 64, patch_size: 16, num_layers: 2, num_heads: 2, hidden_dim: 32, mlp_dim: 64, "
            "num_classes: 10}\ninput_size: 64\nmean: [0.5, 0.5, 0.5]\nstd: [0.25, 0.25, 0.25]\n"
            "layers: [encoder.layers.encoder_layer_0]\n", "encoder.layers.encoder_layer_0", 32),
}


@pytest.mark.parametrize("case", sorted(PIPELINE))
def test_maxes_and_crops(case, tmp_path):
    from dvis.formats.unit_vis import UnitImages

    yaml_text, layer, units = PIPELINE[case]
    folder = tmp_path / "model"
    folder.mkdir()
    # random init differs per process: maxes and crops must see the same weights, from a file
    (folder / "model.yaml").write_text(f"name: zoo-{case}\nweights: none\n" + yaml_text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.save(load_model(str(folder)).net.state_dict(), folder / "weights.pt")
    (folder / "model.yaml").write_text(f"name: zoo-{case}\nweights: weights.pt\n" + yaml_text)
    images = _images(tmp_path / "images", 6)
    run, uv = tmp_path / "run", tmp_path / "uv"
    env_cmd = [sys.executable, "-W", "ignore", "-m", "dvis"]
    for args in (["maxes", "--model", str(folder), "--images", images, "--run-dir", str(run), "--top", "2",
                  "--workers", "0", "--quiet"],
                 ["crops", "--run-dir", str(run), "--out", str(uv), "--workers", "0", "--quiet"]):
        proc = subprocess.run(env_cmd + args, capture_output=True, text=True, timeout=600,
                              env={**__import__("os").environ, "DVIS_DATA_DIR": str(tmp_path / "data")})
        assert proc.returncode == 0, proc.stderr[-2000:]
    unit_images = UnitImages(uv)
    for unit in (0, units // 2, units - 1):
        for kind in ("top9", "deconv"):
            img = unit_images.load(layer, unit, kind)
            assert img is not None and img.ndim == 3 and img.any(), (layer, unit, kind)
