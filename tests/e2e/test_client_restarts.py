"""The typed Python clients across server restarts and failures: retries across a restart on
the same port (reads by the gRPC retry policy while its attempts last, keyed writes by the
client, exactly once; unkeyed writes fail with Unavailable), retries counted while a server
answers UNAVAILABLE, watch resumed across a restart with no event lost or repeated, and
CursorExpired from a server of short retention. Each test body runs on both clients
(tests/clients.py)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from dnd_client import Channel, CursorExpired, DndClient, EmailEvent, Unavailable

from tests.clients import KINDS, Client, Follow, enable, expect_watch_error
from tests.support import Database, ServerProcess, cursor_codec, new_id


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- servers of these tests' own: same port across restarts, short retention ---------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class SamePortServer:
    """A server process that is stopped and started again on one fixed port."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.port = free_port()
        self.process: ServerProcess | None = None

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return (
            self.process is not None
            and self.process.proc is not None
            and (self.process.proc.poll() is None)
        )

    def start(self) -> None:
        assert not self.running
        self.process = ServerProcess(self.url, {"DND_GRPC_ADDR": self.addr}).start()
        assert self.process.port == self.port

    def stop(self) -> None:
        assert self.process is not None
        assert self.process.stop() == 0


@pytest.fixture(scope="module")
def _same_port_server(fresh_database: Any) -> Iterator[SamePortServer]:
    server = SamePortServer(fresh_database())
    server.start()
    yield server
    if server.running:
        server.stop()


@pytest.fixture
def same_port(_same_port_server: SamePortServer) -> SamePortServer:
    """The restartable server, running when the test starts."""
    if not _same_port_server.running:
        _same_port_server.start()
    return _same_port_server


async def restart_soon(server: SamePortServer, delay: float = 0.05) -> float:
    """Start ``server`` again after ``delay``; how long after the call it was serving."""
    started = time.monotonic()
    await asyncio.sleep(delay)
    await asyncio.to_thread(server.start)
    return time.monotonic() - started


