"""Frame sources for the toolbox: image files and a camera, plus the pure frame preparation."""
from __future__ import annotations

import logging
import threading
from contextlib import contextmanager
from typing import Iterator

import cv2
import numpy as np

from dvis.imaging.datasets import UNREADABLE, open_source
from dvis.imaging.images import open_regular
from dvis.errors import DvisError

log = logging.getLogger(__name__)


def crop_to_aspect(frame: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """Centre crop ``frame`` to the aspect ratio of ``hw`` (h, w)."""
    h, w = frame.shape[:2]
    target = hw[0] / hw[1]
    if h / w > target:
        ch = max(1, int(round(w * target)))
        top = (h - ch) // 2
        return frame[top:top + ch]
    cw = max(1, int(round(h / target)))
    left = (w - cw) // 2
    return frame[:, left:left + cw]


def model_view(frame: np.ndarray, input_hw: tuple[int, int], crop: bool, channels: int) -> np.ndarray:
    """The frame as the model sees it (before resizing): cropped to its aspect or left to be stretched,
    gray (as RGB) for 1-channel models."""
    view = crop_to_aspect(frame, input_hw) if crop else frame
    if channels == 1:
        view = cv2.cvtColor(cv2.cvtColor(np.ascontiguousarray(view), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    return np.ascontiguousarray(view)


def suited_start(sizes, input_hw: tuple[int, int], share: float = 1.0) -> int:
    """Index of the first image whose sides are both at least ``share`` of the model's input (an
    ImageNet-sized model does not start on a CIFAR image blown up from 32 to 224 px: the samples'
    are stored at 128 px); 0 when none is.
    ``sizes`` yields (h, w), or None where a size is unknown."""
    for i, hw in enumerate(sizes):
        if hw is not None and hw[0] >= share * input_hw[0] and hw[1] >= share * input_hw[1]:
            return i
    return 0


def _header_size(path: str) -> tuple[int, int] | None:
    """(h, w) from an image file's header (PIL reads no pixels for it); None when it is no file it reads."""
    from PIL import Image, UnidentifiedImageError

    try:
        with open_regular(path) as f, Image.open(f) as img:  # a named pipe is refused, not waited on
            return img.height, img.width
    except (OSError, DvisError, UnidentifiedImageError, ValueError, Image.DecompressionBombError):
        return None


class FileSource:
    """Images from a folder, list file or single image; unreadable files are skipped with a message."""

    def __init__(self, src: str, recursive: bool = True, pattern: str | None = None):
        self.message = ""
        self.source = None  # dvis.imaging.datasets: the one reader of folders, list files and tars
        try:
            self.source = open_source(src, recursive=recursive, pattern=pattern)
            self.paths = [self.source.path(i) for i in range(len(self.source))]
        except DvisError as exc:
            self.paths, self.message = [], str(exc)
        if not self.paths and not self.message:
            self.message = f"no images in {src}"
        self._cache: tuple[int, np.ndarray] | None = None
        self._memory: dict[int, np.ndarray] = {}  # index -> decoded image added with add()

    def add(self, name: str, frame: np.ndarray) -> int:
        """Append an image held in memory (e.g. a web upload) under ``name``; returns its index."""
        self.paths.append(name)
        self._memory[len(self.paths) - 1] = frame
        self.message = ""
        return len(self.paths) - 1

    def __len__(self) -> int:
        return len(self.paths)

    def read(self, index: int, step: int = 1) -> tuple[int, np.ndarray | None, str]:
        """(index actually shown, frame, message): starting at ``index``, unreadable files are skipped
        in the direction of ``step``."""
        if not self.paths:
            return 0, None, self.message
        if self._cache and self._cache[0] == index % len(self.paths):
            return self._cache[0], self._cache[1], ""
        skipped = []
        for k in range(len(self.paths)):
            i = (index + k * (1 if step >= 0 else -1)) % len(self.paths)
            try:
                frame = self._memory[i] if i in self._memory else self.source.load(i)
            except UNREADABLE as exc:
                skipped.append(str(exc))
                log.warning("skipping %s", exc)
                continue
            self._cache = (i, frame)
            return i, frame, f"skipped {len(skipped)}: {skipped[0]}" if skipped else ""
        return index % len(self.paths), None, f"no readable images ({skipped[0]})"

    def start_for(self, input_hw: tuple[int, int] | None, limit: int = 200) -> int:
        """The image to start on for a model of input size ``input_hw`` (:func:`suited_start`); only the
        first ``limit`` files' headers are read, so that a large folder opens at once."""
        if not input_hw or not self.paths:
            return 0
        return suited_start((_header_size(p) for p in self.paths[:limit]), input_hw)

    def name(self, index: int) -> str:
        return self.paths[index % len(self.paths)] if self.paths else ""


@contextmanager
def quiet_opencv() -> Iterator[None]:
    """OpenCV's own log silenced within the block, restored after: probing for a missing camera makes
    each video backend print a multi-line block ("Camera index out of range") to stderr."""
    log_api = cv2.utils.logging
    level = log_api.getLogLevel()
    log_api.setLogLevel(log_api.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        log_api.setLogLevel(level)


class Camera:
    """A ``cv2.VideoCapture`` read in its own thread; ``latest()`` gives the newest mirrored RGB frame."""

    def __init__(self, camera_id: int, mirror: bool = True):
        with quiet_opencv():  # no camera is one status line (the DvisError below), not OpenCV's blocks
            self._cap = cv2.VideoCapture(camera_id)
        if not self._cap.isOpened():
            self._cap.release()
            raise DvisError(f"camera {camera_id} is not available; staying on image files")
        self.mirror = mirror
        self._frame: tuple[int, np.ndarray] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dvis-camera", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        count = 0
        while not self._stop.is_set():
            ok, bgr = self._cap.read()
            if not ok:
                log.warning("camera read failed")
                self._stop.wait(0.1)
                continue
            rgb = cv2.cvtColor(cv2.flip(bgr, 1) if self.mirror else bgr, cv2.COLOR_BGR2RGB)
            count += 1
            with self._lock:
                self._frame = (count, rgb)

    def latest(self) -> tuple[int, np.ndarray] | None:
        """(frame number, HxWx3 RGB) or None before the first frame."""
        with self._lock:
            return self._frame

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)
        self._cap.release()
