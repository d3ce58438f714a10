"""Shared helpers for the tests/test_models_*.py files."""
from __future__ import annotations

import textwrap
import urllib.error
from pathlib import Path

import torch.hub

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "custom_model"

TINY_NET = '''
from torch import nn


def build(num_classes=3):
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes))
'''


def block_network(monkeypatch) -> list[str]:
    """Make every torch.hub download fail as if offline; returns the list of URLs that were tried."""
    tried: list[str] = []

    def offline(req, *args, **kwargs):
        tried.append(getattr(req, "full_url", str(req)))
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(torch.hub, "urlopen", offline)
    return tried


def make_model_folder(root: Path, yaml_text: str, name: str = "tiny", net_code: str = TINY_NET) -> Path:
    """A model folder with tinynet.py (``build(num_classes=3)``) and the given model.yaml."""
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "tinynet.py").write_text(net_code)
    (folder / "model.yaml").write_text(textwrap.dedent(yaml_text))
    return folder
