"""A hung database: every PostgreSQL process stopped (SIGSTOP) for 12 s, its sockets open and
silent. No call is held past DND_DB_TIMEOUT_SECONDS (plus a small margin): writes, their
commits and fully consistent reads answer UNAVAILABLE in time, health turns NOT_SERVING within
the health interval plus that timeout, and after SIGCONT everything recovers by itself with no
acknowledged write lost. Real server process, real PostgreSQL of the test's own."""

from __future__ import annotations

import socket
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests.factories import enable
from tests.support import ControlledPostgres, Database, ServerProcess, new_id

pytestmark = pytest.mark.fault

DB_TIMEOUT = 1.0
HEALTH_INTERVAL = 0.2
# Scheduling slack on a loaded machine: the answer itself is immediate once the deadline fires
# (and less than a second deadline: an operation is never retried past its deadline).
MARGIN = 0.8
HUNG_FOR = 12.0


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    started: float
    ended: float
    code: grpc.StatusCode

    @property
    def duration(self) -> float:
        return self.ended - self.started


class Load:
    """Writers that retry each write with its idempotency key until it is acknowledged, and a
    reader of fully consistent reads; every call's timing and code kept."""

    def __init__(self, addr: str, loc: str, writers: int = 4) -> None:
        self.addr = addr
        self.loc = loc
        self.stop = threading.Event()
        self.acked: set[str] = set()
        self.pending: set[str] = set()
        self.calls: list[Call] = []
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._write, args=(i,)) for i in range(writers)]
        self.threads.append(threading.Thread(target=self._read))

    def _call(self, method: str, fn: object, request: object) -> grpc.StatusCode:
        started = time.monotonic()
        try:
            fn(request, timeout=30)  # type: ignore[operator]
            code = grpc.StatusCode.OK
        except grpc.RpcError as error:
            code = error.code()
        with self.lock:
            self.calls.append(Call(method, started, time.monotonic(), code))
        return code

    def _write(self, n: int) -> None:
        with grpc.insecure_channel(self.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            i = 0
            while not self.stop.is_set():
                i += 1
                contact, key = f"w{n}-{i}", uuid.uuid4().hex
                with self.lock:
                    self.pending.add(contact)
                # Retried (same key) until acknowledged, even once told to stop: a write
                # answered UNAVAILABLE may or may not have committed, the key says which.
                give_up = None
                while True:
                    code = self._call(
                        "SetDnd", stub.SetDnd, enable(self.loc, contact, idempotency_key=key)
                    )
                    if code == grpc.StatusCode.OK:
                        with self.lock:
                            self.acked.add(contact)
                            self.pending.discard(contact)
                        break
                    if code != grpc.StatusCode.UNAVAILABLE:
                        break
                    if self.stop.is_set():
                        give_up = give_up or time.monotonic() + 30
                        if time.monotonic() > give_up:
                            break
                    time.sleep(0.1)

    def _read(self) -> None:
        with grpc.insecure_channel(self.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            status = pb.GetStatusRequest(
                location_id=self.loc, contact_id="w0-1", fully_consistent=True
            )
            check = pb.CheckSendRequest(
                location_id=self.loc,
                contact_id="w0-1",
                channel=pb.CHANNEL_SMS,
                fully_consistent=True,
            )
            while not self.stop.is_set():
                for method, fn, request in (
                    ("GetStatus", stub.GetStatus, status),
                    ("CheckSend", stub.CheckSend, check),
                ):
                    if self._call(method, fn, request) != grpc.StatusCode.OK:
                        time.sleep(0.1)

    def acked_count(self) -> int:
        with self.lock:
            return len(self.acked)

    def __enter__(self) -> Load:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def own_postgres() -> Iterator[ControlledPostgres]:
    pg = ControlledPostgres()
    yield pg
    pg.destroy()


def test_hung_database_answers_in_time_and_recovers(own_postgres: ControlledPostgres) -> None:
    server = ServerProcess(
        own_postgres.url,
        {
            "DND_DB_TIMEOUT_SECONDS": str(DB_TIMEOUT),
            "DND_HEALTH_INTERVAL_SECONDS": str(HEALTH_INTERVAL),
            # Fewer connections than callers: hung calls hold every one, and health and the
            # calls queued behind them must still answer in time.
            "DND_DB_POOL_MAX": "3",
            # WARNING: no line per RPC (the log reader never holds the server back); a fixed
            # port, as the listening line is not logged then.
            "DND_LOG_LEVEL": "WARNING",
            "DND_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        },
    ).start()
    loc = new_id("loc")
    paused: list[int] = []
    try:
        with Load(server.addr, loc) as load:
            deadline = time.monotonic() + 10
            while load.acked_count() < 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert load.acked_count() >= 5, "the load never got going"

            paused = own_postgres.pause()
            frozen_at = time.monotonic()
            server.wait_health("NOT_SERVING", timeout=HEALTH_INTERVAL + DB_TIMEOUT + MARGIN)
            time.sleep(max(0.0, frozen_at + HUNG_FOR - time.monotonic()))
            thawed_at = time.monotonic()
            own_postgres.resume(paused)
            paused = []

            server.wait_health("SERVING", timeout=20)
            during = load.acked_count()
            deadline = time.monotonic() + 20
            while load.acked_count() < during + 5 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert load.acked_count() >= during + 5, "writes did not recover by themselves"
        calls = list(load.calls)
    finally:
        if paused:
            own_postgres.resume(paused)
        server.stop()

    # Nothing held past the database timeout, while hung or not.
    slow = [c for c in calls if c.duration > DB_TIMEOUT + MARGIN]
    assert not slow, f"{len(slow)} calls held too long, e.g. {slow[:3]}"
    assert {c.code for c in calls} <= {grpc.StatusCode.OK, grpc.StatusCode.UNAVAILABLE}
    # Every kind of call met the hang and was refused as retryable.
    hung = [c for c in calls if frozen_at < c.started and c.ended < thawed_at]
    for method in ("SetDnd", "GetStatus", "CheckSend"):
        codes = {c.code for c in hung if c.method == method}
        assert codes == {grpc.StatusCode.UNAVAILABLE}, (method, codes)

    # Every write was eventually acknowledged (retried with its key), and each took effect
    # exactly once: an acknowledged write is never lost, a retried one never doubled.
    assert not load.pending, load.pending
    db = Database(own_postgres.url)
    committed = [
        r["contact_id"]
        for r in db.fetch("SELECT contact_id FROM dnd_changes WHERE location_id = $1", loc)
    ]
    assert sorted(committed) == sorted(load.acked)
    blocked = {
        r["contact_id"]
        for r in db.fetch("SELECT contact_id FROM dnd_blocks WHERE location_id = $1", loc)
    }
    assert blocked == load.acked


def wait_setting(db: Database, name: str, wanted: str) -> None:
    deadline = time.monotonic() + 10
    while db.fetchval(f"SHOW {name}") != wanted:
        assert time.monotonic() < deadline, f"{name} never became {wanted!r}"
        time.sleep(0.05)


def test_unacknowledged_commit_answers_unavailable_and_its_retry_replays(
    own_postgres: ControlledPostgres,
) -> None:
    """A COMMIT the database received but never acknowledges (here: it waits for a
    synchronous standby that does not exist) is answered UNAVAILABLE in time; retried with
    its idempotency key once the database answers again, it takes effect exactly once."""
    server = ServerProcess(own_postgres.url, {"DND_DB_TIMEOUT_SECONDS": str(DB_TIMEOUT)}).start()
    db = Database(own_postgres.url)
    loc, key = new_id("loc"), uuid.uuid4().hex
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            assert stub.SetDnd(
                enable(loc, "warm", idempotency_key=uuid.uuid4().hex), timeout=10
            ).changed
            db.fetch("ALTER SYSTEM SET synchronous_standby_names = 'absent_standby'")
            db.fetch("SELECT pg_reload_conf()")
            wait_setting(db, "synchronous_standby_names", "absent_standby")

            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                stub.SetDnd(enable(loc, "c1", idempotency_key=key), timeout=30)
            assert caught.value.code() == grpc.StatusCode.UNAVAILABLE, caught.value
            assert time.monotonic() - started < DB_TIMEOUT + MARGIN

            db.fetch("ALTER SYSTEM RESET synchronous_standby_names")
            db.fetch("SELECT pg_reload_conf()")
            wait_setting(db, "synchronous_standby_names", "")
            deadline = time.monotonic() + 10
            while True:
                try:
                    answer = stub.SetDnd(enable(loc, "c1", idempotency_key=key), timeout=10)
                    break
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert answer.status.version == 1
    finally:
        server.stop()
    changes = db.fetch(
        "SELECT version FROM dnd_changes WHERE location_id = $1 AND contact_id = 'c1'", loc
    )
    assert [r["version"] for r in changes] == [1], "the write must take effect exactly once"
