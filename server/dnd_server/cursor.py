"""Change-stream cursors and ListHistory page tokens: sealed, so opaque for real.

A cursor holds a position in the change log: one sequence number per lane of the log
(``dnd_server/lanes.py``). In the clear it would tell any caller how many changes everyone made
between two of its cursors, and let it forge any position. So each position is sealed with
deterministic authenticated encryption (SIV: a synthetic IV that is also the tag) under a key
every replica of the deployment shares (kept in the database, see ``install_key``):

    text       = base64url(version ‖ iv ‖ ciphertext), no padding
    plaintext  = varint(lanes) ‖ varint(base) ‖ varint(seq - base) per lane ‖ salt (3 bytes)
    iv         = PRF(key, "iv", version ‖ kind ‖ plaintext)     15 bytes, checked on decode
    ciphertext = plaintext XOR PRF(key, "ks", version ‖ kind ‖ iv ‖ block number)...

``base`` is the lowest of the lanes' numbers, so a lane only costs the distance it moved past
the slowest one (16 lanes of a busy log: about 75 characters). PRF is keyed BLAKE2b, its
personalisation separating the two uses. ``kind`` tells cursors from page tokens, so neither
passes for the other. A change's cursor has a zero salt: the same change always has the same
cursor (answers and events can be compared). A bookmark (a position that is no change of the
caller's) gets a random salt, so two bookmarks do not even reveal whether anything was written
between them. Decoding recomputes the iv and compares it in constant time: a cursor sealed
under another key (another deployment), edited or made up is refused; a genuine one of another
lane count (a deployment whose log was laid out differently) is refused saying so.

Cursors of the single log of earlier versions (version 1, 36 characters: one 8-byte sequence
number) are still read: such a position ``n`` is ``n`` in every lane, since every lane
continues from the single log's head with its changes' numbers kept. So is ``START_CURSOR``
(``base64("dnd1:0")``), the documented "before the first change" position. Plaintext cursors of
the first format (``base64("dnd1:<n>")``), which anyone could forge, are refused.

Page tokens keep the version-1 layout: one number, the sequence number within the history's
location (one location, one lane).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

from dnd_server.domain.errors import InvalidArgument, Unavailable
from dnd_server.lanes import DEFAULT_LANES, MAX_LANES, Position, uniform

KEY_BYTES = 32
# The position before the first change, as documented (plaintext of the first format).
START_CURSOR = "ZG5kMTow"

_VERSION = b"\x01"
_LANES_VERSION = b"\x02"
_CURSOR = b"c"
_PAGE_TOKEN = b"p"
_IV_BYTES = 15
_SALT_BYTES = 3
_PLAIN_BYTES = 8 + _SALT_BYTES
_RAW_BYTES = len(_VERSION) + _IV_BYTES + _PLAIN_BYTES
TEXT_LENGTH = 4 * _RAW_BYTES // 3  # 27 bytes: 36 base64 characters, no padding
_NO_SALT = bytes(_SALT_BYTES)
_INT64_MAX = 2**63 - 1
_NOT_OURS = "not a cursor returned by this service"


class CursorCodec:
    """Seals and opens positions under one key, for a log of ``lanes`` lanes."""

    __slots__ = ("_key", "lanes")

    def __init__(self, key: bytes, lanes: int = DEFAULT_LANES) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError(f"a cursor key has {KEY_BYTES} bytes, got {len(key)}")
        if not 1 <= lanes <= MAX_LANES:
            raise ValueError(f"a log has 1 to {MAX_LANES} lanes, got {lanes}")
        self._key = bytes(key)
        self.lanes = lanes

    def encode_cursor(self, position: Position) -> str:
        return self._seal_position(position, _NO_SALT)

    def encode_bookmark(self, position: Position) -> str:
        """A cursor of ``position`` that differs from every other cursor of it."""
        return self._seal_position(position, secrets.token_bytes(_SALT_BYTES))

    def decode_cursor(self, cursor: str, field: str = "cursor") -> Position:
        if cursor == START_CURSOR:
            return uniform(0, self.lanes)
        seq = self._open(_CURSOR, cursor)
        if seq is not None:
            return uniform(seq, self.lanes)
        position = self._open_position(cursor)
        if position is None:
            raise InvalidArgument.one(field, _NOT_OURS)
        if len(position) != self.lanes:
            raise InvalidArgument.one(
                field,
                f"the cursor holds positions of {len(position)} change-log lanes but this "
                f"deployment's log has {self.lanes}: it comes from another deployment; "
                "re-read state with GetStatus and watch from now",
            )
        return position

    def encode_page_token(self, value: int) -> str:
        return self._seal(_PAGE_TOKEN, value, _NO_SALT)

    def decode_page_token(self, token: str) -> int:
        value = self._open(_PAGE_TOKEN, token)
        if value is None:
            raise InvalidArgument.one("page_token", "not a page token returned by ListHistory")
        return value

    def _prf(self, person: bytes, data: bytes, size: int) -> bytes:
        return hashlib.blake2b(data, digest_size=size, key=self._key, person=person).digest()

    def _keystream(self, header: bytes, size: int) -> bytes:
        blocks = [
            self._prf(b"dnd-cursor-ks", header + bytes([number]), 64)
            for number in range((size + 63) // 64)
        ]
        return b"".join(blocks)[:size]

    def _seal_position(self, position: Position, salt: bytes) -> str:
        if len(position) != self.lanes:
            raise ValueError(f"a position has {self.lanes} lanes, got {len(position)}")
        base = min(position)
        if base < 0 or max(position) > _INT64_MAX:
            raise ValueError(f"a position is between 0 and 2**63 - 1, got {position}")
        deltas = [seq - base for seq in position]
        # Deltas below 128 (the usual case) are their own one-byte varints.
        packed = bytes(deltas) if max(deltas) < 0x80 else b"".join(map(varint, deltas))
        plain = varint(len(position)) + varint(base) + packed + salt
        header = _LANES_VERSION + _CURSOR
        iv = self._prf(b"dnd-cursor-iv", header + plain, _IV_BYTES)
        stream = self._keystream(header + iv, len(plain))
        raw = _LANES_VERSION + iv + _xor(plain, stream)
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def _open_position(self, text: str) -> Position | None:
        if len(text) > 8 * MAX_LANES or len(text) % 4 == 1:
            return None
        try:
            raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            return None
        # One spelling per cursor: urlsafe_b64decode also takes "+", "/" and padding.
        if base64.urlsafe_b64encode(raw).decode().rstrip("=") != text:
            return None
        if raw[:1] != _LANES_VERSION or len(raw) < 1 + _IV_BYTES + 2 + _SALT_BYTES:
            return None
        header = _LANES_VERSION + _CURSOR
        iv, sealed = raw[1 : 1 + _IV_BYTES], raw[1 + _IV_BYTES :]
        plain = _xor(sealed, self._keystream(header + iv, len(sealed)))
        expected = self._prf(b"dnd-cursor-iv", header + plain, _IV_BYTES)
        if not hmac.compare_digest(iv, expected):
            return None
        numbers = _read_varints(plain[:-_SALT_BYTES])
        if numbers is None or len(numbers) < 2 or numbers[0] != len(numbers) - 2:
            return None
        base = numbers[1]
        position = tuple(base + delta for delta in numbers[2:])
        return position if all(seq <= _INT64_MAX for seq in position) else None

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


# The encoding of each value below 128: one byte, the value itself.
_ONE_BYTE = tuple(bytes((value,)) for value in range(0x80))


def varint(value: int) -> bytes:
    """``value`` (not negative) as a protobuf base-128 varint."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varints(data: bytes) -> list[int] | None:
    numbers: list[int] = []
    value = shift = 0
    for byte in data:
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte & 0x80:
            if shift > 63:
                return None
            continue
        numbers.append(value)
        value = shift = 0
    return None if shift else numbers


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


