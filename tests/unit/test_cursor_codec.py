"""The cursor codec (dnd_server.cursor) as pure functions: sealed positions (one sequence
number per lane of the log) round-trip, cursors of the single log of earlier versions still
open, and anything not sealed by the same key for the same use (or of another lane count) is
refused."""

from __future__ import annotations

import base64
import itertools
import re

import pytest
from dnd_server import cursor
from dnd_server.cursor import (
    _CURSOR,
    _NO_SALT,
    START_CURSOR,
    TEXT_LENGTH,
    CursorCodec,
    key_from_secret,
    new_key,
)
from dnd_server.domain.errors import InvalidArgument, Unavailable
from dnd_server.lanes import uniform

INT64_MAX = 2**63 - 1
NUMBERS = [0, 1, 2, 9, 10, 255, 256, 65_535, 10**6, 2**32, 10**15, INT64_MAX - 1, INT64_MAX]
LANES = 16


def spread(seq: int) -> tuple[int, ...]:
    """A position of 16 lanes around ``seq`` (lanes apart by up to a few thousand)."""
    return tuple(max(0, min(INT64_MAX, seq - (lane * 977) % 5000)) for lane in range(LANES))


POSITIONS = [uniform(n, LANES) for n in NUMBERS] + [spread(n) for n in NUMBERS]
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
def test_round_trip(codec: CursorCodec, position: tuple[int, ...]) -> None:
    assert codec.decode_cursor(codec.encode_cursor(position)) == position
    assert codec.decode_cursor(codec.encode_bookmark(position)) == position


@pytest.mark.parametrize("value", NUMBERS)
def test_page_tokens_round_trip(codec: CursorCodec, value: int) -> None:
    assert codec.decode_page_token(codec.encode_page_token(value)) == value


@pytest.mark.parametrize("lanes", [1, 2, 7, 16, 64, 256])
def test_any_lane_count_round_trips(lanes: int) -> None:
    codec = CursorCodec(new_key(), lanes)
    for position in (uniform(0, lanes), uniform(10**9, lanes), tuple(range(lanes))):
        assert codec.decode_cursor(codec.encode_cursor(position)) == position
        assert codec.decode_cursor(codec.encode_bookmark(position)) == position


def test_compact_url_safe_texts(codec: CursorCodec) -> None:
    """Each lane costs only its distance past the slowest: 16 lanes of one busy log (lanes a
    few thousand apart) fit in 80 characters; page tokens keep their 36."""
    texts = [f(p) for p in POSITIONS for f in (codec.encode_cursor, codec.encode_bookmark)]
    assert all(URLSAFE.fullmatch(t) for t in texts), "URL-safe, no padding"
    assert max(len(codec.encode_cursor(spread(n))) for n in NUMBERS) <= 80
    assert len(codec.encode_cursor(uniform(10**6, LANES))) <= 56
    assert {len(codec.encode_page_token(n)) for n in NUMBERS} == {TEXT_LENGTH} == {36}


def test_a_change_always_has_the_same_cursor_and_bookmarks_are_fresh(codec: CursorCodec) -> None:
    position = spread(42_000)
    assert codec.encode_cursor(position) == codec.encode_cursor(position)
    bookmarks = {codec.encode_bookmark(position) for _ in range(50)}
    assert len(bookmarks) == 50
    assert codec.encode_cursor(position) not in bookmarks


def test_cursors_of_the_single_log_open_as_that_position_in_every_lane(
    codec: CursorCodec,
) -> None:
    """A cursor sealed before the log had lanes (version 1: one sequence number) is the
    position ``n`` in every lane: each lane continues from the single log's head."""
    for n in NUMBERS:
        old = codec._seal(_CURSOR, n, _NO_SALT)
        assert len(old) == TEXT_LENGTH
        assert codec.decode_cursor(old) == uniform(n, LANES)
        assert CursorCodec(codec._key, 4).decode_cursor(old) == uniform(n, 4)
    refused_cursor(CursorCodec(new_key()), codec._seal(_CURSOR, 5, _NO_SALT))


def test_a_cursor_of_another_lane_count_is_refused_saying_so() -> None:
    key = new_key()
    sixteen, eight = CursorCodec(key, 16), CursorCodec(key, 8)
    for text in (sixteen.encode_cursor(spread(900)), sixteen.encode_bookmark(uniform(3, 16))):
        with pytest.raises(InvalidArgument) as caught:
            eight.decode_cursor(text, "after_cursor")
        [violation] = caught.value.violations
        assert violation.field == "after_cursor"
        assert "16 change-log lanes" in violation.description
        assert "has 8" in violation.description
    with pytest.raises(ValueError):
        eight.encode_cursor(spread(1))


