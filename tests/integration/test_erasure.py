"""EraseContact over real gRPC on real PostgreSQL: a contact's personal data is gone from every
answer, table and stored replay, while its opt-outs keep denying (the contact's own blocks,
and its addresses by keyed hash, whichever contact they are checked for); the erasure is one
change of its own, seen by watchers, idempotent, and safe against concurrent writes."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests import factories as f
from tests.support import Database, ServerProcess, Watcher, bad_fields, new_id

T = 10
# The documented cursor of the start of the log.
START = "ZG5kMTow"
PHONE = "+14155550123"
EMAIL = "lee.erased@example.com"
PERSONAL = (PHONE, "4155550123", EMAIL, "agent-7", "angry caller", "203.0.113.9", "Mozilla/5")


def opt_out_with_personal_data(stub: Any, loc: str, contact: str) -> None:
    """STOP from the contact's phone (block + suppression, the text as evidence), a manual
    EMAIL block with a note, and an EMAIL consent with its proof."""
    assert stub.ProcessInboundMessage(
        f.inbound(loc, contact, "STOP", from_address=PHONE), timeout=T
    ).changed
    assert stub.SetDnd(
        f.enable(loc, contact, pb.CHANNEL_EMAIL, actor_id="agent-7", note="angry caller"),
        timeout=T,
    ).changed
    stub.RecordConsent(
        pb.RecordConsentRequest(
            location_id=loc,
            contact_id=contact,
            channel=pb.CHANNEL_EMAIL,
            purpose=pb.CONSENT_PURPOSE_INFORMATIONAL,
            address=EMAIL,
            method=pb.CONSENT_METHOD_WEB_FORM,
            source=pb.SOURCE_USER,
            actor_id="agent-7",
            evidence=pb.ConsentEvidence(ip_address="203.0.113.9", user_agent="Mozilla/5.0"),
        ),
        timeout=T,
    )


def location_rows(db: Database, loc: str) -> str:
    """Every row the service keeps of ``loc``, as text."""
    texts = []
    for table in (
        "dnd_changes",
        "dnd_blocks",
        "dnd_consents",
        "dnd_address_suppressions",
        "dnd_contacts",
        "dnd_erased_suppressions",
    ):
        for row in db.fetch(
            f"SELECT to_jsonb(t)::text AS j FROM {table} t WHERE location_id = $1", loc
        ):
            texts.append(row["j"])
    for row in db.fetch("SELECT response FROM dnd_idempotency WHERE location_id = $1", loc):
        if row["response"] is not None:
            texts.append(bytes(row["response"]).decode("latin-1"))
    return "\n".join(texts)


def test_erasure_removes_personal_data_and_keeps_the_opt_outs(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    opt_out_with_personal_data(stub, loc, contact)
    other = new_id("contact")
    # A check through the cache before the erasure: the address's suppression, set by contact.
    before = stub.CheckSend(f.check(loc, other, address=PHONE), timeout=T)
    assert before.denied_by_address[0].contact_id == contact
    assert any(p in location_rows(db, loc) for p in PERSONAL)

    answer = stub.EraseContact(
        f.erase(loc, contact, email_addresses=[EMAIL.upper()], reference="GDPR-2026-0042"),
        timeout=T,
    )
    assert answer.changed and not answer.already_erased
    assert answer.erased.blocks_scrubbed == 2
    assert answer.erased.consents_erased == 1
    assert answer.erased.suppressions_hashed == 1
    assert answer.erased.history_entries_scrubbed >= 3
    assert "erased" in answer.explanation

    # Nothing personal is left in any table of the location, nor in any stored answer.
    rows = location_rows(db, loc)
    leaked = [p for p in PERSONAL if p in rows]
    assert not leaked, leaked

    # The contact's blocks stay, without their personal fields: it still reads as blocked.
    status = stub.GetStatus(
        f.get_status(loc, contact, phone_numbers=[PHONE], fully_consistent=True), timeout=T
    ).status
    assert sorted(b.reason for b in status.blocks) == [
        pb.REASON_MANUAL,
        pb.REASON_SMS_OPT_OUT_KEYWORD,
    ]
    for block in status.blocks:
        assert (block.actor_id, block.note, block.evidence, block.provider_detail) == ("",) * 4
        assert block.address == "" and block.HasField("since")
    assert not status.consents
    [kept] = status.address_suppressions
    assert kept.erased and kept.address == PHONE and kept.reason == pb.REASON_SMS_OPT_OUT_KEYWORD
    assert (kept.contact_id, kept.actor_id, kept.provider_detail) == ("", "", "")
    assert stub.CheckSend(f.check(loc, contact), timeout=T).denial == pb.DENIAL_DND_BLOCK

    # The erased person under a new contact id is still never messaged at that number: through
    # the cache (the erasure dropped the location's cached suppressions) and from the database.
    for fresh in (False, True):
        check = stub.CheckSend(
            f.check(loc, other, address=PHONE, min_cursor=answer.cursor, fully_consistent=fresh),
            timeout=T,
        )
        assert not check.allowed and check.denial == pb.DENIAL_ADDRESS_SUPPRESSED
        [denied] = check.denied_by_address
        assert denied.erased and denied.contact_id == ""
        assert contact not in check.explanation and "erased contact" in check.explanation
    batch = stub.BatchCheckSend(
        f.batch_check(loc, [pb.CheckTarget(contact_id=new_id("c"), address=PHONE), "nobody"]),
        timeout=T,
    )
    assert [r.allowed for r in batch.results] == [False, True]
    # Another number, and the email (the contact never opted out of email by address), go.
    assert stub.CheckSend(f.check(loc, other, address="+14155550999"), timeout=T).allowed

    # History: every entry stays (the log keeps its order), none holds personal data.
    entries = stub.ListHistory(f.history(loc, contact, page_size=100), timeout=T).entries
    erasure = entries[0]
    assert erasure.kind == pb.CHANGE_KIND_ERASURE and erasure.note == "GDPR-2026-0042"
    assert erasure.source == pb.SOURCE_SUPPORT and erasure.version == status.version
    for entry in entries[1:]:
        shown = (entry.actor_id, entry.note, entry.evidence, entry.provider_detail, entry.address)
        assert shown == ("",) * 5, entry
        if entry.kind == pb.CHANGE_KIND_CONSENT:
            assert not entry.consent.HasField("evidence") or entry.consent.evidence == (
                pb.ConsentEvidence()
            )
            assert entry.consent.address == "" and entry.consent.actor_id == ""
    by_address = stub.ListHistory(
        f.history(loc, "", contact_id="", address=PHONE, channel=pb.CHANNEL_SMS), timeout=T
    )
    assert not by_address.entries


def test_erasing_twice_changes_nothing(stub: Any, db: Database, loc: str, contact: str) -> None:
    opt_out_with_personal_data(stub, loc, contact)
    first = stub.EraseContact(f.erase(loc, contact), timeout=T)
    changes = db.changes(loc)
    second = stub.EraseContact(f.erase(loc, contact), timeout=T)
    assert not second.changed and second.already_erased
    assert second.erased == pb.ErasureCounts()
    assert second.cursor == first.cursor
    assert second.status.version == first.status.version
    assert db.changes(loc) == changes
    # Personal data written since is erased by the next erasure (a change of its own).
    stub.SetDnd(f.enable(loc, contact, pb.CHANNEL_GMB, note="new note"), timeout=T)
    third = stub.EraseContact(f.erase(loc, contact), timeout=T)
    assert third.changed and third.erased.blocks_scrubbed == 1
    assert "new note" not in location_rows(db, loc)


def test_a_contact_never_seen_has_nothing_to_erase(stub: Any, db: Database, loc: str) -> None:
    answer = stub.EraseContact(f.erase(loc, "never-seen", phone_numbers=[PHONE]), timeout=T)
    assert not answer.changed and not answer.already_erased
    assert answer.status.version == 0
    assert db.fetchval("SELECT count(*) FROM dnd_contacts WHERE location_id = $1", loc) == 0
    assert db.changes(loc) == 0
    # Naming an address keeps no suppression of it: the contact never opted out.
    assert stub.CheckSend(f.check(loc, "someone", address=PHONE), timeout=T).allowed


def test_named_addresses_keep_the_channels_the_contact_opted_out_of(
    stub: Any, loc: str, contact: str
) -> None:
    """The contact's SMS opt-out named no number: the number the caller names is kept (by
    hash) on SMS, an email named is not (no email opt-out), and a manual block keeps none."""
    stub.SetDnd(
        f.enable(loc, contact, reason=pb.REASON_SMS_OPT_OUT_KEYWORD, source=pb.SOURCE_CONTACT),
        timeout=T,
    )
    stub.SetDnd(f.enable(loc, contact, pb.CHANNEL_EMAIL), timeout=T)
    answer = stub.EraseContact(
        f.erase(loc, contact, phone_numbers=["(415) 555-0123"], email_addresses=[EMAIL]),
        timeout=T,
    )
    assert answer.changed and answer.erased.suppressions_hashed == 1
    # The answer shows the opt-out kept, never its address (the answer is stored for replays).
    [kept] = answer.status.address_suppressions
    assert kept.erased and kept.address == "" and kept.channel == pb.CHANNEL_SMS
    assert kept.reason == pb.REASON_SMS_OPT_OUT_KEYWORD
    other = new_id("contact")
    sms = stub.CheckSend(f.check(loc, other, address=PHONE, fully_consistent=True), timeout=T)
    assert sms.denial == pb.DENIAL_ADDRESS_SUPPRESSED
    email = f.check(loc, other, channel=pb.CHANNEL_EMAIL, address=EMAIL, fully_consistent=True)
    assert stub.CheckSend(email, timeout=T).allowed
    # Kept per location: the same number is free elsewhere.
    assert stub.CheckSend(f.check(new_id("loc"), other, address=PHONE), timeout=T).allowed


@pytest.mark.parametrize("opted_out", [pb.CHANNEL_WHATSAPP, pb.CHANNEL_RCS])
def test_keyword_opt_outs_of_whatsapp_and_rcs_are_kept_for_their_numbers(
    stub: Any, loc: str, contact: str, opted_out: int
) -> None:
    """A STOP on WhatsApp or RCS (a KEYWORD_OPT_OUT) is an opt-out of the number on that
    channel: the erasure keeps it by hash for the number the STOP came from and for the
    numbers the request names, so the person under a new contact id is still denied."""
    named = "+14155550188"
    assert stub.ProcessInboundMessage(
        f.inbound(loc, contact, "STOP", channel=opted_out, from_address=PHONE), timeout=T
    ).changed
    answer = stub.EraseContact(f.erase(loc, contact, phone_numbers=[named]), timeout=T)
    assert answer.changed
    other = new_id("contact")
    for number in (PHONE, named):
        check = f.check(loc, other, channel=opted_out, address=number, fully_consistent=True)
        found = stub.CheckSend(check, timeout=T)
        assert found.denial == pb.DENIAL_ADDRESS_SUPPRESSED, (number, found)
    # The opted-out channel only: SMS to the number stays allowed.
    sms = f.check(loc, other, address=PHONE, fully_consistent=True)
    assert stub.CheckSend(sms, timeout=T).allowed


def test_an_erased_opt_out_allows_no_compliance_reply(stub: Any, loc: str, contact: str) -> None:
    """Before the erasure the one reply after a STOP may go only to the number that sent it.
    The erasure drops the number from the block: the reply not yet sent is spent, never
    allowed to any number."""
    assert stub.ProcessInboundMessage(
        f.inbound(loc, contact, "STOP", from_address=PHONE), timeout=T
    ).changed
    elsewhere = f.check(loc, contact, address="+14155550999", purpose=pb.PURPOSE_COMPLIANCE_REPLY)
    refused = stub.CheckSend(elsewhere, timeout=T)
    assert refused.denial == pb.DENIAL_COMPLIANCE_REPLY_SPENT
    assert "only to the address that opted out" in refused.explanation
    assert stub.EraseContact(f.erase(loc, contact), timeout=T).changed
    for address in ("+14155550999", PHONE, ""):
        check = f.check(loc, contact, address=address, purpose=pb.PURPOSE_COMPLIANCE_REPLY)
        found = stub.CheckSend(check, timeout=T)
        assert not found.allowed, (address, found)
        assert found.denial in (pb.DENIAL_COMPLIANCE_REPLY_SPENT, pb.DENIAL_ADDRESS_SUPPRESSED)


def test_a_write_naming_an_erased_address_leaves_it_denied(
    stub: Any, loc: str, contact: str
) -> None:
    """A write through this replica that names an erased address (another contact's block,
    sent to that address) must not cache the address as unsuppressed: a write reads only
    its plaintext suppressions, not those kept by hash. Checked through the cache once it
    holds the write, as a caller reading its own write would."""
    assert stub.ProcessInboundMessage(
        f.inbound(loc, contact, "STOP", from_address=PHONE), timeout=T
    ).changed
    assert stub.EraseContact(f.erase(loc, contact), timeout=T).changed
    checker = new_id("contact")
    consistent = f.check(loc, checker, address=PHONE, fully_consistent=True)
    assert stub.CheckSend(consistent, timeout=T).denial == pb.DENIAL_ADDRESS_SUPPRESSED
    written = stub.SetDnd(f.enable(loc, new_id("contact"), address=PHONE), timeout=T)
    assert written.changed
    for check in (
        f.check(loc, checker, address=PHONE, min_cursor=written.cursor),
        f.check(loc, checker, address=PHONE),
        f.check(loc, checker, address=PHONE, purpose=pb.PURPOSE_MARKETING),
    ):
        found = stub.CheckSend(check, timeout=T)
        assert found.denial == pb.DENIAL_ADDRESS_SUPPRESSED, found
    batch = stub.BatchCheckSend(
        pb.BatchCheckSendRequest(
            location_id=loc, channel=pb.CHANNEL_SMS, targets=f.targets((checker, PHONE))
        ),
        timeout=T,
    )
    assert not batch.results[0].allowed


def test_stored_answers_replay_without_personal_data(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    request = f.enable(loc, contact, actor_id="agent-7", note="angry caller", idempotency_key="k1")
    first = stub.SetDnd(request, timeout=T)
    assert first.status.blocks[0].note == "angry caller"
    erase = f.erase(loc, contact, idempotency_key="erase-1")
    erased = stub.EraseContact(erase, timeout=T)
    assert erased.erased.idempotent_answers_scrubbed == 1
    changes = db.changes(loc)
    replay = stub.SetDnd(request, timeout=T)
    assert replay.changed and replay.cursor == first.cursor  # the first answer...
    assert replay.status.blocks[0].note == "" and replay.affected_blocks[0].actor_id == ""
    assert stub.EraseContact(erase, timeout=T) == erased  # ...and the erasure's own
    assert db.changes(loc) == changes


def test_a_stored_bulk_answer_replays_without_the_erased_address(
    stub: Any, loc: str, contact: str
) -> None:
    """A bulk item refused by the contact's suppression names it (subject and description):
    the erasure scrubs those from the stored answer too."""
    victim_stop = f.enable(
        loc,
        contact,
        reason=pb.REASON_SMS_OPT_OUT_KEYWORD,
        source=pb.SOURCE_CONTACT,
        address=PHONE,
    )
    foreign_clear = f.disable(loc, new_id("contact"), address=PHONE)
    for item in (victim_stop, foreign_clear):
        item.location_id = ""
    request = pb.BulkSetDndRequest(
        location_id=loc, items=[victim_stop, foreign_clear], idempotency_key="bulk-erase-1"
    )
    first = stub.BulkSetDnd(request, timeout=T)
    assert first.results[1].outcome == pb.BULK_ITEM_OUTCOME_REFUSED
    assert PHONE in first.results[1].refusals[0].subject
    assert stub.EraseContact(f.erase(loc, contact), timeout=T).changed
    replay = stub.BulkSetDnd(request, timeout=T)
    assert replay.results[1].outcome == pb.BULK_ITEM_OUTCOME_REFUSED
    text = str(replay)
    assert PHONE not in text and PHONE[2:] not in text and contact not in text


@pytest.mark.parametrize("rpc", ["SetDnd", "ProcessInboundMessage"])
def test_another_contacts_stored_answer_loses_the_erased_address(
    stub: Any, db: Database, loc: str, contact: str, rpc: str
) -> None:
    """Another contact's write named the address the erased contact opted out: its stored
    answer showed that contact's suppression (its address, who and why). The erasure scrubs it
    too, and the replay still answers as the first time otherwise."""
    stopped = stub.ProcessInboundMessage(
        f.inbound(loc, contact, "STOP", from_address=PHONE), timeout=T
    )
    assert stopped.changed
    other = new_id("contact")
    if rpc == "ProcessInboundMessage":
        request: Any = f.inbound(loc, other, "STOP", from_address=PHONE, idempotency_key="kB")
        call = stub.ProcessInboundMessage
    else:
        request = f.enable(loc, other, address=PHONE, idempotency_key="kB")
        call = stub.SetDnd
    first = call(request, timeout=T)
    assert PHONE in str(first.status.address_suppressions)
    erased = stub.EraseContact(f.erase(loc, contact, phone_numbers=[PHONE]), timeout=T)
    assert erased.erased.idempotent_answers_scrubbed >= 1
    replay = call(request, timeout=T)
    assert replay.cursor == first.cursor and replay.status.version == first.status.version
    text = str(replay)
    assert PHONE not in text and PHONE[2:] not in text, text
    assert "keyword:STOP" not in str(replay.status.address_suppressions)


def test_an_answer_naming_a_longer_address_is_left_alone(stub: Any, loc: str, contact: str) -> None:
    """The erased address "pat@example.co" is no part of "pat@example.com": another contact's
    stored answer naming only the longer one replays as it was."""
    other = new_id("contact")
    mail = pb.CHANNEL_EMAIL
    stub.SetDnd(f.enable(loc, contact, mail, address="pat@example.co"), timeout=T)
    request = f.enable(loc, other, mail, address="pat@example.com", idempotency_key="kC")
    first = stub.SetDnd(request, timeout=T)
    erase = f.erase(loc, contact, email_addresses=["pat@example.co"])
    assert stub.EraseContact(erase, timeout=T).changed
    assert stub.SetDnd(request, timeout=T) == first


def test_watchers_see_the_erasure_without_personal_data(
    server: ServerProcess, stub: Any, loc: str, contact: str
) -> None:
    opt_out_with_personal_data(stub, loc, contact)
    with Watcher(server.addr, f.watch(loc)) as watcher:
        watcher.wait_bookmarks(1)
        answer = stub.EraseContact(f.erase(loc, contact), timeout=T)
        [event] = watcher.wait_events(1)
    assert event.kind == pb.CHANGE_KIND_ERASURE and event.cursor == answer.cursor
    assert event.contact_id == contact and event.source == pb.SOURCE_SUPPORT
    assert (event.actor_id, event.address, event.suppression_contact_id) == ("", "", "")
    assert event.version == answer.status.version
    assert event.outbound == pb.DND_STATUS_PARTIAL  # still blocked on SMS and EMAIL
    text = json.dumps(str(event))
    assert not any(p in text for p in PERSONAL)
    # A watcher resuming from before the opt-out replays the scrubbed log: no personal data.
    with Watcher(server.addr, f.watch(loc, after_cursor=START)) as replay:
        events = replay.wait_events(5)
    assert [e.kind for e in events][-1] == pb.CHANGE_KIND_ERASURE and len(events) == 5
    replayed = "\n".join(str(e) for e in events)
    assert not any(p in replayed for p in PERSONAL)


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"reference": ""}, "reference"),
        ({"reference": "x" * 129}, "reference"),
        ({"reference": "erase lee@example.com"}, "reference"),
        ({"reference": "call +1 415 555 0123"}, "reference"),
        ({"reference": "GDPR\n1"}, "reference"),
        ({"phone_numbers": ["not a phone"]}, "phone_numbers[0]"),
        ({"email_addresses": ["a@b.co"] * 21}, "email_addresses"),
        ({"contact_id": ""}, "contact_id"),
    ],
)
def test_bad_erasures_are_refused_and_change_nothing(
    stub: Any, db: Database, loc: str, contact: str, fields: dict[str, Any], field: str
) -> None:
    stub.SetDnd(f.enable(loc, contact, note="kept"), timeout=T)
    changes = db.changes(loc)
    with pytest.raises(grpc.RpcError) as caught:
        stub.EraseContact(f.erase(loc, contact, **fields), timeout=T)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field in bad_fields(caught.value)
    assert db.changes(loc) == changes
    assert db.fetchval("SELECT note FROM dnd_blocks WHERE location_id = $1", loc) == "kept"


def test_writes_racing_an_erasure_are_erased_or_come_after_it(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    """The erasure locks the contact: every write either committed before it (its personal
    data erased) or after it (a later version, kept)."""
    stub.SetDnd(f.enable(loc, contact, note="before"), timeout=T)
    channels = [pb.CHANNEL_EMAIL, pb.CHANNEL_WHATSAPP, pb.CHANNEL_GMB, pb.CHANNEL_CALL] * 3

    def write(i: int) -> None:
        channel = channels[i]
        action = f.ENABLE if i % 2 == 0 else f.DISABLE
        stub.SetDnd(f.set_dnd(loc, contact, action, channel, note=f"racing {i}"), timeout=T)

    with ThreadPoolExecutor(max_workers=6) as pool:
        racing = [pool.submit(write, i) for i in range(len(channels))]
        erased = pool.submit(lambda: stub.EraseContact(f.erase(loc, contact), timeout=T))
        for done in racing:
            done.result()
        answer = erased.result()
    at = answer.status.version
    rows = db.fetch(
        "SELECT version, note, kind FROM dnd_changes WHERE location_id = $1 AND contact_id = $2",
        loc,
        contact,
    )
    assert [r["version"] for r in rows if r["kind"] == "ERASURE"] == [at]
    assert all(r["note"] == "" for r in rows if r["version"] < at)
    assert sorted(r["version"] for r in rows) == list(range(1, len(rows) + 1))
    later = db.fetch(
        "SELECT note FROM dnd_blocks WHERE location_id = $1 AND contact_id = $2", loc, contact
    )
    racing_after = {r["note"] for r in rows if r["version"] > at}
    assert {r["note"] for r in later} <= racing_after | {""}


def test_an_erasure_key_reused_for_another_request_is_refused(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    stub.SetDnd(f.enable(loc, contact, note="kept"), timeout=T)
    stub.SetDnd(f.enable(loc, "other", note="kept too"), timeout=T)
    stub.EraseContact(f.erase(loc, contact, idempotency_key="dsr-1"), timeout=T)
    changes = db.changes(loc)
    for variant in (
        f.erase(loc, contact, idempotency_key="dsr-1", reference="GDPR-2"),
        f.erase(loc, "other", idempotency_key="dsr-1"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            stub.EraseContact(variant, timeout=T)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(caught.value) == ["idempotency_key"]
    assert db.changes(loc) == changes
    note = "SELECT note FROM dnd_blocks WHERE location_id = $1 AND contact_id = 'other'"
    assert db.fetchval(note, loc) == "kept too"
