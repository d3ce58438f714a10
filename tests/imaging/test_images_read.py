"""read_image: every PIL mode ends as HxWx3 uint8 RGB; bad files give one DvisError line naming the file."""
import io

import numpy as np
import pytest
from PIL import Image

from dvis.errors import DvisError
from dvis.imaging.images import read_image, to_rgb


def _png_bytes(im: Image.Image, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG", **kw)
    return buf.getvalue()


def test_rgb_file_round_trip(tmp_path):
    arr = np.random.default_rng(0).integers(0, 256, (7, 11, 3), dtype=np.uint8)
    Image.fromarray(arr).save(tmp_path / "a.png")
    out = read_image(tmp_path / "a.png")
    assert out.dtype == np.uint8 and out.shape == (7, 11, 3)
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(read_image(str(tmp_path / "a.png")), arr)


def test_grayscale_becomes_three_equal_channels():
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    out = read_image(_png_bytes(Image.fromarray(gray, "L")))
    assert out.shape == (4, 5, 3)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], gray)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16bit_gray_is_scaled_not_clipped(tmp_path, fmt):
    a16 = np.array([[0, 256, 100 * 256], [200 * 256, 65535, 128 * 256 + 255]], dtype=np.uint16)
    path = tmp_path / f"g16.{fmt.lower()}"
    Image.fromarray(a16).save(path, fmt)
    assert Image.open(path).mode.startswith("I;16")
    out = read_image(path)
    np.testing.assert_array_equal(out[:, :, 0], [[0, 1, 100], [200, 255, 128]])


def test_float_tiff_in_unit_range_is_scaled(tmp_path):
    f = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    Image.fromarray(f, "F").save(tmp_path / "f.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "f.tif")[0, :, 1], [0, 128, 255])


def test_palette_with_and_without_transparency():
    pal = Image.new("P", (3, 2))
    pal.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (768 - 9))
    pal.putdata([0, 1, 2, 2, 1, 0])
    out = read_image(_png_bytes(pal))
    np.testing.assert_array_equal(out[0], [[255, 0, 0], [0, 255, 0], [0, 0, 255]])
    # index 1 transparent: composited over white
    out_t = read_image(_png_bytes(pal, transparency=1))
    np.testing.assert_array_equal(out_t[0], [[255, 0, 0], [255, 255, 255], [0, 0, 255]])


def test_rgba_and_la_are_composited_over_white():
    rgba = np.array([[[200, 10, 20, 255], [200, 10, 20, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    out = read_image(_png_bytes(Image.fromarray(rgba, "RGBA")))
    np.testing.assert_array_equal(out[0, 0], [200, 10, 20])
    np.testing.assert_array_equal(out[0, 1], [255, 255, 255])
    np.testing.assert_array_equal(out[0, 2], [127, 127, 127])
    la = Image.fromarray(np.array([[[50, 255], [50, 0]]], dtype=np.uint8), "LA")
    np.testing.assert_array_equal(read_image(_png_bytes(la))[0], [[50, 50, 50], [255, 255, 255]])


def test_cmyk_is_converted():
    buf = io.BytesIO()
    Image.new("CMYK", (4, 4), (0, 255, 255, 0)).save(buf, "TIFF")  # pure red in CMYK
    out = read_image(buf.getvalue())
    assert out.shape == (4, 4, 3)
    np.testing.assert_array_equal(out[0, 0], [255, 0, 0])


def test_exif_orientation_is_applied():
    arr = np.zeros((2, 3, 3), dtype=np.uint8)
    arr[0, 0] = [255, 0, 0]  # red at top-left of the stored pixels
    exif = Image.Exif()
    exif[0x0112] = 6  # stored rotated: viewers turn it 90 degrees clockwise
    out = read_image(_png_bytes(Image.fromarray(arr), exif=exif.tobytes()))
    assert out.shape == (3, 2, 3)
    np.testing.assert_array_equal(out[0, 1], [255, 0, 0])  # top-left went to top-right


def _one_line_error(src, name: str) -> str:
    with pytest.raises(DvisError) as info:
        read_image(src)
    msg = str(info.value)
    assert "\n" not in msg and name in msg
    return msg


def test_zero_byte_corrupt_and_non_image_files_raise_one_line(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    _one_line_error(tmp_path / "empty.jpg", "empty.jpg")
    (tmp_path / "notes.png").write_text("hello, not an image\n")
    _one_line_error(tmp_path / "notes.png", "notes.png")
    good = _png_bytes(Image.fromarray(np.full((64, 64, 3), 7, np.uint8)))
    (tmp_path / "cut.png").write_bytes(good[: len(good) // 2])
    assert "corrupt" in _one_line_error(tmp_path / "cut.png", "cut.png")
    _one_line_error(tmp_path / "missing.png", "missing.png")
    _one_line_error(tmp_path, str(tmp_path))  # a folder is not an image file
    _one_line_error(b"\x89PNG garbage", "bytes")


def test_to_rgb_shapes_and_errors():
    assert to_rgb(np.zeros((5, 6), np.uint8)).shape == (5, 6, 3)
    assert to_rgb(np.zeros((5, 6, 1), np.uint8)).shape == (5, 6, 3)
    assert to_rgb(np.zeros((5, 6, 4), np.uint8)).shape == (5, 6, 3)
    with pytest.raises(DvisError, match="dtype"):
        to_rgb(np.zeros((5, 6, 3), np.float32))
    with pytest.raises(DvisError, match="shape"):
        to_rgb(np.zeros((5, 6, 2), np.uint8))
