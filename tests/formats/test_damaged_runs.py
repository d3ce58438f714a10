"""A damaged maxes run folder (issue 25, item 8): every reader of its .npz files (maxes.npz,
spectrum.npz, stats.npz, shards, the checkpoint of an interrupted run) says in one line which file is damaged and how to get a good run
back, never a BadZipFile traceback nor numpy's advice about pickles."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from helpers.analyses import run_cli
from helpers.pipeline import make_images, make_model

from dvis.cli import main
from dvis.errors import DvisError
from dvis.formats.maxes import load_result, load_shard, load_spectrum
from dvis.formats.stats import UnitStats


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """(model folder, images, a complete maxes run folder with statistics and a spectrum)."""
    root = tmp_path_factory.mktemp("damaged")
    model = make_model(root / "tiny")
    make_images(root / "imgs", n=8)
    assert main(["maxes", "--model", str(model), "--images", str(root / "imgs"), "--run-dir", str(root / "run"),
                 "--top", "2", "--batch-size", "4", "--workers", "0", "--quiet"]) == 0
    return model, root / "imgs", root / "run"


def _damage(path, how: str) -> None:
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif how == "garbage":
        path.write_bytes(b"not an npz archive at all\n")
    elif how == "empty":
        path.write_bytes(b"")
    else:  # a good archive without the arrays the reader needs
        np.savez(path, other=np.zeros(1))


def _copy(run, tmp_path):
    return shutil.copytree(run, tmp_path / "run")


def _assert_one_line(text: str, path) -> None:
    assert str(path) in text and "\n" not in text.strip()
    assert "pickle" not in text and "BadZipFile" not in text and "Traceback" not in text


@pytest.mark.parametrize("how", ["truncated", "garbage", "empty", "incomplete"])
def test_a_damaged_maxes_npz_names_the_file_and_the_way_out(run, tmp_path, how):
    folder = _copy(run[2], tmp_path)
    _damage(folder / "maxes.npz", how)
    with pytest.raises(DvisError) as info:
        load_result(folder)
    _assert_one_line(str(info.value), folder / "maxes.npz")
    assert f"dvis maxes --run-dir {folder} ... --force" in str(info.value) and f"delete {folder}" in str(info.value)


def test_dvis_crops_on_a_truncated_maxes_npz_is_one_line(run, tmp_path, capsys):
    model, images, good = run
    folder = _copy(good, tmp_path)
    _damage(folder / "maxes.npz", "truncated")
    rc, _, err = run_cli(capsys, "crops", "--model", model, "--run-dir", folder, "--out", tmp_path / "vis",
                         "--workers", "0", "--quiet")
    assert rc == 2 and err.startswith("dvis crops: error: ") and err.count("\n") == 1
    _assert_one_line(err, folder / "maxes.npz")
    # the way out it names works
    rc, _, err = run_cli(capsys, "maxes", "--model", model, "--images", images, "--run-dir", folder, "--top", "2",
                         "--batch-size", "4", "--workers", "0", "--quiet", "--force")
    assert rc == 0, err
    assert load_result(folder)[0].top == 2


def test_damaged_spectrum_and_statistics_are_one_line(run, tmp_path):
    folder = _copy(run[2], tmp_path)
    _damage(folder / "spectrum.npz", "truncated")
    for read in (load_spectrum, load_result):
        with pytest.raises(DvisError, match="spectrum.npz: not a readable maxes spectrum") as info:
            read(folder)
        _assert_one_line(str(info.value), folder / "spectrum.npz")
    _damage(folder / "stats.npz", "garbage")
    with pytest.raises(DvisError, match="stats.npz: not a readable unit statistics file") as info:
        UnitStats(folder)
    _assert_one_line(str(info.value), folder / "stats.npz")
    assert "--force" in str(info.value)


@pytest.mark.parametrize("how", ["truncated", "garbage"])
def test_a_damaged_shard_is_one_line(tmp_path, how):
    shard = tmp_path / "0-of-2.npz"
    np.savez(shard, manifest=np.array("{}"), skipped=np.zeros(0, np.int64))
    _damage(shard, how)
    with pytest.raises(DvisError, match="not a readable maxes shard") as info:
        load_shard(shard)
    _assert_one_line(str(info.value), shard)


@pytest.mark.parametrize("how", ["garbage", "truncated"])
def test_a_damaged_checkpoint_names_the_file_and_force(run, tmp_path, capsys, how):
    model, images, good = run
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "checkpoint.npz").write_bytes((good / "maxes.npz").read_bytes())
    _damage(folder / "checkpoint.npz", how)
    argv = ["maxes", "--model", model, "--images", images, "--run-dir", folder, "--top", "2", "--batch-size", "4",
            "--workers", "0", "--quiet"]
    rc, _, err = run_cli(capsys, *argv)
    assert rc == 2 and err.count("\n") == 1
    _assert_one_line(err, folder / "checkpoint.npz")
    assert "--force" in err
    rc, _, err = run_cli(capsys, *argv, "--force")
    assert rc == 0, err
    assert not (folder / "checkpoint.npz").exists()
