"""What the watch loops of both clients share: which failures a resume can cure, and backoff."""

from __future__ import annotations

import random

import grpc

from dnd_client.errors import DndError, SubscriberTooSlow

# Failures a reconnect from the last cursor cures: the server restarted or went away, the
# connection broke, the subscriber was cut off for being slow.
_RESUMABLE = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.CANCELLED,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}


def resumable(error: DndError) -> bool:
    return isinstance(error, SubscriberTooSlow) or error.code in _RESUMABLE


class Backoff:
    def __init__(self, initial: float = 0.1, maximum: float = 5.0) -> None:
        self.initial = initial
        self.maximum = maximum
        self.current = initial

    def next(self) -> float:
        delay = self.current * (0.5 + random.random() / 2)
        self.current = min(self.current * 2, self.maximum)
        return delay

    def reset(self) -> None:
        self.current = self.initial
