"""The field rules, and which torch call goes through which.

Field rules: conv/pool (kernel, stride, padding, dilation, asymmetric), transposed conv,
interpolate, pixel (un)shuffle, pad and strided slices compose by the usual recurrence
(``size += d*(k-1)*stride; padding += p*stride; stride *= s``); element-wise joins and concat take
the union of their full-size inputs' fields; an input broadcast over space (an SE gate, N x C x 1 x 1)
adds global context but keeps the local field; reductions, softmax, attention, matmul/linear/einsum
over a spatial dimension, roll and adaptive pools that do not tile evenly make the field the whole
input on that axis, except that mixing only the finest part of a split axis (attention inside
windows) gives the window's field (``ReceptiveField.window``). GroupNorm/InstanceNorm/LayerNorm over space add global context. An operation
the trace does not know that changes the shape makes the field the whole input (``reason`` says
which; :mod:`dvis.engine.geometry.tracer`).

One module per family: :mod:`.conv_pool`, :mod:`.reshaping`, :mod:`.mixing`, :mod:`.joins`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from dvis.engine.geometry.rules.conv_pool import (_adaptive, _avg_pool, _conv_like, _conv_transpose, _interpolate,
                                                  _max_pool, _pad, _pixel_shuffle)
from dvis.engine.geometry.rules.joins import _cat
from dvis.engine.geometry.rules.mixing import (_attention, _einsum, _linear, _matmul, _norm_over, _reduction, _roll,
                                               _softmax)
from dvis.engine.geometry.rules.reshaping import _expand, _getitem, _permute, _reshape, _split

_MAXPOOLS = {
    1: (F.max_pool1d, F._max_pool1d, F.max_pool1d_with_indices, torch.max_pool1d),
    2: (F.max_pool2d, F._max_pool2d, F.max_pool2d_with_indices, torch.max_pool2d),
    3: (F.max_pool3d, F._max_pool3d, F.max_pool3d_with_indices, torch.max_pool3d),
}
_ADAPTIVE = {
    1: (F.adaptive_avg_pool1d, F.adaptive_max_pool1d, F._adaptive_max_pool1d, F.adaptive_max_pool1d_with_indices,
        torch.adaptive_avg_pool1d),
    2: (F.adaptive_avg_pool2d, F.adaptive_max_pool2d, F._adaptive_max_pool2d, F.adaptive_max_pool2d_with_indices),
    3: (F.adaptive_avg_pool3d, F.adaptive_max_pool3d, F._adaptive_max_pool3d, F.adaptive_max_pool3d_with_indices),
}
_T = torch.Tensor
#: Rules that read one input descriptor (the first tensor argument's).
_UNARY = {
    F.conv1d: _conv_like, F.conv2d: _conv_like, F.conv3d: _conv_like,
    F.conv_transpose1d: _conv_transpose, F.conv_transpose2d: _conv_transpose, F.conv_transpose3d: _conv_transpose,
    F.avg_pool1d: _avg_pool(1), F.avg_pool2d: _avg_pool(2), F.avg_pool3d: _avg_pool(3),
    F.interpolate: _interpolate, F.upsample: _interpolate,
    F.pixel_shuffle: _pixel_shuffle, torch.pixel_shuffle: _pixel_shuffle,
    F.pixel_unshuffle: _pixel_shuffle, torch.pixel_unshuffle: _pixel_shuffle,
    F.pad: _pad, torch.constant_pad_nd: _pad,
    F.linear: _linear,
    F.layer_norm: _norm_over, F.group_norm: _norm_over, F.instance_norm: _norm_over,
    _T.__getitem__: _getitem,
    F.softmax: _softmax, F.log_softmax: _softmax, torch.softmax: _softmax, _T.softmax: _softmax,
    torch.log_softmax: _softmax, _T.log_softmax: _softmax,
    torch.roll: _roll, _T.roll: _roll,
    _T.expand: _expand, _T.expand_as: _expand,
}
for _nd, _fs in _MAXPOOLS.items():
    _UNARY.update({f: _max_pool(_nd) for f in _fs})
for _nd, _fs in _ADAPTIVE.items():
    _UNARY.update({f: _adaptive(_nd) for f in _fs})
for _f in (_T.view, _T.reshape, torch.reshape, _T.flatten, torch.flatten, _T.unflatten, torch.unflatten,
           _T.squeeze, torch.squeeze, _T.unsqueeze, torch.unsqueeze, _T.view_as, _T.reshape_as, _T.squeeze_,
           _T.unsqueeze_):
    _UNARY[_f] = _reshape
for _f in (_T.permute, torch.permute, _T.transpose, torch.transpose, _T.swapaxes, torch.swapaxes, _T.t, torch.t,
           _T.movedim, torch.movedim, _T.moveaxis, torch.moveaxis, _T.transpose_):
    _UNARY[_f] = _permute
for _f in (torch.mean, _T.mean, torch.sum, _T.sum, torch.amax, _T.amax, torch.amin, _T.amin, torch.max, _T.max,
           torch.min, _T.min, torch.std, _T.std, torch.var, _T.var, torch.logsumexp, _T.logsumexp, torch.nansum,
           _T.nansum, torch.norm, _T.norm, torch.prod, _T.prod, torch.std_mean, torch.var_mean):
    _UNARY[_f] = _reduction
for _f in (torch.split, _T.split, torch.chunk, _T.chunk, torch.unbind, _T.unbind, torch.tensor_split,
           _T.tensor_split):
    _UNARY[_f] = _split
#: Rules that keep every position's field (or handle windowed fields themselves); the others see
#: windowed fields as the per-position fields that bound them.
_KEEPS_POSITIONS = {_reshape, _permute, _linear, _norm_over, _softmax, _reduction, _roll, _expand, _split, _getitem}
#: Rules that read every input's descriptor.
_MULTI = {
    torch.cat: _cat, torch.concat: _cat, torch.concatenate: _cat,
    F.scaled_dot_product_attention: _attention, F.multi_head_attention_forward: _attention,
    torch.matmul: _matmul, _T.matmul: _matmul, _T.__matmul__: _matmul, torch.bmm: _matmul, _T.bmm: _matmul,
    torch.mm: _matmul, _T.mm: _matmul, torch.baddbmm: _matmul, _T.baddbmm: _matmul, torch.addmm: _matmul,
    _T.addmm: _matmul,
    torch.einsum: _einsum,
}
if hasattr(torch, "_native_multi_head_attention"):
    _MULTI[torch._native_multi_head_attention] = _attention
