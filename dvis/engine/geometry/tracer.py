"""The traced forward: the net runs once and every tensor gets a descriptor.

The net runs on a meta input (shapes only, no memory or arithmetic; parameters met on the way get
meta twins), else on a fake one (``FakeTensorMode``), else on a real batch-2 input on the net's
device if it does something neither can (e.g. reads a value), under :class:`_Tracer`, a
``TorchFunctionMode`` that applies the field rule (:mod:`dvis.engine.geometry.rules`) of every torch
call. Each named module's output descriptor becomes its :class:`LayerGeometry`
(:mod:`dvis.engine.geometry.layouts`). Results are cached per net, input size and channels.
"""
from __future__ import annotations

import logging
import threading
from fractions import Fraction
from weakref import WeakKeyDictionary

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary

from dvis.engine.geometry.arguments import _all_tensors, _arg, _tensors, _tup
from dvis.engine.geometry.descriptors import _Axis, _Desc, _consistent, _globalize, _union, _unknown, _unwindow
from dvis.engine.geometry.layouts import _layer
from dvis.engine.geometry.rules import _KEEPS_POSITIONS, _MULTI, _UNARY
from dvis.engine.geometry.rules.joins import _join
from dvis.engine.geometry.types import LayerGeometry
from dvis.engine.hooks import ACTIVATION_FUNCTIONS, activation_of, forward_hooks
from dvis.errors import DvisError

_T = torch.Tensor
#: Size-only queries: no tensor comes out, nothing to track.
_SKIP = {_T.size, _T.dim, _T.numel, _T.__len__, _T.shape.__get__, _T.ndim.__get__, _T.dtype.__get__,
         _T.device.__get__, _T.is_floating_point, _T.requires_grad.__get__, _T.data_ptr}


#: Calls whose output has the input's shape; on fake tensors only the shape matters, and fake
#: batch norm alone costs tens of ms a call (a third of resnet50's trace).
_SAME_SHAPE = {
    F.batch_norm, F.layer_norm, F.group_norm, F.instance_norm, F.local_response_norm,
    F.dropout, F.dropout1d, F.dropout2d, F.dropout3d, F.alpha_dropout, F.feature_alpha_dropout,
    F.hardtanh, F.hardtanh_, F.hardsigmoid, F.sigmoid, torch.sigmoid, _T.sigmoid, F.tanh, torch.tanh,
} | set(ACTIVATION_FUNCTIONS)


def _fits(func, x, args, kwargs) -> bool:
    """The shape checks a norm would make (the rest of :data:`_SAME_SHAPE` takes any shape)."""
    if func is F.batch_norm:
        mean = _arg(args, kwargs, 1, "running_mean")
        return x.dim() >= 2 and (mean is None or mean.numel() == x.shape[1])
    if func is F.layer_norm:
        shape = tuple(_tup(_arg(args, kwargs, 1, "normalized_shape"), 1))
        return tuple(x.shape[x.dim() - len(shape):]) == shape
    if func is F.group_norm:
        return x.dim() >= 2 and x.shape[1] % _arg(args, kwargs, 1, "num_groups") == 0
    return True


