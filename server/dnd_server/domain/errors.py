"""Errors the domain rules raise; the rpc layer maps each to one gRPC status."""

from __future__ import annotations

from dataclasses import dataclass

from dnd_server.domain.model import AddressSuppression, Block


class DndError(Exception):
    """Base of every error the service raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class InvalidArgument(DndError):
    """The request is malformed; nothing was changed."""

    def __init__(self, violations: list[FieldViolation]) -> None:
        self.violations = violations
        super().__init__("; ".join(f"{v.field}: {v.description}" for v in violations))

    @classmethod
    def one(cls, field: str, description: str) -> InvalidArgument:
        return cls([FieldViolation(field, description)])


@dataclass(frozen=True, slots=True)
class Refusal:
    """One block (or address suppression) the caller may not clear, and what would."""

    block: Block | AddressSuppression
    why: str
    what_clears_it: str


class ClearNotPermitted(DndError):
    """A clear touched at least one block the caller's source may not lift."""

    def __init__(self, refusals: list[Refusal]) -> None:
        self.refusals = refusals
        parts = [f"{r.block.reason.value} on {_where(r.block)}: {r.why}" for r in refusals]
        super().__init__("clear refused, nothing was changed: " + "; ".join(parts))


class VersionMismatch(DndError):
    """The caller's expected version is not the contact's current version."""

    def __init__(self, expected: int, actual: int) -> None:
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"expected version {expected} but the contact is at version {actual}; "
            "re-read the status and retry"
        )


class Unavailable(DndError):
    """The database cannot be reached or did not answer in time; retry later."""


class PartlyWritten(Unavailable):
    """The database failed during a bulk write after some of its chunks had committed: a
    retry with the same idempotency key finishes it."""


def _where(block: Block | AddressSuppression) -> str:
    if isinstance(block, AddressSuppression):
        return f"address {block.address} ({block.channel.value})"
    scope = "all channels" if block.scope is None else block.scope.value
    return f"{block.direction.value.lower()} {scope}"


class CursorExpired(DndError):
    """The cursor is older than the change stream's retention window."""

    def __init__(self, cursor: str) -> None:
        self.cursor = cursor
        super().__init__(
            "the cursor is older than the change stream's retention window: re-read the "
            "contacts you track with GetStatus, then watch from now"
        )


class SubscriberTooSlow(DndError):
    """A watch subscriber fell too far behind and was disconnected."""

    def __init__(self, cursor: str) -> None:
        self.cursor = cursor
        super().__init__(
            "the subscriber fell too far behind the change stream and was disconnected; "
            f"resume with after_cursor={cursor}"
        )


class TooManyStreams(DndError):
    """The caller already has the most watch streams it may open."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(
            f"this caller already has {limit} open watch streams, the most allowed; "
            "close one or share a stream"
        )


class ResponseTooLarge(DndError):
    """The answer would be larger than the server sends in one response."""

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(
            f"the response would be {size} bytes, over this server's limit of {limit} "
            "(DND_MAX_RESPONSE_BYTES): ask for less (fewer targets, a smaller page_size) or "
            "without include_details"
        )
