"""back_filter: the original toolbox's back-pane renderings of an input gradient."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dvis.render.backfilter import back_filter
from dvis.errors import DvisError


def _grad():
    g = np.zeros((3, 5, 7))
    g[0, 1, 2] = 2.0
    g[1, 1, 2] = -4.0
    g[2, 3, 6] = 1.0
    return g


def test_raw_is_signed_around_grey():
    img = back_filter(torch.from_numpy(_grad())[None], "raw")
    assert img.shape == (5, 7, 3) and img.dtype == np.uint8
    assert img[0, 0].tolist() == [128, 128, 128]
    assert img[1, 2].tolist() == [191, 0, 128]  # +2 and -4 scaled by the max abs 4
    assert img[3, 6].tolist() == [128, 128, 159]


def test_gray_norm_and_normblur():
    g = _grad()
    gray = back_filter(g, "gray")
    assert (gray[..., 0] == gray[..., 1]).all() and (gray[..., 0] == gray[..., 2]).all()
    assert gray[1, 2, 0] == 255 and gray[3, 6, 0] == round(255 * (1 / 3) / 2) and gray[0, 0, 0] == 0
    norm = back_filter(g, "norm")
    assert norm[1, 2, 0] == 255 and norm[3, 6, 0] == round(255 / np.sqrt(20))
    blur = back_filter(g, "normblur", blur_sigma=1.0)
    assert blur.max() == 255 and np.count_nonzero(blur[..., 0]) > np.count_nonzero(norm[..., 0])
    assert back_filter(g, "normblur").shape == (5, 7, 3)


def test_one_channel_gives_grey_and_zero_gradient_is_safe():
    g = np.linspace(-1, 1, 12).reshape(1, 3, 4)
    raw = back_filter(g, "raw")
    assert (raw[..., 0] == raw[..., 1]).all() and (raw[..., 1] == raw[..., 2]).all()
    assert raw[0, 0, 0] == 0 and raw[2, 3, 0] == 255
    assert (back_filter(np.zeros((1, 3, 4, 4)), "raw") == 128).all()
    for mode in ("gray", "norm", "normblur"):
        assert (back_filter(np.zeros((3, 4, 4)), mode) == 0).all()


def test_bad_input():
    with pytest.raises(DvisError, match="unknown back filter"):
        back_filter(_grad(), "sharp")
    with pytest.raises(DvisError, match="1xCxHxW or CxHxW"):
        back_filter(np.zeros((4, 4)), "norm")
    with pytest.raises(DvisError, match="1 or 3 channels"):
        back_filter(np.zeros((2, 4, 4)), "raw")
    with pytest.raises(DvisError, match="NaN"):
        back_filter(np.full((3, 2, 2), np.nan), "gray")
    assert back_filter(np.ones((2, 4, 4)), "norm").shape == (4, 4, 3)
