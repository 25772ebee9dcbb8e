"""The server as operators meet it: health, database outages, dropped connections, deadlines,
graceful shutdown. Real server processes, real PostgreSQL."""

from __future__ import annotations

import asyncio
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests.factories import enable
from tests.support import (
    ControlledPostgres,
    Database,
    ServerProcess,
    error_details,
    new_id,
    wait_until,
)


def rpc_lines(server: ServerProcess, loc: str, after: int = 0) -> list[dict[str, Any]]:
    """The log lines of the calls on ``loc`` read so far (from line ``after`` on)."""
    logs = server.collect_logs()[after:]
    return [e for e in logs if e.get("event") == "rpc" and e.get("location_id") == loc]


def lock_waiters(db: Database) -> int:
    """The sessions of ``db`` waiting for a lock."""
    return int(
        db.fetchval(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND wait_event_type = 'Lock'"
        )
    )


def call_code(fn: Any, *args: Any, **kwargs: Any) -> grpc.StatusCode:
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


@pytest.fixture
def own_postgres() -> Iterator[ControlledPostgres]:
    pg = ControlledPostgres()
    yield pg
    pg.destroy()


def test_health_serving_and_json_rpc_log(server: ServerProcess, stub: Any, loc: str) -> None:
    assert server.health() == "SERVING"
    stub.SetDnd(enable(loc, "c1"))
    line = server.wait_log({"event": "rpc", "location_id": loc})
    assert line["method"] == "SetDnd" and line["code"] == "OK"
    assert isinstance(line["duration_ms"], float)


def test_evidence_and_notes_never_logged(server: ServerProcess, stub: Any, loc: str) -> None:
    mark = server.log_mark()
    secret = f"secret-evidence-{new_id('x')}"
    request = enable(loc, "c1")
    request.evidence = secret
    request.note = secret + "-note"
    stub.SetDnd(request)
    with pytest.raises(grpc.RpcError):
        bad = enable(loc, "c1")
        bad.evidence = secret
        bad.contact_id = ""
        stub.SetDnd(bad)
    # Both calls logged (the refused one too): every line they made has been read.
    wait_until(lambda: len(rpc_lines(server, loc, mark)) == 2, what="the two calls' log lines")
    assert not any(secret in line for line in server.raw)


def test_server_without_database_answers_unavailable(fresh_database: Any) -> None:
    # Nothing listens on this port: the server starts, stays NOT_SERVING and says UNAVAILABLE.
    url = "postgresql://postgres@127.0.0.1:1/postgres"
    process = ServerProcess(url, {"DND_DB_TIMEOUT_SECONDS": "1"}).start(wait_serving=False)
    try:
        process.wait_health("NOT_SERVING", timeout=10)
        with grpc.insecure_channel(process.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            with pytest.raises(grpc.RpcError) as caught:
                stub.GetStatus(pb.GetStatusRequest(location_id="l", contact_id="c"), timeout=5)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
            assert error_details(caught.value)["ErrorInfo"].reason == "DATABASE_UNAVAILABLE"
    finally:
        process.stop()


def test_database_outage_then_recovery(own_postgres: ControlledPostgres) -> None:
    process = ServerProcess(own_postgres.url, {"DND_DB_TIMEOUT_SECONDS": "2"}).start()
    loc = new_id("loc")
    try:
        with grpc.insecure_channel(process.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            stub.SetDnd(enable(loc, "before"), timeout=10)
            own_postgres.stop()
            process.wait_health("NOT_SERVING", timeout=15)
            for method, request in (
                (stub.SetDnd, enable(loc, "during")),
                (stub.GetStatus, pb.GetStatusRequest(location_id=loc, contact_id="before")),
                (
                    stub.CheckSend,
                    pb.CheckSendRequest(location_id=loc, contact_id="x", channel=pb.CHANNEL_SMS),
                ),
            ):
                with pytest.raises(grpc.RpcError) as caught:
                    method(request, timeout=10)
                assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
            own_postgres.start()
            process.wait_health("SERVING", timeout=30)
            status = stub.GetStatus(
                pb.GetStatusRequest(location_id=loc, contact_id="before"), timeout=10
            )
            assert status.status.version == 1
            assert stub.SetDnd(enable(loc, "after"), timeout=10).changed
            during = stub.GetStatus(pb.GetStatusRequest(location_id=loc, contact_id="during"))
            assert during.status.version == 0, "a refused write must not appear later"
    finally:
        process.stop()


def test_dropped_connections_recover_without_unknown(
    server: ServerProcess, stub: Any, db: Database, loc: str
) -> None:
    stub.SetDnd(enable(loc, "c1"))
    stop = threading.Event()
    codes: list[grpc.StatusCode] = []
    acknowledged: list[str] = []

    def load() -> None:
        i = 0
        while not stop.is_set():
            i += 1
            contact = f"w{i}"
            code = call_code(stub.SetDnd, enable(loc, contact), timeout=10)
            codes.append(code)
            if code == grpc.StatusCode.OK:
                acknowledged.append(contact)
            codes.append(
                call_code(
                    stub.GetStatus,
                    pb.GetStatusRequest(location_id=loc, contact_id="c1"),
                    timeout=10,
                )
            )

    worker = threading.Thread(target=load)
    worker.start()
    try:
        for _ in range(3):
            time.sleep(0.3)
            killed = db.fetchval(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE application_name = 'dnd-service' AND datname = current_database()"
            )
            assert killed >= 1
        time.sleep(0.5)
    finally:
        stop.set()
        worker.join(30)
    internal = [e for e in server.collect_logs() if e.get("event") == "rpc_internal_error"]
    assert not internal, internal[0].get("exception", "")[-1500:]
    assert set(codes) <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}, set(codes)
    # Service recovered by itself: the last calls succeeded.
    assert codes[-1] == grpc.StatusCode.OK
    assert call_code(stub.GetStatus, pb.GetStatusRequest(location_id=loc, contact_id="c1")) == (
        grpc.StatusCode.OK
    )
    # Every acknowledged write is there.
    stored = {
        r["contact_id"]
        for r in db.fetch("SELECT contact_id FROM dnd_blocks WHERE location_id = $1", loc)
    }
    assert set(acknowledged) <= stored


async def _hold_contact_lock(
    url: str, loc: str, contact: str, hold: asyncio.Event, held: threading.Event
) -> None:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await conn.execute(
                "INSERT INTO dnd_contacts (location_id, contact_id) VALUES ($1, $2) "
                "ON CONFLICT DO NOTHING",
                loc,
                contact,
            )
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM dnd_contacts WHERE location_id = $1 AND contact_id = $2 FOR UPDATE",
                loc,
                contact,
            )
            held.set()
            await hold.wait()
    finally:
        await conn.close()


