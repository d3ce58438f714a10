"""Named pipes, devices and unreadable folders among the images (issue 25, items 7 and 9).

Opening a named pipe waits for a writer forever, so every check that would hang on a regression
runs where a hang fails the test: a command in a subprocess with a timeout, or a call in a thread
(helpers.badfiles.returns_within).
"""
from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.badfiles import returns_within
from helpers.pipeline import make_model

from dvis.errors import DvisError
from dvis.imaging.datasets import open_source
from dvis.imaging.images import list_images, read_image

pytestmark = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes are POSIX")

REPO = Path(__file__).resolve().parents[2]
PIPE_WARNING = "not a regular file (a named pipe)"


def _images(folder: Path, names: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for name in names:
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(folder / name)
    return folder


def _warnings(call):
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = call()
    return result, [str(w.message) for w in seen]


def test_listing_skips_a_named_pipe_with_one_warning(tmp_path):
    folder = _images(tmp_path / "imgs", ["a.png"])
    _images(folder / "sub", ["b.png"])
    os.mkfifo(folder / "pipe.png")
    os.mkfifo(folder / "sub" / "pipe.jpg")
    os.mkfifo(folder / "notes.txt")  # not named like an image: not looked at, no warning
    paths, seen = _warnings(lambda: list_images(folder))
    assert [Path(p).relative_to(folder).as_posix() for p in paths] == ["a.png", "sub/b.png"]
    assert sorted(seen) == [f"skipping unreadable image {folder / 'pipe.png'}: {PIPE_WARNING}",
                            f"skipping unreadable image {folder / 'sub' / 'pipe.jpg'}: {PIPE_WARNING}"]
    # a pattern that leaves the pipe out leaves its warning out too
    assert _warnings(lambda: list_images(folder, pattern="^a"))[1] == []


def test_a_named_pipe_given_as_image_or_list_entry_is_skipped(tmp_path):
    folder = _images(tmp_path, ["a.png"])
    os.mkfifo(tmp_path / "pipe.png")
    paths, seen = _warnings(lambda: list_images(tmp_path / "pipe.png"))
    assert paths == [] and seen == [f"skipping unreadable image {tmp_path / 'pipe.png'}: {PIPE_WARNING}"]
    (tmp_path / "list.txt").write_text("a.png\npipe.png\ngone.png\n")
    paths, seen = _warnings(lambda: list_images(tmp_path / "list.txt"))
    assert paths == [str(folder / "a.png")]
    assert seen[0] == f"skipping unreadable image {tmp_path / 'pipe.png'}: {PIPE_WARNING}"
    assert "1 missing image(s), first:" in seen[1] and "gone.png" in seen[1] and len(seen) == 2


def test_a_named_pipe_as_list_file_is_one_error_not_a_wait(tmp_path):
    os.mkfifo(tmp_path / "list")
    with pytest.raises(DvisError, match=re.escape(f"list: {PIPE_WARNING}")):
        returns_within(lambda: list_images(tmp_path / "list"), tmp_path / "list")


def test_opening_a_file_that_became_a_named_pipe_is_refused(tmp_path):
    """Listed as a file, replaced by a pipe before it is read: the reader refuses it, at once."""
    _images(tmp_path, ["a.png", "b.png"])
    source = open_source(tmp_path)
    (tmp_path / "b.png").unlink()
    os.mkfifo(tmp_path / "b.png")
    with pytest.raises(DvisError, match=re.escape(f"b.png: {PIPE_WARNING}")):
        returns_within(lambda: source.load(1), tmp_path / "b.png")
    read, seen = _warnings(lambda: returns_within(source.read_all, tmp_path / "b.png"))
    assert read.skipped == ["b.png"] and len(read.images) == 1
    assert seen == [f"skipping unreadable image b.png: {PIPE_WARNING}"]
    with pytest.raises(DvisError, match=re.escape(f"b.png: {PIPE_WARNING}")):
        returns_within(lambda: read_image(tmp_path / "b.png"), tmp_path / "b.png")


def test_tar_members_that_are_not_regular_files_are_skipped_with_a_warning(tmp_path):
    buf = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(buf, "PNG")
    archive = tmp_path / "images.tar"
    with tarfile.open(archive, "w") as tf:
        info = tarfile.TarInfo("a.png")
        info.size = len(buf.getvalue())
        tf.addfile(info, io.BytesIO(buf.getvalue()))
        for name, kind in (("pipe.png", tarfile.FIFOTYPE), ("link.png", tarfile.SYMTYPE)):
            member = tarfile.TarInfo(name)
            member.type, member.linkname = kind, "a.png" if kind == tarfile.SYMTYPE else ""
            tf.addfile(member)
        folder = tarfile.TarInfo("dir.png")
        folder.type = tarfile.DIRTYPE
        tf.addfile(folder)  # a folder named like an image: silently not an image
    source, seen = _warnings(lambda: open_source(archive))
    assert source.names == ["a.png"]
    assert sorted(seen) == ["skipping unreadable image link.png: not a regular file (a symbolic link)",
                            f"skipping unreadable image pipe.png: {PIPE_WARNING}"]


def test_an_unreadable_sub_folder_is_skipped_with_a_warning(tmp_path, monkeypatch):
    folder = _images(tmp_path / "imgs", ["a.png"])
    _images(folder / "locked", ["b.png"])
    _images(folder / "open", ["c.png"])
    scandir = os.scandir

    def refuse_locked(path="."):  # what scandir does on a folder without read permission (root reads any)
        if Path(path).name == "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return scandir(path)

    monkeypatch.setattr(os, "scandir", refuse_locked)
    paths, seen = _warnings(lambda: list_images(folder))
    assert [Path(p).relative_to(folder).as_posix() for p in paths] == ["a.png", "open/c.png"]
    assert seen == [f"skipping unreadable folder {folder / 'locked'}: Permission denied"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads folders without read permission")
def test_a_folder_without_read_permission_is_skipped_with_a_warning(tmp_path):
    folder = _images(tmp_path / "imgs", ["a.png"])
    _images(folder / "locked", ["b.png"])
    (folder / "locked").chmod(0)
    try:
        paths, seen = _warnings(lambda: list_images(folder))
    finally:
        (folder / "locked").chmod(0o755)
    assert [Path(p).name for p in paths] == ["a.png"]
    assert seen == [f"skipping unreadable folder {folder / 'locked'}: Permission denied"]


def test_dvis_maxes_skips_a_named_pipe_instead_of_waiting(tmp_path):
    model = make_model(tmp_path / "tiny")
    folder = _images(tmp_path / "imgs", ["a.png", "b.png"])
    os.mkfifo(folder / "pipe.png")
    proc = subprocess.run([sys.executable, "-m", "dvis", "maxes", "--model", str(model), "--images", str(folder),
                           "--run-dir", str(tmp_path / "run"), "--layers", "conv1", "--workers", "1", "--quiet"],
                          capture_output=True, text=True, timeout=180, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert f"dvis maxes: warning: skipping unreadable image {folder / 'pipe.png'}: {PIPE_WARNING}" in proc.stderr
    assert "maxes: 2 images" in proc.stdout


def test_the_toolbox_skips_a_named_pipe_instead_of_waiting(tmp_path):
    model = make_model(tmp_path / "tiny")
    folder = _images(tmp_path / "imgs", ["a.png", "b.png"])
    os.mkfifo(folder / "pipe.png")
    proc = subprocess.run([sys.executable, str(REPO / "run_toolbox.py"), "--headless", "--model", str(model),
                           "--images", str(folder), "--keys", "e e e", "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path, env=dict(os.environ, DISPLAY=""))
    assert proc.returncode == 0, proc.stderr
    assert PIPE_WARNING in proc.stderr and len(list((tmp_path / "out").glob("*.png"))) == 4
