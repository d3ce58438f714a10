"""backproject, backproject_batch and forward_and_back against answers known by hand or by autograd."""
from __future__ import annotations

import threading
from collections import OrderedDict

import pytest
import torch
import torchvision
from torch import nn

from helpers.core import (
    FunctionalReLUNet, ReusedReLUNet, TinyResidual, assert_same_state, conv_relu_pool, fake_loaded, seeded,
    small_sequential, snapshot, twin,
)
from dvis.engine.activations import activations, forward_to
from dvis.engine.backproject import backproject, backproject_batch, forward_and_back
from dvis.engine.frozen_ops import _conv2d_input_grad
from dvis.errors import DvisError

MODES = ("deconv", "guided", "grad")


def test_deconv_places_transposed_filter_at_the_switch():
    net = conv_relu_pool()
    x = torch.randn(1, 1, 6, 6, generator=torch.Generator().manual_seed(1))
    pooled = activations(net, x, ["pool"])["pool"][0]
    unit = int(pooled.flatten(1).max(1).values.argmax())  # the channel with the largest positive max
    relu = activations(net, x, ["relu"])["relu"][0, unit]
    py, px = divmod(int(pooled[unit].argmax()), pooled.shape[2])
    window = relu[2 * py:2 * py + 2, 2 * px:2 * px + 2]
    wy, wx = divmod(int(window.argmax()), 2)
    sy, sx = 2 * py + wy, 2 * px + wx  # the max-pool switch in the ReLU map
    expected = torch.zeros(1, 1, 8, 8)  # padded by the conv's 1 px on each side
    expected[0, 0, sy:sy + 3, sx:sx + 3] = net.conv.weight[unit, 0].detach()
    for seed_at in ("max", (py, px)):
        got = backproject(net, x, "pool", unit, "deconv", at=seed_at)
        torch.testing.assert_close(got, expected[:, :, 1:7, 1:7])


def test_guided_and_deconv_differ_exactly_where_they_should():
    net = small_sequential()
    x = torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(2))
    runs = {m: forward_and_back(net, x, ["conv2"], "conv3", 1, m, at=(2, 3), diff_layers=["conv2", "relu2"])
            for m in MODES}
    pre = runs["grad"].activations["conv2"]
    signal = runs["grad"].diffs["relu2"]  # the signal arriving at ReLU2 is the same in every mode
    for m in MODES:
        torch.testing.assert_close(runs[m].diffs["relu2"], signal)
    torch.testing.assert_close(runs["grad"].diffs["conv2"], signal * (pre > 0))
    torch.testing.assert_close(runs["guided"].diffs["conv2"], signal.clamp(min=0) * (pre > 0))
    torch.testing.assert_close(runs["deconv"].diffs["conv2"], signal.clamp(min=0))
    differ = runs["deconv"].diffs["conv2"] != runs["guided"].diffs["conv2"]
    assert differ.any()
    assert torch.equal(differ, (pre <= 0) & (signal > 0))


def test_grad_mode_equals_autograd_of_the_unit():
    net = small_sequential().double()  # float64: the engine's conv backward sums in another order
    x = torch.randn(1, 3, 10, 10, dtype=torch.float64, requires_grad=True)
    out = forward_to(net, x, "conv3")
    expected = torch.autograd.grad(out[0, 4, 1, 2], x)[0]
    torch.testing.assert_close(backproject(net, x, "conv3", 4, "grad", at=(1, 2)), expected)
    # "map" seeds the channel map with itself: the gradient of half its squared norm.
    expected = torch.autograd.grad(0.5 * (forward_to(net, x, "conv3")[0, 4] ** 2).sum(), x)[0]
    torch.testing.assert_close(backproject(net, x, "conv3", 4, "grad", at="map"), expected)
    assert x.grad is None


def test_fc_unit_ignores_at():
    net = TinyResidual().eval()
    x = torch.randn(1, 3, 16, 16, requires_grad=True)
    expected = torch.autograd.grad(net(x)[0, 1], x)[0]
    for at in ("max", (0, 0), "map"):
        torch.testing.assert_close(backproject(net, x, "head", 1, "grad", at=at), expected)


