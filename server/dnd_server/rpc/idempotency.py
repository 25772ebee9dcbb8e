"""Idempotency keys of mutating requests: the claim a write makes with its key, and the answer
to a retry (the first answer, replayed as it was sent).

A request is identified by its method and its hash without the key, so a retry that changes
anything else is told apart from a true retry (the store refuses it).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from dnd_server.records import Idempotency, Replay, WriteResult

_M = TypeVar("_M", bound=Message)


def claim(
    method: str, request: Message, key: str, build: Callable[[WriteResult], Message]
) -> Idempotency | None:
    """The idempotency claim of a mutating request (None without a key): the request is
    hashed without its key, and ``build`` encodes the answer kept for retries."""
    if not key:
        return None
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("idempotency_key")
    digest = hashlib.sha256(method.encode() + b"\0" + copy.SerializeToString(deterministic=True))
    return Idempotency(key, method, digest.digest(), lambda r: build(r).SerializeToString())


def answer(outcome: WriteResult | Replay, build: Callable[[WriteResult], _M], cls: type[_M]) -> _M:
    """The answer to a write: built from its result, or the first answer when it replayed."""
    if isinstance(outcome, Replay):
        return cls.FromString(outcome.response)
    return build(outcome)
