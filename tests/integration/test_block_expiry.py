"""Expiry of temporary carrier blocks: the per-location setting over gRPC (off by default,
bounded, read and write permissions as other settings), and the expiry pass run directly with
a moved clock against the session server's database: a block not yet expired still denies,
an expired one is cleared by one SYSTEM change (seen by watchers, the history and the
server's cache), other reasons and locations without a lifetime are left alone, and passes
racing each other clear each block once."""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_server import cursor
from dnd_server.config import Config
from dnd_server.domain.expiry import expiry_of
from dnd_server.runtime import install_cursor_key
from dnd_server.service import DndService
from dnd_server.storage.store import Store

from tests import factories as f
from tests.support import ServerProcess, Watcher, bad_fields, new_id, run_async

T = 10
HOUR = 3600


async def _passes(url: str, now: dt.datetime | None, count: int) -> list[int]:
    """``count`` expiry passes at ``now`` run at once, each through a service and pool of its
    own (as replicas would): the blocks each cleared."""
    config = Config(database_url=url)
    pools = [await asyncpg.create_pool(url, min_size=1, max_size=2) for _ in range(count)]
    try:
        services = []
        for pool in pools:
            store = Store(pool=pool, timeout=10, idempotency_ttl=86400)
            await install_cursor_key(config, store)
            if hasattr(store, "open_log"):  # the change log's lanes
                cursor.install_lanes(await store.open_log(config.change_lanes))
            services.append(DndService(store=store))
        return list(await asyncio.gather(*(s.expire_blocks(now) for s in services)))
    finally:
        for pool in pools:
            await pool.close()


def expiry_pass(url: str, now: dt.datetime | None = None, count: int = 1) -> list[int]:
    return list(run_async(_passes(url, now, count)))


def later(seconds: float) -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(seconds=seconds)


def temporary_block(stub: Any, loc: str, contact: str) -> None:
    """A carrier's temporary failure (30003): an SMS_CARRIER_TEMPORARY block."""
    answer = stub.ReportSmsDeliveryFailure(f.sms_failure(loc, contact, "30003"), timeout=T)
    assert answer.reason == pb.REASON_SMS_CARRIER_TEMPORARY and answer.changed


def test_the_setting_is_off_by_default_and_replaced_whole(stub: Any, loc: str) -> None:
    get = pb.GetBlockExpirySettingsRequest(location_id=loc)
    assert stub.GetBlockExpirySettings(get, timeout=T).settings.sms_carrier_temporary_seconds == 0
    answer = stub.UpdateBlockExpirySettings(f.block_expiry(loc, 2 * HOUR), timeout=T)
    assert answer.settings.sms_carrier_temporary_seconds == 2 * HOUR
    assert stub.GetBlockExpirySettings(get, timeout=T).settings.sms_carrier_temporary_seconds == (
        2 * HOUR
    )
    stub.UpdateBlockExpirySettings(f.block_expiry(loc, 0), timeout=T)
    assert stub.GetBlockExpirySettings(get, timeout=T).settings.sms_carrier_temporary_seconds == 0


@pytest.mark.parametrize("seconds", [-1, 365 * 86400 + 1, 2**40])
def test_a_lifetime_out_of_range_is_refused(stub: Any, loc: str, seconds: int) -> None:
    stub.UpdateBlockExpirySettings(f.block_expiry(loc, HOUR), timeout=T)
    with pytest.raises(grpc.RpcError) as caught:
        stub.UpdateBlockExpirySettings(f.block_expiry(loc, seconds), timeout=T)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == ["settings.sms_carrier_temporary_seconds"]
    get = pb.GetBlockExpirySettingsRequest(location_id=loc)
    assert (
        stub.GetBlockExpirySettings(get, timeout=T).settings.sms_carrier_temporary_seconds == HOUR
    )


