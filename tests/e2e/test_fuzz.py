"""Property-based fuzzing (hypothesis) of every RPC against the live server.

Each RPC gets a strategy that builds its request with hostile values in every field: arbitrary
unicode (valid UTF-8: no surrogates), control characters, empty and very long strings (up to a
few thousand characters, a request stays well under 64 KB), strings that look valid (phone
numbers, email addresses, cursors and page tokens), open-enum numbers from -3 to 100, int64 and
int32 extremes, repeated fields of 0 to N items (and just under / over their limits), the scope
oneof unset / empty / a channel / all_channels true or false, and every boolean. A quarter of
the examples make every field hostile at once, half keep the request valid but one field, a
quarter are valid throughout, so that the deep paths (database, clear policy, idempotency,
versions) are fuzzed too. Calls may meet a contact that already has blocks and suppressions
(seeded by ordinary valid calls first), and consents (a recorded one, a pending double opt-in).

Properties, per example:

* the call answers OK or one of INVALID_ARGUMENT, FAILED_PRECONDITION, ABORTED, NOT_FOUND,
  OUT_OF_RANGE, RESOURCE_EXHAUSTED, PERMISSION_DENIED: never UNKNOWN, INTERNAL, UNAVAILABLE or a
  deadline, and an error message never carries a traceback;
* on an error, nothing was written: the example's location has the same rows in dnd_changes,
  dnd_blocks, dnd_address_suppressions, dnd_contacts, dnd_idempotency, dnd_location_settings,
  dnd_consents and dnd_consent_policy, and the change-log head did not move;
* a read (GetStatus, CheckSend, BatchCheckSend, ListHistory, GetKeywordSettings,
  GetConsentPolicy, WatchChanges) writes nothing even when it succeeds;
* on a successful write, every contact of the location has a version equal to its number of
  dnd_changes rows (and to the highest version logged): no partial write; a retry with the same
  idempotency key answers the same and writes nothing.

Each example works in a location of its own (a uuid prefix) whenever its location id is valid.
After every example the server must still be serving: a last test checks health SERVING, a normal
GetStatus, and that the server logged no ``rpc_internal_error`` while being fuzzed.

Examples are derandomized so CI is reproducible. To fuzz harder locally::

    DND_FUZZ_EXAMPLES=2000 .venv/bin/pytest tests/e2e/test_fuzz.py -q     # examples per RPC
    DND_FUZZ_RANDOM=1 .venv/bin/pytest tests/e2e/test_fuzz.py -q          # a fresh random seed too
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import threading
import time
import unicodedata
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc as pb_grpc
from dnd_server.cursor import CursorCodec, new_key
from dnd_server.domain.errors import InvalidArgument
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, assume, event, example, given, note, settings
from hypothesis import strategies as st

from tests.support import ServerProcess, bad_fields, cursor_codec, error_details, running_server

TIMEOUT = 10
# Examples per RPC; DND_FUZZ_EXAMPLES scales them (the defaults keep the file near 30 s).
SCALE = int(os.environ.get("DND_FUZZ_EXAMPLES", "0") or 0)
RANDOM = os.environ.get("DND_FUZZ_RANDOM", "") not in ("", "0")


def fuzz_settings(examples: int) -> settings:
    return settings(
        max_examples=SCALE or examples,
        deadline=None,
        derandomize=not RANDOM,
        database=None,
        print_blob=True,
        suppress_health_check=[
            HealthCheck.function_scoped_fixture,
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
        ],
    )


ALLOWED_ERRORS = {
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.PERMISSION_DENIED,
}

# --- values ----------------------------------------------------------------------------------

# Any code point protobuf can carry in a string (valid UTF-8: every one but the surrogates).
ANY_CHAR = st.characters(exclude_categories=("Cs",))
# Anything an identifier may hold: no control or format characters, no line separators
# (an identifier must also not start or end with whitespace: see ``_valid_id``).
ID_CHAR = st.characters(exclude_categories=("Cs", "Cc", "Cf", "Zl", "Zp"))
CONTROL_TEXT = st.text(
    st.one_of(st.characters(categories=("Cc",)), st.sampled_from("aZ09 -_@+.")), max_size=20
)


def b64(raw: bytes, padded: bool = False, urlsafe: bool = True) -> str:
    text = (base64.urlsafe_b64encode if urlsafe else base64.b64encode)(raw).decode()
    return text if padded else text.rstrip("=")


def cursor(seq: int | str) -> str:
    """A cursor of the first, plaintext format (refused now, but for ``START``)."""
    return b64(f"dnd1:{seq}".encode())


def page_token(version: int | str) -> str:
    """A page token of the first, plaintext format (refused now)."""
    return b64(f"dndh1:{version}".encode())


# The documented cursor before the first change, the one plaintext cursor still accepted.
START = cursor(0)


@dataclass(frozen=True)
class Sealed:
    """A cursor or page token of ``value`` sealed by the server's key (or, ``foreign``, by
    another deployment's), made when the example runs."""

    kind: str  # "cursor" or "page_token"
    value: int
    foreign: bool = False

    def resolve(self) -> str:
        codec = FOREIGN_CODEC if self.foreign else CODEC[0]
        if self.kind == "cursor":
            text: str = codec.encode_cursor((self.value,) * codec.lanes)
        else:
            text = codec.encode_page_token(self.value)
        return text


GENERAL_LITERALS = [
    "",
    " ",
    "\x00",
    "a\x00b",
    "\t",
    "\n",
    "\r\n",
    "\x1f",
    "\x7f",
    "\x85",
    "\u200b",
    "\u2028",
    "\ufeff",
    "\U0010ffff",
    "\U0001f600",
    "é",
    "null",
    "' OR '1'='1' --",
    "%s%n%x",
    "{}",
    "\\",
]
PHONES_VALID = ["+14155552671", "(415) 555-2671", "+44 20 7946 0958", "00442079460958"]
PHONES = [
    *PHONES_VALID,
    "4155552671",
    " +14155552671 ",
    "+1 415 555 2671 ext. 9",
    "\uff0b\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff12\uff16\uff17\uff11",  # full width
    "+99999999999999999999",
    "+",
    "00",
    "tel:+1-415-555-2671",
    "+1415555267\x001",
    "+1" + "5" * 300,
]
EMAILS_VALID = ["a@b.co", " USER@Example.COM ", "\u00fc@stra\u00dfe.de"]
EMAILS = [
    *EMAILS_VALID,
    "a@b",
    "a@@b.co",
    "a b@c.de",
    "a\x00@b.co",
    "a@b.co\x00",
    "@b.co",
    "a@b.co\u2028",
    "\u0130@b.co",
    "x" * 246 + "@b.co",
    "x" * 250 + "@b.co",
]
CURSORS_VALID: list[Any] = [START, Sealed("cursor", 1), Sealed("cursor", 123)]
CURSORS = [
    *CURSORS_VALID,
    Sealed("cursor", 2**63 - 1),
    Sealed("cursor", 5, foreign=True),
    Sealed("page_token", 5),
    cursor(1),
    cursor(123),
    b64(b"dnd1:123", padded=True),
    b64(b"dnd1:123", urlsafe=False, padded=True),
    cursor(2**63 - 1),
    cursor(2**63),
    cursor("9" * 40),
    cursor(-1),
    cursor(""),
    cursor(" 1"),
    cursor("\u0661\u0662"),  # Arabic-Indic digits
    b64(b"dnd1:\xff\xfe"),
    page_token(5),
    "dnd1:123",
    "=",
    "====",
    "ZG5kMTox====",
    "!!!",
]
PAGE_TOKENS_VALID: list[Any] = [
    Sealed("page_token", 1),
    Sealed("page_token", 2),
    Sealed("page_token", 2**63 - 1),
]
PAGE_TOKENS = [
    *PAGE_TOKENS_VALID,
    Sealed("page_token", 1, foreign=True),
    Sealed("cursor", 5),
    START,
    page_token(1),
    page_token(0),
    page_token(2**63),
    page_token(-1),
    cursor(5),
]
KEYWORDS = [
    "STOP",
    " stop! ",
    "Stop.",
    "START",
    "YES",
    "HELP",
    "UNSTOP",
    "OPT OUT",
    "ARRET",
    "please stop texting me",
    "\u00df",
    "\ufb00",
    "\u200bSTOP",
    "STOP\x00",
]
ERROR_CODES = ["30004", "30003", "30005", "30006", "21610", " 30004 ", "0", "-1", "9" * 33]
PROVIDERS = ["twilio", "mailgun", "x" * 64, "x" * 65]
WORDS = ["ARRET", "ALTO", "PARAR", "OUI", "SI", "stop", "help", "  ", "x" * 33, "Q\x00"]
BOUNDARY_LENGTHS = [127, 128, 129, 254, 255, 256, 257, 1000, 1001, 1600, 1601, 4096, 4097]
# A long string is one character repeated, at most this many UTF-8 bytes.
LONG_BYTES = 6000


