"""The back-projection modes: how each activation passes the signal back in a deconv, guided or
grad backward, swapped in while the forward runs.

All three modes are one autograd backward pass; they differ only in how a ReLU passes the signal
back (``grad``: where its forward input was positive; ``guided``: there and only positive signal;
``deconv`` (Zeiler & Fergus): positive signal anywhere, ignoring the forward). The other activations
(GELU, SiLU, Hardswish, ReLU6, LeakyReLU, ELU/SELU/CELU, Mish; :mod:`dvis.engine.hooks`) get the same
rules generalized (:data:`dvis.engine.hooks.RULES`): deconv passes ``max(g, 0)``, guided
``max(g, 0) * max(f'(x), 0)``; ``rectify="relu"`` keeps the plain gradient at all but ReLU/ReLU6. Max-pools use
autograd's own backward, which routes through the switches recorded in the forward (exact also
for overlapping pools), and convolutions use the transposed filters, which is autograd's
backward too (:mod:`dvis.engine.frozen_ops`).
Activations and convolutions are swapped for custom autograd Functions by a ``TorchFunctionMode``
(:class:`_BackMode`) while the forward runs, so ``nn.ReLU`` (in-place or not, called once or twice),
``F.relu``, ``torch.relu``, ``Tensor.relu_``, ``nn.GELU`` and ``F.gelu`` alike are all caught and the
user's modules are never touched.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from dvis.constants import BACK_MODES
from dvis.engine.frozen_ops import _fast_conv2d, _frozen_batch_norm
from dvis.engine.hooks import INPLACE_RELUS, RECTIFY, RELU, activation_of, activation_params, back_rule
from dvis.errors import DvisError

MODES = BACK_MODES


def _relu_function(guided: bool, inplace: bool) -> type[torch.autograd.Function]:
    """A ReLU whose backward passes the positive part of the signal (masked by the forward if guided)."""

    class _BackReLU(torch.autograd.Function):
        generate_vmap_rule = True  # backproject_batch vmaps the backward over targets

        @staticmethod
        def forward(x):
            return x.clamp_(min=0) if inplace else x.clamp(min=0)

        @staticmethod
        def setup_context(ctx, inputs, output):
            if inplace:
                ctx.mark_dirty(inputs[0])
            if guided:
                # The output is positive exactly where the input was, and survives in-place use.
                ctx.save_for_backward(output)

        @staticmethod
        def backward(ctx, grad):
            grad = grad.clamp(min=0)
            if guided:
                (out,) = ctx.saved_tensors
                grad = grad * (out > 0)
            return grad

    _BackReLU.__name__ = f"{'Guided' if guided else 'Deconv'}ReLU{'_' if inplace else ''}"
    return _BackReLU


_FUNCTIONS = {(g, i): _relu_function(g, i) for g in (False, True) for i in (False, True)}


class _BackActivation(torch.autograd.Function):
    """A non-ReLU activation (out of place) whose backward applies the deconv or guided rule of
    :data:`dvis.engine.hooks.RULES`: deconv ``max(g, 0)`` (LeakyReLU: its own slope on the signal), guided
    ``max(g, 0) * max(f'(x), 0)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, act, params, guided):
        return act.forward(x, **params)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, ctx.act, ctx.params, ctx.guided = inputs
        if ctx.guided:
            ctx.save_for_backward(x)

    @staticmethod
    def backward(ctx, grad):
        if ctx.guided:
            (x,) = ctx.saved_tensors
            grad = grad.clamp(min=0) * ctx.act.derivative(x, **ctx.params).clamp(min=0)
        elif ctx.act.leaky:
            grad = torch.where(grad > 0, grad, grad * ctx.params.get("negative_slope", 0.01))
        else:
            grad = grad.clamp(min=0)
        return grad, None, None, None


class _BackMode(TorchFunctionMode):
    """While the forward runs: activations through the deconv/guided Functions (all of
    :data:`dvis.engine.hooks.ACTIVATION_FUNCTIONS`, or ReLU/ReLU6 only with ``rectify="relu"``), conv2d
    through :class:`~dvis.engine.frozen_ops._Conv2d` / :class:`~dvis.engine.frozen_ops._Conv2dWeightOnly`
    and eval-mode batch norm through :class:`~dvis.engine.frozen_ops._FrozenBatchNorm` (the same
    backward, less of the forward kept for it)."""

    def __init__(self, mode: str, rectify: str):
        super().__init__()
        self.mode = mode
        self.rectify = rectify

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is F.conv2d:
            return _fast_conv2d(*args, **kwargs)
        if func is F.batch_norm:
            return _frozen_batch_norm(*args, **kwargs)
        act = activation_of(func, args, kwargs) if self.mode != "grad" else None
        if act is None or back_rule(act, self.mode, self.rectify) == "grad":
            return func(*args, **kwargs)
        x = args[0] if args else kwargs["input"]
        if act is RELU:
            inplace = func in INPLACE_RELUS or (
                func is F.relu and bool(kwargs.get("inplace", args[1] if len(args) > 1 else False))
            )
            return _FUNCTIONS[self.mode == "guided", inplace].apply(x)
        # Out of place: the module's `inplace` only saves memory, and the guided rule needs x.
        return _BackActivation.apply(x, act, activation_params(act, func, args, kwargs), self.mode == "guided")


def _back_mode(mode: str, rectify: str = "all") -> _BackMode:
    if mode not in MODES:
        raise DvisError(f"unknown back-projection mode {mode!r}; use one of {', '.join(MODES)}")
    if rectify not in RECTIFY:
        raise DvisError(f"unknown rectify setting {rectify!r}; use one of {', '.join(RECTIFY)}")
    return _BackMode(mode, rectify)
