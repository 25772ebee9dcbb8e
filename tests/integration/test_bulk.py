"""BulkSetDnd over real gRPC on real PostgreSQL: every item judged by SetDnd's rules and
answered in request order (changed, unchanged, refused, invalid), one idempotency key per
call, chunked transactions resumed by a retry after the database failed mid-call, and bad
requests refused whole, changing nothing.
"""

from __future__ import annotations

from typing import Any

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_server import cursor
from dnd_server.domain.errors import PartlyWritten, Unavailable
from dnd_server.records import BulkClaim, ItemOutcome
from dnd_server.service import DndService, SetDndCommand
from dnd_server.storage.store import Store

from tests import factories
from tests.support import (
    Database,
    ServerProcess,
    Watcher,
    bad_fields,
    error_details,
)

TIMEOUT = 30
SMS, EMAIL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL
CHANGED = pb.BULK_ITEM_OUTCOME_CHANGED
UNCHANGED = pb.BULK_ITEM_OUTCOME_UNCHANGED
REFUSED = pb.BULK_ITEM_OUTCOME_REFUSED
INVALID = pb.BULK_ITEM_OUTCOME_INVALID
MISMATCH = pb.BULK_ITEM_OUTCOME_VERSION_MISMATCH


def item(contact: str, **fields: Any) -> pb.SetDndRequest:
    """A bulk item: a SetDnd without location (the call's)."""
    return factories.enable("", contact, **fields)


def bulk(loc: str, items: list[pb.SetDndRequest], key: str = "") -> pb.BulkSetDndRequest:
    return pb.BulkSetDndRequest(location_id=loc, items=items, idempotency_key=key)


def outcomes(answer: pb.BulkSetDndResponse) -> list[int]:
    return [r.outcome for r in answer.results]


def test_items_are_judged_like_set_dnd_and_answered_in_order(
    stub: Any, db: Database, loc: str
) -> None:
    stop = pb.REASON_SMS_OPT_OUT_KEYWORD
    items = [
        item("c1"),
        item(
            "c2", channel=EMAIL, address="Ann@Example.com", reason=pb.REASON_EMAIL_UNSUBSCRIBE_LINK
        ),
        item("c1"),  # the same block again: unchanged
        item("c3", source=pb.SOURCE_CONTACT, reason=stop),
        # SUPPORT may not lift the contact's own STOP without evidence: refused.
        factories.disable("", "c3", source=pb.SOURCE_SUPPORT),
        item("c4", scope=pb.Scope(channel=99)),  # invalid channel
        item("c5", location_id="someone-elses-location"),
        item("c6", idempotency_key="per-item-key"),
        item("c1", expected_version=7),
        factories.disable("", "c1"),  # the user clears its own block
    ]
    items[4].ClearField("location_id")
    items[9].ClearField("location_id")
    answer = stub.BulkSetDnd(bulk(loc, items), timeout=TIMEOUT)
    assert outcomes(answer) == [
        CHANGED,
        CHANGED,
        UNCHANGED,
        CHANGED,
        REFUSED,
        INVALID,
        INVALID,
        INVALID,
        MISMATCH,
        CHANGED,
    ]
    assert (answer.changed, answer.unchanged, answer.refused, answer.invalid) == (4, 1, 1, 3)
    assert [r.version for r in answer.results[:4]] == [1, 2, 1, 1]
    assert answer.results[8].version == 1
    assert answer.results[9].version == 2
    refusal = answer.results[4].refusals
    assert [r.reason for r in refusal] == [stop]
    assert refusal[0].subject == "OUTBOUND/SMS"
    assert "evidence" in refusal[0].description
    assert [v.field for v in answer.results[5].violations] == ["items[5].scope.channel"]
    assert [v.field for v in answer.results[6].violations] == ["items[6].location_id"]
    assert [v.field for v in answer.results[7].violations] == ["items[7].idempotency_key"]
    assert answer.cursor
    # The state is SetDnd's: c1 cleared again, c2's address suppressed, c3 still blocked.
    status = stub.GetStatus(pb.GetStatusRequest(location_id=loc, contact_id="c1")).status
    assert (status.version, list(status.blocks)) == (2, [])
    c2 = stub.GetStatus(
        pb.GetStatusRequest(location_id=loc, contact_id="c2", email_addresses=["ann@example.com"])
    ).status
    assert [s.address for s in c2.address_suppressions] == ["ann@example.com"]
    c3 = stub.GetStatus(pb.GetStatusRequest(location_id=loc, contact_id="c3")).status
    assert [b.reason for b in c3.blocks] == [stop]
    # No contact of the invalid items was written, nor anything in the other location.
    assert (
        db.fetchval(
            "SELECT count(*) FROM dnd_contacts WHERE location_id = $1 AND contact_id = ANY($2)",
            loc,
            ["c4", "c5", "c6"],
        )
        == 0
    )
    assert db.changes("someone-elses-location") == 0
    # One change row per effective step, in item order, each contact's versions in order.
    rows = db.fetch(
        "SELECT contact_id, version FROM dnd_changes WHERE location_id = $1 ORDER BY seq", loc
    )
    # Each change records the authenticated caller, as SetDnd's do.
    callers = db.fetch("SELECT DISTINCT caller FROM dnd_changes WHERE location_id = $1", loc)
    assert [r["caller"].split()[0] for r in callers] == ["anonymous"]
    assert [(r["contact_id"], r["version"]) for r in rows] == [
        ("c1", 1),
        ("c2", 1),
        ("c2", 2),
        ("c3", 1),
        ("c1", 2),
    ]


