"""Tiny nets and state snapshots shared by the core engine tests."""
from __future__ import annotations

from collections import OrderedDict
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch import nn


def seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    """Re-initialize every parameter from a fixed seed, so twin nets get identical weights."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return module.eval()


def conv_relu_pool() -> nn.Sequential:
    """conv(1->2, 3x3, pad 1) + in-place ReLU + 2x2 max-pool: the hand-checkable deconvnet."""
    return seeded(nn.Sequential(OrderedDict(
        conv=nn.Conv2d(1, 2, 3, padding=1), relu=nn.ReLU(inplace=True), pool=nn.MaxPool2d(2),
    )))


def small_sequential() -> nn.Sequential:
    """conv/ReLU/overlapping pool/conv/ReLU/conv with module ReLUs (the reference for twins)."""
    return seeded(nn.Sequential(OrderedDict(
        conv1=nn.Conv2d(3, 4, 3, padding=1), relu1=nn.ReLU(inplace=True),
        pool1=nn.MaxPool2d(3, stride=2, padding=1),
        conv2=nn.Conv2d(4, 5, 3, padding=1), relu2=nn.ReLU(),
        conv3=nn.Conv2d(5, 6, 3, padding=1),
    )))


class FunctionalReLUNet(nn.Module):
    """The same computation as :func:`small_sequential` with ReLUs called inside forward()."""

    def __init__(self, inplace_method: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.conv3 = nn.Conv2d(5, 6, 3, padding=1)
        self.inplace_method = inplace_method

    def forward(self, x):
        x = self.conv1(x)
        if self.inplace_method:
            x.relu_()  # the return value is ignored on purpose: only the in-place effect counts
        else:
            x = F.relu(x, inplace=True)
        x = self.pool1(x)
        x = torch.relu(self.conv2(x)) if self.inplace_method else F.relu(self.conv2(x))
        return self.conv3(x)


class ReusedReLUNet(nn.Module):
    """One ReLU module called twice, as in torchvision's BasicBlock."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.relu = nn.ReLU(inplace=True)
        self.pool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.conv3 = nn.Conv2d(5, 6, 3, padding=1)

    def forward(self, x):
        x = self.pool1(self.relu(self.conv1(x)))
        return self.conv3(self.relu(self.conv2(x)))


def twin(net: nn.Module, reference: nn.Module) -> nn.Module:
    """Copy ``reference``'s conv weights into ``net`` by conv name (conv1..conv3)."""
    with torch.no_grad():
        for name in ("conv1", "conv2", "conv3"):
            getattr(net, name).load_state_dict(getattr(reference, name).state_dict())
    return net.eval()


class TinyResidual(nn.Module):
    """A small residual + concatenation net (stem, two-conv residual block, two-branch concat)."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(3, stride=2, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 3, padding=1)
        self.left = nn.Conv2d(4, 3, 1)
        self.right = nn.Conv2d(4, 3, (5, 3), padding=(2, 1))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        x = self.pool(F.relu(self.stem(x)))
        x = F.relu(x + self.b(F.relu(self.a(x))))
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.head(x.mean(dim=(2, 3)))


def fake_loaded(net: nn.Module, layers: list[str], size=(16, 16), channels: int = 3) -> SimpleNamespace:
    """A stand-in for ``LoadedModel`` with the attributes the core engine reads."""
    return SimpleNamespace(net=net, layers=layers, input_size=size, channels=channels)


def snapshot(net: nn.Module) -> dict:
    """Everything a core call must leave as it was: hooks, modes, flags, grads and weights."""
    return {
        "modules": [(name, type(m), m.training, dict(m._forward_hooks), dict(m._forward_pre_hooks),
                     dict(m._backward_hooks), dict(getattr(m, "_backward_pre_hooks", {})))
                    for name, m in net.named_modules()],
        "params": [(name, p.requires_grad, p.grad, p.detach().clone()) for name, p in net.named_parameters()],
        "buffers": {name: b.clone() for name, b in net.named_buffers()},
    }


def assert_same_state(before: dict, after: dict) -> None:
    assert before["modules"] == after["modules"]
    assert len(before["params"]) == len(after["params"])
    for (n0, r0, g0, v0), (n1, r1, g1, v1) in zip(before["params"], after["params"]):
        assert (n0, r0) == (n1, r1)
        assert g0 is None and g1 is None
        assert torch.equal(v0, v1)
    assert before["buffers"].keys() == after["buffers"].keys()
    assert all(torch.equal(before["buffers"][k], after["buffers"][k]) for k in before["buffers"])
