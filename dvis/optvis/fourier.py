"""Spectral image parameterizations: Olah et al. 2017's decorrelated Fourier image (as Lucid/Lucent
build it) and Fel et al. 2023's MACO (phase only, the magnitude fixed to a natural amplitude
spectrum), plus the inverse map that starts a Fourier image from a given picture (feature
accentuation, Hamblin et al. 2024).

Every parameterization holds one leaf tensor for a whole batch (N images: units x seeds) and
maps it to N x C x H x W pixels in (0, 1) with one batched irfft, one colour matrix product and
a sigmoid, so the image is in range and differentiable by construction. Any channel count works
(the colour decorrelation applies to 3 channels; other counts use the identity) and H, W need not
be equal.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dvis.errors import DvisError

#: Square root of ImageNet's RGB colour covariance (Lucid's ``color_correlation_svd_sqrt``).
COLOR_SQRT = torch.tensor([[0.26, 0.09, 0.02],
                           [0.27, 0.00, -0.05],
                           [0.27, -0.09, 0.03]])
#: Scaled so the largest column has unit norm, as Lucid does: decorrelated unit noise stays in range.
COLOR_MATRIX = COLOR_SQRT / COLOR_SQRT.norm(dim=0).max()
#: Lucent's divisor of the irfft output, which keeps the sigmoid off its flat ends at the start.
FOURIER_DIVISOR = 4.0
#: A pixel value inside the sigmoid's range for the logit of 0 and 1.
EPS = 1e-3


def spectrum_shape(size: tuple[int, int]) -> tuple[int, int]:
    """(H, W // 2 + 1): the rfft2 coefficients of an H x W image."""
    return (size[0], size[1] // 2 + 1)


def frequencies(size: tuple[int, int]) -> torch.Tensor:
    """Radial frequency (cycles per pixel) of each rfft2 coefficient of an H x W image."""
    fy = torch.fft.fftfreq(size[0]).view(-1, 1)
    fx = torch.fft.rfftfreq(size[1]).view(1, -1)
    return (fy ** 2 + fx ** 2).sqrt()


def spectrum_scale(size: tuple[int, int], decay: float = 1.0) -> torch.Tensor:
    """Lucid's 1/f^decay scaling of each coefficient (the lowest frequency bounds the DC term)."""
    return 1.0 / frequencies(size).clamp_min(1.0 / max(size)) ** decay


def one_over_f_magnitude(channels: int, size: tuple[int, int]) -> torch.Tensor:
    """C x H x (W//2+1) 1/f amplitude template: the natural-image law used when no dataset spectrum exists."""
    return spectrum_scale(size).expand(channels, *spectrum_shape(size)).clone()


def color_matrix(channels: int, device=None) -> torch.Tensor:
    """Decorrelated -> pixel colour matrix for ``channels`` (identity unless 3)."""
    return (COLOR_MATRIX if channels == 3 else torch.eye(channels)).to(device)


def recorrelate(x: torch.Tensor) -> torch.Tensor:
    """N x C x H x W decorrelated channels -> pixel colour channels (one matrix product)."""
    return torch.einsum("nchw,dc->ndhw", x, color_matrix(x.shape[1], x.device))


def decorrelate(x: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`recorrelate`."""
    return torch.einsum("nchw,dc->ndhw", x, torch.linalg.inv(color_matrix(x.shape[1], x.device)))


def standardize(x: torch.Tensor) -> torch.Tensor:
    """Zero mean, unit standard deviation per image (MACO standardizes phase and image)."""
    flat = x.flatten(1)
    return (x - flat.mean(1).view(-1, *[1] * (x.dim() - 1))) / (flat.std(1) + 1e-4).view(-1, *[1] * (x.dim() - 1))


def resize_magnitude(magnitude: torch.Tensor, channels: int, size: tuple[int, int]) -> torch.Tensor:
    """A C' x h x w' amplitude spectrum for a ``size`` image with ``channels`` channels: resampled as
    horama does (bilinear, antialiased) when its size differs; a 1-channel spectrum serves every
    channel, and a 3-channel one is averaged for other channel counts."""
    m = torch.as_tensor(magnitude, dtype=torch.float32)
    if m.dim() != 3:
        raise DvisError(f"an amplitude spectrum must be C x H x W; got shape {list(m.shape)}")
    if m.shape[0] != channels:
        m = m.mean(0, keepdim=True) if m.shape[0] != 1 else m
        m = m.expand(channels, *m.shape[1:])
    shape = spectrum_shape(size)
    if tuple(m.shape[1:]) != shape:
        m = F.interpolate(m[None], size=shape, mode="bilinear", align_corners=False, antialias=True)[0]
    return m.contiguous()


class FourierImage:
    """Olah et al. 2017 (Lucid's ``fft_image`` + ``to_valid_rgb``): per image a complex spectrum
    (stored as real/imag pairs) scaled by 1/f, inverse FFT (orthonormal), colour recorrelation,
    sigmoid. ``start`` (N x C x H x W float) is the decorrelated spectrum to start from."""

    def __init__(self, start: torch.Tensor, size: tuple[int, int], decay: float = 1.0):
        self.size = tuple(size)
        self.scale = spectrum_scale(self.size, decay).to(start.device)
        self.param = start.detach().clone().requires_grad_(True)

    @staticmethod
    def random(n: int, channels: int, size: tuple[int, int], generator: torch.Generator, sd: float = 0.01
               ) -> torch.Tensor:
        """Lucid's start: Gaussian real and imaginary parts of standard deviation ``sd``."""
        return torch.randn((n, channels) + spectrum_shape(size) + (2,), generator=generator) * sd

    def image(self) -> torch.Tensor:
        """N x C x H x W pixels in (0, 1)."""
        spec = torch.view_as_complex(self.param) * self.scale
        x = torch.fft.irfft2(spec, s=self.size, norm="ortho") / FOURIER_DIVISOR
        return torch.sigmoid(recorrelate(x))

    @classmethod
    def start_from(cls, pixels: torch.Tensor, decay: float = 1.0) -> torch.Tensor:
        """The parameter whose :meth:`image` is ``pixels`` (N x C x H x W in [0, 1], clamped to
        [EPS, 1 - EPS]): the exact inverse of logit, recorrelation, irfft and scaling."""
        size = tuple(pixels.shape[-2:])
        p = pixels.clamp(EPS, 1 - EPS)
        x = decorrelate(torch.log(p / (1 - p))) * FOURIER_DIVISOR
        spec = torch.fft.rfft2(x, norm="ortho") / spectrum_scale(size, decay).to(pixels.device)
        return torch.view_as_real(spec).contiguous()


class MacoImage:
    """Fel et al. 2023 (horama's ``maco_preconditioner``, batched): only the phase is optimized;
    the amplitude is ``magnitude`` (C x H x W//2+1, decorrelated colour), the image is the
    standardized inverse FFT, colour-recorrelated, through a sigmoid. ``start`` is the phase."""

    def __init__(self, start: torch.Tensor, size: tuple[int, int], magnitude: torch.Tensor):
        self.size = tuple(size)
        self.magnitude = resize_magnitude(magnitude, start.shape[1], self.size).to(start.device)
        self.param = start.detach().clone().requires_grad_(True)

    @staticmethod
    def random(n: int, channels: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """horama's start: standard normal phases."""
        return torch.randn((n, channels) + spectrum_shape(size), generator=generator)

    def image(self) -> torch.Tensor:
        phase = standardize(self.param)
        spec = torch.polar(self.magnitude.expand_as(phase), phase)
        x = standardize(torch.fft.irfft2(spec, s=self.size))
        return torch.sigmoid(recorrelate(x))


def amplitude_spectrum(pixels: torch.Tensor) -> torch.Tensor:
    """N x C x H x (W//2+1) amplitude of images (N x C x H x W in [0, 1]) in decorrelated colour,
    the space MACO draws its phases in (horama's template is ImageNet's, decorrelated)."""
    return torch.fft.rfft2(decorrelate(pixels.float())).abs()


def high_frequency_share(pixels: torch.Tensor) -> torch.Tensor:
    """Per image, the share of spectral energy (squared amplitude, mean removed, channels summed)
    above half the Nyquist frequency (radial frequency > 0.25 cycles per pixel)."""
    x = pixels.float() - pixels.float().mean((-2, -1), keepdim=True)
    power = torch.fft.rfft2(x).abs().pow(2)
    # rfft2 keeps half the columns: the inner ones stand for two coefficients each.
    w = torch.full(power.shape[-1:], 2.0)
    w[0] = 1.0
    if x.shape[-1] % 2 == 0:
        w[-1] = 1.0
    power = power * w
    high = frequencies(tuple(x.shape[-2:])) > 0.25
    total = power.sum((1, 2, 3)).clamp_min(1e-20)
    return (power * high).sum((1, 2, 3)) / total