@pytest.mark.parametrize("inplace_method", [False, True])
def test_functional_relus_are_swapped(inplace_method):
    reference = small_sequential()
    net = twin(FunctionalReLUNet(inplace_method), reference)
    x = torch.randn(1, 3, 10, 10)
    results = {}
    for m in MODES:
        results[m] = backproject(net, x, "conv3", 2, m)
        torch.testing.assert_close(results[m], backproject(reference, x, "conv3", 2, m))
    assert not torch.allclose(results["deconv"], results["grad"])
    assert not torch.allclose(results["guided"], results["grad"])


def test_relu_called_twice():
    reference = small_sequential()
    net = twin(ReusedReLUNet(), reference)
    x = torch.randn(1, 3, 10, 10)
    for m in MODES:
        torch.testing.assert_close(backproject(net, x, "conv3", 5, m), backproject(reference, x, "conv3", 5, m))


def _per_unit(net, x, layer, units, mode, at):
    rows = []
    for i, unit in enumerate(units):
        where = at if isinstance(at, str) else tuple(at[i].tolist())
        rows.append(backproject(net, x[i:i + 1] if x.shape[0] > 1 else x, layer, unit, mode, where))
    return torch.cat(rows)


@pytest.mark.parametrize("mode", MODES)
def test_batched_equals_per_unit(mode):
    net = TinyResidual().eval()
    x = torch.randn(1, 3, 24, 24)
    units = [0, 2, 1, 1]
    for at in ("max", "map", torch.tensor([[0, 0], [1, 2], [5, 5], [3, 1]])):
        shared = backproject_batch(net, x, "right", units, mode, at, chunk_size=3)
        torch.testing.assert_close(shared, _per_unit(net, x, "right", units, mode, at))
        assert not shared.requires_grad, "no autograd graph may leak out of the vmapped backward"
    crops = torch.randn(4, 3, 24, 24)
    each = backproject_batch(net, crops, "left", [1, 0, 2, 1], mode)
    torch.testing.assert_close(each, _per_unit(net, crops, "left", [1, 0, 2, 1], mode, "max"))


def test_batched_torchvision_dag_models():
    x = torch.randn(1, 3, 96, 96)
    resnet = torchvision.models.resnet18(weights=None).eval()
    googlenet = torchvision.models.googlenet(weights=None, init_weights=False, aux_logits=False).eval()
    inception = torchvision.models.inception_v3(weights=None, init_weights=False, aux_logits=False).eval()
    for net, layer in ((resnet, "layer2.0"), (googlenet, "inception3a"), (inception, "Mixed_5b")):
        batched = backproject_batch(net, x, layer, [3, 7, 120], "deconv")
        torch.testing.assert_close(batched, _per_unit(net, x, layer, [3, 7, 120], "deconv", "max"))
        assert batched.abs().sum() > 0


def test_forward_and_back_matches_separate_calls():
    net = small_sequential()
    model = fake_loaded(net, ["conv1", "conv2", "conv3"], size=(10, 10))
    x = torch.randn(1, 3, 10, 10)
    result = forward_and_back(model, x, model.layers, "conv2", 3, "guided", "max", diff_layers=["conv2", "conv3"])
    expected = activations(model, x)
    assert list(result.activations) == model.layers
    for name in model.layers:
        torch.testing.assert_close(result.activations[name], expected[name])
    torch.testing.assert_close(result.input_grad, backproject(model, x, "conv2", 3, "guided"))
    assert torch.count_nonzero(result.diffs["conv2"]) == 1  # the seed itself
    assert torch.count_nonzero(result.diffs["conv3"]) == 0  # past the back layer: nothing flows
    forward_only = forward_and_back(model, x, ["conv3"], None)
    assert forward_only.input_grad is None and forward_only.diffs == {}
    torch.testing.assert_close(forward_only.activations["conv3"], expected["conv3"])