def _long(fill: str, length: int) -> str:
    return fill * min(length, LONG_BYTES // len(fill.encode()))


LONG_TEXT = st.builds(
    _long,
    st.one_of(st.sampled_from(["x", "\u00e9", "\u65e5", "\U0001f600", "\x00", "\n"]), ANY_CHAR),
    st.one_of(st.sampled_from(BOUNDARY_LENGTHS), st.integers(0, 4100)),
)


# Hostile text shaped like an email address, a phone number, a cursor or page token.
PART = st.text(st.one_of(ANY_CHAR, st.characters(max_codepoint=127)), min_size=1, max_size=8)
EMAIL_SHAPED = st.builds("{}@{}.{}".format, PART, PART, PART)
PHONE_SHAPED = st.builds(
    "{}{}{}".format,
    st.sampled_from(["+1", "+44", "+", "00", "", "+1 (415) "]),
    st.text("0123456789 -().", max_size=16),
    st.text(ANY_CHAR, max_size=3),
)
CURSOR_SHAPED = st.builds(
    lambda prefix, body, padded: b64(prefix + body, padded),
    st.sampled_from([b"dnd1:", b"dndh1:", b"dnd1", b"dnd2:", b""]),
    st.one_of(st.binary(max_size=24), st.integers(-5, 2**70).map(lambda n: str(n).encode())),
    st.booleans(),
)


def hostile(
    *literals: list[str], long: bool = True, shaped: st.SearchStrategy[str] | None = None
) -> st.SearchStrategy[str]:
    """Arbitrary text: random unicode, control characters, literals (the field's own ones
    weigh more), very long, ``shaped``."""
    options = [st.text(ANY_CHAR, max_size=40), CONTROL_TEXT, st.sampled_from(GENERAL_LITERALS)]
    own = [x for group in literals for x in group]
    if own:
        options += [st.sampled_from(own)] * 2
    if long:
        options.append(LONG_TEXT)
    if shaped is not None:
        options.append(shaped)
    return st.one_of(options)


ADDRESS_SHAPED = st.one_of(EMAIL_SHAPED, PHONE_SHAPED)
CURSOR_HOSTILE = hostile(CURSORS, shaped=CURSOR_SHAPED)


def enum(values: range | list[int]) -> st.SearchStrategy[int]:
    """An open proto3 enum: a known value, or any number from -3 to 100."""
    return st.one_of(st.sampled_from(list(values)), st.integers(-3, 100))


INT64 = st.one_of(
    st.sampled_from([0, 1, -1, 2**63 - 1, -(2**63), 2**31, -(2**31) - 1]),
    st.integers(-(2**63), 2**63 - 1),
)
INT32 = st.one_of(
    st.sampled_from([0, 1, 2, 50, 499, 500, 501, -1, 2**31 - 1, -(2**31)]),
    st.integers(-(2**31), 2**31 - 1),
)
SHORT_VALID_TEXT = st.text(ID_CHAR, max_size=30)
ID_VALID = st.text(ID_CHAR, min_size=1, max_size=30)


@dataclass(frozen=True)
class Fresh:
    """A valid location id of this example alone, made unique when the example runs."""

    suffix: str

    def resolve(self) -> str:
        return f"fz-{uuid.uuid4().hex[:12]}-{self.suffix}"[:128]


LOC_VALID = st.builds(Fresh, st.text(ID_CHAR, max_size=30))
LOC_HOSTILE = hostile()
CONTACT_VALID = st.one_of(st.sampled_from(["c1", "c1", "c1", "c2"]), ID_VALID)
CONTACT_HOSTILE = hostile()


@dataclass(frozen=True)
class Head:
    """The cursor of the change log's head less ``back`` changes, taken when the example runs."""

    back: int


HEAD_SEQ: list[Any] = []  # a function reading the log head, set by the harness


# The codec sealing the server's cursors (its database's key), set by the harness.
CODEC: list[Any] = []
FOREIGN_CODEC = CursorCodec(new_key())


def resolve(value: Any) -> Any:
    if isinstance(value, Fresh | Sealed):
        return value.resolve()
    if isinstance(value, Head):
        return CODEC[0].encode_cursor(tuple(max(0, h - value.back) for h in HEAD_SEQ[0]()))
    if isinstance(value, dict):
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


class Fields:
    """Draws the fields of one request. A quarter of the examples let every field be hostile,
    half keep every field valid but one (``target``, hostile), a quarter are valid throughout
    (valid requests still meet hostile state: seeds, replayed keys, stale versions)."""

    def __init__(self, draw: Any, names: list[str]) -> None:
        self.draw = draw
        mode = draw(st.sampled_from(["every", "one", "one", "none"]))
        self.everything = mode == "every"
        self.target = draw(st.sampled_from(names)) if mode == "one" else None

    def __call__(
        self, name: str, valid: st.SearchStrategy[Any], bad: st.SearchStrategy[Any]
    ) -> Any:
        if self.everything:
            return self.draw(st.one_of(valid, bad))
        return self.draw(bad if name == self.target else valid)


# Ordinary valid writes a contact may have before the fuzzed call (on contact "c1").
SEEDS = [
    "manual_sms",
    "opt_out",
    "carrier_permanent",
    "spam",
    "unsubscribe",
    "inbound_all",
    "consent",
    "double_opt_in",
]
SEED_LISTS = st.lists(st.sampled_from(SEEDS), max_size=3, unique=True)


@dataclass
class Example:
    """One fuzzed request: ``fields`` with Fresh placeholders, the seeds to apply first."""

    fields: dict[str, Any]
    seeds: list[str]


def _copies(value: str, count: int) -> list[str]:
    return [value] * count


COPIES = st.integers(15, 21)


@st.composite
def rarely(draw: Any, common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any]) -> Any:
    """``rare`` one time in ten, ``common`` otherwise."""
    return draw(rare if draw(st.integers(0, 9)) == 0 else common)


