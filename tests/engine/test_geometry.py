"""Layer geometry from one traced forward: layouts, fields, SE gates, aux heads, and exact agreement
with the independent gradient-support method (tests/helpers/geometry_reference.py) where both apply."""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from helpers.core import TinyResidual
from helpers.geometry_reference import gradient_field
from dvis.errors import DvisError
from dvis.engine.geometry import ReceptiveField, extra_token_values, model_geometry, to_maps
from dvis.engine.layers import default_layers
from dvis.nets.zf_cifar import zf_cifar10

M = torchvision.models


def _agree(net, size, layers):
    geo = model_geometry(net, size)
    wrong = {layer: (geo[layer].rf, gradient_field(net, layer, size)) for layer in layers}
    wrong = {k: v for k, v in wrong.items() if v[0] != v[1]}
    assert not wrong


@pytest.mark.parametrize(("make", "size", "layers"), [
    (lambda: M.alexnet(), (127, 127), ["features.0", "features.5", "features.10"]),
    (lambda: M.vgg11().features, (48, 48), ["0", "3", "8"]),
    (lambda: zf_cifar10(), (32, 32), ["conv1", "pool1", "conv3", "pool5"]),
    (lambda: M.resnet18(), (48, 48), ["maxpool", "layer1.0", "layer1.0.conv2", "layer2.0.downsample.0"]),
    (lambda: M.densenet121(), (48, 48), ["features.pool0", "features.denseblock1.denselayer2", "features.transition1"]),
    (lambda: M.googlenet(init_weights=False, aux_logits=False), (64, 64),
     ["inception3a.branch3.1", "inception3a", "maxpool3"]),
    (lambda: M.mobilenet_v2(), (48, 48), ["features.1", "features.2", "features.3", "features.6"]),
    (lambda: M.shufflenet_v2_x0_5(), (64, 64), ["stage2.0", "stage2.1", "stage3.0"]),  # channel shuffle views
], ids=["alexnet", "vgg11", "zf-cifar10", "resnet18", "densenet121", "googlenet", "mobilenet_v2", "shufflenet"])
def test_exact_agreement_with_gradient_support(make, size, layers):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = make().eval()  # the reference replaces the weights by positive ones anyway
    _agree(net, size, layers)


def test_residual_concat_asymmetric_dilated_by_hand():
    net = TinyResidual().eval()
    geo = model_geometry(net, (24, 40))
    assert (geo["b"].rf.size, geo["b"].rf.stride, geo["b"].rf.padding) == ((23, 23), (4, 4), (11, 11))
    assert (geo["right"].rf.size, geo["right"].rf.padding) == ((39, 31), (19, 15))
    assert geo["head"].layout == "vector" and geo["head"].rf.box(0, 0) == (0, 0, 24, 40)


class _Functional(nn.Module):
    """Transposed conv, interpolate, pixel shuffle, pad and strided slicing, all functional."""

    def __init__(self):
        super().__init__()
        self.down = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)
        self.shuffle = nn.PixelShuffle(2)
        self.out = nn.Identity()

    def forward(self, x):
        y = self.down(x)                      # 3/2 p1
        z = F.max_pool2d(F.pad(y, (1, 0, 1, 0)), 2)   # pad left/top 1, pool 2/2
        u = self.up(y)                        # back to stride 1
        s = self.shuffle(torch.cat([y, y], 1))  # 16 -> 4 channels, 2x up
        return self.out(z[:, :, ::2, 1:]), u, s


def test_functional_rules():
    net = _Functional().eval()
    geo = model_geometry(net, (32, 32))
    assert geo["down"].rf == ReceptiveField((3, 3), (2, 2), (1, 1), (32, 32))
    # pool 2/2 after a 1-px pad: size 3 + 2 = 5, stride 4, padding 1 + 1*2 = 3; then [::2, 1:]
    out = geo["out"].rf
    assert (out.size, out.stride, out.padding) == ((5, 5), (8, 4), (3, -1))
    # transposed 2/2 conv: output o sees input o // 2 (field 2*(o//2) - 1 ... + 3): bounded by
    # stride 1, padding 2, size 4
    up = geo["up"].rf
    assert (up.size, up.stride, up.padding) == ((4, 4), (1, 1), (2, 2)) and geo["up"].grid == (32, 32)
    assert geo["shuffle"].grid == (32, 32) and geo["shuffle"].channels == 4


def test_se_gate_keeps_local_field_and_flags_global_context():
    net = M.mobilenet_v3_small().eval()
    geo = model_geometry(net)
    block = geo["features.1.block.1"]  # the SqueezeExcitation output: map * gate
    conv = geo["features.1.block.0"]
    assert block.rf == conv.rf and block.rf.size[0] < 224
    assert block.global_context and "squeeze-and-excitation" in block.reason
    assert not conv.global_context
    assert geo["avgpool"].rf.box(0, 0) == (0, 0, 224, 224) and geo["avgpool"].global_context


def test_convnext_channels_last_block():
    net = M.convnext_tiny().eval()
    geo = model_geometry(net)
    g = geo["features.1.0.block.5"]
    assert (g.layout, g.shape, g.channels, g.grid) == ("hwc", (56, 56, 96), 96, (56, 56))
    assert geo["features.1.0.block.0"].layout == "chw"
    assert g.rf == geo["features.1.0.block.0"].rf and not g.global_context
    x = torch.randn(2, 56, 56, 96)
    torch.testing.assert_close(to_maps(x, g), x.permute(0, 3, 1, 2))


