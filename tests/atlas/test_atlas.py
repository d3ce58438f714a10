"""``dvis atlas``: the static site in a real browser (Debian chromium driven by Playwright), on a
synthetic model with its own unit images and statistics, plus the shipped zf-cifar10."""
from __future__ import annotations

import subprocess
import sys
from collections import deque
from pathlib import Path
from urllib.parse import urldefrag, urlparse

import numpy as np
import pytest

from dvis.atlas import build_atlas
from dvis.imaging.datasets import open_source
from dvis.errors import DvisError
from dvis.pipeline.maxes import TrackConfig, track_maxes
from dvis.formats.maxes import save_result
from dvis.models.loading import load_model
from dvis.formats.stats import UnitStats
from dvis.imaging.labels import source_labels
from dvis.formats.unit_vis import ensure_manifest, write_sprite

from helpers.pipeline import make_images, make_model  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.filterwarnings("ignore:skipping unreadable")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """A tiny model folder with sprites for every layer (opt, top9, deconv; conv2 unit 1 without an
    optimized image) and unit statistics over labelled images, and its atlas."""
    root = tmp_path_factory.mktemp("atlas")
    model_dir = make_model(root / "models" / "tiny-blob")
    make_images(root / "images", n=24)
    model = load_model(str(model_dir))
    source = open_source(root / "images")
    result = track_maxes(model, source, config=TrackConfig(top=4, batch_size=8, workers=0, progress=False),
                         labels=source_labels(source))
    uv = model_dir / "unit_vis"
    save_result(result, uv / "maxes", {"model": str(model_dir), "fingerprint": "fp"}, source.names)
    rng = np.random.default_rng(0)
    for layer in result.layers:
        n = result.shapes[layer][0]
        ensure_manifest(uv, model.name, layer)
        for kind, side in (("opt", 64), ("top9", 48), ("deconv", 48)):
            present = np.ones(n, bool)
            if layer == "conv2" and kind == "opt":
                present[1] = False
            write_sprite(uv, layer, kind, rng.integers(0, 255, (n, side, side, 3), dtype=np.uint8), present)
    model = load_model(str(model_dir))
    report = build_atlas(model, root / "site")
    return model, result, report


def open_page(browser, url: str):
    page = browser.new_page()
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(url)
    page.wait_for_load_state("load")
    return page, errors


def images_loaded(page) -> list[int]:
    return page.eval_on_selector_all("img", "els => els.map(e => e.complete ? e.naturalWidth : 0)")


