"""Test support: real PostgreSQL, real server processes, real gRPC channels."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from typing import Any

import asyncpg
import grpc
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_status import rpc_status

from tests import factories

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_async(coro: Any) -> Any:
    """Run a coroutine on a fresh loop in another thread (usable from async tests too)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


class _Kept:
    """The one connection the tests keep to one database, used a query at a time."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.conn: asyncpg.Connection | None = None
        self.lock = asyncio.Lock()

    async def call(self, method: str, query: str, args: tuple[Any, ...]) -> Any:
        """``fetch`` or ``execute`` on the kept connection, connecting first when needed."""
        async with self.lock:
            if self.conn is not None and self.conn.is_closed():
                self.conn = None
            fresh = self.conn is None
            if self.conn is None:
                self.conn = await asyncpg.connect(self.url)
            try:
                return await getattr(self.conn, method)(query, *args)
            except (asyncpg.ConnectionDoesNotExistError, asyncpg.AdminShutdownError, OSError):
                # The database restarted or dropped the session since the last query (tests
                # stop and start their own PostgreSQL): connect again once.
                await self._drop()
                if fresh:
                    raise
                self.conn = await asyncpg.connect(self.url)
                return await getattr(self.conn, method)(query, *args)

    async def _drop(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            with suppress(Exception):
                async with asyncio.timeout(2):
                    await conn.close()
            if not conn.is_closed():
                conn.terminate()

    async def close(self) -> None:
        async with self.lock:
            await self._drop()


class _KeptConnections:
    """The test session's database connections: one per database, all on one event loop of
    their own in a daemon thread (asyncpg connections belong to the loop that made them), so a
    query costs a round trip, not a connection."""

    def __init__(self) -> None:
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kept: dict[str, _Kept] = {}
        self._guard = threading.Lock()

    def _start(self) -> asyncio.AbstractEventLoop:
        with self._guard:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="test-db", daemon=True).start()
                self._loop = loop
            return self._loop

    def run(self, coro: Any, timeout: float) -> Any:
        future = asyncio.run_coroutine_threadsafe(coro, self._start())
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer from the database in {timeout} s") from None

    def call(self, url: str, method: str, query: str, args: tuple[Any, ...], timeout: float) -> Any:
        with self._guard:
            kept = self._kept.get(url)
            if kept is None:
                kept = self._kept[url] = _Kept(url)
        return self.run(kept.call(method, query, args), timeout)

    def close(self, url: str | None = None) -> None:
        """Close the connection to ``url`` (before its database is dropped), or every one."""
        with self._guard:
            if url is None:
                closing = list(self._kept.values())
                self._kept.clear()
            else:
                closing = [k for k in [self._kept.pop(url, None)] if k is not None]
        for kept in closing:
            with suppress(Exception):
                self.run(kept.close(), 10)


KEPT = _KeptConnections()


class Database:
    """A PostgreSQL database of the test session, reached with plain asyncpg over the one
    connection the session keeps to it (see ``KEPT``)."""

    def __init__(self, url: str, timeout: float = 60) -> None:
        self.url = url
        self.timeout = timeout

    def fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        return KEPT.call(self.url, "fetch", query, args, self.timeout)  # type: ignore[no-any-return]

    def execute(self, query: str, *args: Any) -> str:
        """A statement without rows (``CREATE DATABASE`` too: no arguments, no transaction)."""
        return KEPT.call(self.url, "execute", query, args, self.timeout)  # type: ignore[no-any-return]

    def fetchval(self, query: str, *args: Any) -> Any:
        rows = self.fetch(query, *args)
        return rows[0][0] if rows else None

    def heads(self) -> tuple[int, ...]:
        """The change log's position: every lane's head, in lane order."""
        return tuple(self.fetchval("SELECT array_agg(seq ORDER BY lane) FROM dnd_log_lanes"))

    def changes(self, location_id: str) -> int:
        return self.fetchval("SELECT count(*) FROM dnd_changes WHERE location_id = $1", location_id)

    def blocks(self, location_id: str) -> int:
        return self.fetchval("SELECT count(*) FROM dnd_blocks WHERE location_id = $1", location_id)


def cursor_codec(database_url: str) -> Any:
    """The codec sealing the cursors and page tokens of the servers on ``database_url`` (the
    key the first of them stored), for tests that need a cursor no call answered."""
    from dnd_server.cursor import CursorCodec

    db = Database(database_url)
    key = db.fetchval("SELECT key FROM dnd_cursor_key")
    assert key is not None, "no server has started on this database yet"
    return CursorCodec(bytes(key), db.fetchval("SELECT lanes FROM dnd_log_layout"))


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (query string and socket kept)."""
    base, _, query = url.partition("?")
    scheme_host, _, _old = base.rpartition("/")
    return f"{scheme_host}/{name}" + (f"?{query}" if query else "")


