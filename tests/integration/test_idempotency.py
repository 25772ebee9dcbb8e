"""Idempotency keys on every mutating RPC, over real gRPC on real PostgreSQL.

A retry with the same key (within the retention) returns the first answer byte for byte and
writes nothing; the same key with another request, or on another RPC, is INVALID_ARGUMENT
naming idempotency_key and writes nothing; keys are per location; a failed call does not use
its key up. tests/e2e/test_idempotency_expiry.py: keys expire after DND_IDEMPOTENCY_TTL_SECONDS.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests import factories
from tests.support import (
    DISABLE,
    Database,
    ServerProcess,
    bad_fields,
    channel_scope,
    error_details,
    new_id,
)

TIMEOUT = 10
SMS, EMAIL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL
PHONE = "+14155550123"


# --- one valid, state-changing request per mutating RPC --------------------------------------


def set_dnd(loc: str, contact: str, key: str = "", **fields: Any) -> pb.SetDndRequest:
    return factories.set_dnd(
        loc, contact, **{"actor_id": "user-1", "idempotency_key": key, **fields}
    )


def inbound(
    loc: str, contact: str, key: str = "", **fields: Any
) -> pb.ProcessInboundMessageRequest:
    return factories.inbound(loc, contact, **{"idempotency_key": key, **fields})


def sms_failure(
    loc: str, contact: str, key: str = "", **fields: Any
) -> pb.ReportSmsDeliveryFailureRequest:
    return factories.sms_failure(loc, contact, **{"idempotency_key": key, **fields})


def email_event(loc: str, contact: str, key: str = "", **fields: Any) -> pb.ReportEmailEventRequest:
    return factories.email_event(loc, contact, **{"idempotency_key": key, **fields})


# rpc name: (builder, overrides making a different request of the same RPC)
RPCS: dict[str, tuple[Callable[..., Any], dict[str, Any]]] = {
    "SetDnd": (set_dnd, {"scope": channel_scope(EMAIL)}),
    "ProcessInboundMessage": (inbound, {"body": "QUIT"}),
    "ReportSmsDeliveryFailure": (sms_failure, {"error_code": "21610"}),
    "ReportEmailEvent": (email_event, {"event": pb.EMAIL_EVENT_SPAM_COMPLAINT}),
}


def other_change(stub: Any, loc: str, contact: str) -> None:
    """An unrelated effective change (no key) that moves the contact's version on."""
    answer = stub.SetDnd(
        set_dnd(loc, contact, scope=channel_scope(pb.CHANNEL_GMB), actor_id="other"),
        timeout=TIMEOUT,
    )
    assert answer.changed


def snapshot(db: Database, loc: str) -> dict[str, Any]:
    """Everything a write could touch for ``loc``, and the change-log head."""
    return {
        "changes": db.changes(loc),
        "blocks": db.blocks(loc),
        "contacts": db.fetchval("SELECT count(*) FROM dnd_contacts WHERE location_id = $1", loc),
        "versions": [
            tuple(r)
            for r in db.fetch(
                "SELECT contact_id, version, last_seq FROM dnd_contacts WHERE location_id = $1 "
                "ORDER BY contact_id",
                loc,
            )
        ],
        "suppressions": db.fetchval(
            "SELECT count(*) FROM dnd_address_suppressions WHERE location_id = $1", loc
        ),
        "keys": [
            tuple(r)
            for r in db.fetch(
                "SELECT key, method, request_hash, response, created_at FROM dnd_idempotency "
                "WHERE location_id = $1 ORDER BY key",
                loc,
            )
        ],
        "head": db.heads(),
    }


