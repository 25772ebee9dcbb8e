"""Typed Python client of dnd-service: ``DndClient`` (blocking) and ``AsyncDndClient``
(asyncio), the API's enums as Python enums, and typed exceptions carrying the server's
structured error details."""

from __future__ import annotations

from dnd.v1 import dnd_pb2, dnd_pb2_grpc

from dnd_client._requests import DndAction, bulk_item, language_keywords, reply_texts
from dnd_client.aio import AsyncDndClient
from dnd_client.errors import (
    ClearNotPermitted,
    CursorExpired,
    DeadlineExceeded,
    DndError,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    Refusal,
    SubscriberTooSlow,
    Unauthenticated,
    Unavailable,
    VersionMismatch,
)
from dnd_client.sync import DndClient
from dnd_client.types import (
    ChangeKind,
    Channel,
    ConsentEvidence,
    ConsentKind,
    ConsentMethod,
    ConsentPurpose,
    ConsentStatus,
    Denial,
    Direction,
    EmailEvent,
    ImpliedBasis,
    Purpose,
    Reason,
    SendKind,
    Source,
)

__all__ = [
    "AsyncDndClient",
    "ChangeKind",
    "Channel",
    "ClearNotPermitted",
    "ConsentEvidence",
    "ConsentKind",
    "ConsentMethod",
    "ConsentPurpose",
    "ConsentStatus",
    "CursorExpired",
    "DeadlineExceeded",
    "Denial",
    "Direction",
    "DndAction",
    "DndClient",
    "DndError",
    "EmailEvent",
    "FieldViolation",
    "ImpliedBasis",
    "InvalidArgument",
    "PermissionDenied",
    "Purpose",
    "Reason",
    "Refusal",
    "SendKind",
    "Source",
    "SubscriberTooSlow",
    "Unauthenticated",
    "Unavailable",
    "VersionMismatch",
    "bulk_item",
    "dnd_pb2",
    "dnd_pb2_grpc",
    "language_keywords",
    "reply_texts",
]
