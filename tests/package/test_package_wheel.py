"""The wheel: it ships the default model (weights, checkpoints, complete unit images), the other model
folders, the sample images and the settings templates as package data, stays within 60 MB, and
works from any folder (models, images and settings are found inside the installed package)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "dvis", "models", "input_images", "settings")
BUDGET = 60_000_000


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the checkout (the build writes nothing into the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        (shutil.copytree if (REPO / name).is_dir() else shutil.copy)(
            REPO / name, src / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if (REPO / name).is_dir() else {}))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    (found,) = (tmp / "dist").glob("dvis-*.whl")
    return found


def test_wheel_ships_the_default_model_images_and_settings(wheel):
    assert wheel.stat().st_size <= BUDGET, f"wheel is {wheel.stat().st_size / 1e6:.1f} MB"
    names = set(zipfile.ZipFile(wheel).namelist())
    data = "dvis/_data/"
    model = data + "models/zf-cifar10/"
    yaml_text = zipfile.ZipFile(wheel).read(model + "model.yaml").decode()
    for line in ("weights: weights.pt", "checkpoints/epoch-025.pt"):
        assert line in yaml_text
    assert {model + "weights.pt", model + "labels.txt", model + "unit_vis/manifest.json"} <= names
    assert {model + f"checkpoints/epoch-{e:03d}.pt" for e in (1, 2, 5, 10, 20, 25)} <= names
    manifest = json.loads(zipfile.ZipFile(wheel).read(model + "unit_vis/manifest.json"))
    for layer in manifest["layers"]:
        layout = json.loads(zipfile.ZipFile(wheel).read(f"{model}unit_vis/{layer}/layout.json"))
        for kind in ("top9", "deconv", "opt"):
            assert f"{model}unit_vis/{layer}/{layout[kind]['file']}" in names and all(layout[kind]["present"])
    assert {data + f"models/{m}/model.yaml" for m in ("alexnet", "vgg16", "resnet18")} <= names
    assert sum(n.startswith(data + "input_images/") and n.endswith(".png") for n in names) >= 10
    assert data + "settings/settings_local.template-zf-cifar10.py" in names
    assert "dvis/cli.py" in names and not any("__pycache__" in n or ".tmp" in n for n in names)


def test_unpacked_wheel_works_from_another_folder(wheel, tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DVIS_MODELS"}
    env.update(PYTHONPATH=str(site), DVIS_DATA_DIR=str(tmp_path / "data"), DVIS_CONFIG_DIR=str(tmp_path / "config"))

    def dvis(*argv):
        return subprocess.run([sys.executable, "-m", "dvis", *argv], cwd=elsewhere, env=env, capture_output=True,
                              text=True, timeout=300)

    r = dvis("vis-info", "zf-cifar10")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"unit images in {site / 'dvis' / '_data' / 'models' / 'zf-cifar10' / 'unit_vis'} (shipped)" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "complete"
    r = dvis("info", "--paths")
    assert r.returncode == 0, r.stderr[-2000:]
    rows = [line.split(None, 1) for line in r.stdout.splitlines()]
    assert str(site / "dvis" / "_data" / "models") in r.stdout and str(site / "dvis" / "_data" / "input_images") in r.stdout
    assert str(tmp_path / "data" / "models") in r.stdout and str(tmp_path / "config" / "settings_local.py") in r.stdout
    assert str(elsewhere / "models") in r.stdout and len(rows) >= 8
    r = dvis("info", "--model", "alexnet", "--weights", "none")
    assert r.returncode == 0 and str(site / "dvis" / "_data" / "models" / "alexnet") in r.stdout, r.stderr[-2000:]
