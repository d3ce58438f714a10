"""The atlas shows more than text: thumbnails in the correlated-unit and search lists, each unit's
stored bottom-k images (or their names when the images are gone), and a histogram axis with labels
between its ends and a zero mark. Real chromium (Playwright), as tests/atlas/test_atlas.py."""
from __future__ import annotations

import json
import re
import shutil

import numpy as np
import pytest

from dvis.atlas import bottom_data, build_atlas
from dvis.formats.maxes import save_result
from dvis.formats.stats import UnitStats
from dvis.formats.unit_vis import ensure_manifest, write_sprite
from dvis.imaging.datasets import open_source
from dvis.imaging.labels import source_labels
from dvis.models.loading import load_model
from dvis.pipeline.maxes import TrackConfig, track_maxes

from helpers.pipeline import make_images, make_model

pytestmark = pytest.mark.filterwarnings("ignore:skipping unreadable")
K = 3


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The tiny blob model with unit images and statistics that kept each unit's bottom-3 images."""
    root = tmp_path_factory.mktemp("atlas-views")
    model_dir = make_model(root / "models" / "tiny-blob")
    make_images(root / "images", n=24)
    model = load_model(str(model_dir))
    source = open_source(root / "images")
    result = track_maxes(model, source, config=TrackConfig(top=4, batch_size=8, workers=0, progress=False, bottom_k=K),
                         labels=source_labels(source))
    uv = model_dir / "unit_vis"
    save_result(result, uv / "maxes", {"model": str(model_dir), "fingerprint": "fp", "source": str(root / "images")},
                source.names)
    rng = np.random.default_rng(0)
    for layer in result.layers:
        ensure_manifest(uv, model.name, layer)
        for kind, side in (("opt", 64), ("top9", 48)):
            n = result.shapes[layer][0]
            write_sprite(uv, layer, kind, rng.integers(0, 255, (n, side, side, 3), dtype=np.uint8), np.ones(n, bool))
    model = load_model(str(model_dir))
    return model, result, build_atlas(model, root / "site"), root


def _data(out, layer):
    text = (out / layer / "data.js").read_text()
    return json.loads(re.match(r"atlas\.addLayer\((.*)\);\s*$", text, re.S).group(1))


def test_bottom_k_is_written_with_its_images(site):
    model, result, report, root = site
    stats = UnitStats(model.unit_vis_dir / "maxes")
    for layer in result.layers:
        data, ls = _data(report.out, layer), stats.layer(layer)
        bottom = data["bottom"]
        assert len(bottom["units"]) == result.shapes[layer][0] and all(len(u) == K for u in bottom["units"])
        first = bottom["units"][0]
        assert [bottom["names"][i] for i, _ in first] == [open_source(root / "images").names[int(i)] for i in ls.bottom_index[0]]
        assert [v for _, v in first] == sorted(v for _, v in first)  # lowest first
        sprite = report.out / "img" / layer / "bottom.jpg"
        assert sprite.is_file() and bottom["sprite"]["cols"] == K


def test_bottom_data_without_kept_images():
    class NoBottom:
        bottom_index = None
    assert bottom_data(NoBottom(), ["a.png"]) is None


def test_unit_page_shows_thumbnails_bottom_images_and_histogram_axis(site, browser):
    model, result, report, _ = site
    out = report.out
    page = browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((out / "conv2" / "2.html").as_uri())
    page.wait_for_load_state("load")
    body = page.inner_text("main")
    assert f"least-activating images (bottom {K}, lowest first)" in body
    figures = page.eval_on_selector_all(".figs.bottom img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")
    assert len(figures) == K and all(w > 0 for w in figures)
    thumbs = page.eval_on_selector_all(".corr .thumb", "els => els.map(e => e.style.backgroundImage)")
    assert thumbs and all("img/conv2/" in t for t in thumbs)  # each correlated unit's optimized image
    labels = page.eval_on_selector_all("svg.hist text", "els => els.map(e => e.textContent)")
    assert len(labels) >= 3  # the ends and labels between them (or the zero mark)
    hist = _data(out, "conv2")["stats"]["hist"][2]
    from dvis.formats.stats import CENTER
    if hist[0] <= CENTER < hist[0] + len(hist[1]):
        assert "0" in labels and page.eval_on_selector_all("svg.hist line.zero", "els => els.length") == 1
    assert errors == []

    index = browser.new_page()
    index.goto((out / "index.html").as_uri())
    index.fill("#q", "conv2:2")
    assert index.eval_on_selector_all("#results .thumb", "els => els.length") == 1
    index.fill("#q", "b")
    n = index.eval_on_selector_all("#results a", "els => els.length")
    assert n > 0 and index.eval_on_selector_all("#results .thumb", "els => els.length") == n


def test_bottom_names_only_when_the_images_are_gone(site, tmp_path, browser):
    model, result, _, root = site
    moved = tmp_path / "moved"
    shutil.move(str(root / "images"), moved)
    try:
        report = build_atlas(model, tmp_path / "site")
    finally:
        shutil.move(str(moved), root / "images")
    data = _data(report.out, "conv2")
    assert "sprite" not in data["bottom"] and not (report.out / "img" / "conv2" / "bottom.jpg").exists()
    page = browser.new_page()
    page.goto((report.out / "conv2" / "0.html").as_uri())
    text = page.inner_text("main")
    assert "least-activating images" in text and "names only" in text
    assert data["bottom"]["names"][data["bottom"]["units"][0][0][0]] in text
