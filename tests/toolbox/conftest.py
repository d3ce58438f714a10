"""The toolbox tests' fixtures: a virtual X display for the real-window tests."""
from __future__ import annotations

import os
import subprocess

import pytest

from helpers.system import require_programs


@pytest.fixture
def display():
    """A fresh Xvfb display (":N"); the tests drive it with xdotool and capture it with ImageMagick."""
    require_programs("Xvfb", "xdotool", "import")
    read_fd, write_fd = os.pipe()
    xvfb = subprocess.Popen(["Xvfb", "-displayfd", str(write_fd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp"],
                            pass_fds=(write_fd,), stderr=subprocess.DEVNULL)
    os.close(write_fd)
    with os.fdopen(read_fd) as f:
        number = f.readline().strip()  # Xvfb writes its display number once it accepts clients
    assert number, "Xvfb did not start"
    yield f":{number}"
    xvfb.terminate()
    xvfb.wait(timeout=10)
