"""The compliance allowance over real gRPC on real PostgreSQL: right after an opt-out (STOP, a
revocation phrase, an email unsubscribe) exactly one CheckSend(purpose=COMPLIANCE_REPLY) on
the opt-out's channel, to that contact and address, is allowed within five minutes; it is
recorded (a change of kind COMPLIANCE_REPLY, version + 1, in history and the change stream).

Under 20 concurrent checks, spread over two replicas (each with its own cache), exactly one is
allowed. The five minutes are judged by the database's clock: the tests age the opt-out in
the database instead of waiting.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests import factories
from tests.support import Database, ServerProcess, Watcher, bad_fields, cursor_codec

T = 10.0
SMS, EMAIL, WHATSAPP, CALL = (
    pb.CHANNEL_SMS,
    pb.CHANNEL_EMAIL,
    pb.CHANNEL_WHATSAPP,
    pb.CHANNEL_CALL,
)
REPLY = pb.PURPOSE_COMPLIANCE_REPLY
PHONE = "+14155552671"
OTHER_PHONE = "+14155552672"
EMAIL_ADDRESS = "pat@example.com"
SPENT = pb.DENIAL_COMPLIANCE_REPLY_SPENT
CHECKER = f"secret-checker-{uuid.uuid4().hex}"
Stub = dnd_pb2_grpc.DndServiceStub


@pytest.fixture(scope="module")
def replica(database_url: str, server: ServerProcess, tmp_path_factory: Any) -> Iterator[Any]:
    """A second server on the session's database (its own cache), where callers need a
    token; its only one holds the check permission alone."""
    path: Path = tmp_path_factory.mktemp("compliance") / "tokens.json"
    entry = {
        "name": "checker",
        "sha256": hashlib.sha256(CHECKER.encode()).hexdigest(),
        "locations": "*",
        "scopes": ["check"],
    }
    path.write_text(json.dumps({"tokens": [entry]}), encoding="utf-8")
    process = ServerProcess(database_url, {"DND_TOKENS_FILE": str(path)}).start()
    try:
        with grpc.insecure_channel(process.addr) as channel:
            yield dnd_pb2_grpc.DndServiceStub(channel)
    finally:
        process.stop()


CHECKER_METADATA = (("authorization", f"Bearer {CHECKER}"),)


def stop(stub: Stub, loc: str, contact: str, body: str = "STOP", address: str = PHONE) -> Any:
    answer = stub.ProcessInboundMessage(
        factories.inbound(loc, contact, body, from_address=address), timeout=T
    )
    assert answer.action == pb.KEYWORD_ACTION_OPTED_OUT
    return answer


def reply(
    stub: Stub, loc: str, contact: str, channel: int = SMS, address: str = PHONE, **fields: Any
) -> pb.CheckSendResponse:
    metadata = fields.pop("metadata", None)
    request = factories.check(loc, contact, channel, address=address, purpose=REPLY, **fields)
    answer: pb.CheckSendResponse = stub.CheckSend(request, timeout=T, metadata=metadata)
    return answer


def age(db: Database, loc: str, minutes: int) -> None:
    """Move the location's opt-outs ``minutes`` into the past, in the database (the blocks'
    rows, then the contacts' state documents rebuilt from them)."""
    db.execute(
        "UPDATE dnd_blocks SET since = since - make_interval(mins => $2) WHERE location_id = $1",
        loc,
        minutes,
    )
    db.execute(
        "UPDATE dnd_contacts SET state = dnd_contact_state(location_id, contact_id) "
        "WHERE location_id = $1",
        loc,
    )
    db.execute(
        "UPDATE dnd_address_suppressions SET since = since - make_interval(mins => $2) "
        "WHERE location_id = $1",
        loc,
        minutes,
    )


def reply_rows(db: Database, loc: str) -> list[Any]:
    return db.fetch(
        "SELECT contact_id, direction, scope, reason, enabled, source, version, "
        "provider_detail, caller FROM dnd_changes "
        "WHERE location_id = $1 AND kind = 'COMPLIANCE_REPLY' ORDER BY seq",
        loc,
    )


# --- one reply, then none ---------------------------------------------------------------------