@st.composite
def get_status_requests(draw: Any) -> Example:
    f = Fields(draw, ["location_id", "contact_id", "phones", "emails", "min_cursor"])
    # Mostly lists of short hostile values; now and then 15 to 21 long ones (near the limit of
    # 20, and a refusal large enough to meet the known metadata bug).
    phones = st.lists(hostile(PHONES, long=False, shaped=PHONE_SHAPED), max_size=22)
    long_phones = st.sampled_from(["+1" + "5" * 252, "\u00e9" * 254])
    phones_bad = rarely(phones, st.builds(_copies, long_phones, COPIES))
    emails = st.lists(hostile(EMAILS, long=False, shaped=EMAIL_SHAPED), max_size=22)
    long_emails = st.sampled_from(["x" * 254, "\U0001f600" * 200])
    emails_bad = rarely(emails, st.builds(_copies, long_emails, COPIES))
    return Example(
        {
            "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
            "contact_id": f("contact_id", CONTACT_VALID, CONTACT_HOSTILE),
            "phone_numbers": f(
                "phones", st.lists(st.sampled_from(PHONES_VALID), max_size=3), phones_bad
            ),
            "email_addresses": f(
                "emails", st.lists(st.sampled_from(EMAILS_VALID), max_size=3), emails_bad
            ),
            "min_cursor": f("min_cursor", st.sampled_from(["", *CURSORS_VALID]), CURSOR_HOSTILE),
            "fully_consistent": draw(st.booleans()),
        },
        draw(SEED_LISTS),
    )


SMS_REASONS = [2, 3, 4]
EMAIL_REASONS = list(range(5, 12))
ADDRESS_OF_CHANNEL = {1: PHONES_VALID, 2: EMAILS_VALID, 3: PHONES_VALID, 4: PHONES_VALID}


def address_for(channel: int) -> st.SearchStrategy[str]:
    """A valid address on ``channel`` (FACEBOOK and GMB take any plain id), or none."""
    return st.sampled_from(["", *ADDRESS_OF_CHANNEL.get(channel, ["psid-1"])])


ADDRESS_HOSTILE = hostile(PHONES, EMAILS, shaped=ADDRESS_SHAPED)


@dataclass(frozen=True)
class Shape:
    """A coherent (direction, scope, reason, address) of a SetDnd."""

    direction: int
    scope: pb.Scope | None
    reason: int
    address: str


@st.composite
def valid_shapes(draw: Any) -> Shape:
    kind = draw(st.sampled_from(["channel", "channel", "all", "inbound"]))
    if kind == "inbound":
        scope = draw(st.sampled_from([None, pb.Scope(all_channels=True)]))
        return Shape(2, scope, draw(st.sampled_from([0, 1])), "")
    if kind == "all":
        return Shape(1, pb.Scope(all_channels=True), draw(st.sampled_from([0, 1])), "")
    channel = draw(st.sampled_from([3, 3, 2, 2, 1, 4, 5, 6]))
    reasons = [0, 1] + (SMS_REASONS if channel == 3 else EMAIL_REASONS if channel == 2 else [])
    address = draw(st.sampled_from(["", *ADDRESS_OF_CHANNEL.get(channel, ["psid-1"])]))
    return Shape(1, pb.Scope(channel=channel), draw(st.sampled_from(reasons)), address)


@st.composite
def hostile_scopes(draw: Any) -> pb.Scope | None:
    kind = draw(st.sampled_from(["unset", "empty", "channel", "all"]))
    if kind == "unset":
        return None
    if kind == "empty":
        scope = pb.Scope()
        return scope
    if kind == "channel":
        return pb.Scope(channel=draw(enum(range(7))))
    return pb.Scope(all_channels=draw(st.booleans()))


@st.composite
def set_dnd_requests(draw: Any) -> Example:
    f = Fields(
        draw,
        [
            "location_id",
            "contact_id",
            "action",
            "direction",
            "scope",
            "reason",
            "source",
            "actor_id",
            "note",
            "evidence",
            "provider_detail",
            "expected_version",
            "idempotency_key",
            "address",
        ],
    )
    shape = draw(valid_shapes())
    expected = f(
        "expected_version",
        st.sampled_from([None, None, None, 0, 1]),
        st.one_of(st.none(), INT64),
    )
    fields = {
        "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
        "contact_id": f("contact_id", CONTACT_VALID, CONTACT_HOSTILE),
        "action": f("action", st.sampled_from([1, 2, 2]), enum(range(3))),
        "direction": f("direction", st.just(shape.direction), enum(range(3))),
        "scope": f("scope", st.just(shape.scope), hostile_scopes()),
        "reason": f("reason", st.just(shape.reason), enum(range(12))),
        "source": f("source", st.sampled_from(range(1, 6)), enum(range(6))),
        "actor_id": f("actor_id", SHORT_VALID_TEXT, hostile()),
        "note": f("note", SHORT_VALID_TEXT, hostile()),
        "evidence": f("evidence", SHORT_VALID_TEXT, hostile()),
        "provider_detail": f("provider_detail", SHORT_VALID_TEXT, hostile()),
        "suppression_removal_confirmed": draw(st.booleans()),
        "idempotency_key": f("idempotency_key", st.sampled_from(["", "", "k1", "k2"]), hostile()),
        "address": f("address", st.just(shape.address), ADDRESS_HOSTILE),
    }
    if fields["scope"] is None:
        del fields["scope"]
    if expected is not None:
        fields["expected_version"] = expected
    return Example(fields, draw(SEED_LISTS))


@st.composite
def check_send_requests(draw: Any) -> Example:
    f = Fields(
        draw,
        ["location_id", "contact_id", "channel", "direction", "send_kind", "address", "cursor"],
    )
    channel = draw(st.sampled_from(range(1, 7)))
    return Example(
        {
            "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
            "contact_id": f("contact_id", CONTACT_VALID, CONTACT_HOSTILE),
            "channel": f("channel", st.just(channel), enum(range(7))),
            "direction": f("direction", st.sampled_from(range(3)), enum(range(3))),
            "send_kind": f("send_kind", st.sampled_from(range(3)), enum(range(3))),
            "address": f("address", address_for(channel), ADDRESS_HOSTILE),
            "min_cursor": f("cursor", st.sampled_from(["", *CURSORS_VALID]), CURSOR_HOSTILE),
            "fully_consistent": draw(st.booleans()),
        },
        draw(SEED_LISTS),
    )


def _many_targets(count: int) -> list[pb.CheckTarget]:
    return [pb.CheckTarget(contact_id=f"c{i}") for i in range(count)]


def valid_targets(channel: int) -> st.SearchStrategy[list[pb.CheckTarget]]:
    target = st.builds(pb.CheckTarget, contact_id=CONTACT_VALID, address=address_for(channel))
    return st.lists(target, min_size=1, max_size=5)


TARGET_HOSTILE = st.builds(
    pb.CheckTarget,
    contact_id=st.one_of(CONTACT_VALID, hostile(long=False)),
    address=st.one_of(
        st.sampled_from(["", *PHONES_VALID, *EMAILS_VALID]),
        hostile(PHONES, EMAILS, long=False, shaped=ADDRESS_SHAPED),
    ),
)


