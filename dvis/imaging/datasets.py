"""Image sources: a folder, a list file, a tar archive or one image, read by index. Every command
that reads images goes through this module.

A source is an ordered list of image names plus a way to fetch each image's bytes; the order is
fixed (natural sort) so an image's index is stable across runs, processes and shards. Unreadable
files are skipped with one warning each (:func:`dvis.imaging.images.warn_skip`) and counted in the command's summary.
"""
from __future__ import annotations

import os
import re
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from torch.utils.data import Dataset

from dvis.errors import DvisError
from dvis.imaging.images import IMAGE_EXTENSIONS, list_images, natural_key, open_regular, read_image, warn_skip
from dvis.imaging.preprocess import prepare_image

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
        with open_regular(self.path(i), self.names[i]) as f:  # a named pipe is refused, not waited on
            return f.read()

    def load(self, i: int) -> np.ndarray:
        """Image ``i`` as HxWx3 uint8 RGB; raises DvisError (or OSError) if it cannot be decoded."""
        data = self.read_bytes(i)
        if not data:
            raise DvisError(f"{self.names[i]}: empty file")
        return read_image(data, name=self.names[i])

    def try_load(self, i: int) -> np.ndarray | None:
        """Image ``i``, or None (after one warning naming the file) when it cannot be read."""
        try:
            return self.load(i)
        except UNREADABLE as exc:
            warn_skip(self.names[i], exc)
            return None

    def read_all(self) -> "ReadImages":
        """Decode every image, skipping unreadable ones (one warning each)."""
        images, names, skipped = [], [], []
        for i in range(len(self)):
            img = self.try_load(i)
            if img is None:
                skipped.append(self.names[i])
            else:
                images.append(img)
                names.append(self.path(i))
        return ReadImages(images, names, skipped)


#: What decoding a bad file raises (DvisError from dvis.imaging.images, OSError from the file system).
UNREADABLE = (DvisError, OSError, ValueError, cv2.error)


@dataclass
class ReadImages:
    """Decoded images (HxWx3 uint8 RGB) with their locators, and the names of the files skipped."""

    images: list[np.ndarray]
    names: list[str]
    skipped: list[str]

    def summary(self) -> str:
        """'12 images (3 skipped as unreadable)'."""
        return f"{len(self.images)} images ({len(self.skipped)} skipped as unreadable)"


def read_sources(specs: str | list[str]) -> ReadImages:
    """Decode all images of one or several sources (folders, list files, tars, image files), in
    order, skipping unreadable ones; raises DvisError when none is readable."""
    specs = [specs] if isinstance(specs, (str, os.PathLike)) else list(specs)
    images, names, skipped = [], [], []
    for spec in specs:
        part = open_source(spec).read_all()
        images += part.images
        names += part.names
        skipped += part.skipped
    if not images:
        raise DvisError(f"no readable images in {', '.join(map(str, specs))}"
                        + (f" ({len(skipped)} skipped as unreadable)" if skipped else ""))
    return ReadImages(images, names, skipped)


_MEMBER_KINDS = {tarfile.SYMTYPE: "a symbolic link", tarfile.LNKTYPE: "a hard link", tarfile.FIFOTYPE: "a named pipe",
                 tarfile.CHRTYPE: "a character device", tarfile.BLKTYPE: "a block device"}


def _tar_source(spec: str, regex: re.Pattern | None = None) -> ImageSource:
    compressed = not spec.lower().endswith(".tar")
    names: list[str] = []
    offsets: list[tuple[int, int]] = []
    blobs: list[bytes] = []
    total = 0
    try:
        with tarfile.open(spec) as tf:
            for m in tf:
                if not m.name.lower().endswith(tuple(IMAGE_EXTENSIONS)):
                    continue
                if regex is not None and not regex.search(m.name):
                    continue
                if not m.isfile():  # a link, a named pipe or a device member has no image data of its own
                    if not m.isdir():
                        kind = _MEMBER_KINDS.get(m.type, "a special member")
                        warn_skip(m.name, DvisError(f"not a regular file ({kind})"))
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


def open_source(spec: str | Path, recursive: bool = True, pattern: str | None = None) -> ImageSource:
    """Open an image folder (sub-folders too when ``recursive``), a text file listing image paths,
    a tar archive or one image; ``pattern`` is a regular expression searched in each relative path
    (as :func:`dvis.imaging.images.list_images`)."""
    spec = str(spec)
    if not os.path.exists(spec):
        raise DvisError(f"image source not found: {spec}")
    if os.path.isfile(spec) and is_tar(spec):
        try:
            regex = re.compile(pattern) if pattern else None
        except re.error as exc:
            raise DvisError(f"bad image pattern {pattern!r}: {exc}") from exc
        source = _tar_source(spec, regex)
    elif os.path.isdir(spec):
        root = str(Path(spec).resolve())
        paths = list_images(spec, recursive=recursive, pattern=pattern)
        source = ImageSource(spec, "folder", [os.path.relpath(os.path.abspath(p), root) for p in paths], root=root)
    else:
        paths = list_images(spec, pattern=pattern)
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

    def __init__(self, source: ImageSource, size: tuple[int, int], channels: int = 3, decode: str = "cpu"):
        from dvis.imaging.decode import Decoder

        self.source, self.size, self.channels = source, tuple(size), channels
        self.decoder = Decoder(source, self.size, channels, decode)  # dvis.imaging.decode: --decode cpu|gpu

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple:
        return self.decoder.item(i)