def test_watchers_see_each_change(server: ServerProcess, stub: Any, loc: str) -> None:
    with Watcher(server.addr, factories.watch(loc)) as watcher:
        watcher.wait_bookmarks(1)
        items = [item(f"w{i}") for i in range(30)]
        answer = stub.BulkSetDnd(bulk(loc, items), timeout=TIMEOUT)
        assert answer.changed == 30
        events = watcher.wait_events(30)
    assert sorted(e.contact_id for e in events) == sorted(f"w{i}" for i in range(30))
    assert events[-1].cursor == answer.cursor


def test_retry_with_the_key_answers_the_same_and_writes_nothing_more(
    stub: Any, db: Database, loc: str
) -> None:
    items = [item("k1"), item("k2"), item("k1", channel=EMAIL), factories.disable("", "k2")]
    items[3].ClearField("location_id")
    first = stub.BulkSetDnd(bulk(loc, items, key="bulk-1"), timeout=TIMEOUT)
    changes = db.changes(loc)
    again = stub.BulkSetDnd(bulk(loc, items, key="bulk-1"), timeout=TIMEOUT)
    assert again == first
    assert db.changes(loc) == changes == 4
    # The same key with another request, or on SetDnd, is refused and writes nothing.
    with pytest.raises(grpc.RpcError) as refused:
        stub.BulkSetDnd(bulk(loc, items[:2], key="bulk-1"), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == ["idempotency_key"]
    with pytest.raises(grpc.RpcError) as other_rpc:
        stub.SetDnd(factories.enable(loc, "k9", idempotency_key="bulk-1"), timeout=TIMEOUT)
    assert other_rpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert db.changes(loc) == 4


@pytest.mark.parametrize(
    ("count", "fields"),
    [(0, ["items"]), (10_001, ["items"])],
)
def test_too_few_or_too_many_items_are_refused_whole(
    stub: Any, db: Database, loc: str, count: int, fields: list[str]
) -> None:
    one = item("x")
    request = pb.BulkSetDndRequest(location_id=loc)
    request.items.extend([one] * count)
    with pytest.raises(grpc.RpcError) as refused:
        stub.BulkSetDnd(request, timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == fields
    assert "10,000" in error_details(refused.value)["BadRequest"].field_violations[0].description
    assert db.changes(loc) == 0


def test_bad_location_or_key_is_refused_whole(stub: Any, db: Database, loc: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        stub.BulkSetDnd(
            pb.BulkSetDndRequest(location_id="", items=[item("x")], idempotency_key="k" * 129),
            timeout=TIMEOUT,
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(bad_fields(refused.value)) == ["idempotency_key", "location_id"]


# --- the database failing mid-call: the store and the service on real PostgreSQL ----------


async def test_a_retry_after_a_failure_mid_call_finishes_it_once(
    database_url: str, db: Database, loc: str
) -> None:
    """Chunks of 2 items: the database fails in the third chunk; chunks one and two stay
    written, the call is PartlyWritten (UNAVAILABLE); the retry with the same key resumes,
    applying every other item once, and answers every item as one call would."""
    from dnd_server.rpc import convert, validate

    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
    store = Store(pool=pool, timeout=10, idempotency_ttl=3600)
    svc = DndService(store=store)
    # The answers carry cursors: this process seals them as the server does.
    cursor.install_key(await store.cursor_key(cursor.new_key()))
    request = bulk(loc, [item(f"f{i}") for i in range(7)], key="resume-1")
    commands, invalid = validate.bulk_set_dnd(request, "US")
    record = lambda kept, start, outs: convert.bulk_progress(invalid, 1 << 20, kept, start, outs)  # noqa: E731
    claim = BulkClaim(
        "resume-1",
        "/dnd.v1.DndService/BulkSetDnd",
        b"hash",
        done=lambda kept: len(pb.BulkSetDndResponse.FromString(kept).results),
        record=record,
    )
    calls = {"n": 0}

    def failing_record(kept: bytes | None, start: int, outs: list[ItemOutcome | None]) -> bytes:
        # The third chunk's transaction fails before it commits.
        calls["n"] += 1
        if calls["n"] == 3:
            raise Unavailable("database connection lost")
        return record(kept, start, outs)

    failing = BulkClaim(claim.key, claim.method, claim.request_hash, claim.done, failing_record)
    cmds: list[SetDndCommand | None] = list(commands)
    try:
        await _finish_after_failure(svc, db, loc, cmds, failing, claim)
    finally:
        await pool.close()


async def _finish_after_failure(
    svc: DndService,
    db: Database,
    loc: str,
    cmds: list[SetDndCommand | None],
    failing: BulkClaim,
    claim: BulkClaim,
) -> None:
    with pytest.raises(PartlyWritten):
        await svc.bulk_set_dnd(loc, cmds, failing, chunk_items=2)
    assert db.changes(loc) == 4  # two chunks committed, the third rolled back
    chunks = await svc.bulk_set_dnd(loc, cmds, claim, chunk_items=2)
    answer = pb.BulkSetDndResponse.FromString(chunks[-1].progress)
    assert outcomes(answer) == [CHANGED] * 7
    assert db.changes(loc) == 7
    versions = db.fetch(
        "SELECT contact_id, version FROM dnd_contacts WHERE location_id = $1 ORDER BY 1", loc
    )
    assert [r["version"] for r in versions] == [1] * 7
    # Once finished, a retry replays the answer and writes nothing.
    replay = await svc.bulk_set_dnd(loc, cmds, claim, chunk_items=2)
    assert pb.BulkSetDndResponse.FromString(replay[-1].progress) == answer
    assert db.changes(loc) == 7