def test_an_expired_block_is_cleared_by_one_system_change(
    server: ServerProcess, stub: Any, database_url: str, loc: str, contact: str
) -> None:
    stub.UpdateBlockExpirySettings(f.block_expiry(loc, HOUR), timeout=T)
    temporary_block(stub, loc, contact)
    # A permanent block of the same contact, and a temporary one where no lifetime is set.
    stub.ReportSmsDeliveryFailure(f.sms_failure(loc, contact, "30004"), timeout=T)
    elsewhere = new_id("loc")
    temporary_block(stub, elsewhere, contact)
    stub.ReportSmsDeliveryFailure(f.sms_failure(loc, "temp-only", "30003"), timeout=T)
    # Cached answers before the pass: denied.
    assert not stub.CheckSend(f.check(loc, "temp-only"), timeout=T).allowed

    # Not yet an hour old: a pass changes nothing, and the block still denies.
    expiry_pass(database_url)
    assert expiry_pass(database_url, later(HOUR - 60)) == [0]
    check = stub.CheckSend(f.check(loc, "temp-only", fully_consistent=True), timeout=T)
    assert not check.allowed and check.denied_by[0].reason == pb.REASON_SMS_CARRIER_TEMPORARY

    with Watcher(server.addr, f.watch(loc, elsewhere)) as watcher:
        watcher.wait_bookmarks(1)
        assert expiry_pass(database_url, later(HOUR + 1)) == [2]
        events = watcher.wait_events(2)
    assert len(events) == 2 and {e.contact_id for e in events} == {contact, "temp-only"}
    for event in events:
        assert not event.enabled and event.source == pb.SOURCE_SYSTEM
        assert event.reason == pb.REASON_SMS_CARRIER_TEMPORARY
        assert event.authenticated_caller == "dnd-service block expiry"
    # The server's cache saw the clear: allowed at once, and from the database.
    cursor_of = {e.contact_id: e.cursor for e in events}
    cached = f.check(loc, "temp-only", min_cursor=cursor_of["temp-only"])
    assert stub.CheckSend(cached, timeout=T).allowed
    assert stub.CheckSend(f.check(loc, "temp-only", fully_consistent=True), timeout=T).allowed
    # The permanent block stays, and so does the block of the location without a lifetime.
    status = stub.GetStatus(f.get_status(loc, contact, fully_consistent=True), timeout=T).status
    assert [b.reason for b in status.blocks] == [pb.REASON_SMS_CARRIER_PERMANENT]
    assert not stub.CheckSend(f.check(elsewhere, contact, fully_consistent=True), timeout=T).allowed
    [cleared] = [
        e for e in stub.ListHistory(f.history(loc, "temp-only"), timeout=T).entries if not e.enabled
    ]
    assert cleared.source == pb.SOURCE_SYSTEM and "after 3600s" in cleared.provider_detail
    # Nothing left to expire: the next pass is a no-op.
    assert expiry_pass(database_url, later(2 * HOUR)) == [0]


def test_racing_passes_clear_each_block_once(
    stub: Any, db: Any, database_url: str, loc: str
) -> None:
    stub.UpdateBlockExpirySettings(f.block_expiry(loc, 60), timeout=T)
    contacts = [new_id("contact") for _ in range(6)]
    for contact in contacts:
        temporary_block(stub, loc, contact)
    cleared = expiry_pass(database_url, later(120), count=3)
    assert sum(cleared) == len(contacts), cleared
    rows = db.fetch(
        "SELECT contact_id, count(*) AS n FROM dnd_changes WHERE location_id = $1 "
        "AND NOT enabled AND source = 'SYSTEM' GROUP BY contact_id",
        loc,
    )
    assert {r["contact_id"]: r["n"] for r in rows} == dict.fromkeys(contacts, 1)


class _SettingChangedMidPass(Store):
    """A store whose location setting changes right after a pass found its contacts, as an
    operator's update racing the pass would (the same database, the real statements)."""

    changed_to: dict[str, int] = {}

    async def expiring_contacts(self, now: dt.datetime | None, limit: int) -> list[tuple[str, str]]:
        found = await super().expiring_contacts(now, limit)
        for location_id, seconds in self.changed_to.items():
            await self.put_block_expiry(location_id, expiry_of(seconds))
        return found


async def _pass_with_change(url: str, now: dt.datetime, changed_to: dict[str, int]) -> int:
    config = Config(database_url=url)
    pool = await asyncpg.create_pool(url, min_size=1, max_size=2)
    try:
        store = _SettingChangedMidPass(pool=pool, timeout=10, idempotency_ttl=86400)
        store.changed_to = changed_to
        await install_cursor_key(config, store)
        cursor.install_lanes(await store.open_log(config.change_lanes))
        return await DndService(store=store).expire_blocks(now)
    finally:
        await pool.close()


@pytest.mark.parametrize("seconds", [0, 2 * HOUR])
def test_a_pass_clears_nothing_the_location_no_longer_expires(
    stub: Any, database_url: str, loc: str, seconds: int
) -> None:
    """The lifetime turned off (0) or lengthened after the pass found the blocks: each write
    reads the location's lifetime again, and the blocks stay."""
    stub.UpdateBlockExpirySettings(f.block_expiry(loc, 60), timeout=T)
    contacts = [new_id("contact") for _ in range(3)]
    for contact in contacts:
        temporary_block(stub, loc, contact)
    cleared = run_async(_pass_with_change(database_url, later(120), {loc: seconds}))
    assert cleared == 0
    for contact in contacts:
        check = f.check(loc, contact, fully_consistent=True)
        assert stub.CheckSend(check, timeout=T).denied_by[0].reason == (
            pb.REASON_SMS_CARRIER_TEMPORARY
        )
