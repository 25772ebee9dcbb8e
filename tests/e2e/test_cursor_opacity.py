"""Cursors and page tokens are opaque for real: the texts a server hands out reveal no log
position (so no count of other locations' writes), a forged or foreign one is INVALID_ARGUMENT
wherever it is accepted, and real ones keep working across restarts and replicas, which share
the key through the database. Real server processes over real PostgreSQL."""

from __future__ import annotations

import base64
import binascii
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests import factories
from tests.support import (
    DISABLE,
    ENABLE,
    REPO,
    Database,
    ServerProcess,
    Watcher,
    bad_fields,
    error_details,
    new_id,
    stub_for,
)

TIMEOUT = 10
START = "ZG5kMTow"  # the documented cursor before the first change: base64("dnd1:0")


# The writes of these tests: blocks of CALL by the user.
set_dnd = partial(factories.set_dnd, channel=pb.CHANNEL_CALL)


def old_format(text: str) -> str:
    """A cursor (``dnd1:<seq>``) or page token (``dndh1:<n>``) of the plaintext format."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def lenient_decode(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return b""


def assert_opaque(text: str, positions: range) -> None:
    """``text`` holds none of ``positions`` the way the plaintext format did."""
    assert len(text) >= 36, text
    assert b"dnd1:" not in lenient_decode(text) and b"dndh1:" not in lenient_decode(text)
    for seq in positions:
        assert text != old_format(f"dnd1:{seq}") and old_format(f"dnd1:{seq}") not in text


def head(db: Database) -> int:
    """How many changes the log holds (every lane's head together)."""
    return sum(db.heads())


def same_lane(location_id: str) -> str:
    """A new location whose changes go to the lane of ``location_id``'s."""
    from dnd_server.lanes import DEFAULT_LANES, lane_of

    while True:
        other = new_id("loc")
        if lane_of(other, DEFAULT_LANES) == lane_of(location_id, DEFAULT_LANES):
            return other


@pytest.fixture
def servers(fresh_database: Any) -> Iterator[Any]:
    """Factory of server processes (stopped at the end of the test)."""
    made: list[ServerProcess] = []

    def start(url: str, wait: bool = True, **env: str) -> ServerProcess:
        process = ServerProcess(url, env).start(wait_serving=wait)
        made.append(process)
        return process

    yield start
    for process in made:
        process.stop()


# --- what a cursor reveals -------------------------------------------------------------------


def test_cursors_do_not_count_other_locations_writes(servers: Any, fresh_database: Any) -> None:
    url = fresh_database()
    server = servers(url, DND_WATCH_BOOKMARK_SECONDS="0.1")  # the idle bookmarks come sooner
    db = Database(url)
    mine = new_id("loc")
    theirs = same_lane(mine)  # their writes number in the lane of mine
    with grpc.insecure_channel(server.addr) as channel:
        stub = stub_for(channel)
        with Watcher(server.addr, pb.WatchChangesRequest(location_ids=[mine])) as watcher:
            watcher.wait_bookmarks(1)
            first = stub.SetDnd(set_dnd(mine, "c1"), timeout=TIMEOUT)
            for i in range(7):
                stub.SetDnd(set_dnd(theirs, f"c{i}"), timeout=TIMEOUT)
            second = stub.SetDnd(set_dnd(mine, "c2"), timeout=TIMEOUT)
            events = watcher.wait_events(2)
            # Bookmarks once everything is written: nothing changes between them.
            seen = len(watcher.bookmarks)
            idle = watcher.wait_bookmarks(seen + 3)[seen:]
        history = stub.ListHistory(
            pb.ListHistoryRequest(location_id=mine, contact_id="c1"), timeout=TIMEOUT
        )
    assert head(db) == 9
    seqs = [r[0] for r in db.fetch("SELECT seq FROM dnd_changes WHERE location_id = $1", mine)]
    assert seqs == [1, 9], "the seven writes of the other location lie between the two"
    texts = [first.cursor, second.cursor, *(e.cursor for e in events), *watcher.bookmarks]
    texts.append(history.entries[0].cursor)
    for text in texts:
        assert_opaque(text, range(0, 20))
    # A change has one cursor wherever it shows up (answer, event, history entry)...
    assert [e.cursor for e in events] == [first.cursor, second.cursor]
    assert history.entries[0].cursor == first.cursor
    # ...but bookmarks of one position differ: comparing them tells nothing about whether
    # anyone wrote in between.
    assert len(idle) == 3 and len(set(idle)) == 3
    assert not set(idle) & {first.cursor, second.cursor}


# --- forged and foreign cursors --------------------------------------------------------------


@dataclass(frozen=True)
class Foreign:
    """Real cursors and a page token of another deployment (another database, another key)."""

    cursor: str
    bookmark: str
    page_token: str


@pytest.fixture(scope="module")
def foreign(fresh_database: Any) -> Iterator[Foreign]:
    process = ServerProcess(fresh_database()).start()
    try:
        loc = new_id("loc")
        with grpc.insecure_channel(process.addr) as channel:
            stub = stub_for(channel)
            answer = stub.SetDnd(set_dnd(loc, "c1"), timeout=TIMEOUT)
            stub.SetDnd(set_dnd(loc, "c1", DISABLE), timeout=TIMEOUT)
            stub.SetDnd(set_dnd(loc, "c1"), timeout=TIMEOUT)
            page = stub.ListHistory(
                pb.ListHistoryRequest(location_id=loc, contact_id="c1", page_size=1),
                timeout=TIMEOUT,
            )
        with Watcher(process.addr) as watcher:
            [bookmark] = watcher.wait_bookmarks(1)
        assert page.next_page_token
        yield Foreign(answer.cursor, bookmark, page.next_page_token)
    finally:
        process.stop()


def call(server: ServerProcess, stub: Any, rpc: str, loc: str, value: str) -> grpc.RpcError:
    """``value`` as the cursor or page token field of ``rpc``; the error it answers."""
    if rpc == "WatchChanges":
        with Watcher(server.addr, pb.WatchChangesRequest(after_cursor=value)) as watcher:
            error = watcher.wait_done()
        assert error is not None, "the stream did not end"
        return error
    requests = {
        "CheckSend": pb.CheckSendRequest(
            location_id=loc, contact_id="c1", channel=pb.CHANNEL_SMS, min_cursor=value
        ),
        "GetStatus": pb.GetStatusRequest(location_id=loc, contact_id="c1", min_cursor=value),
        "BatchCheckSend": pb.BatchCheckSendRequest(
            location_id=loc,
            channel=pb.CHANNEL_SMS,
            targets=[pb.CheckTarget(contact_id="c1")],
            min_cursor=value,
        ),
        "ListHistory": pb.ListHistoryRequest(location_id=loc, contact_id="c1", page_token=value),
    }
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, rpc)(requests[rpc], timeout=TIMEOUT)
    return caught.value


