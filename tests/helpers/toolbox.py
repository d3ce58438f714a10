"""Shared fixtures for the toolbox tests: a tiny model folder with unit images and an image folder."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

TINYNET = '''
from collections import OrderedDict
import torch
from torch import nn

def build():
    torch.manual_seed(0)
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, 6, 3, padding=1)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 10, 3, padding=1)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()), ("fc3", nn.Linear(10 * 4 * 4, 5)),
    ]))
'''

MODEL_YAML = """name: tiny
architecture: tinynet.py:build
weights: weights.pt
input_size: [16, 16]
channels: 3
mean: 0.5
std: 0.25
labels: [red, green, blue, white, black]
layers: [conv1, pool1, conv2, {name: pool2, display: p2}, fc3]
unit_vis: unit_vis
checkpoints: [ckpt-1.pt]
"""

LAYERS = ["conv1", "pool1", "conv2", "pool2", "fc3"]


def make_model_folder(root: Path, unit_images: bool = True) -> Path:
    """A model folder with a 16x16 net, weights written here, a checkpoint, and opt/top9 unit images
    for conv1 (units 0..5, unit 5 absent)."""
    import torch

    from dvis.formats.unit_vis import ensure_manifest, write_sprite

    folder = root / "tiny"
    folder.mkdir(parents=True)
    (folder / "tinynet.py").write_text(TINYNET)
    (folder / "model.yaml").write_text(MODEL_YAML)
    ns: dict = {}
    exec(TINYNET, ns)
    net = ns["build"]()
    torch.save(net.state_dict(), folder / "weights.pt")
    torch.save({k: v * 0.5 for k, v in net.state_dict().items()}, folder / "ckpt-1.pt")
    if unit_images:
        uv = folder / "unit_vis"
        ensure_manifest(uv, "tiny", "conv1")
        tiles = np.stack([np.full((16, 16, 3), 40 * (i + 1), np.uint8) for i in range(6)])
        present = np.array([1, 1, 1, 1, 1, 0])
        write_sprite(uv, "conv1", "opt", tiles, present)
        write_sprite(uv, "conv1", "top9", tiles[:, :, ::-1], present)
    return folder


def make_images(root: Path) -> Path:
    """Images in every awkward format plus one unreadable file, natural-sorted as img1..img6."""
    folder = root / "images"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (40, 60, 3), dtype=np.uint8)).save(folder / "img1.png")
    Image.fromarray(rng.integers(0, 255, (30, 30), dtype=np.uint8)).save(folder / "img2.png")  # gray
    Image.fromarray(rng.integers(0, 255, (20, 50, 4), dtype=np.uint8)).save(folder / "img3.png")  # RGBA
    Image.fromarray(rng.integers(0, 65535, (24, 24), dtype=np.uint16)).save(folder / "img4.png")  # 16-bit
    Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).convert("P").save(folder / "img5.png")
    (folder / "img6.jpg").write_bytes(b"not a jpeg")  # unreadable: skipped with a message
    Image.fromarray(np.full((16, 16, 3), 255, np.uint8)).save(folder / "img10.bmp")
    return folder


def make_toolbox(tmp_path: Path, headless: bool = True, **overrides):
    """A Toolbox on the tiny model and images (caller closes it)."""
    from dvis.models.loading import load_model
    from dvis.toolbox.app import Toolbox
    from dvis.toolbox.settings import load_settings

    model = load_model(str(make_model_folder(tmp_path)))
    values = {"images": str(make_images(tmp_path)), "pause_after_key_s": 0.0,
              "screenshot_dir": str(tmp_path / "shots"), "global_scale": 0.6}
    values.update(overrides)
    return Toolbox(model, load_settings(None, values), headless=headless)
