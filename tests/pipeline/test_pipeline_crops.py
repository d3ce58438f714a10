"""Receptive-field crops, back-projection mosaics, the unit_vis layout, vis-info and precompute end to end."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dvis.pipeline.crops import compute_crops, crop_batch
from dvis.imaging.datasets import open_source
from dvis.pipeline.maxes import TrackConfig, track_maxes
from dvis.models.loading import load_model
from dvis.formats.unit_tiles import mosaics
from dvis.formats.unit_vis import UnitImages, coverage

from helpers.pipeline import SIZE, env_with_models, make_images, make_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("crops")
    model_dir = make_model(root / "models" / "tiny-blob")
    specs = make_images(root / "images", n=24)
    model = load_model(str(model_dir))
    source = open_source(root / "images")
    result = track_maxes(model, source, config=TrackConfig(top=4, batch_size=8, workers=0, progress=False))
    return root, model, source, result, specs


def test_crop_batch_pads_outside_the_image():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4) + 1
    boxes = torch.tensor([[-1, -1, 2, 2], [2, 1, 5, 4]])
    out = crop_batch(x, boxes, (3, 3))[..., 0]
    assert out[0].tolist() == [[0, 0, 0], [0, 1, 2], [0, 5, 6]]
    assert out[1].tolist() == [[26, 27, 28], [30, 31, 32], [0, 0, 0]]


def test_conv1_boxes_patches_and_deconvs_are_known(tiny):
    _, model, source, result, specs = tiny
    lc = compute_crops(model, result, source, "conv1", ("deconv", "grad"), batch_size=5, workers=0)
    assert lc.mismatches == 0
    np.testing.assert_allclose(lc.recheck, result.values["conv1"], rtol=1e-5)
    assert lc.patches.shape == (2, 4, 3, 3, 3)
    for slot in range(4):
        i = result.index["conv1"][0, slot]
        y, x = result.pos["conv1"][0, slot]
        assert lc.boxes[0, slot].tolist() == [y - 1, x - 1, y + 2, x + 2]
        img = source.load(i)
        padded = np.pad(img, ((1, 1), (1, 1), (0, 0)))
        assert np.array_equal(lc.patches[0, slot], padded[y:y + 3, x:x + 3])
        # Unit 0 sums its 3x3 window, so its deconv is 1 on the window's in-image pixels, 0 (gray) outside.
        inside = np.zeros((3, 3), bool)
        inside[max(0, 1 - y):3 - max(0, y + 2 - SIZE), max(0, 1 - x):3 - max(0, x + 2 - SIZE)] = True
        assert (lc.backs["deconv"][0, slot][inside] == 255).all()
        assert (lc.backs["deconv"][0, slot][~inside] == 128).all()


@pytest.mark.parametrize("layer", ["conv1", "pool1", "conv2"])
def test_receptive_field_windows_equal_whole_images(tiny, layer):
    _, model, source, result, _ = tiny
    win = compute_crops(model, result, source, layer, ("deconv", "guided"), batch_size=7, workers=0)
    full = compute_crops(model, result, source, layer, ("deconv", "guided"), batch_size=7, workers=0, windows=False)
    assert win.fallbacks == 0 and win.mismatches == 0 and full.mismatches == 0
    np.testing.assert_allclose(win.recheck, full.recheck, rtol=1e-5)
    assert np.array_equal(win.patches, full.patches)
    for mode in ("deconv", "guided"):
        assert np.abs(win.backs[mode].astype(int) - full.backs[mode].astype(int)).max() <= 1


def test_mosaics_tile_every_unit_in_one_call():
    patches = np.random.default_rng(0).integers(0, 255, (5, 9, 7, 7, 3), dtype=np.uint8)
    m = mosaics(patches, min_patch=20)
    assert m.shape[0] == 5 and m.shape[1] % 16 == 0 and m.shape[1] == m.shape[2]
    p = (m.shape[1] - 4) // 3  # 3 cells of p plus two 2-pixel gaps
    cell = m[3, p + 2:2 * p + 2, :p]  # unit 3, row 1, column 0: its 4th patch
    assert cell.shape[0] >= 20 and np.all(cell[0, 0] == patches[3, 3, 0, 0])


def test_precompute_end_to_end_then_vis_info_reports_a_missing_unit(tiny, tmp_path):
    root = tiny[0]
    env = env_with_models(root / "models")
    out = tmp_path / "unit_vis"
    cmd = [sys.executable, "-m", "dvis", "precompute", "--model", "tiny-blob", "--images", str(root / "images"),
           "--out", str(out), "--top", "9", "--batch-size", "8", "--workers", "0", "--iters", "10", "--seeds", "2",
           "--quiet"]
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "0 activation mismatch" in r.stdout
    vis = UnitImages(out)
    assert json.loads((out / "manifest.json").read_text())["format"] == "dvis-unit-vis"
    assert vis.layers() == ["conv1", "pool1", "conv2", "fc"]
    top9 = vis.load("conv1", 0, "top9")
    assert top9.shape[0] % 16 == 0 and top9.shape[0] >= 3 * 48
    assert vis.sprite("fc", "opt").shape[:1] == (4,) and vis.load("fc", 3, "opt_seeds").shape[1] == 2 * vis.load("fc", 3, "opt").shape[1]
    info = vis.info("conv2", 1)
    assert len(info["values"]) == 9 and len(info["boxes"]) == 9 and len(info["opt_activations"]) == 2
    assert info["images"][0].startswith(("a/", "b/"))

    r2 = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert "already complete" in r2.stdout and "crops: 0 layer(s) written" in r2.stdout

    layout_path = out / "conv2" / "layout.json"
    layout = json.loads(layout_path.read_text())
    layout["opt"]["present"][2] = 0
    layout_path.write_text(json.dumps(layout))
    assert vis.load("conv2", 2, "opt") is None
    gaps = coverage(out, {"conv1": 2, "pool1": 2, "conv2": 3, "fc": 4})
    assert gaps["conv2"]["opt"] == [2] and all(not v for layer, kinds in gaps.items() for k, v in kinds.items()
                                               if (layer, k) != ("conv2", "opt"))
    r3 = subprocess.run([sys.executable, "-m", "dvis", "vis-info", "tiny-blob", "--unit-vis", str(out)], env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=120)
    assert r3.returncode == 0, r3.stderr
    assert "opt: 2" in r3.stdout and "incomplete" in r3.stdout


SE_NET = '''
import torch
from torch import nn


class SENet(nn.Module):
    """conv1 -> squeeze-and-excitation gate -> conv2: conv2's units have a 5x5 field, but the
    gate (the mean of the whole conv1 map) also feeds them."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.excite = nn.Conv2d(4, 4, 1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 2)

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        x = x * torch.sigmoid(self.excite(x.mean((2, 3), keepdim=True)))
        return self.fc(self.conv2(x).amax((2, 3)))