class ContactLock:
    """Holds a contact's row lock from another connection until released."""

    def __init__(self, url: str, loc: str, contact: str) -> None:
        self._loop = asyncio.new_event_loop()
        self._hold = asyncio.Event()
        self._held = threading.Event()
        self._thread = threading.Thread(
            target=self._loop.run_until_complete,
            args=(_hold_contact_lock(url, loc, contact, self._hold, self._held),),
        )

    def __enter__(self) -> ContactLock:
        self._thread.start()
        assert self._held.wait(10), "the contact's row lock was not taken"
        return self

    def release(self) -> None:
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._hold.set)
            self._thread.join(10)
            self._loop.close()

    def __exit__(self, *exc: object) -> None:
        self.release()


def test_deadline_honoured_and_nothing_written(
    server: ServerProcess, stub: Any, db: Database, database_url: str, loc: str
) -> None:
    with ContactLock(database_url, loc, "busy"):
        started = time.monotonic()
        with pytest.raises(grpc.RpcError) as caught:
            stub.SetDnd(enable(loc, "busy"), timeout=0.5)
        assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        assert time.monotonic() - started < 3
    # The server has ended the call (its log line): the write it abandoned can no longer land.
    server.wait_log({"event": "rpc", "method": "SetDnd", "location_id": loc})
    assert db.changes(loc) == 0
    assert db.blocks(loc) == 0


def test_sigterm_lets_in_flight_calls_finish(database_url: str, db: Database) -> None:
    process = ServerProcess(database_url).start()
    loc = new_id("loc")
    results: dict[str, Any] = {}
    try:
        with grpc.insecure_channel(process.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            with ContactLock(database_url, loc, "busy") as lock:

                def in_flight() -> None:
                    try:
                        results["answer"] = stub.SetDnd(enable(loc, "busy"), timeout=20)
                    except grpc.RpcError as error:
                        results["error"] = error

                caller = threading.Thread(target=in_flight)
                caller.start()
                wait_until(lambda: lock_waiters(db), what="the call waiting for the row lock")
                mark = process.log_mark()
                process.signal(signal.SIGTERM)
                process.wait_log({"event": "server_stopping"}, mark)

                # New calls are refused while the in-flight one drains.
                def refused() -> bool:
                    with grpc.insecure_channel(process.addr) as fresh:
                        code = call_code(
                            dnd_pb2_grpc.DndServiceStub(fresh).GetStatus,
                            pb.GetStatusRequest(location_id=loc, contact_id="x"),
                            timeout=2,
                        )
                    return code == grpc.StatusCode.UNAVAILABLE

                wait_until(refused, 5, "new calls refused")
                assert caller.is_alive(), "the in-flight call is still draining"
                lock.release()
                caller.join(20)
        assert "error" not in results, results.get("error")
        assert results["answer"].changed
        assert process.proc is not None
        assert process.proc.wait(timeout=20) == 0
    finally:
        process.stop()
    assert db.changes(loc) == 1
    events = [e.get("event") for e in process.collect_logs()]
    assert "server_stopping" in events and "server_stopped" in events
