"""Shared fixtures-by-function for the analyses tests: a tiny ZF-style model folder, images, the CLI."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

from dvis.cli import main
from dvis.nets.zf_cifar import zf_cifar10

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
WIDTHS = [4, 8, 8, 8, 8]


def tiny_model_folder(root: Path, checkpoints: int = 2, seed: int = 0) -> Path:
    """A model folder with a small random ZF-style CIFAR net, its labels and ``checkpoints`` fp16 state dicts."""
    folder = root / "tiny-zf"
    (folder / "checkpoints").mkdir(parents=True)
    torch.manual_seed(seed)
    names = []
    for i in range(checkpoints):
        net = zf_cifar10(widths=tuple(WIDTHS), fc_width=16)
        names.append(f"checkpoints/epoch-{i + 1:03d}.pt")
        torch.save({k: v.half() for k, v in net.state_dict().items()}, folder / names[-1])
    torch.save(zf_cifar10(widths=tuple(WIDTHS), fc_width=16).state_dict(), folder / "weights.pt")
    (folder / "labels.txt").write_text("\n".join(LABELS) + "\n")
    spec = {
        "name": "tiny-zf", "architecture": "dvis.nets.zf_cifar:zf_cifar10",
        "args": {"widths": WIDTHS, "fc_width": 16}, "weights": "weights.pt",
        "input_size": [32, 32], "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25],
        "labels": "labels.txt",
        "layers": ["conv1", "pool1", "conv2", "pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "fc7", "fc8"],
        "checkpoints": names,
    }
    (folder / "model.yaml").write_text(yaml.safe_dump(spec))
    return folder


def write_images(root: Path, names: list[str], size: int = 32, seed: int = 0) -> list[Path]:
    """Random RGB PNGs named ``names`` under ``root``."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name in names:
        paths.append(root / name)
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """Run ``dvis argv...`` in-process; returns (exit code, stdout, stderr)."""
    rc = main([str(a) for a in argv])
    out = capsys.readouterr()
    return rc, out.out, out.err


def assert_png(path: Path) -> None:
    """``path`` is a non-empty PNG with some non-white content."""
    assert path.is_file() and path.stat().st_size > 1000, path
    img = np.asarray(Image.open(path).convert("L"))
    assert img.min() < 200
