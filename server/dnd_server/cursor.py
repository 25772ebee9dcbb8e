"""Change-stream cursors: opaque to clients, a log sequence number inside."""

from __future__ import annotations

import base64
import binascii

from dnd_server.domain.errors import InvalidArgument

_PREFIX = b"dnd1:"
_INT64_MAX = 2**63 - 1


def encode_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(_PREFIX + str(seq).encode()).decode().rstrip("=")


def decode_cursor(cursor: str, field: str = "cursor") -> int:
    """The sequence number inside ``cursor``; InvalidArgument naming ``field`` if malformed."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    body = raw[len(_PREFIX) :]
    if raw.startswith(_PREFIX) and body.isdigit() and int(body) <= _INT64_MAX:
        return int(body)
    raise InvalidArgument.one(field, "not a cursor returned by this service")


_PAGE_PREFIX = b"dndh1:"


def encode_page_token(before_version: int) -> str:
    return (
        base64.urlsafe_b64encode(_PAGE_PREFIX + str(before_version).encode()).decode().rstrip("=")
    )


def decode_page_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raw = b""
    body = raw[len(_PAGE_PREFIX) :]
    if raw.startswith(_PAGE_PREFIX) and body.isdigit() and int(body) <= _INT64_MAX:
        return int(body)
    raise InvalidArgument.one("page_token", "not a page token returned by ListHistory")