def build():
    torch.manual_seed(0)
    return SENet()
'''


def test_layers_behind_a_global_gate_are_cropped_on_whole_images(tmp_path):
    """A window changes the gate's mean, so the back-projection (and mostly the value, then
    recomputed) would differ from the whole image's: such layers are cropped on whole images.
    Before, this net's windowed values passed the check and its deconvs came out different."""
    folder = tmp_path / "se-net"
    folder.mkdir()
    (folder / "senet.py").write_text(SE_NET)
    (folder / "model.yaml").write_text(f"name: se-net\narchitecture: senet.py:build\nweights: none\n"
                                       f"input_size: [{SIZE}, {SIZE}]\nlayers: [conv1, conv2]\n")
    make_images(tmp_path / "images", n=12)
    with pytest.warns(UserWarning, match="random init"):
        model = load_model(str(folder))
    source = open_source(tmp_path / "images")
    result = track_maxes(model, source, config=TrackConfig(top=3, batch_size=4, workers=0, progress=False))
    gated = compute_crops(model, result, source, "conv2", ("deconv",), batch_size=5, workers=0)
    full = compute_crops(model, result, source, "conv2", ("deconv",), batch_size=5, workers=0, windows=False)
    assert gated.fallbacks == 0 and gated.mismatches == 0
    assert np.array_equal(gated.patches, full.patches) and np.array_equal(gated.backs["deconv"], full.backs["deconv"])
    local = compute_crops(model, result, source, "conv1", ("deconv",), batch_size=5, workers=0)
    assert local.fallbacks == 0 and local.mismatches == 0  # conv1 is before the gate: windows still pay off
