"""release_free_heap gives fragmented free heap back to the OS (the toolbox calls it from tick)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dvis.memory import release_free_heap


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim and /proc are Linux's")
def test_release_free_heap_returns_fragmented_free_memory():
    release_free_heap()
    blocks = [bytearray(2000) for _ in range(100_000)]  # ~200 MB in malloc'd blocks (over pymalloc's 512 B)
    keep = blocks[::200]  # a few live blocks pin the heap: freed memory stays in malloc's arenas
    del blocks
    before = _rss()
    assert release_free_heap()
    assert before - _rss() > 100 * 2**20
    assert len(keep) == 500
