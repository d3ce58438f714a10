"""Tests that drive system programs skip with one line off CI and fail under CI (tests/helpers/system.py)."""
from __future__ import annotations

import pytest

from helpers.system import require_programs


def test_missing_program_skips_with_the_apt_line_off_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no program is found
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=r"^needs Xvfb, import \(apt-get install xvfb imagemagick\)$"):
        require_programs("Xvfb", "import")


def test_missing_program_fails_under_ci(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="needs chromium .*required under CI"):
        require_programs("chromium")


def test_present_programs_give_their_paths(monkeypatch, tmp_path):
    exe = tmp_path / "xdotool"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    assert require_programs("xdotool") == {"xdotool": str(exe)}
