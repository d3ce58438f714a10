"""Decoding dataset images to the model's input size, on the CPU or on the GPU (nvjpeg).

The reference is :func:`dvis.imaging.images.read_image` (Pillow) followed by the model's resize
(:func:`dvis.imaging.preprocess.prepare_image`: OpenCV area averaging when shrinking, bilinear when
enlarging). The decoders below are faster and stay within :data:`TOLERANCE` of it:

- **cpu** (per file): a JPEG at least 8x the input size on both sides is decoded by Pillow with
  ``draft()`` to at least 4x the input size (libjpeg's DCT scaling, then area averaging as usual;
  within ``TOLERANCE["draft"]``: drafting to only 2x the input doubles the error); other
  3-channel and grayscale JPEGs by ``simplejpeg`` (libjpeg-turbo, the ``fast`` extra; unrotated
  files) or ``torchvision.io.decode_jpeg`` (libjpeg-turbo), both the same pixels as Pillow;
  everything else (PNG, CMYK JPEGs, ...) by the reference path.
- **gpu**: worker processes read the bytes; JPEGs with 1 or 3 components and no EXIF rotation
  go, a batch at a time, to ``torchvision.io.decode_jpeg(list, device="cuda")`` and are resized
  on the device (area averaging as two matrix products, the same weights as OpenCV's). Other
  files are decoded by the cpu path in the workers, and a batch nvjpeg rejects is retried file
  by file, falling back to the cpu path; files no path can read are skipped with a warning.

Every path refuses images over :data:`dvis.imaging.images.MAX_PIXELS` as :func:`read_image` does:
a JPEG from its frame header (:func:`jpeg_header`) before any decoder sees it, anything else in
:func:`read_image` itself.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import struct
import warnings
from concurrent.futures import ThreadPoolExecutor, TimeoutError as FuturesTimeout
from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from PIL import Image, ImageOps

from dvis.errors import DvisError

try:  # optional (the `fast` extra): ~15% less decoding time than decode_jpeg per ImageNet-sized JPEG
    import simplejpeg
except ImportError:  # pragma: no cover - decode_jpeg does the same work
    simplejpeg = None
from dvis.imaging.images import check_pixels, read_image, warn_skip
from dvis.imaging.preprocess import prepare_image

MODES = ("cpu", "gpu", "auto")
#: Priority of a CPU forward's decoding workers (:func:`load_batches`): "gated" (idle while the main
#: process computes, default while it waits for a batch), "idle" or "default" (what
#: ``bench/maxes.py --load N`` compares it with).
WORKER_PRIORITY = "gated"

#: Largest difference from the reference a decoder may make, in 0..255 levels: (max, mean) per
#: image. Exact decoders differ by rounding (1 level); draft() decoding by up to the figures here;
#: the device-side bilinear enlarging (images smaller than the input) by OpenCV's fixed-point rounding.
TOLERANCE = {"exact": (1, 0.01), "draft": (48, 2.5), "enlarge": (1, 0.2)}
DRAFT = 4  # draft() decodes to at least this multiple of the input size


@dataclass(frozen=True)
class JpegHeader:
    height: int
    width: int
    components: int
    orientation: int  # EXIF orientation, 1 = as stored


def _exif_orientation(app1: bytes) -> int:
    """The orientation tag (0x0112) of an APP1 Exif payload's first IFD, 1 if absent."""
    if not app1.startswith(b"Exif\0\0") or len(app1) < 14:
        return 1
    tiff = app1[6:]
    end = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if end is None:
        return 1
    (ifd,) = struct.unpack(end + "I", tiff[4:8])
    if ifd + 2 > len(tiff):
        return 1
    (count,) = struct.unpack(end + "H", tiff[ifd:ifd + 2])
    for j in range(count):
        entry = tiff[ifd + 2 + 12 * j: ifd + 14 + 12 * j]
        if len(entry) < 12:
            break
        tag, _type, _n = struct.unpack(end + "HHI", entry[:8])
        if tag == 0x0112:
            return struct.unpack(end + "H", entry[8:10])[0]
    return 1


