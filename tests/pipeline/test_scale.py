"""Every step scales out: crops and optimize split units across processes (--shard i/N files, or
torchrun with 2 gloo processes), each process does only its share, and the merged unit_vis is
the one process's, byte for byte."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dvis.pipeline.crops import compute_crops, crops_part, merge_crops
from dvis.imaging.datasets import open_source
from dvis.pipeline.distributed import Shard, deal, parse_shard, shard_batches
from dvis.errors import DvisError
from dvis.pipeline.maxes import TrackConfig, track_maxes
from dvis.models.loading import load_model
from dvis.pipeline.optimize import OptSettings, merge_opt, optimize_units
from dvis.formats.unit_vis import UnitImages

from helpers.pipeline import TORCHRUN, env_with_models, make_images, make_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    model_dir = make_model(root / "models" / "tiny-blob")
    make_images(root / "images", n=24)
    model = load_model(str(model_dir))
    source = open_source(root / "images")
    result = track_maxes(model, source, config=TrackConfig(top=4, batch_size=8, workers=0, progress=False))
    return root, model, source, result


def test_dealing_is_balanced_and_complete():
    batches = list(range(11))
    shares = [deal(batches, r, 3) for r in range(3)]
    assert sorted(sum(shares, [])) == batches and {len(s) for s in shares} == {3, 4}
    assert shard_batches(10, 3, (1, 2)) == [[3, 4, 5], [9]] and shard_batches(10, 3, (0, 2)) == [[0, 1, 2], [6, 7, 8]]
    assert parse_shard("1/4") == (1, 4)
    with pytest.raises(DvisError):
        parse_shard("4/4")


@pytest.mark.parametrize("layer", ["conv1", "conv2", "fc"])
def test_sharded_crops_merge_to_the_single_process_result(tiny, layer):
    _, model, source, result = tiny
    one = compute_crops(model, result, source, layer, ("deconv", "guided"), batch_size=5, workers=0)
    shares = [compute_crops(model, result, source, layer, ("deconv", "guided"), batch_size=5, workers=0,
                            shard=Shard(r, 2)) for r in range(2)]
    units = [set(np.flatnonzero(s.done.any(1))) for s in shares]
    assert not units[0] & units[1] and units[0] | units[1] == set(range(len(one.done)))
    assert all(s.done.any(1).sum() == len(range(r, len(one.done), 2)) for r, s in enumerate(shares))  # 1 unit a batch
    merged = merge_crops(shares[0], [crops_part(s) for s in shares])
    assert np.array_equal(merged.patches, one.patches) and np.array_equal(merged.recheck, one.recheck, equal_nan=True)
    for m in one.backs:
        assert np.array_equal(merged.backs[m], one.backs[m])
    assert (merged.mismatches, merged.fallbacks) == (one.mismatches, one.fallbacks)
    with pytest.raises(DvisError, match="cover"):
        merge_crops(shares[0], [crops_part(shares[0])])


def test_sharded_optimize_seeds_per_unit_and_merges_exactly(tiny):
    _, model, _, _ = tiny
    s = OptSettings(iters=6, seeds=2, batch_size=4)  # 2 units per batch, 3 units: batches {0,1}, {2}
    one = optimize_units(model, "conv2", None, s)
    shares = [optimize_units(model, "conv2", None, s, shard=Shard(r, 2)) for r in range(2)]
    assert shares[0].units.tolist() == [0, 1] and shares[1].units.tolist() == [2]
    parts = [{"units": r.units, "images": r.images, "activations": r.activations} for r in shares]
    merged = merge_opt("conv2", one.units, parts[::-1])
    assert np.array_equal(merged.images, one.images) and np.array_equal(merged.activations, one.activations)


def _run(cmd, env, timeout=300):
    r = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, (r.stdout[-2000:], r.stderr[-3000:])
    return r


def _same_unit_vis(a: Path, b: Path):
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and "maxes" not in p.parts)
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and "maxes" not in p.parts)
    assert any(f.suffix == ".jpg" for f in files) and not any(".parts" in f.parts for f in files)
    for f in files:
        if f.suffix == ".jpg":
            assert (a / f).read_bytes() == (b / f).read_bytes(), f
        elif f.suffix == ".json":
            ja, jb = json.loads((a / f).read_text()), json.loads((b / f).read_text())
            for key in ("date", "created"):  # provenance timestamps
                ja.pop(key, None), jb.pop(key, None)
                for d in (ja, jb):
                    for v in d.values():
                        if isinstance(v, dict):
                            v.pop(key, None)
            assert ja == jb, f


def _sprite_bytes(root: Path, layer: str, kind: str) -> bytes:
    return (root / layer / UnitImages(root).layout(layer)[kind]["file"]).read_bytes()


def _shares(stdout: str, step: str) -> dict[int, int]:
    """rank -> units it reported computing, per layer summed."""
    out: dict[int, int] = {}
    for rank, n in re.findall(rf"{step} \w+: shard (\d)/2 \w+ (\d+) of", stdout):
        out[int(rank)] = out.get(int(rank), 0) + int(n)
    return out


def test_torchrun_precompute_and_shard_files_equal_one_process(tiny, tmp_path):
    root = tiny[0]
    env = env_with_models(root / "models")
    common = ["--model", "tiny-blob", "--images", str(root / "images"), "--top", "4", "--batch-size", "8",
              "--workers", "0", "--iters", "5", "--seeds", "2", "--opt-batch-size", "2", "--quiet"]
    one = tmp_path / "one"
    _run([sys.executable, "-m", "dvis", "precompute", *common, "--out", str(one)], env)
    dist = tmp_path / "dist"
    r = _run(list(TORCHRUN) + ["precompute", *common, "--out", str(dist)], env, timeout=600)
    _same_unit_vis(one, dist)
    total = 2 + 2 + 3 + 4  # units of conv1, pool1, conv2, fc
    for step in ("crops", "optimize"):
        shares = _shares(r.stdout, step)
        assert sorted(shares) == [0, 1] and sum(shares.values()) == total and max(shares.values()) < total, step
    assert r.stdout.count("precompute: unit images") == 1  # rank 0 reports, once

    # --shard i/N: independent processes, the last one to finish merges.
    files = tmp_path / "files"
    run_dir = one / "maxes"
    for i in range(2):
        r = _run([sys.executable, "-m", "dvis", "crops", "--run-dir", str(run_dir), "--out", str(files), "--batch-size", "8",
                  "--workers", "0", "--shard", f"{i}/2", "--quiet"], env)
        assert ("shard 0/2 done" in r.stdout) == (i == 0) and ("4 layer(s) written" in r.stdout) == (i == 1)
        opt = ["optimize", "--model", "tiny-blob", "--layers", "conv2", "--out", str(files), "--run-dir", str(run_dir),
               "--iters", "5", "--seeds", "2", "--opt-batch-size", "2", "--shard", f"{i}/2", "--quiet"]
        _run([sys.executable, "-m", "dvis", *opt], env)
    for layer in ("conv1", "pool1", "conv2", "fc"):
        for kind in ("top9", "deconv"):
            assert _sprite_bytes(files, layer, kind) == _sprite_bytes(one, layer, kind), (layer, kind)
    assert _sprite_bytes(files, "conv2", "opt") == _sprite_bytes(one, "conv2", "opt")
    assert not (files / "conv2" / ".parts").exists()


def test_torchrun_optimize_alone_splits_units_and_equals_one_process(tiny, tmp_path):
    """`dvis optimize` by itself (no precompute around it) under 2 gloo processes: each rank
    optimizes its own share of each layer's units and the written layers equal one process's."""
    root = tiny[0]
    env = env_with_models(root / "models")
    common = ["optimize", "--model", "tiny-blob", "--layers", "conv2,fc", "--iters", "3", "--seeds", "2",
              "--opt-batch-size", "2", "--quiet"]  # 1 unit per batch: conv2's 3 units and fc's 4 are dealt 2+1, 2+2
    _run([sys.executable, "-m", "dvis", *common, "--out", str(tmp_path / "one")], env)
    r = _run(list(TORCHRUN) + [*common, "--out", str(tmp_path / "dist")], env, timeout=300)
    per_layer = {(layer, int(rank)): int(n) for layer, rank, n in
                 re.findall(r"optimize (\w+): shard (\d)/2 optimized (\d+) of", r.stdout)}
    assert per_layer == {("conv2", 0): 2, ("conv2", 1): 1, ("fc", 0): 2, ("fc", 1): 2}, r.stdout
    _same_unit_vis(tmp_path / "one", tmp_path / "dist")
    for layer in ("conv2", "fc"):
        assert _sprite_bytes(tmp_path / "dist", layer, "opt") == _sprite_bytes(tmp_path / "one", layer, "opt")
