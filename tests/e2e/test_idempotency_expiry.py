"""Idempotency keys expire: a key is taken by a new request once DND_IDEMPOTENCY_TTL_SECONDS
have passed, and the maintenance loop prunes expired keys. Server processes of these tests'
own, with a TTL of a second; tests/integration/test_idempotency.py checks keys in their TTL."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests.integration.test_idempotency import (
    EMAIL,
    SMS,
    TIMEOUT,
    email_event,
    expect_key_refused,
    key_rows,
    set_dnd,
)
from tests.support import (
    Database,
    ServerProcess,
    bad_fields,
    channel_scope,
    new_id,
    stub_for,
    wait_until,
)


@pytest.fixture
def short_ttl_server(database_url: str, db: Database) -> Iterator[ServerProcess]:
    """A server of this test alone whose keys live 1 s and whose only pruning runs at start.

    A stale sentinel key shows when that first pruning is over, so it cannot remove the
    test's key behind its back."""
    sentinel = new_id("loc-sentinel")
    db.fetch(
        "INSERT INTO dnd_idempotency (location_id, key, method, request_hash, response, "
        "created_at) VALUES ($1, 'sentinel', 'SetDnd', '\\x00', NULL, now() - interval '1 hour')",
        sentinel,
    )
    env = {"DND_IDEMPOTENCY_TTL_SECONDS": "1", "DND_MAINTENANCE_INTERVAL_SECONDS": "3600"}
    process = ServerProcess(database_url, env).start()
    try:
        wait_until(lambda: key_rows(db, sentinel) == 0, 10, "the start-up pruning")
        yield process
    finally:
        process.stop()


def taken(call: Any, request: Any) -> Any:
    """The answer to ``request``, or None while its idempotency key is refused as in use."""
    try:
        return call(request, timeout=TIMEOUT)
    except grpc.RpcError as error:
        if error.code() != grpc.StatusCode.INVALID_ARGUMENT:
            raise
        assert bad_fields(error) == ["idempotency_key"], error.details()
        return None


def test_key_expires_after_configured_ttl(
    short_ttl_server: ServerProcess, db: Database, loc: str, contact: str
) -> None:
    with grpc.insecure_channel(short_ttl_server.addr) as channel:
        stub = stub_for(channel)
        sent = time.monotonic()  # the key is stored after this
        first = stub.SetDnd(set_dnd(loc, contact, "short"), timeout=TIMEOUT)
        created = time.monotonic()
        different = set_dnd(loc, contact, "short", scope=channel_scope(EMAIL))
        expect_key_refused(stub.SetDnd, different)
        assert stub.SetDnd(set_dnd(loc, contact, "short"), timeout=TIMEOUT) == first
        assert db.changes(loc) == 1
        assert time.monotonic() - created < 1, "the checks above must run within the TTL"
        # Once the TTL has passed, the expired key (still stored: no pruning runs) is taken by
        # the new request; until then the request is refused, writing nothing.
        second = wait_until(lambda: taken(stub.SetDnd, different), 10, "the key to expire")
        assert time.monotonic() - sent > 0.95, "taken before its TTL"
        assert key_rows(db, loc) == 1
        assert second.changed and second.status.version == 2
        assert list(second.status.blocked_channels) == [EMAIL, SMS]
        assert db.changes(loc) == 2
        row = db.fetch("SELECT response FROM dnd_idempotency WHERE location_id = $1", loc)
        assert [pb.SetDndResponse.FromString(r["response"]) for r in row] == [second]
        # Within the new TTL the key now replays the second request and refuses the first.
        assert stub.SetDnd(different, timeout=TIMEOUT) == second
        expect_key_refused(stub.SetDnd, set_dnd(loc, contact, "short"))
        assert db.changes(loc) == 2


def test_expired_keys_are_pruned(database_url: str, db: Database, loc: str, contact: str) -> None:
    env = {"DND_IDEMPOTENCY_TTL_SECONDS": "1", "DND_MAINTENANCE_INTERVAL_SECONDS": "0.2"}
    process = ServerProcess(database_url, env).start()
    try:
        with grpc.insecure_channel(process.addr) as channel:
            stub = stub_for(channel)
            first = stub.ReportEmailEvent(email_event(loc, contact, "prune-me"), timeout=TIMEOUT)
            assert first.changed
            wait_until(lambda: key_rows(db, loc) == 0, 5, "the expired key pruned")
            # Same key, same request, after expiry: handled as new (the block is active now).
            again = stub.ReportEmailEvent(email_event(loc, contact, "prune-me"), timeout=TIMEOUT)
            assert not again.changed
            assert again.outcome == pb.EVENT_OUTCOME_ALREADY_ACTIVE
            assert again != first
            assert db.changes(loc) == 1
    finally:
        process.stop()