def jpeg_header(data: bytes) -> JpegHeader | None:
    """Size, component count and EXIF orientation of a JPEG from its markers (no decoding);
    None when ``data`` is not a well-formed JPEG up to its frame header."""
    if data[:2] != b"\xff\xd8":
        return None
    i, orientation = 2, 1
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            return None
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        (length,) = struct.unpack(">H", data[i + 2:i + 4])
        if marker == 0xE1:
            orientation = _exif_orientation(data[i + 4:i + 2 + length])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # a start-of-frame marker
            if i + 10 > len(data):
                return None
            h, w = struct.unpack(">HH", data[i + 5:i + 9])
            return JpegHeader(h, w, data[i + 9], orientation)
        i += 2 + length
    return None


def _quiet_decode_jpeg(*args, **kwargs):
    from torchvision.io import decode_jpeg

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torchvision 0.29 marks its image decoders deprecated
        return decode_jpeg(*args, **kwargs)


def decode_cpu(data: bytes, size: tuple[int, int], channels: int = 3, name: str | None = None) -> np.ndarray:
    """Image bytes -> the model's input (CxHxW uint8) by the fastest CPU decoder for the file
    (see the module docstring); raises DvisError naming the file (``name``) when it is unreadable
    or over the pixel limit."""
    from torchvision.io import ImageReadMode

    if not data:
        raise DvisError(f"{name}: empty file" if name else "empty file")
    h, w = size
    head = jpeg_header(data)
    if head is not None:
        check_pixels(head.width, head.height, name or f"<{len(data)} bytes>")
    img = None
    if head is not None and head.components in (1, 3):
        rotated = head.orientation in (5, 6, 7, 8)
        th, tw = (w, h) if rotated else (h, w)
        try:
            if head.height >= DRAFT * 2 * th and head.width >= DRAFT * 2 * tw:
                with Image.open(io.BytesIO(data)) as im:
                    im.draft("RGB", (DRAFT * tw, DRAFT * th))
                    img = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
            elif simplejpeg is not None and head.orientation == 1:
                img = simplejpeg.decode_jpeg(data, "RGB")
            else:
                t = _quiet_decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB,
                                       apply_exif_orientation=True)
                img = t.permute(1, 2, 0).numpy()
        except Exception:  # noqa: BLE001 - any decoder failure falls back to the reference path
            img = None
    if img is None:
        img = read_image(data, name=name)
    return np.ascontiguousarray(prepare_image(img, tuple(size), channels).transpose(2, 0, 1))


def area_matrix(n_in: int, n_out: int, device=None) -> torch.Tensor:
    """(n_out, n_in) weights of area-averaging ``n_in`` pixels down to ``n_out`` (OpenCV's INTER_AREA)."""
    scale = n_in / n_out
    edges = torch.arange(n_out + 1, dtype=torch.float64, device=device) * scale
    px = torch.arange(n_in, dtype=torch.float64, device=device)[None]
    overlap = (torch.minimum(edges[1:, None], px + 1) - torch.maximum(edges[:-1, None], px)).clamp_min(0)
    return (overlap / scale).float()


def resize_batch(images: torch.Tensor, size: tuple[int, int], channels: int = 3) -> torch.Tensor:
    """N x 3 x h x w uint8 images of one size -> N x channels x H x W uint8 on their device, as
    :func:`prepare_image` resizes (area when shrinking both sides, else bilinear)."""
    h, w = size
    x = images.float()
    if images.shape[2] >= h and images.shape[3] >= w:
        x = area_matrix(images.shape[2], h, x.device) @ x @ area_matrix(images.shape[3], w, x.device).T
    else:
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)
    x = x.round_().clamp_(0, 255)
    if channels == 1:  # OpenCV's fixed-point RGB -> gray, on the resized uint8 values as prepare_image does
        w = torch.tensor([4899, 9617, 1868], device=x.device, dtype=torch.int32).view(1, 3, 1, 1)
        return ((x.to(torch.int32) * w).sum(1, keepdim=True) + 8192).bitwise_right_shift(14).to(torch.uint8)
    return x.to(torch.uint8)


def _lower_to_idle() -> None:
    """Run the calling thread only on otherwise idle cores (Linux SCHED_IDLE, else nice 19)."""
    try:
        if hasattr(os, "SCHED_IDLE"):
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # pid 0: this thread only
        else:  # pragma: no cover - not Linux
            os.nice(19)
    except OSError:  # pragma: no cover - a sandbox may refuse; then it keeps the default priority
        pass


