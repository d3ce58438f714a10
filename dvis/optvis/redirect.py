"""Redirected ReLU gradients (as Lucid's ``redirected_relu_grad``): early in an optimization, a
ReLU whose input is negative still passes gradient that would raise it, so units behind dead
ReLUs (pooling layers after a rectified conv, started from near-mean images) can get going."""
from __future__ import annotations

import torch
from torch.overrides import TorchFunctionMode

from dvis.engine.hooks import RELU_FUNCTIONS


class _RedirectedReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x.clamp(min=0)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        # True gradient where the ReLU is open; where closed, only the part that pushes its input up.
        return torch.where(x > 0, grad, grad.clamp(min=0))


class RedirectedReLUs(TorchFunctionMode):
    """Within this context every ReLU call (module, functional or method; in-place ones computed
    out of place) uses the redirected gradient."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in RELU_FUNCTIONS:
            return _RedirectedReLU.apply(args[0] if args else kwargs["input"])
        return func(*args, **kwargs)
