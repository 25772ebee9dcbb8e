"""Carrier error codes and email provider events over real gRPC, on real PostgreSQL.

Every SMS error code of the spec and codes outside it, every email event, repeats, a temporary
failure stacked under a permanent one with each cleared by its own rule, the provider detail
kept on the block, and the change-log rows each event writes.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests import factories
from tests.support import OUT, Database, bad_fields, error_details

R = pb.Reason
SMS, EMAIL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL
USER, WORKFLOW, CONTACT, SYSTEM, SUPPORT = (
    pb.SOURCE_USER,
    pb.SOURCE_WORKFLOW,
    pb.SOURCE_CONTACT,
    pb.SOURCE_SYSTEM,
    pb.SOURCE_SUPPORT,
)
APPLIED = pb.EVENT_OUTCOME_APPLIED
ALREADY_ACTIVE = pb.EVENT_OUTCOME_ALREADY_ACTIVE
IGNORED = pb.EVENT_OUTCOME_IGNORED
PROOF = "signed opt-in form, 2024-03-01"

# The spec's tables, written out.
SMS_CODES = [
    ("30003", R.REASON_SMS_CARRIER_TEMPORARY),
    ("30005", R.REASON_SMS_CARRIER_TEMPORARY),
    ("30006", R.REASON_SMS_CARRIER_TEMPORARY),
    ("30004", R.REASON_SMS_CARRIER_PERMANENT),
    ("21610", R.REASON_SMS_CARRIER_PERMANENT),
]
UNKNOWN_CODES = ["30007", "30008", "21211", "30001", "3000", "300040", "0", "ERR_UNKNOWN"]
EMAIL_EVENTS = [
    (pb.EMAIL_EVENT_BOUNCE, R.REASON_EMAIL_HARD_BOUNCE, SYSTEM),
    (pb.EMAIL_EVENT_GENERIC_FAILURE, R.REASON_EMAIL_GENERIC_FAILURE, SYSTEM),
    (pb.EMAIL_EVENT_SUPPRESS_BOUNCE, R.REASON_EMAIL_SUPPRESS_BOUNCE, SYSTEM),
    (pb.EMAIL_EVENT_SUPPRESS_UNSUBSCRIBE, R.REASON_EMAIL_SUPPRESS_UNSUBSCRIBE, SYSTEM),
    (pb.EMAIL_EVENT_SUPPRESS_COMPLAINT, R.REASON_EMAIL_SUPPRESS_COMPLAINT, SYSTEM),
    (pb.EMAIL_EVENT_SPAM_COMPLAINT, R.REASON_EMAIL_SPAM_COMPLAINT, SYSTEM),
    (pb.EMAIL_EVENT_UNSUBSCRIBE_LINK, R.REASON_EMAIL_UNSUBSCRIBE_LINK, CONTACT),
    (pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST, R.REASON_EMAIL_UNSUBSCRIBE_LINK, CONTACT),
]


def _event_name(event: int) -> str:
    return pb.EmailEvent.Name(event).removeprefix("EMAIL_EVENT_")


def _name(value: int) -> str:
    return R.Name(value).removeprefix("REASON_")


# --- helpers -----------------------------------------------------------------------------------


def sms_failure(
    stub: Any,
    loc: str,
    contact: str,
    code: str,
    *,
    provider: str = "twilio",
    to_address: str = "",
) -> pb.ReportSmsDeliveryFailureResponse:
    request = factories.sms_failure(loc, contact, code, provider=provider, to_address=to_address)
    return stub.ReportSmsDeliveryFailure(request, timeout=10)


def email_event(
    stub: Any,
    loc: str,
    contact: str,
    event: int,
    *,
    provider: str = "mailgun",
    detail: str = "",
    to_address: str = "",
) -> pb.ReportEmailEventResponse:
    request = factories.email_event(
        loc, contact, event, provider=provider, provider_detail=detail, to_address=to_address
    )
    return stub.ReportEmailEvent(request, timeout=10)


def clear(
    stub: Any,
    loc: str,
    contact: str,
    channel: int,
    *,
    source: int,
    reason: int = R.REASON_UNSPECIFIED,
    evidence: str = "",
    confirmed: bool = False,
) -> pb.SetDndResponse:
    request = factories.disable(
        loc,
        contact,
        channel,
        source=source,
        reason=reason,
        evidence=evidence,
        suppression_removal_confirmed=confirmed,
    )
    return stub.SetDnd(request, timeout=10)


def refused(stub: Any, loc: str, contact: str, channel: int, **kw: Any) -> list[str]:
    """Clear expecting FAILED_PRECONDITION; the reasons of the refused blocks."""
    with pytest.raises(grpc.RpcError) as caught:
        clear(stub, loc, contact, channel, **kw)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    failure = error_details(caught.value)["PreconditionFailure"]
    return sorted(v.type for v in failure.violations)


def status(stub: Any, loc: str, contact: str) -> pb.ContactStatus:
    return stub.GetStatus(factories.get_status(loc, contact)).status


def check(stub: Any, loc: str, contact: str, channel: int) -> pb.CheckSendResponse:
    return stub.CheckSend(factories.check(loc, contact, channel))


def block_rows(db: Database, loc: str) -> list[tuple[Any, ...]]:
    rows = db.fetch(
        "SELECT direction, scope, reason, source, actor_id, provider_detail FROM dnd_blocks"
        " WHERE location_id = $1 ORDER BY scope, reason",
        loc,
    )
    return [tuple(row) for row in rows]


def change_rows(db: Database, loc: str) -> list[tuple[Any, ...]]:
    rows = db.fetch(
        "SELECT enabled, direction, scope, reason, source, actor_id, provider_detail, version"
        " FROM dnd_changes WHERE location_id = $1 ORDER BY seq",
        loc,
    )
    return [tuple(row) for row in rows]


def snapshot(stub: Any, db: Database, loc: str, contact: str) -> tuple[Any, ...]:
    return (
        change_rows(db, loc),
        block_rows(db, loc),
        status(stub, loc, contact).SerializeToString(deterministic=True),
    )


# --- SMS delivery failures ---------------------------------------------------------------------


@pytest.mark.parametrize(("code", "reason"), SMS_CODES, ids=[c for c, _ in SMS_CODES])
def test_every_sms_error_code_sets_its_block(
    stub: Any, loc: str, contact: str, db: Database, code: str, reason: int
) -> None:
    answer = sms_failure(stub, loc, contact, code)
    assert answer.outcome == APPLIED
    assert answer.reason == reason
    assert answer.changed
    assert answer.cursor
    assert answer.status.version == 1
    assert list(answer.status.blocked_channels) == [SMS]
    [block] = answer.status.blocks
    assert block.direction == OUT
    assert block.scope.channel == SMS
    assert block.reason == reason
    assert block.source == SYSTEM
    assert block.actor_id == "twilio"
    assert block.provider_detail == f"error_code:{code}"

    assert block_rows(db, loc) == [
        ("OUTBOUND", "SMS", _name(reason), "SYSTEM", "twilio", f"error_code:{code}")
    ]
    assert change_rows(db, loc) == [
        (True, "OUTBOUND", "SMS", _name(reason), "SYSTEM", "twilio", f"error_code:{code}", 1)
    ]
    denied = check(stub, loc, contact, SMS)
    assert not denied.allowed
    assert [b.reason for b in denied.denied_by] == [reason]
    assert check(stub, loc, contact, EMAIL).allowed
    assert status(stub, loc, contact) == answer.status

    # The same code again: already active, nothing written, the first detail kept.
    again = sms_failure(stub, loc, contact, code, provider="other-provider")
    assert again.outcome == ALREADY_ACTIVE
    assert again.reason == reason
    assert not again.changed
    assert again.status.version == 1
    assert again.cursor == answer.cursor
    assert db.changes(loc) == 1
    assert [b.actor_id for b in status(stub, loc, contact).blocks] == ["twilio"]


@pytest.mark.parametrize("code", UNKNOWN_CODES)
def test_other_sms_error_codes_are_ignored(
    stub: Any, loc: str, contact: str, db: Database, code: str
) -> None:
    answer = sms_failure(stub, loc, contact, code, to_address="+14155552671")
    assert answer.outcome == IGNORED
    assert answer.reason == R.REASON_UNSPECIFIED
    assert not answer.changed
    assert answer.status.version == 0
    assert list(answer.status.blocks) == []
    assert db.changes(loc) == 0
    assert db.blocks(loc) == 0
    assert (
        db.fetchval("SELECT count(*) FROM dnd_address_suppressions WHERE location_id = $1", loc)
        == 0
    )
    assert check(stub, loc, contact, SMS).allowed


def test_an_ignored_code_leaves_existing_blocks_alone(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    sms_failure(stub, loc, contact, "30004")
    before = snapshot(stub, db, loc, contact)
    answer = sms_failure(stub, loc, contact, "30007")
    assert answer.outcome == IGNORED
    assert not answer.changed
    assert answer.status.version == 1
    assert snapshot(stub, db, loc, contact) == before


def test_sms_failure_requires_provider_and_code(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        sms_failure(stub, loc, contact, "", provider="")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad_fields(caught.value)) == {"provider", "error_code"}
    assert db.changes(loc) == 0


def test_temporary_then_permanent_both_stand_until_each_is_cleared_by_its_rule(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    temporary = sms_failure(stub, loc, contact, "30003")
    permanent = sms_failure(stub, loc, contact, "30004")
    assert temporary.outcome == permanent.outcome == APPLIED
    assert permanent.status.version == 2
    assert {b.reason for b in permanent.status.blocks} == {
        R.REASON_SMS_CARRIER_TEMPORARY,
        R.REASON_SMS_CARRIER_PERMANENT,
    }
    denied = check(stub, loc, contact, SMS)
    assert not denied.allowed
    assert {b.reason for b in denied.denied_by} == {
        R.REASON_SMS_CARRIER_TEMPORARY,
        R.REASON_SMS_CARRIER_PERMANENT,
    }

    # A user may not clear SMS as a whole: the permanent block is refused, nothing changes.
    before = snapshot(stub, db, loc, contact)
    assert refused(stub, loc, contact, SMS, source=USER) == ["SMS_CARRIER_PERMANENT"]
    assert snapshot(stub, db, loc, contact) == before

    # The system never clears, not even the temporary block.
    assert refused(
        stub, loc, contact, SMS, source=SYSTEM, reason=R.REASON_SMS_CARRIER_TEMPORARY
    ) == ["SMS_CARRIER_TEMPORARY"]
    assert snapshot(stub, db, loc, contact) == before

    # A user may clear the temporary block; SMS stays blocked by the permanent one.
    answer = clear(stub, loc, contact, SMS, source=USER, reason=R.REASON_SMS_CARRIER_TEMPORARY)
    assert answer.changed
    assert [b.reason for b in answer.affected_blocks] == [R.REASON_SMS_CARRIER_TEMPORARY]
    assert [b.reason for b in answer.status.blocks] == [R.REASON_SMS_CARRIER_PERMANENT]
    assert answer.status.version == 3
    denied = check(stub, loc, contact, SMS)
    assert not denied.allowed
    assert [b.reason for b in denied.denied_by] == [R.REASON_SMS_CARRIER_PERMANENT]

    # The permanent block: not by a user, a workflow, nor support without evidence.
    before = snapshot(stub, db, loc, contact)
    for kw in (
        {"source": USER},
        {"source": WORKFLOW, "evidence": PROOF},
        {"source": SUPPORT},
        {"source": SYSTEM, "evidence": PROOF},
    ):
        assert refused(stub, loc, contact, SMS, **kw) == ["SMS_CARRIER_PERMANENT"], kw
    assert snapshot(stub, db, loc, contact) == before

    # Support with evidence may.
    answer = clear(stub, loc, contact, SMS, source=SUPPORT, evidence=PROOF)
    assert answer.changed
    assert list(answer.status.blocks) == []
    assert answer.status.version == 4
    assert check(stub, loc, contact, SMS).allowed
    assert db.blocks(loc) == 0
    assert [(row[0], row[3], row[4], row[7]) for row in change_rows(db, loc)] == [
        (True, "SMS_CARRIER_TEMPORARY", "SYSTEM", 1),
        (True, "SMS_CARRIER_PERMANENT", "SYSTEM", 2),
        (False, "SMS_CARRIER_TEMPORARY", "USER", 3),
        (False, "SMS_CARRIER_PERMANENT", "SUPPORT", 4),
    ]


def test_permanent_then_temporary_stack_too(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    sms_failure(stub, loc, contact, "21610")
    answer = sms_failure(stub, loc, contact, "30006")
    assert answer.outcome == APPLIED
    assert answer.changed
    assert answer.status.version == 2
    assert [row[2:] for row in block_rows(db, loc)] == [
        ("SMS_CARRIER_PERMANENT", "SYSTEM", "twilio", "error_code:21610"),
        ("SMS_CARRIER_TEMPORARY", "SYSTEM", "twilio", "error_code:30006"),
    ]
    # Another permanent code is the same reason: already active.
    again = sms_failure(stub, loc, contact, "30004")
    assert again.outcome == ALREADY_ACTIVE
    assert not again.changed
    assert db.changes(loc) == 2


def test_the_contact_texting_start_clears_carrier_blocks(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    sms_failure(stub, loc, contact, "30005")
    sms_failure(stub, loc, contact, "30004")
    answer = stub.ProcessInboundMessage(
        pb.ProcessInboundMessageRequest(
            location_id=loc, contact_id=contact, channel=SMS, body="START"
        )
    )
    assert answer.changed
    # Two blocks set, two lifted, two keyword consents recorded.
    assert answer.status.version == 6
    assert db.blocks(loc) == 0
    assert check(stub, loc, contact, SMS).allowed


# --- email events ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("event", "reason", "source"), EMAIL_EVENTS, ids=[_event_name(e) for e, _, _ in EMAIL_EVENTS]
)
def test_every_email_event_sets_its_block(
    stub: Any, loc: str, contact: str, db: Database, event: int, reason: int, source: int
) -> None:
    answer = email_event(stub, loc, contact, event, detail="550 5.1.1 mailbox unavailable")
    assert answer.outcome == APPLIED
    assert answer.reason == reason
    assert answer.changed
    assert answer.cursor
    assert answer.status.version == 1
    assert list(answer.status.blocked_channels) == [EMAIL]
    [block] = answer.status.blocks
    assert block.scope.channel == EMAIL
    assert block.reason == reason
    assert block.source == source
    assert block.actor_id == "mailgun"
    # The event and the provider's own detail are kept.
    assert _event_name(event) in block.provider_detail
    assert "550 5.1.1 mailbox unavailable" in block.provider_detail

    [row] = block_rows(db, loc)
    assert row[:5] == ("OUTBOUND", "EMAIL", _name(reason), pb.Source.Name(source)[7:], "mailgun")
    assert row[5] == block.provider_detail
    [change] = change_rows(db, loc)
    assert change[:6] == (True, "OUTBOUND", "EMAIL", _name(reason), row[3], "mailgun")
    assert change[6] == block.provider_detail
    assert change[7] == 1
    denied = check(stub, loc, contact, EMAIL)
    assert not denied.allowed
    assert [b.reason for b in denied.denied_by] == [reason]
    assert check(stub, loc, contact, SMS).allowed

    again = email_event(stub, loc, contact, event)
    assert again.outcome == ALREADY_ACTIVE
    assert again.reason == reason
    assert not again.changed
    assert again.status.version == 1
    assert again.cursor == answer.cursor
    assert db.changes(loc) == 1
    assert db.blocks(loc) == 1


def test_temporary_email_failure_is_ignored(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    answer = email_event(
        stub, loc, contact, pb.EMAIL_EVENT_TEMPORARY_FAILURE, to_address="pat@example.com"
    )
    assert answer.outcome == IGNORED
    assert answer.reason == R.REASON_UNSPECIFIED
    assert not answer.changed
    assert answer.status.version == 0
    assert db.changes(loc) == 0
    assert db.blocks(loc) == 0
    assert (
        db.fetchval("SELECT count(*) FROM dnd_address_suppressions WHERE location_id = $1", loc)
        == 0
    )
    assert check(stub, loc, contact, EMAIL).allowed

    # Nor does it change a contact with email DND.
    email_event(stub, loc, contact, pb.EMAIL_EVENT_BOUNCE)
    before = snapshot(stub, db, loc, contact)
    again = email_event(stub, loc, contact, pb.EMAIL_EVENT_TEMPORARY_FAILURE)
    assert again.outcome == IGNORED
    assert snapshot(stub, db, loc, contact) == before


def test_email_event_is_required(stub: Any, loc: str, contact: str, db: Database) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        email_event(stub, loc, contact, pb.EMAIL_EVENT_UNSPECIFIED)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "event" in bad_fields(caught.value)
    assert db.changes(loc) == 0


def test_unsubscribe_link_and_list_unsubscribe_post_are_one_reason(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    first = email_event(stub, loc, contact, pb.EMAIL_EVENT_UNSUBSCRIBE_LINK)
    assert first.outcome == APPLIED
    second = email_event(stub, loc, contact, pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST)
    assert second.outcome == ALREADY_ACTIVE
    assert second.reason == R.REASON_EMAIL_UNSUBSCRIBE_LINK
    assert not second.changed
    assert db.changes(loc) == 1
    # The contact's own opt-out: a workflow may not lift it, a user may.
    assert refused(stub, loc, contact, EMAIL, source=WORKFLOW) == ["EMAIL_UNSUBSCRIBE_LINK"]
    assert clear(stub, loc, contact, EMAIL, source=USER).changed
    assert check(stub, loc, contact, EMAIL).allowed


def test_email_events_stack_and_clear_by_their_own_rules(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    email_event(stub, loc, contact, pb.EMAIL_EVENT_BOUNCE)
    answer = email_event(stub, loc, contact, pb.EMAIL_EVENT_SPAM_COMPLAINT)
    assert answer.outcome == APPLIED
    assert answer.status.version == 2
    assert {b.reason for b in answer.status.blocks} == {
        R.REASON_EMAIL_HARD_BOUNCE,
        R.REASON_EMAIL_SPAM_COMPLAINT,
    }

    before = snapshot(stub, db, loc, contact)
    assert refused(stub, loc, contact, EMAIL, source=USER) == [
        "EMAIL_HARD_BOUNCE",
        "EMAIL_SPAM_COMPLAINT",
    ]
    assert refused(stub, loc, contact, EMAIL, source=USER, confirmed=True) == [
        "EMAIL_SPAM_COMPLAINT"
    ]
    assert snapshot(stub, db, loc, contact) == before

    cleared = clear(
        stub, loc, contact, EMAIL, source=USER, reason=R.REASON_EMAIL_HARD_BOUNCE, confirmed=True
    )
    assert cleared.changed
    assert [b.reason for b in cleared.status.blocks] == [R.REASON_EMAIL_SPAM_COMPLAINT]
    assert not check(stub, loc, contact, EMAIL).allowed
    assert clear(stub, loc, contact, EMAIL, source=SUPPORT, evidence=PROOF).changed
    assert check(stub, loc, contact, EMAIL).allowed
    assert db.blocks(loc) == 0
    assert db.changes(loc) == 4


# --- the change log and history ----------------------------------------------------------------


def test_change_log_and_history_record_each_event(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    sms_failure(stub, loc, contact, "30003", provider="twilio")
    sms_failure(stub, loc, contact, "12345", provider="twilio")  # ignored: no row
    sms_failure(stub, loc, contact, "21610", provider="bandwidth")
    email_event(stub, loc, contact, pb.EMAIL_EVENT_GENERIC_FAILURE, provider="sendgrid")
    email_event(stub, loc, contact, pb.EMAIL_EVENT_TEMPORARY_FAILURE)  # ignored: no row
    email_event(stub, loc, contact, pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST, provider="mailgun")

    rows = change_rows(db, loc)
    assert [(*row[:6], row[7]) for row in rows] == [
        (True, "OUTBOUND", "SMS", "SMS_CARRIER_TEMPORARY", "SYSTEM", "twilio", 1),
        (True, "OUTBOUND", "SMS", "SMS_CARRIER_PERMANENT", "SYSTEM", "bandwidth", 2),
        (True, "OUTBOUND", "EMAIL", "EMAIL_GENERIC_FAILURE", "SYSTEM", "sendgrid", 3),
        (True, "OUTBOUND", "EMAIL", "EMAIL_UNSUBSCRIBE_LINK", "CONTACT", "mailgun", 4),
    ]
    assert rows[0][6] == "error_code:30003"
    assert rows[1][6] == "error_code:21610"
    assert "GENERIC_FAILURE" in rows[2][6]
    assert "LIST_UNSUBSCRIBE_POST" in rows[3][6]
    summaries = db.fetch(
        "SELECT outbound, blocked_channels FROM dnd_changes WHERE location_id = $1 ORDER BY seq",
        loc,
    )
    assert [tuple(row) for row in summaries] == [
        ("PARTIAL", ["SMS"]),
        ("PARTIAL", ["SMS"]),
        ("PARTIAL", ["EMAIL", "SMS"]),
        ("PARTIAL", ["EMAIL", "SMS"]),
    ]

    entries = stub.ListHistory(pb.ListHistoryRequest(location_id=loc, contact_id=contact)).entries
    assert [e.version for e in entries] == [4, 3, 2, 1]
    assert [e.reason for e in entries] == [
        R.REASON_EMAIL_UNSUBSCRIBE_LINK,
        R.REASON_EMAIL_GENERIC_FAILURE,
        R.REASON_SMS_CARRIER_PERMANENT,
        R.REASON_SMS_CARRIER_TEMPORARY,
    ]
    assert [e.source for e in entries] == [CONTACT, SYSTEM, SYSTEM, SYSTEM]
    assert [e.actor_id for e in entries] == ["mailgun", "sendgrid", "bandwidth", "twilio"]
    assert [e.provider_detail for e in entries] == [row[6] for row in reversed(rows)]
    assert all(e.enabled for e in entries)
    assert status(stub, loc, contact).version == 4
