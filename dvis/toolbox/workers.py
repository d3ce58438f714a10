"""Background threads: the compute worker (forward + back-projection on the latest frame only) and the
unit-image loader with a byte-bounded cache. The window thread only submits jobs and reads results."""
from __future__ import annotations

import copy
import dataclasses
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple, Union

import numpy as np
import torch

from dvis.toolbox.render import NotThere

log = logging.getLogger(__name__)


class Back(NamedTuple):
    """A back-projection to compute: from ``unit`` of ``layer`` with ``mode`` (grad, deconv, guided)."""

    layer: str
    unit: int
    mode: str


@dataclass(frozen=True)
class Job:
    """One pass of the network to compute; ``key`` identifies what it shows (same key, same result)."""

    frame_id: Hashable
    frame: np.ndarray = field(compare=False, hash=False)  # the model view, HxWx3 uint8 RGB
    back: Back | None = None  # what to back-project, or None
    diff_layer: str | None = None  # layer whose back diffs to keep
    checkpoint: int = -1  # index into LoadedModel.checkpoints, -1 for the loaded weights
    occlusion: bool = False  # also compute the occlusion map of the top class
    layers: tuple[str, ...] | None = None  # layers whose values to keep; None: every layer

    @property
    def key(self) -> tuple:
        return (self.frame_id, self.back, self.diff_layer, self.checkpoint, self.occlusion, self.layers)


@dataclass
class Output:
    """What the worker computed for a job (numpy, first batch item), or the error it hit."""

    job: Job
    acts: dict[str, np.ndarray] = field(default_factory=dict)
    probs: np.ndarray | None = None
    grad: np.ndarray | None = None  # input gradient, C x H x W
    diffs: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)  # token layers: extra tokens x C
    occlusion: np.ndarray | None = None  # H x W probability of the unoccluded top class
    seconds: float = 0.0
    error: str | None = None


def class_probs(acts: dict[str, np.ndarray], layers: list[str], n_labels: int) -> np.ndarray | None:
    """Softmax of the last layer when it is a class-score vector (as many units as labels, or any fc
    output when labels are unknown)."""
    last = acts.get(layers[-1])
    if last is None or last.ndim != 1 or (n_labels and last.shape[0] != n_labels):
        return None
    e = np.exp(last - last.max())
    return e / e.sum()


def value_bytes(geometry: dict, layers) -> int:
    """Bytes the float32 values of ``layers`` (first batch item) take, from their geometry."""
    return sum(4 * math.prod(geometry[k].shape) for k in layers
               if geometry.get(k) is not None and geometry[k].visualizable)


def compute(model, job: Job, settings, geometry: dict | None = None) -> Output:
    """Run one job on ``model`` (a LoadedModel): one forward capturing ``job.layers`` (every layer
    when None), plus one backward when a back-projection is asked for. Pure apart from the model's
    forward/backward.

    With ``geometry`` (layer -> dvis.engine.geometry.LayerGeometry), layers that do not run or have no unit
    layout are skipped and values come as C x H x W maps (channels-last and token layers too, the
    class/register tokens of token layers in ``Output.extra``) or C vectors.
    """
    from dvis.engine.activations import activations
    from dvis.engine.backproject import forward_and_back

    start = time.perf_counter()
    layers = [k for k in (model.layers if job.layers is None else job.layers)
              if geometry is None or (geometry.get(k) and geometry[k].visualizable)]
    x = model.preprocess(job.frame)
    out = Output(job)
    if job.back is not None:
        diff_layers = (job.diff_layer,) if job.diff_layer in layers else ()
        res = forward_and_back(model, x, layers, job.back.layer, job.back.unit, job.back.mode, "max",
                               diff_layers=diff_layers)
        acts = res.activations
        out.grad = res.input_grad.detach()[0].float().cpu().numpy()
        out.diffs = {k: _first(v, k, geometry) for k, v in res.diffs.items()}
    else:
        with torch.no_grad():
            acts = activations(model, x, layers)
    out.acts = {k: _first(v, k, geometry) for k, v in acts.items()}
    if geometry is not None:
        from dvis.engine.geometry import extra_token_values

        for k, v in acts.items():
            extra = extra_token_values(v, geometry[k])
            if extra is not None:
                out.extra[k] = extra.detach()[0].float().cpu().numpy()
    out.probs = class_probs(out.acts, model.layers, len(model.labels))
    if job.occlusion:
        out.occlusion = occlusion_map(model, x, settings.occlusion_patch, settings.occlusion_steps)
    out.seconds = time.perf_counter() - start
    return out


