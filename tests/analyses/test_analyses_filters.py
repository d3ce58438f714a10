"""dvis.analyses.filters and ``dvis filters``."""
import json
import math
from collections import OrderedDict

import pytest
import torch
from torch import nn

from helpers.analyses import assert_png, run_cli, tiny_model_folder
from dvis.analyses.filters import (
    FREQ_EDGES, aliased_power_share, dead_filters, dominant_frequency, filter_grid, filter_stats,
    frequency_histogram, normalize_filters, sampling_stride,
)
from dvis.errors import DvisError


def sinusoids(freqs: list[float], k: int = 16, axis: int = 1) -> torch.Tensor:
    """One 3-channel k x k filter per frequency (cycles/pixel), a cosine along ``axis``."""
    coord = torch.arange(k, dtype=torch.float64)
    waves = torch.cos(2 * math.pi * torch.tensor(freqs, dtype=torch.float64)[:, None] * coord[None])
    grid = waves[:, None, :].expand(-1, k, -1) if axis == 1 else waves[:, :, None].expand(-1, -1, k)
    return grid[:, None].expand(-1, 3, -1, -1).float()


def test_pure_sinusoids_land_in_their_frequency_bins():
    freqs = [3 / 32, 9 / 32, 13 / 32]  # centres of bands 1, 4 and 6
    bank = torch.cat([sinusoids(freqs, axis=1), sinusoids(freqs, axis=0), torch.ones(1, 3, 16, 16)])
    dom = dominant_frequency(bank)
    assert torch.allclose(dom[:6], torch.tensor(freqs * 2), atol=1e-6)
    assert dom[6] == 0  # a flat filter is pure DC
    hist = frequency_histogram(dom)
    assert len(hist) == len(FREQ_EDGES) - 1 and hist.sum() == 7
    assert hist.tolist() == [1, 2, 0, 0, 2, 0, 2, 0, 0]


def test_aliasing_share_separates_high_from_low_frequencies():
    bank = sinusoids([3 / 32, 13 / 32])
    assert torch.all(aliased_power_share(bank, 1) == 0)  # stride 1: nothing lies above Nyquist
    low, high = aliased_power_share(bank, 2).tolist()
    assert low < 0.1 and high > 0.9  # not 0 and 1: a 16-tap window leaks some power across Nyquist


def test_dead_filters_and_per_filter_normalization():
    w = torch.randn(5, 3, 3, 3)
    w[1] = 0
    w[3] *= 1e-4
    assert dead_filters(w).tolist() == [False, True, False, True, False]
    norm = normalize_filters(w)
    assert torch.allclose(norm.flatten(1).amax(1)[[0, 2, 4]], torch.ones(3))
    assert torch.allclose(norm.flatten(1).amin(1)[[0, 2, 4]], torch.zeros(3))
    assert torch.all(norm[1] == 0.5)  # a zero filter is drawn mid-grey


def test_filter_grid_shapes():
    rgb = filter_grid(torch.randn(6, 3, 3, 3), zoom=2, sep=1)
    assert rgb.dtype.name == "uint8" and rgb.ndim == 3 and rgb.shape[2] == 3
    deep = filter_grid(torch.randn(4, 5, 3, 3), zoom=1, sep=1)
    assert deep.shape == (4 * 3 + 3, 5 * 3 + 4, 3)  # one row per output filter, one column per input channel


def test_sampling_stride_of_the_second_layer():
    net = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 4, 5, stride=2), relu=nn.ReLU(),
                                    pool=nn.MaxPool2d(2), conv2=nn.Conv2d(4, 4, 3)))
    assert sampling_stride(net, "conv2", (32, 32)) == 4
    stats = filter_stats(net, "conv1", (32, 32))
    assert stats.second_layer == "conv2" and stats.stride == 4 and stats.aliased is not None
    summary = stats.summary()
    assert summary["filters"] == 4 and 0 <= summary["aliased_power_share"] <= 1


def test_non_conv_layer_is_a_clear_error():
    net = nn.Sequential(OrderedDict(conv1=nn.Conv2d(3, 4, 3), relu=nn.ReLU()))
    with pytest.raises(DvisError, match="not a Conv2d"):
        filter_stats(net, "relu", (8, 8))


def test_command_compares_models_and_checkpoints(tmp_path, capsys):
    folder = tiny_model_folder(tmp_path, checkpoints=2)
    out = tmp_path / "out"
    ckpts = sorted(str(p) for p in (folder / "checkpoints").glob("*.pt"))
    rc, stdout, _ = run_cli(capsys, "filters", "--model", folder, "--weights", ",".join(ckpts), "--out", out)
    assert rc == 0 and "dead" in stdout
    assert_png(out / "filters.png")
    numbers = json.loads((out / "filters.json").read_text())
    assert [n["model"] for n in numbers] == ["tiny-zf (epoch-001)", "tiny-zf (epoch-002)"]
    assert all(n["layer"] == "conv1" and n["filters"] == 4 and n["second_layer_sampling_stride"] == 2 for n in numbers)
    assert all(sum(n["dominant_freq_histogram"]) == 4 and abs(sum(n["mean_band_power"]) - 1) < 1e-4 for n in numbers)


def test_command_bad_layer_is_one_line(tmp_path, capsys):
    folder = tiny_model_folder(tmp_path, checkpoints=0)
    rc, _, err = run_cli(capsys, "filters", "--model", folder, "--layers", "conv9", "--out", tmp_path / "o")
    assert rc == 2 and err.count("\n") == 1 and "conv9" in err


def test_command_puts_several_models_side_by_side(tmp_path, capsys):
    a = tiny_model_folder(tmp_path / "a", checkpoints=0, seed=1)
    b = tiny_model_folder(tmp_path / "b", checkpoints=0, seed=2)
    rc, stdout, _ = run_cli(capsys, "filters", "--model", f"{a},{b}", "--out", tmp_path / "out")
    assert rc == 0 and stdout.count("conv1:") == 2
    numbers = json.loads((tmp_path / "out" / "filters.json").read_text())
    assert len(numbers) == 2 and numbers[0]["dominant_freq"] != numbers[1]["dominant_freq"]
