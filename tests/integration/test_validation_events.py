"""Validation of the compliance RPCs (ProcessInboundMessage, ReportSmsDeliveryFailure,
ReportEmailEvent) and of SetDnd's address and idempotency_key, over real gRPC.

Every refusal is INVALID_ARGUMENT with a google.rpc.BadRequest naming the field, an ErrorInfo
listing it, and no write at all: no contact, block, suppression, change, idempotency key or
log-head move. Values at the limits are accepted.
"""

from __future__ import annotations

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
UNSET: Any = object()


def _build(cls: Any, defaults: dict[str, Any], overrides: dict[str, Any]) -> Any:
    fields = {**defaults, **overrides}
    return cls(**{k: v for k, v in fields.items() if v is not UNSET})


def inbound_req(loc: str, contact: str, **overrides: Any) -> pb.ProcessInboundMessageRequest:
    defaults = {
        "location_id": loc,
        "contact_id": contact,
        "channel": pb.CHANNEL_SMS,
        "body": "STOP",
        "from_address": "+14155550100",
    }
    return _build(pb.ProcessInboundMessageRequest, defaults, overrides)  # type: ignore[no-any-return]


def sms_req(loc: str, contact: str, **overrides: Any) -> pb.ReportSmsDeliveryFailureRequest:
    defaults = {
        "location_id": loc,
        "contact_id": contact,
        "provider": "twilio",
        "error_code": "30004",
        "to_address": "+14155550100",
    }
    return _build(pb.ReportSmsDeliveryFailureRequest, defaults, overrides)  # type: ignore[no-any-return]


def email_req(loc: str, contact: str, **overrides: Any) -> pb.ReportEmailEventRequest:
    defaults = {
        "location_id": loc,
        "contact_id": contact,
        "provider": "mailgun",
        "event": pb.EMAIL_EVENT_BOUNCE,
        "to_address": "pat@example.com",
    }
    return _build(pb.ReportEmailEventRequest, defaults, overrides)  # type: ignore[no-any-return]


def set_req(loc: str, contact: str, **overrides: Any) -> pb.SetDndRequest:
    defaults = {
        "location_id": loc,
        "contact_id": contact,
        "action": ENABLE,
        "direction": OUT,
        "scope": channel_scope(pb.CHANNEL_SMS),
        "reason": pb.REASON_SMS_OPT_OUT_KEYWORD,
        "source": pb.SOURCE_CONTACT,
        "address": "+14155550100",
    }
    return _build(pb.SetDndRequest, defaults, overrides)  # type: ignore[no-any-return]


BUILDERS: dict[str, Callable[..., Any]] = {
    "ProcessInboundMessage": inbound_req,
    "ReportSmsDeliveryFailure": sms_req,
    "ReportEmailEvent": email_req,
    "SetDnd": set_req,
}
EVENT_RPCS = ["ProcessInboundMessage", "ReportSmsDeliveryFailure", "ReportEmailEvent"]


def snapshot(db: Database) -> dict[str, int]:
    """Row counts of every table a write touches, and the change-log head (one query)."""
    tables = [
        "dnd_contacts",
        "dnd_blocks",
        "dnd_changes",
        "dnd_address_suppressions",
        "dnd_idempotency",
        "dnd_location_settings",
    ]
    counts = ", ".join(f"(SELECT count(*) FROM {t}) AS {t}" for t in tables)
    heads = "(SELECT array_agg(seq ORDER BY lane) FROM dnd_log_lanes)"
    [row] = db.fetch(f"SELECT {counts}, {heads} AS head")
    return dict(row)


def expect_invalid(call: Callable[..., Any], request: Any, *fields: str) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    named = bad_fields(error)
    details = error_details(error)
    info = details["ErrorInfo"]
    assert info.reason == "INVALID_ARGUMENT"
    assert info.domain == "dnd.v1"
    assert "Traceback" not in error.details()
    for field in fields:
        assert field in named, f"{field!r} not in BadRequest fields {named}"
        assert field in error.details()
        assert field in info.metadata["fields"].split(",")
    for violation in details["BadRequest"].field_violations:
        assert violation.description.strip()
    return error


def refused_without_writes(
    stub: Any, db: Database, rpc: str, request: Any, *fields: str
) -> grpc.RpcError:
    before = snapshot(db)
    error = expect_invalid(getattr(stub, rpc), request, *fields)
    assert snapshot(db) == before
    return error


# --- identifiers -----------------------------------------------------------------------------

BAD_IDS = {
    "empty": "",
    "129": "x" * 129,
    "129-four-byte": "\U0001f600" * 129,
    "nul": "id\x00x",
    "newline": "id\nx",
    "del": "id\x7f",
}


