"""Page tokens of ListBlocks and ListSuppressions, resume tokens of ExportSuppressions: the
key of the last row answered, bound to the request's location and filter, encrypted and
authenticated under the deployment's key (``cursor.seal_list_token``), so a token reveals no
contact id or address where it is logged, and an edited, made-up or misapplied token (another
filter, another location, another listing) is refused, never followed. Tokens of the earlier
version (readable, tagged by ``cursor.token_mac``) are still opened, so a listing under way
across an upgrade goes on."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

from google.protobuf.message import Message

from dnd_server.cursor import open_list_token, seal_list_token, token_mac
from dnd_server.domain.errors import InvalidArgument

_TAG_BYTES = 16
_VERSION = 1
# The first byte of a sealed token (a token of the earlier version starts with "[").
_SEALED = b"\x02"


def binding(kind: str, location_id: str, *parts: Message | bool) -> str:
    """What a token is bound to: its listing, the location and the filter (and options)."""
    digest = hashlib.sha256(kind.encode() + b"\0" + location_id.encode() + b"\0")
    for part in parts:
        if isinstance(part, bool):
            digest.update(b"1" if part else b"0")
        else:
            digest.update(part.SerializeToString(deterministic=True))
        digest.update(b"\0")
    return digest.hexdigest()[:32]


def seal(bound: str, key: list[str]) -> str:
    payload = json.dumps([_VERSION, bound, key], separators=(",", ":")).encode()
    raw = _SEALED + seal_list_token(payload)
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def open_token(field: str, bound: str, token: str, size: int) -> list[str]:
    """The key inside ``token`` (``size`` strings); InvalidArgument naming ``field`` when it
    is not a token this deployment made for this same request."""
    refused = InvalidArgument.one(
        field, "not a token returned by this service for this request (same location and filter)"
    )
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise refused from None
    # One spelling per token: the decoder also takes padding, "+" and "/".
    if base64.urlsafe_b64encode(raw).decode().rstrip("=") != token:
        raise refused
    if raw[:1] == _SEALED:
        opened = open_list_token(raw[1:])
        if opened is None:
            raise refused
        payload = opened
    else:
        payload, tag = raw[:-_TAG_BYTES], raw[-_TAG_BYTES:]
        if len(raw) <= _TAG_BYTES or not hmac.compare_digest(tag, token_mac(payload)):
            raise refused
    try:
        version, found, key = json.loads(payload)
    except (ValueError, TypeError):
        raise refused from None
    if version != _VERSION or found != bound:
        raise refused
    if not isinstance(key, list) or len(key) != size or not all(isinstance(k, str) for k in key):
        raise refused
    return key
