"""Request validation over real gRPC: every RPC, every field, bad values refused field by field.

Every refusal must be INVALID_ARGUMENT with a google.rpc.BadRequest naming the field, an ErrorInfo
of reason INVALID_ARGUMENT, a message a person can read, and no write at all (no contact row, no
block, no change-log row). Boundary values (128-character ids, 128 code points of multi-byte text,
maximum-length texts) are accepted.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests.support import (
    ALL_SCOPE,
    DISABLE,
    ENABLE,
    IN,
    OUT,
    Database,
    bad_fields,
    channel_scope,
    error_details,
)

TIMEOUT = 10

# Drop a field from a request built by the helpers below.
UNSET: Any = object()

SMS_REASONS = [
    pb.REASON_SMS_OPT_OUT_KEYWORD,
    pb.REASON_SMS_CARRIER_PERMANENT,
    pb.REASON_SMS_CARRIER_TEMPORARY,
]
EMAIL_REASONS = [
    pb.REASON_EMAIL_HARD_BOUNCE,
    pb.REASON_EMAIL_GENERIC_FAILURE,
    pb.REASON_EMAIL_SUPPRESS_BOUNCE,
    pb.REASON_EMAIL_SUPPRESS_UNSUBSCRIBE,
    pb.REASON_EMAIL_SUPPRESS_COMPLAINT,
    pb.REASON_EMAIL_SPAM_COMPLAINT,
    pb.REASON_EMAIL_UNSUBSCRIBE_LINK,
]
NON_MANUAL_REASONS = SMS_REASONS + EMAIL_REASONS

# Identifiers that must be refused, by a readable test id.
BAD_IDS = {
    "empty": "",
    "129-ascii": "x" * 129,
    "129-two-byte": "é" * 129,
    "129-four-byte": "\U0001f600" * 129,
    "nul": "id\x00x",
    "unit-separator": "id\x1fx",
    "del": "id\x7fx",
    "newline": "id\nx",
    "tab": "\tid",
    "carriage-return": "id\r",
    "c1-next-line": "id\x85",
    "only-control": "\x01",
}


def _name(value: int, enum: Any) -> str:
    return str(enum.Name(value)) if value in enum.values() else str(value)


def _unique(prefix: str, fill: str, length: int) -> str:
    """A unique id of exactly ``length`` code points: a uuid prefix padded with ``fill``."""
    head = f"{prefix}-{uuid.uuid4().hex[:12]}-"
    return head + fill * (length - len(head))


def _build(cls: Any, defaults: dict[str, Any], overrides: dict[str, Any]) -> Any:
    fields = {**defaults, **overrides}
    return cls(**{k: v for k, v in fields.items() if v is not UNSET})


def set_req(loc: str, contact: str, **overrides: Any) -> pb.SetDndRequest:
    """A valid ENABLE of a MANUAL outbound SMS block, with ``overrides`` applied."""
    defaults = {
        "location_id": loc,
        "contact_id": contact,
        "action": ENABLE,
        "direction": OUT,
        "scope": channel_scope(pb.CHANNEL_SMS),
        "source": pb.SOURCE_USER,
    }
    return _build(pb.SetDndRequest, defaults, overrides)  # type: ignore[no-any-return]


def check_req(loc: str, contact: str, **overrides: Any) -> pb.CheckSendRequest:
    defaults = {"location_id": loc, "contact_id": contact, "channel": pb.CHANNEL_SMS}
    return _build(pb.CheckSendRequest, defaults, overrides)  # type: ignore[no-any-return]


def status_req(loc: str, contact: str, **overrides: Any) -> pb.GetStatusRequest:
    defaults = {"location_id": loc, "contact_id": contact}
    return _build(pb.GetStatusRequest, defaults, overrides)  # type: ignore[no-any-return]


BUILDERS: dict[str, Callable[..., Any]] = {
    "GetStatus": status_req,
    "SetDnd": set_req,
    "CheckSend": check_req,
}


def snapshot(db: Database) -> dict[str, int]:
    """Row counts of every table a write touches, and the change-log head."""
    return {
        "contacts": db.fetchval("SELECT count(*) FROM dnd_contacts"),
        "blocks": db.fetchval("SELECT count(*) FROM dnd_blocks"),
        "changes": db.fetchval("SELECT count(*) FROM dnd_changes"),
        "head": db.heads(),
    }


def assert_nothing_written(db: Database, before: dict[str, int], *locs: str) -> None:
    assert snapshot(db) == before
    for loc in locs:
        if "\x00" in loc:  # PostgreSQL text cannot hold NUL: no such row can exist
            continue
        assert db.changes(loc) == 0
        assert db.blocks(loc) == 0
        assert db.fetchval("SELECT count(*) FROM dnd_contacts WHERE location_id = $1", loc) == 0


def expect_invalid(call: Callable[..., Any], request: Any, *fields: str) -> grpc.RpcError:
    """Call, expect INVALID_ARGUMENT naming each of ``fields``; return the error."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT)
    err = caught.value
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    named = bad_fields(err)
    details = error_details(err)
    info = details.get("ErrorInfo")
    assert info is not None, "no google.rpc.ErrorInfo in the status details"
    assert info.reason == "INVALID_ARGUMENT"
    assert info.domain == "dnd.v1"
    message = err.details()
    assert "Traceback" not in message
    for field in fields:
        assert field in named, f"{field!r} not in BadRequest fields {named}"
        assert field in message, f"message does not mention {field!r}: {message!r}"
        assert field in info.metadata["fields"].split(",")
    for violation in details["BadRequest"].field_violations:
        assert violation.description.strip(), f"empty description for {violation.field}"
        assert violation.description in message
    return err