def _idle_worker(_worker_id: int) -> None:
    _lower_to_idle()


class WaitGatedDataset(Dataset):
    """``dataset`` whose items a DataLoader worker decodes at idle priority while the main process
    is busy, and at the worker's own (default) priority while the main process waits for a batch
    (``waiting``, a shared flag set by :func:`flag_waits`).

    An unprivileged process cannot raise a priority once lowered, so each worker keeps two
    threads: its own, at default priority, and one it lowered to idle priority at its start. While
    the main process is busy an item goes to the idle thread; when the main process waits (the
    prefetch queue ran dry), to the worker's own thread, also for an item the idle thread has
    not finished (its result is then dropped)."""

    poll_s = 0.01  # how often a worker waiting on the idle thread looks at the flag

    def __init__(self, dataset, waiting):
        self.dataset, self.waiting = dataset, waiting
        self._idle: ThreadPoolExecutor | None = None  # made in the worker, after the fork

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i):
        if self.waiting.value:
            return self.dataset[i]
        if self._idle is None:
            self._idle = ThreadPoolExecutor(1, thread_name_prefix="dvis-idle-decode", initializer=_lower_to_idle)
        job = self._idle.submit(self.dataset.__getitem__, i)
        while not self.waiting.value:
            try:
                return job.result(timeout=self.poll_s)
            except FuturesTimeout:
                continue
        return job.result() if job.done() else self.dataset[i]


def flag_waits(batches: Iterator, waiting) -> Iterator:
    """``batches``, with ``waiting.value`` 1 while the caller waits for the next one, else 0."""
    while True:
        waiting.value = 1
        try:
            batch = next(batches)
        except StopIteration:
            return
        finally:
            waiting.value = 0
        yield batch


def load_batches(dataset, device: torch.device | str, **loader_args) -> Iterator:
    """Iterate ``DataLoader(dataset, **loader_args)`` whose workers decode for a forward on ``device``.

    - On a CPU device the forward's threads use every core, and a worker that preempts one of them
      stalls the whole operator at its next barrier: while the forward runs the workers decode at
      idle priority, in the forward's idle time (AlexNet, 2 cores: the forward inside ``dvis
      maxes`` took 775-817 ms per 64 images with default-priority workers and 656-666 ms at idle
      priority, against 670 ms alone). At idle priority only, other jobs on a shared machine
      starved them (2,000 CIFAR images: 71 s quiet, 290 s at load 14-18), so whenever the main
      process waits for a batch they decode at default priority (:class:`WaitGatedDataset`;
      ``bench/maxes.py --load N`` shows both cases). On a GPU the cores are the decoders' own:
      default priority.
    - OpenCV's thread pool is stopped while the workers fork: a child forked while the pool's
      threads wait on it deadlocks in its first call that touches the pool (``cv2.setNumThreads``
      in a worker hung that way). The workers so inherit OpenCV with one thread and no pool, which
      also keeps them from competing with each other for the same cores; the caller's thread
      count is restored after the fork.
    """
    waiting = None
    if torch.device(device).type == "cpu" and loader_args.get("num_workers") and WORKER_PRIORITY == "gated":
        waiting = multiprocessing.RawValue("b", 1)
        dataset = WaitGatedDataset(dataset, waiting)
    elif torch.device(device).type == "cpu" and WORKER_PRIORITY == "idle":
        loader_args.setdefault("worker_init_fn", _idle_worker)
    loader = DataLoader(dataset, **loader_args)
    if not loader.num_workers:
        return iter(loader)
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    try:
        batches = iter(loader)  # forks the workers
    finally:
        cv2.setNumThreads(threads)
    return batches if waiting is None else flag_waits(batches, waiting)


def gpu_available() -> bool:
    return torch.cuda.is_available()


def resolve(mode: str, device: torch.device | str) -> str:
    """'cpu' or 'gpu' for ``--decode mode`` on ``device`` ('auto': gpu on a CUDA device)."""
    if mode not in MODES:
        raise DvisError(f"unknown --decode {mode!r}; expected one of {', '.join(MODES)}")
    cuda = torch.device(device).type == "cuda"
    if mode == "gpu" and not (cuda and gpu_available()):
        raise DvisError("--decode gpu needs a CUDA device (--device cuda)")
    if mode == "auto":
        return "gpu" if cuda and gpu_available() else "cpu"
    return mode