FIELDS = {
    "WatchChanges": "after_cursor",
    "CheckSend": "min_cursor",
    "GetStatus": "min_cursor",
    "BatchCheckSend": "min_cursor",
    "ListHistory": "page_token",
}


def expect_refused(error: grpc.RpcError, field: str) -> None:
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert bad_fields(error) == [field]
    assert error_details(error)["ErrorInfo"].reason == "INVALID_ARGUMENT"
    wanted = "not a page token returned" if field == "page_token" else "not a cursor returned"
    assert wanted in (error.details() or "")


@pytest.mark.parametrize("rpc", list(FIELDS))
def test_forged_plaintext_cursor_is_refused(
    server: ServerProcess, stub: Any, db: Database, loc: str, rpc: str
) -> None:
    """The old format, with a position the log really has: it was accepted as genuine."""
    for i in range(3):
        stub.SetDnd(set_dnd(loc, "c1", ENABLE if i % 2 == 0 else DISABLE), timeout=TIMEOUT)
    field = FIELDS[rpc]
    n = max(db.heads()) - 1
    forged = old_format(f"dndh1:{n}" if field == "page_token" else f"dnd1:{n}")
    expect_refused(call(server, stub, rpc, loc, forged), field)


@pytest.mark.parametrize("kind", ["cursor", "bookmark", "page_token"])
@pytest.mark.parametrize("rpc", list(FIELDS))
def test_another_deployments_cursor_is_refused(
    server: ServerProcess, stub: Any, loc: str, foreign: Foreign, rpc: str, kind: str
) -> None:
    stub.SetDnd(set_dnd(loc, "c1"), timeout=TIMEOUT)
    value = getattr(foreign, kind)
    expect_refused(call(server, stub, rpc, loc, value), FIELDS[rpc])


