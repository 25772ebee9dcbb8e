"""Typed readers of the rows the statements of ``queries.sql`` return: each turns one row (or
one statement's rows) into the domain value or record it stands for."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from dnd_server.domain.keywords import KeywordSettings
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    Channel,
    ContactState,
    Direction,
    Reason,
    Source,
    parse_scope,
)
from dnd_server.records import ChangeRow, ContactsRead, CursorPosition, HistoryRow


def to_block(row: asyncpg.Record) -> Block:
    """A row of ``get_blocks``, or a block row (kind ``b``) of ``read_contacts``."""
    return Block(
        direction=Direction(row["direction"]),
        scope=parse_scope(row["scope"]),
        reason=Reason(row["reason"]),
        source=Source(row["source"]),
        actor_id=row["actor_id"],
        note=row["note"],
        evidence=row["evidence"],
        provider_detail=row["provider_detail"],
        since=row["since"],
        address=row["address"],
    )


def to_suppression(row: asyncpg.Record, channel_column: str = "channel") -> AddressSuppression:
    """A row of ``get_suppressions``, or a suppression row (kind ``s``) of ``read_contacts``,
    which carries the channel in its ``scope`` column."""
    return AddressSuppression(
        channel=Channel(row[channel_column]),
        address=row["address"],
        reason=Reason(row["reason"]),
        source=Source(row["source"]),
        contact_id=row["contact_id"],
        actor_id=row["actor_id"],
        note=row["note"],
        evidence=row["evidence"],
        provider_detail=row["provider_detail"],
        since=row["since"],
    )


def to_contacts_read(
    location_id: str, contact_ids: Sequence[str], rows: Sequence[asyncpg.Record]
) -> ContactsRead:
    """The rows of ``read_contacts`` (or ``read_contact``): a head row (kind ``c``) per known
    contact, its block rows (``b``) and the addresses' suppression rows (``s``). Unknown
    contacts come back at version 0; every contact's state carries all the suppressions."""
    heads: dict[str, asyncpg.Record] = {}
    blocks: dict[str, list[Block]] = {}
    suppressions: list[AddressSuppression] = []
    for row in rows:
        kind = row["kind"]
        if kind == "c":
            heads[row["contact_id"]] = row
        elif kind == "b":
            blocks.setdefault(row["contact_id"], []).append(to_block(row))
        else:
            suppressions.append(to_suppression(row, channel_column="scope"))
    shown = tuple(suppressions)
    contacts: dict[str, ContactState] = {}
    last_seqs: dict[str, int] = {}
    for contact_id in contact_ids:
        head = heads.get(contact_id)
        contacts[contact_id] = ContactState(
            location_id=location_id,
            contact_id=contact_id,
            blocks=tuple(blocks.get(contact_id, ())),
            version=head["version"] if head else 0,
            updated_at=head["updated_at"] if head else None,
            suppressions=shown,
        )
        last_seqs[contact_id] = head["last_seq"] if head else 0
    return ContactsRead(contacts=contacts, last_seqs=last_seqs, suppressions=shown)


def to_change(row: asyncpg.Record) -> ChangeRow:
    """A row of ``changes_after``."""
    return ChangeRow(
        seq=row["seq"],
        location_id=row["location_id"],
        contact_id=row["contact_id"],
        direction=Direction(row["direction"]),
        scope=parse_scope(row["scope"]),
        enabled=row["enabled"],
        reason=Reason(row["reason"]),
        source=Source(row["source"]),
        actor_id=row["actor_id"],
        time=row["created_at"],
        outbound=row["outbound"],
        inbound=row["inbound"],
        blocked_channels=tuple(Channel(c) for c in row["blocked_channels"]),
        version=row["version"],
        address=row["address"],
        owner_contact_id=row["owner_contact_id"],
        caller=row["caller"],
    )


def to_history(row: asyncpg.Record) -> HistoryRow:
    """A row of ``list_history`` or ``list_address_history``."""
    return HistoryRow(
        seq=row["seq"],
        time=row["created_at"],
        version=row["version"],
        enabled=row["enabled"],
        direction=Direction(row["direction"]),
        scope=parse_scope(row["scope"]),
        reason=Reason(row["reason"]),
        source=Source(row["source"]),
        actor_id=row["actor_id"],
        note=row["note"],
        evidence=row["evidence"],
        provider_detail=row["provider_detail"],
        address=row["address"],
        contact_id=row["contact_id"],
        owner_contact_id=row["owner_contact_id"],
        caller=row["caller"],
    )


def to_settings(row: asyncpg.Record | None) -> KeywordSettings:
    """The row of ``get_settings``; none for a location that never stored its settings."""
    if row is None:
        return KeywordSettings()
    return KeywordSettings(
        extra_opt_out_words=frozenset(row["extra_opt_out_words"]),
        extra_opt_in_words=frozenset(row["extra_opt_in_words"]),
        detect_revocation_phrases=row["detect_revocation_phrases"],
    )


def to_cursor_position(row: asyncpg.Record | None) -> CursorPosition:
    """The row of ``cursor_position`` (the log head always has one)."""
    assert row is not None
    return CursorPosition(
        head=row["head"], pruned_below=row["pruned_below"], next_expired=bool(row["next_expired"])
    )