def _shape_only(func, args, kwargs):
    """The output of ``func`` computed from shapes alone (fake tensors), or None to run it."""
    if func in _SAME_SHAPE:
        x = args[0] if args else kwargs.get("input")
        if not isinstance(x, torch.Tensor) or not _fits(func, x, args, kwargs):
            return None  # the real call raises the error
        name = getattr(func, "__name__", "")
        return x if name.endswith("_") or kwargs.get("inplace") else torch.empty_like(x)
    if func is F.linear:
        x, w = args[0] if args else kwargs["input"], args[1] if len(args) > 1 else kwargs["weight"]
        if x.dim() < 1 or w.dim() != 2 or x.shape[-1] != w.shape[1]:
            return None
        return x.new_empty(tuple(x.shape[:-1]) + (w.shape[0],))
    if func is F.conv2d:
        x = args[0] if args else kwargs["input"]
        w = args[1] if len(args) > 1 else kwargs["weight"]
        groups = _arg(args, kwargs, 6, "groups", 1)
        if x.dim() != 4 or w.dim() != 4 or x.shape[1] != w.shape[1] * groups:
            return None
        stride = _tup(_arg(args, kwargs, 3, "stride", 1), 2)
        pad = _arg(args, kwargs, 4, "padding", 0)
        dil = _tup(_arg(args, kwargs, 5, "dilation", 1), 2)
        k = w.shape[2:]
        if pad == "same":
            return x.new_empty((x.shape[0], w.shape[0]) + tuple(x.shape[2:]))
        pad = (0, 0) if pad == "valid" else _tup(pad, 2)
        hw = tuple((n + 2 * p - d * (kk - 1) - 1) // s_ + 1 for n, p, d, kk, s_ in zip(x.shape[2:], pad, dil, k, stride))
        if min(hw) < 1:
            return None  # let the real call raise its error
        return x.new_empty((x.shape[0], w.shape[0]) + hw)
    return None


class _Tracer(TorchFunctionMode):
    """Propagates descriptors through every torch call of the forward."""

    def __init__(self, shapes_only: bool = False, meta: bool = False):
        super().__init__()
        self.descs = WeakTensorKeyDictionary()
        self.activations: dict[str, int] = {}
        self.shapes_only = shapes_only
        self.meta = meta
        self.twins: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def _twin(self, obj):
        """A meta tensor standing for a real one (a parameter, buffer or constant) in a meta trace."""
        if isinstance(obj, torch.Tensor) and obj.device.type != "meta":
            got = self.twins.get(id(obj))
            if got is None or got[0] is not obj:
                got = self.twins[id(obj)] = (obj, torch.empty_strided(obj.shape, obj.stride(), dtype=obj.dtype,
                                                                      device="meta"))
            return got[1]
        if isinstance(obj, (list, tuple)) and any(isinstance(o, torch.Tensor) for o in obj):
            return type(obj)(self._twin(o) for o in obj)
        return obj

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self.meta and func not in _SKIP:
            args = tuple(self._twin(a) for a in args)
            kwargs = {k: self._twin(v) for k, v in kwargs.items()}
        out = _shape_only(func, args, kwargs) if self.shapes_only else None
        if out is None:
            out = func(*args, **kwargs)
        if func in _SKIP:
            return out
        act = activation_of(func, args, kwargs)
        if act is not None:
            self.activations[act.name] = self.activations.get(act.name, 0) + 1
        try:
            self._track(func, args, kwargs, out)
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError):
            self._fallback(func, args, kwargs, out, f"untracked call {getattr(func, '__name__', func)}")
        return out

    def _track(self, func, args, kwargs, out):
        descs = self.descs
        if func in _MULTI:
            if not any(t in descs for t in _all_tensors(args, kwargs)):
                return
            result = _MULTI[func](func, args, kwargs, descs, out)
        elif func in _UNARY:
            x = next(_tensors(args[0] if args else next(iter(kwargs.values()))), None)
            d = descs.get(x) if x is not None else None
            if d is None:
                return
            rule = _UNARY[func]
            if rule not in _KEEPS_POSITIONS:
                d = _unwindow(d)
            result = rule(func, args, kwargs, d, x, out)
        else:
            if not isinstance(out, torch.Tensor) and not (
                isinstance(out, (tuple, list)) and any(isinstance(o, torch.Tensor) for o in out)
            ):
                return
            if not any(t in descs for t in _all_tensors(args, kwargs)):
                return
            first = out if isinstance(out, torch.Tensor) else next(o for o in out if isinstance(o, torch.Tensor))
            result = _join(descs, args, kwargs, first)
            if result is None:
                name = getattr(func, "__name__", str(func))
                self._fallback(func, args, kwargs, out, f"{name} changes the shape in a way the trace does not follow")
                return
        if result is None:
            self._fallback(func, args, kwargs, out, f"untracked use of {getattr(func, '__name__', func)}")
            return
        outs = [out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)] \
            if isinstance(out, (tuple, list)) else []
        results = result if isinstance(result, list) else [result] * len(outs)
        for o, r in zip(outs, results):
            if o.dim() == len(r.dims) and _consistent(r, o.shape):
                descs[o] = r
            elif o is outs[0]:
                descs[o] = _unknown(o.shape, r.field, r.gctx, r.note)

    def _fallback(self, func, args, kwargs, out, note):
        described = [self.descs[t] for t in _all_tensors(args, kwargs) if t in self.descs]
        if not described:
            return
        field, gctx, first = _union(described)
        for o in ([out] if isinstance(out, torch.Tensor) else [o for o in out if isinstance(o, torch.Tensor)]
                  if isinstance(out, (tuple, list)) else []):
            self.descs[o] = _globalize(_unknown(o.shape, field, gctx, first), {0, 1}, note)


