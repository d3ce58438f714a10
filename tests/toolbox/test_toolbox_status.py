"""The status line's rate (no "0 fps" where frames are drawn on demand) and the help's screenshot line."""
from types import SimpleNamespace

from dvis.toolbox.bindings import ACTION_HELP
from dvis.toolbox.painting import Painting


def _rate(fps: float, net: str) -> str:
    return Painting._rate_text(SimpleNamespace(fps=lambda: fps), net)


def test_rate_text_shows_the_loop_rate_only_while_it_runs():
    assert _rate(60.2, ", net 4/s") == " | 60 fps, net 4/s"
    assert _rate(0.0, ", net 0.6/s") == " | net 0.6/s"  # the web page between frames: no "0 fps"
    assert _rate(0.4, "") == ""


def test_screenshot_help_holds_for_window_and_page():
    text = ACTION_HELP["screenshot"]
    assert "screenshot_dir" in text and "web page" in text and text != "save a PNG screenshot (the page downloads it)"