def install_key(key: bytes, lanes: int = DEFAULT_LANES) -> None:
    global _codec
    _codec = CursorCodec(key, lanes)


def install_lanes(lanes: int) -> None:
    """The lane count of the deployment's log (read from the database at start)."""
    _installed().lanes = lanes


def _installed() -> CursorCodec:
    if _codec is None:
        raise Unavailable("the service is starting: the cursor key is not loaded yet")
    return _codec


def encode_cursor(position: Position) -> str:
    """The cursor of a change's position (always the same text for the same change)."""
    return _installed().encode_cursor(position)


def encode_bookmark(position: Position) -> str:
    """A resume point at ``position`` that is not a change's cursor: fresh text every time."""
    return _installed().encode_bookmark(position)


def decode_cursor(cursor: str, field: str = "cursor") -> Position:
    """The position inside ``cursor``; InvalidArgument naming ``field`` if it is not one this
    deployment sealed (or one of another lane count)."""
    return _installed().decode_cursor(cursor, field)


def lanes() -> int:
    """The lane count of the deployment's log."""
    return _installed().lanes


def encode_page_token(value: int) -> str:
    return _installed().encode_page_token(value)


def decode_page_token(token: str) -> int:
    """The number inside a ListHistory page token; InvalidArgument if not one of ours."""
    return _installed().decode_page_token(token)


def token_mac(data: bytes) -> bytes:
    """A 16-byte tag of ``data`` under the deployment's key, for the listing and export
    tokens of earlier versions (``rpc/page_tokens.py``): a purpose of its own, so no cursor
    passes for one."""
    return _installed()._prf(b"dnd-list-token", data, 16)


# The synthetic IV of a sealed listing token (as a cursor's: the tag of the plaintext), and the
# header of its keystream (the cursors' keystream, of a header no cursor has).
_TOKEN_IV_BYTES = 16
_LIST_TOKEN = b"list"
# No token this service makes is longer (its keys are ids and addresses); longer is not one.
_LIST_TOKEN_MAX = 4096


def seal_list_token(plain: bytes) -> bytes:
    """``plain`` encrypted and authenticated under the deployment's key, as a cursor is (the
    IV a keyed hash of the plaintext, the keystream one of the IV), for the listing and
    export tokens: they carry contact ids and addresses, which must not be readable where a
    token is logged. A purpose of its own, so no cursor opens as one."""
    codec = _installed()
    iv = codec._prf(b"dnd-list-iv", plain, _TOKEN_IV_BYTES)
    return iv + _xor(plain, codec._keystream(_LIST_TOKEN + iv, len(plain)))


def open_list_token(sealed: bytes) -> bytes | None:
    """The plaintext of ``seal_list_token``'s output; None when it is not one this deployment
    sealed."""
    if not _TOKEN_IV_BYTES < len(sealed) <= _TOKEN_IV_BYTES + _LIST_TOKEN_MAX:
        return None
    codec = _installed()
    iv, body = sealed[:_TOKEN_IV_BYTES], sealed[_TOKEN_IV_BYTES:]
    plain = _xor(body, codec._keystream(_LIST_TOKEN + iv, len(body)))
    if not hmac.compare_digest(iv, codec._prf(b"dnd-list-iv", plain, _TOKEN_IV_BYTES)):
        return None
    return plain
