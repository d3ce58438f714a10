"""Test-wide isolation and shared fixtures.

The user's data and config folders (dvis.formats.paths) point into a fresh temporary folder, so no
test reads or writes a developer's computed unit images or user settings_local.py; subprocesses
started by tests inherit it through the environment. ``browser`` is Debian's chromium under
Playwright (skipped without it, except under CI: tests/helpers/system.py).
"""
from __future__ import annotations

import os
import shutil
import tempfile

import pytest

from helpers.system import require_programs

_HOME: list[str] = []


def pytest_configure(config):
    home = tempfile.mkdtemp(prefix="dvis-test-home-")
    _HOME.append(home)
    os.environ["DVIS_DATA_DIR"] = os.path.join(home, "data")
    os.environ["DVIS_CONFIG_DIR"] = os.path.join(home, "config")


def pytest_unconfigure(config):
    for home in _HOME:
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    """Debian's chromium driven by Playwright (never a downloaded browser), with a fake camera."""
    from playwright import sync_api

    exe = require_programs("chromium")["chromium"]
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=exe, args=[
            "--no-sandbox", "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream"])
        yield b
        b.close()


@pytest.fixture(scope="module")
def tiny_blob(tmp_path_factory):
    """(root, model folder, LoadedModel, ImageSource) of the tiny-blob model (tests/helpers/pipeline.py)
    and 24 blob images in class folders, with bad files: the unit statistics tests' run."""
    from dvis.imaging.datasets import open_source
    from dvis.models.loading import load_model
    from helpers.pipeline import make_images, make_model

    root = tmp_path_factory.mktemp("stats")
    model_dir = make_model(root / "models" / "tiny-blob")
    make_images(root / "images", n=24, bad=True)
    return root, model_dir, load_model(str(model_dir)), open_source(root / "images")