@st.composite
def batch_check_requests(draw: Any) -> Example:
    f = Fields(draw, ["location_id", "channel", "direction", "send_kind", "targets", "min_cursor"])
    targets_bad = st.one_of(
        st.lists(TARGET_HOSTILE, max_size=8),
        st.builds(_many_targets, st.sampled_from([999, 1000, 1001])),
    )
    channel = draw(st.sampled_from(range(1, 7)))
    return Example(
        {
            "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
            "channel": f("channel", st.just(channel), enum(range(7))),
            "direction": f("direction", st.sampled_from(range(3)), enum(range(3))),
            "send_kind": f("send_kind", st.sampled_from(range(3)), enum(range(3))),
            "targets": f("targets", valid_targets(channel), targets_bad),
            "min_cursor": f("min_cursor", st.sampled_from(["", *CURSORS_VALID]), CURSOR_HOSTILE),
            "fully_consistent": draw(st.booleans()),
        },
        draw(SEED_LISTS),
    )


@st.composite
def inbound_requests(draw: Any) -> Example:
    f = Fields(
        draw,
        ["location_id", "contact_id", "channel", "body", "from_address", "idempotency_key"],
    )
    channel = draw(st.sampled_from([3, 3, 3, 1, 2, 4, 5]))
    return Example(
        {
            "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
            "contact_id": f("contact_id", CONTACT_VALID, CONTACT_HOSTILE),
            "channel": f("channel", st.just(channel), enum(range(7))),
            "body": f(
                "body",
                st.one_of(st.sampled_from(KEYWORDS[:-1]), SHORT_VALID_TEXT),
                hostile(KEYWORDS),
            ),
            "from_address": f("from_address", address_for(channel), ADDRESS_HOSTILE),
            "idempotency_key": f(
                "idempotency_key", st.sampled_from(["", "", "k1", "k2"]), hostile()
            ),
        },
        draw(SEED_LISTS),
    )


@st.composite
def sms_failure_requests(draw: Any) -> Example:
    f = Fields(
        draw,
        ["location_id", "contact_id", "to_address", "provider", "error_code", "idempotency_key"],
    )
    return Example(
        {
            "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
            "contact_id": f("contact_id", CONTACT_VALID, CONTACT_HOSTILE),
            "to_address": f("to_address", st.sampled_from(["", *PHONES_VALID]), ADDRESS_HOSTILE),
            "provider": f("provider", st.sampled_from(PROVIDERS[:3]), hostile(PROVIDERS)),
            "error_code": f("error_code", st.sampled_from(ERROR_CODES[:6]), hostile(ERROR_CODES)),
            "idempotency_key": f(
                "idempotency_key", st.sampled_from(["", "", "k1", "k2"]), hostile()
            ),
        },
        draw(SEED_LISTS),
    )


@st.composite
def email_event_requests(draw: Any) -> Example:
    f = Fields(
        draw,
        [
            "location_id",
            "contact_id",
            "to_address",
            "provider",
            "event",
            "provider_detail",
            "idempotency_key",
        ],
    )
    return Example(
        {
            "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
            "contact_id": f("contact_id", CONTACT_VALID, CONTACT_HOSTILE),
            "to_address": f("to_address", st.sampled_from(["", *EMAILS_VALID]), ADDRESS_HOSTILE),
            "provider": f("provider", st.sampled_from(PROVIDERS[:3]), hostile(PROVIDERS)),
            "event": f("event", st.sampled_from(range(1, 10)), enum(range(10))),
            "provider_detail": f("provider_detail", SHORT_VALID_TEXT, hostile()),
            "idempotency_key": f(
                "idempotency_key", st.sampled_from(["", "", "k1", "k2"]), hostile()
            ),
        },
        draw(SEED_LISTS),
    )


@st.composite
def list_history_requests(draw: Any) -> Example:
    f = Fields(draw, ["location_id", "contact_id", "page_size", "page_token"])
    return Example(
        {
            "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
            "contact_id": f("contact_id", CONTACT_VALID, CONTACT_HOSTILE),
            "page_size": f("page_size", st.sampled_from([0, 1, 2, 500]), INT32),
            "page_token": f(
                "page_token",
                st.sampled_from(["", *PAGE_TOKENS_VALID]),
                hostile(PAGE_TOKENS, CURSORS, shaped=CURSOR_SHAPED),
            ),
        },
        draw(SEED_LISTS),
    )


@st.composite
def get_keyword_settings_requests(draw: Any) -> Example:
    f = Fields(draw, ["location_id"])
    return Example({"location_id": f("location_id", LOC_VALID, LOC_HOSTILE)}, [])


WORD_HOSTILE = st.one_of(st.sampled_from(WORDS + KEYWORDS), hostile(long=False))


@st.composite
def keyword_settings(draw: Any, valid: bool) -> pb.KeywordSettings | None:
    if valid:
        outs = draw(st.lists(st.sampled_from(WORDS[:3]), max_size=3))
        ins = draw(st.lists(st.sampled_from(WORDS[3:5]), max_size=2))
    else:
        if draw(st.booleans()):
            return None
        lists = st.one_of(
            st.lists(WORD_HOSTILE, max_size=8),
            st.builds(lambda n: [f"W{i}" for i in range(n)], st.sampled_from([50, 51, 55])),
        )
        outs, ins = draw(lists), draw(lists)
    return pb.KeywordSettings(
        extra_opt_out_words=outs,
        extra_opt_in_words=ins,
        detect_revocation_phrases=draw(st.booleans()),
    )


@st.composite
def update_keyword_settings_requests(draw: Any) -> Example:
    f = Fields(draw, ["location_id", "settings"])
    fields = {
        "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
        "settings": f("settings", keyword_settings(valid=True), keyword_settings(valid=False)),
    }
    if fields["settings"] is None:
        del fields["settings"]
    return Example(fields, [])


PAST = st.integers(0, 3 * 365 * 86400).map(lambda back: int(time.time()) - back)
TIMESTAMP_VALID = st.one_of(st.none(), st.builds(Timestamp, seconds=PAST))
TIMESTAMP_HOSTILE = st.one_of(
    st.none(),
    st.builds(Timestamp, seconds=INT64, nanos=INT32),
    st.builds(Timestamp, seconds=st.integers(-(2**40), 2**40)),
    st.builds(Timestamp, seconds=st.integers(0, 2**34)),
)
EVIDENCE_FIELDS = [
    "form_url",
    "disclosure_text",
    "disclosure_version",
    "ip_address",
    "user_agent",
    "recording_ref",
]
EVIDENCE_VALID = st.builds(
    pb.ConsentEvidence, **{name: SHORT_VALID_TEXT for name in EVIDENCE_FIELDS}
)
EVIDENCE_HOSTILE = st.builds(pb.ConsentEvidence, **{name: hostile() for name in EVIDENCE_FIELDS})