async def eventually(call: Callable[..., Any], *args: Any, within: float = 20) -> Any:
    """``call(*args)`` once it stops raising Unavailable."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await call(*args)
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def test_reads_retried_across_a_restart_while_attempts_last(
    kind: str, same_port: SamePortServer
) -> None:
    loc = new_id("loc")
    async with Client(kind, same_port.addr) as dnd:
        await dnd.set_dnd(loc, "c", **enable(channel=Channel.SMS))
        # Attempts are bounded: with the server down for good, a read fails well before its
        # deadline.
        same_port.stop()
        started = time.monotonic()
        with pytest.raises(Unavailable) as caught:
            await dnd.get_status(loc, "c", timeout=20)
        assert time.monotonic() - started < 10
        assert caught.value.code == grpc.StatusCode.UNAVAILABLE
        # Same port: the same client goes on once the server is back (as soon as the
        # channel's reconnect backoff, grown during the outage, lets it reconnect).
        same_port.start()
        assert (await eventually(dnd.get_status, loc, "c")).version == 1

    # An outage spanning the read with too few attempts to outlast it: Unavailable.
    async with Client(kind, same_port.addr, max_attempts=2) as dnd:
        await dnd.get_status(loc, "c")
        same_port.stop()
        read = asyncio.ensure_future(dnd.get_status(loc, "c", timeout=10))
        await restart_soon(same_port)
        with pytest.raises(Unavailable):
            await read
        assert (await eventually(dnd.get_status, loc, "c")).version == 1

    # With the default attempts (about 1.2 to 1.8 s of them) the read outlasts the channel's
    # first reconnect (0.8 to 1.2 s after the first failure): when the server is back within
    # 0.7 s the caller never sees the outage. A machine too loaded to restart it that fast
    # gets three tries.
    async with Client(kind, same_port.addr) as dnd:
        slow = []
        for _ in range(3):
            await eventually(dnd.get_status, loc, "c")
            same_port.stop()
            read = asyncio.ensure_future(dnd.get_status(loc, "c", timeout=10))
            back = await restart_soon(same_port)
            try:
                status = await read
            except Unavailable:
                assert back > 0.7, f"back after {back:.2f} s, within the attempts, yet it failed"
                slow.append(round(back, 2))
                continue
            assert status.version == 1
            break
        else:
            pytest.skip(f"the server restarted too slowly here to test this: {slow} s")


async def test_keyed_write_retried_across_a_restart_applies_once(
    kind: str, same_port: SamePortServer
) -> None:
    loc = new_id("loc")
    db = Database(same_port.url)
    key = f"write-{uuid.uuid4().hex}"
    # Enough client attempts (7.5 s at least) to outlast a slow restart and the channel's
    # growing reconnect backoff.
    async with Client(kind, same_port.addr, max_attempts=15) as dnd:
        await dnd.get_status(loc, "c")
        same_port.stop()
        write = asyncio.ensure_future(
            dnd.set_dnd(loc, "c", **enable(channel=Channel.SMS), idempotency_key=key, timeout=5)
        )
        await asyncio.sleep(0.1)
        assert not write.done(), "the first attempt failed: the client must be retrying"
        await restart_soon(same_port)
        answer = await write
        assert answer.changed and answer.status.version == 1
        assert db.changes(loc) == 1
        # A retry with the key is answered from the first answer and writes nothing...
        replay = await dnd.set_dnd(loc, "c", **enable(channel=Channel.SMS), idempotency_key=key)
        assert (replay.cursor, replay.changed) == (answer.cursor, True)
        # ...while the same change without the key is simply a no-op now.
        plain = await dnd.set_dnd(loc, "c", **enable(channel=Channel.SMS))
        assert not plain.changed
    assert db.changes(loc) == 1
    history = await asyncio.to_thread(_history_versions, same_port.addr, loc, "c")
    assert history == [1]


def _history_versions(addr: str, loc: str, contact: str) -> list[int]:
    with DndClient(addr) as dnd:
        return [e.version for e in dnd.list_history(loc, contact).entries]


async def test_writes_fail_with_unavailable_unless_keyed_and_back_in_time(
    kind: str, same_port: SamePortServer
) -> None:
    loc = new_id("loc")
    db = Database(same_port.url)
    async with Client(kind, same_port.addr) as dnd:
        await dnd.get_status(loc, "c")
        same_port.stop()
        for write in (
            dnd.set_dnd(loc, "c", **enable(channel=Channel.SMS)),
            dnd.process_inbound_message(loc, "c", "STOP"),
            dnd.report_sms_delivery_failure(loc, "c", provider="twilio", error_code="30004"),
            dnd.report_email_event(loc, "c", provider="mailgun", event=EmailEvent.BOUNCE),
        ):
            started = time.monotonic()
            with pytest.raises(Unavailable):
                await write
            # One attempt only: the client's retries alone would take 0.75 s or more.
            assert time.monotonic() - started < 0.6
        # A keyed write is retried, but only while the client's attempts last.
        started = time.monotonic()
        with pytest.raises(Unavailable):
            await dnd.set_dnd(loc, "c", **enable(channel=Channel.EMAIL), idempotency_key="k-1")
        assert 0.7 < time.monotonic() - started < 10
        same_port.start()
        status = await eventually(dnd.get_status, loc, "c")
    assert status.version == 0 and not status.blocks
    assert db.changes(loc) == 0


@pytest.fixture(scope="module")
def answers_unavailable(fresh_database: Any) -> Iterator[tuple[ServerProcess, str]]:
    """A server giving up on the database after 0.5 s (it then answers UNAVAILABLE) and
    logging every call, and its database URL."""
    url = fresh_database()
    env = {"DND_DB_TIMEOUT_SECONDS": "0.5", "DND_LOG_READ_SAMPLE_RATE": "1"}
    process = ServerProcess(url, env).start()
    yield process, url
    process.stop()


class ContactsLocked:
    """An ACCESS EXCLUSIVE lock on dnd_contacts (every read and write goes through it) held
    by another connection: the server's reads and writes time out and answer UNAVAILABLE until
    ``release``."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def __aenter__(self) -> ContactsLocked:
        self._conn = await asyncpg.connect(self.url)
        self._transaction = self._conn.transaction()
        await self._transaction.start()
        await self._conn.execute("LOCK TABLE dnd_contacts IN ACCESS EXCLUSIVE MODE")
        self._released = False
        return self

    async def release(self, after: float = 0) -> None:
        await asyncio.sleep(after)
        if not self._released:
            self._released = True
            await self._transaction.rollback()
            await self._conn.close()

    async def __aexit__(self, *exc: object) -> None:
        await self.release()


async def attempts(process: ServerProcess, method: str, loc: str) -> list[str]:
    """The status codes the server logged for ``method`` calls on ``loc``, in order (every line
    it wrote until now read first)."""
    logs = await asyncio.to_thread(process.sync_logs)
    return [
        e["code"]
        for e in logs
        if e.get("event") == "rpc" and e.get("method") == method and e.get("location_id") == loc
    ]


