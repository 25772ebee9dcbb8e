"""Change-stream cursors and ListHistory page tokens: sealed, so opaque for real.

A cursor holds a position in the change log, one sequence number shared by every location. In
the clear it would tell any caller how many changes everyone made between two of its cursors,
and let it forge any position. So each position is sealed with deterministic authenticated
encryption (SIV: a synthetic IV that is also the tag) under a key every replica of the
deployment shares (kept in the database, see ``install_key``):

    text       = base64url(version ‖ iv ‖ ciphertext)        36 characters, whatever the position
    plaintext  = position (8 bytes, big-endian) ‖ salt (3 bytes)
    iv         = PRF(key, "iv",  version ‖ kind ‖ plaintext)   15 bytes, checked on decode
    ciphertext = plaintext XOR PRF(key, "ks", version ‖ kind ‖ iv)

PRF is keyed BLAKE2b, its personalisation separating the two uses. ``kind`` tells cursors
from page tokens, so neither passes for the other. A change's cursor has a zero salt: the same
change always has the same cursor (answers and events can be compared). A bookmark (a position
that is no change of the caller's) gets a random salt, so two bookmarks do not even reveal
whether anything was written between them. Decoding recomputes the iv and compares it in
constant time: a cursor sealed under another key (another deployment), edited or made up is
refused, as are the plaintext cursors of earlier versions (``base64("dnd1:<n>")``), which anyone
could forge. The one exception is ``START_CURSOR`` (``base64("dnd1:0")``), the documented
"before the first change" position: it reveals nothing and stays accepted as a cursor.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from dnd_server.domain.errors import InvalidArgument, Unavailable

KEY_BYTES = 32
# The position before the first change, as documented (plaintext of the first format).
START_CURSOR = "ZG5kMTow"

_VERSION = b"\x01"
_CURSOR = b"c"
_PAGE_TOKEN = b"p"
_IV_BYTES = 15
_SALT_BYTES = 3
_PLAIN_BYTES = 8 + _SALT_BYTES
_RAW_BYTES = len(_VERSION) + _IV_BYTES + _PLAIN_BYTES
TEXT_LENGTH = 4 * _RAW_BYTES // 3  # 27 bytes: 36 base64 characters, no padding
_NO_SALT = bytes(_SALT_BYTES)
_INT64_MAX = 2**63 - 1


class CursorCodec:
    """Seals and opens positions under one key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a cursor key has {KEY_BYTES} bytes, got {len(key)}")
        self._key = bytes(key)

    def encode_cursor(self, seq: int) -> str:
        return self._seal(_CURSOR, seq, _NO_SALT)

    def encode_bookmark(self, seq: int) -> str:
        """A cursor of ``seq`` that differs from every other cursor of ``seq``."""
        return self._seal(_CURSOR, seq, secrets.token_bytes(_SALT_BYTES))

    def decode_cursor(self, cursor: str, field: str = "cursor") -> int:
        if cursor == START_CURSOR:
            return 0
        seq = self._open(_CURSOR, cursor)
        if seq is None:
            raise InvalidArgument.one(field, "not a cursor returned by this service")
        return seq

    def encode_page_token(self, value: int) -> str:
        return self._seal(_PAGE_TOKEN, value, _NO_SALT)

    def decode_page_token(self, token: str) -> int:
        value = self._open(_PAGE_TOKEN, token)
        if value is None:
            raise InvalidArgument.one("page_token", "not a page token returned by ListHistory")
        return value

    def _prf(self, person: bytes, data: bytes, size: int) -> bytes:
        return hashlib.blake2b(data, digest_size=size, key=self._key, person=person).digest()

    def _seal(self, kind: bytes, value: int, salt: bytes) -> str:
        if not 0 <= value <= _INT64_MAX:
            raise ValueError(f"a position is between 0 and 2**63 - 1, got {value}")
        plain = value.to_bytes(8, "big") + salt
        iv = self._prf(b"dnd-cursor-iv", _VERSION + kind + plain, _IV_BYTES)
        stream = self._prf(b"dnd-cursor-ks", _VERSION + kind + iv, _PLAIN_BYTES)
        return base64.urlsafe_b64encode(_VERSION + iv + _xor(plain, stream)).decode()

    def _open(self, kind: bytes, text: str) -> int | None:
        if len(text) != TEXT_LENGTH:
            return None
        try:
            raw = base64.urlsafe_b64decode(text)
        except (binascii.Error, ValueError):
            return None
        # One spelling per cursor: urlsafe_b64decode also takes "+" and "/".
        if raw[:1] != _VERSION or base64.urlsafe_b64encode(raw).decode() != text:
            return None
        iv, sealed = raw[1 : 1 + _IV_BYTES], raw[1 + _IV_BYTES :]
        stream = self._prf(b"dnd-cursor-ks", _VERSION + kind + iv, _PLAIN_BYTES)
        plain = _xor(sealed, stream)
        expected = self._prf(b"dnd-cursor-iv", _VERSION + kind + plain, _IV_BYTES)
        if not hmac.compare_digest(iv, expected):
            return None
        value = int.from_bytes(plain[:8], "big")
        return value if value <= _INT64_MAX else None


def _xor(a: bytes, b: bytes) -> bytes:
    return (int.from_bytes(a, "big") ^ int.from_bytes(b, "big")).to_bytes(len(a), "big")


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def key_from_secret(secret: str) -> bytes:
    """The key of an operator-chosen secret (``DND_CURSOR_KEY``)."""
    return hashlib.blake2b(
        secret.encode(), digest_size=KEY_BYTES, person=b"dnd-cursor-key"
    ).digest()


# The codec of this process, installed once the key is known (the database is reachable).
_codec: CursorCodec | None = None


def install_key(key: bytes) -> None:
    global _codec
    _codec = CursorCodec(key)


def _installed() -> CursorCodec:
    if _codec is None:
        raise Unavailable("the service is starting: the cursor key is not loaded yet")
    return _codec


def encode_cursor(seq: int) -> str:
    """The cursor of change ``seq`` (always the same text for the same change)."""
    return _installed().encode_cursor(seq)


def encode_bookmark(seq: int) -> str:
    """A resume point at ``seq`` that is not a change's cursor: fresh text every time."""
    return _installed().encode_bookmark(seq)


def decode_cursor(cursor: str, field: str = "cursor") -> int:
    """The sequence number inside ``cursor``; InvalidArgument naming ``field`` if it is not
    one this deployment sealed."""
    return _installed().decode_cursor(cursor, field)


def encode_page_token(value: int) -> str:
    return _installed().encode_page_token(value)


def decode_page_token(token: str) -> int:
    """The number inside a ListHistory page token; InvalidArgument if not one of ours."""
    return _installed().decode_page_token(token)