@st.composite
def record_consent_requests(draw: Any) -> Example:
    names = [
        "location_id",
        "contact_id",
        "channel",
        "purpose",
        "address",
        "method",
        "kind",
        "implied_basis",
        "captured_at",
        "expires_at",
        "source",
        "actor_id",
        "evidence",
        "pending",
        "consent_source",
        "idempotency_key",
        "expected_version",
    ]
    f = Fields(draw, names)
    channel = draw(st.sampled_from(range(1, 7)))
    # Mostly coherent: express, or implied with a basis; pending only for a double opt-in.
    method = draw(st.sampled_from(range(1, 8)))
    kind = draw(st.sampled_from([0, 1, 2]))
    expected = f(
        "expected_version", st.sampled_from([None, None, 0, 1]), st.one_of(st.none(), INT64)
    )
    fields = {
        "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
        "contact_id": f("contact_id", CONTACT_VALID, CONTACT_HOSTILE),
        "channel": f("channel", st.just(channel), enum(range(7))),
        "purpose": f("purpose", st.sampled_from([1, 2]), enum(range(3))),
        "address": f("address", address_for(channel), ADDRESS_HOSTILE),
        "method": f("method", st.just(method), enum(range(8))),
        "kind": f("kind", st.just(kind), enum(range(3))),
        "implied_basis": f(
            "implied_basis",
            st.just(draw(st.sampled_from([1, 2])) if kind == 2 else 0),
            enum(range(3)),
        ),
        "captured_at": f("captured_at", TIMESTAMP_VALID, TIMESTAMP_HOSTILE),
        "expires_at": f("expires_at", st.none(), TIMESTAMP_HOSTILE),
        "source": f("source", st.sampled_from([1, 2, 3, 5]), enum(range(6))),
        "actor_id": f("actor_id", SHORT_VALID_TEXT, hostile()),
        "evidence": f("evidence", EVIDENCE_VALID, EVIDENCE_HOSTILE),
        "pending": f("pending", st.just(method == 3 and draw(st.booleans())), st.booleans()),
        "consent_source": f("consent_source", SHORT_VALID_TEXT, hostile()),
        "idempotency_key": f("idempotency_key", st.sampled_from(["", "", "k1", "k2"]), hostile()),
    }
    for name in ("captured_at", "expires_at"):
        if fields[name] is None:
            del fields[name]
    if expected is not None:
        fields["expected_version"] = expected
    return Example(fields, draw(SEED_LISTS))


@st.composite
def revoke_consent_requests(draw: Any) -> Example:
    f = Fields(
        draw,
        [
            "location_id",
            "contact_id",
            "channel",
            "purpose",
            "address",
            "source",
            "actor_id",
            "note",
            "idempotency_key",
        ],
    )
    channel = draw(st.sampled_from(range(1, 7)))
    return Example(
        {
            "location_id": f("location_id", LOC_VALID, LOC_HOSTILE),
            "contact_id": f("contact_id", CONTACT_VALID, CONTACT_HOSTILE),
            "channel": f("channel", st.just(channel), enum(range(7))),
            "purpose": f("purpose", st.sampled_from([0, 1, 2]), enum(range(3))),
            "address": f("address", address_for(channel), ADDRESS_HOSTILE),
            "source": f("source", st.sampled_from([1, 2, 3, 5]), enum(range(6))),
            "actor_id": f("actor_id", SHORT_VALID_TEXT, hostile()),
            "note": f("note", SHORT_VALID_TEXT, hostile()),
            "idempotency_key": f(
                "idempotency_key", st.sampled_from(["", "", "k1", "k2"]), hostile()
            ),
        },
        draw(SEED_LISTS),
    )


@st.composite
def get_consent_policy_requests(draw: Any) -> Example:
    f = Fields(draw, ["location_id"])
    return Example({"location_id": f("location_id", LOC_VALID, LOC_HOSTILE)}, [])


CHANNEL_POLICY_VALID = st.builds(
    lambda channel, informational: pb.ChannelConsentPolicy(
        channel=channel, require_marketing=True, require_informational=informational
    ),
    st.sampled_from(range(1, 7)),
    st.booleans(),
)
CHANNEL_POLICY_HOSTILE = st.builds(
    pb.ChannelConsentPolicy,
    channel=enum(range(7)),
    require_marketing=st.booleans(),
    require_informational=st.booleans(),
)


@st.composite
def update_consent_policy_requests(draw: Any) -> Example:
    f = Fields(draw, ["location_id", "channels", "window"])
    channels_valid = st.lists(CHANNEL_POLICY_VALID, max_size=3, unique_by=lambda c: c.channel)
    channels_bad = st.lists(CHANNEL_POLICY_HOSTILE, max_size=12)
    window_valid = st.sampled_from([0, 60, 3600, 86400, 2_592_000])
    policy = pb.ConsentPolicy(
        channels=f("channels", channels_valid, channels_bad),
        double_opt_in_window_seconds=f("window", window_valid, INT64),
    )
    return Example({"location_id": f("location_id", LOC_VALID, LOC_HOSTILE), "policy": policy}, [])


def _many_locations(count: int) -> list[str]:
    return [f"fz-many-{i}" for i in range(count)]


@st.composite
def watch_requests(draw: Any) -> Example:
    f = Fields(draw, ["location_ids", "channels", "directions", "sources", "kinds", "after_cursor"])
    locations_bad = st.one_of(
        st.lists(st.one_of(LOC_VALID, hostile(long=False)), max_size=4),
        st.builds(_many_locations, st.sampled_from([1000, 1001])),
    )
    return Example(
        {
            "location_ids": f(
                "location_ids", st.lists(LOC_VALID, min_size=1, max_size=3), locations_bad
            ),
            "channels": f(
                "channels",
                st.lists(st.sampled_from(range(1, 7)), max_size=3),
                st.lists(enum(range(7)), max_size=5),
            ),
            "directions": f(
                "directions",
                st.lists(st.sampled_from([1, 2]), max_size=2),
                st.lists(enum(range(3)), max_size=5),
            ),
            "sources": f(
                "sources",
                st.lists(st.sampled_from(range(1, 6)), max_size=3),
                st.lists(enum(range(6)), max_size=5),
            ),
            "kinds": f(
                "kinds",
                st.lists(st.sampled_from(range(1, 4)), max_size=2),
                st.lists(enum(range(4)), max_size=5),
            ),
            "after_cursor": f(
                "after_cursor",
                st.one_of(st.just(""), st.builds(Head, st.integers(0, 20))),
                CURSOR_HOSTILE,
            ),
        },
        [],
    )


# --- the live server and its database --------------------------------------------------------


