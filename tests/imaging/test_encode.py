"""The one image encoder (dvis.imaging.encode): RGB in, PNG/JPEG/WebP bytes out, read back by the
one decoder; its users (sprites, screenshots, web frames) get the same bytes."""
from __future__ import annotations

import numpy as np
import pytest

from dvis.errors import DvisError
from dvis.imaging.encode import encode_image, write_png
from dvis.imaging.images import read_image, read_own_image


@pytest.fixture
def rgb():
    img = np.zeros((32, 48, 3), np.uint8)
    img[:, :16, 0] = 255  # red, green, blue bands: a swapped channel order shows at once
    img[:, 16:32, 1] = 255
    img[:, 32:, 2] = 255
    return img


def test_png_is_lossless_and_rgb_at_every_compression(rgb, tmp_path):
    for level in (None, 1, 9):
        assert np.array_equal(read_image(encode_image(rgb, "png", png_compression=level)), rgb)
    write_png(tmp_path / "x.png", rgb)
    assert np.array_equal(read_own_image(tmp_path / "x.png"), rgb)
    assert np.array_equal(read_image(tmp_path / "x.png"), rgb)


def test_lossy_formats_keep_the_colours_and_take_the_quality(rgb):
    for fmt in ("jpeg", "webp"):
        back = read_image(encode_image(rgb, fmt, 90)).astype(int)
        for band in range(3):  # each band's middle (chroma subsampling blurs the edges between them)
            middle = np.s_[8:24, 16 * band + 4:16 * band + 12]
            assert np.abs(back[middle] - rgb[middle]).max() < 16, (fmt, band)
    assert len(encode_image(rgb, "jpeg", 10)) < len(encode_image(rgb, "jpeg", 95))


def test_callers_get_the_owner_bytes(rgb):
    from dvis.web.encoding import encode

    assert encode(rgb, "jpeg", 85) == encode_image(rgb, "jpeg", 85)
    assert encode(rgb, "png", 85) == encode_image(rgb, "png", png_compression=1)


def test_bad_format_and_bad_path_are_one_line_errors(rgb, tmp_path):
    with pytest.raises(DvisError, match="unknown image format 'gif'"):
        encode_image(rgb, "gif")
    with pytest.raises(DvisError, match="cannot write .*nowhere"):
        write_png(tmp_path / "nowhere" / "x.png", rgb)
    with pytest.raises(DvisError, match="cannot read image"):
        read_own_image(tmp_path / "missing.jpg")