def test_one_reply_after_stop_is_allowed_and_recorded(
    stub: Stub, db: Database, loc: str, contact: str, server: ServerProcess
) -> None:
    stopped = stop(stub, loc, contact)
    version = stopped.status.version
    with Watcher(server.addr, factories.watch(loc)) as watcher:
        # A stream without a cursor starts where the log is when it opens: its first bookmark
        # says it has, so the claim below is written after that and is sure to be streamed.
        assert watcher.wait_bookmarks(1), watcher.error
        first = reply(stub, loc, contact)
        assert first.allowed, first.explanation
        assert first.denial == pb.DENIAL_UNSPECIFIED
        assert first.version == version + 1
        assert "allowed once" in first.explanation
        assert "SMS_OPT_OUT_KEYWORD" in first.explanation

        second = reply(stub, loc, contact)
        assert not second.allowed
        assert second.denial == SPENT
        assert "already allowed at" in second.explanation
        assert [b.reason for b in second.denied_by] == [pb.REASON_SMS_OPT_OUT_KEYWORD]
        assert second.version == version + 1  # a denied claim writes nothing

        # The change stream carries the claim as a change of its own kind.
        status = stub.GetStatus(factories.get_status(loc, contact), timeout=T).status
        events = watcher.wait_past(
            factories_cursor(stub, loc, contact), cursor_codec(server.database_url)
        )
    claims = [e for e in events if e.kind == pb.CHANGE_KIND_COMPLIANCE_REPLY]
    assert len(claims) == 1
    event = claims[0]
    assert (event.contact_id, event.reason, event.scope.channel) == (
        contact,
        pb.REASON_SMS_OPT_OUT_KEYWORD,
        SMS,
    )
    assert event.enabled  # the opt-out still stands
    assert event.source == pb.SOURCE_SYSTEM
    assert event.version == version + 1
    assert status.version == version + 1
    # The opt-out itself still denies every other purpose.
    for purpose in (
        pb.PURPOSE_UNSPECIFIED,
        pb.PURPOSE_MARKETING,
        pb.PURPOSE_INFORMATIONAL,
        pb.PURPOSE_TRANSACTIONAL,
    ):
        answer = stub.CheckSend(
            factories.check(loc, contact, address=PHONE, purpose=purpose), timeout=T
        )
        assert not answer.allowed and answer.denial == pb.DENIAL_DND_BLOCK

    # History lists it (newest first), and the database holds when it was allowed.
    entries = stub.ListHistory(factories.history(loc, contact), timeout=T).entries
    assert entries[0].kind == pb.CHANGE_KIND_COMPLIANCE_REPLY
    assert entries[0].reason == pb.REASON_SMS_OPT_OUT_KEYWORD
    assert entries[0].provider_detail == f"compliance_reply:{PHONE}"
    assert entries[0].version == version + 1
    assert all(e.kind == pb.CHANGE_KIND_BLOCK for e in entries[1:])
    rows = reply_rows(db, loc)
    assert len(rows) == 1 and rows[0]["scope"] == "SMS" and rows[0]["enabled"]
    replied = db.fetchval(
        "SELECT replied_at FROM dnd_blocks WHERE location_id = $1 AND contact_id = $2",
        loc,
        contact,
    )
    assert replied is not None


def factories_cursor(stub: Stub, loc: str, contact: str) -> str:
    """The cursor of the contact's newest change (its history's first entry)."""
    entries = stub.ListHistory(factories.history(loc, contact, page_size=1), timeout=T).entries
    return str(entries[0].cursor)


