"""Deconv/guided rules at activations other than ReLU, on a hand-checked 1x1 net; functional forms;
the rectify="relu" setting; the activation summary."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dvis.engine.backproject import backproject_batch
from dvis.errors import DvisError
from dvis.engine.geometry import traced_activations
from dvis.engine.hooks import RULES, rule_table

X = [-2.0, -0.5, 0.5, 2.0, 7.0]


class OneByOne(nn.Module):
    """x -> act(x) -> w * . (1x1 convs, weight 1 and w): the signal reaching the activation is w."""

    def __init__(self, act, w: float, functional: bool = False):
        super().__init__()
        self.a = nn.Conv2d(1, 1, 1, bias=False)
        self.b = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.a.weight.fill_(1.0)
            self.b.weight.fill_(w)
        self.act = act
        self.functional = functional

    def forward(self, x):
        y = self.a(x)
        return self.b(self.act(y))


def _back(net, mode, rectify="all"):
    x = torch.tensor(X).view(1, 1, 1, -1)
    pos = torch.tensor([[0, j] for j in range(len(X))])
    g = backproject_batch(net, x, "b", [0] * len(X), mode, at=pos, rectify=rectify)
    return g[torch.arange(len(X)), 0, 0, torch.arange(len(X))]


def _sigmoid(v):
    return 1 / (1 + math.exp(-v))


# f'(x) at X by hand: GELU: Phi(x) + x phi(x); SiLU: s(1 + x(1 - s)); Hardswish: (2x + 3)/6 on [-3, 3].
_PHI = [0.5 * (1 + math.erf(v / math.sqrt(2))) for v in X]
_phi = [math.exp(-v * v / 2) / math.sqrt(2 * math.pi) for v in X]
DERIVATIVES = {
    "ReLU": (nn.ReLU(), [0, 0, 1, 1, 1]),
    "ReLU6": (nn.ReLU6(inplace=True), [0, 0, 1, 1, 0]),
    "LeakyReLU": (nn.LeakyReLU(0.1), [0.1, 0.1, 1, 1, 1]),
    "ELU": (nn.ELU(), [math.exp(-2), math.exp(-0.5), 1, 1, 1]),
    "GELU": (nn.GELU(), [p + v * q for p, v, q in zip(_PHI, X, _phi)]),
    "SiLU": (nn.SiLU(inplace=True), [_sigmoid(v) * (1 + v * (1 - _sigmoid(v))) for v in X]),
    "Hardswish": (nn.Hardswish(), [(2 * v + 3) / 6 if -3 <= v <= 3 else float(v > 3) for v in X]),
}


@pytest.mark.parametrize("name", list(DERIVATIVES))
@pytest.mark.parametrize("w", [1.0, -1.0])
def test_rules_by_hand(name, w):
    act, d = DERIVATIVES[name]
    net = OneByOne(act, w).eval()
    d = torch.tensor(d, dtype=torch.float32)
    torch.testing.assert_close(_back(net, "grad"), w * d)
    slope = 0.1 if name == "LeakyReLU" else 0.0
    # deconv ignores the forward: the rectified signal (LeakyReLU: its slope on negative signal)
    torch.testing.assert_close(_back(net, "deconv"), torch.full((len(X),), w if w > 0 else slope * w))
    # guided: positive signal times the positive part of f'(x)
    torch.testing.assert_close(_back(net, "guided"), max(w, 0) * d.clamp(min=0))


def test_mish_guided_matches_autograd_derivative():
    x = torch.tensor(X, requires_grad=True)
    (d,) = torch.autograd.grad(F.mish(x).sum(), x)
    net = OneByOne(nn.Mish(), 1.0).eval()
    torch.testing.assert_close(_back(net, "guided"), d.clamp(min=0))
    torch.testing.assert_close(_back(net, "grad"), d)


class Functional(nn.Module):
    """GELU as F.gelu and a ReLU as torch.relu inside forward(), no activation modules."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 1, 1, bias=False)
        self.b = nn.Conv2d(1, 1, 1, bias=False)
        with torch.no_grad():
            self.a.weight.fill_(1.0)
            self.b.weight.fill_(1.0)

    def forward(self, x):
        return self.b(torch.relu(F.gelu(self.a(x)) + 1.0) - 1.0)


def test_functional_forms_are_caught_and_rectify_relu_only():
    net = Functional().eval()
    gelu_d = torch.tensor([p + v * q for p, v, q in zip(_PHI, X, _phi)])
    # gelu(x) + 1 > 0 everywhere here, so the ReLU passes and the GELU rule decides
    torch.testing.assert_close(_back(net, "guided"), gelu_d.clamp(min=0))
    torch.testing.assert_close(_back(net, "guided", rectify="relu"), gelu_d)  # GELU: plain gradient
    torch.testing.assert_close(_back(net, "grad"), gelu_d)
    with pytest.raises(DvisError, match="rectify"):
        _back(net, "guided", rectify="some")


def test_activation_summary_and_rule_table():
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Conv2d(4, 4, 3), nn.ReLU6(), nn.Conv2d(4, 4, 1), nn.SiLU())
    assert traced_activations(net, (16, 16)) == {"GELU": 1, "ReLU6": 1, "SiLU": 1}
    assert traced_activations(Functional(), (8, 8)) == {"GELU": 1, "ReLU": 1}
    table = rule_table(["GELU", "ReLU6"], rectify="relu")
    assert table["GELU"]["guided"] == RULES["grad"] and table["ReLU6"]["guided"] == RULES["guided"]
    assert rule_table(["GELU"])["GELU"]["deconv"] == RULES["deconv"]