@pytest.mark.parametrize("rpc", ["WatchChanges", "CheckSend", "GetStatus", "BatchCheckSend"])
def test_a_page_token_is_no_cursor(server: ServerProcess, stub: Any, loc: str, rpc: str) -> None:
    for i in range(3):
        stub.SetDnd(set_dnd(loc, "c1", ENABLE if i % 2 == 0 else DISABLE), timeout=TIMEOUT)
    page = stub.ListHistory(
        pb.ListHistoryRequest(location_id=loc, contact_id="c1", page_size=1), timeout=TIMEOUT
    )
    expect_refused(call(server, stub, rpc, loc, page.next_page_token), FIELDS[rpc])


# --- real cursors keep working ---------------------------------------------------------------


def replay(addr: str, after: str, loc: str, count: int) -> list[Any]:
    request = pb.WatchChangesRequest(location_ids=[loc], after_cursor=after)
    with Watcher(addr, request) as watcher:
        watcher.wait_events(count)
        watcher.wait_bookmarks(1)  # caught up: nothing more is coming
        assert watcher.error is None, watcher.error
        return list(watcher.events)


def test_real_cursors_resume_and_read(server: ServerProcess, stub: Any, loc: str) -> None:
    answers = [
        stub.SetDnd(set_dnd(loc, "c1", ENABLE if i % 2 == 0 else DISABLE), timeout=TIMEOUT)
        for i in range(4)
    ]
    events = replay(server.addr, answers[1].cursor, loc, 2)
    assert [e.cursor for e in events] == [a.cursor for a in answers[2:]]
    assert [e.version for e in events] == [3, 4]
    with Watcher(server.addr, pb.WatchChangesRequest(location_ids=[loc])) as watcher:
        [bookmark] = watcher.wait_bookmarks(1)
    assert replay(server.addr, bookmark, loc, 0) == []
    assert [e.version for e in replay(server.addr, START, loc, 4)] == [1, 2, 3, 4]
    for min_cursor in (answers[-1].cursor, bookmark, START):
        check = stub.CheckSend(
            pb.CheckSendRequest(
                location_id=loc, contact_id="c1", channel=pb.CHANNEL_CALL, min_cursor=min_cursor
            ),
            timeout=TIMEOUT,
        )
        assert check.version == 4
        status = stub.GetStatus(
            pb.GetStatusRequest(location_id=loc, contact_id="c1", min_cursor=min_cursor),
            timeout=TIMEOUT,
        )
        assert status.status.version == 4


def snapshot(stub: Any, loc: str) -> tuple[list[str], str]:
    """(every history cursor of c1, newest first; the token of the page after the first)."""
    everything = stub.ListHistory(
        pb.ListHistoryRequest(location_id=loc, contact_id="c1"), timeout=TIMEOUT
    )
    first = stub.ListHistory(
        pb.ListHistoryRequest(location_id=loc, contact_id="c1", page_size=1), timeout=TIMEOUT
    )
    return [e.cursor for e in everything.entries], first.next_page_token


def test_cursors_survive_a_restart(servers: Any, fresh_database: Any) -> None:
    url = fresh_database()
    loc = new_id("loc")
    server = servers(url)
    with grpc.insecure_channel(server.addr) as channel:
        stub = stub_for(channel)
        written = [
            stub.SetDnd(set_dnd(loc, "c1", ENABLE if i % 2 == 0 else DISABLE), timeout=TIMEOUT)
            for i in range(3)
        ]
        cursors, token = snapshot(stub, loc)
    with Watcher(server.addr, pb.WatchChangesRequest(location_ids=[loc])) as watcher:
        [bookmark] = watcher.wait_bookmarks(1)
    server.stop()
    again = servers(url)
    with grpc.insecure_channel(again.addr) as channel:
        stub = stub_for(channel)
        later = stub.SetDnd(set_dnd(loc, "c1", DISABLE), timeout=TIMEOUT)
        # The same changes have the same cursors under the same key.
        assert snapshot(stub, loc)[0] == [later.cursor, *cursors]
        page = stub.ListHistory(
            pb.ListHistoryRequest(location_id=loc, contact_id="c1", page_token=token),
            timeout=TIMEOUT,
        )
        assert [e.cursor for e in page.entries] == cursors[1:]
        check = stub.CheckSend(
            pb.CheckSendRequest(
                location_id=loc,
                contact_id="c1",
                channel=pb.CHANNEL_CALL,
                min_cursor=written[-1].cursor,
            ),
            timeout=TIMEOUT,
        )
        assert check.version == 4
    resumed = replay(again.addr, written[0].cursor, loc, 3)
    assert [e.cursor for e in resumed] == [written[1].cursor, written[2].cursor, later.cursor]
    assert [e.cursor for e in replay(again.addr, bookmark, loc, 1)] == [later.cursor]


