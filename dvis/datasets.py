"""Image sources for the precompute pipeline: a folder, a list file or a tar archive, read by index.

A source is an ordered list of image names plus a way to fetch each image's bytes; the order is
fixed (natural sort) so an image's index is stable across runs, processes and shards.
"""
from __future__ import annotations

import os
import tarfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from dvis.errors import DvisError
from dvis.images import IMAGE_EXTENSIONS, list_images, natural_key, read_image
from dvis.model_loading import prepare_image

TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
#: Compressed tars cannot be read by offset, so their members are held in memory up to this size.
MAX_COMPRESSED_TAR_BYTES = 4 << 30


def is_tar(path: str | Path) -> bool:
    return str(path).lower().endswith(TAR_SUFFIXES)


@dataclass
class ImageSource:
    """An ordered set of images. ``names[i]`` is the image's path as shown to users (relative to
    ``root`` for folders and archives); :meth:`load` decodes image ``i``."""

    spec: str
    kind: str  # "folder", "list" or "tar"
    names: list[str]
    root: str = ""
    _offsets: list[tuple[int, int]] | None = field(default=None, repr=False)
    _blobs: list[bytes] | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> str:
        """A locator for image ``i``: a file path, or ``archive::member`` for tar members."""
        if self.kind == "tar":
            return f"{self.root}::{self.names[i]}"
        return os.path.join(self.root, self.names[i]) if self.root else self.names[i]

    def read_bytes(self, i: int) -> bytes:
        if self._blobs is not None:
            return self._blobs[i]
        if self._offsets is not None:
            offset, size = self._offsets[i]
            with open(self.root, "rb") as f:
                f.seek(offset)
                return f.read(size)
        with open(self.path(i), "rb") as f:
            return f.read()

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as HxWx3 uint8 RGB; raises DvisError (or OSError) if it cannot be decoded."""
        data = self.read_bytes(i)
        if not data:
            raise DvisError("empty file")
        return read_image(data)


def _tar_source(spec: str) -> ImageSource:
    compressed = not spec.lower().endswith(".tar")
    names: list[str] = []
    offsets: list[tuple[int, int]] = []
    blobs: list[bytes] = []
    total = 0
    try:
        with tarfile.open(spec) as tf:
            for m in tf:
                if not m.isfile() or not m.name.lower().endswith(tuple(IMAGE_EXTENSIONS)):
                    continue
                names.append(m.name)
                if compressed:
                    total += m.size
                    if total > MAX_COMPRESSED_TAR_BYTES:
                        raise DvisError(f"{spec}: compressed archive holds over {MAX_COMPRESSED_TAR_BYTES >> 30} GiB of "
                                        "images; decompress it to a plain .tar, which is read by offset")
                    blobs.append(tf.extractfile(m).read())
                else:
                    offsets.append((m.offset_data, m.size))
    except (tarfile.TarError, OSError) as exc:
        raise DvisError(f"cannot read archive {spec}: {exc}") from exc
    order = sorted(range(len(names)), key=lambda i: natural_key(names[i]))
    return ImageSource(spec, "tar", [names[i] for i in order], root=str(Path(spec).resolve()),
                       _offsets=None if compressed else [offsets[i] for i in order],
                       _blobs=[blobs[i] for i in order] if compressed else None)


def open_source(spec: str | Path) -> ImageSource:
    """Open an image folder (recursive), a text file listing image paths, or a tar archive."""
    spec = str(spec)
    if not os.path.exists(spec):
        raise DvisError(f"image source not found: {spec}")
    if os.path.isfile(spec) and is_tar(spec):
        source = _tar_source(spec)
    elif os.path.isdir(spec):
        root = str(Path(spec).resolve())
        paths = list_images(spec, recursive=True)
        source = ImageSource(spec, "folder", [os.path.relpath(os.path.abspath(p), root) for p in paths], root=root)
    else:
        paths = list_images(spec)
        kind = "file" if spec.lower().endswith(tuple(IMAGE_EXTENSIONS)) else "list"
        source = ImageSource(spec, kind, [str(p) for p in paths])
    if not source.names:
        raise DvisError(f"no images found in {spec}")
    return source


def fit_image(img: np.ndarray, size: tuple[int, int], channels: int = 3) -> np.ndarray:
    """An image as the model sees it (same resize as LoadedModel.preprocess), CxHxW uint8."""
    return np.ascontiguousarray(prepare_image(img, tuple(size), channels).transpose(2, 0, 1))


class ImageDataset(Dataset):
    """Decodes source images to CxHxW uint8 tensors in DataLoader workers.

    Unreadable images yield zeros and ``ok=False`` instead of raising, so every batch keeps its
    composition (which keeps floating-point results identical across resumes and shards).
    """

    def __init__(self, source: ImageSource, size: tuple[int, int], channels: int = 3):
        self.source, self.size, self.channels = source, tuple(size), channels

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, bool, int]:
        try:
            arr = fit_image(self.source.load(i), self.size, self.channels)
            return torch.from_numpy(arr), True, i
        except (DvisError, OSError, ValueError, cv2.error) as exc:
            warnings.warn(f"skipping unreadable image {self.source.names[i]}: {exc}", stacklevel=1)
            return torch.zeros((self.channels,) + self.size, dtype=torch.uint8), False, i