@pytest.mark.parametrize("value", list(BAD_IDS.values()), ids=list(BAD_IDS))
@pytest.mark.parametrize("field", ["location_id", "contact_id"])
@pytest.mark.parametrize("rpc", EVENT_RPCS)
def test_bad_identifier_is_refused(
    stub: Any, db: Database, loc: str, contact: str, rpc: str, field: str, value: str
) -> None:
    ids = {"location_id": loc, "contact_id": contact, field: value}
    request = BUILDERS[rpc](ids["location_id"], ids["contact_id"])
    refused_without_writes(stub, db, rpc, request, field)


# --- per-RPC fields --------------------------------------------------------------------------

BAD_FIELDS: dict[str, tuple[str, dict[str, Any], str]] = {
    # ProcessInboundMessage
    "inbound-channel-missing": ("ProcessInboundMessage", {"channel": UNSET}, "channel"),
    "inbound-channel-99": ("ProcessInboundMessage", {"channel": 99}, "channel"),
    "inbound-body-4097": ("ProcessInboundMessage", {"body": "s" * 4097}, "body"),
    "inbound-body-4097-emoji": ("ProcessInboundMessage", {"body": "\U0001f600" * 4097}, "body"),
    "inbound-body-nul": ("ProcessInboundMessage", {"body": "ST\x00OP"}, "body"),
    # A sender that is no number refuses anything but an opt-out (which acts on the contact).
    "inbound-from-abc": (
        "ProcessInboundMessage",
        {"body": "hello", "from_address": "abc"},
        "from_address",
    ),
    "inbound-from-too-short": (
        "ProcessInboundMessage",
        {"body": "HELP", "from_address": "+1 555"},
        "from_address",
    ),
    # ReportSmsDeliveryFailure
    "sms-provider-missing": ("ReportSmsDeliveryFailure", {"provider": UNSET}, "provider"),
    "sms-provider-65": ("ReportSmsDeliveryFailure", {"provider": "p" * 65}, "provider"),
    "sms-provider-control": ("ReportSmsDeliveryFailure", {"provider": "twi\x01lio"}, "provider"),
    "sms-code-missing": ("ReportSmsDeliveryFailure", {"error_code": UNSET}, "error_code"),
    "sms-code-blank": ("ReportSmsDeliveryFailure", {"error_code": "   "}, "error_code"),
    "sms-code-33": ("ReportSmsDeliveryFailure", {"error_code": "3" * 33}, "error_code"),
    "sms-code-control": ("ReportSmsDeliveryFailure", {"error_code": "300\n04"}, "error_code"),
    # An address that is none refuses an event that sets no block (one that sets a block
    # sets it on the contact: tests/integration/test_unreadable_addresses.py).
    "sms-to-abc": (
        "ReportSmsDeliveryFailure",
        {"error_code": "99999", "to_address": "abc"},
        "to_address",
    ),
    "sms-to-email": (
        "ReportSmsDeliveryFailure",
        {"error_code": "99999", "to_address": "a@b.com"},
        "to_address",
    ),
    "sms-to-control": (
        "ReportSmsDeliveryFailure",
        {"to_address": "+1415\x005550100"},
        "to_address",
    ),
    # ReportEmailEvent
    "email-provider-missing": ("ReportEmailEvent", {"provider": UNSET}, "provider"),
    "email-provider-65": ("ReportEmailEvent", {"provider": "p" * 65}, "provider"),
    "email-event-missing": ("ReportEmailEvent", {"event": UNSET}, "event"),
    "email-event-99": ("ReportEmailEvent", {"event": 99}, "event"),
    "email-to-control": ("ReportEmailEvent", {"to_address": "pat@exa\x01mple.com"}, "to_address"),
    "email-to-2049": (
        "ReportEmailEvent",
        {"to_address": "a" * 2037 + "@example.com"},
        "to_address",
    ),
    "email-detail-257": ("ReportEmailEvent", {"provider_detail": "d" * 257}, "provider_detail"),
    "email-detail-control": ("ReportEmailEvent", {"provider_detail": "5\x0050"}, "provider_detail"),
    # SetDnd address
    "set-address-on-all": ("SetDnd", {"scope": ALL_SCOPE, "reason": UNSET}, "address"),
    "set-address-on-inbound": (
        "SetDnd",
        {"direction": IN, "scope": UNSET, "reason": UNSET},
        "address",
    ),
    "set-address-on-inbound-all": (
        "SetDnd",
        {"direction": IN, "scope": ALL_SCOPE, "reason": UNSET},
        "address",
    ),
    "set-disable-address-on-all": (
        "SetDnd",
        {"action": DISABLE, "scope": ALL_SCOPE, "reason": UNSET},
        "address",
    ),
    "set-address-abc": ("SetDnd", {"address": "abc"}, "address"),
    "set-address-not-an-email": (
        "SetDnd",
        {
            "scope": channel_scope(pb.CHANNEL_EMAIL),
            "reason": pb.REASON_EMAIL_HARD_BOUNCE,
            "source": pb.SOURCE_SYSTEM,
            "address": "not-an-email",
        },
        "address",
    ),
}