# --- identifiers, on every RPC ---------------------------------------------------------------


@pytest.mark.parametrize("value", list(BAD_IDS.values()), ids=list(BAD_IDS))
@pytest.mark.parametrize("field", ["location_id", "contact_id"])
@pytest.mark.parametrize("rpc", list(BUILDERS))
def test_bad_identifier_is_refused(stub, db, loc, contact, rpc, field, value) -> None:
    before = snapshot(db)
    ids = {"location_id": loc, "contact_id": contact, field: value}
    request = BUILDERS[rpc](ids["location_id"], ids["contact_id"])
    expect_invalid(getattr(stub, rpc), request, field)
    assert_nothing_written(db, before, loc, value)
    if field == "location_id":
        assert db.fetchval("SELECT count(*) FROM dnd_contacts WHERE contact_id = $1", contact) == 0


GOOD_IDS = {
    "128-ascii": "x",
    "128-two-byte": "é",
    "128-three-byte": "日",
    "128-four-byte": "\U0001f600",
}


@pytest.mark.parametrize("fill", list(GOOD_IDS.values()), ids=list(GOOD_IDS))
@pytest.mark.parametrize("rpc", list(BUILDERS))
def test_identifiers_of_128_code_points_are_accepted(stub, db, rpc, fill) -> None:
    loc = _unique("loc", fill, 128)
    contact = _unique("contact", fill, 128)
    assert len(loc) == len(contact) == 128
    answer = getattr(stub, rpc)(BUILDERS[rpc](loc, contact), timeout=TIMEOUT)
    if rpc == "SetDnd":
        assert answer.changed
        assert answer.status.location_id == loc
        assert answer.status.contact_id == contact
        assert db.changes(loc) == 1
        assert db.blocks(loc) == 1
        status = stub.GetStatus(status_req(loc, contact), timeout=TIMEOUT).status
        assert status.version == 1
        assert list(status.blocked_channels) == [pb.CHANNEL_SMS]
    elif rpc == "GetStatus":
        assert answer.status.location_id == loc
        assert answer.status.contact_id == contact
        assert answer.status.version == 0
    else:
        assert answer.allowed


@pytest.mark.parametrize("rpc", list(BUILDERS))
def test_every_identifier_problem_reported_at_once(stub, db, loc, rpc) -> None:
    before = snapshot(db)
    err = expect_invalid(
        getattr(stub, rpc), BUILDERS[rpc]("", "c" * 129), "location_id", "contact_id"
    )
    assert sorted(bad_fields(err)) == ["contact_id", "location_id"]
    assert_nothing_written(db, before, "")


