"""Keeping the heap from holding freed memory in long-running toolbox sessions (glibc), and the
process's resident size (what the toolbox's memory budget is relative to).

Every toolbox frame allocates and frees canvases, pane images and tensors of a few MB. glibc's
malloc keeps such freed blocks in its arenas (its mmap threshold grows to 32 MB once a large block
is freed, so later large arrays come from the heap too), and the holes between live blocks are
never returned: bench/soak.py measured the RSS climbing ~100 MiB over 3,500 frames while Python's
own live allocations (tracemalloc) grew by 15 MiB, and ``malloc_trim(0)`` gave the difference back.
A fixed mmap threshold keeps large blocks out of the heap altogether (each is unmapped when freed);
the trim returns what smaller blocks leave behind.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import lru_cache

M_MMAP_THRESHOLD = -3  # mallopt parameter (malloc.h)
LARGE_BLOCK = 1 << 20  # blocks from this size are mmapped (a frame's canvases and panes are larger)


@lru_cache(maxsize=1)
def _glibc():
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim, libc.mallopt  # glibc only (musl has neither)
    except (OSError, AttributeError):
        return None
    return libc


def map_large_blocks(threshold: int = LARGE_BLOCK) -> bool:
    """Serve allocations of ``threshold`` bytes or more by mmap, returned to the OS on free (glibc
    ``mallopt(M_MMAP_THRESHOLD)``, which also stops glibc raising the threshold); False where unsupported."""
    libc = _glibc()
    return bool(libc is not None and libc.mallopt(M_MMAP_THRESHOLD, threshold))


def release_free_heap() -> bool:
    """Return the allocator's free pages to the OS (glibc ``malloc_trim``); False where there is none."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


def resident_bytes() -> int | None:
    """The process's resident set size now (Linux ``/proc/self/statm``), else its peak so far
    (``getrusage``), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        pass
    try:
        import resource  # not on Windows
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # bytes on macOS, KiB elsewhere
