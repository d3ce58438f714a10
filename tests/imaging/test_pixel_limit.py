"""One pixel limit (dvis.imaging.images.MAX_PIXELS), refused the same way by every decoder entry
point: read_image (files and bytes; camera frames go through it too), the pipeline's fast decoders
(cpu and gpu item paths), image sources and web uploads; from the header, before decoding."""
from __future__ import annotations

import io
import struct
import warnings

import numpy as np
import pytest
from PIL import Image

from dvis.errors import DvisError
from dvis.imaging import images
from dvis.imaging.datasets import open_source
from dvis.imaging.decode import Decoder, decode_cpu
from dvis.imaging.images import MAX_PIXELS, read_image

from helpers.badfiles import _png_header_only


def jpeg_header_only(width: int, height: int) -> bytes:
    """A baseline JPEG whose frame header claims ``width`` x ``height`` (3 components), no data."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"".join(bytes([i, 0x11, 0]) for i in (1, 2, 3))
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def entry_points(data: bytes, name: str, folder):
    """Each way an input image is decoded -> the one-line error it gives (or its skip warning)."""
    (folder / name).write_bytes(data)
    source = open_source(folder)
    i = source.names.index(name)

    def item(mode):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            out = Decoder(source, (16, 16), 3, mode).item(i)
        assert out[-2] is False
        (w,) = [w for w in seen if "skipping unreadable image" in str(w.message)]
        return str(w.message)

    def raised(fn, *args, **kwargs):
        with pytest.raises(DvisError) as info:
            fn(*args, **kwargs)
        return str(info.value)

    from dvis.web.uploads import decode_upload

    return {
        "read_image(path)": raised(read_image, folder / name),
        "read_image(bytes)": raised(read_image, data, name=name),
        "decode_cpu": raised(decode_cpu, data, (16, 16), 3, name),
        "ImageSource.load": raised(source.load, i),
        "Decoder cpu item": item("cpu"),
        "Decoder gpu item": item("gpu"),
        "web upload": raised(decode_upload, data, name, 4096),
    }


@pytest.mark.parametrize("kind", ["jpeg", "png"])
@pytest.mark.parametrize("side", [int(MAX_PIXELS ** 0.5) + 1, 20000])
def test_a_header_over_the_limit_is_refused_by_every_entry_point(tmp_path, kind, side):
    """Just over the limit, and over Pillow's own guard (which fires before ours on a PNG)."""
    data = jpeg_header_only(side, side) if kind == "jpeg" else _png_header_only(side, side)
    name = f"bomb.{'jpg' if kind == 'jpeg' else 'png'}"
    for where, text in entry_points(data, name, tmp_path).items():
        assert "\n" not in text and name in text and "over the pixel limit" in text, (where, text)
        if side < 20000 or kind == "jpeg" and where in ("decode_cpu", "Decoder cpu item", "Decoder gpu item"):
            assert f"{side}x{side} pixels, over the pixel limit" in text, (where, text)


def test_every_entry_point_reads_the_same_limit(tmp_path, monkeypatch):
    """A real 48x40 JPEG under a 1000-pixel limit: the fast JPEG decoders (simplejpeg, decode_jpeg,
    draft) refuse it as read_image does, so none has a limit of its own."""
    data = small_jpeg()
    assert read_image(data).shape == (40, 48, 3) and decode_cpu(data, (16, 16)).shape == (3, 16, 16)
    monkeypatch.setattr(images, "MAX_PIXELS", 1000)
    for where, text in entry_points(data, "small.jpg", tmp_path).items():
        assert "48x40 pixels, over the pixel limit" in text and "small.jpg" in text, (where, text)

