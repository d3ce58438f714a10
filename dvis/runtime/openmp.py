"""How long the ``dvis`` command's idle OpenMP threads spin before they sleep.

PyTorch's CPU operators run on GNU OpenMP (libgomp) on Linux. Between parallel regions an idle
thread spins 300,000 iterations before it sleeps (libgomp's default when ``OMP_WAIT_POLICY`` is
unset), several milliseconds, so in every gap of the forward (the hooks' Python, the wait for the
next batch) a spinning thread holds a core that the idle-priority decoding workers of
:func:`dvis.imaging.decode.load_batches` would use. ``dvis`` commands shorten the spin to
:data:`SPIN_COUNT` iterations (AlexNet on 2 cores, ``dvis maxes`` with statistics, steady rate
over alternating pairs: 70.5 -> 81.7 and 81.7 -> 85.0 img/s mean, the forward alone the same
within the noise; docs/pipeline.md).

libgomp reads its settings once, when PyTorch loads it, so this runs before ``import torch``: the
``dvis`` command does it first, and ``import dvis`` does not load PyTorch. Processes that only
import dvis as a library keep OpenMP as they have it.
"""
from __future__ import annotations

import os
import sys

SPIN_COUNT = "10000"
#: Variables through which a user has chosen a wait policy; any of them set, dvis leaves it.
USER_SETTINGS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")


def shorten_spin_wait() -> bool:
    """Set ``GOMP_SPINCOUNT`` to :data:`SPIN_COUNT` for this process (and its children) unless the
    user set a wait policy or PyTorch is already loaded (too late: libgomp has read its settings).
    Returns whether it was set."""
    if "torch" in sys.modules or any(k in os.environ for k in USER_SETTINGS):
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True


def describe() -> str:
    """This process's wait policy in words, for benchmark headers."""
    chosen = [f"{k}={os.environ[k]}" for k in USER_SETTINGS if k in os.environ]
    return ", ".join(chosen) if chosen else "libgomp's default spin"
