"""The example notebook in a real JupyterLab (tests/helpers/jupyter.py), opened in Debian's chromium."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.jupyter import JupyterLab

NOTEBOOK = Path(__file__).resolve().parents[2] / "examples" / "notebook.ipynb"


@pytest.fixture(scope="module")
def lab(tmp_path_factory, browser):
    pytest.importorskip("anywidget")
    server = JupyterLab(tmp_path_factory.mktemp("lab"), [NOTEBOOK])
    yield server
    server.stop()
