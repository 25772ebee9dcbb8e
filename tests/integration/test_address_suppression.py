"""Address-level suppression over real gRPC, on real PostgreSQL.

An opt-out or permanent failure that carries an address suppresses the address itself within
the location, whichever contact holds it: checked across two contacts sharing a number, with
the address written in different formats, START from the number lifting it, the reason's clear
rules applying to it, GetStatus showing it, and other locations never seeing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests import factories
from tests.support import (
    DISABLE,
    ENABLE,
    Database,
    bad_fields,
    error_details,
    new_id,
)

R = pb.Reason
SMS, EMAIL, CALL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, pb.CHANNEL_CALL
USER, WORKFLOW, CONTACT, SYSTEM, SUPPORT = (
    pb.SOURCE_USER,
    pb.SOURCE_WORKFLOW,
    pb.SOURCE_CONTACT,
    pb.SOURCE_SYSTEM,
    pb.SOURCE_SUPPORT,
)
PROOF = "signed opt-in form, 2024-03-01"

PHONE = "+14155552671"
# The same US number as people and providers write it (default region US).
PHONE_FORMATS = [
    "+14155552671",
    "(415) 555-2671",
    "415-555-2671",
    "415.555.2671",
    "4155552671",
    "+1 415 555 2671",
    " +1 (415) 555-2671 ",
    "1-415-555-2671",
]
OTHER_PHONE = "+14155550100"
EMAIL_ADDRESS = "pat@example.com"
EMAIL_FORMATS = ["pat@example.com", "Pat@Example.com", "  PAT@EXAMPLE.COM ", "\tpat@example.COM"]


# --- helpers -----------------------------------------------------------------------------------


def inbound(
    stub: Any, loc: str, contact: str, body: str, from_address: str = ""
) -> pb.ProcessInboundMessageResponse:
    request = factories.inbound(loc, contact, body, from_address=from_address)
    return stub.ProcessInboundMessage(request, timeout=10)


def sms_failure(
    stub: Any, loc: str, contact: str, code: str, to_address: str = ""
) -> pb.ReportSmsDeliveryFailureResponse:
    request = factories.sms_failure(loc, contact, code, to_address=to_address)
    return stub.ReportSmsDeliveryFailure(request, timeout=10)


def email_event(
    stub: Any, loc: str, contact: str, event: int, to_address: str = ""
) -> pb.ReportEmailEventResponse:
    request = factories.email_event(loc, contact, event, to_address=to_address)
    return stub.ReportEmailEvent(request, timeout=10)


def set_dnd(
    stub: Any,
    loc: str,
    contact: str,
    action: int,
    channel: int,
    *,
    address: str = "",
    reason: int = R.REASON_UNSPECIFIED,
    source: int = USER,
    evidence: str = "",
    confirmed: bool = False,
) -> pb.SetDndResponse:
    request = factories.set_dnd(
        loc,
        contact,
        action,
        channel,
        reason=reason,
        source=source,
        evidence=evidence,
        suppression_removal_confirmed=confirmed,
        address=address,
    )
    return stub.SetDnd(request, timeout=10)


def refused(stub: Any, loc: str, contact: str, channel: int, **kw: Any) -> list[str]:
    """A DISABLE expected to fail with FAILED_PRECONDITION; the refused reasons."""
    with pytest.raises(grpc.RpcError) as caught:
        set_dnd(stub, loc, contact, DISABLE, channel, **kw)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION, caught.value.details()
    details = error_details(caught.value)
    assert details["ErrorInfo"].reason == "CLEAR_NOT_PERMITTED"
    return sorted(v.type for v in details["PreconditionFailure"].violations)


def check(
    stub: Any, loc: str, contact: str, channel: int = SMS, address: str = ""
) -> pb.CheckSendResponse:
    return stub.CheckSend(factories.check(loc, contact, channel, address=address), timeout=10)


def get_status(
    stub: Any,
    loc: str,
    contact: str,
    phones: list[str] | None = None,
    emails: list[str] | None = None,
) -> pb.ContactStatus:
    return stub.GetStatus(
        pb.GetStatusRequest(
            location_id=loc,
            contact_id=contact,
            phone_numbers=phones or [],
            email_addresses=emails or [],
        ),
        timeout=10,
    ).status


def suppression_rows(db: Database, loc: str) -> list[tuple[Any, ...]]:
    rows = db.fetch(
        "SELECT channel, address, reason, source, contact_id FROM dnd_address_suppressions"
        " WHERE location_id = $1 ORDER BY channel, address, reason",
        loc,
    )
    return [tuple(row) for row in rows]


def change_rows(db: Database, loc: str, contact: str) -> list[tuple[Any, ...]]:
    rows = db.fetch(
        "SELECT enabled, scope, reason, source, version, address FROM dnd_changes"
        " WHERE location_id = $1 AND contact_id = $2 ORDER BY seq",
        loc,
        contact,
    )
    return [tuple(row) for row in rows]


def suppression(s: pb.AddressSuppression) -> tuple[str, int, int, int, str]:
    return (s.address, s.channel, s.reason, s.source, s.contact_id)


def everything(stub: Any, db: Database, loc: str, contacts: list[str]) -> tuple[Any, ...]:
    """What a refused call must leave alone."""
    return (
        db.changes(loc),
        db.blocks(loc),
        suppression_rows(db, loc),
        [
            get_status(stub, loc, c, [PHONE], [EMAIL_ADDRESS]).SerializeToString(deterministic=True)
            for c in contacts
        ],
    )


STOP_SUPPRESSION = ("SMS", PHONE, "SMS_OPT_OUT_KEYWORD", "CONTACT")


@pytest.fixture
def other() -> str:
    """A second contact of the test, holding the same number."""
    return new_id("contact")


# --- two contacts, one number ------------------------------------------------------------------


def test_stop_from_one_contact_suppresses_the_number_for_another(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    answer = inbound(stub, loc, contact, "Stop!", from_address="(415) 555-2671")
    assert answer.action == pb.KEYWORD_ACTION_OPTED_OUT
    assert answer.changed
    assert answer.sms_blocked
    # The block and the suppression are one change each.
    assert answer.status.version == 2
    [block] = answer.status.blocks
    assert block.reason == R.REASON_SMS_OPT_OUT_KEYWORD
    assert block.address == PHONE
    assert [suppression(s) for s in answer.status.address_suppressions] == [
        (PHONE, SMS, R.REASON_SMS_OPT_OUT_KEYWORD, CONTACT, contact)
    ]
    assert suppression_rows(db, loc) == [(*STOP_SUPPRESSION, contact)]
    assert change_rows(db, loc, contact) == [
        (True, "SMS", "SMS_OPT_OUT_KEYWORD", "CONTACT", 1, ""),
        (True, "SMS", "SMS_OPT_OUT_KEYWORD", "CONTACT", 2, PHONE),
    ]
    entries = stub.ListHistory(pb.ListHistoryRequest(location_id=loc, contact_id=contact)).entries
    assert [(e.version, e.address) for e in entries] == [(2, PHONE), (1, "")]

    # The other contact, sent to that number in any format: denied by the address.
    for written in PHONE_FORMATS:
        denied = check(stub, loc, other, SMS, written)
        assert not denied.allowed, written
        assert list(denied.denied_by) == []
        assert [suppression(s) for s in denied.denied_by_address] == [
            (PHONE, SMS, R.REASON_SMS_OPT_OUT_KEYWORD, CONTACT, contact)
        ]
        assert denied.version == 0
        assert PHONE in denied.explanation

    # Without the address, or to another number, the other contact is open.
    assert check(stub, loc, other, SMS).allowed
    assert check(stub, loc, other, SMS, OTHER_PHONE).allowed
    # The other contact's own state is untouched.
    assert change_rows(db, loc, other) == []
    assert get_status(stub, loc, other).version == 0


def test_contact_and_address_denials_are_told_apart(
    stub: Any, loc: str, contact: str, other: str
) -> None:
    inbound(stub, loc, contact, "STOP", from_address=PHONE)

    own = check(stub, loc, contact, SMS, PHONE)
    assert not own.allowed
    assert [b.reason for b in own.denied_by] == [R.REASON_SMS_OPT_OUT_KEYWORD]
    assert [s.contact_id for s in own.denied_by_address] == [contact]

    by_contact = check(stub, loc, contact, SMS)
    assert not by_contact.allowed
    assert [b.reason for b in by_contact.denied_by] == [R.REASON_SMS_OPT_OUT_KEYWORD]
    assert list(by_contact.denied_by_address) == []

    by_address = check(stub, loc, other, SMS, PHONE)
    assert not by_address.allowed
    assert list(by_address.denied_by) == []
    assert [s.reason for s in by_address.denied_by_address] == [R.REASON_SMS_OPT_OUT_KEYWORD]

    # The other contact's own SMS block and the number's suppression, both reported.
    set_dnd(stub, loc, other, ENABLE, SMS, source=USER)
    both = check(stub, loc, other, SMS, PHONE)
    assert not both.allowed
    assert [b.reason for b in both.denied_by] == [R.REASON_MANUAL]
    assert [s.reason for s in both.denied_by_address] == [R.REASON_SMS_OPT_OUT_KEYWORD]


def test_a_second_contact_stopping_from_the_number_adds_its_block_and_shares_the_suppression(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    """The number's one suppression row becomes both contacts' opt-out: no contact is named
    as its holder, so neither contact's clear alone lifts it (test_address_ownership.py)."""
    inbound(stub, loc, contact, "STOP", from_address=PHONE)
    answer = inbound(stub, loc, other, "stop", from_address="415-555-2671")
    assert answer.changed
    assert answer.status.version == 2
    assert [b.reason for b in answer.status.blocks] == [R.REASON_SMS_OPT_OUT_KEYWORD]
    assert suppression_rows(db, loc) == [(*STOP_SUPPRESSION, "")]
    assert db.blocks(loc) == 2