class Probe:
    """One database connection kept for the whole module (a connection per query is slow)."""

    def __init__(self, url: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.conn = self.loop.run_until_complete(asyncpg.connect(url))

    def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return self.loop.run_until_complete(self.conn.fetch(query, *args))

    def close(self) -> None:
        self.loop.run_until_complete(self.conn.close())
        self.loop.close()


SNAPSHOT = """
SELECT (SELECT array_agg(seq ORDER BY lane) FROM dnd_log_lanes) AS head,
       (SELECT count(*) FROM dnd_changes WHERE location_id = $1) AS changes,
       (SELECT count(*) FROM dnd_blocks WHERE location_id = $1) AS blocks,
       (SELECT count(*) FROM dnd_address_suppressions WHERE location_id = $1) AS suppressions,
       (SELECT count(*) FROM dnd_contacts WHERE location_id = $1) AS contacts,
       (SELECT count(*) FROM dnd_idempotency WHERE location_id = $1) AS idempotency,
       (SELECT string_agg(k::text, ';' ORDER BY contact_id, channel, purpose, address)
        FROM dnd_consents k WHERE location_id = $1) AS consents,
       (SELECT string_agg(p::text, ';' ORDER BY channel)
        FROM dnd_consent_policy p WHERE location_id = $1) AS policy,
       (SELECT s::text FROM dnd_location_settings s WHERE location_id = $1) AS settings
"""

CONSISTENCY = """
SELECT c.contact_id, c.version,
       (SELECT count(*) FROM dnd_changes x
         WHERE x.location_id = c.location_id AND x.contact_id = c.contact_id) AS changes,
       (SELECT coalesce(max(version), 0) FROM dnd_changes x
         WHERE x.location_id = c.location_id AND x.contact_id = c.contact_id) AS top
FROM dnd_contacts c WHERE c.location_id = $1
"""


@pytest.fixture(scope="module")
def probe(server: ServerProcess, database_url: str) -> Iterator[Probe]:
    p = Probe(database_url)
    yield p
    p.close()


@pytest.fixture(scope="module")
def log_mark(server: ServerProcess) -> int:
    """Where the server's log stood before this module fuzzed it."""
    return len(server.collect_logs())


class Harness:
    def __init__(self, stub: Any, probe: Probe) -> None:
        self.stub = stub
        self.probe = probe
        HEAD_SEQ[:] = [self.head]
        CODEC[:] = [CursorCodec(bytes(probe.fetch("SELECT key FROM dnd_cursor_key")[0][0]))]

    def head(self) -> tuple[int, ...]:
        found = self.probe.fetch("SELECT array_agg(seq ORDER BY lane) FROM dnd_log_lanes")
        return tuple(found[0][0])

    def snapshot(self, locations: list[str]) -> list[dict[str, Any]]:
        # PostgreSQL text cannot hold NUL: no row of such a location can exist.
        return [
            dict(self.probe.fetch(SNAPSHOT, "" if "\x00" in loc else loc)[0])
            for loc in dict.fromkeys(locations)
        ] or [dict(self.probe.fetch(SNAPSHOT, "")[0])]

    def assert_consistent(self, location: str) -> None:
        if "\x00" in location:
            return
        for row in self.probe.fetch(CONSISTENCY, location):
            assert row["version"] == row["changes"] == row["top"], (
                f"partial write: contact {row['contact_id']!r} has version {row['version']} "
                f"but {row['changes']} changes logged (highest version {row['top']})"
            )

    def seed(self, location: str, seeds: list[str]) -> None:
        """Ordinary valid writes on contact c1, so the fuzzed call meets existing state."""
        s, c = self.stub, "c1"
        for name in seeds:
            if name == "manual_sms":
                s.SetDnd(
                    pb.SetDndRequest(
                        location_id=location,
                        contact_id=c,
                        action=pb.DND_ACTION_ENABLE,
                        direction=pb.DIRECTION_OUTBOUND,
                        scope=pb.Scope(channel=pb.CHANNEL_SMS),
                        source=pb.SOURCE_USER,
                    ),
                    timeout=TIMEOUT,
                )
            elif name == "inbound_all":
                s.SetDnd(
                    pb.SetDndRequest(
                        location_id=location,
                        contact_id=c,
                        action=pb.DND_ACTION_ENABLE,
                        direction=pb.DIRECTION_INBOUND,
                        source=pb.SOURCE_WORKFLOW,
                    ),
                    timeout=TIMEOUT,
                )
            elif name == "opt_out":
                s.ProcessInboundMessage(
                    pb.ProcessInboundMessageRequest(
                        location_id=location,
                        contact_id=c,
                        channel=pb.CHANNEL_SMS,
                        body="STOP",
                        from_address="+14155552671",
                    ),
                    timeout=TIMEOUT,
                )
            elif name in ("consent", "double_opt_in"):
                pending = name == "double_opt_in"
                s.RecordConsent(
                    pb.RecordConsentRequest(
                        location_id=location,
                        contact_id=c,
                        channel=pb.CHANNEL_SMS,
                        purpose=pb.CONSENT_PURPOSE_INFORMATIONAL
                        if pending
                        else pb.CONSENT_PURPOSE_MARKETING,
                        address="" if pending else "+14155552671",
                        method=pb.CONSENT_METHOD_DOUBLE_OPT_IN
                        if pending
                        else pb.CONSENT_METHOD_WEB_FORM,
                        pending=pending,
                        source=pb.SOURCE_USER,
                        evidence=pb.ConsentEvidence(form_url="https://example.com/f"),
                    ),
                    timeout=TIMEOUT,
                )
            elif name == "carrier_permanent":
                s.ReportSmsDeliveryFailure(
                    pb.ReportSmsDeliveryFailureRequest(
                        location_id=location,
                        contact_id=c,
                        to_address="+442079460958",
                        provider="twilio",
                        error_code="30004",
                    ),
                    timeout=TIMEOUT,
                )
            else:
                event = (
                    pb.EMAIL_EVENT_SPAM_COMPLAINT
                    if name == "spam"
                    else pb.EMAIL_EVENT_UNSUBSCRIBE_LINK
                )
                s.ReportEmailEvent(
                    pb.ReportEmailEventRequest(
                        location_id=location,
                        contact_id=c,
                        to_address="a@b.co",
                        provider="mailgun",
                        event=event,
                    ),
                    timeout=TIMEOUT,
                )

    def run(
        self,
        rpc: str,
        cls: type[Any],
        example: Example,
        write: bool,
    ) -> tuple[Any, Any]:
        """Build, seed, call, and check the properties; (request, response or None)."""
        request = cls(**resolve(example.fields))
        note(f"{rpc}({request!r})")
        # Known bug, excluded here and reproduced by test_nul_in_email_address_is_refused.
        assume(not any(nul_email(address) for address in email_addresses(request)))
        locations = [request.location_id]
        if example.seeds and all(_valid_id(loc) for loc in locations):
            self.seed(locations[0], example.seeds)
            note(f"seeded c1 with {example.seeds}")
        before = self.snapshot(locations)
        response, error = call(getattr(self.stub, rpc), request)
        event(f"{rpc}: {error.code().name if error else 'OK'}")
        after = self.snapshot(locations)
        if error is not None:
            check_error(rpc, error)
            assert after == before, f"{rpc} failed with {error.code().name} but wrote: {after}"
            return request, None
        if not write:
            assert after == before, f"read {rpc} wrote something: {before} -> {after}"
            return request, response
        for loc in locations:
            self.assert_consistent(loc)
        key = getattr(request, "idempotency_key", "")
        if key:
            again, error = call(getattr(self.stub, rpc), request)
            assert error is None, f"retry with the same idempotency key failed: {error!r}"
            assert again == response, "retry with the same idempotency key answered otherwise"
            assert self.snapshot(locations) == after, "a retry with the same key wrote again"
        return request, response


# The server's email syntax check (dnd_server.domain.addresses), to recognise the known bug.
_EMAIL_SYNTAX = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def nul_email(raw: str) -> bool:
    """Known bug (test_nul_in_email_address_is_refused): an address the server accepts as an
    email although it holds NUL, which PostgreSQL text cannot store: INTERNAL."""
    text = raw.strip().lower()
    return (
        "\x00" in text and len(raw) <= 254 and len(text) <= 254 and bool(_EMAIL_SYNTAX.match(text))
    )


INT64_MAX = 2**63 - 1


def cursor_seq(text: str) -> int | None:
    """The highest sequence number the server reads in a cursor (dnd_server.cursor), None if
    none."""
    try:
        position: tuple[int, ...] = CODEC[0].decode_cursor(text)
    except InvalidArgument:
        return None
    return max(position)


def email_addresses(request: Any) -> list[str]:
    """The fields of ``request`` the server reads as email addresses."""
    name = request.DESCRIPTOR.name
    if name == "GetStatusRequest":
        return list(request.email_addresses)
    if name == "ReportEmailEventRequest":
        return [request.to_address]
    if name == "BatchCheckSendRequest":
        return [t.address for t in request.targets] if request.channel == pb.CHANNEL_EMAIL else []
    if name == "SetDndRequest":
        scope = request.scope
        named = scope.WhichOneof("kind") == "channel" and scope.channel == pb.CHANNEL_EMAIL
        return [request.address] if named else []
    address = getattr(request, "address", getattr(request, "from_address", ""))
    return [address] if getattr(request, "channel", 0) == pb.CHANNEL_EMAIL else []


def _valid_id(value: str) -> bool:
    return (
        0 < len(value) <= 128
        and value == value.strip()
        and not any(unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp") for ch in value)
    )


def call(method: Any, request: Any) -> tuple[Any, grpc.RpcError | None]:
    try:
        return method(request, timeout=TIMEOUT), None
    except grpc.RpcError as error:
        return None, error


def oversized_status(error: grpc.RpcError) -> bool:
    """Known bug (see test_many_violations_fit_in_the_status below): a refusal listing many
    violations has trailing metadata over gRPC's default 8 KB limit, so the client drops it and
    reports RESOURCE_EXHAUSTED "received metadata size exceeds soft/hard limit" instead of the
    server's INVALID_ARGUMENT. The fuzz properties let exactly that answer through (it still may
    not have written anything); the xfail test keeps the bug visible."""
    return error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and (
        "received metadata size exceeds" in (error.details() or "")
    )


def check_error(rpc: str, error: grpc.RpcError) -> None:
    code = error.code()
    message = error.details() or ""
    assert code in ALLOWED_ERRORS, f"{rpc} answered {code.name}: {message}"
    assert message.strip(), f"{rpc} answered {code.name} without a message"
    assert "Traceback" not in message
    if oversized_status(error):
        event(f"{rpc}: known bug, status metadata over 8 KB")
        return
    # Every refusal of the service carries a google.rpc.ErrorInfo of its domain: an error
    # without one did not come from the service (e.g. a status the client could not read).
    try:
        info = error_details(error).get("ErrorInfo")
    except ValueError as mismatch:  # grpc_status: the details name another code
        raise AssertionError(f"{rpc} answered {code.name}: {mismatch}") from None
    assert info is not None and info.domain == "dnd.v1", (
        f"{rpc} answered {code.name} without the service's ErrorInfo: {message}"
    )
    if code == grpc.StatusCode.INVALID_ARGUMENT:
        assert bad_fields(error), f"INVALID_ARGUMENT without BadRequest fields: {message}"
        assert info.reason == "INVALID_ARGUMENT"


@pytest.fixture(scope="module")
def harness(stub: Any, probe: Probe, log_mark: int) -> Harness:
    return Harness(stub, probe)


# --- one property per RPC --------------------------------------------------------------------


@fuzz_settings(150)
@given(example=get_status_requests())
def test_fuzz_get_status(harness: Harness, example: Example) -> None:
    request, response = harness.run("GetStatus", pb.GetStatusRequest, example, write=False)
    if response is not None:
        assert response.status.location_id == request.location_id
        assert response.status.contact_id == request.contact_id


# Pinned: the clear policy refuses (FAILED_PRECONDITION) and changes nothing.
DISABLE_SMS = {
    "location_id": Fresh("pinned"),
    "contact_id": "c1",
    "action": pb.DND_ACTION_DISABLE,
    "direction": pb.DIRECTION_OUTBOUND,
    "scope": pb.Scope(channel=pb.CHANNEL_SMS),
    "source": pb.SOURCE_USER,
    "address": "+14155552671",
}
DISABLE_EMAIL = {
    **DISABLE_SMS,
    "scope": pb.Scope(channel=pb.CHANNEL_EMAIL),
    "source": pb.SOURCE_SUPPORT,
    "address": "a@b.co",
    "suppression_removal_confirmed": True,
}


@fuzz_settings(250)
@given(example=set_dnd_requests())
@example(example=Example(DISABLE_SMS, ["opt_out"]))
@example(example=Example(DISABLE_EMAIL, ["spam"]))
def test_fuzz_set_dnd(harness: Harness, example: Example) -> None:
    request, response = harness.run("SetDnd", pb.SetDndRequest, example, write=True)
    if response is not None:
        assert response.status.location_id == request.location_id
        assert response.status.contact_id == request.contact_id


@fuzz_settings(150)
@given(example=check_send_requests())
def test_fuzz_check_send(harness: Harness, example: Example) -> None:
    _, response = harness.run("CheckSend", pb.CheckSendRequest, example, write=False)
    if response is not None:
        assert response.allowed == (not response.denied_by and not response.denied_by_address)


@fuzz_settings(150)
@given(example=batch_check_requests())
def test_fuzz_batch_check_send(harness: Harness, example: Example) -> None:
    request, response = harness.run(
        "BatchCheckSend", pb.BatchCheckSendRequest, example, write=False
    )
    if response is not None:
        assert [r.contact_id for r in response.results] == [t.contact_id for t in request.targets]


@fuzz_settings(200)
@given(example=inbound_requests())
def test_fuzz_process_inbound_message(harness: Harness, example: Example) -> None:
    harness.run("ProcessInboundMessage", pb.ProcessInboundMessageRequest, example, write=True)


@fuzz_settings(150)
@given(example=sms_failure_requests())
def test_fuzz_report_sms_delivery_failure(harness: Harness, example: Example) -> None:
    harness.run("ReportSmsDeliveryFailure", pb.ReportSmsDeliveryFailureRequest, example, write=True)


@fuzz_settings(150)
@given(example=email_event_requests())
def test_fuzz_report_email_event(harness: Harness, example: Example) -> None:
    harness.run("ReportEmailEvent", pb.ReportEmailEventRequest, example, write=True)


@fuzz_settings(150)
@given(example=list_history_requests())
def test_fuzz_list_history(harness: Harness, example: Example) -> None:
    request, response = harness.run("ListHistory", pb.ListHistoryRequest, example, write=False)
    if response is not None:
        assert len(response.entries) <= (request.page_size or 50)
        # Newest first: the contact's own changes in descending version order (changes of
        # suppressions its events set, made by other contacts' requests, carry theirs).
        versions = [e.version for e in response.entries if e.contact_id == request.contact_id]
        assert versions == sorted(versions, reverse=True)


@fuzz_settings(60)
@given(example=get_keyword_settings_requests())
def test_fuzz_get_keyword_settings(harness: Harness, example: Example) -> None:
    harness.run("GetKeywordSettings", pb.GetKeywordSettingsRequest, example, write=False)


@fuzz_settings(150)
@given(example=update_keyword_settings_requests())
def test_fuzz_update_keyword_settings(harness: Harness, example: Example) -> None:
    request, response = harness.run(
        "UpdateKeywordSettings", pb.UpdateKeywordSettingsRequest, example, write=True
    )
    if response is not None:
        stored = harness.stub.GetKeywordSettings(
            pb.GetKeywordSettingsRequest(location_id=request.location_id), timeout=TIMEOUT
        )
        assert stored.settings == response.settings


@fuzz_settings(100)
@given(example=record_consent_requests())
def test_fuzz_record_consent(harness: Harness, example: Example) -> None:
    request, response = harness.run("RecordConsent", pb.RecordConsentRequest, example, write=True)
    if response is not None:
        consent = response.consent
        assert (consent.channel, consent.purpose) == (request.channel, request.purpose)
        assert list(response.status.consents).count(consent) == 1


@fuzz_settings(50)
@given(example=revoke_consent_requests())
def test_fuzz_revoke_consent(harness: Harness, example: Example) -> None:
    _, response = harness.run("RevokeConsent", pb.RevokeConsentRequest, example, write=True)
    if response is not None:
        assert response.changed == bool(response.revoked)
        assert all(c.status == pb.CONSENT_STATUS_REVOKED for c in response.revoked)


@fuzz_settings(30)
@given(example=get_consent_policy_requests())
def test_fuzz_get_consent_policy(harness: Harness, example: Example) -> None:
    harness.run("GetConsentPolicy", pb.GetConsentPolicyRequest, example, write=False)


@fuzz_settings(60)
@given(example=update_consent_policy_requests())
def test_fuzz_update_consent_policy(harness: Harness, example: Example) -> None:
    request, response = harness.run(
        "UpdateConsentPolicy", pb.UpdateConsentPolicyRequest, example, write=True
    )
    if response is not None:
        stored = harness.stub.GetConsentPolicy(
            pb.GetConsentPolicyRequest(location_id=request.location_id), timeout=TIMEOUT
        )
        assert stored.policy == response.policy


# How long a WatchChanges example waits for its first message (bookmarks come every 0.5 s).
WATCH_WAIT = 2.0


def first_message(stub: Any, request: pb.WatchChangesRequest) -> tuple[Any, Any]:
    """(first message or None, error or None); the stream is cancelled either way.

    A stream from now answers a bookmark at once. One resuming from an old cursor first scans
    the log after it, silently when the filter matches none of it: no message yet is accepted
    there."""
    stream = stub.WatchChanges(request, timeout=TIMEOUT)
    box: dict[str, Any] = {}

    def read() -> None:
        try:
            box["message"] = next(stream)
        except grpc.RpcError as error:
            box["error"] = error
        except StopIteration:
            box["ended"] = True

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(WATCH_WAIT)
    stream.cancel()
    reader.join(TIMEOUT)
    error = box.get("error")
    if error is not None and error.code() == grpc.StatusCode.CANCELLED and not box.get("message"):
        assert request.after_cursor, f"no first message within {WATCH_WAIT} s"
        event("WatchChanges: still catching up, no message yet")
        return None, None
    return box.get("message"), error


@fuzz_settings(100)
@given(example=watch_requests())
def test_fuzz_watch_changes(harness: Harness, example: Example) -> None:
    request = pb.WatchChangesRequest(**resolve(example.fields))
    note(f"WatchChanges({request!r})")
    # Known bug, excluded here and reproduced by test_watch_from_the_last_possible_cursor.
    assume(cursor_seq(request.after_cursor) != INT64_MAX)
    before = harness.snapshot(list(request.location_ids)[:3])
    message, error = first_message(harness.stub, request)
    event(f"WatchChanges: {error.code().name if error else 'OK'}")
    if error is not None:
        check_error("WatchChanges", error)
    elif message is not None:
        assert message.WhichOneof("message") in ("event", "bookmark")
    assert harness.snapshot(list(request.location_ids)[:3]) == before


# --- after the fuzzing -----------------------------------------------------------------------


def test_server_still_serving_after_fuzzing(
    server: ServerProcess, stub: Any, log_mark: int
) -> None:
    assert server.health() == "SERVING"
    status = stub.GetStatus(
        pb.GetStatusRequest(location_id="fz-after", contact_id="c1"), timeout=TIMEOUT
    ).status
    assert status.location_id == "fz-after"
    assert status.version == 0
    internal = [e for e in server.sync_logs()[log_mark:] if e.get("event") == "rpc_internal_error"]
    assert not internal, internal[0].get("exception", "")[-2000:]


# --- server bugs found by the fuzzing (strict xfail: they pass once fixed) -------------------

NUL_EMAIL = "a\x00@b.co"
NUL_EMAIL_REQUESTS = {
    "GetStatus": (
        pb.GetStatusRequest(contact_id="c1", email_addresses=[NUL_EMAIL]),
        "email_addresses[0]",
    ),
    "CheckSend": (
        pb.CheckSendRequest(contact_id="c1", channel=pb.CHANNEL_EMAIL, address=NUL_EMAIL),
        "address",
    ),
    "BatchCheckSend": (
        pb.BatchCheckSendRequest(
            channel=pb.CHANNEL_EMAIL, targets=[pb.CheckTarget(contact_id="c1", address=NUL_EMAIL)]
        ),
        "targets[0].address",
    ),
    "SetDnd": (
        pb.SetDndRequest(
            contact_id="c1",
            action=pb.DND_ACTION_ENABLE,
            direction=pb.DIRECTION_OUTBOUND,
            scope=pb.Scope(channel=pb.CHANNEL_EMAIL),
            source=pb.SOURCE_USER,
            address=NUL_EMAIL,
        ),
        "address",
    ),
    "ReportEmailEvent": (
        pb.ReportEmailEventRequest(
            contact_id="c1",
            to_address=NUL_EMAIL,
            provider="mailgun",
            event=pb.EMAIL_EVENT_BOUNCE,
        ),
        "to_address",
    ),
    "ProcessInboundMessage": (
        pb.ProcessInboundMessageRequest(
            contact_id="c1", channel=pb.CHANNEL_EMAIL, body="hi", from_address=NUL_EMAIL
        ),
        "from_address",
    ),
}


@pytest.fixture(scope="module")
def isolated_server(fresh_database: Any) -> Iterator[ServerProcess]:
    """A server of its own, so that the internal errors of the bug reproductions below do not
    reach the log of the session server (which other tests check)."""
    with running_server(fresh_database()) as process:
        yield process


@pytest.mark.parametrize("rpc", list(NUL_EMAIL_REQUESTS))
def test_nul_in_email_address_is_refused(isolated_server: ServerProcess, rpc: str) -> None:
    template, field = NUL_EMAIL_REQUESTS[rpc]
    request = type(template)()
    request.CopyFrom(template)
    request.location_id = f"fz-nul-{uuid.uuid4().hex[:12]}"
    with grpc.insecure_channel(isolated_server.addr) as channel:
        stub = pb_grpc.DndServiceStub(channel)
        _, error = call(getattr(stub, rpc), request)
    assert error is not None, f"{rpc} accepted an email address holding NUL"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
    assert field in bad_fields(error)


def test_many_violations_fit_in_the_status(stub: Any) -> None:
    # 1,000 targets (the documented maximum), each with an email address on the SMS channel.
    request = pb.BatchCheckSendRequest(
        location_id=f"fz-big-{uuid.uuid4().hex[:12]}",
        channel=pb.CHANNEL_SMS,
        targets=[pb.CheckTarget(contact_id=f"c{i}", address="a@b.co") for i in range(1000)],
    )
    _, error = call(stub.BatchCheckSend, request)
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"


def test_watch_from_the_last_possible_cursor(isolated_server: ServerProcess) -> None:
    codec = cursor_codec(isolated_server.database_url)
    last = codec.encode_cursor((INT64_MAX,) * codec.lanes)
    request = pb.WatchChangesRequest(after_cursor=last)
    with grpc.insecure_channel(isolated_server.addr) as channel:
        _, error = first_message(pb_grpc.DndServiceStub(channel), request)
    assert error is not None
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, f"{error.code()}: {error.details()}"
    assert bad_fields(error) == ["after_cursor"]
