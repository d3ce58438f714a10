"""list_images: folders in natural order, list files, single images, regexp filter, errors."""
import os
import warnings

import pytest

from dvis.errors import DvisError
from dvis.imaging.images import list_images, natural_key


def _touch(root, *names):
    for name in names:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")


def _rel(paths, root):
    return [os.path.relpath(p, root).replace(os.sep, "/") for p in paths]


def test_folder_natural_order_extensions_and_hidden(tmp_path):
    _touch(tmp_path, "img10.jpg", "img2.png", "IMG3.JPEG", "img1.bmp", "a.webp", "b.tif", "c.tiff",
           "notes.txt", ".hidden.jpg", ".cache/x.jpg", "sub/img10.png", "sub/img9.png")
    assert _rel(list_images(tmp_path), tmp_path) == [
        "a.webp", "b.tif", "c.tiff", "img1.bmp", "img2.png", "IMG3.JPEG", "img10.jpg", "sub/img9.png", "sub/img10.png",
    ]
    assert _rel(list_images(tmp_path, recursive=False), tmp_path) == [
        "a.webp", "b.tif", "c.tiff", "img1.bmp", "img2.png", "IMG3.JPEG", "img10.jpg",
    ]


def test_pattern_filters_relative_paths(tmp_path):
    _touch(tmp_path, "cat1.jpg", "dog1.jpg", "sub/cat2.jpg", "sub/dog2.jpg")
    assert _rel(list_images(tmp_path, pattern="cat"), tmp_path) == ["cat1.jpg", "sub/cat2.jpg"]
    assert _rel(list_images(tmp_path, pattern=r"^sub/"), tmp_path) == ["sub/cat2.jpg", "sub/dog2.jpg"]
    with pytest.raises(DvisError, match="pattern"):
        list_images(tmp_path, pattern="(")


def test_list_file_keeps_order_skips_comments_and_warns_on_missing(tmp_path):
    _touch(tmp_path, "imgs/b.jpg", "imgs/a.png")
    elsewhere = tmp_path / "abs" / "c.jpg"
    _touch(tmp_path, "abs/c.jpg")
    listing = tmp_path / "lists" / "inputs.txt"
    listing.parent.mkdir()
    listing.write_text(f"# my inputs\n../imgs/b.jpg\n\n  ../imgs/a.png  \n{elsewhere}\n../imgs/gone.jpg\n")
    with pytest.warns(UserWarning, match="1 missing image.*gone.jpg"):
        paths = list_images(listing)
    assert [os.path.normpath(p) for p in paths] == [
        str(tmp_path / "imgs" / "b.jpg"), str(tmp_path / "imgs" / "a.png"), str(elsewhere),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert [os.path.basename(p) for p in list_images(listing, pattern=r"\.png$")] == ["a.png"]


def test_single_image_and_missing_path(tmp_path):
    _touch(tmp_path, "one.jpg")
    assert list_images(tmp_path / "one.jpg") == [str(tmp_path / "one.jpg")]
    with pytest.raises(DvisError, match="nothere"):
        list_images(tmp_path / "nothere")
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00\x81")
    with pytest.raises(DvisError, match="blob.bin"):
        list_images(tmp_path / "blob.bin")


def test_natural_key():
    names = ["x10", "x2", "X1", "x2a", "x"]
    assert sorted(names, key=natural_key) == ["x", "X1", "x2", "x2a", "x10"]
