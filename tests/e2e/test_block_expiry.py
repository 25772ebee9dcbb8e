"""The servers' own expiry of temporary carrier blocks: two replicas on one database both run
the expiry loop, and each expired block is cleared by exactly one SYSTEM change, seen by a
watcher of the other replica and by both caches; a block past its lifetime that no pass has
cleared yet still denies (it is a block until the clear is made)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import asyncpg
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests import factories as f
from tests.support import Database, ServerProcess, Watcher, new_id, run_async, wait_until

T = 10


def temporary_block(stub: Any, loc: str, contact: str) -> dt.datetime:
    """A carrier's temporary failure (30003) for ``contact``: the block's since."""
    answer = stub.ReportSmsDeliveryFailure(f.sms_failure(loc, contact, "30003"), timeout=T)
    assert answer.changed
    [block] = answer.status.blocks
    return block.since.ToDatetime(tzinfo=dt.UTC)


def cleared(watcher: Watcher, count: int) -> list[Any]:
    """The clears the watcher received, once there are ``count`` of them."""
    clears = [e for e in watcher.events if not e.enabled]
    return clears if len(clears) >= count else []


def system_clears(db: Database, loc: str) -> dict[str, int]:
    rows = db.fetch(
        "SELECT contact_id, count(*) AS n FROM dnd_changes WHERE location_id = $1 "
        "AND NOT enabled AND source = 'SYSTEM' GROUP BY contact_id",
        loc,
    )
    return {r["contact_id"]: r["n"] for r in rows}


def test_two_replicas_clear_each_expired_block_once(fresh_database: Callable[[], str]) -> None:
    url = fresh_database()
    env = {"DND_BLOCK_EXPIRY_INTERVAL_SECONDS": "0.2"}
    a = ServerProcess(url, env).start()
    b = ServerProcess(url, env).start()
    try:
        db = Database(url)
        loc = new_id("loc")
        with grpc_stub(a) as stub_a, grpc_stub(b) as stub_b:
            stub_a.UpdateBlockExpirySettings(f.block_expiry(loc, 1), timeout=T)
            contacts = [new_id("contact") for _ in range(5)]
            with Watcher(b.addr, f.watch(loc, sources=[pb.SOURCE_SYSTEM])) as watcher:
                watcher.wait_bookmarks(1)
                for contact in contacts:
                    temporary_block(stub_a, loc, contact)
                # Both caches hold the blocks (the carrier's, source SYSTEM too) before they
                # expire.
                for stub in (stub_a, stub_b):
                    results = stub.BatchCheckSend(f.batch_check(loc, contacts), timeout=T).results
                    assert not any(r.allowed for r in results)
                clears = wait_until(lambda: cleared(watcher, len(contacts)), 30, "the clears")
                assert sorted(e.contact_id for e in clears) == sorted(contacts)
                assert all(e.reason == pb.REASON_SMS_CARRIER_TEMPORARY for e in clears)
                # Later blocks expire too: by then both replicas ran passes after the first
                # clears, and none cleared anything twice.
                later = [new_id("contact") for _ in range(2)]
                for contact in later:
                    temporary_block(stub_b, loc, contact)
                wait_until(lambda: cleared(watcher, len(contacts) + len(later)), 30, "later")
            assert system_clears(db, loc) == dict.fromkeys(contacts + later, 1)
            last = clears[-1].cursor
            for stub in (stub_a, stub_b):
                batch = f.batch_check(loc, contacts, min_cursor=last)
                assert all(r.allowed for r in stub.BatchCheckSend(batch, timeout=T).results)
    finally:
        a.stop()
        b.stop()


def test_a_block_past_its_lifetime_denies_until_a_pass_clears_it(
    fresh_database: Callable[[], str],
) -> None:
    url = fresh_database()
    server = ServerProcess(url, {"DND_BLOCK_EXPIRY_INTERVAL_SECONDS": "0"}).start()
    try:
        db = Database(url)
        loc, contact = new_id("loc"), new_id("contact")
        with grpc_stub(server) as stub:
            stub.UpdateBlockExpirySettings(f.block_expiry(loc, 1), timeout=T)
            since = temporary_block(stub, loc, contact)
            wait_until(
                lambda: db.fetchval("SELECT now() >= $1", since + dt.timedelta(seconds=1)),
                timeout=10,
                what="the block's lifetime to pass by the database's clock",
            )
            for fresh in (False, True):
                check = stub.CheckSend(f.check(loc, contact, fully_consistent=fresh), timeout=T)
                assert not check.allowed, "a block is active until its clear is made"
            assert system_clears(db, loc) == {}
            assert run_async(_one_pass(url)) == 1
            check = stub.CheckSend(f.check(loc, contact, fully_consistent=True), timeout=T)
            assert check.allowed
            wait_until(
                lambda: stub.CheckSend(f.check(loc, contact), timeout=T).allowed,
                what="the cache to see the clear",
            )
    finally:
        server.stop()


async def _one_pass(url: str) -> int:
    from dnd_server import cursor
    from dnd_server.config import Config
    from dnd_server.runtime import install_cursor_key
    from dnd_server.service import DndService
    from dnd_server.storage.store import Store

    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        store = Store(pool=pool, timeout=10, idempotency_ttl=86400)
        await install_cursor_key(Config(database_url=url), store)
        if hasattr(store, "open_log"):  # the change log's lanes
            cursor.install_lanes(await store.open_log(Config().change_lanes))
        return await DndService(store=store).expire_blocks()
    finally:
        await pool.close()


class grpc_stub:
    """A stub on a channel of its own to ``server``, closed on exit."""

    def __init__(self, server: ServerProcess) -> None:
        import grpc

        self._channel = grpc.insecure_channel(server.addr)

    def __enter__(self) -> Any:
        return dnd_pb2_grpc.DndServiceStub(self._channel)

    def __exit__(self, *exc: object) -> None:
        self._channel.close()
