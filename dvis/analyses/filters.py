"""First-layer filters (Zeiler & Fergus, Sec. 4.1): the normalized filter grid and the numbers
behind the architecture-selection argument — dead filters, the filters' spatial frequencies and
how much first-layer energy aliases on the grid the second layer samples."""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from dvis.errors import DvisError
from dvis.engine.net import as_net
from dvis.engine.layers import check_layers
from dvis.engine.receptive_field import receptive_field
from dvis.render.tiling import tile

#: Edges of the radial frequency bins in cycles per pixel (0.5 is Nyquist along an axis).
FREQ_EDGES = (0.0, 0.0625, 0.125, 0.1875, 0.25, 0.3125, 0.375, 0.4375, 0.5, math.sqrt(0.5) + 1e-6)


def conv_weight(model_or_net, layer: str) -> torch.Tensor:
    """The float weight (out x in x kh x kw) of the Conv2d named ``layer``."""
    net = as_net(model_or_net)
    check_layers(net, [layer])
    module = dict(net.named_modules())[layer]
    if not isinstance(module, nn.Conv2d):
        raise DvisError(f"layer {layer} is a {type(module).__name__}, not a Conv2d")
    return module.weight.detach().float().cpu()


def normalize_filters(w: torch.Tensor) -> torch.Tensor:
    """Scale each filter (over its channels and taps) to [0, 1] independently, as in the AlexNet/ZF figures."""
    flat = w.flatten(1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    # A constant filter has no contrast to show; draw it mid-grey instead of dividing by zero.
    out = torch.where(hi > lo, (flat - lo) / (hi - lo).clamp_min(1e-12), torch.full_like(flat, 0.5))
    return out.view_as(w)


def filter_grid(w: torch.Tensor, zoom: int = 4, sep: int = 1) -> np.ndarray:
    """The filters as one uint8 image: an RGB grid for 3-channel filters, a grey grid otherwise.

    Filters with 1 or 3 input channels become one tile each; deeper filters show one grey tile per
    (output, input) channel pair, a row per output filter. ``zoom`` repeats pixels so small
    kernels stay visible.
    """
    w = normalize_filters(w)
    if w.shape[1] in (1, 3):
        tiles = w.permute(0, 2, 3, 1).repeat_interleave(zoom, 1).repeat_interleave(zoom, 2)
        grid = tile((tiles.numpy() * 255).round().astype(np.uint8), sep=sep, sep_value=255)
        return np.repeat(grid, 3, axis=2) if w.shape[1] == 1 else grid
    tiles = w.flatten(0, 1).repeat_interleave(zoom, 1).repeat_interleave(zoom, 2)
    grid = tile((tiles.numpy() * 255).round().astype(np.uint8), rows=w.shape[0], cols=w.shape[1], sep=sep, sep_value=255)
    return np.repeat(grid[..., None], 3, axis=2)


def dead_filters(w: torch.Tensor, rel_threshold: float = 0.05) -> torch.Tensor:
    """Boolean mask of filters whose L2 norm is below ``rel_threshold`` times the layer's largest norm."""
    norms = w.flatten(1).norm(dim=1)
    return norms < rel_threshold * norms.max()


def power_spectra(w: torch.Tensor, n_fft: int = 32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each filter's 2-D power spectrum, zero-padded to ``n_fft`` and summed over input channels.

    Returns (power: out x n x n, fy: n x 1, fx: 1 x n) with frequencies in cycles per pixel.
    """
    if n_fft < max(w.shape[-2:]):
        raise DvisError(f"FFT size {n_fft} is smaller than the kernel {tuple(w.shape[-2:])}")
    power = torch.fft.fft2(w.double(), s=(n_fft, n_fft)).abs().square().sum(1)
    freqs = torch.fft.fftfreq(n_fft, dtype=torch.float64)
    return power, freqs[:, None], freqs[None, :]


def dominant_frequency(w: torch.Tensor, n_fft: int = 32) -> torch.Tensor:
    """Per filter, the radial frequency (cycles/pixel) of its strongest spectral component."""
    power, fy, fx = power_spectra(w, n_fft)
    radius = (fy.square() + fx.square()).sqrt().flatten()
    return radius[power.flatten(1).argmax(1)].float()


def radial_power_share(w: torch.Tensor, edges: Sequence[float] = FREQ_EDGES, n_fft: int = 32) -> torch.Tensor:
    """Per filter, the share of its spectral power in each radial frequency band (out x bands, rows sum to 1)."""
    power, fy, fx = power_spectra(w, n_fft)
    radius = (fy.square() + fx.square()).sqrt().flatten()
    band = torch.bucketize(radius, torch.tensor(edges[1:-1], dtype=radius.dtype), right=True)
    onehot = torch.nn.functional.one_hot(band, len(edges) - 1).double()
    flat = power.flatten(1)
    return (flat @ onehot / flat.sum(1, keepdim=True).clamp_min(1e-30)).float()


def frequency_histogram(freqs: torch.Tensor, edges: Sequence[float] = FREQ_EDGES) -> torch.Tensor:
    """Count of filters whose dominant frequency falls in each band of ``edges``."""
    band = torch.bucketize(freqs.double(), torch.tensor(edges[1:-1], dtype=torch.float64), right=True)
    return torch.bincount(band, minlength=len(edges) - 1)


def aliased_power_share(w: torch.Tensor, sampling_stride: int, n_fft: int = 32) -> torch.Tensor:
    """Per filter, the share of spectral power above the Nyquist frequency of a grid sampled every
    ``sampling_stride`` pixels: the part of the filter's response that aliases when the next
    layer reads it at that stride (0 for stride 1)."""
    power, fy, fx = power_spectra(w, n_fft)
    nyquist = 0.5 / sampling_stride
    above = (fy.abs() > nyquist + 1e-9) | (fx.abs() > nyquist + 1e-9)
    flat = power.flatten(1)
    return ((flat * above.flatten().double()).sum(1) / flat.sum(1).clamp_min(1e-30)).float()


def next_conv(model_or_net, layer: str) -> str | None:
    """Name of the first Conv2d after ``layer`` in module order (the second layer), if any."""
    names = [n for n, m in as_net(model_or_net).named_modules() if isinstance(m, nn.Conv2d)]
    later = names[names.index(layer) + 1:] if layer in names else []
    return later[0] if later else None


def sampling_stride(model_or_net, second: str, input_size: tuple[int, int]) -> int:
    """Stride, in input pixels, of the grid that the conv ``second`` reads (its own stride excluded)."""
    net = as_net(model_or_net)
    own = dict(net.named_modules())[second].stride[0]
    return max(1, int(receptive_field(net, second, input_size).stride[0]) // own)


@dataclass
class FilterStats:
    """The numbers of :func:`filter_stats` for one model's layer."""

    layer: str
    dead: torch.Tensor            # bool per filter
    dominant_freq: torch.Tensor   # cycles/pixel per filter
    histogram: torch.Tensor       # filters per FREQ_EDGES band
    band_power: torch.Tensor      # mean share of power per band
    second_layer: str | None
    stride: int | None            # sampling stride of the second layer's input grid
    aliased: torch.Tensor | None  # per filter share of power above that grid's Nyquist

    def summary(self) -> dict:
        """JSON-ready numbers."""
        return {
            "layer": self.layer,
            "filters": len(self.dead),
            "dead_share": float(self.dead.float().mean()),
            "freq_edges": list(FREQ_EDGES),
            "dominant_freq_histogram": self.histogram,
            "mean_band_power": self.band_power,
            "dominant_freq": self.dominant_freq,
            "second_layer": self.second_layer,
            "second_layer_sampling_stride": self.stride,
            "aliased_power_share": None if self.aliased is None else float(self.aliased.mean()),
        }


def filter_stats(model_or_net, layer: str, input_size: tuple[int, int], rel_threshold: float = 0.05) -> FilterStats:
    """Dead share, frequency distribution and aliasing for the conv ``layer`` of one model."""
    w = conv_weight(model_or_net, layer)
    dom = dominant_frequency(w)
    second = next_conv(model_or_net, layer)
    stride = sampling_stride(model_or_net, second, input_size) if second else None
    return FilterStats(
        layer=layer,
        dead=dead_filters(w, rel_threshold),
        dominant_freq=dom,
        histogram=frequency_histogram(dom),
        band_power=radial_power_share(w).mean(0),
        second_layer=second,
        stride=stride,
        aliased=aliased_power_share(w, stride) if stride else None,
    )


def plot_filters(names: Sequence[str], grids: Sequence[np.ndarray], stats: Sequence[FilterStats]) -> Figure:
    """One column per model: filter grid on top, dominant-frequency histogram and band power below."""
    fig = Figure(figsize=(4.2 * len(names), 8.4), layout="constrained")
    axes = fig.subplots(3, len(names), squeeze=False, height_ratios=(2.2, 1, 1))
    centers = [(a + min(b, math.sqrt(0.5))) / 2 for a, b in zip(FREQ_EDGES[:-1], FREQ_EDGES[1:])]
    width = 0.8 * (FREQ_EDGES[1] - FREQ_EDGES[0])
    for col, (name, grid, st) in enumerate(zip(names, grids, stats)):
        top, hist, band = axes[:, col]
        top.imshow(grid, interpolation="nearest")
        top.set_axis_off()
        alias = "" if st.aliased is None else f"\naliased power at stride {st.stride}: {float(st.aliased.mean()):.1%}"
        top.set_title(f"{name} {st.layer}: {len(st.dead)} filters, {float(st.dead.float().mean()):.0%} dead{alias}", fontsize=9)
        hist.bar(centers, st.histogram.numpy(), width=width, color="tab:blue")
        hist.set_xlabel("dominant frequency (cycles/pixel)", fontsize=8)
        hist.set_ylabel("filters", fontsize=8)
        band.bar(centers, st.band_power.numpy(), width=width, color="tab:orange")
        if st.stride:
            band.axvline(0.5 / st.stride, color="k", ls="--", lw=1, label=f"Nyquist at stride {st.stride}")
            band.legend(fontsize=7)
        band.set_xlabel("radial frequency (cycles/pixel)", fontsize=8)
        band.set_ylabel("mean power share", fontsize=8)
    return fig
