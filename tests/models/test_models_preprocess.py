"""LoadedModel.preprocess / normalize / deprocess: shapes, gray/RGBA/odd sizes, round trips."""
import cv2
import numpy as np
import pytest
import torch

from dvis.errors import DvisError
from dvis.models.loading import load_model
from dvis.imaging.preprocess import prepare_image
from helpers.models import EXAMPLE

pytestmark = [
    pytest.mark.filterwarnings("ignore:model .* random init:UserWarning"),
    pytest.mark.filterwarnings("ignore:model .* missing checkpoint:UserWarning"),  # zf-cifar10 may be mid-training
]


@pytest.fixture(scope="module")
def rgb_model():
    return load_model(None, weights="none")  # zf-cifar10: 32x32 RGB, CIFAR mean/std


@pytest.fixture(scope="module")
def gray_model():
    return load_model(EXAMPLE)  # 48x64 (h, w) grayscale, mean 0.5 std 0.25


@pytest.mark.parametrize("shape", [(32, 32, 3), (37, 91, 3), (5, 3, 3), (480, 33, 4), (29, 30), (1, 1, 3)])
def test_preprocess_any_image_to_input_size(rgb_model, gray_model, shape):
    img = np.random.default_rng(0).integers(0, 256, shape, dtype=np.uint8)
    for m in (rgb_model, gray_model):
        x = m.preprocess(img)
        assert x.shape == (1, m.channels, *m.input_size) and x.dtype == torch.float32
        assert x.device == m.device
        out = m.deprocess(x)
        assert out.shape == (*m.input_size, 3) and out.dtype == np.uint8


def test_round_trip_at_input_size_is_exact(rgb_model):
    img = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    x = rgb_model.preprocess(img)
    mean = torch.tensor(rgb_model.mean).view(1, 3, 1, 1)
    std = torch.tensor(rgb_model.std).view(1, 3, 1, 1)
    torch.testing.assert_close(x, (torch.from_numpy(img).permute(2, 0, 1)[None] / 255 - mean) / std)
    np.testing.assert_array_equal(rgb_model.deprocess(x), img)
    np.testing.assert_array_equal(rgb_model.deprocess(x[0]), img)  # CxHxW too


def test_resize_keeps_content(rgb_model):
    big = np.zeros((128, 96, 3), np.uint8)  # quadrants: 4x3 pixels of the original per output pixel
    big[:64, :48], big[:64, 48:], big[64:, :48], big[64:, 48:] = [255, 0, 0], [0, 255, 0], [0, 0, 255], [9, 99, 199]
    out = rgb_model.deprocess(rgb_model.preprocess(big))
    np.testing.assert_array_equal(out[:16, :16], np.broadcast_to([255, 0, 0], (16, 16, 3)))
    np.testing.assert_array_equal(out[16:, 16:], np.broadcast_to([9, 99, 199], (16, 16, 3)))
    up = rgb_model.deprocess(rgb_model.preprocess(big[::16, ::16]))  # 8x6 enlarged
    assert (up[0, 0] == [255, 0, 0]).all() and (up[-1, -1] == [9, 99, 199]).all()


def test_gray_model_gets_luminance_and_rectangular_size(gray_model):
    img = np.zeros((96, 128, 3), np.uint8)
    img[:, :64] = [255, 0, 0]
    img[:, 64:] = [0, 255, 0]
    x = gray_model.preprocess(img)
    assert x.shape == (1, 1, 48, 64)
    out = gray_model.deprocess(x)
    assert out.shape == (48, 64, 3)
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
    assert abs(int(out[10, 5, 0]) - 76) <= 1 and abs(int(out[10, 60, 0]) - 150) <= 1  # 0.299 R, 0.587 G
    gray2d = np.full((10, 20), 200, np.uint8)
    np.testing.assert_array_equal(gray_model.deprocess(gray_model.preprocess(gray2d)), 200)


def test_rgba_is_composited_before_preprocessing(rgb_model):
    rgba = np.zeros((32, 32, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[:, 16:, 3] = 255  # left half transparent -> white, right half opaque red
    out = rgb_model.deprocess(rgb_model.preprocess(rgba))
    np.testing.assert_array_equal(out[:, :16], 255)
    np.testing.assert_array_equal(out[:, 16:], np.broadcast_to([255, 0, 0], (32, 16, 3)))


def test_normalize_is_the_batched_path_of_preprocess(rgb_model):
    imgs = np.random.default_rng(2).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    batch = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() / 255
    one_by_one = torch.cat([rgb_model.preprocess(i) for i in imgs])
    torch.testing.assert_close(rgb_model.normalize(batch), one_by_one)
    mean, std = rgb_model._mean_t.view(1, -1, 1, 1), rgb_model._std_t.view(1, -1, 1, 1)
    kept = batch.clone()
    assert torch.equal(rgb_model.normalize(batch), (batch - mean) / std) and torch.equal(batch, kept)
    fresh = batch.clone()
    assert torch.equal(rgb_model.normalize(fresh, inplace=True), (batch - mean) / std)
    assert torch.equal(fresh, (batch - mean) / std)  # the pipelines' fresh batches are overwritten
    x = batch.clone().requires_grad_()
    rgb_model.normalize(x).sum().backward()  # optimize differentiates through it
    torch.testing.assert_close(x.grad, (1 / std).expand_as(x))


def test_bad_shapes_are_one_line_errors(rgb_model):
    with pytest.raises(DvisError, match="Nx3xHxW"):
        rgb_model.normalize(torch.zeros(2, 1, 32, 32))
    with pytest.raises(DvisError, match="one image"):
        rgb_model.deprocess(torch.zeros(2, 3, 32, 32))
    with pytest.raises(DvisError, match="shape"):
        rgb_model.preprocess(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(DvisError, match="dtype"):
        rgb_model.preprocess(np.zeros((4, 4, 3), np.float64))


def test_prepare_image_pure():
    out = prepare_image(np.full((10, 10, 3), 9, np.uint8), (3, 7), 3)
    assert out.shape == (3, 7, 3) and (out == 9).all()
    assert prepare_image(np.full((10, 10), 9, np.uint8), (4, 4), 1).shape == (4, 4, 1)


@pytest.mark.parametrize("shape,size", [((375, 500, 3), (224, 224)), ((333, 500, 3), (224, 224)), ((64, 64, 3), (32, 32)),
                                        ((96, 64, 3), (32, 32)), ((97, 61), (32, 30)), ((50, 50, 3), (50, 21))])
def test_area_resize_is_opencv_uint8_area(shape, size):
    """The float32 kernel used for speed gives OpenCV's uint8 INTER_AREA result pixel for pixel,
    on noise and on smooth images (the sums' halves, where rounding could differ)."""
    from dvis.imaging.preprocess import area_resize

    rng = np.random.default_rng(1)
    noise = rng.integers(0, 256, shape, dtype=np.uint8)
    ramp = ((3 * np.arange(shape[0])[:, None] + np.arange(shape[1])) % 256).astype(np.uint8)
    ramp = ramp if len(shape) == 2 else np.repeat(ramp[:, :, None], 3, axis=2)
    for img in (noise, ramp, np.full(shape, 255, np.uint8)):
        want = cv2.resize(img, size[::-1], interpolation=cv2.INTER_AREA)
        np.testing.assert_array_equal(area_resize(img, size), want)