def _first(value: torch.Tensor, layer: str, geometry: dict | None) -> np.ndarray:
    """The first batch item as numpy, as maps / vectors when the layer's geometry is known."""
    if geometry is not None:
        from dvis.engine.geometry import to_maps

        value = to_maps(value.detach(), geometry[layer])
    return value.detach()[0].float().cpu().numpy()


def occlusion_map(model, x: torch.Tensor, patch: float, steps: int) -> np.ndarray:
    """H x W map of the top class's probability with a grey square centred at each pixel's nearest
    occluder position (Zeiler & Fergus Fig. 7), via dvis.analyses.occlusion."""
    from dvis.analyses.occlusion import occlusion_maps, upsample_map

    h, w = x.shape[-2:]
    size = max(1, int(round(min(h, w) * patch)))
    stride = max(1, int(np.ceil(min(h, w) / steps)))
    maps = occlusion_maps(model, x, size=size, stride=stride)
    return upsample_map(maps.target_prob, maps.centers_y, maps.centers_x, h, w)


class _ThreadWorker:
    """A daemon thread running ``self._run``, sharing a condition variable with the window thread."""

    wait_timeout = 60.0

    def __init__(self, name: str):
        self._cond = threading.Condition()
        self._stop = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _idle(self) -> bool:
        """True when no work is queued or running (called with the lock held)."""
        raise NotImplementedError

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the worker is idle (headless mode); False on timeout."""
        deadline = time.monotonic() + (self.wait_timeout if timeout is None else timeout)
        with self._cond:
            while not self._idle():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        self._thread.join(timeout=5.0)


class ComputeWorker(_ThreadWorker):
    """Runs :func:`compute` in a thread on the latest submitted job only.

    After :meth:`note_key` it waits ``pause_s`` before starting, so a burst of key presses costs
    one pass, not one per key. Checkpoint jobs run on a private copy of the net, so the shared
    LoadedModel always keeps its own weights.
    """

    def __init__(self, model, settings, compute_fn: Callable = compute):
        super().__init__("dvis-compute")
        self.model, self.settings, self._compute = model, settings, compute_fn
        self._pending: Job | None = None
        self._submitted_key: tuple | None = None
        self._running = False
        self._last_key = 0.0
        self._checkpoint_model = None  # a copy of the model holding checkpoint weights, made on first use
        self._checkpoint = -1  # which checkpoint _checkpoint_model holds
        self._output: Output | None = None
        self.passes = 0
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue ``job``, replacing any job not yet started; a job equal to the last one is ignored."""
        with self._cond:
            if job.key == self._submitted_key:
                return
            self._submitted_key = job.key
            self._pending = job
            self._cond.notify_all()

    def note_key(self) -> None:
        with self._cond:
            self._last_key = time.monotonic()

    @property
    def output(self) -> Output | None:
        """The latest finished output (read under the worker's lock)."""
        with self._cond:
            return self._output

    @property
    def busy(self) -> bool:
        """True while a submitted job has no output yet (panes show the stale colour)."""
        with self._cond:
            return self._pending is not None or self._running

    def _idle(self) -> bool:
        return self._pending is None and not self._running

    def _run(self) -> None:
        while True:
            with self._cond:
                while self._pending is None and not self._stop:
                    self._cond.wait()
                if self._stop:
                    return
                # Let navigation finish before spending a whole pass on an intermediate state.
                while (left := self._last_key + self.settings.pause_after_key_s - time.monotonic()) > 0:
                    self._cond.wait(left)
                job, self._pending, self._running = self._pending, None, True
            out = self._guarded(job)
            with self._cond:
                self._output, self._running = out, False
                self.passes += 1
                self._cond.notify_all()

    def _guarded(self, job: Job) -> Output:
        try:
            return self._compute(self._model_for(job.checkpoint), job, self.settings)
        except Exception as exc:  # the window must survive any model or input failure
            log.exception("compute failed")
            return Output(job, error=f"{type(exc).__name__}: {exc}".splitlines()[0])

    def _model_for(self, index: int):
        """The LoadedModel to run: the shared one for the final weights, else the private copy with
        checkpoint ``index`` loaded (the shared net is never modified, so other users of it are safe)."""
        if index < 0:
            return self.model
        if self._checkpoint_model is None:
            self._checkpoint_model = dataclasses.replace(self.model, net=copy.deepcopy(self.model.net))
            self._checkpoint = -1
        if index != self._checkpoint:
            self._checkpoint = -1  # a failed load leaves no claim about the copy's weights
            self._checkpoint_model.load_weights(self.model.checkpoints[index])
            self._checkpoint = index
        return self._checkpoint_model


