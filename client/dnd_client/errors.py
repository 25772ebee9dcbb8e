"""Typed exceptions for failed calls, carrying the server's google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class Refusal:
    """One block a clear may not lift, and what would lift it."""

    reason: str
    subject: str
    description: str


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class DndError(Exception):
    """A call failed. ``code`` is the gRPC status; ``reason`` the ErrorInfo reason."""

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        field_violations: list[FieldViolation] | None = None,
        refusals: list[Refusal] | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = metadata or {}
        self.field_violations = field_violations or []
        self.refusals = refusals or []

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"


class InvalidArgument(DndError):
    """The request was malformed; ``field_violations`` names each bad field."""


class ClearNotPermitted(DndError):
    """A clear was refused; ``refusals`` lists the remaining blocks and what would clear them."""


class VersionMismatch(DndError):
    """``expected_version`` did not match; ``metadata["actual"]`` is the current version."""


class Unavailable(DndError):
    """The service or its database is unavailable; the call changed nothing, retry later."""


class DeadlineExceeded(DndError):
    """The call did not finish before its deadline."""


class CursorExpired(DndError):
    """The watch cursor is older than the retention window: re-read state, watch from now."""


class SubscriberTooSlow(DndError):
    """The watch fell too far behind; ``metadata["cursor"]`` is where to resume."""


class Unauthenticated(DndError):
    """Missing or unknown token."""


class PermissionDenied(DndError):
    """The token may not act on this location or with this scope."""


@dataclass
class _Details:
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    fields: list[FieldViolation] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)


def _details(error: grpc.RpcError) -> _Details:
    found = _Details()
    try:
        status = rpc_status.from_call(error)  # type: ignore[arg-type]
    except ValueError:
        return found
    if status is None:
        return found
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            found.reason = info.reason
            found.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            found.fields = [FieldViolation(v.field, v.description) for v in bad.field_violations]
        elif detail.Is(error_details_pb2.PreconditionFailure.DESCRIPTOR):
            failure = error_details_pb2.PreconditionFailure()
            detail.Unpack(failure)
            found.refusals = [Refusal(v.type, v.subject, v.description) for v in failure.violations]
    return found


_BY_REASON: dict[str, type[DndError]] = {
    "CLEAR_NOT_PERMITTED": ClearNotPermitted,
    "VERSION_MISMATCH": VersionMismatch,
    "CURSOR_EXPIRED": CursorExpired,
    "SUBSCRIBER_TOO_SLOW": SubscriberTooSlow,
}
_BY_CODE: dict[grpc.StatusCode, type[DndError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
}


def translate(error: grpc.RpcError) -> DndError:
    """The typed exception for a failed call."""
    code: grpc.StatusCode = error.code()
    message: str = error.details() or code.name
    found = _details(error)
    cls = _BY_REASON.get(found.reason) or _BY_CODE.get(code, DndError)
    return cls(code, message, found.reason, found.metadata, found.fields, found.refusals)
