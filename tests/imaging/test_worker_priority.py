"""Decoding workers of a CPU forward: idle priority while the main process computes, their default
priority while it waits for a batch (dvis.imaging.decode.load_batches)."""
import multiprocessing
import os
import threading

import pytest

from dvis.imaging.decode import WaitGatedDataset, flag_waits

pytestmark = pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="Linux scheduling policies")


class Policies:
    """Items: the scheduling policy of the thread that produced them."""

    def __len__(self):
        return 10

    def __getitem__(self, i):
        return os.sched_getscheduler(0)


def test_items_decode_at_idle_priority_while_the_main_process_computes_and_at_default_while_it_waits():
    waiting = multiprocessing.RawValue("b", 0)
    gated = WaitGatedDataset(Policies(), waiting)
    assert len(gated) == 10 and gated[0] == os.SCHED_IDLE
    waiting.value = 1
    assert gated[1] == os.sched_getscheduler(0) != os.SCHED_IDLE


def test_an_item_stuck_on_the_idle_thread_is_decoded_again_at_default_priority_once_the_main_process_waits():
    started, release = threading.Event(), threading.Event()

    class Starved:
        def __len__(self):
            return 1

        def __getitem__(self, i):
            if threading.current_thread().name.startswith("dvis-idle-decode"):
                started.set()
                release.wait()  # as if other jobs left this idle thread no CPU
                return "idle"
            return "default"

    waiting = multiprocessing.RawValue("b", 0)
    gated = WaitGatedDataset(Starved(), waiting)
    got = []
    worker = threading.Thread(target=lambda: got.append(gated[0]))
    worker.start()
    started.wait()
    waiting.value = 1  # the main process now waits for this batch
    worker.join()
    release.set()
    assert got == ["default"]


def test_the_flag_is_up_exactly_while_the_caller_waits_for_a_batch():
    waiting = multiprocessing.RawValue("b", 0)
    seen = []

    def batches():
        for b in range(3):
            seen.append(waiting.value)
            yield b

    for b in flag_waits(batches(), waiting):
        assert waiting.value == 0
    assert seen == [1, 1, 1] and waiting.value == 0