Loaded = Union[np.ndarray, NotThere]


class UnitImageKey(NamedTuple):
    """One image of one unit from the pipeline's unit_vis folder (kind: opt, top9, deconv)."""

    layer: str
    unit: int
    kind: str


class SpriteKey(NamedTuple):
    """The images of every unit of a layer (pattern mode)."""

    layer: str
    kind: str


class ByteCache:
    """LRU cache of numpy arrays (or :data:`NotThere.ABSENT`) bounded by total bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Loaded] = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable) -> Loaded:
        """The cached value, or :data:`NotThere.LOADING` for a key not (or no longer) cached."""
        if key not in self._items:
            return NotThere.LOADING
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value: Loaded) -> None:
        if key in self._items:
            self.bytes -= _nbytes(self._items.pop(key))
        self._items[key] = value
        self.bytes += _nbytes(value)
        while self.bytes > self.max_bytes and len(self._items) > 1:
            _, old = self._items.popitem(last=False)
            self.bytes -= _nbytes(old)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._items


def _nbytes(value) -> int:
    return value.nbytes if isinstance(value, np.ndarray) else 0


class ImageLoader(_ThreadWorker):
    """Loads keys with ``load_fn(key) -> ndarray | None`` in a thread into a :class:`ByteCache`.

    :meth:`want` replaces the wanted keys (the latest selection only); :meth:`get` returns the
    array, :data:`NotThere.LOADING` while it loads, or :data:`NotThere.ABSENT` when ``load_fn``
    returned None or failed.
    """

    wait_timeout = 30.0

    def __init__(self, load_fn: Callable[[Hashable], np.ndarray | None], max_bytes: int):
        super().__init__("dvis-unit-images")
        self._load = load_fn
        self._cache = ByteCache(max_bytes)
        self._wanted: list[Hashable] = []
        self._loaded = 0
        self._thread.start()

    def want(self, keys: list[Hashable]) -> None:
        with self._cond:
            missing = [k for k in keys if k not in self._cache]
            if missing != self._wanted:
                self._wanted = missing
                self._cond.notify_all()

    def get(self, key: Hashable) -> Loaded:
        with self._cond:
            return self._cache.get(key)

    @property
    def version(self) -> int:
        """How many keys have been loaded so far (changes whenever a pane may have new content)."""
        with self._cond:
            return self._loaded

    @property
    def idle(self) -> bool:
        with self._cond:
            return self._idle()

    def _idle(self) -> bool:
        return not self._wanted

    def _run(self) -> None:
        while True:
            with self._cond:
                while True:
                    self._wanted = [k for k in self._wanted if k not in self._cache]
                    if self._wanted or self._stop:
                        break
                    self._cond.notify_all()  # wake wait(): everything wanted is loaded
                    self._cond.wait()
                if self._stop:
                    return
                key = self._wanted[0]
            try:
                value = self._load(key)
            except Exception:  # a broken image file must not stop the loader
                log.exception("loading %s failed", key)
                value = None
            with self._cond:
                self._cache.put(key, NotThere.ABSENT if value is None else value)
                self._loaded += 1


def unit_image_loader(root: Path | None, *fallbacks: Path) -> Callable[[Hashable], np.ndarray | None]:
    """``load_fn`` for :class:`ImageLoader` reading :class:`UnitImageKey` and :class:`SpriteKey`
    keys through :class:`dvis.formats.unit_vis.UnitImages` (layers missing in ``root`` from ``fallbacks``)."""
    if root is None or not Path(root).is_dir():
        return lambda key: None
    from dvis.formats.unit_vis import UnitImages

    images = UnitImages(root, *fallbacks)

    def load(key: Hashable) -> np.ndarray | None:
        if isinstance(key, SpriteKey):
            return images.sprite(key.layer, key.kind)
        return images.load(key.layer, key.unit, key.kind)

    return load