class ServerProcess:
    """A ``dnd-server`` process on a free port, its JSON log lines collected."""

    def __init__(self, database_url: str, env: Mapping[str, str] | None = None) -> None:
        self.database_url = database_url
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.logs: list[dict[str, Any]] = []
        self.raw: list[str] = []
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        self._reader: threading.Thread | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, wait_serving: bool = True, timeout: float = 60) -> ServerProcess:
        env = {
            **os.environ,
            "DND_DATABASE_URL": self.database_url,
            "DND_GRPC_ADDR": "127.0.0.1:0",
            "DND_HEALTH_INTERVAL_SECONDS": "0.2",
            "DND_SHUTDOWN_GRACE_SECONDS": "5",
            "DND_WATCH_BOOKMARK_SECONDS": "0.5",
            "DND_FEED_POLL_SECONDS": "0.2",
            **self.extra_env,
        }
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "dnd_server", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            cwd=REPO,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + timeout
        fixed = env["DND_GRPC_ADDR"].rsplit(":", 1)[-1]
        if fixed != "0":  # a fixed port: no need to read it from the (maybe quiet) log
            self.port = int(fixed)
        while not self.port:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited early:\n{''.join(self.raw)}")
            self._drain(deadline)
            for entry in self.logs:
                if entry.get("event") == "server_listening":
                    self.port = int(entry["port"])
        if wait_serving:
            self.wait_health("SERVING", timeout=max(1.0, deadline - time.monotonic()))
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _drain(self, deadline: float) -> None:
        try:
            line = self._lines.get(timeout=max(0.01, min(0.2, deadline - time.monotonic())))
        except queue.Empty:
            if time.monotonic() > deadline:
                raise TimeoutError(f"server did not start:\n{''.join(self.raw)}") from None
            return
        self._take(line)

    def _take(self, line: str | None) -> bool:
        """Keep one line read from the process; False at the end of its output."""
        if line is None:
            self._ended = True
            return False
        self.raw.append(line)
        try:
            entry = json.loads(line)
        except ValueError:
            return True
        if isinstance(entry, dict):
            self.logs.append(entry)
        return True

    def collect_logs(self) -> list[dict[str, Any]]:
        while not self._ended:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                return self.logs
            self._take(line)
        return self.logs

    def log_mark(self) -> int:
        """The number of log lines so far: ``wait_log(after=mark)`` looks at later ones only."""
        return len(self.collect_logs())

    def wait_log(
        self,
        match: Mapping[str, Any] | Callable[[dict[str, Any]], bool],
        after: int = 0,
        timeout: float = 10,
    ) -> dict[str, Any]:
        """The first log line from line ``after`` on that ``match`` accepts (a predicate, or the
        fields and values the line must have), waiting for the server to write it."""
        accepts = match if callable(match) else _has_fields(match)
        deadline = time.monotonic() + timeout
        seen = after
        while True:
            logs = self.collect_logs()
            for entry in logs[seen:]:
                if accepts(entry):
                    return entry
            seen = max(seen, len(logs))
            left = deadline - time.monotonic()
            if left <= 0 or self._ended:
                wanted = match if not callable(match) else getattr(match, "__name__", "a line")
                raise AssertionError(f"no log line matching {wanted}:\n{''.join(self.raw[-30:])}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            self._take(line)

    def sync_logs(self, timeout: float = 10) -> list[dict[str, Any]]:
        """Every log line this (single-process, plaintext) server wrote before now, read: a
        refused call on a location of its own is made and its line waited for, which the
        server wrote after all of those."""
        marker = new_id("log-mark")
        with grpc.insecure_channel(self.addr) as channel, suppress(grpc.RpcError):
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            stub.GetStatus(pb.GetStatusRequest(location_id=marker), timeout=timeout)
        self.wait_log({"event": "rpc", "location_id": marker}, timeout=timeout)
        return self.logs

    def health(self) -> str:
        with grpc.insecure_channel(self.addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
            except grpc.RpcError as exc:
                return f"error:{exc.code().name}"
            return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    def wait_health(self, wanted: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            seen = self.health()
            if seen == wanted:
                return
            time.sleep(0.1)
        raise TimeoutError(f"health stayed {seen}, wanted {wanted}:\n{''.join(self.raw[-30:])}")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 20) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._reader is not None:
            self._reader.join(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return self.proc.returncode


def base_env() -> dict[str, str]:
    """This process's environment without any DND_ setting of its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DND_")}


def dnd_server(
    *args: str, stdin: str = "", env: Mapping[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """``dnd-server ARGS`` (``python -m dnd_server``) run to its end with ``env`` and no other
    DND_ setting: its exit code, standard output and standard error."""
    return subprocess.run(
        [sys.executable, "-m", "dnd_server", *args],
        input=stdin,
        env={**base_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )


@contextmanager
def running_server(
    database_url: str, env: Mapping[str, str] | None = None
) -> Iterator[ServerProcess]:
    server = ServerProcess(database_url, env).start()
    try:
        yield server
    finally:
        server.stop()


def _has_fields(fields: Mapping[str, Any]) -> Callable[[dict[str, Any]], bool]:
    def accepts(entry: dict[str, Any]) -> bool:
        return all(entry.get(k) == v for k, v in fields.items())

    return accepts


def wait_until(
    predicate: Callable[[], Any], timeout: float = 10, what: str = "", every: float = 0.05
) -> Any:
    """Poll ``predicate`` until it returns something true (returned) or ``timeout`` passes
    (AssertionError naming ``what``): a condition waited for, never a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
        time.sleep(every)


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


def stub_for(channel: grpc.Channel) -> dnd_pb2_grpc.DndServiceStub:
    return dnd_pb2_grpc.DndServiceStub(channel)


def error_details(error: grpc.RpcError) -> dict[str, Any]:
    """The google.rpc details of a failed call, by type name."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    found: dict[str, Any] = {}
    if status is None:
        return found
    for detail in status.details:
        for cls in (
            error_details_pb2.BadRequest,
            error_details_pb2.ErrorInfo,
            error_details_pb2.PreconditionFailure,
            error_details_pb2.RetryInfo,
        ):
            if detail.Is(cls.DESCRIPTOR):
                message = cls()
                detail.Unpack(message)
                found[cls.DESCRIPTOR.name] = message
    return found


def bad_fields(error: grpc.RpcError) -> list[str]:
    bad = error_details(error).get("BadRequest")
    return [v.field for v in bad.field_violations] if bad else []


# Short names used across tests (the request builders are in tests/factories.py).
OUT = factories.OUT
IN = factories.IN
ENABLE = factories.ENABLE
DISABLE = factories.DISABLE


def channel_scope(channel: int) -> pb.Scope:
    return factories.scope(channel)


ALL_SCOPE = factories.scope(None)


class ControlledPostgres:
    """A PostgreSQL of one test's own (embedded binaries), which the test may stop and start."""

    def __init__(self) -> None:
        from pgserver.postgres_server import get_server

        self.folder = tempfile.mkdtemp(prefix="dnd-pg-")
        os.chmod(self.folder, 0o755)
        self.pgdata = os.path.join(self.folder, "pgdata")
        self._server = get_server(self.pgdata, cleanup_mode=None)
        self.url: str = self._server.get_uri()
        self._user = self._server.system_user

    def _pg_ctl(self, *args: str) -> None:
        """Run pg_ctl as the database's system user. Switching user through ``runuser`` rather
        than ``subprocess``'s ``user=`` keeps the child a plain spawn: with ``user=`` Python forks,
        and a fork runs gRPC's fork handlers while the test's watch and load threads are inside
        gRPC, which can crash the child before it starts pg_ctl."""
        from pgserver._commands import POSTGRES_BIN_PATH

        command = [str(POSTGRES_BIN_PATH / "pg_ctl"), "-D", self.pgdata, *args]
        if self._user and os.geteuid() == 0 and shutil.which("runuser"):
            command = ["runuser", "-u", self._user, "--", *command]
        with tempfile.TemporaryFile("w+") as output:  # pg_ctl start keeps pipes open: use a file
            done = subprocess.run(command, stdout=output, stderr=subprocess.STDOUT, timeout=60)
            if done.returncode != 0:
                output.seek(0)
                failed = f"pg_ctl {' '.join(args)} failed ({done.returncode})"
                raise RuntimeError(f"{failed}: {output.read()}")

    def stop(self) -> None:
        self._pg_ctl("-w", "-m", "fast", "stop")

    def start(self) -> None:
        log = os.path.join(self.pgdata, "log")
        self._pg_ctl("-w", "-o", '-h ""', "-o", f"-k {self.pgdata}", "-l", log, "start")

    def postmaster_pid(self) -> int:
        return postmaster_pid(self.pgdata)

    def pause(self) -> list[int]:
        """SIGSTOP the postmaster, then every process it started: a hung database (its sockets
        stay open, nothing answers). Returns the stopped pids, for ``resume``."""
        postmaster = self.postmaster_pid()
        os.kill(postmaster, signal.SIGSTOP)  # first: a stopped postmaster forks no one new
        children = child_pids(postmaster)
        for pid in children:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)
        return [postmaster, *children]

    @staticmethod
    def resume(pids: list[int]) -> None:
        for pid in pids:
            with suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def destroy(self) -> None:

        with suppress(Exception):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


def postmaster_pid(pgdata: str) -> int:
    """The postmaster's pid, from the first line of ``postmaster.pid``."""
    with open(os.path.join(pgdata, "postmaster.pid"), encoding="utf-8") as f:
        return int(f.readline())


def child_pids(parent: int) -> list[int]:
    """The live (not zombie) processes whose parent is ``parent``, read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == parent and fields[0] != "Z":
            found.append(int(entry))
    return found


def process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not yet reaped, does not)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class Watcher:
    """A WatchChanges stream read in a thread: events and bookmarks collected as they come."""

    def __init__(self, addr: str, request: Any = None, timeout: float = 120) -> None:
        self.channel = grpc.insecure_channel(addr)
        self.stub = dnd_pb2_grpc.DndServiceStub(self.channel)
        self.call = self.stub.WatchChanges(request or pb.WatchChangesRequest(), timeout=timeout)
        self.events: list[Any] = []
        # The size of each several-event message received (max_events_per_message).
        self.batches: list[int] = []
        self.bookmarks: list[str] = []
        self.error: grpc.RpcError | None = None
        self.done = threading.Event()
        self._last = ""
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                with self._cond:
                    if message.HasField("event"):
                        self.events.append(message.event)
                        self._last = message.event.cursor
                    elif message.HasField("events"):
                        self.batches.append(len(message.events.events))
                        self.events.extend(message.events.events)
                        self._last = message.events.events[-1].cursor
                    else:
                        self.bookmarks.append(message.bookmark.cursor)
                        self._last = message.bookmark.cursor
                    self._cond.notify_all()
        except grpc.RpcError as error:
            self.error = error
        finally:
            self.done.set()
            with self._cond:
                self._cond.notify_all()

    def wait_events(self, count: int, timeout: float = 20) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.events) < count and not self.done.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.events)

    def wait_bookmarks(self, count: int, timeout: float = 20) -> list[str]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.bookmarks) < count and not self.done.is_set():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return list(self.bookmarks)

    def wait_past(self, cursor: str, codec: Any, timeout: float = 20) -> list[Any]:
        """The events received once the stream has reached ``cursor`` (a write's cursor): a
        bookmark or event at or past its position, opened with ``codec`` (``cursor_codec``),
        came after every event up to it, so nothing matching the write can still come."""
        target = codec.decode_cursor(cursor)
        deadline = time.monotonic() + timeout
        with self._cond:
            while not self._reached(target, codec):
                left = deadline - time.monotonic()
                if left <= 0 or self.done.is_set():
                    raise AssertionError(
                        f"the stream never reached position {target}"
                        + (f": {self.error}" if self.error else "")
                    )
                self._cond.wait(left)
            return list(self.events)

    def _reached(self, target: tuple[int, ...], codec: Any) -> bool:
        if not self._last:
            return False
        position = codec.decode_cursor(self._last)
        return all(t <= p for t, p in zip(target, position, strict=True))

    def wait_done(self, timeout: float = 20) -> grpc.RpcError | None:
        self.done.wait(timeout)
        return self.error

    @property
    def last_cursor(self) -> str:
        """The cursor to resume from: of the last event or bookmark received, whichever last."""
        return self._last

    def close(self) -> None:
        self.call.cancel()
        self.done.wait(10)
        self.channel.close()

    def __enter__(self) -> Watcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
