"""Decode a small-image classification dataset (folder or tar of ``split/<class>/*.jpg``) into arrays."""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from dvis.errors import DvisError
from dvis.imaging.images import is_image_path, open_regular, read_image, warn_skip
from dvis.imaging.labels import class_folder


def _decode(data: bytes, size: int) -> np.ndarray:
    img = read_image(data)
    if img.shape[:2] != (size, size):
        img = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR))
    return img


def iter_split(source: str | Path, split: str):
    """Yield (relative path 'split/class/file', bytes) for every image of a split, folder or tar."""
    source = Path(source)
    if source.is_dir():
        for p in sorted((source / split).rglob("*")):
            if is_image_path(p):
                try:
                    with open_regular(p) as f:  # a named pipe is skipped, not waited on
                        data = f.read()
                except DvisError as exc:
                    warn_skip(str(p), exc)
                    continue
                yield p.relative_to(source).as_posix(), data
        return
    with tarfile.open(source) as tf:
        for m in tf:
            if not m.isfile() or not is_image_path(m.name):
                continue
            parts = Path(m.name).parts
            if split in parts:
                rel = "/".join(parts[parts.index(split):])
                yield rel, tf.extractfile(m).read()


def load_split(source: str | Path, split: str, size: int = 32) -> tuple[np.ndarray, np.ndarray, list[str], list[str]]:
    """Return (images NxHxWx3 uint8, labels N int64, class names, relative paths) sorted by path."""
    items = [(rel, data, class_folder(rel, split)) for rel, data in sorted(iter_split(source, split))]
    items = [item for item in items if item[2] is not None]
    if not items:
        raise FileNotFoundError(f"no images under '{split}/<class>/' in {source}")
    classes = sorted({c for _, _, c in items})
    index = {c: i for i, c in enumerate(classes)}
    images = np.stack([_decode(data, size) for _, data, _ in items])
    labels = np.array([index[c] for _, _, c in items], dtype=np.int64)
    return images, labels, classes, [rel for rel, _, _ in items]