@pytest.mark.parametrize("grad_before", [True, False])
def test_forward_and_back_records_no_graph_after_the_back_layer(grad_before):
    """Layers after back_layer run with autograd off (only their values are needed); the input gradient
    and the diffs are those of a full-graph autograd backward, and the caller's grad mode is restored."""
    net = small_sequential()
    model = fake_loaded(net, ["conv1", "conv2", "conv3"], size=(10, 10))
    x = torch.randn(1, 3, 10, 10)
    grad_on = {}

    def note(name):
        def hook(module, args, output):
            grad_on.setdefault(name, torch.is_grad_enabled())
        return hook

    hooks = [getattr(net, n).register_forward_hook(note(n)) for n in ("conv1", "conv2", "relu2", "conv3")]
    with torch.set_grad_enabled(grad_before):
        result = forward_and_back(model, x, model.layers, "conv2", 3, "grad", "max", diff_layers=["conv1", "conv3"])
        assert torch.is_grad_enabled() is grad_before
    for h in hooks:
        h.remove()
    assert grad_on == {"conv1": True, "conv2": True, "relu2": False, "conv3": False}
    xx = x.clone().requires_grad_(True)  # the reference: plain autograd through the whole net
    c1 = net.conv1(xx)
    c2 = net.conv2(net.pool1(net.relu1(c1.clone())))
    net.conv3(net.relu2(c2))
    seed = torch.zeros_like(c2)
    seed[0, 3].view(-1)[c2[0, 3].argmax()] = 1
    ref_x, ref_c1 = torch.autograd.grad(c2, [xx, c1], seed)
    torch.testing.assert_close(result.input_grad, ref_x)
    torch.testing.assert_close(result.diffs["conv1"], ref_c1)
    assert result.diffs["conv3"].shape == (1, 6, 5, 5) and torch.count_nonzero(result.diffs["conv3"]) == 0
    torch.testing.assert_close(result.activations["conv3"], activations(model, x)["conv3"])


class _DepthwiseBN(nn.Module):
    """Grouped, depthwise and dilated convs with eval-mode batch norms (MobileNet / EfficientNet parts)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.dw = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=8)
        self.bn2 = nn.BatchNorm2d(8, affine=False)
        self.grouped = nn.Conv2d(8, 6, 3, stride=2, padding=1, groups=2)
        self.act = nn.SiLU()

    def forward(self, x):
        x = self.act(self.bn1(self.conv1(x)))
        return self.grouped(torch.relu(self.bn2(self.dw(x))))


def _depthwise_bn() -> nn.Module:
    net = seeded(_DepthwiseBN())
    with torch.no_grad():
        for bn in (net.bn1, net.bn2):
            bn.running_mean.uniform_(-1, 1)
            bn.running_var.uniform_(0.5, 2)
        net.bn1.weight.uniform_(-2, 2)
    return net.eval()


def test_grouped_convs_and_eval_batch_norm_keep_no_activation_for_the_backward():
    """In the back modes grouped/dilated convs keep only their weights and eval batch norms nothing;
    the input gradient is still plain autograd's."""
    net = _depthwise_bn()
    x = torch.randn(1, 3, 16, 16)
    xx = x.clone().requires_grad_(True)
    out = net(xx)
    seed = torch.zeros_like(out)
    seed[0, 4].view(-1)[out[0, 4].argmax()] = 1
    ref = torch.autograd.grad(out, xx, seed)[0]
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        got = backproject(net, x, "grouped", 4, "grad")
    torch.testing.assert_close(got, ref)
    activation = 8 * 8 * 8  # the smallest map between conv1 and grouped
    # kept: weights, per-channel scales, and the inputs of SiLU and ReLU (their derivatives need them)
    assert sum(n >= activation for n in saved) == 2, saved
    for mode in ("deconv", "guided"):
        saved.clear()
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            backproject(net, x, "grouped", 4, mode)
        assert sum(n >= activation for n in saved) == (0 if mode == "deconv" else 2), (mode, saved)


