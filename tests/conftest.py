"""Test-wide isolation: the user's data and config folders (dvis.formats.paths) point into a fresh temporary
folder, so no test reads or writes a developer's computed unit images or user settings_local.py.
Subprocesses started by tests inherit it through the environment."""
from __future__ import annotations

import os
import shutil
import tempfile

_HOME: list[str] = []


def pytest_configure(config):
    home = tempfile.mkdtemp(prefix="dvis-test-home-")
    _HOME.append(home)
    os.environ["DVIS_DATA_DIR"] = os.path.join(home, "data")
    os.environ["DVIS_CONFIG_DIR"] = os.path.join(home, "config")


def pytest_unconfigure(config):
    for home in _HOME:
        shutil.rmtree(home, ignore_errors=True)
