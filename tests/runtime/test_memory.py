"""dvis.runtime.memory gives freed heap back to the OS (the toolbox maps large blocks and trims from tick)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dvis.runtime.memory import release_free_heap


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


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt and /proc are Linux's")
def test_map_large_blocks_returns_freed_large_arrays_at_once():
    # A fresh process: malloc serves large blocks from free heap chunks before it maps new ones, so
    # the threshold only shows where the heap has no holes yet (the toolbox sets it at start).
    script = """
import sys; sys.path.insert(0, {tests!r})
from test_memory import _rss
from dvis.runtime.memory import map_large_blocks
assert map_large_blocks()
big = bytearray(b"1") * (8 << 20)
del big  # without the fixed threshold glibc would now raise it to 8 MB
small, large = [], []
for _ in range(100):  # small live blocks between the large ones pin heap-served large blocks
    large.append(bytearray(b"1") * (2 << 20))  # written, so resident
    small.append(bytearray(2000))
before = _rss()
del large
print((before - _rss()) >> 20)
"""
    freed = subprocess.run([sys.executable, "-c", script.format(tests=str(Path(__file__).parent))],
                           capture_output=True, text=True, check=True).stdout
    assert int(freed) > 150  # MiB unmapped on free, no trim needed
