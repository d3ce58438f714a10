"""Reading images into HxWx3 uint8 RGB arrays and listing the images of a folder or list file.

This module owns image decoding: :func:`read_image` for every input image (files, archive members,
uploads, camera frames) with the one pixel limit :data:`MAX_PIXELS` (:func:`check_pixels`, also
applied by the pipeline's faster decoders in :mod:`dvis.imaging.decode`), and :func:`read_own_image`
for the images dvis wrote itself (unit sprites). Encoding is :mod:`dvis.imaging.encode`.
Only regular files are images: :func:`open_regular` refuses a named pipe, a device or a socket
(opening a named pipe would wait for a writer forever) and :func:`list_images` skips them.
"""
from __future__ import annotations

import io
import os
import re
import stat
import warnings
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dvis.errors import DvisError, first_line

#: File extensions (lower case, with the dot) that :func:`list_images` treats as images.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

#: Images with more pixels are refused before decoding (decompression-bomb guard: a small file whose
#: header claims 20000x20000 pixels would need gigabytes). 8192 x 8192 covers every real photo input.
MAX_PIXELS = 8192 * 8192

# Transparent pixels are shown over white, as an image viewer on a white page shows them.
_BACKGROUND = 255


def to_rgb(img: np.ndarray) -> np.ndarray:
    """Return an HxWx3 uint8 RGB array from HxW (gray), HxWx1, HxWx3 or HxWx4 (RGBA over white) uint8."""
    img = np.asarray(img)
    if img.dtype != np.uint8:
        raise DvisError(f"expected a uint8 image, got dtype {img.dtype}")
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 3, 4) or 0 in img.shape[:2]:
        raise DvisError(f"expected an HxW, HxWx3 or HxWx4 image, got shape {tuple(img.shape)}")
    if img.shape[2] == 1:
        return np.repeat(img, 3, axis=2)
    if img.shape[2] == 4:
        alpha = img[:, :, 3:].astype(np.float32) / 255.0
        rgb = img[:, :, :3] * alpha + _BACKGROUND * (1.0 - alpha)
        return np.rint(rgb).astype(np.uint8)
    return np.ascontiguousarray(img)


def check_pixels(width: int, height: int, name: str) -> None:
    """Refuse an image of ``width`` x ``height`` pixels (read from its header) over :data:`MAX_PIXELS`:
    one DvisError line naming the file, before any decoding."""
    if width * height > MAX_PIXELS:
        raise DvisError(f"{name}: {width}x{height} pixels, over the pixel limit of {MAX_PIXELS // 1_000_000} Mpx "
                        "(decompression-bomb guard)")


_KINDS = ((stat.S_ISFIFO, "a named pipe"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISDIR, "a folder"))


def not_regular(name: str, mode: int) -> DvisError:
    """The error for ``name``, whose ``st_mode`` is ``mode``, when it is not a regular file."""
    kind = next((text for test, text in _KINDS if test(mode)), "of another kind")
    return DvisError(f"{name}: not a regular file ({kind})")


