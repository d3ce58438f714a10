"""Spectral parameterizations: images in range, differentiable, any channel count and size."""
from __future__ import annotations

import pytest
import torch

from dvis.errors import DvisError
from dvis.optvis.fourier import (
    FourierImage,
    MacoImage,
    amplitude_spectrum,
    decorrelate,
    high_frequency_share,
    one_over_f_magnitude,
    recorrelate,
    resize_magnitude,
)


def make(kind: str, channels: int, size: tuple[int, int], n: int = 3):
    g = torch.Generator().manual_seed(0)
    if kind == "fourier":
        return FourierImage(FourierImage.random(n, channels, size, g) * 100, size)  # far from the start's grey
    return MacoImage(MacoImage.random(n, channels, size, g), size, one_over_f_magnitude(channels, size))


@pytest.mark.parametrize("kind", ["fourier", "maco"])
@pytest.mark.parametrize("channels, size", [(3, (16, 16)), (1, (12, 17)), (4, (9, 14))])
def test_images_stay_in_range_and_are_differentiable(kind, channels, size):
    p = make(kind, channels, size)
    x = p.image()
    assert x.shape == (3, channels) + size
    assert 0 < x.min() and x.max() < 1 and x.std() > 0.01
    x[:, :, size[0] // 2, size[1] // 2].sum().backward()
    grad = p.param.grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    # Each image's pixels depend on its own parameter only.
    p.param.grad = None
    p.image()[1].sum().backward()
    assert p.param.grad[0].abs().sum() == 0 and p.param.grad[2].abs().sum() == 0


def test_fourier_start_from_an_image_is_its_exact_inverse():
    pixels = torch.rand(2, 3, 10, 13) * 0.9 + 0.05
    p = FourierImage(FourierImage.start_from(pixels), (10, 13))
    torch.testing.assert_close(p.image(), pixels, atol=1e-5, rtol=0)
    gray = torch.rand(1, 1, 8, 8) * 0.9 + 0.05
    torch.testing.assert_close(FourierImage(FourierImage.start_from(gray), (8, 8)).image(), gray, atol=1e-5, rtol=0)


def test_colour_decorrelation_inverts_and_is_identity_off_rgb():
    x = torch.randn(2, 3, 4, 5)
    torch.testing.assert_close(decorrelate(recorrelate(x)), x, atol=1e-5, rtol=0)
    g = torch.randn(2, 1, 4, 5)
    assert torch.equal(recorrelate(g), g)


def test_maco_keeps_the_magnitude_and_moves_only_the_phase():
    size = (16, 16)
    mag = one_over_f_magnitude(3, size)
    p = MacoImage(MacoImage.random(2, 3, size, torch.Generator().manual_seed(1)), size, mag)
    assert not p.magnitude.requires_grad and p.param.shape == (2, 3, 16, 9)
    assert torch.equal(p.magnitude, mag)


def test_resize_magnitude_adapts_size_and_channels():
    m = torch.rand(3, 32, 17)
    assert resize_magnitude(m, 3, (16, 16)).shape == (3, 16, 9)
    assert resize_magnitude(m, 1, (12, 20)).shape == (1, 12, 11)
    assert resize_magnitude(torch.rand(1, 8, 5), 3, (8, 8)).shape == (3, 8, 5)
    with pytest.raises(DvisError, match="C x H x W"):
        resize_magnitude(torch.rand(8, 5), 3, (8, 8))


def test_high_frequency_share_of_noise_and_of_smooth_images():
    noise = high_frequency_share(torch.rand(4, 3, 64, 64))
    assert ((noise - (1 - torch.pi / 16)).abs() < 0.02).all()  # white noise: the area outside radius 1/4
    ramp = torch.linspace(0, 1, 64).expand(1, 3, 64, 64)
    assert high_frequency_share(ramp) < 0.1
    assert amplitude_spectrum(torch.rand(2, 3, 8, 10)).shape == (2, 3, 8, 6)