_cache_lock = threading.Lock()
_cache: WeakKeyDictionary[nn.Module, dict] = WeakKeyDictionary()


def _traced(net: nn.Module, size, channels):
    key = (size, channels)
    with _cache_lock:
        cached = _cache.get(net, {}).get(key)
    if cached is None:
        try:
            cached = _trace(net, size, channels)
        except DvisError as err:  # remembered: a net that does not run at this size will not later
            cached = err
        with _cache_lock:
            _cache.setdefault(net, {})[key] = cached
    if isinstance(cached, DvisError):
        raise DvisError(str(cached))
    return cached


def _trace(net: nn.Module, size, channels) -> tuple[dict[str, LayerGeometry], dict[str, int]]:
    """Trace on meta tensors (parameters met on the way get meta twins), else on fake tensors,
    else for real: each tier runs what the one before cannot (e.g. code that reads a value)."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    log = logging.getLogger("torch._subclasses.fake_tensor")
    level = log.level
    log.setLevel(logging.CRITICAL)  # a failing fake op logs a traceback; the real run reports the error
    try:
        for how in ("meta", "fake"):
            try:
                if how == "meta":
                    return _run(net, torch.zeros((2, channels) + tuple(size), dtype=_dtype(net), device="meta"),
                                size, how, None)
                with FakeTensorMode(allow_non_fake_inputs=True) as mode:
                    x = torch.zeros((2, channels) + tuple(size), dtype=_dtype(net), device=_device(net))
                return _run(net, x, size, how, mode)
            except DvisError:
                raise
            except Exception:  # noqa: BLE001 - the next tier runs what this one cannot
                continue
    finally:
        log.setLevel(level)
    x = torch.zeros((2, channels) + tuple(size), dtype=_dtype(net), device=_device(net))
    return _run(net, x, size, "real", None)


def _dtype(net):
    p = next(net.parameters(), None)
    return p.dtype if p is not None and p.is_floating_point() else torch.float32


def _device(net):
    p = next(net.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _run(net: nn.Module, x: torch.Tensor, size, how: str, fake_mode) -> tuple[dict[str, LayerGeometry], dict[str, int]]:
    tracer = _Tracer(shapes_only=how != "real", meta=how == "meta")
    tracer.descs[x] = _Desc(((("n", x.shape[0]),), (("c", x.shape[1]),) if x.shape[1] != 1 else (),
                             (("h", size[0]),), (("w", size[1]),)), (0,) * 4,
                            (_Axis(Fraction(1), Fraction(1), Fraction(0)),) * 2, False)
    found: dict[str, LayerGeometry] = {}

    def record(name, module, args, output):
        if name not in found:
            d = tracer.descs.get(output) if isinstance(output, torch.Tensor) else next(
                (tracer.descs.get(o) for o in output if isinstance(o, torch.Tensor)), None
            ) if isinstance(output, (tuple, list)) else None
            found[name] = _layer(name, output, d, size)

    names = [n for n, _ in net.named_modules() if n]
    # Geometry is that of the eval forward (what dvis runs): aux heads off, batch norm per channel.
    modes = [(m, m.training) for m in net.modules()]
    net.eval()
    try:
        with forward_hooks(net, names, record), torch.no_grad():
            if fake_mode is not None:
                with fake_mode, tracer:
                    net(x)
            else:
                with tracer:
                    net(x)
    except DvisError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure of the user's forward becomes one line
        if how != "real":
            raise
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DvisError(f"geometry: forward failed for input {'x'.join(map(str, x.shape[1:]))}: {first}") from err
    finally:
        for m, training in modes:
            m.training = training
    for name in names:
        if name not in found:
            found[name] = LayerGeometry(name, (), "other", 0, None, 0, None, False, False,
                                        "never called in the forward (an aux head in eval mode, or weights used directly by its parent)")
    return found, tracer.activations
