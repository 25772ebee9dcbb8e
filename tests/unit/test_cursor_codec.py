"""The cursor codec (dnd_server.cursor) as pure functions: sealed positions round-trip, and
anything not sealed by the same key for the same use is refused."""

from __future__ import annotations

import base64
import itertools
import re

import pytest
from dnd_server import cursor
from dnd_server.cursor import START_CURSOR, TEXT_LENGTH, CursorCodec, key_from_secret, new_key
from dnd_server.domain.errors import InvalidArgument, Unavailable

INT64_MAX = 2**63 - 1
POSITIONS = [0, 1, 2, 9, 10, 255, 256, 65_535, 10**6, 2**32, 10**15, INT64_MAX - 1, INT64_MAX]
URLSAFE = re.compile(r"[A-Za-z0-9_-]+")


@pytest.fixture
def codec() -> CursorCodec:
    return CursorCodec(new_key())


def refused_cursor(codec: CursorCodec, text: str, field: str = "after_cursor") -> None:
    with pytest.raises(InvalidArgument) as caught:
        codec.decode_cursor(text, field)
    [violation] = caught.value.violations
    assert (violation.field, violation.description) == (
        field,
        "not a cursor returned by this service",
    )


def refused_token(codec: CursorCodec, text: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        codec.decode_page_token(text)
    [violation] = caught.value.violations
    assert violation.field == "page_token"


def old_format(text: str) -> str:
    """A cursor or page token of the first, plaintext format."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


@pytest.mark.parametrize("position", POSITIONS)
def test_round_trip(codec: CursorCodec, position: int) -> None:
    assert codec.decode_cursor(codec.encode_cursor(position)) == position
    assert codec.decode_cursor(codec.encode_bookmark(position)) == position
    assert codec.decode_page_token(codec.encode_page_token(position)) == position


def test_fixed_length_whatever_the_position(codec: CursorCodec) -> None:
    texts = [f(p) for p in POSITIONS for f in (codec.encode_cursor, codec.encode_bookmark)]
    texts += [codec.encode_page_token(p) for p in POSITIONS]
    assert {len(t) for t in texts} == {TEXT_LENGTH} == {36}
    assert all(URLSAFE.fullmatch(t) for t in texts), "URL-safe, no padding"


def test_a_change_always_has_the_same_cursor_and_bookmarks_are_fresh(codec: CursorCodec) -> None:
    assert codec.encode_cursor(42) == codec.encode_cursor(42)
    bookmarks = {codec.encode_bookmark(42) for _ in range(50)}
    assert len(bookmarks) == 50
    assert codec.encode_cursor(42) not in bookmarks


def test_the_position_does_not_show_in_the_text() -> None:
    """Neither the number, nor its old encoding, nor its bytes; and neighbouring positions
    share no more than chance would: the text orders and subtracts nothing."""
    codec = CursorCodec(bytes(range(32)))  # a fixed key: the outcome does not vary by run
    for position in (123_456_789, 9_876_543_210, INT64_MAX):
        text = codec.encode_cursor(position)
        raw = base64.urlsafe_b64decode(text)
        assert str(position) not in text
        assert old_format(f"dnd1:{position}") not in text
        assert position.to_bytes(8, "big") not in raw
    texts = [codec.encode_cursor(p) for p in range(1000, 1200)]
    assert sorted(texts) != texts and sorted(texts, reverse=True) != texts
    # Past the version byte, two cursors of successive positions agree on about 1 in 64
    # characters (random), never on a long common prefix as a counter would.
    for a, b in itertools.pairwise(texts):
        same = sum(x == y for x, y in zip(a[2:], b[2:], strict=True))
        assert same < 8, (a, b)


def test_every_edited_character_is_refused(codec: CursorCodec) -> None:
    for seal, refuse in (
        (codec.encode_cursor, refused_cursor),
        (codec.encode_bookmark, refused_cursor),
        (codec.encode_page_token, refused_token),
    ):
        text = seal(123_456)
        for i, ch in enumerate(text):
            for other in "AQgw_-9z":
                if other != ch:
                    refuse(codec, text[:i] + other + text[i + 1 :])


def test_every_flipped_bit_is_refused(codec: CursorCodec) -> None:
    raw = base64.urlsafe_b64decode(codec.encode_cursor(5))
    for i in range(len(raw)):
        for bit in range(8):
            edited = bytearray(raw)
            edited[i] ^= 1 << bit
            refused_cursor(codec, base64.urlsafe_b64encode(bytes(edited)).decode())


def test_another_key_is_refused(codec: CursorCodec) -> None:
    other = CursorCodec(new_key())
    for position in POSITIONS:
        refused_cursor(codec, other.encode_cursor(position))
        refused_cursor(codec, other.encode_bookmark(position))
        refused_token(codec, other.encode_page_token(position))


def test_a_cursor_is_no_page_token_and_a_page_token_no_cursor(codec: CursorCodec) -> None:
    for position in POSITIONS:
        refused_token(codec, codec.encode_cursor(position))
        refused_token(codec, codec.encode_bookmark(position))
        refused_cursor(codec, codec.encode_page_token(position))


def test_old_plaintext_cursors_and_tokens_are_refused(codec: CursorCodec) -> None:
    for position in (1, 5, 123, INT64_MAX):
        refused_cursor(codec, old_format(f"dnd1:{position}"))
        refused_token(codec, old_format(f"dndh1:{position}"))
    refused_token(codec, START_CURSOR)


def test_the_start_cursor_is_the_position_before_the_first_change(codec: CursorCodec) -> None:
    assert old_format("dnd1:0") == START_CURSOR
    assert codec.decode_cursor(START_CURSOR) == 0
    assert CursorCodec(new_key()).decode_cursor(START_CURSOR) == 0


@pytest.mark.parametrize(
    "text",
    [
        "",
        "=",
        "garbage",
        "!" * 36,
        "A" * 36,
        "A" * 35,
        "A" * 37,
        "ページ" * 12,
        "\x00" * 36,
        " " * 36,
    ],
)
def test_garbage_is_refused(codec: CursorCodec, text: str) -> None:
    refused_cursor(codec, text, "min_cursor")
    refused_token(codec, text)


def test_another_spelling_of_the_same_bytes_is_refused(codec: CursorCodec) -> None:
    """One text per cursor: the standard alphabet's "+" and "/", padding and whitespace (which
    a lenient base64 decoder would read as the same bytes) are refused."""
    for position in range(200):
        text = codec.encode_cursor(position)
        if "-" in text or "_" in text:
            break
    else:
        raise AssertionError("no cursor with - or _ among 200")
    refused_cursor(codec, text.replace("-", "+").replace("_", "/"))
    refused_cursor(codec, text + "=")
    refused_cursor(codec, " " + text[1:])
    refused_cursor(codec, text[:-1] + "\n")


def test_positions_outside_int64_cannot_be_sealed(codec: CursorCodec) -> None:
    for bad in (-1, INT64_MAX + 1, 2**64):
        with pytest.raises(ValueError):
            codec.encode_cursor(bad)
        with pytest.raises(ValueError):
            codec.encode_page_token(bad)


def test_keys_have_32_bytes() -> None:
    assert len(new_key()) == 32 and new_key() != new_key()
    for size in (0, 16, 31, 33):
        with pytest.raises(ValueError):
            CursorCodec(b"k" * size)


def test_a_secret_gives_the_same_key_everywhere() -> None:
    secret = "s" * 40
    a, b = CursorCodec(key_from_secret(secret)), CursorCodec(key_from_secret(secret))
    assert a.decode_cursor(b.encode_cursor(77)) == 77
    refused_cursor(CursorCodec(key_from_secret("t" * 40)), a.encode_cursor(77))


def test_module_functions_use_the_installed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cursor, "_codec", None)
    with pytest.raises(Unavailable):
        cursor.encode_cursor(1)
    with pytest.raises(Unavailable):
        cursor.decode_cursor(START_CURSOR, "min_cursor")
    key = new_key()
    cursor.install_key(key)
    mine = CursorCodec(key)
    assert cursor.encode_cursor(9) == mine.encode_cursor(9)
    assert cursor.decode_cursor(mine.encode_bookmark(9), "after_cursor") == 9
    assert cursor.decode_page_token(cursor.encode_page_token(8)) == 8
    assert cursor.decode_cursor(cursor.encode_bookmark(3)) == 3
    with pytest.raises(InvalidArgument):
        cursor.decode_cursor(CursorCodec(new_key()).encode_cursor(9), "min_cursor")