# --- SetDnd enums, scope and block shape -----------------------------------------------------

SET_DND_BAD = {
    # field: (overrides, expected field)
    "action-unknown": ({"action": 99}, "action"),
    "action-missing": ({"action": UNSET}, "action"),
    "direction-unknown": ({"direction": 99}, "direction"),
    "direction-missing": ({"direction": UNSET}, "direction"),
    "source-unknown": ({"source": 99}, "source"),
    "source-missing": ({"source": UNSET}, "source"),
    "reason-unknown": ({"reason": 99}, "reason"),
    "scope-channel-unknown": ({"scope": channel_scope(99)}, "scope.channel"),
    "scope-channel-unspecified": ({"scope": channel_scope(0)}, "scope.channel"),
    "scope-missing-outbound": ({"scope": UNSET}, "scope"),
    "scope-missing-outbound-disable": ({"scope": UNSET, "action": DISABLE}, "scope"),
    "all-channels-false": ({"scope": pb.Scope(all_channels=False)}, "scope.all_channels"),
    "all-channels-false-inbound": (
        {"direction": IN, "scope": pb.Scope(all_channels=False)},
        "scope.all_channels",
    ),
    "expected-version-minus-one": ({"expected_version": -1}, "expected_version"),
    "expected-version-min-int64": ({"expected_version": -(2**63)}, "expected_version"),
}


@pytest.mark.parametrize(("overrides", "field"), list(SET_DND_BAD.values()), ids=list(SET_DND_BAD))
def test_set_dnd_bad_field_is_refused(stub, db, loc, contact, overrides, field) -> None:
    before = snapshot(db)
    expect_invalid(stub.SetDnd, set_req(loc, contact, **overrides), field)
    assert_nothing_written(db, before, loc)


@pytest.mark.parametrize(
    "chan",
    [pb.CHANNEL_CALL, pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, pb.CHANNEL_WHATSAPP, pb.CHANNEL_GMB],
    ids=lambda c: _name(c, pb.Channel),
)
@pytest.mark.parametrize("action", [ENABLE, DISABLE], ids=["enable", "disable"])
def test_inbound_cannot_name_a_channel(stub, db, loc, contact, action, chan) -> None:
    before = snapshot(db)
    request = set_req(loc, contact, action=action, direction=IN, scope=channel_scope(chan))
    err = expect_invalid(stub.SetDnd, request, "scope")
    assert "inbound" in err.details()
    assert_nothing_written(db, before, loc)


def _shape_cases() -> list[Any]:
    cases = []
    for reason in SMS_REASONS:
        for channel in (pb.CHANNEL_EMAIL, pb.CHANNEL_CALL, pb.CHANNEL_WHATSAPP):
            cases.append(pytest.param(reason, OUT, channel_scope(channel), id=_id(reason, channel)))
    for reason in EMAIL_REASONS:
        for channel in (pb.CHANNEL_SMS, pb.CHANNEL_FACEBOOK):
            cases.append(pytest.param(reason, OUT, channel_scope(channel), id=_id(reason, channel)))
    for reason in NON_MANUAL_REASONS:
        cases.append(pytest.param(reason, OUT, ALL_SCOPE, id=_id(reason, "OUT-ALL")))
        cases.append(pytest.param(reason, IN, UNSET, id=_id(reason, "IN-unset")))
        cases.append(pytest.param(reason, IN, ALL_SCOPE, id=_id(reason, "IN-ALL")))
    return cases


def _id(reason: int, where: int | str) -> str:
    place = where if isinstance(where, str) else _name(where, pb.Channel)
    return f"{_name(reason, pb.Reason)}-on-{place}"


@pytest.mark.parametrize(("reason", "direction", "scope"), _shape_cases())
def test_enable_reason_outside_its_scope_is_refused(
    stub, db, loc, contact, reason, direction, scope
) -> None:
    before = snapshot(db)
    request = set_req(
        loc, contact, direction=direction, scope=scope, reason=reason, source=pb.SOURCE_SYSTEM
    )
    err = expect_invalid(stub.SetDnd, request, "reason")
    assert pb.Reason.Name(reason).removeprefix("REASON_") in err.details()
    assert_nothing_written(db, before, loc)


