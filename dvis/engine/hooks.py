"""Forward hooks with guaranteed removal, and the activation functions dvis knows.

Every place that hooks a net goes through :func:`forward_hooks` (pytorch-grad-cam style: a context
manager that registers, and removes in ``finally``). Hooks only act in the thread that registered
them, so a toolbox worker's hooks never fire in another thread's forward of the same net.
"""
from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

HookFn = Callable[[str, nn.Module, tuple, object], object]


@contextmanager
def forward_hooks(net: nn.Module, names: Iterable[str], fn: HookFn, *, all_threads: bool = False) -> Iterator[None]:
    """Call ``fn(name, module, args, output)`` after each forward of each named module inside the block.

    A non-None return value replaces the module's output (as with ``register_forward_hook``).
    Exceptions raised by ``fn`` propagate out of the forward (used to stop it early). The hooks are
    removed on exit, also when the forward raises. ``all_threads=False`` (the default) ignores
    forwards run by other threads.
    """
    modules = dict(net.named_modules())
    owner = threading.get_ident()

    def make(name: str):
        def hook(module, args, output):
            if all_threads or threading.get_ident() == owner:
                return fn(name, module, args, output)
            return None
        return hook

    handles = []
    try:
        for name in names:
            handles.append(modules[name].register_forward_hook(make(name)))
        yield
    finally:
        for handle in handles:
            handle.remove()


def leaf_names(net: nn.Module) -> list[str]:
    """Names of the modules without children (the ones that do the computing)."""
    return [n for n, m in net.named_modules() if next(m.children(), None) is None]


# --- activation functions ------------------------------------------------------------------------

@dataclass(frozen=True)
class Activation:
    """One activation as the forward calls it: ``x`` and its parameters from the call's arguments."""

    name: str
    relu_family: bool          # ReLU and ReLU6: what "rectify ReLUs only" keeps
    leaky: bool                # negative part is a scaled copy (LeakyReLU), not a rectifier
    forward: Callable[..., torch.Tensor]      # f(x, **params), out of place
    derivative: Callable[..., torch.Tensor]   # f'(x, **params)
    params: Callable[[tuple, dict], dict]     # the call's parameters (slope, alpha, ...)


def _p(names_defaults):
    def parse(args, kwargs):
        return {n: (args[i + 1] if len(args) > i + 1 else kwargs.get(n, d)) for i, (n, d) in enumerate(names_defaults)}
    return parse


def _gelu_grad(x, approximate="none"):
    if approximate == "tanh":
        k = math.sqrt(2 / math.pi)
        t = torch.tanh(k * (x + 0.044715 * x ** 3))
        return 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * k * (1 + 3 * 0.044715 * x * x)
    return 0.5 * (1 + torch.erf(x / math.sqrt(2))) + x * torch.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)


def _silu_grad(x, **_):
    s = torch.sigmoid(x)
    return s * (1 + x * (1 - s))


def _mish_grad(x, **_):
    t = torch.tanh(F.softplus(x))
    return t + x * torch.sigmoid(x) * (1 - t * t)


def _elu_grad(x, alpha=1.0, scale=1.0, **_):
    return scale * torch.where(x > 0, torch.ones_like(x), alpha * torch.exp(x))


def _celu_grad(x, alpha=1.0, **_):
    return torch.where(x > 0, torch.ones_like(x), torch.exp(x / alpha))


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805

RELU = Activation("ReLU", True, False, F.relu, lambda x, **_: (x > 0).to(x.dtype), _p([("inplace", False)]))
RELU6 = Activation("ReLU6", True, False, lambda x, **_: F.hardtanh(x, 0.0, 6.0), lambda x, **_: ((x > 0) & (x < 6)).to(x.dtype), _p([("inplace", False)]))
LEAKY = Activation("LeakyReLU", False, True, F.leaky_relu,
                   lambda x, negative_slope=0.01, **_: torch.where(x > 0, torch.ones_like(x), torch.full_like(x, negative_slope)),
                   _p([("negative_slope", 0.01), ("inplace", False)]))