def expect_key_refused(call: Callable[..., Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=TIMEOUT)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert bad_fields(error) == ["idempotency_key"]
    info = error_details(error)["ErrorInfo"]
    assert info.reason == "INVALID_ARGUMENT"
    assert info.metadata["fields"] == "idempotency_key"
    assert "idempotency_key" in error.details()
    return error


def key_rows(db: Database, loc: str) -> int:
    return db.fetchval("SELECT count(*) FROM dnd_idempotency WHERE location_id = $1", loc)


# --- replay ----------------------------------------------------------------------------------


@pytest.mark.parametrize("rpc", list(RPCS))
def test_retry_returns_first_answer_and_writes_nothing(
    stub: Any, db: Database, loc: str, contact: str, rpc: str
) -> None:
    build, _ = RPCS[rpc]
    call = getattr(stub, rpc)
    request = build(loc, contact, "key-1", **({"to_address": PHONE} if "Sms" in rpc else {}))
    first = call(request, timeout=TIMEOUT)
    assert first.changed
    assert first.status.version >= 1
    assert first.cursor
    written = db.changes(loc)
    # The contact moves on, so answering the retry afresh would give another answer.
    other_change(stub, loc, contact)
    before = snapshot(db, loc)
    for _ in range(3):
        again = call(request, timeout=TIMEOUT)
        assert again.SerializeToString(deterministic=True) == first.SerializeToString(
            deterministic=True
        )
        assert again == first
    assert snapshot(db, loc) == before
    assert db.changes(loc) == written + 1
    current = stub.GetStatus(pb.GetStatusRequest(location_id=loc, contact_id=contact))
    assert current.status.version == first.status.version + 1
    # The stored answer is the one given.
    stored = db.fetchval(
        "SELECT response FROM dnd_idempotency WHERE location_id = $1 AND key = 'key-1'", loc
    )
    assert type(first).FromString(stored) == first


def test_retry_of_a_no_op_replays_the_no_op(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    stub.SetDnd(set_dnd(loc, contact), timeout=TIMEOUT)
    first = stub.SetDnd(set_dnd(loc, contact, "k-noop"), timeout=TIMEOUT)
    assert not first.changed and first.status.version == 1
    assert key_rows(db, loc) == 1
    # Cleared in between: a fresh answer would now enable again; the retry must not.
    stub.SetDnd(set_dnd(loc, contact, action=DISABLE), timeout=TIMEOUT)
    before = snapshot(db, loc)
    again = stub.SetDnd(set_dnd(loc, contact, "k-noop"), timeout=TIMEOUT)
    assert again == first
    assert snapshot(db, loc) == before
    check = stub.CheckSend(pb.CheckSendRequest(location_id=loc, contact_id=contact, channel=SMS))
    assert check.allowed


def test_without_key_a_duplicate_is_a_no_op_and_a_later_answer_differs(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    first = stub.SetDnd(set_dnd(loc, contact), timeout=TIMEOUT)
    duplicate = stub.SetDnd(set_dnd(loc, contact), timeout=TIMEOUT)
    assert first.changed and not duplicate.changed
    assert duplicate.status.version == first.status.version == 1
    assert list(duplicate.affected_blocks) == []
    assert db.changes(loc) == 1
    stub.SetDnd(set_dnd(loc, contact, action=DISABLE), timeout=TIMEOUT)
    later = stub.SetDnd(set_dnd(loc, contact), timeout=TIMEOUT)
    assert later != first
    assert later.changed and later.status.version == 3
    assert later.cursor != first.cursor
    assert db.changes(loc) == 3
    assert key_rows(db, loc) == 0

    # With a key, the same sequence replays the first answer instead.
    keyed = stub.SetDnd(set_dnd(loc, contact + "-k", "same"), timeout=TIMEOUT)
    stub.SetDnd(set_dnd(loc, contact + "-k", action=DISABLE), timeout=TIMEOUT)
    replayed = stub.SetDnd(set_dnd(loc, contact + "-k", "same"), timeout=TIMEOUT)
    assert replayed == keyed and replayed.status.version == 1
    assert db.changes(loc) == 5


def test_retry_of_a_conditional_write_replays_instead_of_aborting(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    request = set_dnd(loc, contact, "cond-1", expected_version=0)
    first = stub.SetDnd(request, timeout=TIMEOUT)
    assert first.changed and first.status.version == 1
    # Version 1 now: a fresh evaluation would be ABORTED; the retry gets the first answer.
    assert stub.SetDnd(request, timeout=TIMEOUT) == first
    assert db.changes(loc) == 1


# --- conflicting use of a key ----------------------------------------------------------------


@pytest.mark.parametrize("rpc", list(RPCS))
def test_same_key_with_a_different_request_is_refused(
    stub: Any, db: Database, loc: str, contact: str, rpc: str
) -> None:
    build, different = RPCS[rpc]
    call = getattr(stub, rpc)
    first = call(build(loc, contact, "key-2"), timeout=TIMEOUT)
    before = snapshot(db, loc)
    variants = [
        build(loc, contact, "key-2", **different),
        build(loc, contact + "-other", "key-2"),
    ]
    for variant in variants:
        error = expect_key_refused(call, variant)
        assert "key-2" in error.details()
        assert snapshot(db, loc) == before
    # The key still belongs to the first request.
    assert call(build(loc, contact, "key-2"), timeout=TIMEOUT) == first
    assert snapshot(db, loc) == before


@pytest.mark.parametrize("first_rpc", list(RPCS))
def test_same_key_on_another_rpc_is_refused(
    stub: Any, db: Database, loc: str, contact: str, first_rpc: str
) -> None:
    build, _ = RPCS[first_rpc]
    getattr(stub, first_rpc)(build(loc, contact, "shared"), timeout=TIMEOUT)
    before = snapshot(db, loc)
    for rpc, (other, _) in RPCS.items():
        if rpc != first_rpc:
            expect_key_refused(getattr(stub, rpc), other(loc, contact, "shared"))
    assert snapshot(db, loc) == before


def test_keys_are_per_location(stub: Any, db: Database, contact: str) -> None:
    loc_a, loc_b = new_id("loc"), new_id("loc")
    a = stub.ReportEmailEvent(email_event(loc_a, contact, "webhook-1"), timeout=TIMEOUT)
    # The same key in another location, even with another request, is a new request.
    b = stub.ReportEmailEvent(
        email_event(loc_b, contact, "webhook-1", event=pb.EMAIL_EVENT_SPAM_COMPLAINT),
        timeout=TIMEOUT,
    )
    assert a.changed and b.changed
    assert a.reason == pb.REASON_EMAIL_HARD_BOUNCE
    assert b.reason == pb.REASON_EMAIL_SPAM_COMPLAINT
    assert db.changes(loc_a) == 1 and db.changes(loc_b) == 1
    assert key_rows(db, loc_a) == 1 and key_rows(db, loc_b) == 1
    assert stub.ReportEmailEvent(email_event(loc_a, contact, "webhook-1")) == a
    expect_key_refused(stub.ReportEmailEvent, email_event(loc_b, contact, "webhook-1"))
    assert db.changes(loc_a) == 1 and db.changes(loc_b) == 1


# --- failures do not use a key up ------------------------------------------------------------


def test_failed_precondition_does_not_consume_the_key(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    stub.ProcessInboundMessage(inbound(loc, contact), timeout=TIMEOUT)
    refused = set_dnd(loc, contact, "clear-1", action=DISABLE)  # USER may not lift STOP
    for _ in range(2):
        with pytest.raises(grpc.RpcError) as caught:
            stub.SetDnd(refused, timeout=TIMEOUT)
        assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert key_rows(db, loc) == 0
        assert db.changes(loc) == 1
    # The key is free: a different request may take it.
    allowed = set_dnd(
        loc, contact, "clear-1", action=DISABLE, source=pb.SOURCE_SUPPORT, evidence="opt-in form"
    )
    answer = stub.SetDnd(allowed, timeout=TIMEOUT)
    assert answer.changed and answer.status.version == 2
    assert key_rows(db, loc) == 1
    assert stub.SetDnd(allowed, timeout=TIMEOUT) == answer
    expect_key_refused(stub.SetDnd, refused)
    assert db.changes(loc) == 2


def test_aborted_and_invalid_requests_do_not_consume_the_key(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    other_change(stub, loc, contact)
    stale = set_dnd(loc, contact, "k-3", expected_version=0)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetDnd(stale, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.ABORTED
    invalid = set_dnd(loc, contact, "k-3", note="x" * 1001)
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetDnd(invalid, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == ["note"]
    assert key_rows(db, loc) == 0
    assert db.changes(loc) == 1
    answer = stub.SetDnd(set_dnd(loc, contact, "k-3", expected_version=1), timeout=TIMEOUT)
    assert answer.changed and answer.status.version == 2
    assert key_rows(db, loc) == 1


# --- concurrent duplicate deliveries ---------------------------------------------------------

CONCURRENT = {
    "email-bounce": ("ReportEmailEvent", email_event, {}, 1),
    "email-complaint-with-address": (
        "ReportEmailEvent",
        email_event,
        {"event": pb.EMAIL_EVENT_SPAM_COMPLAINT, "to_address": "Pat@Example.com"},
        2,
    ),
    "inbound-stop": ("ProcessInboundMessage", inbound, {}, 1),
    "inbound-stop-with-sender": ("ProcessInboundMessage", inbound, {"from_address": PHONE}, 2),
    "sms-failure": ("ReportSmsDeliveryFailure", sms_failure, {}, 1),
    "set-dnd": ("SetDnd", set_dnd, {}, 1),
}


@pytest.mark.parametrize(
    ("rpc", "build", "fields", "rows"), list(CONCURRENT.values()), ids=list(CONCURRENT)
)
async def test_concurrent_duplicate_deliveries_write_once_and_answer_alike(
    server: ServerProcess,
    db: Database,
    loc: str,
    contact: str,
    rpc: str,
    build: Callable[..., Any],
    fields: dict[str, Any],
    rows: int,
) -> None:
    request = build(loc, contact, "delivery-77", **fields)
    async with grpc.aio.insecure_channel(server.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        call = getattr(stub, rpc)
        answers = await asyncio.gather(*(call(request, timeout=30) for _ in range(20)))
    encoded = {a.SerializeToString(deterministic=True) for a in answers}
    assert len(encoded) == 1, "every duplicate must get the first answer"
    assert answers[0].changed
    assert answers[0].status.version == rows
    assert db.changes(loc) == rows
    times = db.fetch("SELECT created_at FROM dnd_changes WHERE location_id = $1", loc)
    assert len({r["created_at"] for r in times}) == 1, "one transaction wrote the change(s)"
    assert key_rows(db, loc) == 1


async def test_concurrent_duplicates_without_a_key_write_once_but_answer_differently(
    server: ServerProcess, db: Database, loc: str, contact: str
) -> None:
    request = email_event(loc, contact)
    async with grpc.aio.insecure_channel(server.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        answers = await asyncio.gather(*(stub.ReportEmailEvent(request) for _ in range(20)))
    outcomes = sorted(a.outcome for a in answers)
    assert outcomes.count(pb.EVENT_OUTCOME_APPLIED) == 1
    assert outcomes.count(pb.EVENT_OUTCOME_ALREADY_ACTIVE) == 19
    assert db.changes(loc) == 1
    assert key_rows(db, loc) == 0


async def test_concurrent_refused_duplicates_leave_the_key_free(
    server: ServerProcess, db: Database, loc: str, contact: str
) -> None:
    refused = set_dnd(loc, contact, "clear-2", action=DISABLE)  # USER may not lift STOP
    async with grpc.aio.insecure_channel(server.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        await stub.ProcessInboundMessage(inbound(loc, contact), timeout=TIMEOUT)

        async def attempt() -> grpc.StatusCode:
            try:
                await stub.SetDnd(refused, timeout=30)
            except grpc.aio.AioRpcError as error:
                return error.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(attempt() for _ in range(10)))
        assert set(codes) == {grpc.StatusCode.FAILED_PRECONDITION}
        assert key_rows(db, loc) == 0
        lifted = await stub.ProcessInboundMessage(
            inbound(loc, contact, "clear-2", body="START"), timeout=TIMEOUT
        )
    assert lifted.changed and lifted.action == pb.KEYWORD_ACTION_OPTED_IN
    # STOP, its lifting, and the two keyword consents START records.
    assert db.changes(loc) == 4
    assert key_rows(db, loc) == 1


# --- retention -------------------------------------------------------------------------------


def test_default_retention_is_24_hours(stub: Any, db: Database, loc: str, contact: str) -> None:
    first = stub.SetDnd(set_dnd(loc, contact, "day-key"), timeout=TIMEOUT)
    stub.SetDnd(set_dnd(loc, contact, action=DISABLE), timeout=TIMEOUT)

    def age(interval: dt.timedelta) -> None:
        db.fetch(
            "UPDATE dnd_idempotency SET created_at = now() - $2::interval "
            "WHERE location_id = $1 AND key = 'day-key'",
            loc,
            interval,
        )

    age(dt.timedelta(hours=23, minutes=59))
    before = snapshot(db, loc)
    assert stub.SetDnd(set_dnd(loc, contact, "day-key"), timeout=TIMEOUT) == first
    expect_key_refused(stub.SetDnd, set_dnd(loc, contact, "day-key", scope=channel_scope(EMAIL)))
    assert snapshot(db, loc) == before
    age(dt.timedelta(hours=24, minutes=1))
    renewed = stub.SetDnd(set_dnd(loc, contact, "day-key"), timeout=TIMEOUT)
    assert renewed.changed and renewed.status.version == 3
    assert db.changes(loc) == 3


def _unkeyed(method: str, request: Any) -> bytes:
    """The request hash earlier versions kept: SHA-256 of the method and the request without
    its key."""
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("idempotency_key")
    return hashlib.sha256(
        method.encode() + b"\0" + copy.SerializeToString(deterministic=True)
    ).digest()


def test_the_kept_request_hash_is_keyed_and_earlier_keys_still_replay(
    stub: Any, db: Database, loc: str
) -> None:
    """A request names phone numbers: its kept hash is keyed with the deployment's secret, so
    nobody holding the table can try every number against it. A key kept by an earlier
    version (the unkeyed hash) still replays, and still refuses another request."""
    request = factories.enable(loc, "c-hash", idempotency_key="k-hash", address="+14155550123")
    first = stub.SetDnd(request, timeout=10)
    row = db.fetch(
        "SELECT method, request_hash FROM dnd_idempotency WHERE location_id = $1 AND key = $2",
        loc,
        "k-hash",
    )[0]
    assert len(row["request_hash"]) == 32
    assert bytes(row["request_hash"]) != _unkeyed(row["method"], request)
    # As an earlier version kept it.
    db.fetch(
        "UPDATE dnd_idempotency SET request_hash = $3 WHERE location_id = $1 AND key = $2",
        loc,
        "k-hash",
        _unkeyed(row["method"], request),
    )
    changes = db.changes(loc)
    assert stub.SetDnd(request, timeout=10) == first
    assert db.changes(loc) == changes
    other = factories.enable(loc, "c-other", idempotency_key="k-hash")
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetDnd(other, timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == ["idempotency_key"]
