"""The web tests' server: the tiny model behind ``dvis serve`` on a free loopback port (PNG frames,
so the page's pixels equal the server's)."""
import pytest

from helpers.web import Server


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path / "srv", frame_format="png")
    yield s
    s.stop()