ELU = Activation("ELU", False, False, F.elu, _elu_grad, _p([("alpha", 1.0), ("inplace", False)]))
SELU = Activation("SELU", False, False, F.selu, lambda x, **_: _elu_grad(x, _SELU_ALPHA, _SELU_SCALE), _p([("inplace", False)]))
CELU = Activation("CELU", False, False, F.celu, _celu_grad, _p([("alpha", 1.0), ("inplace", False)]))
GELU = Activation("GELU", False, False, F.gelu, _gelu_grad, _p([("approximate", "none")]))
SILU = Activation("SiLU", False, False, F.silu, _silu_grad, _p([("inplace", False)]))
HARDSWISH = Activation("Hardswish", False, False, F.hardswish,
                       lambda x, **_: torch.where(x < -3, torch.zeros_like(x), torch.where(x > 3, torch.ones_like(x), (2 * x + 3) / 6)),
                       _p([("inplace", False)]))
MISH = Activation("Mish", False, False, F.mish, _mish_grad, _p([("inplace", False)]))

#: Every functional form the forward may call (modules call these too: nn.ReLU6 calls F.hardtanh).
ACTIVATION_FUNCTIONS: dict[Callable, Activation] = {
    F.relu: RELU, F.relu_: RELU, torch.relu: RELU, torch.relu_: RELU, torch.Tensor.relu: RELU, torch.Tensor.relu_: RELU,
    F.relu6: RELU6,
    F.leaky_relu: LEAKY, F.leaky_relu_: LEAKY,
    F.elu: ELU, F.elu_: ELU, F.selu: SELU, torch.selu: SELU, torch.selu_: SELU, F.celu: CELU, torch.celu: CELU,
    F.gelu: GELU, F.silu: SILU, F.hardswish: HARDSWISH, F.mish: MISH,
}
#: Hardtanh is ReLU6 when it clips at 0 and 6 (nn.ReLU6); other clamps are left alone.
HARDTANH_FUNCTIONS = {F.hardtanh, F.hardtanh_}
#: In-place ReLU forms (kept in place by the back modes).
INPLACE_RELUS = {F.relu_, torch.relu_, torch.Tensor.relu_}
#: The functional ReLU forms (what the original deconvnet rule is defined for).
RELU_FUNCTIONS = {f for f, a in ACTIVATION_FUNCTIONS.items() if a is RELU}


def activation_of(func, args: tuple, kwargs: dict) -> Activation | None:
    """The activation a torch call is, or None (F.hardtanh counts only with min 0 and max 6)."""
    act = ACTIVATION_FUNCTIONS.get(func)
    if act is not None or func not in HARDTANH_FUNCTIONS:
        return act
    lo = args[1] if len(args) > 1 else kwargs.get("min_val", -1.0)
    hi = args[2] if len(args) > 2 else kwargs.get("max_val", 1.0)
    return RELU6 if (lo, hi) == (0, 6) else None


def activation_params(act: Activation, func, args: tuple, kwargs: dict) -> dict:
    """The call's parameters for ``act.derivative`` (``inplace`` dropped)."""
    if func in HARDTANH_FUNCTIONS:
        return {}
    params = act.params(args, kwargs)
    params.pop("inplace", None)
    return params


#: How each back-projection mode passes the signal g back through an activation f at input x.
RULES = {
    "grad": "g * f'(x) (the plain gradient)",
    "deconv": "max(g, 0), ignoring the forward (LeakyReLU: g where g > 0, else slope * g)",
    "guided": "max(g, 0) * max(f'(x), 0) (ReLU: max(g, 0) where x > 0)",
}
#: What "rectify" may be: every activation above gets the deconv/guided rule, or only ReLU/ReLU6.
RECTIFY = ("all", "relu")


def back_rule(act: Activation, mode: str, rectify: str = "all") -> str:
    """The rule ``mode`` applies at ``act`` (a key of :data:`RULES`)."""
    if mode == "grad" or (rectify == "relu" and not act.relu_family):
        return "grad"
    return mode


def rule_table(names: Iterable[str], rectify: str = "all") -> dict[str, dict[str, str]]:
    """{activation name: {mode: rule text}} for the activations ``names`` (e.g. a summary's keys)."""
    by_name = {a.name: a for a in ACTIVATION_FUNCTIONS.values()}
    return {n: {m: RULES[back_rule(by_name[n], m, rectify)] for m in RULES} for n in names if n in by_name}
