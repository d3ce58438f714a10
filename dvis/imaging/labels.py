"""Class labels of images from their paths: the one place a class is read off an image's name.

Two rules, each one function:

- :func:`class_folder`: the class folder an image lies in: its parent folder
  (``.../<class>/<file>``, the unit statistics' classes), or the folder right under a split folder
  (``.../<split>/<class>/...``, ``dvis evaluate`` and the CIFAR arrays);
- :func:`class_in_name`: a model label written as a whole word in the file name
  (``cifar_dog_0001.png``, the analyses' default targets).

:func:`source_labels` turns a source's class folders (or a labels file) into class indices.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from dvis.errors import DvisError
from dvis.imaging.images import natural_key


def class_folder(path: str | os.PathLike, split: str | None = None) -> str | None:
    """The class folder of the image at ``path`` (a path or an archive member name): its parent
    folder, or with ``split`` the folder right under the first ``split`` folder that has one more
    level below it (``.../SPLIT/<class>/<file>``); None when there is none."""
    parts = Path(path).parts
    if split is None:
        return parts[-2] if len(parts) > 1 and parts[-2] not in ("", os.sep) else None
    if split not in parts[:-2]:
        return None
    return parts[parts.index(split) + 1]


def class_in_name(path: str | os.PathLike, labels: Sequence[str]) -> int | None:
    """The index of the label that appears as a whole word in the file name (e.g.
    ``cifar_dog_0001.png``), if exactly one does."""
    words = set(re.split(r"[^a-z0-9]+", Path(path).stem.lower()))
    hits = [i for i, name in enumerate(labels) if name.lower() in words]
    return hits[0] if len(hits) == 1 else None


def image_labels(class_names: list[str | None] | None, known: Sequence[str] = ()) -> tuple[list[str], np.ndarray | None]:
    """(classes, per-image class index) from per-image class names (None: unknown).

    Classes follow ``known`` (a model's labels, so that class i is output unit i) when every name
    is one of them, else natural order of the names. ``([], None)`` without labels."""
    if not class_names:
        return [], None
    names = sorted({c for c in class_names if c is not None}, key=natural_key)
    if not names:
        return [], None
    classes = list(known) if known and set(names) <= set(known) else names
    lookup = {c: i for i, c in enumerate(classes)}
    return classes, np.array([lookup[c] if c is not None else -1 for c in class_names], dtype=np.int16)


def source_labels(source, labels_file: str | Path | None = None, known: Sequence[str] = ()
                  ) -> tuple[list[str], np.ndarray | None]:
    """(classes, per-image class index) of an ImageSource: from ``labels_file`` (lines
    ``<image name> <class>``, names as the source lists them; images not listed are unknown), else
    from class folders (:func:`class_folder`, when the images lie in two or more folders).
    Classes follow ``known`` (the model's labels) when they name every class."""
    if labels_file is not None:
        table = {}
        try:
            lines = Path(labels_file).read_text().splitlines()
        except OSError as exc:
            raise DvisError(f"cannot read labels file {labels_file}: {exc}") from None
        for i, line in enumerate(lines):
            if line.strip():
                parts = line.rsplit(None, 1)
                if len(parts) != 2:
                    raise DvisError(f"{labels_file}:{i + 1}: expected '<image name> <class>', got {line!r}")
                table[parts[0]] = parts[1]
        names = [table.get(s) for s in source.names]
        if not any(c is not None for c in names):
            raise DvisError(f"{labels_file} names none of the {len(source.names)} images of {source.spec}")
        return image_labels(names, known)
    folders = [class_folder(s) for s in source.names]
    if len(set(folders) - {None}) < 2:
        return [], None
    return image_labels(folders, known)
