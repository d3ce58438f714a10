"""The notebook API outside a browser: show_image's conversions, unit_card's contents, what model=
takes, and a widget's threads (none left after close)."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest
import torch
from torch import nn

import dvis
from dvis.errors import DvisError, LayerNotFoundError
from dvis.notebook.cards import unit_card
from dvis.notebook.images import show_image, to_rgb
from dvis.notebook.models import as_model, preprocessing_of

pytest.importorskip("anywidget")


def test_show_image_takes_images_gradients_and_maps():
    img = np.zeros((32, 32, 3), np.uint8)
    img[4:8] = 200
    assert np.array_equal(to_rgb(img), img)
    assert to_rgb(img[..., 0]).shape == (32, 32, 3)
    grad = torch.zeros(1, 3, 32, 32)
    grad[0, :, 10, 10] = 1.0
    rgb = to_rgb(grad)
    assert rgb.shape == (32, 32, 3) and rgb[10, 10].max() == 255 and rgb[0, 0].tolist() == [128, 128, 128]
    heat = to_rgb(np.linspace(0, 1, 64).reshape(8, 8))
    assert heat.shape == (8, 8, 3) and not np.array_equal(heat[0, 0], heat[-1, -1])
    pic = show_image([img, grad], title="two")
    assert pic.array.shape[0] == 160  # 32 px enlarged by 5, square pixels
    assert pic._repr_png_()[:8] == b"\x89PNG\r\n\x1a\n" and "two" in pic._repr_html_()
    assert show_image(img)._repr_html_() is None  # no title: the PNG alone
    with pytest.raises(DvisError, match="cannot show"):
        to_rgb(np.zeros((2, 3, 4, 5)))


def test_unit_card_of_the_default_model():
    card = unit_card("zf-cifar10", "conv5", 3)
    assert set(card.images) >= {"opt", "top9", "deconv"}
    assert all(a.dtype == np.uint8 and a.ndim == 3 for a in card.images.values())
    assert card.stats["activity"] in ("active", "rare", "dead (never positive)") and "class selectivity" in card.stats
    assert len(card.top) == 9 and card.correlated
    page = card._repr_html_()
    assert page.count('src="data:image/png;base64,') == len(card.images) and "conv5:4" in page
    linked = unit_card("zf-cifar10", "conv5", 3, atlas="atlas")._repr_html_()
    assert 'href="atlas/conv5/3.html"' in linked
    with pytest.raises(LayerNotFoundError, match="no layer"):
        unit_card("zf-cifar10", "conv9", 0)
    with pytest.raises(DvisError, match="outside"):
        unit_card("zf-cifar10", "conv5", 10_000)


def test_model_takes_a_module_with_its_preprocessing():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    model = as_model(net, preprocess={"input_size": (20, 20), "mean": (0.5,), "std": (0.25,)}, labels=["a", "b"])
    assert model.input_size == (20, 20) and model.channels == 1 and model.std == (0.25,)
    assert model.layers and model.labels == ["a", "b"] and not net.training
    assert model.net[0].weight.requires_grad  # the user's parameters are left as they are
    from torchvision import transforms
    pre = transforms.Compose([transforms.Resize(40), transforms.CenterCrop(36), transforms.ToTensor(),
                              transforms.Normalize((0.1, 0.2, 0.3), (0.4, 0.5, 0.6))])
    assert preprocessing_of(pre) == {"input_size": (36, 36), "mean": (0.1, 0.2, 0.3), "std": (0.4, 0.5, 0.6)}
    with pytest.raises(DvisError, match="only for an nn.Module"):
        as_model("zf-cifar10", labels=["x"])
    with pytest.raises(DvisError, match="expected a name"):
        as_model(42)


def test_widget_close_leaves_no_thread_or_hook():
    widget = dvis.show(images=[np.full((40, 40, 3), 90, np.uint8)])
    try:
        assert {t.name for t in threading.enumerate()} >= {"dvis-notebook-loop", "dvis-web-core_0"}
        files = widget.toolbox.files
        assert files.paths[-1] == "image 0" and files.read(len(files) - 1)[1].shape == (40, 40, 3)
        assert "startClient" in widget._esm and json.dumps('class="dvis-view"')[1:-1] in widget._esm  # index.html's
    finally:
        widget.close()
    assert not [t.name for t in threading.enumerate() if t.name.startswith("dvis")]
    assert not any(m._forward_hooks or m._forward_pre_hooks or m._backward_hooks for m in widget.model.net.modules())
