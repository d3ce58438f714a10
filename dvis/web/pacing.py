"""Pacing: a tab's message rate limit and the frame pacer."""
from __future__ import annotations

import math
import time


class RateLimit:
    """Token bucket: ``rate`` messages per second, bursts up to twice that."""

    def __init__(self, rate: float):
        self.rate, self.tokens, self.last = rate, 2 * rate, time.monotonic()
        self.dropped, self._logged = 0, 0.0

    def allow(self) -> bool:
        now = time.monotonic()
        self.tokens = min(2 * self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.dropped += 1
        return False

    def should_log(self) -> bool:
        """At most one log line a second about dropped messages."""
        now = time.monotonic()
        if now - self._logged >= 1.0:
            self._logged = now
            return True
        return False


class Pacer:
    """At most one frame per ``period`` seconds for inputs, and as many again for everything else
    (worker results, unit images, camera frames). Only frames actually produced count, not the checks
    that found nothing new, so an input after a quiet spell is drawn at once, and an input right after
    a worker's frame does not wait for it."""

    def __init__(self, period: float):
        self.period, self.last, self.last_input = period, -math.inf, -math.inf

    def delay(self, now: float, for_input: bool = False) -> float:
        """Seconds to wait before the next frame (for an input, or any) may be produced (0: now)."""
        return max(0.0, (self.last_input if for_input else self.last) + self.period - now)

    def produced(self, now: float, for_input: bool = False) -> None:
        self.last = now
        if for_input:
            self.last_input = now