VALID_SHAPES = [
    pytest.param(pb.REASON_MANUAL, OUT, ALL_SCOPE, id="MANUAL-OUT-ALL"),
    pytest.param(pb.REASON_MANUAL, IN, UNSET, id="MANUAL-IN-unset"),
    pytest.param(pb.REASON_MANUAL, IN, ALL_SCOPE, id="MANUAL-IN-ALL"),
    pytest.param(pb.REASON_UNSPECIFIED, IN, UNSET, id="unspecified-is-MANUAL-IN"),
    pytest.param(pb.REASON_MANUAL, OUT, channel_scope(pb.CHANNEL_GMB), id="MANUAL-GMB"),
    *[
        pytest.param(r, OUT, channel_scope(pb.CHANNEL_SMS), id=_id(r, pb.CHANNEL_SMS))
        for r in SMS_REASONS
    ],
    *[
        pytest.param(r, OUT, channel_scope(pb.CHANNEL_EMAIL), id=_id(r, pb.CHANNEL_EMAIL))
        for r in EMAIL_REASONS
    ],
]


@pytest.mark.parametrize(("reason", "direction", "scope"), VALID_SHAPES)
def test_enable_reason_within_its_scope_is_accepted(
    stub, db, loc, contact, reason, direction, scope
) -> None:
    """The positive counterpart of the shape refusals: the same requests on the right scope."""
    request = set_req(
        loc, contact, direction=direction, scope=scope, reason=reason, source=pb.SOURCE_SYSTEM
    )
    answer = stub.SetDnd(request, timeout=TIMEOUT)
    assert answer.changed
    assert db.changes(loc) == 1
    assert db.blocks(loc) == 1


@pytest.mark.parametrize(
    ("reason", "chan"),
    [
        pytest.param(pb.REASON_SMS_OPT_OUT_KEYWORD, pb.CHANNEL_EMAIL, id="SMS-reason-on-EMAIL"),
        pytest.param(pb.REASON_EMAIL_HARD_BOUNCE, pb.CHANNEL_SMS, id="EMAIL-reason-on-SMS"),
    ],
)
def test_disable_reason_outside_its_channel_is_refused(
    stub, db, loc, contact, reason, chan
) -> None:
    stub.SetDnd(set_req(loc, contact, scope=channel_scope(chan)), timeout=TIMEOUT)
    request = set_req(loc, contact, action=DISABLE, scope=channel_scope(chan), reason=reason)
    expect_invalid(stub.SetDnd, request, "reason")
    assert db.changes(loc) == 1
    assert db.blocks(loc) == 1


# --- SetDnd texts ----------------------------------------------------------------------------

TEXT_LIMITS = {"actor_id": 128, "note": 1000, "evidence": 4000, "provider_detail": 256}
MULTILINE = {"note", "evidence"}


def _text_bad_cases() -> list[Any]:
    cases = []
    for field, limit in TEXT_LIMITS.items():
        cases.append(pytest.param(field, "a" * (limit + 1), id=f"{field}-{limit + 1}"))
        cases.append(pytest.param(field, "é" * (limit + 1), id=f"{field}-{limit + 1}-two-byte"))
        for name, ch in [("nul", "\x00"), ("us", "\x1f"), ("del", "\x7f"), ("vt", "\x0b")]:
            cases.append(pytest.param(field, f"a{ch}b", id=f"{field}-{name}"))
        cases.append(pytest.param(field, "a\x85b", id=f"{field}-c1"))
        if field not in MULTILINE:
            cases.append(pytest.param(field, "a\nb", id=f"{field}-newline"))
            cases.append(pytest.param(field, "a\tb", id=f"{field}-tab"))
    return cases


@pytest.mark.parametrize(("field", "value"), _text_bad_cases())
def test_set_dnd_bad_text_is_refused(stub, db, loc, contact, field, value) -> None:
    before = snapshot(db)
    expect_invalid(stub.SetDnd, set_req(loc, contact, **{field: value}), field)
    assert_nothing_written(db, before, loc)