def open_regular(path: str | os.PathLike, name: str | None = None) -> BinaryIO:
    """``path`` opened for binary reading; DvisError naming it (as ``name``) when it is not a regular file.

    Opened without blocking, then checked on the open file: a plain ``open`` of a named pipe waits
    for a writer forever, and checking the path first leaves a moment to swap the file."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise not_regular(name or os.fspath(path), mode)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _pil_to_rgb(im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        # Pillow's convert("L") clips 16-bit values instead of scaling them.
        return to_rgb((np.asarray(im, dtype=np.uint16) >> 8).astype(np.uint8))
    if im.mode in ("I", "F"):
        # 32-bit int/float images carry no range: guess the common ones from the largest value.
        a = np.asarray(im, dtype=np.float64)
        peak = a.max(initial=0)
        if im.mode == "F" and peak <= 1.0:
            scale = 255.0  # floats in [0, 1]
        elif peak > 255:
            scale = 1 / 257  # 16-bit data
        else:
            scale = 1.0
        return to_rgb(np.clip(np.rint(a * scale), 0, 255).astype(np.uint8))
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("LA", "La", "PA", "RGBa"):
        im = im.convert("RGBA")
    if im.mode not in ("RGB", "RGBA", "L"):
        im = im.convert("RGB")  # CMYK, YCbCr, LAB, HSV, 1
    return to_rgb(np.asarray(im))


def read_image(path_or_bytes: str | os.PathLike | bytes, name: str | None = None) -> np.ndarray:
    """Read an image file (or its bytes) as an HxWx3 uint8 RGB array, EXIF orientation applied.

    Grayscale, RGBA/LA (composited over white), 16-bit, palette and CMYK images are converted.
    Raises :class:`DvisError` with one line naming the file (``name`` for bytes) when it is missing
    or not a readable image.
    """
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        name, source = name or f"<{len(path_or_bytes)} bytes>", io.BytesIO(bytes(path_or_bytes))
    else:
        name = os.fspath(path_or_bytes)
        if not os.path.exists(name):
            raise DvisError(f"{name}: no such image file")
        source = None
    try:
        with (open_regular(name) if source is None else source) as f, Image.open(f) as im:
            check_pixels(im.width, im.height, name)
            im = ImageOps.exif_transpose(im)
            return _pil_to_rgb(im)
    except DvisError:
        raise
    except Image.DecompressionBombError as exc:  # Pillow's own guard, at twice its limit (179 Mpx), fires first
        raise DvisError(f"{name}: over the pixel limit of {MAX_PIXELS // 1_000_000} Mpx "
                        f"(decompression-bomb guard: {first_line(exc)})") from exc
    except UnidentifiedImageError as exc:
        raise DvisError(f"{name}: not a readable image ({type(exc).__name__})") from exc
    except Exception as exc:  # Pillow's decoders and EXIF parser raise many types on corrupt data
        raise DvisError(f"{name}: corrupt or unreadable image ({first_line(exc)})") from exc


def read_own_image(path: str | os.PathLike) -> np.ndarray:
    """An image file dvis wrote itself (a unit sprite) as HxWx3 uint8 RGB; DvisError when unreadable.

    Decoded by OpenCV without :data:`MAX_PIXELS`: that limit guards against hostile inputs, and the
    sprite of a deep layer (hundreds of mosaics a few hundred pixels wide) can be over it."""
    img = cv2.imread(os.fspath(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DvisError(f"cannot read image {os.fspath(path)}")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def warn_skip(name: str, exc: BaseException, what: str = "image") -> None:
    """The one warning an unreadable image (``what``: or folder) gets before it is skipped (whichever
    decoder or listing failed)."""
    text = exc.strerror if isinstance(exc, OSError) and exc.strerror else first_line(exc)
    warnings.warn(f"skipping unreadable {what} {name}: {text.removeprefix(name + ': ')}", stacklevel=2)


def natural_key(text: str) -> list:
    """Sort key putting 'img2' before 'img10' (digit runs compare as numbers, text case-insensitively)."""
    return [(0, int(part), "") if part.isdigit() else (1, 0, part.casefold()) for part in re.split(r"(\d+)", text) if part]


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether the file name has one of :data:`IMAGE_EXTENSIONS`."""
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _folder_images(root: Path, recursive: bool, regex: re.Pattern | None) -> list[str]:
    """Relative paths of the image files under ``root`` that ``regex`` finds. Unreadable folders and
    image-named entries that are not regular files are skipped with one warning each (a broken link
    stays listed: its read fails with the file's own warning)."""
    found, folders = [], [""]
    while folders:
        rel_dir = folders.pop()
        folder = root / rel_dir
        try:
            with os.scandir(folder) as it:
                entries = list(it)
        except OSError as exc:
            warn_skip(str(folder), exc, "folder")
            continue
        for entry in entries:
            if entry.name.startswith("."):  # editor/OS droppings (.DS_Store, ._img.jpg), never inputs
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if recursive and not entry.is_symlink():  # linked folders are not followed (no loops)
                    folders.append(rel)
            elif is_image_path(entry.name) and (regex is None or regex.search(rel)):
                if not entry.is_file():  # d_type tells: no extra system call for a regular file
                    try:
                        mode = entry.stat().st_mode
                    except OSError:
                        mode = None
                    if mode is not None:
                        warn_skip(str(root / rel), not_regular(str(root / rel), mode))
                        continue
                found.append(rel)
    return found


def _list_file_entries(path: Path) -> list[str]:
    try:
        with open_regular(path) as f:
            lines = f.read().decode("utf-8").splitlines()
    except (UnicodeDecodeError, OSError) as exc:
        raise DvisError(f"{path}: neither an image ({', '.join(IMAGE_EXTENSIONS)}) nor a text list of image paths") from exc
    return [s for s in (line.strip() for line in lines) if s and not s.startswith("#")]


def list_images(src: str | os.PathLike, recursive: bool = True, pattern: str | None = None) -> list[str]:
    """List image paths from a folder, a text file listing image paths, or a single image file.

    Folders are walked (sub-folders too when ``recursive``) and natural-sorted by relative path;
    a list file keeps its order, its paths are relative to the file's folder, blank lines and
    ``#`` comments are skipped, and missing entries are skipped with one warning. Entries that are
    not regular files (named pipes, devices) and unreadable sub-folders are skipped with one warning
    each (:func:`warn_skip`). ``pattern`` is a regular expression searched in each relative path (as
    written in a list file).
    """
    path = Path(src)
    if not path.exists():
        raise DvisError(f"{src}: no such image, folder or list file")
    try:
        regex = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise DvisError(f"bad image pattern {pattern!r}: {exc}") from exc
    if path.is_dir():
        return [str(path / rel) for rel in sorted(_folder_images(path, recursive, regex), key=natural_key)]
    if is_image_path(path):
        return [str(path)] if (regex is None or regex.search(path.name)) and _is_regular(str(path)) else []
    entries = [e for e in _list_file_entries(path) if regex is None or regex.search(e)]
    paths = [str(path.parent / e) for e in entries]  # an absolute entry replaces the parent
    present, missing = [], []
    for p in paths:
        try:
            if _is_regular(p):
                present.append(p)
        except OSError:
            missing.append(p)
    if missing:
        warnings.warn(f"{path}: skipping {len(missing)} missing image(s), first: {missing[0]}", stacklevel=2)
    return present


def _is_regular(path: str) -> bool:
    """Whether ``path`` (links followed) is a regular file; one skip warning when it is something else.
    OSError when it does not exist."""
    mode = os.stat(path).st_mode
    if not stat.S_ISREG(mode):
        warn_skip(path, not_regular(path, mode))
    return stat.S_ISREG(mode)
