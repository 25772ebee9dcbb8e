"""Readiness of one process: the change feed keeps up with the change log.

A replica whose feed has stopped following the log serves stale cache entries and starves its
watch streams while its database still answers, so it should leave the load balancer. The
delay is measured in time, not changes: a feed that is stuck stands out within seconds at any
write rate, and a busy one that stays a few changes behind is not mistaken for a stuck one.
"""

from __future__ import annotations

from collections import deque

_SAMPLES = 4096


class FeedDelay:
    """How long the change feed has been behind a log head it was shown.

    Fed the log head read from the database and the feed's position at each health check:
    the delay is the age of the oldest head reading the feed has not reached yet (0 when it
    has read up to the last one)."""

    def __init__(self) -> None:
        # (when read, head then), oldest first: only heads the feed has not reached yet.
        self._pending: deque[tuple[float, int]] = deque(maxlen=_SAMPLES)
        self.seconds = 0.0

    def observe(self, head: int, position: int, now: float) -> float:
        if head > position and (not self._pending or head > self._pending[-1][1]):
            self._pending.append((now, head))
        while self._pending and self._pending[0][1] <= position:
            self._pending.popleft()
        self.seconds = now - self._pending[0][0] if self._pending else 0.0
        return self.seconds
