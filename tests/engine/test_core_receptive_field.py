"""Receptive fields: known values, agreement with the gradient-support reference, residual/concat graphs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from helpers.core import TinyResidual, fake_loaded, seeded
from helpers.geometry_reference import gradient_field
from dvis.errors import DvisError
from dvis.engine.receptive_field import ReceptiveField, receptive_field


@pytest.fixture(scope="module")
def alexnet():
    return torchvision.models.alexnet(weights=None).eval()


def test_alexnet_known_values(alexnet):
    conv5 = receptive_field(alexnet, "features.10")
    assert (conv5.size, conv5.stride, conv5.padding) == ((163, 163), (16, 16), (66, 66))
    pool5 = receptive_field(alexnet, "features.12")
    assert (pool5.size, pool5.stride) == ((195, 195), (32, 32))
    # The adaptive pool is the identity at 224 px, so its field is pool5's.
    assert receptive_field(alexnet, "avgpool") == pool5


def test_fc_sees_whole_input_and_cache(alexnet):
    fc8 = receptive_field(alexnet, "classifier.6", input_size=(224, 224))
    assert fc8.box(0, 0) == (0, 0, 224, 224)
    assert receptive_field(alexnet, "classifier.6") is fc8


def test_box_clip_and_arrays():
    field = ReceptiveField((11, 7), (4, 2), (2, 3), (20, 30))
    assert field.box(0, 0) == (0, 0, 9, 4)
    assert field.box(0, 0, clip=False) == (-2, -3, 9, 4)
    assert field.box(5, 14) == (18, 25, 20, 30)
    top, left, bottom, right = field.box(np.array([0, 1]), np.array([2, 3]), clip=False)
    assert (top.tolist(), left.tolist()) == ([-2, 2], [1, 3])
    assert (bottom.tolist(), right.tolist()) == ([9, 13], [8, 10])


def _chain_a():
    return nn.Sequential(
        nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(4, 4, 3, padding=2, dilation=2), nn.BatchNorm2d(4), nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(4, 4, (3, 1), padding=(1, 0)),
        nn.Conv2d(4, 4, (1, 5), stride=(1, 2)),
        nn.AvgPool2d((2, 3), stride=(2, 1)),
    )


def _chain_b():
    return nn.Sequential(
        nn.Conv2d(3, 4, 5, stride=2, padding=2), nn.ReLU(),
        nn.MaxPool2d(3, stride=2, ceil_mode=True),
        nn.Conv2d(4, 4, 3, dilation=3, padding="same"), nn.Dropout(),
        nn.Conv2d(4, 2, 1),
    )


def _chain_c():
    layers = []
    for _ in range(4):
        layers += [nn.Conv2d(3, 3, 7, padding=3), nn.ReLU()]
    return nn.Sequential(*layers, nn.MaxPool2d(3, stride=2, padding=1, dilation=2))


@pytest.mark.parametrize(("make", "size", "layers"), [
    (_chain_a, (40, 56), ["2", "5", "8"]),
    (_chain_b, (33, 47), ["2", "5"]),
    (_chain_c, (16, 20), ["6", "8"]),  # fields wider than the input: the gradient method enlarges it
])
def test_geometry_and_gradient_agree_on_chains(make, size, layers):
    net = seeded(make())
    for layer in layers:
        assert receptive_field(net, layer, size) == gradient_field(net, layer, size)


def test_chain_values_by_hand():
    net = seeded(_chain_a())
    field = receptive_field(net, "8", (40, 56))
    # rows: 3x3, dilated 3x3 (5), pool 2, 3x1, 1x5/(1,2), avg (2,3)/(2,1)
    assert field.size == (1 + 2 + 4 + 1 + 2 * 2 + 0 + 1 * 2, 1 + 2 + 4 + 1 + 0 + 4 * 2 + 2 * 4)
    assert field.stride == (4, 4)
    assert field.padding == (1 + 2 + 1 * 2, 1 + 2)


def test_residual_and_concat_graph():
    net = TinyResidual().eval()
    size = (24, 40)
    # stem 3/2 p1, pool 3/2 p1, then the residual pair of 3x3 convs: 23 px, stride 4, padding 11.
    block = receptive_field(net, "b", size)
    assert (block.size, block.stride, block.padding) == ((23, 23), (4, 4), (11, 11))
    right = receptive_field(net, "right", size)
    assert (right.size, right.stride, right.padding) == ((39, 31), (4, 4), (19, 15))
    assert receptive_field(net, "left", size).size == (23, 23)
    assert receptive_field(net, "head", size).box(0, 0) == (0, 0, 24, 40)


def test_torchvision_resnet18():
    net = torchvision.models.resnet18(weights=None).eval()
    for layer, expected in (("layer1.0", (27, 4, 13)), ("layer2.0", (67, 8, 33)), ("layer1.0.conv1", (19, 4, 9))):
        field = receptive_field(net, layer, 64)
        assert (field.size[0], field.stride[0], field.padding[0]) == expected
        assert field.size[0] == field.size[1] and field.input_size == (64, 64)
    assert receptive_field(net, "avgpool", 64).box(0, 0) == (0, 0, 64, 64)


def test_torchvision_inception_v3_functional_relus_and_concat():
    net = torchvision.models.inception_v3(weights=None, init_weights=False, aux_logits=False).eval()
    # Stem 3/2, 3, 3 p1, pool 3/2, 1x1, 3, pool 3/2, then the 5x5 and double-3x3 branches.
    field = receptive_field(net, "Mixed_5b", (150, 150))
    assert (field.size, field.stride, field.padding) == ((63, 63), (8, 8), (18, 18))


def test_loaded_model_input_size_and_bad_arguments():
    net = seeded(_chain_b())
    model = fake_loaded(net, ["5"], size=(33, 47))
    assert receptive_field(model, "5").input_size == (33, 47)
    with pytest.raises(DvisError, match="input_size"):
        receptive_field(net, "5", input_size=(0, 3))
    with pytest.raises(ValueError, match="valid layers"):
        receptive_field(net, "9")
    assert all(not p.requires_grad or p.grad is None for p in net.parameters())
    torch.testing.assert_close(net[0].weight, seeded(_chain_b())[0].weight)
