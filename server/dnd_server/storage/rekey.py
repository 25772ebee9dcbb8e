"""Stored addresses brought to the keys ``domain.addresses`` gives them now.

When the normalisation of addresses learns a spelling (an email's NFD letters, its ``xn--``
domain, a ``mailto:`` link, a zero-width space), addresses stored under the old keys must move
to the new ones, or an opt-out stored as ``jose\u0301@example.com`` would not be found by a check
of ``jos\u00e9@example.com``. Run inside a migration's transaction (migration 14), before any
server serves.

Only rows whose address could change are read (``_CANDIDATE``): phone numbers were E.164
already, and an email of plain lower-case ASCII without an ``xn--`` label keeps its key. Two
rows landing on one key are merged the way the service merges them live: an address two
contacts' events suppressed is shared (``contact_id`` ''), and of two consents the one
updated last stands. An address the rules now refuse is left as it was: no check can name it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import asyncpg
import structlog

from dnd_server.domain.addresses import PHONE_CHANNELS, normalize_address
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Channel
from dnd_server.storage.sql import QUERIES

log = structlog.get_logger("dnd_server.rekey")

_PHONES = ", ".join(f"'{c.value}'" for c in sorted(PHONE_CHANNELS))
# An address whose key may differ from what is stored, in a table whose channel column is
# {channel}: anything beyond printable ASCII, or an email that is not plain lower-case ASCII
# or holds an A-label.
_CANDIDATE = (
    "{address} <> '' AND {channel} NOT IN (" + _PHONES + ") AND ("
    r"{address} ~ '[^\x21-\x7e]' OR ({address} LIKE '%@%' AND ("
    r"{address} !~ '^[a-z0-9._+!#$%&''*/=?^`{{|}}~-]+@[a-z0-9-]+(\.[a-z0-9-]+)*$'"
    " OR {address} LIKE '%xn--%')))"
)


def _candidates(address: str, channel: str) -> str:
    return _CANDIDATE.format(address=address, channel=channel)


@dataclass
class Rekeyed:
    """What a run changed: rows given a new key, rows merged into another, per table."""

    moved: dict[str, int] = field(default_factory=dict)
    merged: dict[str, int] = field(default_factory=dict)
    # Old spellings' suppressions the migration had copied to their keys, dropped.
    dropped: int = 0
    refused: int = 0
    contacts: set[tuple[str, str]] = field(default_factory=set)

    def count(self, table: str, merged: bool = False) -> None:
        counts = self.merged if merged else self.moved
        counts[table] = counts.get(table, 0) + 1


def new_key(channel_text: str, address: str) -> str | None:
    """The key ``address`` has now on the channel a row's channel (or scope) column names;
    None when it keeps its key. Raises InvalidArgument when the rules now refuse it."""
    if channel_text in Channel.__members__:
        channel = Channel(channel_text)
    elif "@" in address:  # a block of every channel, set by an email's event
        channel = Channel.EMAIL
    else:
        return None
    if channel in PHONE_CHANNELS:
        return None
    key = normalize_address(channel, address)
    return key if key != address else None


async def rekey_addresses(conn: asyncpg.Connection, migrating: bool = False) -> Rekeyed:
    """Move every stored address to its key. Each row moves in a transaction of its own (a
    savepoint inside the migration's), under the locks the service's writers take: the
    addresses' advisory lock for a suppression, the contact's row for its consents and
    blocks (whose state document is built again with them). So it can run again beside
    serving servers (``dnd-server rekey``).

    ``migrating`` (migration 14): a suppression is copied to its key, not moved, and the copy
    recorded (``dnd_rekeyed_suppressions``): servers of the version before, still serving in a
    rolling update, look for it under its old spelling. ``dnd-server rekey`` after the update
    drops those old rows, and moves the ones such servers wrote meanwhile. A move writes no
    change to the log: servers that cached the key hear nothing of it until they restart."""
    done = Rekeyed()
    await _suppressions(conn, done, migrating)
    await _contact_rows(conn, done, _CONSENTS)
    await _contact_rows(conn, done, _BLOCKS)
    await _changes(conn, done)
    log.info(
        "addresses_rekeyed",
        moved=done.moved,
        merged=done.merged,
        dropped=done.dropped,
        refused=done.refused,
        contacts=len(done.contacts),
    )
    return done


_SUPPRESSION = "location_id = $1 AND channel = $2 AND address = $3 AND reason = $4"


async def _suppressions(conn: asyncpg.Connection, done: Rekeyed, migrating: bool) -> None:
    rows = await conn.fetch(
        "SELECT location_id, channel, address, reason FROM dnd_address_suppressions WHERE "
        + _candidates("address", "channel")
    )
    for row in rows:
        key = _key_of(row["channel"], row["address"], done)
        if key is None:
            continue
        loc, channel, old, reason = (
            row["location_id"],
            row["channel"],
            row["address"],
            row["reason"],
        )
        async with conn.transaction():
            # The writers' lock, in their order (one statement sorts as theirs does).
            await conn.execute(QUERIES["lock_addresses"], loc, [channel] * 2, [old, key])
            pk = (loc, channel, old, reason)
            moving = await conn.fetchrow(
                f"SELECT contact_id, since FROM dnd_address_suppressions WHERE {_SUPPRESSION}",
                *pk,
            )
            if moving is None:  # cleared meanwhile
                continue
            copied = await conn.fetchval(
                f"DELETE FROM dnd_rekeyed_suppressions WHERE {_SUPPRESSION} RETURNING true", *pk
            )
            if copied and not migrating:
                # Copied by the migration, kept for the servers before it: its key holds it
                # (or held it until a clear there, which must stand).
                await conn.execute(
                    f"DELETE FROM dnd_address_suppressions WHERE {_SUPPRESSION}", *pk
                )
                done.dropped += 1
                continue
            merged = await conn.execute(
                "UPDATE dnd_address_suppressions"
                " SET contact_id = CASE WHEN contact_id = $5 THEN contact_id ELSE '' END,"
                f" since = least(since, $6) WHERE {_SUPPRESSION}",
                loc,
                channel,
                key,
                reason,
                moving["contact_id"],
                moving["since"],
            )
            if merged != "UPDATE 1":
                await conn.execute(
                    "INSERT INTO dnd_address_suppressions (location_id, channel, address, reason,"
                    " source, contact_id, actor_id, note, evidence, provider_detail, since)"
                    " SELECT location_id, channel, $5, reason, source, contact_id, actor_id, note,"
                    " evidence, provider_detail, since FROM dnd_address_suppressions"
                    f" WHERE {_SUPPRESSION}",
                    *pk,
                    key,
                )
            if migrating:
                await conn.execute(
                    "INSERT INTO dnd_rekeyed_suppressions (location_id, channel, address, reason)"
                    " VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                    *pk,
                )
            else:
                await conn.execute(
                    f"DELETE FROM dnd_address_suppressions WHERE {_SUPPRESSION}", *pk
                )
        done.count("dnd_address_suppressions", merged=merged == "UPDATE 1")


_CONSENTS = "dnd_consents"
_BLOCKS = "dnd_blocks"


_MoveRows = Callable[[asyncpg.Connection, Rekeyed, str, str], Awaitable[bool]]


async def _contact_rows(conn: asyncpg.Connection, done: Rekeyed, table: str) -> None:
    """A table of contacts' rows (consents, blocks): each contact's moved under its lock, its
    state document built again in the same transaction."""
    channel_column, move = _CONTACT_TABLES[table]
    rows = await conn.fetch(
        f"SELECT DISTINCT location_id, contact_id FROM {table} WHERE "
        + _candidates("address", channel_column)
    )
    for row in rows:
        loc, contact = row["location_id"], row["contact_id"]
        async with conn.transaction():
            await conn.execute(
                "SELECT 1 FROM dnd_contacts WHERE location_id = $1 AND contact_id = $2 FOR UPDATE",
                loc,
                contact,
            )
            moved = await move(conn, done, loc, contact)
            if moved:
                await conn.execute(
                    "UPDATE dnd_contacts SET state = dnd_contact_state(location_id, contact_id)"
                    " WHERE location_id = $1 AND contact_id = $2",
                    loc,
                    contact,
                )
                done.contacts.add((loc, contact))


async def _consents_of(conn: asyncpg.Connection, done: Rekeyed, loc: str, contact: str) -> bool:
    rows = await conn.fetch(
        "SELECT channel, purpose, address, status, updated_at FROM dnd_consents "
        "WHERE location_id = $1 AND contact_id = $2 AND " + _candidates("address", "channel"),
        loc,
        contact,
    )
    pk = "location_id = $1 AND contact_id = $2 AND channel = $3 AND purpose = $4 AND address = $5"
    moved = False
    for row in rows:
        key = _key_of(row["channel"], row["address"], done)
        if key is None:
            continue
        at = (loc, contact, row["channel"], row["purpose"])
        other = await conn.fetchrow(
            f"SELECT status, updated_at FROM dnd_consents WHERE {pk}", *at, key
        )
        if other is not None and _stands(other, over=row):
            # The consent under the key is the later word (or a revoke as late): it stays.
            await conn.execute(f"DELETE FROM dnd_consents WHERE {pk}", *at, row["address"])
        else:
            if other is not None:
                await conn.execute(f"DELETE FROM dnd_consents WHERE {pk}", *at, key)
            await conn.execute(
                f"UPDATE dnd_consents SET address = $6 WHERE {pk}", *at, row["address"], key
            )
        done.count(_CONSENTS, merged=other is not None)
        moved = True
    return moved


def _stands(kept: asyncpg.Record, over: asyncpg.Record) -> bool:
    """Whether consent ``kept`` stands over ``over`` when their addresses meet: the one
    updated last; of two as late, a revoke (the contact's no is never lost to a tie)."""
    if kept["updated_at"] != over["updated_at"]:
        return bool(kept["updated_at"] > over["updated_at"])
    return bool(kept["status"] == "REVOKED" or over["status"] != "REVOKED")


async def _blocks_of(conn: asyncpg.Connection, done: Rekeyed, loc: str, contact: str) -> bool:
    rows = await conn.fetch(
        "SELECT direction, scope, reason, address FROM dnd_blocks "
        "WHERE location_id = $1 AND contact_id = $2 AND " + _candidates("address", "scope"),
        loc,
        contact,
    )
    moved = False
    for row in rows:
        key = _key_of(row["scope"], row["address"], done)
        if key is None:
            continue
        await conn.execute(
            "UPDATE dnd_blocks SET address = $6 WHERE location_id = $1 AND contact_id = $2 "
            "AND direction = $3 AND scope = $4 AND reason = $5",
            loc,
            contact,
            row["direction"],
            row["scope"],
            row["reason"],
            key,
        )
        done.count(_BLOCKS)
        moved = True
    return moved


# Each table of contacts' rows: the column naming its channel, and how a contact's move.
_CONTACT_TABLES: dict[str, tuple[str, _MoveRows]] = {
    _CONSENTS: ("channel", _consents_of),
    _BLOCKS: ("scope", _blocks_of),
}


async def _changes(conn: asyncpg.Connection, done: Rekeyed) -> None:
    """The log's address column, by which an address's history is listed (its consent
    documents keep the address as it was written)."""
    rows = await conn.fetch(
        "SELECT lane, seq, scope, address FROM dnd_changes WHERE " + _candidates("address", "scope")
    )
    for row in rows:
        key = _key_of(row["scope"], row["address"], done)
        if key is None:
            continue
        await conn.execute(
            "UPDATE dnd_changes SET address = $3 WHERE lane = $1 AND seq = $2",
            row["lane"],
            row["seq"],
            key,
        )
        done.count("dnd_changes")


def _key_of(channel: str, address: str, done: Rekeyed) -> str | None:
    try:
        return new_key(channel, address)
    except InvalidArgument:
        done.refused += 1  # left as it is: no check can name it
        return None
