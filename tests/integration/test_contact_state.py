"""A contact's whole active state in its own row (``dnd_contacts.state``) over real gRPC on
real PostgreSQL: a read is that row alone, every write keeps the row and the listing tables
(``dnd_blocks``, ``dnd_consents``) alike, a contact created by a concurrent writer is locked,
not lost, and the migration fills the state of the contacts it finds.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_server.domain.model import Block, Channel, Direction, Reason, Source
from dnd_server.storage import migrations, rows
from dnd_server.storage.migrations import load_migrations, migrate

from tests import factories
from tests.support import Database, new_id

T = 10.0
SMS, EMAIL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL
PHONE = "+14155552671"
REFRESH = (
    "UPDATE dnd_contacts SET state = dnd_contact_state(location_id, contact_id) "
    "WHERE location_id = $1 AND contact_id = $2"
)


def stored(db: Database, loc: str, contact: str) -> tuple[Any, Any]:
    """The contact's state document, and the one its rows of dnd_blocks and dnd_consents
    make, each parsed with its blocks and consents in key order."""
    row = db.fetch(
        "SELECT state, dnd_contact_state(location_id, contact_id) AS tables FROM dnd_contacts "
        "WHERE location_id = $1 AND contact_id = $2",
        loc,
        contact,
    )[0]
    return _ordered(row["state"]), _ordered(row["tables"])


TIMES = ("since", "replied_at", "captured_at", "expires_at", "confirm_by", "revoked_at")


def _ordered(document: str) -> Any:
    doc = json.loads(document)
    for entry in doc.get("blocks", []) + doc.get("consents", []):
        for name in TIMES:
            if entry.get(name):
                entry[name] = dt.datetime.fromisoformat(entry[name])
    doc.get("blocks", []).sort(key=lambda b: (b["direction"], b["scope"], b["reason"]))
    doc.get("consents", []).sort(key=lambda c: (c["channel"], c["purpose"], c["address"]))
    return doc


def test_every_write_keeps_the_state_and_the_tables_alike(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    writes = [
        lambda: stub.SetDnd(
            factories.enable(loc, contact, SMS, actor_id="u1", note="asked", evidence="call"),
            timeout=T,
        ),
        lambda: stub.SetDnd(factories.enable(loc, contact, None), timeout=T),
        lambda: stub.ProcessInboundMessage(
            factories.inbound(loc, contact, "STOP", from_address=PHONE), timeout=T
        ),
        lambda: stub.CheckSend(
            factories.check(loc, contact, SMS, address=PHONE, purpose=pb.PURPOSE_COMPLIANCE_REPLY),
            timeout=T,
        ),
        lambda: stub.RecordConsent(
            pb.RecordConsentRequest(
                location_id=loc,
                contact_id=contact,
                channel=EMAIL,
                purpose=pb.PURPOSE_MARKETING,
                method=pb.CONSENT_METHOD_WEB_FORM,
                source=pb.SOURCE_USER,
                evidence=pb.ConsentEvidence(form_url="https://example.com/f", ip_address="::1"),
            ),
            timeout=T,
        ),
        lambda: stub.RevokeConsent(
            pb.RevokeConsentRequest(
                location_id=loc,
                contact_id=contact,
                channel=EMAIL,
                purpose=pb.PURPOSE_MARKETING,
                source=pb.SOURCE_CONTACT,
            ),
            timeout=T,
        ),
        lambda: stub.SetDnd(
            factories.disable(loc, contact, None, reason=pb.REASON_MANUAL), timeout=T
        ),
        lambda: stub.ProcessInboundMessage(
            factories.inbound(loc, contact, "START", from_address=PHONE), timeout=T
        ),
    ]
    versions, states = [], []
    for write in writes:
        write()
        state, tables = stored(db, loc, contact)
        assert state == tables
        states.append(state)
        status = stub.GetStatus(
            factories.get_status(loc, contact, fully_consistent=True), timeout=T
        ).status
        assert len(status.blocks) == len(state.get("blocks", []))
        versions.append(status.version)
    # Every write changed something (a STOP from a number two things: block and number).
    assert all(a < b for a, b in zip([0, *versions], versions, strict=False))
    # Along the way the opt-out's reply was claimed, and the consent kept as revoked.
    claimed = {b["reason"]: b["replied_at"] for b in states[3]["blocks"]}
    assert claimed["SMS_OPT_OUT_KEYWORD"] is not None and claimed["MANUAL"] is None
    assert [c["status"] for c in states[4]["consents"]] == ["ACTIVE"]
    assert [c["status"] for c in state["consents"] if c["channel"] == "EMAIL"] == ["REVOKED"]
    assert "blocks" not in state  # START cleared the SMS opt-out and block
    replied = db.fetchval(
        "SELECT count(*) FROM dnd_changes WHERE location_id = $1 AND kind = 'COMPLIANCE_REPLY'",
        loc,
    )
    assert replied == 1


def test_a_read_is_the_contact_row_alone(stub: Any, db: Database, loc: str, contact: str) -> None:
    stub.SetDnd(factories.enable(loc, contact, SMS), timeout=T)
    # The listing table edited by hand, the row not: reads still see the block.
    db.execute("DELETE FROM dnd_blocks WHERE location_id = $1 AND contact_id = $2", loc, contact)
    check = factories.check(loc, contact, SMS, fully_consistent=True)
    denied = stub.CheckSend(check, timeout=T)
    assert not denied.allowed and denied.denial == pb.DENIAL_DND_BLOCK
    batch = stub.BatchCheckSend(
        factories.batch_check(loc, [contact, "other"], fully_consistent=True), timeout=T
    )
    assert [r.allowed for r in batch.results] == [False, True]
    # The state rebuilt from the tables: now it has no block.
    db.execute(REFRESH, loc, contact)
    assert stub.CheckSend(check, timeout=T).allowed


async def test_a_contact_created_by_a_concurrent_writer_is_locked_not_lost(
    stub: Any, database_url: str, loc: str, contact: str
) -> None:
    """A write of a contact that has no row while another transaction is creating it waits
    for that transaction, then locks the row it made (and writes on top of it)."""
    holder = await asyncpg.connect(database_url)
    watcher = await asyncpg.connect(database_url)
    try:
        creating = holder.transaction()
        await creating.start()
        await holder.execute(
            "INSERT INTO dnd_contacts (location_id, contact_id, version) VALUES ($1, $2, 0)",
            loc,
            contact,
        )
        write = asyncio.create_task(
            asyncio.to_thread(stub.SetDnd, factories.enable(loc, contact, SMS), timeout=T)
        )
        deadline = time.monotonic() + T
        while not await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE '%INSERT INTO dnd_contacts%' AND pid <> $1",
            holder.get_server_pid(),
        ):
            assert time.monotonic() < deadline, "the write never waited for the row"
            assert not write.done(), "the write did not wait for the creating transaction"
            await asyncio.sleep(0.01)
        await creating.commit()
        answer = await write
    finally:
        await holder.close()
        await watcher.close()
    assert answer.changed and answer.status.version == 1
    assert [b.reason for b in answer.status.blocks] == [pb.REASON_MANUAL]


def test_the_migration_fills_the_state_of_existing_contacts(
    empty_database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = empty_database()
    every = load_migrations()
    before = every[: [m.name for m in every].index("contact_state")]
    since = dt.datetime(2026, 3, 1, 12, 30, 15, 123456, tzinfo=dt.UTC)
    replied = since + dt.timedelta(minutes=2)

    async def go() -> dict[str, Any]:
        conn = await asyncpg.connect(url)
        try:
            monkeypatch.setattr(migrations, "load_migrations", lambda: before)
            await migrate(conn)
            monkeypatch.undo()
            # A session in another time zone: the state's times are still in UTC.
            await conn.execute("SET TimeZone = 'America/New_York'")
            await conn.execute(
                "INSERT INTO dnd_contacts (location_id, contact_id, version, updated_at) "
                "VALUES ('L', 'a', 3, $1), ('L', 'b', 1, $1), ('L', 'c', 0, NULL)",
                replied,
            )
            await conn.execute(
                "INSERT INTO dnd_blocks (location_id, contact_id, direction, scope, reason, "
                "source, actor_id, note, since, address, replied_at) VALUES "
                "('L', 'a', 'OUTBOUND', 'SMS', 'SMS_OPT_OUT_KEYWORD', 'CONTACT', '', 'stop', "
                "$1, '+14155552671', $2), "
                "('L', 'a', 'INBOUND', 'ALL', 'MANUAL', 'USER', 'u1', '', $1, '', NULL)",
                since,
                replied,
            )
            await conn.execute(
                "INSERT INTO dnd_consents (location_id, contact_id, channel, purpose, method, "
                "kind, status, captured_at, source, evidence, updated_at) VALUES "
                "('L', 'b', 'EMAIL', 'MARKETING', 'WEB_FORM', 'EXPRESS', 'ACTIVE', $1, 'USER', "
                '\'{"form_url": "https://example.com/f"}\', $1)',
                since,
            )
            assert await migrate(conn) == [m.version for m in every[len(before) :]]
            found = await conn.fetch("SELECT contact_id, state FROM dnd_contacts ORDER BY 1")
            return {r["contact_id"]: r["state"] for r in found}
        finally:
            await conn.close()

    states = asyncio.run(go())
    blocks, consents = rows.to_state(states["a"])
    assert consents == ()
    assert sorted(blocks, key=lambda b: b.direction.value) == [
        Block(Direction.INBOUND, None, Reason.MANUAL, Source.USER, actor_id="u1", since=since),
        Block(
            Direction.OUTBOUND,
            Channel.SMS,
            Reason.SMS_OPT_OUT_KEYWORD,
            Source.CONTACT,
            note="stop",
            since=since,
            address="+14155552671",
            replied_at=replied,
        ),
    ]
    assert "+00:00" in states["a"] and "-05:00" not in states["a"]
    blocks, consents = rows.to_state(states["b"])
    assert blocks == ()
    [consent] = consents
    assert (consent.channel.value, consent.purpose.value, consent.status.value) == (
        "EMAIL",
        "MARKETING",
        "ACTIVE",
    )
    assert consent.captured_at == since
    assert consent.evidence.form_url == "https://example.com/f"
    assert json.loads(states["c"]) == {}


def test_a_write_refused_by_its_rules_leaves_the_row_as_it_was(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    stub.ProcessInboundMessage(factories.inbound(loc, contact, "STOP"), timeout=T)
    state, _ = stored(db, loc, contact)
    # A user may not clear a contact's own opt-out.
    with pytest.raises(grpc.RpcError) as refused:
        stub.SetDnd(
            factories.disable(loc, contact, SMS, reason=pb.REASON_SMS_OPT_OUT_KEYWORD), timeout=T
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stored(db, loc, contact) == (state, state)
    # An unknown contact written nothing to stays unknown.
    unknown = new_id("contact")
    assert not stub.SetDnd(factories.disable(loc, unknown, SMS), timeout=T).changed
    assert (
        db.fetchval(
            "SELECT count(*) FROM dnd_contacts WHERE location_id = $1 AND contact_id = $2",
            loc,
            unknown,
        )
        == 0
    )


def test_bulk_writes_and_erasure_keep_the_state_and_the_tables_alike(
    stub: Any, db: Database, loc: str
) -> None:
    contacts = [new_id("contact") for _ in range(3)]
    items = [
        factories.enable(loc, c, channel, note="imported", evidence="list-7")
        for c in contacts
        for channel in (SMS, EMAIL)
    ] + [factories.disable(loc, contacts[0], EMAIL)]
    stub.BulkSetDnd(pb.BulkSetDndRequest(location_id=loc, items=items), timeout=T)
    for c in contacts:
        state, tables = stored(db, loc, c)
        assert state == tables
        assert len(state["blocks"]) == (1 if c == contacts[0] else 2)
    status = stub.GetStatus(factories.get_status(loc, contacts[1]), timeout=T).status
    assert {b.scope.channel for b in status.blocks} == {SMS, EMAIL}
    # An erasure scrubs the blocks' personal fields in the row as in the table.
    stub.EraseContact(
        pb.EraseContactRequest(location_id=loc, contact_id=contacts[1], reference="GDPR-1"),
        timeout=T,
    )
    state, tables = stored(db, loc, contacts[1])
    assert state == tables
    assert {(b["note"], b["evidence"]) for b in state["blocks"]} == {("", "")}
