"""Background threads: the compute worker (forward + back-projection on the latest frame only) and the
unit-image loader with a byte-bounded cache. The window thread only submits jobs and reads results."""
from __future__ import annotations

import copy
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Job:
    """One pass of the network to compute; ``key`` identifies what it shows (same key, same result)."""

    frame_id: Hashable
    frame: np.ndarray = field(compare=False, hash=False)  # the model view, HxWx3 uint8 RGB
    back: tuple[str, int, str] | None = None  # (layer, unit, mode) to back-project, or None
    diff_layer: str | None = None  # layer whose back diffs to keep
    checkpoint: int = -1  # index into LoadedModel.checkpoints, -1 for the loaded weights
    occlusion: bool = False  # also compute the occlusion map of the top class

    @property
    def key(self) -> tuple:
        return (self.frame_id, self.back, self.diff_layer, self.checkpoint, self.occlusion)


@dataclass
class Output:
    """What the worker computed for a job (numpy, first batch item), or the error it hit."""

    job: Job
    acts: dict[str, np.ndarray] = field(default_factory=dict)
    probs: np.ndarray | None = None
    grad: np.ndarray | None = None  # input gradient, C x H x W
    diffs: dict[str, np.ndarray] = field(default_factory=dict)
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


def compute(model, job: Job, settings) -> Output:
    """Run one job on ``model`` (a LoadedModel): one forward capturing every layer, plus one backward
    when a back-projection is asked for. Pure apart from the model's forward/backward."""
    from dvis.activations import activations
    from dvis.backproject import forward_and_back

    start = time.perf_counter()
    x = model.preprocess(job.frame)
    out = Output(job)
    if job.back is not None:
        layer, unit, mode = job.back
        diff_layers = (job.diff_layer,) if job.diff_layer else ()
        res = forward_and_back(model, x, model.layers, layer, unit, mode, "max", diff_layers=diff_layers)
        acts = res.activations
        out.grad = res.input_grad.detach()[0].float().cpu().numpy()
        out.diffs = {k: v.detach()[0].float().cpu().numpy() for k, v in res.diffs.items()}
    else:
        with torch.no_grad():
            acts = activations(model, x, model.layers)
    out.acts = {k: v.detach()[0].float().cpu().numpy() for k, v in acts.items()}
    out.probs = class_probs(out.acts, model.layers, len(model.labels))
    if job.occlusion:
        out.occlusion = occlusion_map(model, x, settings.occlusion_patch, settings.occlusion_steps)
    out.seconds = time.perf_counter() - start
    return out


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
    one pass, not one per key.
    """

    def __init__(self, model, settings, compute_fn: Callable = compute):
        super().__init__("dvis-compute")
        self.model, self.settings, self._compute = model, settings, compute_fn
        self._pending: Job | None = None
        self._submitted_key: tuple | None = None
        self._running = False
        self._last_key = 0.0
        self._weights = copy.deepcopy(model.net.state_dict())  # to return from checkpoints
        self._checkpoint = -1
        self.output: Output | None = None
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
                self.output, self._running = out, False
                self.passes += 1
                self._cond.notify_all()

    def _guarded(self, job: Job) -> Output:
        try:
            self._set_checkpoint(job.checkpoint)
            return self._compute(self.model, job, self.settings)
        except Exception as exc:  # the window must survive any model or input failure
            log.exception("compute failed")
            return Output(job, error=f"{type(exc).__name__}: {exc}".splitlines()[0])

    def _set_checkpoint(self, index: int) -> None:
        if index == self._checkpoint:
            return
        self._checkpoint = -1
        if index < 0:
            self.model.net.load_state_dict(self._weights)
        else:
            self.model.load_weights(self.model.checkpoints[index])
        self._checkpoint = index


MISSING = object()  # a key the cache has not loaded yet


class ByteCache:
    """LRU cache of numpy arrays (or None for "absent") bounded by total bytes."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, np.ndarray | None] = OrderedDict()
        self.bytes = 0

    def get(self, key: Hashable):
        if key not in self._items:
            return MISSING
        self._items.move_to_end(key)
        return self._items[key]

    def put(self, key: Hashable, value: np.ndarray | None) -> None:
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
    cached value or :data:`MISSING` while it loads.
    """

    wait_timeout = 30.0

    def __init__(self, load_fn: Callable[[Hashable], np.ndarray | None], max_bytes: int):
        super().__init__("dvis-unit-images")
        self._load = load_fn
        self._cache = ByteCache(max_bytes)
        self._wanted: list[Hashable] = []
        self._thread.start()

    def want(self, keys: list[Hashable]) -> None:
        with self._cond:
            missing = [k for k in keys if k not in self._cache]
            if missing != self._wanted:
                self._wanted = missing
                self._cond.notify_all()

    def get(self, key: Hashable):
        with self._cond:
            return self._cache.get(key)

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
                self._cache.put(key, value)


def unit_image_loader(root: Path | None) -> Callable[[Hashable], np.ndarray | None]:
    """``load_fn`` for :class:`ImageLoader` reading ``("unit", layer, unit, kind)`` and
    ``("sprite", layer, kind)`` keys through :class:`dvis.unit_vis.UnitImages`."""
    if root is None or not Path(root).is_dir():
        return lambda key: None
    from dvis.unit_vis import UnitImages

    images = UnitImages(root)

    def load(key: Hashable) -> np.ndarray | None:
        if key[0] == "sprite":
            return images.sprite(key[1], key[2])
        return images.load(key[1], key[2], key[3])

    return load