def test_index_unit_page_search_and_links(site, browser):
    model, result, report = site
    out = report.out
    assert report.pages == 1 + 4 + sum(result.shapes[n][0] for n in result.layers)
    page, errors = open_page(browser, (out / "index.html").as_uri())
    assert page.title() == "tiny-blob unit atlas"
    text = page.inner_text("table")
    assert "conv1" in text and "fc" in text
    assert errors == []

    # Search by class: every unit whose top-image majority class is "b" is listed.
    stats = UnitStats(model.unit_vis_dir / "maxes")
    expected = {f"{n}/{u}.html" for n in result.layers for u in range(result.shapes[n][0])
                if stats.layer(n).top_classes(u, 1) and stats.layer(n).top_classes(u, 1)[0][0] == 1}
    assert expected
    page.fill("#q", "b")
    links = page.eval_on_selector_all("#results a", "els => els.map(e => e.getAttribute('href'))")
    assert set(links) == expected
    page.fill("#q", "conv2:2")
    assert page.eval_on_selector_all("#results a", "els => els.map(e => e.getAttribute('href'))") == ["conv2/2.html"]
    page.click("#results a")
    page.wait_for_load_state("load")
    assert page.url.endswith("/conv2/2.html")
    widths = images_loaded(page)
    assert len(widths) == 3 and all(w > 0 for w in widths)  # opt, top9, deconv
    body = page.inner_text("main")
    assert "conv2:2" in body and "classes of the top images" in body and "most correlated" in body
    assert page.eval_on_selector("svg.hist", "e => e.querySelectorAll('rect').length") > 0
    # A unit without an optimized image shows the other two.
    p2, e2 = open_page(browser, (out / "conv2" / "1.html").as_uri())
    assert len(images_loaded(p2)) == 2 and all(w > 0 for w in images_loaded(p2)) and not e2
    # Dead unit page says so.
    p3, e3 = open_page(browser, (out / "conv1" / "1.html").as_uri())
    assert "dead" in p3.inner_text("main") and not e3
    assert errors == []

    # Following links from the index reaches every layer (and every unit) with no console errors.
    seen, queue = set(), deque([(out / "index.html").as_uri()])
    crawl = browser.new_page()
    crawl_errors: list[str] = []
    crawl.on("pageerror", lambda e: crawl_errors.append(str(e)))
    crawl.on("console", lambda m: crawl_errors.append(m.text) if m.type == "error" else None)
    while queue:
        url = queue.popleft()
        if url in seen:
            continue
        seen.add(url)
        crawl.goto(url)
        for href in crawl.eval_on_selector_all("a[href]", "els => els.map(e => e.href)"):
            href = urldefrag(href)[0].split("?")[0]
            if href.startswith("file://") and Path(urlparse(href).path).is_relative_to(out):
                assert Path(urlparse(href).path).is_file(), href
                queue.append(href)
    paths = {Path(urlparse(u).path).relative_to(out).as_posix() for u in seen}
    for layer in result.layers:
        assert f"{layer}/index.html" in paths
        assert {f"{layer}/{u}.html" for u in range(result.shapes[layer][0])} <= paths
    assert crawl_errors == []


def test_atlas_refuses_a_foreign_folder_and_rebuilds_its_own(site, tmp_path):
    model, _, report = site
    (tmp_path / "mine.txt").write_text("user data")
    with pytest.raises(DvisError, match="not an atlas"):
        build_atlas(model, tmp_path)
    again = build_atlas(model, report.out)  # an atlas folder is rebuilt in place
    assert again.pages == report.pages and (report.out / "conv1" / "0.html").is_file()


def test_shipped_zf_cifar10_atlas(browser, tmp_path):
    r = subprocess.run([sys.executable, "-m", "dvis", "atlas", "zf-cifar10", "--out", str(tmp_path / "zf")],
                       cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "pages" in r.stdout
    page, errors = open_page(browser, (tmp_path / "zf" / "conv5" / "7.html").as_uri())
    widths = images_loaded(page)
    assert len(widths) >= 3 and all(w > 0 for w in widths)
    assert errors == []
    index, errors = open_page(browser, (tmp_path / "zf" / "index.html").as_uri())
    if "No unit statistics" not in index.inner_text("body"):
        index.fill("#q", "cat")
        assert index.eval_on_selector_all("#results a", "els => els.length") > 0
    assert errors == []


def test_atlas_header_is_a_format_header(site, tmp_path, monkeypatch):
    """atlas.json is written through dvis.formats.atomic (a kill leaves the old header or the new
    one) and read back as a versioned format header: a broken one is one line, --force rebuilds."""
    import json

    from dvis.formats import atomic

    model, _, report = site
    out = tmp_path / "site"
    written = []
    real = atomic.atomic_write_text
    monkeypatch.setattr("dvis.atlas.atomic_write_text", lambda p, t: (written.append(p.name), real(p, t))[1])
    build_atlas(model, out)
    assert written == ["atlas.json"]
    assert json.loads((out / "atlas.json").read_text())["format"] == "dvis-atlas"
    (out / "atlas.json").write_text("{broken")
    with pytest.raises(DvisError, match=r"atlas.json: unreadable") as info:
        build_atlas(model, out)
    assert "\n" not in str(info.value)
    assert build_atlas(model, out, force=True).pages == report.pages
    assert json.loads((out / "atlas.json").read_text())["layers"] == model.layers
