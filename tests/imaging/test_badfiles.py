"""Every command that reads images, on the same folder of bad files: each unreadable file is skipped
with exactly one warning naming it, the summary counts them, and the command succeeds."""
from __future__ import annotations

import pytest

from helpers.analyses import run_cli, tiny_model_folder
from helpers.badfiles import BAD, ODD, PLAIN, write_bad_folder

from dvis.imaging.datasets import open_source, read_sources
from dvis.errors import DvisError
from dvis.imaging.images import read_image


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    model = tiny_model_folder(root, checkpoints=2)
    images = write_bad_folder(root / "data" / "test" / "cat")
    return root, model, images


def assert_each_bad_warned_once(err: str) -> None:
    lines = [line for line in err.splitlines() if "skipping unreadable image" in line]
    for name in BAD:
        assert sum(name in line for line in lines) == 1, (name, err)
    assert len(lines) == len(BAD), err


def test_reader_skips_bad_files_and_reads_odd_ones(setup, recwarn):
    _, _, images = setup
    read = open_source(images).read_all()
    assert sorted(n.rsplit("/", 1)[-1] for n in read.skipped) == sorted(BAD)
    assert len(read.images) == len(ODD) + len(PLAIN)
    assert all(img.ndim == 3 and img.shape[2] == 3 and img.dtype.name == "uint8" for img in read.images)
    assert read.summary() == f"{len(ODD) + len(PLAIN)} images ({len(BAD)} skipped as unreadable)"
    assert len([w for w in recwarn if "skipping unreadable image" in str(w.message)]) == len(BAD)


def test_decompression_bomb_is_refused_before_decoding(setup):
    _, _, images = setup
    with pytest.raises(DvisError, match="bomb.png") as info:
        read_image(images / "bomb.png")
    assert "\n" not in str(info.value)


def test_a_source_of_only_bad_files_is_one_clear_error(setup, tmp_path):
    _, _, images = setup
    for name in BAD:
        (tmp_path / name).write_bytes((images / name).read_bytes())
    with pytest.raises(DvisError, match=rf"no readable images in .* \({len(BAD)} skipped as unreadable\)"):
        read_sources(str(tmp_path))


def test_maxes_crops_precompute(setup, capsys, tmp_path):
    _, model, images = setup
    rc, out, err = run_cli(capsys, "maxes", "--model", model, "--images", images, "--run-dir", tmp_path / "run",
                           "--workers", "0", "--quiet", "--top", "2")
    assert rc == 0, err
    assert f"{len(BAD)} skipped as unreadable" in out
    assert_each_bad_warned_once(err)
    rc, out, err = run_cli(capsys, "crops", "--run-dir", tmp_path / "run", "--out", tmp_path / "uv", "--workers", "0",
                           "--quiet", "--layers", "conv1,fc6")
    assert rc == 0, err
    assert "skipping" not in err  # only the top images are read again, and they were readable
    rc, out, err = run_cli(capsys, "precompute", "--model", model, "--images", images, "--out", tmp_path / "uv2",
                           "--workers", "0", "--quiet", "--top", "2", "--layers", "conv1", "--skip", "optimize")
    assert rc == 0, err
    assert f"{len(BAD)} skipped as unreadable" in out
    assert_each_bad_warned_once(err)


@pytest.mark.parametrize("argv", [
    ["invariance", "--transforms", "translate", "--layers", "conv1,fc6"],
    ["evolution", "--layers", "conv1", "--units", "0"],
    ["occlusion", "--size", "16", "--stride", "16", "--layers", "conv2"],
])
def test_experiments(setup, capsys, tmp_path, argv):
    _, model, images = setup
    rc, out, err = run_cli(capsys, *argv, "--model", model, "--images", images, "--out", tmp_path / "out")
    assert rc == 0, err
    assert f"images: {len(ODD) + len(PLAIN)} images ({len(BAD)} skipped as unreadable)" in out
    assert_each_bad_warned_once(err)


def test_evaluate(setup, capsys):
    root, model, _ = setup
    rc, out, err = run_cli(capsys, "evaluate", "--model", model, "--data", root / "data", "--split", "test")
    assert rc == 0, err
    assert f"on {len(ODD) + len(PLAIN)} 'test' images" in out and f"({len(BAD)} skipped as unreadable)" in out
    assert_each_bad_warned_once(err)


def test_toolbox_headless_steps_through_bad_files(setup, tmp_path, capsys):
    from dvis.commands.apps import main

    _, model, images = setup
    keys = " ".join(["e"] * (len(BAD) + len(ODD) + len(PLAIN) + 2))
    rc = main(["--headless", "--model", str(model), "--images", str(images), "--keys", keys,
               "--out", str(tmp_path / "shots")])
    assert rc == 0, capsys.readouterr().err
    assert len(list((tmp_path / "shots").glob("*.png"))) >= 1


def test_toolbox_with_only_bad_files_says_no_images_in_every_pane(setup, tmp_path):
    from dvis.models.loading import load_model
    from dvis.toolbox.app import Toolbox
    from dvis.toolbox.settings import load_settings

    _, model, images = setup
    for name in BAD:
        (tmp_path / name).write_bytes((images / name).read_bytes())
    tb = Toolbox(load_model(str(model)), load_settings(None, {"images": str(tmp_path)}), headless=True)
    try:
        tb.settle()
        tb.render()
        assert tb.frame is None
        assert tb._waiting().startswith("no images: no readable images") and "\n" not in tb._waiting()
    finally:
        tb.close()


def test_toolbox_reads_a_tar_through_the_same_reader(setup, tmp_path):
    import tarfile

    from dvis.toolbox.inputs import FileSource

    _, _, images = setup
    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tf:
        for p in sorted(images.iterdir()):
            tf.add(p, arcname=f"imgs/{p.name}")
    src = FileSource(str(archive), pattern=r"cat_|zero|text")
    assert len(src) == len(PLAIN) + 2 and all("::imgs/" in p for p in src.paths)
    index, frame, msg = src.read(0)  # natural order: cat_0, cat_1, text, zero
    assert index == 0 and frame.shape == (32, 32, 3)
    index, frame, msg = src.read(2)
    assert index == 0 and "skipped 2" in msg and frame is not None  # text and zero skipped, wrapped to cat_0