def _text_good_cases() -> list[Any]:
    cases = []
    for field, limit in TEXT_LIMITS.items():
        cases.append(pytest.param(field, "a" * limit, id=f"{field}-{limit}"))
        cases.append(pytest.param(field, "\U0001f600" * limit, id=f"{field}-{limit}-four-byte"))
    for field in sorted(MULTILINE):
        cases.append(pytest.param(field, "line 1\nline 2\tcol\r\nend", id=f"{field}-multiline"))
    return cases


@pytest.mark.parametrize(("field", "value"), _text_good_cases())
def test_set_dnd_text_at_limit_is_accepted_and_kept(stub, db, loc, contact, field, value) -> None:
    answer = stub.SetDnd(set_req(loc, contact, **{field: value}), timeout=TIMEOUT)
    assert answer.changed
    assert getattr(answer.affected_blocks[0], field) == value
    status = stub.GetStatus(status_req(loc, contact), timeout=TIMEOUT).status
    assert getattr(status.blocks[0], field) == value
    assert db.fetchval(f"SELECT {field} FROM dnd_changes WHERE location_id = $1", loc) == value


def test_valid_boundary_request_succeeds(stub, db) -> None:
    """128-character ids and every text at its maximum length, in one SetDnd."""
    loc = _unique("loc", "L", 128)
    contact = _unique("contact", "日", 128)
    texts = {"actor_id": "u" * 128, "note": "n" * 1000, "evidence": "e" * 4000}
    texts["provider_detail"] = "p" * 256
    request = set_req(loc, contact, expected_version=0, **texts)
    answer = stub.SetDnd(request, timeout=TIMEOUT)
    assert answer.changed
    assert answer.status.version == 1
    block = answer.affected_blocks[0]
    for field, value in texts.items():
        assert getattr(block, field) == value
    assert db.changes(loc) == 1
    assert db.blocks(loc) == 1
    check = stub.CheckSend(check_req(loc, contact), timeout=TIMEOUT)
    assert not check.allowed


# --- several problems at once ----------------------------------------------------------------


def test_set_dnd_reports_every_bad_field_at_once(stub, db, loc, contact) -> None:
    before = snapshot(db)
    request = pb.SetDndRequest(
        location_id="",
        contact_id="c" * 129,
        action=99,  # type: ignore[arg-type]
        direction=pb.DIRECTION_UNSPECIFIED,
        scope=pb.Scope(all_channels=False),
        reason=77,  # type: ignore[arg-type]
        source=pb.SOURCE_UNSPECIFIED,
        actor_id="a\x00",
        note="n" * 1001,
        evidence="e\x1f",
        provider_detail="p" * 257,
        expected_version=-5,
    )
    expected = [
        "location_id",
        "contact_id",
        "action",
        "direction",
        "scope.all_channels",
        "reason",
        "source",
        "actor_id",
        "note",
        "evidence",
        "provider_detail",
        "expected_version",
    ]
    err = expect_invalid(stub.SetDnd, request, *expected)
    assert sorted(bad_fields(err)) == sorted(expected)
    assert_nothing_written(db, before, loc, "")


def test_check_send_reports_every_bad_field_at_once(stub, db) -> None:
    before = snapshot(db)
    request = pb.CheckSendRequest(
        location_id="l\x7f",
        contact_id="",
        channel=pb.CHANNEL_UNSPECIFIED,
        direction=42,  # type: ignore[arg-type]
        send_kind=9,  # type: ignore[arg-type]
    )
    expected = ["location_id", "contact_id", "channel", "direction", "send_kind"]
    err = expect_invalid(stub.CheckSend, request, *expected)
    assert sorted(bad_fields(err)) == sorted(expected)
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        pytest.param(
            {"contact_id": "", "scope": channel_scope(pb.CHANNEL_EMAIL)},
            ["contact_id", "reason"],
            id="bad-id-and-SMS-reason-on-EMAIL",
        ),
        pytest.param(
            {"note": "x" * 1001, "scope": ALL_SCOPE},
            ["note", "reason"],
            id="long-note-and-SMS-reason-on-ALL",
        ),
    ],
)
def test_shape_problem_reported_with_field_problems(
    stub, db, loc, contact, overrides, expected
) -> None:
    before = snapshot(db)
    request = set_req(
        loc, contact, reason=pb.REASON_SMS_OPT_OUT_KEYWORD, source=pb.SOURCE_CONTACT, **overrides
    )
    err = expect_invalid(stub.SetDnd, request, *expected)
    assert sorted(bad_fields(err)) == sorted(expected)
    assert_nothing_written(db, before, loc)


