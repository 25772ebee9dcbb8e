"""Idempotency keys of mutating requests: the claim a write makes with its key, and the answer
to a retry (the first answer, replayed as it was sent).

A request is identified by its method and its hash without the key, so a retry that changes
anything else is told apart from a true retry (the store refuses it). The hash is keyed with
the deployment's erasure secret (``install_key``): a request holds phone numbers and email
addresses, and an unkeyed hash of one could be matched by trying every number, which would
undo an erasure. Keys claimed by earlier versions (an unkeyed SHA-256) still replay.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message

from dnd_server.domain.errors import Unavailable
from dnd_server.records import Idempotency, Replay, WriteResult

_M = TypeVar("_M", bound=Message)


# The deployment's secret the request hashes are keyed with (None: not loaded yet).
_KEY: bytes | None = None


def install_key(key: bytes) -> None:
    """Key the request hashes with ``key`` (the erasure key: one per database, never
    replaced, so every replica and every restart hashes a request alike)."""
    global _KEY
    _KEY = bytes(key)


def claim(
    method: str, request: Message, key: str, build: Callable[[WriteResult], Message]
) -> Idempotency | None:
    """The idempotency claim of a mutating request (None without a key): the request is
    hashed without its key, and ``build`` encodes the answer kept for retries."""
    if not key:
        return None
    if _KEY is None:
        raise Unavailable("the service is starting: the request key is not loaded yet")
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("idempotency_key")
    data = method.encode() + b"\0" + copy.SerializeToString(deterministic=True)
    keyed = hashlib.blake2b(data, digest_size=32, key=_KEY, person=b"dnd-request").digest()
    return Idempotency(
        key,
        method,
        keyed,
        lambda r: build(r).SerializeToString(),
        legacy_hash=hashlib.sha256(data).digest(),
    )


def answer(outcome: WriteResult | Replay, build: Callable[[WriteResult], _M], cls: type[_M]) -> _M:
    """The answer to a write: built from its result, or the first answer when it replayed."""
    if isinstance(outcome, Replay):
        return cls.FromString(outcome.response)
    return build(outcome)