def test_twenty_concurrent_checks_allow_exactly_one(
    stub: Stub, replica: Stub, db: Database, loc: str, contact: str
) -> None:
    stopped = stop(stub, loc, contact)
    # Both replicas have the fresh opt-out in their caches before the race.
    for target, metadata in ((stub, None), (replica, CHECKER_METADATA)):
        plain = target.CheckSend(
            factories.check(loc, contact, address=PHONE), timeout=T, metadata=metadata
        )
        assert not plain.allowed

    callers = 20
    barrier = threading.Barrier(callers)

    def one(i: int) -> pb.CheckSendResponse:
        target, metadata = (stub, None) if i % 2 else (replica, CHECKER_METADATA)
        barrier.wait(timeout=T)
        return reply(target, loc, contact, metadata=metadata)

    with ThreadPoolExecutor(callers) as pool:
        answers = list(pool.map(one, range(callers)))
    allowed = [a for a in answers if a.allowed]
    assert len(allowed) == 1, [a.explanation for a in answers]
    denied = [a for a in answers if not a.allowed]
    assert all(a.denial == SPENT for a in denied), {a.explanation for a in denied}
    assert allowed[0].version == stopped.status.version + 1
    assert len(reply_rows(db, loc)) == 1
    status = stub.GetStatus(factories.get_status(loc, contact, fully_consistent=True), timeout=T)
    assert status.status.version == stopped.status.version + 1
    # And later ones, on either replica, are denied too.
    assert reply(stub, loc, contact).denial == SPENT
    assert reply(replica, loc, contact, metadata=CHECKER_METADATA).denial == SPENT


# --- the five minutes -----------------------------------------------------------------------


def test_no_reply_five_minutes_after_the_opt_out(
    stub: Stub, db: Database, loc: str, contact: str
) -> None:
    stop(stub, loc, contact)
    # The server's cache holds the fresh opt-out; the database clock decides the claim.
    assert not stub.CheckSend(factories.check(loc, contact, address=PHONE), timeout=T).allowed
    age(db, loc, 6)
    stale = reply(stub, loc, contact)
    assert not stale.allowed
    assert stale.denial == SPENT
    assert "5 minutes after the opt-out are over" in stale.explanation
    consistent = reply(stub, loc, contact, fully_consistent=True)
    assert not consistent.allowed and consistent.denial == SPENT
    assert reply_rows(db, loc) == []


def test_a_reply_four_minutes_after_the_opt_out_is_still_allowed(
    stub: Stub, db: Database, loc: str, contact: str
) -> None:
    stop(stub, loc, contact)
    age(db, loc, 4)
    answer = reply(stub, loc, contact, fully_consistent=True)
    assert answer.allowed, answer.explanation
    assert len(reply_rows(db, loc)) == 1


# --- channel, address, kind of block -----------------------------------------------------------


def test_other_channels_get_no_reply(stub: Stub, db: Database, loc: str, contact: str) -> None:
    stop(stub, loc, contact)
    stub.SetDnd(factories.enable(loc, contact, channel=None), timeout=T)  # all channels
    for channel, address in ((WHATSAPP, PHONE), (EMAIL, EMAIL_ADDRESS), (CALL, PHONE)):
        answer = reply(stub, loc, contact, channel, address)
        assert not answer.allowed, channel
        assert answer.denial == pb.DENIAL_DND_BLOCK
        assert [b.reason for b in answer.denied_by] == [pb.REASON_MANUAL]
    assert reply_rows(db, loc) == []
    # The opt-out's own channel still has its one reply, beside the all-channels block.
    assert reply(stub, loc, contact).allowed


def test_a_channel_nothing_blocks_takes_no_claim(
    stub: Stub, db: Database, loc: str, contact: str
) -> None:
    stopped = stop(stub, loc, contact)
    answer = reply(stub, loc, contact, CALL, PHONE)
    assert answer.allowed
    assert answer.version == stopped.status.version
    assert reply_rows(db, loc) == []
    assert reply(stub, loc, contact).allowed  # the SMS reply is still to be had


def test_the_reply_goes_only_to_the_address_that_opted_out(
    stub: Stub, db: Database, loc: str, contact: str
) -> None:
    stop(stub, loc, contact)
    elsewhere = reply(stub, loc, contact, address=OTHER_PHONE)
    assert not elsewhere.allowed
    assert elsewhere.denial == SPENT
    assert "only to the address that opted out" in elsewhere.explanation
    assert reply_rows(db, loc) == []
    assert reply(stub, loc, contact, address=PHONE).allowed


def test_another_contact_at_the_suppressed_number_gets_no_reply(
    stub: Stub, db: Database, loc: str, contact: str
) -> None:
    stop(stub, loc, contact)
    answer = reply(stub, loc, f"{contact}-other")
    assert not answer.allowed
    assert answer.denial == pb.DENIAL_ADDRESS_SUPPRESSED
    assert reply_rows(db, loc) == []