@pytest.mark.parametrize(
    ("rpc", "overrides", "field"), list(BAD_FIELDS.values()), ids=list(BAD_FIELDS)
)
def test_bad_field_is_refused(
    stub: Any, db: Database, loc: str, contact: str, rpc: str, overrides: dict[str, Any], field: str
) -> None:
    refused_without_writes(stub, db, rpc, BUILDERS[rpc](loc, contact, **overrides), field)


def test_unknown_enum_names_the_expected_values(stub: Any, db: Database, loc: str) -> None:
    error = refused_without_writes(
        stub, db, "ReportEmailEvent", email_req(loc, "c", event=99), "event"
    )
    assert "99" in error.details() and "EMAIL_EVENT_BOUNCE" in error.details()
    error = refused_without_writes(
        stub, db, "ProcessInboundMessage", inbound_req(loc, "c", channel=99), "channel"
    )
    assert "99" in error.details() and "CHANNEL_SMS" in error.details()


# --- idempotency_key -------------------------------------------------------------------------

BAD_KEYS = {
    "129": "k" * 129,
    "129-two-byte": "é" * 129,
    "nul": "key\x00",
    "newline": "key\n1",
    "tab": "\tkey",
    "del": "key\x7f",
    "c1": "key\x85",
}


@pytest.mark.parametrize("key", list(BAD_KEYS.values()), ids=list(BAD_KEYS))
@pytest.mark.parametrize("rpc", list(BUILDERS))
def test_bad_idempotency_key_is_refused(
    stub: Any, db: Database, loc: str, contact: str, rpc: str, key: str
) -> None:
    request = BUILDERS[rpc](loc, contact, idempotency_key=key)
    refused_without_writes(stub, db, rpc, request, "idempotency_key")


@pytest.mark.parametrize("rpc", list(BUILDERS))
def test_idempotency_key_of_128_characters_is_accepted(
    stub: Any, db: Database, loc: str, contact: str, rpc: str
) -> None:
    key = ("k-" + "日" * 200)[:128]
    answer = getattr(stub, rpc)(BUILDERS[rpc](loc, contact, idempotency_key=key), timeout=TIMEOUT)
    assert answer.changed
    assert db.fetchval("SELECT key FROM dnd_idempotency WHERE location_id = $1", loc) == key
    assert db.changes(loc) == 2  # the block and the address suppression


# --- everything at once ----------------------------------------------------------------------

ALL_AT_ONCE: dict[str, tuple[Any, list[str]]] = {
    "ProcessInboundMessage": (
        pb.ProcessInboundMessageRequest(
            location_id="",
            contact_id="c" * 129,
            channel=99,  # type: ignore[arg-type]
            body="b" * 4097,
            idempotency_key="k" * 129,
        ),
        ["location_id", "contact_id", "channel", "body", "idempotency_key"],
    ),
    "ReportSmsDeliveryFailure": (
        pb.ReportSmsDeliveryFailureRequest(
            location_id="l\x00",
            contact_id="",
            to_address="ab\x00c",
            provider="",
            error_code="",
            idempotency_key="k\n",
        ),
        ["location_id", "contact_id", "to_address", "provider", "error_code", "idempotency_key"],
    ),
    "ReportEmailEvent": (
        pb.ReportEmailEventRequest(
            location_id="",
            contact_id="",
            to_address="not-an-\x07email",
            provider="p" * 65,
            event=99,  # type: ignore[arg-type]
            provider_detail="d" * 257,
            idempotency_key="k" * 129,
        ),
        [
            "location_id",
            "contact_id",
            "to_address",
            "provider",
            "event",
            "provider_detail",
            "idempotency_key",
        ],
    ),
}


@pytest.mark.parametrize("rpc", list(ALL_AT_ONCE))
def test_every_problem_is_reported_at_once(stub: Any, db: Database, rpc: str) -> None:
    request, fields = ALL_AT_ONCE[rpc]
    error = refused_without_writes(stub, db, rpc, request, *fields)
    assert sorted(bad_fields(error)) == sorted(fields)


# --- bad input on an existing contact changes nothing ----------------------------------------


