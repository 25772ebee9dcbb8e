"""WatchChanges: every committed change once, in order, gapless under concurrent writers,
resumable (also across restarts), bookmarks, expiry, slow consumers, replicas, listener loss.
Real server processes over real PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from functools import partial
from typing import Any

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests import factories
from tests.support import (
    DISABLE,
    ENABLE,
    IN,
    Database,
    ServerProcess,
    Watcher,
    cursor_codec,
    error_details,
    new_id,
    run_async,
)

# The writes of these tests, with a note and evidence no event may carry.
set_dnd = partial(factories.set_dnd, note="secret note", evidence="secret evidence")


def keys(events: list[Any]) -> list[tuple[str, str, int]]:
    return [(e.location_id, e.contact_id, e.version) for e in events]


def committed(db: Database, loc: str) -> list[tuple[str, str, int]]:
    rows = db.fetch(
        "SELECT location_id, contact_id, version FROM dnd_changes WHERE location_id = $1 "
        "ORDER BY seq",
        loc,
    )
    return [(r[0], r[1], r[2]) for r in rows]


@pytest.fixture
def own_server(fresh_database: Any) -> Iterator[Any]:
    """Factory of server processes on a database of this test alone."""
    made: list[ServerProcess] = []
    url = fresh_database()

    def start(**env: str) -> ServerProcess:
        process = ServerProcess(url, env).start()
        made.append(process)
        return process

    start.url = url  # type: ignore[attr-defined]
    yield start
    for process in made:
        process.stop()


def test_events_carry_the_change_in_order(server: ServerProcess, stub: Any, loc: str) -> None:
    with Watcher(server.addr, pb.WatchChangesRequest(location_ids=[loc])) as watcher:
        watcher.wait_bookmarks(1)
        first = stub.SetDnd(set_dnd(loc, "c1", channel=pb.CHANNEL_SMS))
        stub.SetDnd(set_dnd(loc, "c1", channel=None))
        stub.SetDnd(set_dnd(loc, "c1", action=DISABLE, channel=None))
        stub.SetDnd(set_dnd(loc, "c2", direction=IN, channel=None))
        events = watcher.wait_events(5)
    assert keys(events) == [
        (loc, "c1", 1),
        (loc, "c1", 2),
        (loc, "c1", 3),
        (loc, "c1", 4),
        (loc, "c2", 1),
    ]
    sms = events[0]
    assert sms.cursor == first.cursor
    assert sms.enabled and sms.reason == pb.REASON_MANUAL and sms.source == pb.SOURCE_USER
    assert sms.scope.channel == pb.CHANNEL_SMS
    assert sms.outbound == pb.DND_STATUS_PARTIAL and list(sms.blocked_channels) == [pb.CHANNEL_SMS]
    assert events[1].scope.all_channels and events[1].outbound == pb.DND_STATUS_ON
    # The ALL clear removed both blocks: two disabled events, the last leaves everything OFF.
    assert [e.enabled for e in events[2:4]] == [False, False]
    assert events[3].outbound == pb.DND_STATUS_OFF
    assert events[4].direction == IN and events[4].inbound == pb.DND_STATUS_ON
    assert events[0].time.seconds > 0
    # Cursors are strictly increasing in delivery order.
    cursors = [e.cursor for e in events]
    assert len(set(cursors)) == len(cursors)


def test_filters(server: ServerProcess, stub: Any, database_url: str, loc: str) -> None:
    other = new_id("loc")
    requests = {
        "sms": pb.WatchChangesRequest(location_ids=[loc], channels=[pb.CHANNEL_SMS]),
        "email": pb.WatchChangesRequest(location_ids=[loc], channels=[pb.CHANNEL_EMAIL]),
        "inbound": pb.WatchChangesRequest(location_ids=[loc], directions=[IN]),
        "workflow": pb.WatchChangesRequest(location_ids=[loc], sources=[pb.SOURCE_WORKFLOW]),
        "call": pb.WatchChangesRequest(location_ids=[loc], channels=[pb.CHANNEL_CALL]),
    }
    watchers = {name: Watcher(server.addr, r) for name, r in requests.items()}
    try:
        for w in watchers.values():
            w.wait_bookmarks(1)
        stub.SetDnd(set_dnd(loc, "a", channel=pb.CHANNEL_SMS))  # sms
        stub.SetDnd(set_dnd(loc, "a", channel=pb.CHANNEL_EMAIL, source=pb.SOURCE_WORKFLOW))
        stub.SetDnd(set_dnd(loc, "a", channel=None))  # all channels: sms, email, call
        stub.SetDnd(set_dnd(loc, "a", direction=IN, channel=None))  # inbound: sms, call
        last = stub.SetDnd(set_dnd(other, "a", channel=pb.CHANNEL_SMS))  # other location: nobody
        codec = cursor_codec(database_url)
        # Each stream past the last write has sent every event it ever will of these writes.
        got = {
            name: [e.version for e in w.wait_past(last.cursor, codec)]
            for name, w in watchers.items()
        }
    finally:
        for w in watchers.values():
            w.close()
    assert got == {
        "sms": [1, 3, 4],
        "email": [2, 3],
        "inbound": [4],
        "workflow": [2],
        "call": [3, 4],
    }


def test_bookmarks_advance_a_filtered_subscriber(
    server: ServerProcess, stub: Any, loc: str
) -> None:
    request = pb.WatchChangesRequest(location_ids=[loc], channels=[pb.CHANNEL_GMB])
    with Watcher(server.addr, request) as watcher:
        first = watcher.wait_bookmarks(1)[0]
        answer = stub.SetDnd(set_dnd(loc, "c", channel=pb.CHANNEL_SMS))
        deadline = time.monotonic() + 10
        while watcher.bookmarks[-1] == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert watcher.events == []
        advanced = watcher.bookmarks[-1]
    assert advanced != first
    # The bookmark is at (or past) the unmatched write: resuming from it yields only later ones.
    with Watcher(
        server.addr, pb.WatchChangesRequest(location_ids=[loc], after_cursor=advanced)
    ) as w:
        later = stub.SetDnd(set_dnd(loc, "c", channel=pb.CHANNEL_GMB))
        events = w.wait_events(1)
    assert [e.cursor for e in events] == [later.cursor]
    assert answer.cursor != later.cursor


def test_resume_yields_later_events_only(
    server: ServerProcess, stub: Any, database_url: str, loc: str
) -> None:
    cursors = [stub.SetDnd(set_dnd(loc, f"c{i}")).cursor for i in range(6)]
    request = pb.WatchChangesRequest(location_ids=[loc], after_cursor=cursors[2])
    with Watcher(server.addr, request) as watcher:
        events = watcher.wait_past(cursors[-1], cursor_codec(database_url))
        assert [e.cursor for e in events] == cursors[3:]
        live = stub.SetDnd(set_dnd(loc, "c9"))
        events = watcher.wait_events(4)
    assert [e.cursor for e in events] == [*cursors[3:], live.cursor]


def test_gapless_under_concurrent_writers_committing_out_of_order(own_server: Any) -> None:
    """24 concurrent writers whose transactions are delayed at random after their log row is
    written (and some rolled back there): the watcher gets exactly what committed, in order."""
    process = own_server()
    url = own_server.url

    async def install_chaos() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                """
                CREATE FUNCTION chaos() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_sleep(random() * 0.03);
                    IF NEW.actor_id = 'doomed' THEN
                        RAISE EXCEPTION 'rolled back on purpose';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER chaos AFTER INSERT ON dnd_changes
                    FOR EACH ROW EXECUTE FUNCTION chaos();
                """
            )
        finally:
            await conn.close()

    run_async(install_chaos())
    loc = new_id("loc")
    db = Database(url)
    with Watcher(process.addr, pb.WatchChangesRequest(location_ids=[loc])) as watcher:
        watcher.wait_bookmarks(1)

        async def writers() -> list[grpc.StatusCode]:
            async with grpc.aio.insecure_channel(process.addr) as channel:
                stub = dnd_pb2_grpc.DndServiceStub(channel)

                async def one(i: int) -> list[grpc.StatusCode]:
                    codes = []
                    for n in range(8):
                        await asyncio.sleep(random.random() * 0.01)
                        request = set_dnd(
                            loc,
                            f"c{i % 12}",
                            action=random.choice([ENABLE, DISABLE]),
                            channel=random.choice([pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, None]),
                        )
                        request.actor_id = "doomed" if (i + n) % 7 == 0 else f"w{i}"
                        try:
                            await stub.SetDnd(request, timeout=30)
                            codes.append(grpc.StatusCode.OK)
                        except grpc.aio.AioRpcError as error:
                            codes.append(error.code())
                    return codes

                results = await asyncio.gather(*(one(i) for i in range(24)))
                return [c for codes in results for c in codes]

        codes = asyncio.run(writers())
        expected = committed(db, loc)
        # Past the head of the log once every writer is done: nothing more can come.
        codec = cursor_codec(url)
        head = codec.encode_cursor(db.heads())
        events = watcher.wait_past(head, codec, timeout=30)
    assert grpc.StatusCode.OK in codes and grpc.StatusCode.INTERNAL in codes  # some rolled back
    assert len(expected) > 50
    assert keys(events) == expected, "the watcher must see exactly the committed changes, in order"
    assert all(e.actor_id != "doomed" for e in events)
    # Per contact, versions arrive gapless and increasing.
    by_contact: dict[str, list[int]] = {}
    for e in events:
        by_contact.setdefault(e.contact_id, []).append(e.version)
    for versions in by_contact.values():
        assert versions == list(range(1, len(versions) + 1))


def locations_in_distinct_lanes(count: int, lanes: int = 16) -> list[str]:
    """``count`` new locations, each writing to a lane of its own."""
    from dnd_server.lanes import lane_of

    found: dict[int, str] = {}
    while len(found) < count:
        loc = new_id("loc")
        found.setdefault(lane_of(loc, lanes), loc)
    return list(found.values())


def install_chaos(url: str) -> None:
    """Every change-log row is followed by a random delay before its transaction commits; a
    write by actor ``doomed`` is rolled back there."""

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                """
                CREATE FUNCTION chaos() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    PERFORM pg_sleep(random() * 0.03);
                    IF NEW.actor_id = 'doomed' THEN
                        RAISE EXCEPTION 'rolled back on purpose';
                    END IF;
                    RETURN NEW;
                END $$;
                CREATE TRIGGER chaos AFTER INSERT ON dnd_changes
                    FOR EACH ROW EXECUTE FUNCTION chaos();
                """
            )
        finally:
            await conn.close()

    run_async(go())


def test_gapless_across_lanes_under_concurrent_writers(own_server: Any) -> None:
    """Concurrent writers on six locations in six lanes, committing out of order (and some
    rolled back): an unfiltered watcher, a watcher of two of the locations and one that
    disconnects midway and resumes from its last cursor each get exactly what committed, once,
    every lane in commit order, every contact's versions gapless, and each change after every
    change its position includes."""
    process = own_server()
    url = own_server.url
    install_chaos(url)
    locs = locations_in_distinct_lanes(6)
    db = Database(url)
    everything = Watcher(process.addr, pb.WatchChangesRequest(max_events_per_message=50))
    some = Watcher(process.addr, pb.WatchChangesRequest(location_ids=locs[:2]))
    quitter = Watcher(process.addr, pb.WatchChangesRequest())
    with everything, some:
        for watcher in (everything, some, quitter):
            watcher.wait_bookmarks(1)

        async def writers() -> list[grpc.StatusCode]:
            async with grpc.aio.insecure_channel(process.addr) as channel:
                stub = dnd_pb2_grpc.DndServiceStub(channel)

                async def one(i: int) -> list[grpc.StatusCode]:
                    codes = []
                    for n in range(6):
                        await asyncio.sleep(random.random() * 0.01)
                        request = set_dnd(
                            locs[(i + n) % len(locs)],
                            f"c{i % 5}",
                            action=random.choice([ENABLE, DISABLE]),
                            channel=random.choice([pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, None]),
                        )
                        request.actor_id = "doomed" if (i + n) % 7 == 0 else f"w{i}"
                        try:
                            await stub.SetDnd(request, timeout=30)
                            codes.append(grpc.StatusCode.OK)
                        except grpc.aio.AioRpcError as error:
                            codes.append(error.code())
                    return codes

                results = await asyncio.gather(*(one(i) for i in range(24)))
                return [c for codes in results for c in codes]

        async def write_and_quit() -> list[grpc.StatusCode]:
            task = asyncio.create_task(writers())
            # The quitter's events arrive on its reading thread: polled.
            while len(quitter.events) < 20 and not task.done():  # noqa: ASYNC110
                await asyncio.sleep(0.01)
            quitter.close()
            return await task

        codes = asyncio.run(write_and_quit())
        codec = cursor_codec(url)
        head = codec.encode_cursor(db.heads())
        events = everything.wait_past(head, codec, timeout=30)
        filtered = some.wait_past(head, codec, timeout=30)
        first_part = list(quitter.events)
        with Watcher(
            process.addr, pb.WatchChangesRequest(after_cursor=quitter.last_cursor)
        ) as resumed:
            rest = resumed.wait_past(head, codec, timeout=30)
    rows = db.fetch(
        "SELECT lane, seq, heads, location_id, contact_id, version FROM dnd_changes "
        "ORDER BY lane, seq"
    )
    expected = {(r["location_id"], r["contact_id"], r["version"]) for r in rows}
    assert grpc.StatusCode.OK in codes and grpc.StatusCode.INTERNAL in codes  # some rolled back
    # About 60 of the 144 writes change something (random actions, every 7th rolled back).
    assert len(expected) > 30 and len({r["lane"] for r in rows}) == 6
    for got in (events, first_part + rest):
        assert len(got) == len(expected) and set(keys(got)) == expected, "each change once"
    assert max(everything.batches, default=1) > 1, "a subscriber behind gets several at once"
    assert keys(filtered) == [k for k in keys(events) if k[0] in locs[:2]]
    assert all(e.actor_id != "doomed" for e in events)
    # Every lane in commit (sequence) order; each change after what its position includes.
    by_key = {(r["location_id"], r["contact_id"], r["version"]): r for r in rows}
    seen: dict[int, int] = {}
    for event in events:
        row = by_key[(event.location_id, event.contact_id, event.version)]
        assert row["seq"] > seen.get(row["lane"], 0), "lane order"
        for lane, head_seen in enumerate(row["heads"]):
            if lane != row["lane"]:
                assert seen.get(lane, 0) >= min(
                    head_seen, max((r["seq"] for r in rows if r["lane"] == lane), default=0)
                ), "after every change its position includes"
        seen[row["lane"]] = row["seq"]
    by_contact: dict[tuple[str, str], list[int]] = {}
    for e in events:
        by_contact.setdefault((e.location_id, e.contact_id), []).append(e.version)
    for versions in by_contact.values():
        assert versions == list(range(1, len(versions) + 1))


def test_resume_after_server_restart(own_server: Any) -> None:
    first = own_server()
    loc = new_id("loc")
    with grpc.insecure_channel(first.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        with Watcher(first.addr, pb.WatchChangesRequest(location_ids=[loc])) as watcher:
            watcher.wait_bookmarks(1)
            for i in range(3):
                stub.SetDnd(set_dnd(loc, f"c{i}"))
            seen = watcher.wait_events(3)
            resume_from = seen[-1].cursor
        # Changes made while nobody watches.
        missed = [stub.SetDnd(set_dnd(loc, f"d{i}")).cursor for i in range(3)]
    assert first.stop() == 0
    second = own_server()
    request = pb.WatchChangesRequest(location_ids=[loc], after_cursor=resume_from)
    with Watcher(second.addr, request) as watcher:
        with grpc.insecure_channel(second.addr) as channel:
            later = dnd_pb2_grpc.DndServiceStub(channel).SetDnd(set_dnd(loc, "e")).cursor
        events = watcher.wait_past(later, cursor_codec(own_server.url))
        assert [e.cursor for e in events] == [*missed, later]


def test_expired_cursor_is_out_of_range(own_server: Any) -> None:
    process = own_server(DND_WATCH_RETENTION_SECONDS="1")
    loc = new_id("loc")
    with grpc.insecure_channel(process.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        old = stub.SetDnd(set_dnd(loc, "a")).cursor
        stub.SetDnd(set_dnd(loc, "b"))
        time.sleep(1.5)
        recent = stub.SetDnd(set_dnd(loc, "c")).cursor
    with Watcher(process.addr, pb.WatchChangesRequest(after_cursor=old)) as watcher:
        error = watcher.wait_done()
    assert error is not None and error.code() == grpc.StatusCode.OUT_OF_RANGE
    info = error_details(error)["ErrorInfo"]
    assert info.reason == "CURSOR_EXPIRED" and info.metadata["cursor"] == old
    assert "GetStatus" in (error.details() or "")
    # The newest cursor is still good.
    with Watcher(process.addr, pb.WatchChangesRequest(after_cursor=recent)) as watcher:
        assert watcher.wait_bookmarks(1)
        assert watcher.error is None


def test_pruned_log_expires_cursors(own_server: Any) -> None:
    process = own_server(DND_HISTORY_RETENTION_SECONDS="1", DND_MAINTENANCE_INTERVAL_SECONDS="0.2")
    loc = new_id("loc")
    db = Database(own_server.url)
    with grpc.insecure_channel(process.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        old = stub.SetDnd(set_dnd(loc, "a")).cursor
        stub.SetDnd(set_dnd(loc, "b"))  # pruned below: a subscriber at `old` lost it
        deadline = time.monotonic() + 15
        while db.changes(loc) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert db.changes(loc) == 0, "old change-log rows must be pruned"
        fresh = stub.SetDnd(set_dnd(loc, "c")).cursor
    with Watcher(process.addr, pb.WatchChangesRequest(after_cursor=old)) as watcher:
        error = watcher.wait_done()
    assert error is not None and error.code() == grpc.StatusCode.OUT_OF_RANGE
    with Watcher(process.addr, pb.WatchChangesRequest(after_cursor=fresh)) as watcher:
        assert watcher.wait_bookmarks(1) and watcher.error is None


def test_listener_killed_while_writes_go_on(server: ServerProcess, stub: Any, db: Database) -> None:
    loc = new_id("loc")
    with Watcher(server.addr, pb.WatchChangesRequest(location_ids=[loc])) as watcher:
        watcher.wait_bookmarks(1)
        cursors = []
        for i in range(30):
            cursors.append(stub.SetDnd(set_dnd(loc, f"c{i}")).cursor)
            if i % 10 == 5:
                killed = db.fetchval(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = 'dnd-service-feed' AND datname = current_database()"
                )
                assert killed == 1
        events = watcher.wait_events(30, timeout=30)
    assert [e.cursor for e in events] == cursors
    # The feed came back: one listener again.
    deadline = time.monotonic() + 10
    listeners = 0
    while time.monotonic() < deadline:
        listeners = db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dnd-service-feed' "
            "AND datname = current_database()"
        )
        if listeners == 1:
            break
        time.sleep(0.2)
    assert listeners == 1


def test_slow_consumer_is_cut_off_and_resumes(own_server: Any) -> None:
    process = own_server(DND_WATCH_BUFFER_EVENTS="20")
    loc = new_id("loc")
    channel = grpc.insecure_channel(
        process.addr,
        options=[("grpc.http2.lookahead_bytes", 1024), ("grpc.max_receive_message_length", 4096)],
    )
    stub = dnd_pb2_grpc.DndServiceStub(channel)
    stream = stub.WatchChanges(pb.WatchChangesRequest(location_ids=[loc]), timeout=60)
    first = next(stream)  # the stream is open; now stop reading
    assert first.HasField("bookmark")

    async def burst() -> list[str]:
        async with grpc.aio.insecure_channel(process.addr) as ch:
            s = dnd_pb2_grpc.DndServiceStub(ch)

            async def one(i: int) -> list[str]:
                out = []
                for n in range(50):
                    action = ENABLE if n % 2 == 0 else DISABLE
                    answer = await s.SetDnd(set_dnd(loc, f"c{i}", action=action), timeout=30)
                    out.append(answer.cursor)
                return out

            return [c for cs in await asyncio.gather(*(one(i) for i in range(40))) for c in cs]

    written = asyncio.run(burst())
    received: list[str] = []
    with pytest.raises(grpc.RpcError) as caught:
        for message in stream:
            if message.HasField("event"):
                received.append(message.event.cursor)
    channel.close()
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    info = error_details(caught.value)["ErrorInfo"]
    assert info.reason == "SUBSCRIBER_TOO_SLOW"
    resume = info.metadata["cursor"]
    assert len(received) < len(written)
    # Resuming from the cursor in the error yields the rest, none twice.
    with Watcher(
        process.addr, pb.WatchChangesRequest(location_ids=[loc], after_cursor=resume)
    ) as w:
        rest = w.wait_events(len(written) - len(received), timeout=30)
    assert sorted(received + [e.cursor for e in rest]) == sorted(written)


def test_replicas_share_changes_with_one_listener_each(own_server: Any) -> None:
    a = own_server()
    b = own_server()
    loc = new_id("loc")
    db = Database(own_server.url)
    watchers = [Watcher(b.addr, pb.WatchChangesRequest(location_ids=[loc])) for _ in range(5)]
    try:
        for w in watchers:
            w.wait_bookmarks(1)
        with grpc.insecure_channel(a.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            cursors = [stub.SetDnd(set_dnd(loc, f"c{i}")).cursor for i in range(5)]
        for w in watchers:
            assert [e.cursor for e in w.wait_events(5)] == cursors
        listeners = db.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dnd-service-feed' "
            "AND datname = current_database()"
        )
        assert listeners == 2, "one listening connection per process, not per subscriber"
    finally:
        for w in watchers:
            w.close()


def test_client_disconnect_mid_stream_frees_the_subscription(
    server: ServerProcess, stub: Any, loc: str
) -> None:
    def cancelled() -> int:
        return sum(
            1
            for e in server.collect_logs()
            if e.get("event") == "watch_ended" and e.get("code") == "CANCELLED"
        )

    watcher = Watcher(server.addr, pb.WatchChangesRequest(location_ids=[loc]))
    watcher.wait_bookmarks(1)
    stub.SetDnd(set_dnd(loc, "a"))
    watcher.wait_events(1)
    before = cancelled()
    watcher.close()  # the client goes away
    deadline = time.monotonic() + 20
    while cancelled() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert cancelled() == before + 1, "the server must end the stream when the client leaves"
    # The server keeps serving writes and new streams.
    with Watcher(server.addr, pb.WatchChangesRequest(location_ids=[loc])) as again:
        again.wait_bookmarks(1)
        stub.SetDnd(set_dnd(loc, "b"))
        assert len(again.wait_events(1)) == 1


@pytest.mark.parametrize(
    "request_, field",
    [
        (pb.WatchChangesRequest(after_cursor="garbage"), "after_cursor"),
        (pb.WatchChangesRequest(location_ids=[""]), "location_ids[0]"),
        (pb.WatchChangesRequest(channels=[99]), "channels[0]"),  # type: ignore[list-item]
        (pb.WatchChangesRequest(directions=[0]), "directions[0]"),
        (pb.WatchChangesRequest(sources=[42]), "sources[0]"),  # type: ignore[list-item]
        (pb.WatchChangesRequest(max_events_per_message=1001), "max_events_per_message"),
    ],
)
def test_bad_watch_requests(server: ServerProcess, request_: Any, field: str) -> None:
    with Watcher(server.addr, request_) as watcher:
        error = watcher.wait_done()
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    bad = error_details(error)["BadRequest"]
    assert field in [v.field for v in bad.field_violations]


def test_cursor_ahead_of_the_log_is_refused(server: ServerProcess, database_url: str) -> None:
    codec = cursor_codec(database_url)
    ahead = codec.encode_cursor((10**12,) * codec.lanes)
    with Watcher(server.addr, pb.WatchChangesRequest(after_cursor=ahead)) as w:
        error = w.wait_done()
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_sigterm_ends_streams_promptly_and_resumably(own_server: Any) -> None:
    process = own_server(DND_SHUTDOWN_GRACE_SECONDS="30")
    loc = new_id("loc")
    with Watcher(process.addr, pb.WatchChangesRequest(location_ids=[loc])) as watcher:
        watcher.wait_bookmarks(1)
        started = time.monotonic()
        process.signal(signal.SIGTERM)
        error = watcher.wait_done(timeout=15)
    assert error is not None and error.code() == grpc.StatusCode.UNAVAILABLE
    assert "after_cursor=" in (error.details() or "")
    assert process.proc is not None and process.proc.wait(timeout=15) == 0
    assert time.monotonic() - started < 10, "streams must not hold shutdown for the grace period"


def test_notes_and_evidence_stay_out_of_events(server: ServerProcess, stub: Any, loc: str) -> None:
    with Watcher(server.addr, pb.WatchChangesRequest(location_ids=[loc])) as watcher:
        watcher.wait_bookmarks(1)
        stub.SetDnd(set_dnd(loc, "a"))
        event = watcher.wait_events(1)[0]
    assert "secret" not in str(event)
