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

from dataclasses import dataclass, field

import asyncpg
import structlog

from dnd_server.domain.addresses import PHONE_CHANNELS, normalize_address
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Channel

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


async def rekey_addresses(conn: asyncpg.Connection) -> Rekeyed:
    done = Rekeyed()
    await _suppressions(conn, done)
    await _consents(conn, done)
    await _blocks(conn, done)
    await _changes(conn, done)
    if done.contacts:
        await conn.execute(
            """
            UPDATE dnd_contacts c SET state = dnd_contact_state(c.location_id, c.contact_id)
            FROM unnest($1::text[], $2::text[]) AS k(location_id, contact_id)
            WHERE c.location_id = k.location_id AND c.contact_id = k.contact_id
            """,
            [loc for loc, _ in done.contacts],
            [contact for _, contact in done.contacts],
        )
    log.info(
        "addresses_rekeyed",
        moved=done.moved,
        merged=done.merged,
        refused=done.refused,
        contacts=len(done.contacts),
    )
    return done


async def _suppressions(conn: asyncpg.Connection, done: Rekeyed) -> None:
    rows = await conn.fetch(
        "SELECT location_id, channel, address, reason, contact_id, since "
        "FROM dnd_address_suppressions WHERE " + _candidates("address", "channel")
    )
    for row in rows:
        key = _key_of(row["channel"], row["address"], done)
        if key is None:
            continue
        old = (row["location_id"], row["channel"], row["address"], row["reason"])
        merged = await conn.execute(
            """
            UPDATE dnd_address_suppressions
            SET contact_id = CASE WHEN contact_id = $5 THEN contact_id ELSE '' END,
                since = least(since, $6)
            WHERE location_id = $1 AND channel = $2 AND address = $3 AND reason = $4
            """,
            row["location_id"],
            row["channel"],
            key,
            row["reason"],
            row["contact_id"],
            row["since"],
        )
        if merged == "UPDATE 1":
            await conn.execute(
                "DELETE FROM dnd_address_suppressions "
                "WHERE location_id = $1 AND channel = $2 AND address = $3 AND reason = $4",
                *old,
            )
            done.count("dnd_address_suppressions", merged=True)
        else:
            await conn.execute(
                "UPDATE dnd_address_suppressions SET address = $5 "
                "WHERE location_id = $1 AND channel = $2 AND address = $3 AND reason = $4",
                *old,
                key,
            )
            done.count("dnd_address_suppressions")


async def _consents(conn: asyncpg.Connection, done: Rekeyed) -> None:
    rows = await conn.fetch(
        "SELECT location_id, contact_id, channel, purpose, address, updated_at "
        "FROM dnd_consents WHERE " + _candidates("address", "channel")
    )
    for row in rows:
        key = _key_of(row["channel"], row["address"], done)
        if key is None:
            continue
        loc, contact, channel, purpose = (
            row["location_id"],
            row["contact_id"],
            row["channel"],
            row["purpose"],
        )
        pk = "location_id = $1 AND contact_id = $2 AND channel = $3 AND purpose = $4"
        other = await conn.fetchval(
            f"SELECT updated_at FROM dnd_consents WHERE {pk} AND address = $5",
            loc,
            contact,
            channel,
            purpose,
            key,
        )
        if other is not None and other > row["updated_at"]:
            # The consent under the new key is the later word: the old spelling's goes.
            await conn.execute(
                f"DELETE FROM dnd_consents WHERE {pk} AND address = $5",
                loc,
                contact,
                channel,
                purpose,
                row["address"],
            )
        else:
            if other is not None:
                await conn.execute(
                    f"DELETE FROM dnd_consents WHERE {pk} AND address = $5",
                    loc,
                    contact,
                    channel,
                    purpose,
                    key,
                )
            await conn.execute(
                f"UPDATE dnd_consents SET address = $6 WHERE {pk} AND address = $5",
                loc,
                contact,
                channel,
                purpose,
                row["address"],
                key,
            )
        done.count("dnd_consents", merged=other is not None)
        done.contacts.add((loc, contact))


async def _blocks(conn: asyncpg.Connection, done: Rekeyed) -> None:
    rows = await conn.fetch(
        "SELECT location_id, contact_id, direction, scope, reason, address "
        "FROM dnd_blocks WHERE " + _candidates("address", "scope")
    )
    for row in rows:
        key = _key_of(row["scope"], row["address"], done)
        if key is None:
            continue
        await conn.execute(
            "UPDATE dnd_blocks SET address = $6 WHERE location_id = $1 AND contact_id = $2 "
            "AND direction = $3 AND scope = $4 AND reason = $5",
            row["location_id"],
            row["contact_id"],
            row["direction"],
            row["scope"],
            row["reason"],
            key,
        )
        done.count("dnd_blocks")
        done.contacts.add((row["location_id"], row["contact_id"]))


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