def test_the_position_does_not_show_in_the_text() -> None:
    """Neither the number, nor its old encoding, nor its bytes; and neighbouring positions
    share no more than chance would: the text orders and subtracts nothing."""
    codec = CursorCodec(bytes(range(32)))  # a fixed key: the outcome does not vary by run
    for number in (123_456_789, 9_876_543_210, INT64_MAX):
        text = codec.encode_cursor(uniform(number, LANES))
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        assert str(number) not in text
        assert old_format(f"dnd1:{number}") not in text
        assert number.to_bytes(8, "big") not in raw
    texts = [codec.encode_cursor(uniform(p, LANES)) for p in range(1000, 1200)]
    assert sorted(texts) != texts and sorted(texts, reverse=True) != texts
    # Past the version byte, two cursors of successive positions agree on about 1 in 64
    # characters (random), never on a long common prefix as a counter would.
    for a, b in itertools.pairwise(texts):
        same = sum(x == y for x, y in zip(a[2:], b[2:], strict=False))
        assert same < 8, (a, b)


def test_every_edited_character_is_refused(codec: CursorCodec) -> None:
    for text, refuse in (
        (codec.encode_cursor(spread(123_456)), refused_cursor),
        (codec.encode_bookmark(spread(123_456)), refused_cursor),
        (codec._seal(_CURSOR, 123_456, _NO_SALT), refused_cursor),
        (codec.encode_page_token(123_456), refused_token),
    ):
        for i, ch in enumerate(text):
            for other in "AQgw_-9z":
                if other != ch:
                    refuse(codec, text[:i] + other + text[i + 1 :])


def test_every_flipped_bit_is_refused(codec: CursorCodec) -> None:
    for text in (codec.encode_cursor(spread(5_000)), codec._seal(_CURSOR, 5, _NO_SALT)):
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        for i in range(len(raw)):
            for bit in range(8):
                edited = bytearray(raw)
                edited[i] ^= 1 << bit
                edited_text = base64.urlsafe_b64encode(bytes(edited)).decode()
                refused_cursor(codec, edited_text.rstrip("=") if len(raw) != 27 else edited_text)


def test_truncated_and_extended_cursors_are_refused(codec: CursorCodec) -> None:
    text = codec.encode_cursor(spread(77_777))
    for cut in range(1, len(text)):
        refused_cursor(codec, text[:cut])
    for extra in ("A", "AA", "AAAA", text):
        refused_cursor(codec, text + extra)


def test_another_key_is_refused(codec: CursorCodec) -> None:
    other = CursorCodec(new_key())
    for position in POSITIONS:
        refused_cursor(codec, other.encode_cursor(position))
        refused_cursor(codec, other.encode_bookmark(position))
    for number in NUMBERS:
        refused_token(codec, other.encode_page_token(number))


def test_a_cursor_is_no_page_token_and_a_page_token_no_cursor(codec: CursorCodec) -> None:
    for position in POSITIONS:
        refused_token(codec, codec.encode_cursor(position))
        refused_token(codec, codec.encode_bookmark(position))
    for number in NUMBERS:
        refused_token(codec, codec._seal(_CURSOR, number, _NO_SALT))
        refused_cursor(codec, codec.encode_page_token(number))


def test_old_plaintext_cursors_and_tokens_are_refused(codec: CursorCodec) -> None:
    for position in (1, 5, 123, INT64_MAX):
        refused_cursor(codec, old_format(f"dnd1:{position}"))
        refused_token(codec, old_format(f"dndh1:{position}"))
    refused_token(codec, START_CURSOR)


def test_the_start_cursor_is_the_position_before_the_first_change(codec: CursorCodec) -> None:
    assert old_format("dnd1:0") == START_CURSOR
    assert codec.decode_cursor(START_CURSOR) == uniform(0, LANES)
    assert CursorCodec(new_key(), 3).decode_cursor(START_CURSOR) == (0, 0, 0)


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
        text = codec.encode_cursor(uniform(position, LANES))
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
            codec.encode_cursor((bad, *uniform(0, LANES - 1)))
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
    assert a.decode_cursor(b.encode_cursor(spread(77))) == spread(77)
    refused_cursor(CursorCodec(key_from_secret("t" * 40)), a.encode_cursor(spread(77)))


def test_module_functions_use_the_installed_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cursor, "_codec", None)
    with pytest.raises(Unavailable):
        cursor.encode_cursor(uniform(1, LANES))
    with pytest.raises(Unavailable):
        cursor.decode_cursor(START_CURSOR, "min_cursor")
    key = new_key()
    cursor.install_key(key)
    mine = CursorCodec(key)
    nine = spread(9_000)
    assert cursor.encode_cursor(nine) == mine.encode_cursor(nine)
    assert cursor.decode_cursor(mine.encode_bookmark(nine), "after_cursor") == nine
    assert cursor.decode_page_token(cursor.encode_page_token(8)) == 8
    assert cursor.decode_cursor(cursor.encode_bookmark(uniform(3, LANES))) == uniform(3, LANES)
    with pytest.raises(InvalidArgument):
        cursor.decode_cursor(CursorCodec(new_key()).encode_cursor(nine), "min_cursor")
    cursor.install_lanes(4)
    assert cursor.lanes() == 4
    assert cursor.decode_cursor(START_CURSOR) == uniform(0, 4)
    with pytest.raises(InvalidArgument):
        cursor.decode_cursor(mine.encode_cursor(nine), "min_cursor")