async def test_retries_counted_while_the_server_answers_unavailable(
    kind: str, answers_unavailable: tuple[ServerProcess, str]
) -> None:
    process, url = answers_unavailable
    db = Database(url)
    read_loc, bounded_loc, keyed_loc, plain_loc = (new_id("loc") for _ in range(4))
    async with Client(kind, process.addr) as dnd:
        await dnd.get_status(new_id("loc"), "warm")
        # A read meeting UNAVAILABLE is retried by the gRPC retry policy: the caller only
        # sees the answer once the database is back.
        async with ContactsLocked(url) as lock:
            release = asyncio.ensure_future(lock.release(after=0.9))
            status = await dnd.get_status(read_loc, "c", timeout=20)
            await release
        assert status.version == 0
        codes = await attempts(process, "GetStatus", read_loc)
        assert codes[-1] == "OK" and set(codes[:-1]) == {"UNAVAILABLE"}, codes
        assert 2 <= len(codes) <= 5, codes

        # A keyed write is retried by the client and applied once.
        async with ContactsLocked(url) as lock:
            release = asyncio.ensure_future(lock.release(after=0.9))
            answer = await dnd.set_dnd(
                keyed_loc, "c", **enable(channel=Channel.SMS), idempotency_key="keyed-1"
            )
            await release
        assert answer.changed and answer.status.version == 1
        codes = await attempts(process, "SetDnd", keyed_loc)
        assert codes.count("OK") == 1 and codes[-1] == "OK" and len(codes) >= 2, codes
        assert db.changes(keyed_loc) == 1

        # A write without a key is tried once and raises Unavailable; nothing is written.
        async with ContactsLocked(url):
            with pytest.raises(Unavailable) as caught:
                await dnd.set_dnd(plain_loc, "c", **enable(channel=Channel.SMS), timeout=10)
        assert caught.value.reason == "DATABASE_UNAVAILABLE"
        assert await attempts(process, "SetDnd", plain_loc) == ["UNAVAILABLE"]
        assert db.changes(plain_loc) == 0

    # Reads give up when the attempts are spent.
    async with Client(kind, process.addr, max_attempts=3) as dnd:
        await dnd.get_status(new_id("loc"), "warm")
        async with ContactsLocked(url):
            with pytest.raises(Unavailable) as caught:
                await dnd.get_status(bounded_loc, "c", timeout=20)
        assert caught.value.reason == "DATABASE_UNAVAILABLE"
        assert await attempts(process, "GetStatus", bounded_loc) == ["UNAVAILABLE"] * 3


async def test_watch_resumes_across_a_restart_without_loss_or_repeat(
    kind: str, same_port: SamePortServer
) -> None:
    loc = new_id("loc")
    # Writes go through a second server on the same database, so they go on while the
    # watched one is down.
    writer = ServerProcess(same_port.url).start()
    try:
        async with Client(kind, same_port.addr) as watched, Client(kind, writer.addr) as dnd:
            follow = Follow(watched, location_ids=[loc])
            try:
                await follow.until(lambda: bool(follow.bookmarks))
                written = []

                async def write(prefix: str) -> None:
                    for i in range(3):
                        answer = await dnd.set_dnd(
                            loc, f"{prefix}{i}", **enable(channel=Channel.SMS)
                        )
                        written.append(answer.cursor)

                await write("before")
                await follow.until(lambda: len(follow.events) == 3)
                same_port.stop()
                await write("during")
                await asyncio.to_thread(same_port.start)
                await write("after")
                await follow.until(lambda: len(follow.events) >= 9, timeout=30)
                # A bookmark past the last write: a repeated event would have come before it.
                codec = cursor_codec(same_port.url)
                last = codec.decode_cursor(written[-1])
                await follow.until(
                    lambda: any(
                        all(
                            p >= t for p, t in zip(codec.decode_cursor(b.cursor), last, strict=True)
                        )
                        for b in follow.bookmarks
                    )
                )
            finally:
                await follow.close()
    finally:
        writer.stop()
    assert follow.error is None
    assert follow.cursors == written
    assert len(set(follow.cursors)) == 9


@pytest.fixture(scope="module")
def expired(fresh_database: Any) -> Iterator[tuple[ServerProcess, str, str]]:
    """A server keeping watch cursors for 1 s, an expired cursor and a current one."""
    process = ServerProcess(fresh_database(), {"DND_WATCH_RETENTION_SECONDS": "1"}).start()
    loc = new_id("loc")
    try:
        with DndClient(process.addr) as dnd:
            old = dnd.set_dnd(loc, "a", **enable(channel=Channel.SMS)).cursor
            dnd.set_dnd(loc, "b", **enable(channel=Channel.SMS))
            time.sleep(1.5)
            recent = dnd.set_dnd(loc, "c", **enable(channel=Channel.SMS)).cursor
        yield process, old, recent
    finally:
        process.stop()


async def test_cursor_expired(kind: str, expired: tuple[ServerProcess, str, str]) -> None:
    process, old, recent = expired
    async with Client(kind, process.addr) as dnd:
        error = await expect_watch_error(dnd, after_cursor=old)
        assert isinstance(error, CursorExpired)
        assert error.code == grpc.StatusCode.OUT_OF_RANGE
        assert error.reason == "CURSOR_EXPIRED" and error.metadata["cursor"] == old
        # A current cursor still works: the stream opens (a bookmark comes) without error.
        follow = Follow(dnd, after_cursor=recent)
        try:
            await follow.until(lambda: bool(follow.bookmarks))
        finally:
            await follow.close()
        assert follow.error is None and not follow.events
