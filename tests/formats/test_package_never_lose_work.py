"""Never lose work: pipeline outputs of a packaged model go to the user's data folder, complete unit
images from another run or other settings are not replaced without --force (the refusal names what
exists and what would replace it), and a SIGKILL at any moment leaves the previous images readable
and complete."""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from helpers.pipeline import env_with_models, make_images, make_model

from dvis.formats import paths
from dvis.formats.unit_vis import UnitImages, coverage

REPO = Path(__file__).resolve().parents[2]
LAYERS = {"conv1": 2, "pool1": 2, "conv2": 3, "fc": 4}
FAST_OPT = ["--iters", "4", "--seeds", "1"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("never-lose")
    make_model(root / "models" / "tiny-blob")
    make_images(root / "a", n=24)
    make_images(root / "b", n=12)
    return root


def dvis(env, *argv, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dvis", *map(str, argv)], env=env, cwd=REPO, capture_output=True,
                          text=True, timeout=timeout)


def precompute_cmd(images: Path, out: Path, *extra) -> list[str]:
    return ["precompute", "--model", "tiny-blob", "--images", images, "--out", out, "--top", "4", "--batch-size", "8",
            "--workers", "0", "--quiet", *FAST_OPT, *extra]


def assert_complete_and_readable(out: Path) -> None:
    """Every unit of every layer has a decodable top9, deconv and opt image of its layer's tile size."""
    gaps = coverage(out, LAYERS, ("top9", "deconv", "opt"))
    assert all(not v for kinds in gaps.values() for v in kinds.values()), gaps
    vis = UnitImages(out)
    for layer, n in LAYERS.items():
        for kind in ("top9", "deconv", "opt"):
            sprite = vis.sprite(layer, kind)
            assert sprite is not None and sprite.shape[0] == n, (layer, kind)
        for name in ("crops", "opt"):
            json.loads((out / layer / f"{name}.json").read_text())


def test_refuses_to_replace_complete_images_from_another_run(tiny, tmp_path):
    env = env_with_models(tiny / "models")
    out = tmp_path / "uv"
    r = dvis(env, *precompute_cmd(tiny / "a", out))
    assert r.returncode == 0, r.stderr[-2000:]
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "maxes" not in p.parts}

    r = dvis(env, *precompute_cmd(tiny / "b", out))
    assert r.returncode == 2
    msg = r.stderr.strip().splitlines()[-1]
    assert "already holds complete unit images" in msg and "--force" in msg
    assert f"crops of 24 images from {tiny / 'a'}" in msg and f"by crops of 12 images from {tiny / 'b'}" in msg
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and "maxes" not in p.parts} == before

    # dvis crops on a run over other images refuses the same way
    r = dvis(env, "maxes", "--model", "tiny-blob", "--images", tiny / "b", "--run-dir", tmp_path / "run-b", "--top", "4",
             "--workers", "0", "--quiet")
    assert r.returncode == 0, r.stderr[-2000:]
    r = dvis(env, "crops", "--run-dir", tmp_path / "run-b", "--out", out, "--workers", "0", "--quiet")
    assert r.returncode == 2 and "crops of 24 images" in r.stderr and "crops of 12 images" in r.stderr

    # optimize with other settings refuses too
    r = dvis(env, "optimize", "--model", "tiny-blob", "--layers", "fc", "--out", out, "--iters", "5", "--seeds", "1",
             "--quiet")
    assert r.returncode == 2 and "optimized images" in r.stderr and "iters=4" in r.stderr and "iters=5" in r.stderr

    r = dvis(env, *precompute_cmd(tiny / "b", out, "--force"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((out / "conv1" / "crops.json").read_text())["n_images"] == 12
    assert_complete_and_readable(out)


def test_packaged_model_outputs_go_to_the_user_data_folder(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("DVIS_DATA_DIR", str(tmp_path / "data"))
    from dvis.models.loading import load_model
    from dvis.pipeline.precompute import unit_vis_root

    shipped = load_model(None)  # the default model is packaged (the checkout's models/ in a checkout)
    assert paths.is_packaged(shipped.folder)
    assert unit_vis_root(shipped, None) == tmp_path / "data" / "unit_vis" / "zf-cifar10"
    assert shipped.unit_vis_dir == shipped.shipped_unit_vis_dir and paths.unit_vis_origin(shipped).startswith("shipped")

    computed = tmp_path / "data" / "unit_vis" / "zf-cifar10"
    shutil.copytree(shipped.shipped_unit_vis_dir / "conv1", computed / "conv1")
    (computed / "manifest.json").write_text(json.dumps({"format": "dvis-unit-vis", "version": 1, "model": "zf-cifar10",
                                                        "layers": ["conv1"]}))
    again = load_model(None)
    assert again.unit_vis_dir == computed and again.unit_vis_dirs == [computed, shipped.shipped_unit_vis_dir]
    assert paths.unit_vis_origin(again) == f"computed ({computed})"
    vis = UnitImages(*again.unit_vis_dirs)  # what the toolbox reads: computed layers first, the rest shipped
    assert vis.origin("conv1") == computed and vis.origin("conv2") == shipped.shipped_unit_vis_dir
    assert vis.load("conv2", 0, "top9") is not None and vis.load("conv1", 0, "top9") is not None
    assert vis.layers()[:2] == ["conv1", "pool1"] and len(vis.layers()) == 11
    # computed crops without optimized images: those still come from the shipped folder, kind by kind
    layout_path = computed / "conv1" / "layout.json"
    layout = json.loads(layout_path.read_text())
    layout.pop("opt")
    layout_path.write_text(json.dumps(layout))
    (computed / "conv1" / "opt.json").unlink()
    vis = UnitImages(*again.unit_vis_dirs)
    assert vis.origin("conv1", "top9") == computed and vis.origin("conv1", "opt") == shipped.shipped_unit_vis_dir
    assert vis.load("conv1", 3, "opt") is not None and "opt_activations" in vis.info("conv1", 3)
    r = subprocess.run([sys.executable, "-m", "dvis", "vis-info", "zf-cifar10"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=300, env=dict(os.environ, DVIS_DATA_DIR=str(tmp_path / "data")))
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"unit images in {computed} (computed), then {shipped.shipped_unit_vis_dir} (shipped)" in r.stdout
    assert r.stdout.strip().splitlines()[-1] == "complete"

    own = load_model(str(tiny / "models" / "tiny-blob"))  # a user's own model folder keeps its images inside
    assert not paths.is_packaged(own.folder) and unit_vis_root(own, None) == own.folder / "unit_vis"


def test_sigkill_at_random_points_keeps_previous_images_complete(tiny, tmp_path):
    env = env_with_models(tiny / "models")
    out = tmp_path / "uv"
    t0 = time.monotonic()
    r = dvis(env, *precompute_cmd(tiny / "a", out))
    full = time.monotonic() - t0
    assert r.returncode == 0, r.stderr[-2000:]
    assert_complete_and_readable(out)
    rng = random.Random(12)
    images = [tiny / "b", tiny / "a"]
    for i in range(6):
        # alternate sources so every run replaces every layer; --force lets it
        cmd = [sys.executable, "-m", "dvis", *map(str, precompute_cmd(images[i % 2], out, "--force"))]
        proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.3, full))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        assert_complete_and_readable(out)
        leftovers = [p for p in out.rglob(".*.tmp*")]
        for p in leftovers:  # a killed write leaves at most its own temporary file, never a half file under a real name
            assert p.name.startswith(".")
    r = dvis(env, *precompute_cmd(tiny / "a", out, "--force"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert_complete_and_readable(out)
    assert np.isfinite([v for v in json.loads((out / "fc" / "crops.json").read_text())["units"][0]["values"]]).all()
