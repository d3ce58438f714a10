"""scripts/train_cifar10.py: a tiny run of each architecture (a few dozen generated images, small
widths, 2 epochs) writes a model folder dvis loads, with the layouts its model.yaml promises; a run
stopped after one epoch resumes from its state to the same weights as an uninterrupted run."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import yaml

import dvis
from dvis.cli import main as dvis_main
from dvis.engine.geometry import model_geometry

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "train_cifar10.py"
CLASSES = ("cat", "dog", "ship")
#: Small widths so that each run takes seconds; the layouts each must show.
TINY = {
    "zf": ({"widths": [8, 8, 8, 8, 8], "fc_width": 16}, {"chw", "vector"}),
    "resnet": ({"blocks": [1, 1], "widths": [8, 16]}, {"chw"}),
    "convnext": ({"widths": [8, 16], "depths": [1, 1]}, {"chw", "hwc", "vector"}),
    "vit": ({"num_layers": 1, "num_heads": 2, "hidden_dim": 16, "mlp_dim": 32}, {"chw", "tokens", "vector"}),
}


@pytest.fixture(scope="module")
def train():
    spec = importlib.util.spec_from_file_location("train_cifar10", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    del sys.modules[spec.name]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """train/<class>/*.jpg (8 a class) and test/<class>/*.jpg (3 a class): coloured noise, one hue a class."""
    root = tmp_path_factory.mktemp("cifar")
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 3)):
        for c, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, (32, 32, 3), dtype=np.uint8)
                img[..., c] += 150
                cv2.imwrite(str(root / split / name / f"{i}.jpg"), img)
    return root


def _run(train, arch: str, data: Path, out: Path, *extra: str) -> int:
    net_args = json.dumps(TINY[arch][0])
    return train.main(["--arch", arch, "--data", str(data), "--out", str(out), "--net-args", net_args,
                       "--epochs", "2", "--batch-size", "8", "--threads", "1", *extra])


@pytest.mark.parametrize("arch", sorted(TINY))
def test_tiny_run_writes_a_loadable_model_folder(train, data, tmp_path, capsys, arch):
    out = tmp_path / f"{arch}-tiny"
    assert _run(train, arch, data, out) == 0
    for name in ("weights.pt", "labels.txt", "model.yaml", "train_log.json", "metrics.json",
                 "checkpoints/epoch-001.pt", "checkpoints/epoch-002.pt"):
        assert (out / name).is_file(), name
    spec = yaml.safe_load((out / "model.yaml").read_text())
    assert spec["architecture"].startswith("dvis.nets.") and spec["args"] == {"num_classes": 3, **TINY[arch][0]}
    assert spec["checkpoints"] == ["checkpoints/epoch-001.pt", "checkpoints/epoch-002.pt"]
    log = json.loads((out / "train_log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2] and log["classes"] == list(CLASSES)
    assert log["sessions"][0]["machine"]["cpu"] and log["sessions"][0]["last_epoch"] == 2 and log["seconds"] > 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["images"] == 9 and set(metrics["per_class_top1"]) == set(CLASSES)
    assert 0 <= metrics["top1"] <= metrics["top5"] <= 1

    model = dvis.load_model(out)
    assert model.labels == list(CLASSES) and model.layers == spec["layers"]
    geo = model_geometry(model.net, (32, 32))
    layouts = {geo[name].layout for name in model.layers}
    assert TINY[arch][1] <= layouts and "other" not in layouts
    last = geo[model.layers[-1]]
    assert last.layout == "vector" and last.channels == len(CLASSES)  # the classifier output comes last
    if arch == "vit":
        assert all(geo[n].extra_tokens == 1 for n in model.layers if geo[n].layout == "tokens")
    ckpt = torch.load(out / "checkpoints" / "epoch-001.pt")
    assert all(v.dtype == torch.float16 for v in ckpt.values() if v.is_floating_point())
    model.net.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ckpt.items()})
    if arch != "zf":  # norms are shipped as trained; zf's batch norm is folded away
        assert any("bn" in k or "norm" in k or k.endswith(".ln.weight") or ".block.2." in k for k in ckpt)
    else:
        assert not any(k.startswith("bn") for k in ckpt)

    capsys.readouterr()
    assert dvis_main(["info", str(out)]) == 0
    table = capsys.readouterr().out.split("\n\n")[1]
    shown = {line.split()[0]: line.split()[-1].rstrip("*") for line in table.splitlines()[1:]}
    assert list(shown) == model.layers  # tokens+1: one class token before the patch grid
    assert set(shown.values()) == {"tokens+1" if lay == "tokens" else lay for lay in layouts}


@pytest.mark.parametrize("arch", ["resnet", "vit"])
def test_a_stopped_run_resumes_to_the_same_weights(train, data, tmp_path, arch):
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    assert _run(train, arch, data, whole) == 0
    assert _run(train, arch, data, parts, "--session-epochs", "1") == 0
    assert not (parts / "metrics.json").exists() and (parts / ".train_state.pt").is_file()
    assert [e["epoch"] for e in json.loads((parts / "train_log.json").read_text())["epochs"]] == [1]
    assert _run(train, arch, data, parts, "--resume") == 0  # picks up at epoch 2
    log = json.loads((parts / "train_log.json").read_text())
    assert [e["epoch"] for e in log["epochs"]] == [1, 2] and [s["first_epoch"] for s in log["sessions"]] == [1, 2]
    a, b = torch.load(whole / "weights.pt"), torch.load(parts / "weights.pt")
    assert a.keys() == b.keys() and all(torch.allclose(a[k].float(), b[k].float(), atol=1e-6) for k in a)
    with pytest.raises(SystemExit, match=re.escape(f"trains --arch {arch}")):
        train.main(["--arch", "zf" if arch != "zf" else "vit", "--data", str(data), "--out", str(parts)])


def test_resume_without_a_state_is_an_error(train, data, tmp_path):
    with pytest.raises(SystemExit, match="no training state"):
        _run(train, "resnet", data, tmp_path / "none", "--resume")


def test_checkpoint_epochs(train):
    assert train.checkpoint_epochs(25) == [1, 2, 5, 10, 20, 25]  # zf-cifar10's
    assert train.checkpoint_epochs(100) == [1, 2, 20, 40, 80, 100]
    assert 4 <= len(train.checkpoint_epochs(40)) <= 6 and train.checkpoint_epochs(2) == [1, 2]
