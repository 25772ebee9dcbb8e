"""Readiness of one process: the change feed keeps up with the change log.

A replica whose feed has stopped following the log serves stale cache entries and starves its
watch streams while its database still answers, so it should leave the load balancer. The
delay is measured in time, not changes: a feed that is stuck stands out within seconds at any
write rate, and a busy one that stays a few changes behind is not mistaken for a stuck one.
"""

from __future__ import annotations

from collections import deque

from dnd_server.lanes import Position, reached

_SAMPLES = 4096
# A log position: one sequence number per lane (or one number).
_At = Position | int


def _reached(target: _At, position: _At) -> bool:
    if isinstance(target, int) or isinstance(position, int):
        return int(sum(position) if isinstance(position, tuple) else position) >= int(
            sum(target) if isinstance(target, tuple) else target
        )
    return reached(target, position)


class FeedDelay:
    """How long the change feed has been behind a log head it was shown.

    Fed the log head read from the database and the feed's position at each health check:
    the delay is the age of the oldest head reading the feed has not reached yet (0 when it
    has read up to the last one)."""

    def __init__(self) -> None:
        # (when read, head then), oldest first: only heads the feed has not reached yet.
        self._pending: deque[tuple[float, _At]] = deque(maxlen=_SAMPLES)
        self.seconds = 0.0

    def observe(self, head: _At, position: _At, now: float) -> float:
        if not _reached(head, position) and (
            not self._pending or not _reached(head, self._pending[-1][1])
        ):
            self._pending.append((now, head))
        while self._pending and _reached(self._pending[0][1], position):
            self._pending.popleft()
        self.seconds = now - self._pending[0][0] if self._pending else 0.0
        return self.seconds