def test_replicas_on_one_database_share_the_key(servers: Any, fresh_database: Any) -> None:
    url = fresh_database()
    # Started together: both race to store the first key, one wins, both use it.
    a, b = servers(url, wait=False), servers(url, wait=False)
    a.wait_health("SERVING")
    b.wait_health("SERVING")
    assert Database(url).fetchval("SELECT count(*) FROM dnd_cursor_key") == 1
    loc = new_id("loc")
    with (
        grpc.insecure_channel(a.addr) as channel_a,
        grpc.insecure_channel(b.addr) as channel_b,
    ):
        on_a, on_b = stub_for(channel_a), stub_for(channel_b)
        with Watcher(b.addr, pb.WatchChangesRequest(location_ids=[loc])) as watcher:
            watcher.wait_bookmarks(1)
            written = [
                on_a.SetDnd(set_dnd(loc, "c1", ENABLE if i % 2 == 0 else DISABLE), timeout=10)
                for i in range(3)
            ]
            events = watcher.wait_events(3)
        assert [e.cursor for e in events] == [w.cursor for w in written]
        cursors, token = snapshot(on_a, loc)
        assert snapshot(on_b, loc) == (cursors, token)
        page = on_b.ListHistory(
            pb.ListHistoryRequest(location_id=loc, contact_id="c1", page_token=token),
            timeout=TIMEOUT,
        )
        assert [e.cursor for e in page.entries] == cursors[1:]
        status = on_b.GetStatus(
            pb.GetStatusRequest(location_id=loc, contact_id="c1", min_cursor=written[-1].cursor),
            timeout=TIMEOUT,
        )
        assert status.status.version == 3
    resumed = replay(b.addr, written[0].cursor, loc, 2)
    assert [e.cursor for e in resumed] == [w.cursor for w in written[1:]]


def test_the_cursor_key_setting_replaces_the_stored_key(servers: Any, fresh_database: Any) -> None:
    """With DND_CURSOR_KEY every deployment given the same secret seals alike (the database
    keeps no key); a server without it refuses those cursors."""
    from dnd_server.cursor import CursorCodec, key_from_secret

    secret = "a-secret-of-forty-characters-0123456789"
    url = fresh_database()
    server = servers(url, DND_CURSOR_KEY=secret)
    codec = CursorCodec(key_from_secret(secret))
    loc = new_id("loc")
    with grpc.insecure_channel(server.addr) as channel:
        stub = stub_for(channel)
        answer = stub.SetDnd(set_dnd(loc, "c1"), timeout=TIMEOUT)
        assert codec.decode_cursor(answer.cursor) == Database(url).heads()
        status = stub.GetStatus(
            pb.GetStatusRequest(
                location_id=loc,
                contact_id="c1",
                min_cursor=codec.encode_cursor(Database(url).heads()),
            ),
            timeout=TIMEOUT,
        )
        assert status.status.version == 1
    assert Database(url).fetchval("SELECT count(*) FROM dnd_cursor_key") == 0
    server.stop()
    plain = servers(url)
    with grpc.insecure_channel(plain.addr) as channel:
        error = call(plain, stub_for(channel), "GetStatus", loc, answer.cursor)
    expect_refused(error, "min_cursor")


def test_a_short_cursor_key_setting_stops_the_start(fresh_database: Any) -> None:
    env = {
        **os.environ,
        "DND_DATABASE_URL": fresh_database(),
        "DND_GRPC_ADDR": "127.0.0.1:0",
        "DND_CURSOR_KEY": "too-short",
    }
    done = subprocess.run(
        [sys.executable, "-m", "dnd_server", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert done.returncode == 2
    assert "DND_CURSOR_KEY must be a secret of at least 32 characters" in done.stderr
