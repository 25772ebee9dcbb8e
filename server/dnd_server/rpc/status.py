"""Domain errors → gRPC status codes with google.rpc details, in one place."""

from __future__ import annotations

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from dnd_server.auth import PermissionDenied, Unauthenticated
from dnd_server.domain.errors import (
    ClearNotPermitted,
    CursorExpired,
    DndError,
    InvalidArgument,
    PartlyWritten,
    ResponseTooLarge,
    SubscriberTooSlow,
    TooManyStreams,
    Unavailable,
    VersionMismatch,
)
from dnd_server.domain.model import AddressSuppression, Block, scope_name

DOMAIN = "dnd.v1"
_MAX_VIOLATIONS = 20


def _pack(*details: object) -> list[any_pb2.Any]:
    packed = []
    for detail in details:
        message = any_pb2.Any()
        message.Pack(detail)  # type: ignore[arg-type]
        packed.append(message)
    return packed


def _status(code: int, message: str, *details: object) -> grpc.Status:
    return rpc_status.to_status(
        status_pb2.Status(code=code, message=message, details=_pack(*details))
    )


def _info(reason: str, **metadata: str) -> error_details_pb2.ErrorInfo:
    return error_details_pb2.ErrorInfo(reason=reason, domain=DOMAIN, metadata=metadata)


def status_for(error: DndError) -> grpc.Status:
    if isinstance(error, InvalidArgument):
        # The status travels in trailers, which clients cap (8-16 KB): report the first
        # problems, and how many there are.
        shown = error.violations[:_MAX_VIOLATIONS]
        more = len(error.violations) - len(shown)
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=v.field[:200], description=v.description[:200]
                )
                for v in shown
            ]
        )
        message = "; ".join(f"{v.field}: {v.description}" for v in shown)[:3000]
        if more:
            message += f"; and {more} more problems"
        fields = ",".join(v.field for v in shown)[:1000]
        info = _info("INVALID_ARGUMENT", fields=fields, violations=str(len(error.violations)))
        if more:
            info.metadata["omitted"] = str(more)
        return _status(code_pb2.INVALID_ARGUMENT, f"invalid request: {message}", bad, info)
    if isinstance(error, ClearNotPermitted):
        failure = error_details_pb2.PreconditionFailure(
            violations=[
                error_details_pb2.PreconditionFailure.Violation(
                    type=r.block.reason.value,
                    subject=_subject(r.block),
                    description=f"{r.why}; {r.what_clears_it}",
                )
                for r in error.refusals
            ]
        )
        return _status(
            code_pb2.FAILED_PRECONDITION,
            str(error),
            failure,
            _info(
                "CLEAR_NOT_PERMITTED",
                reasons=",".join(sorted({r.block.reason.value for r in error.refusals})),
            ),
        )
    if isinstance(error, VersionMismatch):
        return _status(
            code_pb2.ABORTED,
            str(error),
            _info("VERSION_MISMATCH", expected=str(error.expected), actual=str(error.actual)),
        )
    if isinstance(error, CursorExpired):
        return _status(
            code_pb2.OUT_OF_RANGE, str(error), _info("CURSOR_EXPIRED", cursor=error.cursor)
        )
    if isinstance(error, SubscriberTooSlow):
        return _status(
            code_pb2.RESOURCE_EXHAUSTED,
            str(error),
            _info("SUBSCRIBER_TOO_SLOW", cursor=error.cursor),
        )
    if isinstance(error, Unauthenticated):
        return _status(code_pb2.UNAUTHENTICATED, str(error), _info("UNAUTHENTICATED"))
    if isinstance(error, PermissionDenied):
        return _status(code_pb2.PERMISSION_DENIED, str(error), _info("PERMISSION_DENIED"))
    if isinstance(error, TooManyStreams):
        return _status(
            code_pb2.RESOURCE_EXHAUSTED,
            str(error),
            _info("TOO_MANY_STREAMS", limit=str(error.limit)),
        )
    if isinstance(error, ResponseTooLarge):
        return _status(
            code_pb2.RESOURCE_EXHAUSTED,
            str(error),
            _info("RESPONSE_TOO_LARGE", size=str(error.size), limit=str(error.limit)),
        )
    if isinstance(error, PartlyWritten):
        return _status(
            code_pb2.UNAVAILABLE,
            f"{error}; retry with the same idempotency_key to write the rest and get every "
            "item's answer",
            _info("PARTLY_WRITTEN"),
            error_details_pb2.RetryInfo(retry_delay={"nanos": 200_000_000}),
        )
    if isinstance(error, Unavailable):
        return _status(
            code_pb2.UNAVAILABLE,
            f"{error}; the call changed nothing and may be retried",
            _info("DATABASE_UNAVAILABLE"),
            error_details_pb2.RetryInfo(retry_delay={"nanos": 200_000_000}),
        )
    return internal_status()


def _subject(target: Block | AddressSuppression) -> str:
    """``OUTBOUND/SMS`` for a contact's block, ``ADDRESS/SMS/+14155552671`` for a suppression."""
    if isinstance(target, AddressSuppression):
        return f"ADDRESS/{target.channel.value}/{target.address}"
    return f"{target.direction.value}/{scope_name(target.scope)}"


def internal_status() -> grpc.Status:
    return _status(
        code_pb2.INTERNAL,
        "internal error; it was logged and the call changed nothing",
        _info("INTERNAL"),
    )


def deadline_status() -> grpc.Status:
    return _status(
        code_pb2.DEADLINE_EXCEEDED,
        "the call did not finish before its deadline; nothing was changed unless the "
        "transaction had committed, re-read before retrying",
        _info("DEADLINE_EXCEEDED"),
    )
