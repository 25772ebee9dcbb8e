"""The CheckSend / GetStatus cache: invalidated by the change feed across replicas, dropped
when the feed is lost, bypassed by min_cursor and fully_consistent reads; BatchCheckSend;
several workers on one port. Real server processes over real PostgreSQL."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests.factories import check, enable
from tests.integration.test_metrics import Metrics
from tests.support import Database, ServerProcess, error_details, new_id


@pytest.fixture
def replicas(fresh_database: Any) -> Iterator[tuple[Any, Any, Database]]:
    """Two server processes on one database of this test, with stubs."""
    url = fresh_database()
    a = ServerProcess(url).start()
    b = ServerProcess(url).start()
    ca = grpc.insecure_channel(a.addr)
    cb = grpc.insecure_channel(b.addr)
    try:
        yield dnd_pb2_grpc.DndServiceStub(ca), dnd_pb2_grpc.DndServiceStub(cb), Database(url)
    finally:
        ca.close()
        cb.close()
        a.stop()
        b.stop()


def insert_block_behind_the_feed(db: Database, loc: str, contact: str) -> None:
    """A change the feed can never see (no change-log row): only a database read finds it."""
    db.fetch(
        "INSERT INTO dnd_contacts (location_id, contact_id, version) VALUES ($1, $2, 1)",
        loc,
        contact,
    )
    db.fetch(
        "INSERT INTO dnd_blocks (location_id, contact_id, direction, scope, reason, source, "
        "since) VALUES ($1, $2, 'OUTBOUND', 'SMS', 'MANUAL', 'USER', now())",
        loc,
        contact,
    )
    db.fetch(
        "UPDATE dnd_contacts SET state = dnd_contact_state(location_id, contact_id) "
        "WHERE location_id = $1 AND contact_id = $2",
        loc,
        contact,
    )


def test_cache_serves_reads_and_fully_consistent_bypasses_it(replicas: Any) -> None:
    a, _, db = replicas
    loc = new_id("loc")
    assert a.CheckSend(check(loc, "c")).allowed  # now cached: never seen, no DND
    insert_block_behind_the_feed(db, loc, "c")
    assert a.CheckSend(check(loc, "c")).allowed, "a warm entry is served from the cache"
    consistent = a.CheckSend(check(loc, "c", fully_consistent=True))
    assert not consistent.allowed and consistent.version == 1
    status = a.GetStatus(
        pb.GetStatusRequest(location_id=loc, contact_id="c", fully_consistent=True)
    )
    assert status.status.version == 1


def test_write_on_one_replica_invalidates_the_other(replicas: Any) -> None:
    a, b, _ = replicas
    loc = new_id("loc")
    assert b.CheckSend(check(loc, "c")).allowed  # B caches "no DND"
    a.SetDnd(enable(loc, "c"))
    deadline = time.monotonic() + 5
    allowed = True
    while allowed and time.monotonic() < deadline:
        allowed = b.CheckSend(check(loc, "c")).allowed
        time.sleep(0.01)
    assert not allowed, "B's cache must be invalidated by A's change through the feed"


def test_min_cursor_reads_a_write_of_another_replica_at_once(replicas: Any) -> None:
    a, b, _ = replicas
    loc = new_id("loc")
    for i in range(30):
        contact = f"c{i}"
        assert b.CheckSend(check(loc, contact)).allowed  # cached on B
        cursor = a.SetDnd(enable(loc, contact)).cursor
        answer = b.CheckSend(check(loc, contact, min_cursor=cursor))
        assert not answer.allowed, f"stale allowed after the write's cursor (contact {contact})"
        status = b.GetStatus(
            pb.GetStatusRequest(location_id=loc, contact_id=contact, min_cursor=cursor)
        )
        assert status.status.version == 1


def test_replicas_across_lanes_invalidate_and_honour_min_cursor(replicas: Any) -> None:
    """Locations in eight lanes, each contact cached on B: a write on A to each location
    invalidates B's entry through B's feed, and B answers a read with the write's cursor (or
    the cursor of a later write of another lane) at once."""
    from dnd_server.lanes import lane_of

    a, b, _ = replicas
    by_lane: dict[int, str] = {}
    while len(by_lane) < 8:
        loc = new_id("loc")
        by_lane.setdefault(lane_of(loc, 16), loc)
    locs = list(by_lane.values())
    for loc in locs:
        assert b.CheckSend(check(loc, "c")).allowed and b.CheckSend(check(loc, "d")).allowed
    cursors = [a.SetDnd(enable(loc, "c")).cursor for loc in locs]
    for loc, cursor in zip(locs, cursors, strict=True):
        answer = b.CheckSend(check(loc, "c", min_cursor=cursor))
        assert not answer.allowed and answer.version == 1
    # The last write's cursor holds every lane's head it saw: it covers the earlier writes.
    for loc in locs:
        assert not b.CheckSend(check(loc, "c", min_cursor=cursors[-1])).allowed
    # Without a cursor, B's feed evicts the entries of every lane.
    for loc in locs:
        a.SetDnd(enable(loc, "d"))
    deadline = time.monotonic() + 5
    stale = set(locs)
    while stale and time.monotonic() < deadline:
        stale = {loc for loc in stale if b.CheckSend(check(loc, "d")).allowed}
        time.sleep(0.01)
    assert not stale, "B's cache must be invalidated in every lane"


def test_writes_update_their_own_replica_before_returning(replicas: Any) -> None:
    a, _, _ = replicas
    loc = new_id("loc")
    for i in range(30):
        assert a.CheckSend(check(loc, f"c{i}")).allowed
        a.SetDnd(enable(loc, f"c{i}"))
        assert not a.CheckSend(check(loc, f"c{i}")).allowed  # no min_cursor needed here


def test_feed_loss_drops_the_cache_and_reads_through(replicas: Any) -> None:
    a, _, db = replicas
    loc = new_id("loc")
    assert a.CheckSend(check(loc, "c")).allowed
    insert_block_behind_the_feed(db, loc, "c")
    assert a.CheckSend(check(loc, "c")).allowed  # served from the (now wrong) cache
    killed = db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE application_name = 'dnd-service-feed' AND datname = current_database()"
    )
    assert killed == 2
    deadline = time.monotonic() + 5
    allowed = True
    while allowed and time.monotonic() < deadline:
        allowed = a.CheckSend(check(loc, "c")).allowed
        time.sleep(0.02)
    assert not allowed, "after losing its feed a replica must stop trusting its cache"


def test_batch_check_send_answers_in_order(stub: Any, loc: str) -> None:
    stub.SetDnd(enable(loc, "blocked"))
    stub.ProcessInboundMessage(
        pb.ProcessInboundMessageRequest(
            location_id=loc,
            contact_id="stopper",
            channel=pb.CHANNEL_SMS,
            body="STOP",
            from_address="+14155550199",
        )
    )
    targets = [pb.CheckTarget(contact_id=f"free{i}") for i in range(997)]
    targets.insert(10, pb.CheckTarget(contact_id="blocked"))
    targets.insert(500, pb.CheckTarget(contact_id="shares-number", address="(415) 555-0199"))
    targets.append(pb.CheckTarget(contact_id="free0"))  # a duplicate answers twice
    answer = stub.BatchCheckSend(
        pb.BatchCheckSendRequest(
            location_id=loc, channel=pb.CHANNEL_SMS, targets=targets, include_details=True
        )
    )
    assert [r.contact_id for r in answer.results] == [t.contact_id for t in targets]
    denied = [r.contact_id for r in answer.results if not r.allowed]
    assert denied == ["blocked", "shares-number"]
    assert answer.results[10].denied_by[0].reason == pb.REASON_MANUAL
    assert answer.results[500].denied_by_address[0].contact_id == "stopper"
    assert len(answer.results) == 1000
    assert answer.results[-1].repeat_of == 0 and answer.results[-1].allowed


def test_batch_check_send_limits(stub: Any, loc: str) -> None:
    too_many = [pb.CheckTarget(contact_id=f"c{i}") for i in range(1001)]
    for targets, field in ((too_many, "targets"), ([], "targets")):
        with pytest.raises(grpc.RpcError) as caught:
            stub.BatchCheckSend(
                pb.BatchCheckSendRequest(location_id=loc, channel=pb.CHANNEL_SMS, targets=targets)
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        fields = [v.field for v in error_details(caught.value)["BadRequest"].field_violations]
        assert field in fields
    with pytest.raises(grpc.RpcError) as caught:
        stub.BatchCheckSend(
            pb.BatchCheckSendRequest(
                location_id=loc,
                channel=pb.CHANNEL_SMS,
                targets=[pb.CheckTarget(contact_id="ok"), pb.CheckTarget(contact_id="")],
            )
        )
    fields = [v.field for v in error_details(caught.value)["BadRequest"].field_violations]
    assert fields == ["targets[1].contact_id"]


def test_batch_check_send_reads_misses_in_one_statement(replicas: Any) -> None:
    a, _, db = replicas
    loc = new_id("loc")

    def scans() -> int:
        time.sleep(1.2)  # table statistics are flushed about once a second
        rows = db.fetch(
            "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables "
            "WHERE relname = 'dnd_contacts'"
        )
        return int(rows[0][0])

    before = scans()
    targets = [pb.CheckTarget(contact_id=f"fresh{i}") for i in range(1000)]
    answer = a.BatchCheckSend(
        pb.BatchCheckSendRequest(location_id=loc, channel=pb.CHANNEL_SMS, targets=targets)
    )
    assert all(r.allowed for r in answer.results)
    # One statement reads all 1,000 misses: a handful of scans, not one per contact.
    assert scans() - before <= 5


def test_bad_min_cursor(stub: Any, loc: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.CheckSend(check(loc, "c", min_cursor="nope"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    fields = [v.field for v in error_details(caught.value)["BadRequest"].field_violations]
    assert fields == ["min_cursor"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_two_workers_share_one_port(fresh_database: Any) -> None:
    port = free_port()
    process = ServerProcess(
        fresh_database(), {"DND_WORKERS": "2", "DND_GRPC_ADDR": f"127.0.0.1:{port}"}
    )
    process.start(wait_serving=False)
    try:
        process.wait_health("SERVING")
        deadline = time.monotonic() + 20
        pids: set[int] = set()
        while len(pids) < 2 and time.monotonic() < deadline:
            pids = {
                int(e["pid"])
                for e in process.collect_logs()
                if e.get("event") == "server_listening"
            }
            time.sleep(0.1)
        assert len(pids) == 2, "two worker processes listening"
        loc = new_id("loc")
        # Connections land on either worker; every answer is consistent with min_cursor.
        for i in range(20):
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = dnd_pb2_grpc.DndServiceStub(channel)
                cursor = stub.SetDnd(enable(loc, f"c{i}")).cursor
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = dnd_pb2_grpc.DndServiceStub(channel)
                assert not stub.CheckSend(check(loc, f"c{i}", min_cursor=cursor)).allowed
    finally:
        assert process.stop() == 0


def test_a_change_the_feed_cannot_read_drops_the_cache(fresh_database: Any) -> None:
    """A change row the feed fails on (here one of a reason this version does not know) must
    not end the feed behind a cache still trusted: the failure is logged and counted, the
    cache dropped, reads go to the database, and the feed keeps trying."""
    url = fresh_database()
    server = ServerProcess(url, {"DND_METRICS_ADDR": "127.0.0.1:0"}).start()
    db = Database(url)
    try:
        port = next(e["port"] for e in server.logs if e.get("event") == "metrics_listening")
        stub = dnd_pb2_grpc.DndServiceStub(grpc.insecure_channel(server.addr))
        loc = new_id("loc")
        written = stub.SetDnd(enable(loc, "writer"), timeout=10)
        assert stub.CheckSend(check(loc, "c", min_cursor=written.cursor), timeout=10).allowed
        mark = server.log_mark()
        db.fetch(
            "WITH lane AS (UPDATE dnd_log_lanes SET seq = seq + 1 "
            "WHERE lane = (SELECT lane FROM dnd_changes WHERE location_id = $1 LIMIT 1) "
            "RETURNING lane, seq) "
            "INSERT INTO dnd_changes (lane, heads, seq, location_id, contact_id, direction, "
            "scope, enabled, reason, source, version, outbound, inbound, blocked_channels, "
            "created_at) SELECT lane.lane, NULL, lane.seq, $1, 'odd', 'OUTBOUND', 'SMS', true, "
            "'REASON_OF_A_LATER_VERSION', 'USER', 1, 'NONE', 'NONE', '{}', now() FROM lane",
            loc,
        )
        failed = server.wait_log({"event": "feed_failed"}, after=mark)
        assert failed["level"] == "error" and failed["error"] == "KeyError"
        insert_block_behind_the_feed(db, loc, "c")
        assert not stub.CheckSend(check(loc, "c"), timeout=10).allowed
        # Still failing on that row, still counted and still not trusting the cache.
        server.wait_log({"event": "feed_failed"}, after=server.log_mark())
        metrics = Metrics(port)
        assert metrics.value("dnd_feed_failures_total") >= 2
        assert metrics.value("dnd_cache_enabled") == 0
    finally:
        server.stop()
