"""Decoders: the cpu choice per file and its tolerance against Pillow, the gpu path's batching,
per-file fallback and device-side resize (run here on the CPU device), and --decode resolution."""
from __future__ import annotations

import io
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dvis.imaging.datasets import ImageSource
from dvis.imaging.decode import TOLERANCE, Decoder, decode_cpu, jpeg_header, resize_batch, resolve
from dvis.errors import DvisError
from dvis.imaging.images import read_image
from dvis.imaging.preprocess import prepare_image

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from imagenet_like import write_images  # noqa: E402


def reference(data: bytes, size, channels=3) -> np.ndarray:
    return prepare_image(read_image(data), size, channels).transpose(2, 0, 1)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    return [p.read_bytes() for p in write_images(tmp_path_factory.mktemp("photos"), 12)]


def within(out, ref, kind):
    d = np.abs(out.astype(int) - ref.astype(int))
    top, mean = TOLERANCE[kind]
    assert d.max() <= top and d.mean() <= mean, (kind, d.max(), d.mean())
    return d


@pytest.fixture(params=["simplejpeg", "decode_jpeg"])
def jpeg_decoder(request, monkeypatch):
    """The cpu path's JPEG decoder: simplejpeg (the `fast` extra, which the test extra installs)
    or, without it, torchvision's decode_jpeg."""
    import dvis.imaging.decode

    if request.param == "simplejpeg":
        if dvis.imaging.decode.simplejpeg is None:
            pytest.skip("simplejpeg (the fast extra) is not installed")
    else:
        monkeypatch.setattr(dvis.imaging.decode, "simplejpeg", None)
    return request.param


@pytest.mark.parametrize("size", [(224, 224), (227, 227), (300, 200), (600, 640)])
def test_cpu_decoder_is_exact_below_eight_times_the_input(photos, size, jpeg_decoder):
    for data in photos:
        within(decode_cpu(data, size), reference(data, size), "exact")


@pytest.mark.parametrize("size", [(32, 32), (40, 60), (46, 46)])
def test_draft_decoding_of_large_jpegs_stays_within_tolerance(photos, size):
    diffs = [within(decode_cpu(data, size), reference(data, size), "draft") for data in photos]
    assert max(d.max() for d in diffs) > 1  # draft() was really used (else this tests nothing)


def test_header_parse_and_exif_rotation(tmp_path, jpeg_decoder):
    img = np.zeros((40, 90, 3), np.uint8)
    img[:, :30] = 255  # bright left third
    exif = Image.Exif()
    exif[0x0112] = 6  # stored landscape, shown rotated 90 degrees clockwise
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "JPEG", quality=95, exif=exif)
    data = buf.getvalue()
    head = jpeg_header(data)
    assert (head.height, head.width, head.components, head.orientation) == (40, 90, 3, 6)
    out = decode_cpu(data, (90, 40))
    within(out, reference(data, (90, 40)), "exact")
    assert out[:, :30].mean() > 200 and out[:, 60:].mean() < 50  # rotated: bright part now on top
    gray = io.BytesIO()
    Image.fromarray(img[:, :, 0]).save(gray, "JPEG")
    assert jpeg_header(gray.getvalue()).components == 1
    within(decode_cpu(gray.getvalue(), (20, 20)), reference(gray.getvalue(), (20, 20)), "exact")
    assert jpeg_header(b"\x89PNG\r\n") is None and jpeg_header(b"\xff\xd8\xff\xe0ab") is None


def test_cmyk_png_and_corrupt_files_take_the_reference_path():
    rgb = np.random.default_rng(0).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    png, cmyk = io.BytesIO(), io.BytesIO()
    Image.fromarray(rgb).save(png, "PNG")
    Image.fromarray(rgb).convert("CMYK").save(cmyk, "JPEG")
    for data in (png.getvalue(), cmyk.getvalue()):
        assert np.array_equal(decode_cpu(data, (20, 30)), reference(data, (20, 30)))
    with pytest.raises(DvisError):
        decode_cpu(b"\xff\xd8\xff\xe0 not a jpeg", (20, 20))
    with pytest.raises(DvisError, match="empty"):
        decode_cpu(b"", (20, 20))


@pytest.mark.parametrize("size", [(224, 224), (37, 100), (500, 700)])
def test_device_resize_matches_opencv(photos, size):
    for data in photos[:4]:
        rgb = read_image(data)
        x = torch.from_numpy(rgb.copy()).permute(2, 0, 1)[None]
        for channels in (3, 1):
            out = resize_batch(x, size, channels)[0].numpy()
            kind = "exact" if rgb.shape[0] >= size[0] and rgb.shape[1] >= size[1] else "enlarge"
            within(out, prepare_image(rgb, size, channels).transpose(2, 0, 1), kind)


def test_gpu_path_batches_jpegs_and_falls_back_per_file(photos, tmp_path):
    """The gpu path on the CPU device (decode_jpeg takes a device; CI has no GPU): eligible JPEGs
    travel as bytes and are decoded in one batch, the rest are decoded in the worker, broken
    JPEGs fall back file by file and unreadable files are skipped with a warning."""
    rgb = np.random.default_rng(1).integers(0, 255, (50, 60, 3), dtype=np.uint8)
    png = io.BytesIO()
    Image.fromarray(rgb).save(png, "PNG")
    broken = photos[1][:len(photos[1]) // 3]  # truncated: header fine, data cut
    blobs = [photos[0], png.getvalue(), broken, b"\xff\xd8\xff\xe0garbage", photos[2], photos[3][:200]]
    names = [f"f{i}.jpg" for i in range(len(blobs))]
    source = ImageSource("mem", "list", names, _blobs=blobs)
    size = (96, 80)
    dec = Decoder(source, size, 3, "gpu")
    with pytest.warns(UserWarning, match="f3.jpg"):  # no frame header: rejected in the worker
        items = [dec.item(i) for i in range(len(blobs))]
    assert [len(it[1]) > 0 for it in items] == [True, False, True, False, True, True]
    assert items[3][2] is False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, ok, index = dec.finish(dec.collate(items), "cpu")
    assert index.tolist() == list(range(6))
    for j in (0, 1, 4):
        assert ok[j]
        within(images[j].numpy(), reference(blobs[j], size), "exact")
    assert not ok[3] and not ok[5]
    assert any("f5.jpg" in str(w.message) for w in caught)
    # The truncated JPEG: whatever libjpeg recovers, the cpu path gives the same answer.
    if ok[2]:
        within(images[2].numpy(), decode_cpu(broken, size), "exact")
    cpu = Decoder(source, size, 3, "cpu")
    from torch.utils.data import default_collate
    images_cpu, ok_cpu, _ = cpu.finish(default_collate([cpu.item(i) for i in (0, 1, 4)]), "cpu")
    assert ok_cpu.all() and torch.equal(images_cpu, images[[0, 1, 4]])


def test_resolve_decode_mode():
    assert resolve("cpu", "cpu") == "cpu" and resolve("auto", "cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(DvisError, match="CUDA"):
            resolve("gpu", "cpu")
    with pytest.raises(DvisError, match="--decode"):
        resolve("fast", "cpu")