# --- START from the number ---------------------------------------------------------------------


def test_start_from_the_number_by_another_contact_clears_its_suppression(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    inbound(stub, loc, contact, "STOP", from_address="(415) 555-2671")
    assert not check(stub, loc, other, SMS, PHONE).allowed

    answer = inbound(stub, loc, other, "START", from_address="+1 415 555 2671")
    assert answer.action == pb.KEYWORD_ACTION_OPTED_IN
    assert answer.changed
    assert not answer.sms_blocked
    # The suppression lifted, then the number's keyword consents recorded (consent rows
    # carry no reason nor address: the consent holds its address).
    assert answer.status.version == 3
    assert {c.address for c in answer.status.consents} == {PHONE}
    assert list(answer.status.address_suppressions) == []
    assert suppression_rows(db, loc) == []
    assert change_rows(db, loc, other) == [
        (False, "SMS", "SMS_OPT_OUT_KEYWORD", "CONTACT", 1, PHONE),
        (True, "SMS", "", "CONTACT", 2, ""),
        (True, "SMS", "", "CONTACT", 3, ""),
    ]
    for written in PHONE_FORMATS:
        assert check(stub, loc, other, SMS, written).allowed, written
    # The first contact's own opt-out is the first contact's: it stays.
    assert db.blocks(loc) == 1
    denied = check(stub, loc, contact, SMS, PHONE)
    assert not denied.allowed
    assert [b.reason for b in denied.denied_by] == [R.REASON_SMS_OPT_OUT_KEYWORD]
    assert list(denied.denied_by_address) == []


def test_start_by_the_same_contact_clears_block_and_number(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    inbound(stub, loc, contact, "STOP", from_address="(415) 555-2671")
    answer = inbound(stub, loc, contact, "START", from_address="4155552671")
    assert answer.action == pb.KEYWORD_ACTION_OPTED_IN
    assert answer.changed
    assert not answer.sms_blocked
    # Two opt-out rows lifted, then two keyword consents recorded.
    assert answer.status.version == 6
    assert list(answer.status.blocks) == []
    assert list(answer.status.address_suppressions) == []
    assert db.blocks(loc) == 0
    assert suppression_rows(db, loc) == []
    rows = change_rows(db, loc, contact)
    assert [row[0] for row in rows] == [True, True, False, False, True, True]
    assert sorted(row[5] for row in rows[2:4]) == ["", PHONE]
    assert [row[2] for row in rows[4:]] == ["", ""]
    assert check(stub, loc, contact, SMS, PHONE).allowed
    assert check(stub, loc, contact, SMS).allowed
    assert check(stub, loc, other, SMS, PHONE).allowed


def test_start_from_the_number_clears_every_sms_suppression_of_it(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    third = new_id("contact")
    inbound(stub, loc, contact, "STOP", from_address=PHONE)
    sms_failure(stub, loc, third, "30004", to_address="(415) 555-2671")
    denied = check(stub, loc, other, SMS, PHONE)
    assert sorted(s.reason for s in denied.denied_by_address) == [
        R.REASON_SMS_OPT_OUT_KEYWORD,
        R.REASON_SMS_CARRIER_PERMANENT,
    ]
    assert {s.contact_id for s in denied.denied_by_address} == {contact, third}

    answer = inbound(stub, loc, other, "Unstop", from_address=PHONE)
    assert answer.changed
    # Both suppressions lifted, and the number's two keyword consents recorded.
    assert answer.status.version == 4
    assert suppression_rows(db, loc) == []
    assert check(stub, loc, other, SMS, PHONE).allowed


# --- which events suppress ---------------------------------------------------------------------

Event = Callable[[Any, str, str, str], Any]


def _stop(stub: Any, loc: str, contact: str, address: str) -> Any:
    return inbound(stub, loc, contact, "STOP", from_address=address)


def _code(code: str) -> Event:
    def report(stub: Any, loc: str, contact: str, address: str) -> Any:
        return sms_failure(stub, loc, contact, code, to_address=address)

    return report


def _email(event: int) -> Event:
    def report(stub: Any, loc: str, contact: str, address: str) -> Any:
        return email_event(stub, loc, contact, event, to_address=address)

    return report


# (id, event, channel, reason, source, raw address)
SUPPRESSING: list[tuple[str, Event, int, int, int, str]] = [
    ("STOP", _stop, SMS, R.REASON_SMS_OPT_OUT_KEYWORD, CONTACT, "(415) 555-2671"),
    ("30004", _code("30004"), SMS, R.REASON_SMS_CARRIER_PERMANENT, SYSTEM, "415.555.2671"),
    ("21610", _code("21610"), SMS, R.REASON_SMS_CARRIER_PERMANENT, SYSTEM, "+1 415 555 2671"),
    ("BOUNCE", _email(pb.EMAIL_EVENT_BOUNCE), EMAIL, R.REASON_EMAIL_HARD_BOUNCE, SYSTEM, ""),
    (
        "GENERIC_FAILURE",
        _email(pb.EMAIL_EVENT_GENERIC_FAILURE),
        EMAIL,
        R.REASON_EMAIL_GENERIC_FAILURE,
        SYSTEM,
        "",
    ),
    (
        "SUPPRESS_BOUNCE",
        _email(pb.EMAIL_EVENT_SUPPRESS_BOUNCE),
        EMAIL,
        R.REASON_EMAIL_SUPPRESS_BOUNCE,
        SYSTEM,
        "",
    ),
    (
        "SUPPRESS_UNSUBSCRIBE",
        _email(pb.EMAIL_EVENT_SUPPRESS_UNSUBSCRIBE),
        EMAIL,
        R.REASON_EMAIL_SUPPRESS_UNSUBSCRIBE,
        SYSTEM,
        "",
    ),
    (
        "SUPPRESS_COMPLAINT",
        _email(pb.EMAIL_EVENT_SUPPRESS_COMPLAINT),
        EMAIL,
        R.REASON_EMAIL_SUPPRESS_COMPLAINT,
        SYSTEM,
        "",
    ),
    (
        "SPAM_COMPLAINT",
        _email(pb.EMAIL_EVENT_SPAM_COMPLAINT),
        EMAIL,
        R.REASON_EMAIL_SPAM_COMPLAINT,
        SYSTEM,
        "",
    ),
    (
        "UNSUBSCRIBE_LINK",
        _email(pb.EMAIL_EVENT_UNSUBSCRIBE_LINK),
        EMAIL,
        R.REASON_EMAIL_UNSUBSCRIBE_LINK,
        CONTACT,
        "",
    ),
    (
        "LIST_UNSUBSCRIBE_POST",
        _email(pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST),
        EMAIL,
        R.REASON_EMAIL_UNSUBSCRIBE_LINK,
        CONTACT,
        "",
    ),
]


@pytest.mark.parametrize(
    ("event", "on_channel", "reason", "source", "raw"),
    [pytest.param(*row[1:], id=row[0]) for row in SUPPRESSING],
)
def test_opt_outs_and_permanent_failures_suppress_the_address(
    stub: Any,
    loc: str,
    contact: str,
    other: str,
    db: Database,
    event: Event,
    on_channel: int,
    reason: int,
    source: int,
    raw: str,
) -> None:
    raw = raw or " Pat@Example.COM "
    address = PHONE if on_channel == SMS else EMAIL_ADDRESS
    written = PHONE_FORMATS if on_channel == SMS else EMAIL_FORMATS
    answer = event(stub, loc, contact, raw)
    assert answer.changed
    assert answer.status.version == 2
    [block] = answer.status.blocks
    assert block.address == address
    [shown] = answer.status.address_suppressions
    assert suppression(shown) == (address, on_channel, reason, source, contact)
    assert shown.provider_detail == block.provider_detail
    channel_name = pb.Channel.Name(on_channel)[8:]
    source_name = pb.Source.Name(source)[7:]
    assert suppression_rows(db, loc) == [
        (channel_name, address, R.Name(reason)[7:], source_name, contact)
    ]
    assert change_rows(db, loc, contact)[1] == (
        True,
        channel_name,
        R.Name(reason)[7:],
        source_name,
        2,
        address,
    )

    for form in written:
        denied = check(stub, loc, other, on_channel, form)
        assert not denied.allowed, form
        assert list(denied.denied_by) == []
        assert [suppression(s) for s in denied.denied_by_address] == [
            (address, on_channel, reason, source, contact)
        ]
    assert check(stub, loc, other, on_channel).allowed

    # Repeated: already active, nothing written.
    again = event(stub, loc, contact, raw)
    assert not again.changed
    assert db.changes(loc) == 2
    assert len(suppression_rows(db, loc)) == 1


@pytest.mark.parametrize("code", ["30003", "30005", "30006"])
def test_temporary_carrier_failures_do_not_suppress(
    stub: Any, loc: str, contact: str, other: str, db: Database, code: str
) -> None:
    answer = sms_failure(stub, loc, contact, code, to_address="(415) 555-2671")
    assert answer.changed
    assert answer.status.version == 1
    [block] = answer.status.blocks
    assert block.reason == R.REASON_SMS_CARRIER_TEMPORARY
    assert list(answer.status.address_suppressions) == []
    assert suppression_rows(db, loc) == []
    assert check(stub, loc, other, SMS, PHONE).allowed
    assert not check(stub, loc, contact, SMS, PHONE).allowed


def test_ignored_events_and_manual_blocks_do_not_suppress(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    assert not email_event(
        stub, loc, contact, pb.EMAIL_EVENT_TEMPORARY_FAILURE, to_address=EMAIL_ADDRESS
    ).changed
    assert not sms_failure(stub, loc, contact, "30007", to_address=PHONE).changed
    assert not inbound(stub, loc, contact, "HELP", from_address=PHONE).changed
    manual_sms = set_dnd(stub, loc, contact, ENABLE, SMS, address=PHONE)
    assert manual_sms.changed
    manual_email = set_dnd(stub, loc, contact, ENABLE, EMAIL, address=EMAIL_ADDRESS)
    assert manual_email.changed
    temporary = set_dnd(
        stub,
        loc,
        contact,
        ENABLE,
        SMS,
        address=PHONE,
        reason=R.REASON_SMS_CARRIER_TEMPORARY,
        source=SYSTEM,
    )
    assert temporary.changed
    assert temporary.status.version == 3
    assert list(temporary.status.address_suppressions) == []
    assert suppression_rows(db, loc) == []
    assert check(stub, loc, other, SMS, PHONE).allowed
    assert check(stub, loc, other, EMAIL, EMAIL_ADDRESS).allowed


def test_set_dnd_with_an_opt_out_reason_and_address_suppresses_it(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    answer = set_dnd(
        stub,
        loc,
        contact,
        ENABLE,
        SMS,
        address="(415) 555-2671",
        reason=R.REASON_SMS_OPT_OUT_KEYWORD,
        source=CONTACT,
    )
    assert answer.changed
    assert answer.status.version == 2
    assert suppression_rows(db, loc) == [(*STOP_SUPPRESSION, contact)]
    assert not check(stub, loc, other, SMS, PHONE).allowed


# --- clear rules of suppressions ---------------------------------------------------------------


def test_a_user_may_not_clear_an_opt_out_suppression_support_with_evidence_may(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    inbound(stub, loc, contact, "STOP", from_address=PHONE)
    before = everything(stub, db, loc, [contact, other])

    for kw in (
        {"source": USER},
        {"source": USER, "reason": R.REASON_SMS_OPT_OUT_KEYWORD},
        {"source": WORKFLOW, "evidence": PROOF},
        {"source": SYSTEM, "evidence": PROOF},
        {"source": SUPPORT},
        {"source": SUPPORT, "evidence": "  \n "},
    ):
        reasons = refused(stub, loc, other, SMS, address="(415) 555-2671", **kw)
        assert reasons == ["SMS_OPT_OUT_KEYWORD"], kw
        assert everything(stub, db, loc, [contact, other]) == before, kw
    assert not check(stub, loc, other, SMS, PHONE).allowed

    # On the opting-out contact: its block and the number, both refused.
    reasons = refused(stub, loc, contact, SMS, address=PHONE, source=USER)
    assert reasons == ["SMS_OPT_OUT_KEYWORD", "SMS_OPT_OUT_KEYWORD"]
    assert everything(stub, db, loc, [contact, other]) == before

    answer = set_dnd(
        stub, loc, other, DISABLE, SMS, address="415-555-2671", source=SUPPORT, evidence=PROOF
    )
    assert answer.changed
    assert list(answer.affected_blocks) == []
    assert answer.status.version == 1
    assert list(answer.status.address_suppressions) == []
    assert suppression_rows(db, loc) == []
    assert change_rows(db, loc, other) == [
        (False, "SMS", "SMS_OPT_OUT_KEYWORD", "SUPPORT", 1, PHONE)
    ]
    [entry] = stub.ListHistory(pb.ListHistoryRequest(location_id=loc, contact_id=other)).entries
    assert entry.address == PHONE
    assert entry.evidence == PROOF
    assert not entry.enabled
    assert check(stub, loc, other, SMS, PHONE).allowed
    # The opting-out contact keeps its own block.
    assert db.blocks(loc) == 1
    assert not check(stub, loc, contact, SMS).allowed


def test_clearing_a_suppression_is_narrowed_by_reason(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    third = new_id("contact")
    inbound(stub, loc, contact, "STOP", from_address=PHONE)
    sms_failure(stub, loc, third, "30004", to_address=PHONE)
    answer = set_dnd(
        stub,
        loc,
        other,
        DISABLE,
        SMS,
        address=PHONE,
        reason=R.REASON_SMS_CARRIER_PERMANENT,
        source=SUPPORT,
        evidence=PROOF,
    )
    assert answer.changed
    assert answer.status.version == 1
    assert suppression_rows(db, loc) == [(*STOP_SUPPRESSION, contact)]
    denied = check(stub, loc, other, SMS, PHONE)
    assert [s.reason for s in denied.denied_by_address] == [R.REASON_SMS_OPT_OUT_KEYWORD]


def test_email_suppression_clears_under_the_email_rules(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    email_event(stub, loc, contact, pb.EMAIL_EVENT_BOUNCE, to_address=" Pat@Example.COM ")
    before = everything(stub, db, loc, [contact, other])
    reasons = refused(stub, loc, other, EMAIL, address="PAT@example.com", source=USER)
    assert reasons == ["EMAIL_HARD_BOUNCE"]
    assert refused(
        stub, loc, other, EMAIL, address=EMAIL_ADDRESS, source=WORKFLOW, confirmed=True
    ) == ["EMAIL_HARD_BOUNCE"]
    # Set by the other contact's event, the bounce is that address's: a USER acting on this
    # contact may not lift it even with the confirmation.
    assert refused(stub, loc, other, EMAIL, address=EMAIL_ADDRESS, source=USER, confirmed=True) == [
        "EMAIL_HARD_BOUNCE"
    ]
    assert everything(stub, db, loc, [contact, other]) == before

    answer = set_dnd(
        stub,
        loc,
        other,
        DISABLE,
        EMAIL,
        address="PAT@example.com",
        source=SUPPORT,
        evidence=PROOF,
        confirmed=True,
    )
    assert answer.changed
    assert suppression_rows(db, loc) == []
    assert change_rows(db, loc, other) == [
        (False, "EMAIL", "EMAIL_HARD_BOUNCE", "SUPPORT", 1, EMAIL_ADDRESS)
    ]
    assert check(stub, loc, other, EMAIL, EMAIL_ADDRESS).allowed
    assert not check(stub, loc, contact, EMAIL).allowed


# --- GetStatus ---------------------------------------------------------------------------------


def test_get_status_shows_the_suppressions_of_the_named_addresses(
    stub: Any, loc: str, contact: str, other: str
) -> None:
    inbound(stub, loc, contact, "STOP", from_address=PHONE)
    email_event(stub, loc, contact, pb.EMAIL_EVENT_SPAM_COMPLAINT, to_address=EMAIL_ADDRESS)

    shown = get_status(stub, loc, other, ["(415) 555-2671"], [" PAT@example.com"])
    assert [suppression(s) for s in shown.address_suppressions] == [
        (EMAIL_ADDRESS, EMAIL, R.REASON_EMAIL_SPAM_COMPLAINT, SYSTEM, contact),
        (PHONE, SMS, R.REASON_SMS_OPT_OUT_KEYWORD, CONTACT, contact),
    ]
    assert all(s.since.seconds > 0 for s in shown.address_suppressions)
    assert "SPAM_COMPLAINT" in shown.address_suppressions[0].provider_detail
    # The other contact has no blocks of its own.
    assert list(shown.blocks) == []
    assert shown.version == 0

    # Only the named addresses, each on its own channel.
    assert list(get_status(stub, loc, other).address_suppressions) == []
    assert list(get_status(stub, loc, contact).address_suppressions) == []
    phone_only = get_status(stub, loc, contact, phones=["4155552671"])
    assert [s.channel for s in phone_only.address_suppressions] == [SMS]
    email_only = get_status(stub, loc, contact, emails=["pat@example.com"])
    assert [s.channel for s in email_only.address_suppressions] == [EMAIL]
    assert list(get_status(stub, loc, other, [OTHER_PHONE]).address_suppressions) == []


def test_get_status_rejects_unusable_addresses(stub: Any, loc: str, contact: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        get_status(stub, loc, contact, ["not a phone"], ["not-an-email"])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert set(bad_fields(caught.value)) == {"phone_numbers[0]", "email_addresses[0]"}


def test_unusable_sender_address_is_invalid_and_changes_nothing(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    """Anything but an opt-out from a sender that is no number is refused; the opt-out acts
    on the contact and suppresses no number (tests/integration/test_keywords.py)."""
    with pytest.raises(grpc.RpcError) as caught:
        inbound(stub, loc, contact, "START", from_address="12")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == ["from_address"]
    assert db.changes(loc) == 0
    assert inbound(stub, loc, contact, "STOP", from_address="12").changed
    assert (
        db.fetchval("SELECT count(*) FROM dnd_address_suppressions WHERE location_id = $1", loc)
        == 0
    )
    with pytest.raises(grpc.RpcError) as caught:
        check(stub, loc, contact, SMS, "call me maybe")
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == ["address"]


# --- other locations ---------------------------------------------------------------------------


def test_suppressions_stay_within_their_location(
    stub: Any, loc: str, contact: str, other: str, db: Database
) -> None:
    inbound(stub, loc, contact, "STOP", from_address=PHONE)
    email_event(stub, loc, contact, pb.EMAIL_EVENT_BOUNCE, to_address=EMAIL_ADDRESS)
    elsewhere = new_id("loc")

    for who in (contact, other):
        assert check(stub, elsewhere, who, SMS, PHONE).allowed
        assert check(stub, elsewhere, who, EMAIL, EMAIL_ADDRESS).allowed
        shown = get_status(stub, elsewhere, who, [PHONE], [EMAIL_ADDRESS])
        assert list(shown.address_suppressions) == []

    # START from the number elsewhere finds nothing to clear, and leaves this location alone.
    answer = inbound(stub, elsewhere, other, "START", from_address=PHONE)
    assert not answer.changed
    assert db.changes(elsewhere) == 0
    assert len(suppression_rows(db, loc)) == 2
    assert suppression_rows(db, elsewhere) == []
    assert not check(stub, loc, other, SMS, PHONE).allowed
    assert not check(stub, loc, other, EMAIL, EMAIL_ADDRESS).allowed
