"""An address's opt-out belongs to the address, over real gRPC and real PostgreSQL.

A suppression set by contact A's event, named in a clear on contact B, is lifted only by
SUPPORT with evidence or by the address itself (START texted from the number, an email
address's own unsubscribe-undo), never by a USER or WORKFLOW acting on B: those get
FAILED_PRECONDITION naming the suppression and what clears it, and nothing changes. Every
change of a suppression shows in the history of A, of B and of the address.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_client import DndClient
from dnd_client.types import Channel as ClientChannel
from dnd_server.domain.model import AddressSuppression, Channel, Reason, Source
from dnd_server.domain.rules import ClearCredentials, own_address, refusal_for
from dnd_server.storage.migrations import load_migrations

from tests import factories
from tests.support import (
    DISABLE,
    ENABLE,
    OUT,
    Database,
    ServerProcess,
    bad_fields,
    error_details,
    new_id,
    run_async,
)

R = pb.Reason
SMS, EMAIL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL
USER, WORKFLOW, CONTACT, SYSTEM, SUPPORT = (
    pb.SOURCE_USER,
    pb.SOURCE_WORKFLOW,
    pb.SOURCE_CONTACT,
    pb.SOURCE_SYSTEM,
    pb.SOURCE_SUPPORT,
)
T = 10.0
PHONE = "+14155552671"
EMAIL_ADDRESS = "pat@example.com"
PROOF = "signed opt-in form, 2024-03-01"


# --- helpers -----------------------------------------------------------------------------------


def inbound(stub: Any, loc: str, contact: str, body: str, sender: str = PHONE) -> Any:
    request = factories.inbound(loc, contact, body, from_address=sender)
    return stub.ProcessInboundMessage(request, timeout=T)


def email_event(stub: Any, loc: str, contact: str, event: int, to: str = EMAIL_ADDRESS) -> Any:
    return stub.ReportEmailEvent(
        factories.email_event(loc, contact, event, to_address=to), timeout=T
    )


def clear(
    stub: Any,
    loc: str,
    contact: str,
    channel: int,
    address: str,
    source: int,
    evidence: str = "",
    confirmed: bool = False,
    actor_id: str = "",
) -> pb.SetDndResponse:
    request = factories.disable(
        loc,
        contact,
        channel,
        source=source,
        evidence=evidence,
        suppression_removal_confirmed=confirmed,
        address=address,
        actor_id=actor_id,
    )
    return stub.SetDnd(request, timeout=T)


def history(stub: Any, loc: str, contact: str = "", **kw: Any) -> list[pb.HistoryEntry]:
    answer = stub.ListHistory(factories.history(loc, contact, page_size=500, **kw), timeout=T)
    assert answer.next_page_token == ""
    return list(answer.entries)


def address_history(stub: Any, loc: str, channel: int, address: str) -> list[pb.HistoryEntry]:
    return history(stub, loc, address=address, channel=channel)


def suppression_rows(db: Database, loc: str) -> list[tuple[Any, ...]]:
    rows = db.fetch(
        "SELECT channel, address, reason, source, contact_id FROM dnd_address_suppressions"
        " WHERE location_id = $1 ORDER BY channel, address, reason",
        loc,
    )
    return [tuple(r) for r in rows]


def snapshot(stub: Any, db: Database, loc: str, contacts: list[str]) -> tuple[Any, ...]:
    """Everything a refused clear must leave alone."""
    return (
        db.changes(loc),
        db.blocks(loc),
        suppression_rows(db, loc),
        [
            stub.GetStatus(
                pb.GetStatusRequest(
                    location_id=loc,
                    contact_id=c,
                    phone_numbers=[PHONE],
                    email_addresses=[EMAIL_ADDRESS],
                ),
                timeout=T,
            ).SerializeToString(deterministic=True)
            for c in contacts
        ],
    )


def check(stub: Any, loc: str, contact: str, channel: int, address: str) -> bool:
    answer = stub.CheckSend(factories.check(loc, contact, channel, address=address), timeout=T)
    return bool(answer.allowed)


def refusal(call: Callable[[], object]) -> tuple[grpc.RpcError, list[Any]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error = caught.value
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error.details()
    details = error_details(error)
    assert details["ErrorInfo"].reason == "CLEAR_NOT_PERMITTED"
    return error, list(details["PreconditionFailure"].violations)


def entry(e: pb.HistoryEntry) -> tuple[Any, ...]:
    return (e.contact_id, e.enabled, e.reason, e.source, e.address, e.suppression_contact_id)


@pytest.fixture
def owner() -> str:
    """Contact A: its event set the suppression."""
    return new_id("contact-a")


@pytest.fixture
def holder() -> str:
    """Contact B: holds the same address, and is the one a clearing request names."""
    return new_id("contact-b")


# --- the rule, as a pure function --------------------------------------------------------------


def test_refusal_for_tells_a_foreign_suppression_from_the_contacts_own() -> None:
    unsubscribe = AddressSuppression(
        Channel.EMAIL, EMAIL_ADDRESS, Reason.EMAIL_UNSUBSCRIBE_LINK, Source.CONTACT, "a"
    )
    stop = AddressSuppression(Channel.SMS, PHONE, Reason.SMS_OPT_OUT_KEYWORD, Source.CONTACT, "a")

    def who(source: Source, contact: str, **kw: Any) -> ClearCredentials:
        return ClearCredentials(source=source, contact_id=contact, **kw)

    # The contact whose event set it: the clear policy alone.
    assert refusal_for(unsubscribe, who(Source.USER, "a")) is None
    assert refusal_for(unsubscribe, who(Source.SUPPORT, "a")) is None
    # Another contact: SUPPORT with evidence, or the address itself.
    for creds in (who(Source.USER, "b"), who(Source.WORKFLOW, "b"), who(Source.SUPPORT, "b")):
        refused = refusal_for(unsubscribe, creds)
        assert refused is not None and refused.block == unsubscribe
        # Said to be another contact's, without naming it (the caller may lack read).
        assert "another contact's event" in refused.what_clears_it
        assert "contact a" not in refused.what_clears_it and "contact a" not in refused.why
        # (WORKFLOW is refused by the clear policy already, and told so.)
        assert ("another contact" in refused.why) is (creds.source is not Source.WORKFLOW)
    assert refusal_for(unsubscribe, who(Source.SUPPORT, "b", evidence=PROOF)) is None
    assert refusal_for(unsubscribe, who(Source.CONTACT, "b", from_address=EMAIL_ADDRESS)) is None
    assert refusal_for(unsubscribe, who(Source.CONTACT, "b")) is not None
    assert refusal_for(unsubscribe, who(Source.CONTACT, "b", from_address="x@y.co")) is not None
    assert refusal_for(stop, who(Source.CONTACT, "b", from_address=PHONE)) is None
    assert refusal_for(stop, who(Source.CONTACT, "b", from_address="+14155550100")) is not None
    # Only an email address undoes its own unsubscribe through SetDnd; a number texts START.
    assert own_address(Source.CONTACT, Channel.EMAIL, EMAIL_ADDRESS) == EMAIL_ADDRESS
    assert own_address(Source.CONTACT, Channel.SMS, PHONE) == ""
    assert own_address(Source.USER, Channel.EMAIL, EMAIL_ADDRESS) == ""


# --- suppressions set by another contact's event ------------------------------------------------

# (id, set the suppression on A, channel, address, reason)
Setter = Callable[[Any, str, str], object]


def _stop(stub: Any, loc: str, contact: str) -> object:
    return inbound(stub, loc, contact, "STOP")


def _email(event: int) -> Setter:
    def report(stub: Any, loc: str, contact: str) -> object:
        return email_event(stub, loc, contact, event)

    return report


SUPPRESSIONS = [
    pytest.param(_stop, SMS, PHONE, R.REASON_SMS_OPT_OUT_KEYWORD, id="SMS_OPT_OUT_KEYWORD"),
    pytest.param(
        _email(pb.EMAIL_EVENT_UNSUBSCRIBE_LINK),
        EMAIL,
        EMAIL_ADDRESS,
        R.REASON_EMAIL_UNSUBSCRIBE_LINK,
        id="EMAIL_UNSUBSCRIBE_LINK",
    ),
    pytest.param(
        _email(pb.EMAIL_EVENT_BOUNCE),
        EMAIL,
        EMAIL_ADDRESS,
        R.REASON_EMAIL_HARD_BOUNCE,
        id="EMAIL_HARD_BOUNCE",
    ),
]

# Clears on B that the clear policy alone lets through for some of these reasons (USER on an
# unsubscribe link, USER or SUPPORT with the removal confirmed on a bounce, CONTACT on an SMS
# opt-out, SUPPORT without evidence on an unsubscribe link), and that must now be refused
# because the suppression is A's address's opt-out.
REFUSED_ON_B = [
    pytest.param({"source": USER}, id="USER"),
    pytest.param({"source": USER, "confirmed": True}, id="USER-confirmed"),
    pytest.param({"source": USER, "evidence": PROOF, "confirmed": True}, id="USER-evidence"),
    pytest.param({"source": WORKFLOW}, id="WORKFLOW"),
    pytest.param(
        {"source": WORKFLOW, "evidence": PROOF, "confirmed": True}, id="WORKFLOW-evidence"
    ),
    pytest.param({"source": SUPPORT}, id="SUPPORT-no-evidence"),
    pytest.param({"source": SUPPORT, "confirmed": True}, id="SUPPORT-confirmed-no-evidence"),
    pytest.param({"source": SUPPORT, "evidence": " \n\t "}, id="SUPPORT-blank-evidence"),
    pytest.param({"source": SYSTEM, "evidence": PROOF, "confirmed": True}, id="SYSTEM"),
]


@pytest.mark.parametrize(("sets", "on_channel", "address", "reason"), SUPPRESSIONS)
@pytest.mark.parametrize("creds", REFUSED_ON_B)
def test_a_clear_on_another_contact_is_refused_and_names_the_suppression(
    stub: Any,
    db: Database,
    loc: str,
    owner: str,
    holder: str,
    sets: Setter,
    on_channel: int,
    address: str,
    reason: int,
    creds: dict[str, Any],
) -> None:
    sets(stub, loc, owner)
    assert not check(stub, loc, holder, on_channel, address)
    before = snapshot(stub, db, loc, [owner, holder])

    error, violations = refusal(lambda: clear(stub, loc, holder, on_channel, address, **creds))
    [violation] = violations
    channel_name = pb.Channel.Name(on_channel).removeprefix("CHANNEL_")
    assert violation.type == R.Name(reason).removeprefix("REASON_")
    assert violation.subject == f"ADDRESS/{channel_name}/{address}"
    # It says the opt-out is another contact's, and what would clear it.
    # The contact holding it is not named (the caller may lack read; GetStatus shows it).
    assert owner not in violation.description and owner not in (error.details() or "")
    assert "another contact's event" in violation.description
    assert "SUPPORT with non-empty evidence" in violation.description
    assert address in error.details()
    assert snapshot(stub, db, loc, [owner, holder]) == before
    assert not check(stub, loc, holder, on_channel, address)


def test_what_clears_a_foreign_suppression_names_the_address_itself(
    stub: Any, loc: str, owner: str, holder: str
) -> None:
    inbound(stub, loc, owner, "STOP")
    _, [sms] = refusal(lambda: clear(stub, loc, holder, SMS, "(415) 555-2671", USER))
    assert "texting START" in sms.description and PHONE in sms.description
    email_event(stub, loc, owner, pb.EMAIL_EVENT_UNSUBSCRIBE_LINK)
    _, [mail] = refusal(lambda: clear(stub, loc, holder, EMAIL, EMAIL_ADDRESS, WORKFLOW))
    assert "source CONTACT" in mail.description and EMAIL_ADDRESS in mail.description
    # A spam complaint is SUPPORT's alone, also from the address itself.
    email_event(stub, loc, owner, pb.EMAIL_EVENT_SPAM_COMPLAINT)
    # (The unsubscribe beside it is the address's own to undo: only the complaint is refused.)
    _, spam = refusal(lambda: clear(stub, loc, holder, EMAIL, EMAIL_ADDRESS, CONTACT))
    assert [v.type for v in spam] == ["EMAIL_SPAM_COMPLAINT"]
    assert "source CONTACT may never clear" in spam[0].description


def test_a_refused_clear_on_another_contact_keeps_every_other_block_too(
    stub: Any, db: Database, loc: str, owner: str, holder: str
) -> None:
    """All or nothing: B's own clearable block stays when A's suppression is refused."""
    stub.SetDnd(
        pb.SetDndRequest(
            location_id=loc,
            contact_id=holder,
            action=ENABLE,
            direction=OUT,
            scope=pb.Scope(channel=EMAIL),
            source=USER,
        ),
        timeout=T,
    )
    email_event(stub, loc, owner, pb.EMAIL_EVENT_UNSUBSCRIBE_LINK)
    before = snapshot(stub, db, loc, [owner, holder])
    _, violations = refusal(lambda: clear(stub, loc, holder, EMAIL, EMAIL_ADDRESS, USER))
    assert [v.subject for v in violations] == [f"ADDRESS/EMAIL/{EMAIL_ADDRESS}"]
    assert snapshot(stub, db, loc, [owner, holder]) == before
    # Without the address, B's own block clears as before.
    assert stub.SetDnd(
        pb.SetDndRequest(
            location_id=loc,
            contact_id=holder,
            action=DISABLE,
            direction=OUT,
            scope=pb.Scope(channel=EMAIL),
            source=USER,
        ),
        timeout=T,
    ).changed


def test_the_owning_contact_still_clears_under_the_clear_policy(
    stub: Any, db: Database, loc: str, owner: str, holder: str
) -> None:
    email_event(stub, loc, owner, pb.EMAIL_EVENT_BOUNCE)
    answer = clear(stub, loc, owner, EMAIL, " PAT@example.com", USER, confirmed=True)
    assert answer.changed
    assert suppression_rows(db, loc) == []
    assert check(stub, loc, holder, EMAIL, EMAIL_ADDRESS)


# --- what may clear it --------------------------------------------------------------------------


@pytest.mark.parametrize(("sets", "on_channel", "address", "reason"), SUPPRESSIONS)
def test_support_with_evidence_clears_it_from_another_contact(
    stub: Any,
    db: Database,
    loc: str,
    owner: str,
    holder: str,
    sets: Setter,
    on_channel: int,
    address: str,
    reason: int,
) -> None:
    sets(stub, loc, owner)
    # A bounce also needs the provider's suppression lifted: evidence does not replace it.
    needs_confirmation = reason == R.REASON_EMAIL_HARD_BOUNCE
    if needs_confirmation:
        refusal(lambda: clear(stub, loc, holder, on_channel, address, SUPPORT, PROOF))
    answer = clear(
        stub,
        loc,
        holder,
        on_channel,
        address,
        SUPPORT,
        PROOF,
        confirmed=needs_confirmation,
        actor_id="agent-3",
    )
    assert answer.changed
    assert answer.status.version == 1
    assert suppression_rows(db, loc) == []
    assert check(stub, loc, holder, on_channel, address)
    # A's own block is A's: it stays.
    assert db.blocks(loc) == 1
    assert not check(stub, loc, owner, on_channel, "")

    # A's history, B's history and the address's history each show the clear.
    cleared = (holder, False, reason, SUPPORT, address, owner)
    set_by_owner = (owner, True, reason, entry_source(reason), address, owner)
    owner_history = [entry(e) for e in history(stub, loc, owner)]
    assert owner_history[0] == cleared
    assert set_by_owner in owner_history
    assert [entry(e) for e in history(stub, loc, holder)] == [cleared]
    assert [entry(e) for e in address_history(stub, loc, on_channel, address)] == [
        cleared,
        set_by_owner,
    ]
    [logged] = history(stub, loc, holder)
    assert logged.evidence == PROOF and logged.actor_id == "agent-3"
    assert logged.version == 1


def entry_source(reason: int) -> int:
    """The source of the event that sets a suppression of ``reason`` in these tests."""
    if reason in (R.REASON_SMS_OPT_OUT_KEYWORD, R.REASON_EMAIL_UNSUBSCRIBE_LINK):
        return CONTACT
    return SYSTEM


def test_start_from_the_number_clears_it_and_every_history_shows_it(
    stub: Any, db: Database, loc: str, owner: str, holder: str
) -> None:
    third = new_id("contact-c")
    inbound(stub, loc, owner, "STOP", sender="(415) 555-2671")
    stub.ReportSmsDeliveryFailure(
        pb.ReportSmsDeliveryFailureRequest(
            location_id=loc,
            contact_id=third,
            provider="twilio",
            error_code="30004",
            to_address="415-555-2671",
        ),
        timeout=T,
    )
    # B texting START from the number is the number itself speaking: both suppressions go.
    answer = inbound(stub, loc, holder, "START", sender="+1 415 555 2671")
    assert answer.action == pb.KEYWORD_ACTION_OPTED_IN
    assert answer.changed
    assert suppression_rows(db, loc) == []
    assert check(stub, loc, holder, SMS, PHONE)

    opt_out, carrier = R.REASON_SMS_OPT_OUT_KEYWORD, R.REASON_SMS_CARRIER_PERMANENT
    holder_history = history(stub, loc, holder)
    # The number's START records its keyword consents, on B (the contact it texted as).
    consents = [e for e in holder_history if e.kind == pb.CHANGE_KIND_CONSENT]
    assert [(e.contact_id, e.consent.address) for e in consents] == [(holder, PHONE)] * 2
    holder_rows = [entry(e) for e in holder_history if e.kind == pb.CHANGE_KIND_BLOCK]
    assert sorted(holder_rows) == sorted(
        [
            (holder, False, opt_out, CONTACT, PHONE, owner),
            (holder, False, carrier, CONTACT, PHONE, third),
        ]
    )
    assert (holder, False, opt_out, CONTACT, PHONE, owner) == entry(history(stub, loc, owner)[0])
    assert (holder, False, carrier, CONTACT, PHONE, third) == entry(history(stub, loc, third)[0])
    # The other's clear is not in A's history, nor A's in C's.
    assert all(e.suppression_contact_id in ("", owner) for e in history(stub, loc, owner))
    assert all(e.suppression_contact_id in ("", third) for e in history(stub, loc, third))
    by_address = [entry(e) for e in address_history(stub, loc, SMS, "(415) 555-2671")]
    assert len(by_address) == 4
    assert sorted(by_address[:2]) == sorted(holder_rows)
    assert by_address[2:] == [
        (third, True, carrier, SYSTEM, PHONE, third),
        (owner, True, opt_out, CONTACT, PHONE, owner),
    ]


def test_the_email_address_undoing_its_own_unsubscribe_clears_it(
    stub: Any, db: Database, loc: str, owner: str, holder: str
) -> None:
    email_event(stub, loc, owner, pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST)
    answer = clear(stub, loc, holder, EMAIL, "Pat@Example.com", CONTACT)
    assert answer.changed
    assert suppression_rows(db, loc) == []
    assert entry(history(stub, loc, owner)[0]) == (
        holder,
        False,
        R.REASON_EMAIL_UNSUBSCRIBE_LINK,
        CONTACT,
        EMAIL_ADDRESS,
        owner,
    )


def test_a_contact_source_through_set_dnd_is_not_the_number_itself(
    stub: Any, db: Database, loc: str, owner: str, holder: str
) -> None:
    """A number lifts its own opt-out by texting START; a SetDnd claiming CONTACT on another
    contact does not (on the opting-out contact it still may, as before)."""
    inbound(stub, loc, owner, "STOP")
    before = snapshot(stub, db, loc, [owner, holder])
    refusal(lambda: clear(stub, loc, holder, SMS, PHONE, CONTACT))
    assert snapshot(stub, db, loc, [owner, holder]) == before
    assert clear(stub, loc, owner, SMS, PHONE, CONTACT).changed
    assert suppression_rows(db, loc) == []


# --- history ------------------------------------------------------------------------------------


def test_mixed_history_pages_cover_each_change_once_newest_first(
    stub: Any, db: Database, loc: str, owner: str, holder: str
) -> None:
    # A's own changes interleaved with changes of A's suppressions made through B.
    for _ in range(4):
        inbound(stub, loc, owner, "STOP")
        clear(stub, loc, holder, SMS, PHONE, SUPPORT, PROOF)
        inbound(stub, loc, owner, "START")
    expected = db.fetch(
        "SELECT contact_id, version FROM dnd_changes WHERE location_id = $1"
        " AND (contact_id = $2 OR owner_contact_id = $2) ORDER BY seq DESC",
        loc,
        owner,
    )
    # Each round: STOP (block, number, and from the second round on the revocation of the
    # two consents the previous START recorded), B's clear of the number, START (block, two
    # keyword consents).
    assert len(expected) == 6 + 3 * 8
    seen: list[pb.HistoryEntry] = []
    token = ""
    while True:
        page = stub.ListHistory(
            pb.ListHistoryRequest(location_id=loc, contact_id=owner, page_size=3, page_token=token),
            timeout=T,
        )
        assert len(page.entries) <= 3
        seen.extend(page.entries)
        token = page.next_page_token
        if not token:
            break
    assert [(e.contact_id, e.version) for e in seen] == [tuple(r) for r in expected]
    assert len({e.cursor for e in seen}) == len(seen)
    assert {e.contact_id for e in seen} == {owner, holder}


def test_address_history_pages_and_stays_within_its_location(
    stub: Any, loc: str, owner: str, holder: str
) -> None:
    for _ in range(3):
        inbound(stub, loc, owner, "STOP")
        inbound(stub, loc, holder, "START")
    elsewhere = new_id("loc")
    inbound(stub, elsewhere, owner, "STOP")
    first = stub.ListHistory(
        pb.ListHistoryRequest(location_id=loc, address=PHONE, channel=SMS, page_size=4),
        timeout=T,
    )
    assert first.next_page_token
    rest = stub.ListHistory(
        pb.ListHistoryRequest(
            location_id=loc,
            address="4155552671",
            channel=SMS,
            page_size=4,
            page_token=first.next_page_token,
        ),
        timeout=T,
    )
    assert rest.next_page_token == ""
    entries = [*first.entries, *rest.entries]
    assert [(e.contact_id, e.enabled) for e in entries] == [(holder, False), (owner, True)] * 3
    assert all(e.address == PHONE and e.suppression_contact_id == owner for e in entries)
    assert len(address_history(stub, elsewhere, SMS, PHONE)) == 1
    # Another channel, another address: nothing.
    assert address_history(stub, loc, EMAIL, EMAIL_ADDRESS) == []
    assert address_history(stub, loc, SMS, "+14155550100") == []


def test_the_client_lists_an_address_history(
    server: ServerProcess, stub: Any, loc: str, owner: str, holder: str
) -> None:
    inbound(stub, loc, owner, "STOP")
    inbound(stub, loc, holder, "START")
    with DndClient(server.addr) as client:
        page = client.list_history(loc, address="(415) 555-2671", channel=ClientChannel.SMS)
        assert [(e.contact_id, e.enabled) for e in page.entries] == [
            (holder, False),
            (owner, True),
        ]
        mixed = client.list_history(loc, owner)
        assert [e.contact_id for e in mixed.entries] == [holder, owner, owner]


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"contact_id": "c-1", "address": PHONE, "channel": SMS}, "address"),
        ({"contact_id": "c-1", "channel": SMS}, "channel"),
        ({"address": PHONE}, "channel"),
        ({"channel": SMS}, "address"),
        ({"address": "call me", "channel": SMS}, "address"),
        ({"address": "not-an-email", "channel": EMAIL}, "address"),
        ({"address": PHONE, "channel": 99}, "channel"),
        ({}, "contact_id"),
    ],
    ids=[
        "contact-and-address",
        "contact-and-channel",
        "address-without-channel",
        "channel-without-address",
        "bad-phone",
        "bad-email",
        "unknown-channel",
        "neither",
    ],
)
def test_address_history_requests_are_validated(
    stub: Any, loc: str, fields: dict[str, Any], bad: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListHistory(pb.ListHistoryRequest(location_id=loc, **fields), timeout=T)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    assert bad in bad_fields(caught.value)


# --- changes logged before ownership was recorded ------------------------------------------------


def test_the_migration_gives_logged_suppression_changes_their_owner(empty_database: Any) -> None:
    """Rows logged before the owner column: an added suppression is its adder's; a cleared one
    is the contact's whose change last added it (the clear's own contact when none is left)."""
    url = empty_database()
    ownership = next(m for m in load_migrations() if m.version == 4)
    rows = [
        # seq, contact, enabled, address (scope SMS, reason SMS_OPT_OUT_KEYWORD)
        (1, "a", True, ""),
        (2, "a", True, PHONE),
        (3, "b", False, PHONE),
        (4, "c", True, PHONE),
        (5, "a", False, PHONE),
        (6, "d", False, "+14155550100"),
    ]

    async def go() -> list[tuple[Any, ...]]:
        conn = await asyncpg.connect(url)
        try:
            for migration in load_migrations():
                if migration.version < ownership.version:
                    await conn.execute(migration.sql)
            for seq, contact, enabled, address in rows:
                await conn.execute(
                    "INSERT INTO dnd_changes (seq, location_id, contact_id, direction, scope,"
                    " enabled, reason, source, version, outbound, inbound, blocked_channels,"
                    " created_at, address) VALUES ($1, 'l', $2, 'OUTBOUND', 'SMS', $3,"
                    " 'SMS_OPT_OUT_KEYWORD', 'CONTACT', $1, 'OFF', 'OFF', '{}', now(), $4)",
                    seq,
                    contact,
                    enabled,
                    address,
                )
            await conn.execute(ownership.sql)
            found = await conn.fetch(
                "SELECT seq, owner_contact_id, caller FROM dnd_changes ORDER BY seq"
            )
            return [tuple(r) for r in found]
        finally:
            await conn.close()

    assert run_async(go()) == [
        (1, "", ""),
        (2, "a", ""),
        (3, "a", ""),
        (4, "c", ""),
        (5, "c", ""),
        (6, "d", ""),
    ]


# --- one address, several contacts' opt-outs ------------------------------------------------------


@pytest.mark.parametrize("first", ["a", "b"])
def test_an_address_two_contacts_opted_out_is_neither_ones_to_clear(
    stub: Any, db: Database, loc: str, first: str
) -> None:
    """Two contacts unsubscribed the same address (the same reason, one suppression row): it
    is both their opt-out, so neither contact's USER clear lifts it, whichever came first;
    the address itself, or SUPPORT with evidence, still may."""
    a, b, third = new_id("contact"), new_id("contact"), new_id("contact")
    for contact in (a, b) if first == "a" else (b, a):
        assert email_event(stub, loc, contact, pb.EMAIL_EVENT_UNSUBSCRIBE_LINK).changed
    for contact in (a, b):
        refusal(lambda c=contact: clear(stub, loc, c, EMAIL, EMAIL_ADDRESS, USER))
    assert not check(stub, loc, third, EMAIL, EMAIL_ADDRESS)
    [row] = db.fetch("SELECT contact_id FROM dnd_address_suppressions WHERE location_id = $1", loc)
    assert row["contact_id"] == ""
    # The address undoing its own unsubscribe lifts it.
    clear(stub, loc, a, EMAIL, EMAIL_ADDRESS, CONTACT)
    assert check(stub, loc, third, EMAIL, EMAIL_ADDRESS)