def test_vit_tokens_class_token_and_attention():
    net = M.vit_b_16().eval()
    geo = model_geometry(net)
    first = geo["encoder.dropout"]  # before any attention: patch fields, class token in front
    assert (first.layout, first.shape, first.grid, first.extra_tokens) == ("tokens", (197, 768), (14, 14), 1)
    assert first.rf == ReceptiveField((16, 16), (16, 16), (0, 0), (224, 224)) and not first.global_context
    layer = geo["encoder.layers.encoder_layer_3"]
    assert layer.layout == "tokens" and layer.global_context and "attention" in layer.reason
    assert layer.rf.box(5, 5) == (0, 0, 224, 224)
    t = torch.arange(2 * 197 * 3, dtype=torch.float32).reshape(2, 197, 3)
    g3 = type(first)(**{**first.__dict__, "channels": 3, "shape": (197, 3)})
    maps = to_maps(t, g3)
    assert maps.shape == (2, 3, 14, 14)
    assert maps[1, 2, 0, 1] == t[1, 1 + 1, 2] and maps[0, 0, 1, 0] == t[0, 1 + 14, 0]
    assert extra_token_values(t, g3).shape == (2, 1, 3)
    assert geo["heads.head"].layout == "vector"


def test_swin_channels_last_and_windows():
    net = M.swin_t().eval()
    geo = model_geometry(net)
    stage = geo["features.1"]
    assert (stage.layout, stage.grid, stage.channels) == ("hwc", (56, 56), 96)
    assert stage.global_context
    assert geo["features.0"].rf == ReceptiveField((4, 4), (4, 4), (0, 0), (224, 224))
    assert geo["features.2"].layout == "hwc" and geo["features.2"].grid == (28, 28)  # patch merging
    assert not geo["features.1.0.attn.qkv"].runs  # weights used by functional attention


def test_aux_heads_do_not_run_and_are_not_default_layers():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = M.googlenet(init_weights=False)  # training mode, aux heads on
    geo = model_geometry(net)
    assert net.training  # the trace ran in eval mode and restored the flag
    assert not geo["aux1.conv.conv"].runs and "never called" in geo["aux1.conv.conv"].reason
    assert geo["inception4a"].runs
    assert not [n for n in default_layers(net) if n.startswith("aux")]


class _ParamBranch(nn.Module):
    """A conv plus an MLP over a constant table (as Swin-V2's position-bias MLP) added to its output."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.register_buffer("table", torch.linspace(-1, 1, 8).reshape(2, 4))
        self.bias_mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 4))

    def forward(self, x):
        return self.conv(x) + self.bias_mlp(self.table).mean(0)[None, :, None, None]


def test_input_independent_branch_is_marked_and_not_a_default_layer():
    net = nn.Sequential(_ParamBranch(), nn.ReLU())
    geo = model_geometry(net, (16, 16))
    for name in ("0.bias_mlp.0", "0.bias_mlp.2", "0.bias_mlp"):
        g = geo[name]
        assert g.runs and not g.visualizable and not g.input_dependent, g
        assert g.layout == "other" and g.rf is None and "does not depend on the input" in g.reason
    assert geo["0.conv"].input_dependent and geo["0"].visualizable and geo["0"].rf.size == (3, 3)
    layers = default_layers(net)
    assert "0.conv" in layers and not [n for n in layers if "bias_mlp" in n]


def test_swin_v2_position_bias_mlp_is_not_a_default_layer():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = M.swin_v2_t()
    geo = model_geometry(net, (256, 256))
    cpb = [n for n in geo if ".cpb_mlp" in n]
    assert cpb and all(geo[n].runs and not geo[n].input_dependent for n in cpb)
    layers = default_layers(net)
    assert "features.1.0" in layers and not [n for n in layers if ".cpb_mlp" in n]


def test_bad_forward_is_one_line():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(10, 2))
    with pytest.raises(DvisError, match="geometry: forward failed"):
        model_geometry(net, (16, 16))


class _Resample(nn.Module):
    def __init__(self, op):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.op = op
        self.out = nn.Identity()

    def forward(self, x):
        return self.out(self.op(self.conv(x)))


@pytest.mark.parametrize("op", [
    lambda y: F.interpolate(y, scale_factor=2, mode="nearest"),
    lambda y: F.interpolate(y, scale_factor=2, mode="bilinear"),
    lambda y: F.interpolate(y, size=(24, 40), mode="bicubic"),
    lambda y: F.interpolate(y, scale_factor=2, mode="nearest-exact"),
    lambda y: F.pixel_shuffle(y, 2),
    lambda y: F.conv_transpose2d(y, torch.ones(8, 2, 3, 3), stride=2, padding=1),
    lambda y: F.pixel_unshuffle(y, 2),
], ids=["nearest", "bilinear", "bicubic", "nearest-exact", "pixel_shuffle", "conv_transpose", "pixel_unshuffle"])
def test_resampling_fields_bound_the_gradient_support(op):
    net = _Resample(op).eval()
    geo = model_geometry(net, (32, 40))["out"]
    assert geo.layout == "chw" and not geo.global_context
    x = torch.randn(1, 3, 32, 40, requires_grad=True)
    out = net(x)
    h, w = geo.grid
    for y, xx in [(1, 2), (h // 2, w // 2), (h - 2, w - 1)]:
        (grad,) = torch.autograd.grad(out[0, :, y, xx].sum(), x, retain_graph=True)
        support = grad[0].abs().sum(0).nonzero()
        top, left, bottom, right = geo.rf.box(y, xx)
        assert support[:, 0].min() >= top and support[:, 0].max() < bottom
        assert support[:, 1].min() >= left and support[:, 1].max() < right
