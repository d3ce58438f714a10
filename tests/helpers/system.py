"""System programs that some tests drive (a virtual X display, a browser): present, skipped with one
line naming what is missing on a developer's machine, or failed under CI, which must run them all."""
from __future__ import annotations

import os
import shutil

import pytest

#: Program -> the Debian package that provides it (.ci/run installs them all).
PACKAGES = {"Xvfb": "xvfb", "xdotool": "xdotool", "import": "imagemagick", "chromium": "chromium"}


def in_ci() -> bool:
    """True under a CI runner (``CI=true``, as GitHub Actions and .ci/run's runner set it)."""
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def require_programs(*programs: str) -> dict[str, str]:
    """{program: path} of ``programs``; when one is missing: fail under CI, else skip the test."""
    found = {p: shutil.which(p) for p in programs}
    missing = [p for p, path in found.items() if path is None]
    if missing:
        apt = " ".join(dict.fromkeys(PACKAGES[p] for p in missing))
        message = f"needs {', '.join(missing)} (apt-get install {apt})"
        if in_ci():
            pytest.fail(f"{message}: required under CI", pytrace=False)
        pytest.skip(message)
    return found  # type: ignore[return-value]