def test_model_left_as_it_was_also_after_errors():
    net = small_sequential()
    net.conv1.weight.requires_grad_(False)
    net.relu2.train()
    before = snapshot(net)
    x = torch.randn(1, 3, 10, 10)
    for m in MODES:
        backproject(net, x, "conv3", 0, m)
        backproject_batch(net, x, "conv2", [0, 1, 2], m)
        forward_and_back(net, x, ["conv1"], "conv2", 1, m, diff_layers=["relu1"])
    with pytest.raises(DvisError, match="out of range"):
        backproject_batch(net, x, "conv2", [0, 99], "deconv")
    with pytest.raises(DvisError, match="out of range"):
        backproject(net, x, "conv2", 99, "guided")
    with pytest.raises(DvisError, match="outside"):
        backproject(net, x, "conv2", 0, "deconv", at=(50, 0))
    with pytest.raises(DvisError, match="unknown back-projection mode"):
        backproject(net, x, "conv2", 0, "deconvnet")
    with pytest.raises(ValueError, match="valid layers"):
        backproject(net, x, "conv9", 0)
    with pytest.raises(DvisError, match="expected Nx3xHxW"):
        backproject(net, torch.randn(1, 4, 10, 10), "conv2", 0)
    with pytest.raises(DvisError, match="chunk_size"):
        backproject_batch(net, x, "conv2", [0, 1], chunk_size=0)
    with pytest.raises(DvisError, match="one image per unit"):
        backproject_batch(net, torch.randn(2, 3, 10, 10), "conv2", [0, 1, 2])
    assert_same_state(before, snapshot(net))


def test_float64_net_and_seed_values():
    net = seeded(torch.nn.Sequential(torch.nn.Conv2d(2, 3, 3), torch.nn.ReLU())).double()
    x = torch.randn(1, 2, 7, 7, dtype=torch.float64)
    out = backproject(net, x, "0", 1, "grad", at="max")
    assert out.dtype == torch.float64 and out.shape == x.shape
    value = forward_to(net, x, "0")[0, 1]
    y, xx = divmod(int(value.argmax()), value.shape[1])
    expected = torch.zeros(1, 2, 7, 7, dtype=torch.float64)
    expected[0, :, y:y + 3, xx:xx + 3] = net[0].weight[1].detach()
    torch.testing.assert_close(out, expected)
    with pytest.raises(DvisError, match="integer"):
        backproject(net, x, "0", 1.5)


def test_overlapping_pool_switches_accumulate():
    net = small_sequential()
    x = torch.randn(1, 3, 12, 12, generator=torch.Generator().manual_seed(3))
    unit = 2
    relu = activations(net, x, ["relu1"])["relu1"]
    pooled, switches = torch.nn.functional.max_pool2d(relu, 3, 2, 1, return_indices=True)
    idx = switches[0, unit].flatten()
    assert torch.unique(idx, return_counts=True)[1].max() > 1, "some input wins several overlapping windows"
    expected = torch.zeros(relu[0, unit].numel()).index_add_(0, idx, pooled[0, unit].flatten())
    result = forward_and_back(net, x, [], "pool1", unit, "deconv", at="map", diff_layers=["relu1"])
    signal = result.diffs["relu1"][0]
    torch.testing.assert_close(signal[unit].flatten(), expected)
    assert torch.count_nonzero(signal[torch.arange(4) != unit]) == 0


