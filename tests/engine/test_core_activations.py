"""activations, forward_to, default_layers and the checks on layer names and inputs."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from helpers.core import FunctionalReLUNet, assert_same_state, fake_loaded, seeded, small_sequential, snapshot
from dvis.engine.activations import activations, forward_to
from dvis.errors import DvisError, LayerNotFoundError
from dvis.engine.net import as_net
from dvis.engine.layers import default_layers


def test_inplace_relu_cannot_overwrite_conv_values():
    net = small_sequential()
    x = torch.randn(1, 3, 12, 12)
    acts = activations(net, x, ["conv1", "relu1", "pool1"])
    pre = F.conv2d(x, net.conv1.weight, net.conv1.bias, padding=1)
    assert (acts["conv1"] < 0).any(), "conv shows its own, pre-ReLU output"
    torch.testing.assert_close(acts["conv1"], pre)
    torch.testing.assert_close(acts["relu1"], pre.clamp(min=0))
    torch.testing.assert_close(acts["pool1"], F.max_pool2d(pre.clamp(min=0), 3, 2, 1))
    assert list(acts) == ["conv1", "relu1", "pool1"]


def test_default_layers_alexnet_and_resnet():
    alex = torchvision.models.alexnet(weights=None)
    assert default_layers(alex) == [
        "features.0", "features.1", "features.2", "features.3", "features.4", "features.5", "features.6",
        "features.7", "features.8", "features.9", "features.10", "features.11", "features.12", "avgpool",
        "classifier.1", "classifier.2", "classifier.4", "classifier.5", "classifier.6",
    ]
    res = default_layers(torchvision.models.resnet18(weights=None))
    # Blocks come after their convs; the twice-called block ReLU is left out.
    assert res.index("layer1.0.conv2") < res.index("layer1.0") < res.index("layer1.1.conv1")
    assert "layer1.0.relu" not in res and res[-2:] == ["avgpool", "fc"]


def test_loaded_model_uses_its_layers_and_net():
    net = small_sequential()
    model = fake_loaded(net, ["conv2", "conv1"])
    assert as_net(model) is net
    assert default_layers(model) == ["conv2", "conv1"]
    acts = activations(model, torch.randn(1, 3, 16, 16))
    assert list(acts) == ["conv2", "conv1"]
    assert activations(model, torch.randn(1, 3, 16, 16), []) == {}


def test_any_rank_fc_and_1d():
    mlp = seeded(nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 3)))
    x = torch.randn(2, 5)
    acts = activations(mlp, x)
    assert list(acts) == ["0", "1", "2"]
    torch.testing.assert_close(acts["2"], mlp(x))
    conv1d = seeded(nn.Sequential(nn.Conv1d(2, 3, 3), nn.ReLU()))
    assert activations(conv1d, torch.randn(1, 2, 9))["0"].shape == (1, 3, 7)


def test_resnet_block_output_matches_manual_forward():
    net = torchvision.models.resnet18(weights=None).eval()
    x = torch.randn(1, 3, 64, 64)
    acts = activations(net, x, ["layer1.0", "layer2.0.downsample.0"])
    with torch.no_grad():
        stem = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        block = net.layer1[0](stem)
        down = net.layer2[0].downsample[0](net.layer1[1](block))
    torch.testing.assert_close(acts["layer1.0"], block)
    torch.testing.assert_close(acts["layer2.0.downsample.0"], down)


def test_forward_stops_after_last_layer():
    class Boom(nn.Module):
        def forward(self, x):
            raise AssertionError("the forward should have stopped before this layer")

    net = nn.Sequential(nn.Conv2d(3, 2, 3), nn.ReLU(), Boom())
    x = torch.randn(1, 3, 8, 8)
    assert activations(net, x, ["0", "1"])["1"].shape == (1, 2, 6, 6)
    assert forward_to(net, x, "1").shape == (1, 2, 6, 6)


def test_forward_to_keeps_graph_under_grad():
    net = small_sequential()
    x = torch.randn(1, 3, 8, 8, requires_grad=True)
    out = forward_to(net, x, "conv2")
    out[0, 1, 2, 2].backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unknown_layer_lists_valid_names():
    net = small_sequential()
    with pytest.raises(ValueError, match=r"'conv9'.*valid layers: conv1, relu1, pool1") as info:
        activations(net, torch.randn(1, 3, 8, 8), ["conv1", "conv9"])
    assert isinstance(info.value, LayerNotFoundError)
    with pytest.raises(LayerNotFoundError):
        forward_to(net, torch.randn(1, 3, 8, 8), "nope")


def test_wrong_input_shape_names_expected_shape():
    net = small_sequential()
    with pytest.raises(DvisError, match=r"1x1x8x8 does not fit the net: expected Nx3xHxW"):
        activations(net, torch.randn(1, 1, 8, 8))
    with pytest.raises(DvisError, match=r"expected Nx3x16x16"):
        forward_to(fake_loaded(net, ["conv1"]), torch.randn(3, 16, 16), "conv1")
    with pytest.raises(DvisError, match="float tensor"):
        activations(net, torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
    too_small = torchvision.models.alexnet(weights=None).eval()
    with pytest.raises(DvisError, match=r"forward pass failed for input 1x3x8x8 \(expected Nx3xHxW\)"):
        activations(too_small, torch.randn(1, 3, 8, 8), ["features.12"])


def test_functional_relu_net_and_unreached_layers_warn():
    net = FunctionalReLUNet(inplace_method=True).eval()
    x = torch.randn(1, 3, 8, 8)
    conv1 = activations(net, x, ["conv1"])["conv1"]
    torch.testing.assert_close(conv1, F.conv2d(x, net.conv1.weight, net.conv1.bias, padding=1))
    googlenet = torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=True).eval()
    with pytest.warns(UserWarning, match="aux1.*not reached"):
        acts = activations(googlenet, torch.randn(1, 3, 64, 64), ["inception3a", "aux1.fc2"])
    assert list(acts) == ["inception3a"] and acts["inception3a"].shape == (1, 256, 8, 8)


def test_hooks_removed_and_state_kept_even_on_errors():
    net = small_sequential()
    net.conv2.weight.requires_grad_(False)
    net.relu2.train()
    before = snapshot(net)
    activations(net, torch.randn(1, 3, 8, 8))
    forward_to(net, torch.randn(1, 3, 8, 8), "conv2")

    class Fail(nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    net.add_module("fail", Fail())
    with pytest.raises(DvisError, match="boom"):
        activations(net, torch.randn(1, 3, 8, 8), ["conv3", "fail"])
    del net.fail
    assert_same_state(before, snapshot(net))
