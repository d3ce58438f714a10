"""conv2d and eval-mode batch norm for a backward to the input alone (parameters frozen): the same
gradient, computed faster (plain 2-D convs on CPU, as a forward convolution over the stride phases)
or keeping less of the forward for it (the weights only, not the input)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.modules.utils import _pair


def _conv2d_input_grad(grad, weight, size, stride, padding):
    """Gradient of ``conv2d(x, weight, stride, padding)`` w.r.t. x (HxW ``size``) as one forward conv.

    The transposed convolution is split into its ``stride`` output phases: phase (a, b) of the
    input gradient is a plain correlation of ``grad`` with the kernel taps ``a::stride, b::stride``
    (flipped). All phases run as one conv2d with ``stride_h * stride_w`` times the channels and are
    interleaved back, which is faster on CPU than the backward-data kernel (2.5x for AlexNet's
    stride-4 conv1, 1.1x-1.5x for its stride-1 convs).
    """
    c_out, c_in, kh, kw = weight.shape
    (sh, sw), (ph, pw), (h, w) = stride, padding, size
    mh, mw = -(-kh // sh), -(-kw // sw)  # taps per phase
    taps = F.pad(weight, (0, sw * mw - kw, 0, sh * mh - kh)).view(c_out, c_in, mh, sh, mw, sw).flip(2, 4)
    taps = taps.permute(3, 5, 1, 0, 2, 4).reshape(sh * sw * c_in, c_out, mh, mw)
    # Only the phase rows q0..q1 that land inside the input are computed (negative pads crop).
    q0h, q0w = ph // sh, pw // sw
    q1h, q1w = (h + ph - 1) // sh, (w + pw - 1) // sw
    gh, gw = grad.shape[-2:]
    pads = (mw - 1 - q0w, q1w - gw + 1, mh - 1 - q0h, q1h - gh + 1)
    if pads[0] == pads[1] >= 0 and pads[2] == pads[3] >= 0:  # the usual case: let the conv pad
        phases = F.conv2d(grad, taps, padding=(pads[2], pads[0]))
    else:
        phases = F.conv2d(F.pad(grad, pads), taps)
    n, _, qh, qw = phases.shape
    full = phases.view(n, sh, sw, c_in, qh, qw).permute(0, 3, 4, 1, 5, 2).reshape(n, c_in, qh * sh, qw * sw)
    top, left = ph - q0h * sh, pw - q0w * sw
    return full[:, :, top:top + h, left:left + w]


class _Conv2d(torch.autograd.Function):
    """conv2d whose input gradient is computed by :func:`_conv2d_input_grad` (weights frozen)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, stride, padding):
        return F.conv2d(x, weight, bias, stride, padding)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, ctx.stride, ctx.padding = inputs
        ctx.size = tuple(x.shape[-2:])
        ctx.save_for_backward(weight)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        return _conv2d_input_grad(grad, weight, ctx.size, ctx.stride, ctx.padding), None, None, None, None


class _Conv2dWeightOnly(torch.autograd.Function):
    """conv2d (any groups, dilation) keeping only the weight for the backward: the input gradient is
    autograd's own ``convolution_backward`` for the input alone, which needs the input's shape, not
    its values (the native conv saves the whole input; depthwise convs in EfficientNets are most of
    the graph's memory)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, weight, bias, stride, padding, dilation, groups):
        return F.conv2d(x, weight, bias, stride, padding, dilation, groups)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, weight, _, ctx.stride, ctx.padding, ctx.dilation, ctx.groups = inputs
        ctx.size = tuple(x.shape)
        ctx.save_for_backward(weight)

    @staticmethod
    def backward(ctx, grad):
        (weight,) = ctx.saved_tensors
        gx = torch.nn.grad.conv2d_input(ctx.size, weight, grad, ctx.stride, ctx.padding, ctx.dilation, ctx.groups)
        return gx, None, None, None, None, None, None


def _fast_conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    """conv2d where only the input needs grad: plain 2-D convs on CPU through :class:`_Conv2d`
    (faster; other devices keep the native kernel, the gain measured is against the CPU one), the
    rest through :class:`_Conv2dWeightOnly` (same backward, the input not kept)."""
    padding = (0, 0) if padding == "valid" else padding
    input_only = (
        input.dim() == 4 and not isinstance(padding, str)
        and input.requires_grad and not weight.requires_grad and (bias is None or not bias.requires_grad)
    )
    if not input_only:
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)
    if input.device.type == "cpu" and groups == 1 and _pair(dilation) == (1, 1):
        return _Conv2d.apply(input, weight, bias, _pair(stride), _pair(padding))
    return _Conv2dWeightOnly.apply(input, weight, bias, _pair(stride), _pair(padding), _pair(dilation), groups)


class _FrozenBatchNorm(torch.autograd.Function):
    """Batch norm with running statistics (eval mode): per channel ``x * scale + shift``, so the
    backward is ``grad * scale`` and keeps no activation (the native one saves the input)."""

    generate_vmap_rule = True

    @staticmethod
    def forward(x, mean, var, weight, bias, eps):
        return F.batch_norm(x, mean, var, weight, bias, False, 0.0, eps)

    @staticmethod
    def setup_context(ctx, inputs, output):
        x, _, var, weight, _, eps = inputs
        scale = torch.rsqrt(var + eps)
        if weight is not None:
            scale = scale * weight
        ctx.save_for_backward(scale.view((-1,) + (1,) * (x.dim() - 2)))

    @staticmethod
    def backward(ctx, grad):
        (scale,) = ctx.saved_tensors
        return grad * scale, None, None, None, None, None


def _frozen_batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False,
                       momentum=0.1, eps=1e-5):
    """F.batch_norm through :class:`_FrozenBatchNorm` in eval mode (running statistics, frozen affine)."""
    frozen = (
        not training and running_mean is not None and running_var is not None and input.dim() >= 2
        and input.requires_grad and not any(t is not None and t.requires_grad for t in (weight, bias))
    )
    if not frozen:
        return F.batch_norm(input, running_mean, running_var, weight, bias, training, momentum, eps)
    return _FrozenBatchNorm.apply(input, running_mean, running_var, weight, bias, eps)