def test_state_restored_when_the_forward_raises_inside():
    class Fail(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom")

    children = list(small_sequential().named_children())
    net = torch.nn.Sequential(OrderedDict(children[:4] + [("fail", Fail())] + children[4:]))
    net.conv1.bias.requires_grad_(False)
    before = snapshot(net)
    x = torch.randn(1, 3, 10, 10)
    for m in MODES:
        with pytest.raises(DvisError, match="boom"):
            backproject(net, x, "conv3", 0, m)
        with pytest.raises(DvisError, match="boom"):
            backproject_batch(net, x, "conv3", [0, 1], m)
        with pytest.raises(DvisError, match="boom"):
            forward_and_back(net, x, ["conv1"], "conv3", 0, m)
    assert_same_state(before, snapshot(net))
    assert not torch.overrides._get_current_function_mode_stack(), "the ReLU-swapping mode was left active"
    y = torch.randn(5, requires_grad=True)
    torch.relu(y).sum().backward()
    torch.testing.assert_close(y.grad, (y > 0).float())


@pytest.mark.parametrize(("kernel", "stride", "padding", "size"), [
    ((3, 3), (1, 1), (1, 1), (13, 13)),
    ((11, 11), (4, 4), (2, 2), (67, 67)),  # AlexNet conv1's geometry
    ((5, 3), (2, 3), (2, 1), (17, 23)),
    ((3, 3), (2, 2), (0, 0), (10, 11)),  # rows/columns no output window reaches
    ((3, 3), (5, 5), (1, 1), (11, 11)),  # stride wider than the kernel
    ((2, 5), (1, 2), (0, 2), (6, 9)),
])
def test_conv_input_gradient_by_stride_phases(kernel, stride, padding, size):
    x = torch.randn(2, 3, *size, dtype=torch.float64)
    weight = torch.randn(4, 3, *kernel, dtype=torch.float64)
    grad = torch.randn_like(torch.nn.functional.conv2d(x, weight, None, stride, padding))
    expected = torch.nn.grad.conv2d_input(x.shape, weight, grad, stride, padding)
    torch.testing.assert_close(_conv2d_input_grad(grad, weight, size, stride, padding), expected)


def test_concurrent_calls_from_two_threads():
    net = small_sequential()
    net.conv2.bias.requires_grad_(False)
    before = snapshot(net)
    x = torch.randn(1, 3, 10, 10)
    expected_back = backproject_batch(net, x, "conv3", [0, 1, 2, 3], "deconv")
    expected_acts = activations(net, x)
    results, errors = {}, []

    def work(name, fn):
        try:
            results[name] = [fn() for _ in range(5)]
        except Exception as err:  # noqa: BLE001 - reported by the assertion below
            errors.append(err)

    def back():
        return backproject_batch(net, x, "conv3", [0, 1, 2, 3], "deconv")

    threads = [
        threading.Thread(target=work, args=("back", back)),
        threading.Thread(target=work, args=("acts", lambda: activations(net, x))),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in results["back"]:
        torch.testing.assert_close(got, expected_back)
    for got in results["acts"]:
        assert got.keys() == expected_acts.keys()
        assert all(torch.equal(got[k], expected_acts[k]) for k in got)
    assert_same_state(before, snapshot(net))


class _ChannelsLast(nn.Module):
    """ConvNeXt-like: conv, then a block in N,H,W,C (permute, linear, permute back)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.lin = nn.Linear(4, 6)

    def forward(self, x):
        y = self.conv(x).permute(0, 2, 3, 1)
        return self.lin(y).permute(0, 3, 1, 2)


class _Tokens(nn.Module):
    """ViT-like: 4x4 patches as tokens behind a class token, then a per-token linear."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 5, 4, stride=4)
        self.cls = nn.Parameter(torch.ones(1, 1, 5))
        self.lin = nn.Linear(5, 5)

    def forward(self, x):
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls.expand(t.shape[0], -1, -1), t], 1)
        return self.lin(t)[:, 0]


@pytest.mark.parametrize(("make", "layer", "layout"), [(_ChannelsLast, "lin", "hwc"), (_Tokens, "lin", "tokens")])
@pytest.mark.parametrize("mode", ["deconv", "guided", "grad"])
def test_channels_last_and_token_layers_back_project_their_patch(make, layer, layout, mode):
    from dvis.engine.geometry import model_geometry

    net = seeded(make())
    x = torch.randn(1, 3, 16, 20)
    geom = model_geometry(net, (16, 20))[layer]
    assert geom.layout == layout
    grads = backproject_batch(net, x, layer, [1, 2], mode, at=torch.tensor([[1, 2], [3, 4]]))
    for g, (y, xx) in zip(grads, [(1, 2), (3, 4)]):
        support = g.abs().sum(0).nonzero()
        top, left, bottom, right = geom.rf.box(y, xx)
        assert support.numel() and support[:, 0].min() >= top and support[:, 0].max() < bottom
        assert support[:, 1].min() >= left and support[:, 1].max() < right
    one = backproject(net, x, layer, 1, mode, at=(1, 2))
    torch.testing.assert_close(one[0], grads[0])