class Decoder:
    """Per-item work for DataLoader workers (:meth:`item`), batching (:meth:`collate`) and the
    device side (:meth:`finish`) of one decode mode ('cpu' or 'gpu', see :func:`resolve`).

    Unreadable images yield zeros and ``ok=False`` (with a warning) instead of raising, so every
    batch keeps its composition (which keeps floating-point results identical across shards).
    """

    def __init__(self, source, size: tuple[int, int], channels: int = 3, mode: str = "cpu"):
        self.source, self.size, self.channels, self.mode = source, tuple(size), channels, mode

    def _cpu(self, data: bytes, i: int) -> torch.Tensor:
        return torch.from_numpy(decode_cpu(data, self.size, self.channels, self.source.names[i]))

    def item(self, i: int) -> tuple:
        """cpu: (image CxHxW uint8, ok, i); gpu: (image, JPEG bytes for the device or an empty
        tensor, ok, i)."""
        zeros = torch.zeros((self.channels,) + self.size, dtype=torch.uint8)
        empty = torch.zeros(0, dtype=torch.uint8)
        try:
            data = self.source.read_bytes(i)
            if self.mode == "gpu":
                head = jpeg_header(data)
                if head is not None and head.components in (1, 3) and head.orientation == 1:
                    check_pixels(head.width, head.height, self.source.names[i])
                    return zeros, torch.frombuffer(bytearray(data), dtype=torch.uint8), True, i
                return self._cpu(data, i), empty, True, i
            return self._cpu(data, i), True, i
        except Exception as exc:  # noqa: BLE001 - decoders raise many types on corrupt data
            warn_skip(self.source.names[i], exc)
            return (zeros, empty, False, i) if self.mode == "gpu" else (zeros, False, i)

    @property
    def collate(self):
        """The DataLoader ``collate_fn`` (None: PyTorch's default)."""
        return _collate_blobs if self.mode == "gpu" else None

    def finish(self, batch: tuple, device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A collated batch -> (N x C x H x W uint8 images on ``device``, ok mask, image indices)."""
        if len(batch) == 3:
            images, ok, index = batch
            return images.to(device, non_blocking=True), ok, index
        images, blobs, ok, index = batch
        images = images.to(device, non_blocking=True)
        todo = [j for j, b in enumerate(blobs) if len(b) and bool(ok[j])]
        if not todo:
            return images, ok, index
        from torchvision.io import ImageReadMode

        try:
            decoded = _quiet_decode_jpeg([blobs[j] for j in todo], mode=ImageReadMode.RGB, device=device)
        except Exception:  # noqa: BLE001 - nvjpeg raises RuntimeError, other builds other types
            decoded = [self._one(blobs[j], device) for j in todo]
        for j, d in zip(todo, decoded):
            if d is None:
                try:
                    d = self._cpu(blobs[j].numpy().tobytes(), int(index[j])).to(device)
                except Exception as exc:  # noqa: BLE001
                    warn_skip(self.source.names[int(index[j])], exc)
                    ok[j] = False
                    continue
                images[j] = d
        shapes: dict[tuple, list[int]] = {}
        for j, d in zip(todo, decoded):
            if d is not None:
                shapes.setdefault(tuple(d.shape), []).append(j)
        for shape, js in shapes.items():  # one batched resize per input size
            pos = {j: p for p, j in enumerate(todo)}
            images[js] = resize_batch(torch.stack([decoded[pos[j]] for j in js]), self.size, self.channels)
        return images, ok, index

    @staticmethod
    def _one(blob: torch.Tensor, device) -> torch.Tensor | None:
        from torchvision.io import ImageReadMode

        try:
            return _quiet_decode_jpeg(blob, mode=ImageReadMode.RGB, device=device)
        except Exception:  # noqa: BLE001 - nvjpeg raises RuntimeError, other builds other types
            return None


def _collate_blobs(items: list[tuple]) -> tuple:
    images, blobs, ok, index = zip(*items)
    return torch.stack(images), list(blobs), torch.tensor(ok), torch.tensor(index)