# --- bad input on an existing contact changes nothing ----------------------------------------

ON_EXISTING = {
    "disable-with-control-in-note": {"action": DISABLE, "note": "ok\x00"},
    "disable-with-negative-version": {"action": DISABLE, "expected_version": -1},
    "disable-with-oversize-evidence": {"action": DISABLE, "evidence": "e" * 4001},
    "disable-with-unknown-source": {"action": DISABLE, "source": 99},
    "disable-all-with-false-all-channels": {
        "action": DISABLE,
        "scope": pb.Scope(all_channels=False),
    },
    "enable-email-with-sms-reason": {
        "scope": channel_scope(pb.CHANNEL_EMAIL),
        "reason": pb.REASON_SMS_CARRIER_TEMPORARY,
    },
}


@pytest.mark.parametrize("overrides", list(ON_EXISTING.values()), ids=list(ON_EXISTING))
def test_bad_input_on_existing_contact_changes_nothing(stub, db, loc, contact, overrides) -> None:
    first = stub.SetDnd(set_req(loc, contact), timeout=TIMEOUT)
    assert first.status.version == 1
    before = snapshot(db)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetDnd(set_req(loc, contact, **overrides), timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value)
    assert snapshot(db) == before
    status = stub.GetStatus(status_req(loc, contact), timeout=TIMEOUT).status
    assert status.version == 1
    assert list(status.blocked_channels) == [pb.CHANNEL_SMS]
    assert db.changes(loc) == 1
    assert db.blocks(loc) == 1


def test_expected_version_zero_is_accepted(stub, db, loc, contact) -> None:
    answer = stub.SetDnd(set_req(loc, contact, expected_version=0), timeout=TIMEOUT)
    assert answer.changed
    assert answer.status.version == 1
    assert db.changes(loc) == 1


# --- CheckSend -------------------------------------------------------------------------------

CHECK_SEND_BAD = {
    "channel-missing": ({"channel": UNSET}, "channel"),
    "channel-unknown": ({"channel": 99}, "channel"),
    "direction-unknown": ({"direction": 99}, "direction"),
    "send-kind-unknown": ({"send_kind": 99}, "send_kind"),
}


@pytest.mark.parametrize(
    ("overrides", "field"), list(CHECK_SEND_BAD.values()), ids=list(CHECK_SEND_BAD)
)
def test_check_send_bad_field_is_refused(stub, db, loc, contact, overrides, field) -> None:
    before = snapshot(db)
    expect_invalid(stub.CheckSend, check_req(loc, contact, **overrides), field)
    assert snapshot(db) == before


@pytest.mark.parametrize(
    "send_kind",
    [pb.SEND_KIND_UNSPECIFIED, pb.SEND_KIND_MANUAL, pb.SEND_KIND_AUTOMATED],
    ids=lambda k: _name(k, pb.SendKind),
)
def test_check_send_optional_fields(stub, loc, contact, send_kind) -> None:
    """direction defaults to OUTBOUND; send_kind is optional and blocks alike."""
    stub.SetDnd(set_req(loc, contact), timeout=TIMEOUT)
    default = stub.CheckSend(check_req(loc, contact, send_kind=send_kind), timeout=TIMEOUT)
    assert not default.allowed
    assert default.version == 1
    outbound = stub.CheckSend(
        check_req(loc, contact, send_kind=send_kind, direction=OUT), timeout=TIMEOUT
    )
    assert not outbound.allowed
    inbound = stub.CheckSend(
        check_req(loc, contact, send_kind=send_kind, direction=IN), timeout=TIMEOUT
    )
    assert inbound.allowed