@pytest.mark.parametrize(
    ("rpc", "overrides", "field"),
    [
        ("ProcessInboundMessage", {"body": "START", "from_address": "abc"}, "from_address"),
        (
            "ProcessInboundMessage",
            {"body": "START", "idempotency_key": "k" * 129},
            "idempotency_key",
        ),
        ("ReportSmsDeliveryFailure", {"error_code": "30004", "provider": ""}, "provider"),
        ("ReportEmailEvent", {"event": 99}, "event"),
        ("SetDnd", {"action": DISABLE, "source": pb.SOURCE_CONTACT, "address": "abc"}, "address"),
    ],
    ids=["inbound-start", "inbound-key", "sms", "email", "set-disable"],
)
def test_bad_input_on_existing_contact_changes_nothing(
    stub: Any, db: Database, loc: str, contact: str, rpc: str, overrides: dict[str, Any], field: str
) -> None:
    stub.ProcessInboundMessage(inbound_req(loc, contact), timeout=TIMEOUT)
    assert db.changes(loc) == 2
    refused_without_writes(stub, db, rpc, BUILDERS[rpc](loc, contact, **overrides), field)
    status = stub.GetStatus(
        pb.GetStatusRequest(location_id=loc, contact_id=contact, phone_numbers=["+14155550100"])
    ).status
    assert status.version == 2
    assert list(status.blocked_channels) == [pb.CHANNEL_SMS]
    assert len(status.address_suppressions) == 1


# --- values at the limits are accepted -------------------------------------------------------

GOOD: dict[str, tuple[str, dict[str, Any]]] = {
    "inbound-body-4096": ("ProcessInboundMessage", {"body": "STOP" + " " * 4092}),
    "inbound-body-4096-emoji": ("ProcessInboundMessage", {"body": "\U0001f600" * 4096}),
    "inbound-body-multiline": ("ProcessInboundMessage", {"body": "line 1\nline 2\ttab\r\n"}),
    "inbound-no-from": ("ProcessInboundMessage", {"from_address": UNSET}),
    "inbound-from-national": ("ProcessInboundMessage", {"from_address": "(415) 555-0100"}),
    "inbound-other-channel-any-body": (
        "ProcessInboundMessage",
        {"channel": pb.CHANNEL_FACEBOOK, "from_address": UNSET, "body": "STOP"},
    ),
    "sms-provider-64": ("ReportSmsDeliveryFailure", {"provider": "p" * 64}),
    "sms-code-32": ("ReportSmsDeliveryFailure", {"error_code": "9" * 32}),
    "sms-no-to": ("ReportSmsDeliveryFailure", {"to_address": UNSET}),
    "email-provider-64": ("ReportEmailEvent", {"provider": "p" * 64}),
    "email-to-mixed-case": ("ReportEmailEvent", {"to_address": "  Pat@Example.COM "}),
    "email-no-to": ("ReportEmailEvent", {"to_address": UNSET}),
    "email-temporary": ("ReportEmailEvent", {"event": pb.EMAIL_EVENT_TEMPORARY_FAILURE}),
    "set-address-email": (
        "SetDnd",
        {
            "scope": channel_scope(pb.CHANNEL_EMAIL),
            "reason": pb.REASON_EMAIL_HARD_BOUNCE,
            "source": pb.SOURCE_SYSTEM,
            "address": "Pat@Example.com",
        },
    ),
    "set-no-address": ("SetDnd", {"address": UNSET}),
}


@pytest.mark.parametrize(("rpc", "overrides"), list(GOOD.values()), ids=list(GOOD))
def test_values_at_the_limits_are_accepted(
    stub: Any, loc: str, contact: str, rpc: str, overrides: dict[str, Any]
) -> None:
    getattr(stub, rpc)(BUILDERS[rpc](loc, contact, **overrides), timeout=TIMEOUT)


@pytest.mark.parametrize("length", [193, 256])
def test_email_provider_detail_up_to_256_is_accepted(
    stub: Any, db: Database, loc: str, contact: str, length: int
) -> None:
    detail = "d" * length
    answer = stub.ReportEmailEvent(
        email_req(loc, contact, provider_detail=detail, to_address=UNSET), timeout=TIMEOUT
    )
    assert answer.changed
    stored = db.fetchval("SELECT provider_detail FROM dnd_changes WHERE location_id = $1", loc)
    assert detail in stored


def test_addresses_are_normalised_before_use(stub: Any, db: Database, loc: str) -> None:
    stub.ReportSmsDeliveryFailure(sms_req(loc, "c1", to_address="(415) 555-0100"), timeout=TIMEOUT)
    stub.ReportEmailEvent(email_req(loc, "c1", to_address="  Pat@Example.COM "), timeout=TIMEOUT)
    rows = db.fetch(
        "SELECT channel, address FROM dnd_address_suppressions WHERE location_id = $1 "
        "ORDER BY channel",
        loc,
    )
    assert [tuple(r) for r in rows] == [("EMAIL", "pat@example.com"), ("SMS", "+14155550100")]
