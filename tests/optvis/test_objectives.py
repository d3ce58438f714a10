"""Objectives on a hand-checked tiny net and on a unit of every layout."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dvis.engine.activations import forward_to
from dvis.engine.geometry import model_geometry, to_maps
from dvis.errors import DvisError
from dvis.optvis.methods import optimize_batch, seed_start
from dvis.optvis.objectives import channel_vectors, gram_similarity, objective_values
from dvis.optvis.settings import OptSettings


@pytest.fixture(scope="module")
def identity():
    """A 1x1 conv copying its 2 input channels: the layer's values are the pixels themselves."""
    net = nn.Sequential(nn.Conv2d(2, 2, 1))
    with torch.no_grad():
        net[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        net[0].bias.zero_()
    return net.eval(), model_geometry(net, (3, 4), channels=2)["0"]


def test_objectives_by_hand(identity):
    net, geom = identity
    x = torch.arange(2 * 2 * 3 * 4, dtype=torch.float32).view(2, 2, 3, 4)  # x[b, c, y, w] = 24b + 12c + 4y + w
    out = net(x)
    # Centre (y 1, x 2) of channel 1 of image 0: 12 + 4 + 2; channel 0 of image 1: 24 + 6.
    assert objective_values(out, geom, torch.tensor([1, 0])).tolist() == [18, 30]
    # Channel mean: 12 + mean(4y + w) = 12 + 4 + 1.5.
    assert objective_values(out, geom, torch.tensor([1, 0]), where="mean").tolist() == [17.5, 29.5]
    assert objective_values(out, geom, torch.tensor([1, 0]), sign=-1).tolist() == [-18, -30]
    d = torch.tensor([[1.0, -1.0], [0.5, 0.5]])
    # Directions: image 0 (6 - 18), image 1 (30 + 42) / 2.
    assert objective_values(out, geom, directions=d).tolist() == [-12, 36]
    with pytest.raises(DvisError, match="no class token"):
        objective_values(out, geom, torch.tensor([0, 0]), where="class_token")
    with pytest.raises(DvisError, match="directions must be 2 x 2"):
        objective_values(out, geom, directions=torch.ones(2, 3))
    with pytest.raises(DvisError, match="units or directions"):
        objective_values(out, geom)


def test_gram_diversity_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 0.0]]).view(1, 2, 2)  # C x P: one channel active
    b = torch.tensor([[0.0, 0.0], [0.0, 1.0]]).view(1, 2, 2)  # the other channel
    maps = torch.cat([a, a, a, b])  # two units of two seeds: (a, a) and (a, b)
    torch.testing.assert_close(gram_similarity(maps.view(4, 2, 1, 2), 2), torch.tensor([1.0, 1.0, 0.0, 0.0]))
    # The position form (more channels than positions) gives the same similarities.
    wide = torch.randn(4, 6, 2)
    fast = gram_similarity(wide.view(4, 6, 1, 2), 2)
    g = torch.einsum("ncp,ndp->ncd", wide, wide).flatten(1)
    ref = torch.nn.functional.cosine_similarity(g[0::2], g[1::2])
    torch.testing.assert_close(fast, ref.repeat_interleave(2), atol=1e-5, rtol=1e-5)


def test_class_token_and_reordered_layouts_read_the_same_channel(layouts):
    geo = model_geometry(layouts)
    x = torch.rand(2, 3, 16, 16)
    out = forward_to(layouts.net, x, "attn")
    cls = channel_vectors(out, geo["attn"], "class_token")
    torch.testing.assert_close(cls, out[:, 0])
    for layer in ("mlp", "win"):
        out = forward_to(layouts.net, x, layer)
        maps = to_maps(out, geo[layer])
        torch.testing.assert_close(channel_vectors(out, geo[layer], "mean"), maps.mean((2, 3)))


def start_batch(model, s: OptSettings, n_units: int) -> torch.Tensor:
    starts = torch.stack([seed_start(s.method, model.channels, tuple(model.input_size), k) for k in range(s.seeds)])
    return starts.repeat(n_units, *[1] * (starts.dim() - 1))


@pytest.mark.parametrize("method", ["fourier", "maco"])
@pytest.mark.parametrize("layer, where", [("conv1", "centre"), ("mlp", "centre"), ("attn", "class_token"),
                                          ("attn", "mean"), ("win", "centre"), ("head", "centre")])
def test_a_unit_of_every_layout_rises(layouts, method, layer, where):
    geom = model_geometry(layouts)[layer]
    # Without random views the objective optimized is the one measured on the image.
    plain = dict(jitter=0.0, scale=(1.0, 1.0), rotate=0.0, crop=(1.0, 1.0), views=1, noise=0.0)
    s = OptSettings(method=method, iters=30, seeds=2, objective=where, **plain)
    units = torch.tensor([0, 0, 1, 1])
    start = start_batch(layouts, s, 2)
    res = optimize_batch(layouts, layer, geom, start, s, units=units)
    assert res.pixels.shape == (4, 3, 16, 16) and 0 <= res.pixels.min() and res.pixels.max() <= 1
    assert res.attribution.shape == (4, 16, 16) and (res.attribution >= 0).all() and res.attribution.sum() > 0
    first = optimize_batch(layouts, layer, geom, start, OptSettings(method=method, iters=1, seeds=2, objective=where,
                                                                    lr=1e-9, **plain), units=units)
    low = optimize_batch(layouts, layer, geom, start, OptSettings(method=method, iters=30, seeds=2, objective=where,
                                                                  negative=True, **plain), units=units)
    # Maximizing ends above minimizing for every unit, and above the start (some units of this
    # random net are nearly flat around the grey start).
    assert (low.values < res.values - 0.01).all(), (low.values, res.values)
    assert (res.values > first.values - 1e-3).all() and (res.values > first.values + 0.05).any()


def test_grayscale_non_square_direction_with_diversity(layouts_gray):
    geom = model_geometry(layouts_gray)["pool"]
    s = OptSettings(method="maco", iters=30, seeds=2, diversity=1.0)
    d = torch.tensor([[1.0, -1.0, 0, 0, 0, 0]]).repeat(4, 1)
    res = optimize_batch(layouts_gray, "pool", geom, start_batch(layouts_gray, s, 2), s, directions=d)
    assert res.pixels.shape == (4, 1, 12, 16) and res.attribution.shape == (4, 12, 16)
    assert torch.isfinite(res.values).all()
    # Both units have the same direction and starts: their images are the same.
    torch.testing.assert_close(res.pixels[:2], res.pixels[2:])