def test_a_revocation_phrase_allows_one_reply(
    stub: Stub, db: Database, loc: str, contact: str
) -> None:
    stub.UpdateKeywordSettings(factories.keyword_settings(loc, detect=True), timeout=T)
    stop(stub, loc, contact, body="please stop texting me")
    assert reply(stub, loc, contact).allowed
    assert reply(stub, loc, contact).denial == SPENT


def test_an_email_unsubscribe_allows_one_reply(
    stub: Stub, db: Database, loc: str, contact: str
) -> None:
    stub.ReportEmailEvent(
        factories.email_event(
            loc, contact, pb.EMAIL_EVENT_UNSUBSCRIBE_LINK, to_address=EMAIL_ADDRESS
        ),
        timeout=T,
    )
    assert reply(stub, loc, contact, EMAIL, EMAIL_ADDRESS).allowed
    spent = reply(stub, loc, contact, EMAIL, EMAIL_ADDRESS)
    assert not spent.allowed and spent.denial == SPENT
    rows = reply_rows(db, loc)
    assert [(r["scope"], r["reason"]) for r in rows] == [("EMAIL", "EMAIL_UNSUBSCRIBE_LINK")]


@pytest.mark.parametrize(
    "block",
    [
        factories.sms_failure("", "", "30004"),  # carrier opt-out: permanent, no reply
        factories.sms_failure("", "", "30003"),
    ],
    ids=["carrier-permanent", "carrier-temporary"],
)
def test_no_reply_after_a_carrier_block(
    stub: Stub, db: Database, loc: str, contact: str, block: Any
) -> None:
    block.location_id, block.contact_id, block.to_address = loc, contact, PHONE
    stub.ReportSmsDeliveryFailure(block, timeout=T)
    answer = reply(stub, loc, contact)
    assert not answer.allowed and answer.denial == pb.DENIAL_DND_BLOCK
    assert reply_rows(db, loc) == []


# --- who may claim, and batches -------------------------------------------------------------


def test_a_check_only_caller_claims_the_reply(
    stub: Stub, replica: Stub, db: Database, loc: str, contact: str
) -> None:
    stop(stub, loc, contact)
    answer = reply(replica, loc, contact, metadata=CHECKER_METADATA)
    assert answer.allowed, answer.explanation
    spent = reply(replica, loc, contact, metadata=CHECKER_METADATA)
    assert not spent.allowed and spent.denial == SPENT
    # Told the decision, not the dossier: the opt-out's evidence and address stay hidden.
    assert all(not b.evidence and not b.address for b in spent.denied_by)
    rows = reply_rows(db, loc)
    assert [r["caller"] for r in rows] == ["checker"]


def test_the_claiming_replica_answers_from_its_cache_at_once(
    stub: Stub, loc: str, contact: str
) -> None:
    """The claim is written through to the replica's cache: its next cached answer already
    knows the new version and that the reply is spent."""
    stopped = stop(stub, loc, contact)
    assert reply(stub, loc, contact).allowed
    plain = stub.CheckSend(factories.check(loc, contact, address=PHONE), timeout=T)
    assert plain.version == stopped.status.version + 1
    assert reply(stub, loc, contact).denial == SPENT


def test_batches_refuse_compliance_replies(
    stub: Stub, db: Database, loc: str, contact: str
) -> None:
    stop(stub, loc, contact)
    with pytest.raises(grpc.RpcError) as refused:
        stub.BatchCheckSend(factories.batch_check(loc, [contact], purpose=REPLY), timeout=T)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == ["purpose"]
    assert "CheckSend" in (refused.value.details() or "")
    assert reply_rows(db, loc) == []


@pytest.mark.parametrize("rpc", ["CheckSend", "BatchCheckSend"])
def test_an_unknown_purpose_is_refused(stub: Stub, loc: str, contact: str, rpc: str) -> None:
    if rpc == "CheckSend":
        request: Any = factories.check(loc, contact, purpose=99)
    else:
        request = factories.batch_check(loc, [contact], purpose=99)
    with pytest.raises(grpc.RpcError) as refused:
        getattr(stub, rpc)(request, timeout=T)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == ["purpose"]
    assert "PURPOSE_COMPLIANCE_REPLY" in (refused.value.details() or "")
