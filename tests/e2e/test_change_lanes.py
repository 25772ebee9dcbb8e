"""The change log in lanes: the log of earlier versions moves into the lanes with every change
resumable by the cursors handed out before; the lane count is fixed once the log has a change
(another setting stops the start, a cursor of another lane count is refused saying so); a
stream over several lanes resumes exactly across a restart. Real server processes over real
PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import Any

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_server.cursor import _CURSOR, _NO_SALT, CursorCodec, key_from_secret
from dnd_server.lanes import lane_of
from dnd_server.storage.migrations import load_migrations, migrate

from tests import factories
from tests.support import (
    Database,
    ServerProcess,
    Watcher,
    cursor_codec,
    dnd_server,
    error_details,
    new_id,
    run_async,
    stub_for,
)

TIMEOUT = 10
set_dnd = partial(factories.set_dnd, channel=pb.CHANNEL_SMS)


def locations_in_distinct_lanes(count: int, lanes: int = 16) -> list[str]:
    found: dict[int, str] = {}
    while len(found) < count:
        loc = new_id("loc")
        found.setdefault(lane_of(loc, lanes), loc)
    return list(found.values())


@pytest.fixture
def servers() -> Iterator[Any]:
    made: list[ServerProcess] = []

    def start(url: str, **env: str) -> ServerProcess:
        process = ServerProcess(url, env).start()
        made.append(process)
        return process

    yield start
    for process in made:
        process.stop()


def keys(events: list[Any]) -> list[tuple[str, int]]:
    return [(e.location_id, e.version) for e in events]


def test_the_single_log_moves_into_lanes_and_old_cursors_resume(
    empty_database: Any, servers: Any
) -> None:
    """A database at migration 6 (the single log) with 12 changes of four locations and a
    cursor sealed then (after change 5); migrated, the cursor resumes at the same place in a
    stream of every location and of one, and reads at least as fresh; the old changes keep
    their history and cursors, and the lanes go on from the old head."""
    url = empty_database()
    locs = locations_in_distinct_lanes(4)
    secret_key = key_from_secret("a-key-of-the-deployment-before-lanes-0123456789")
    single = CursorCodec(secret_key)

    async def single_log() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(
                "CREATE TABLE dnd_schema_migrations (version integer PRIMARY KEY, name text "
                "NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            for migration in load_migrations()[:6]:
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO dnd_schema_migrations (version, name, checksum) "
                    "VALUES ($1, $2, $3)",
                    migration.version,
                    migration.name,
                    migration.checksum,
                )
            await conn.execute("INSERT INTO dnd_cursor_key (key) VALUES ($1)", secret_key)
            for seq in range(1, 13):
                loc = locs[seq % 4]
                version = (seq - 1) // 4 + 1
                await conn.execute(
                    "INSERT INTO dnd_changes (seq, location_id, contact_id, direction, scope, "
                    "enabled, reason, source, version, outbound, inbound, blocked_channels, "
                    "created_at) VALUES ($1, $2, 'c', 'OUTBOUND', 'SMS', $3, 'MANUAL', 'USER', "
                    "$4, 'PARTIAL', 'OFF', '{SMS}', now())",
                    seq,
                    loc,
                    version % 2 == 1,
                    version,
                )
                await conn.execute(
                    "INSERT INTO dnd_contacts (location_id, contact_id, version, updated_at, "
                    "last_seq) VALUES ($1, 'c', $2, now(), $3) ON CONFLICT (location_id, "
                    "contact_id) DO UPDATE SET version = EXCLUDED.version, "
                    "last_seq = EXCLUDED.last_seq",
                    loc,
                    version,
                    seq,
                )
            await conn.execute("UPDATE dnd_log_head SET seq = 12")
            await migrate(conn)
        finally:
            await conn.close()

    old_cursor = single._seal(_CURSOR, 5, _NO_SALT)
    run_async(single_log())
    db = Database(url)
    assert db.fetchval("SELECT lanes FROM dnd_log_layout") == 16
    assert db.fetchval("SELECT legacy_head FROM dnd_log_layout") == 12
    assert db.heads() == (12,) * 16
    assert (
        db.fetchval("SELECT count(*) FROM dnd_changes WHERE lane = dnd_lane(location_id, 16)") == 12
    )
    server = servers(url)
    codec = cursor_codec(url)
    expected = [(locs[seq % 4], (seq - 1) // 4 + 1) for seq in range(6, 13)]
    with grpc.insecure_channel(server.addr) as channel:
        stub = stub_for(channel)
        with Watcher(server.addr, pb.WatchChangesRequest(after_cursor=old_cursor)) as every:
            every.wait_events(len(expected))
            later = stub.SetDnd(set_dnd(locs[1], "c"), timeout=TIMEOUT)
            events = every.wait_past(later.cursor, codec)
        assert keys(events) == [*expected, (locs[1], 4)]
        assert events[-1].cursor == later.cursor
        request = pb.WatchChangesRequest(location_ids=[locs[2]], after_cursor=old_cursor)
        with Watcher(server.addr, request) as one:
            mine = one.wait_past(later.cursor, codec)
        assert keys(mine) == [(locs[2], v) for v in (2, 3)]
        # From the start: all 12 old changes, then the new one.
        with Watcher(server.addr, pb.WatchChangesRequest(after_cursor="ZG5kMTow")) as start:
            assert len(start.wait_past(later.cursor, codec)) == 13
        # Reads at least as fresh as the old cursor, and the old history with its cursors.
        status = stub.GetStatus(
            pb.GetStatusRequest(location_id=locs[1], contact_id="c", min_cursor=old_cursor),
            timeout=TIMEOUT,
        )
        assert status.status.version == 4
        history = stub.ListHistory(
            pb.ListHistoryRequest(location_id=locs[3], contact_id="c"), timeout=TIMEOUT
        )
        assert [e.version for e in history.entries] == [3, 2, 1]
        # An old change's cursor resumes right after it (change 7 is the 2nd of locs[3]).
        with Watcher(
            server.addr,
            pb.WatchChangesRequest(location_ids=[locs[3]], after_cursor=history.entries[1].cursor),
        ) as after_old:
            assert keys(after_old.wait_past(later.cursor, codec)) == [(locs[3], 3)]
    # The new change continues its lane from the old head.
    assert (
        db.fetchval("SELECT seq FROM dnd_changes WHERE location_id = $1 AND version = 4", locs[1])
        == 13
    )


def test_the_lane_count_is_fixed_once_the_log_has_a_change(
    fresh_database: Any, servers: Any
) -> None:
    secret = "a-cursor-secret-shared-by-two-deployments-01"
    url = fresh_database()
    server = servers(url, DND_CHANGE_LANES="8", DND_CURSOR_KEY=secret)
    db = Database(url)
    assert db.fetchval("SELECT lanes FROM dnd_log_layout") == 8
    assert db.heads() == (0,) * 8
    loc = new_id("loc")
    with grpc.insecure_channel(server.addr) as channel:
        answer = stub_for(channel).SetDnd(set_dnd(loc, "c"), timeout=TIMEOUT)
    lane = db.fetchval("SELECT lane FROM dnd_changes WHERE location_id = $1", loc)
    assert lane == lane_of(loc, 8) == db.fetchval("SELECT dnd_lane($1, 8)", loc)
    server.stop()
    # Another lane count on this log: the start stops, saying what to set.
    refused = dnd_server(
        "serve",
        env={"DND_DATABASE_URL": url, "DND_GRPC_ADDR": "127.0.0.1:0", "DND_CURSOR_KEY": secret},
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert "DND_CHANGE_LANES is 16" in refused.stderr and "has 8 lanes" in refused.stderr
    assert "set DND_CHANGE_LANES=8" in refused.stderr
    assert db.fetchval("SELECT lanes FROM dnd_log_layout") == 8
    # A deployment of 16 lanes with the same key: the 8-lane cursor is refused saying so.
    other = servers(fresh_database(), DND_CURSOR_KEY=secret)
    with grpc.insecure_channel(other.addr) as channel:
        stub = stub_for(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetStatus(
                pb.GetStatusRequest(location_id=loc, contact_id="c", min_cursor=answer.cursor),
                timeout=TIMEOUT,
            )
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        [violation] = error_details(caught.value)["BadRequest"].field_violations
        assert violation.field == "min_cursor"
        assert "8 change-log lanes" in violation.description and "has 16" in violation.description
    with Watcher(other.addr, pb.WatchChangesRequest(after_cursor=answer.cursor)) as watcher:
        error = watcher.wait_done()
    assert error is not None and error.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The same server, started again with the log's count, serves on.
    again = servers(url, DND_CHANGE_LANES="8", DND_CURSOR_KEY=secret)
    with grpc.insecure_channel(again.addr) as channel:
        status = stub_for(channel).GetStatus(
            pb.GetStatusRequest(location_id=loc, contact_id="c", min_cursor=answer.cursor),
            timeout=TIMEOUT,
        )
    assert status.status.version == 1


def test_a_stream_of_several_lanes_resumes_across_a_restart(
    fresh_database: Any, servers: Any
) -> None:
    url = fresh_database()
    locs = locations_in_distinct_lanes(3)
    first = servers(url)
    with grpc.insecure_channel(first.addr) as channel:
        stub = stub_for(channel)
        with Watcher(first.addr, pb.WatchChangesRequest(location_ids=locs)) as watcher:
            watcher.wait_bookmarks(1)
            for i in range(6):
                stub.SetDnd(set_dnd(locs[i % 3], f"c{i}"), timeout=TIMEOUT)
            seen = watcher.wait_events(6)
            resume_from = seen[-1].cursor
        missed = [stub.SetDnd(set_dnd(locs[i % 3], f"d{i}"), timeout=TIMEOUT) for i in range(5)]
    first.stop()
    second = servers(url)
    with grpc.insecure_channel(second.addr) as channel:
        stub = stub_for(channel)
        request = pb.WatchChangesRequest(location_ids=locs, after_cursor=resume_from)
        with Watcher(second.addr, request) as watcher:
            later = stub.SetDnd(set_dnd(locs[2], "e"), timeout=TIMEOUT)
            events = watcher.wait_past(later.cursor, cursor_codec(url))
    assert [e.cursor for e in events] == [m.cursor for m in missed] + [later.cursor]
    assert len({lane_of(loc, 16) for loc in locs}) == 3


def test_a_log_others_follow_is_never_laid_out_anew(fresh_database: Any, servers: Any) -> None:
    """A second server set to another lane count, started while the first runs on a log with
    no change yet, is refused: laying the log out anew would take away the lanes the first
    writes to. The first serves on, on its lanes."""
    url = fresh_database()
    first = servers(url)
    db = Database(url)
    assert db.fetchval("SELECT lanes FROM dnd_log_layout") == 16
    refused = dnd_server(
        "serve",
        env={"DND_DATABASE_URL": url, "DND_GRPC_ADDR": "127.0.0.1:0", "DND_CHANGE_LANES": "8"},
        timeout=60,
    )
    assert refused.returncode == 2, refused.stderr
    assert (
        "DND_CHANGE_LANES is 8" in refused.stderr and "other server(s) run on it" in refused.stderr
    )
    assert db.fetchval("SELECT lanes FROM dnd_log_layout") == 16
    assert db.heads() == (0,) * 16
    loc = new_id("loc")
    with grpc.insecure_channel(first.addr) as channel:
        answer = stub_for(channel).SetDnd(set_dnd(loc, "c"), timeout=TIMEOUT)
    assert answer.changed
    assert db.fetchval("SELECT lane FROM dnd_changes WHERE location_id = $1", loc) == lane_of(
        loc, 16
    )
