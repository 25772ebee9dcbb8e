"""Typed readers of the rows the statements of ``queries.sql`` return: each turns one row (or
one statement's rows) into the domain value or record it stands for."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import fields, replace
from typing import Any

import asyncpg

from dnd_server.domain.consent import (
    DEFAULT_DOUBLE_OPT_IN_WINDOW,
    ChannelPolicy,
    Consent,
    ConsentEvidence,
    ConsentKind,
    ConsentMethod,
    ConsentPolicy,
    ConsentPurpose,
    ConsentStatus,
    consent_sort_key,
)
from dnd_server.domain.keywords import KeywordSettings
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    ChangeKind,
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
        replied_at=row["replied_at"],
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
    contact, its block rows (``b``) and consent rows (``k``) and the addresses' suppression
    rows (``s``). Unknown
    contacts come back at version 0; every contact's state carries all the suppressions."""
    heads: dict[str, asyncpg.Record] = {}
    blocks: dict[str, list[Block]] = {}
    consents: dict[str, list[Consent]] = {}
    suppressions: list[AddressSuppression] = []
    for row in rows:
        kind = row["kind"]
        if kind == "c":
            heads[row["contact_id"]] = row
        elif kind == "b":
            blocks.setdefault(row["contact_id"], []).append(to_block(row))
        elif kind == "k":
            consents.setdefault(row["contact_id"], []).append(to_consent(row["consent"]))
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
            consents=tuple(sorted(consents.get(contact_id, ()), key=consent_sort_key)),
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
        reason=Reason(row["reason"]) if row["reason"] else None,
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
        kind=ChangeKind(row["kind"]),
        consent=_logged_consent(row["consent"], evidence=False),
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
        reason=Reason(row["reason"]) if row["reason"] else None,
        source=Source(row["source"]),
        actor_id=row["actor_id"],
        note=row["note"],
        evidence=row["evidence"],
        provider_detail=row["provider_detail"],
        address=row["address"],
        contact_id=row["contact_id"],
        owner_contact_id=row["owner_contact_id"],
        caller=row["caller"],
        kind=ChangeKind(row["kind"]),
        consent=_logged_consent(row["consent"], evidence=True),
    )


def to_consent_policy(rows: Sequence[asyncpg.Record]) -> ConsentPolicy:
    """The rows of ``get_consent_policy``: one per channel requiring consent (or one without
    a channel), each carrying the location's double opt-in window (NULL: the default)."""
    channels = {
        Channel(row["channel"]): ChannelPolicy(
            marketing=row["require_marketing"], informational=row["require_informational"]
        )
        for row in rows
        if row["channel"] is not None
    }
    seconds = rows[0]["window_seconds"] if rows else None
    window = dt.timedelta(seconds=seconds) if seconds is not None else DEFAULT_DOUBLE_OPT_IN_WINDOW
    return ConsentPolicy(channels=channels, double_opt_in_window=window)


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


# A consent as one document (a read's consent rows, the change log's ``consent`` column): its
# fields by name, times in ISO 8601, evidence as an object.


def consent_document(consent: Consent) -> str:
    """The document of ``consent`` (``to_consent`` reads it back)."""
    evidence = consent.evidence
    return json.dumps(
        {
            "channel": consent.channel.value,
            "purpose": consent.purpose.value,
            "address": consent.address,
            "method": consent.method.value,
            "kind": consent.kind.value,
            "status": consent.status.value,
            "captured_at": consent.captured_at.isoformat(),
            "source": consent.source.value,
            "actor_id": consent.actor_id,
            "evidence": {name: getattr(evidence, name) for name in _EVIDENCE_FIELDS},
            "expires_at": _iso_or_none(consent.expires_at),
            "confirm_by": _iso_or_none(consent.confirm_by),
            "revoked_at": _iso_or_none(consent.revoked_at),
            "revoked_by": consent.revoked_by,
            "consent_source": consent.consent_source,
        },
        separators=(",", ":"),
    )


def to_consent(document: str | Mapping[str, Any]) -> Consent:
    """A consent from its document (text, as the driver hands jsonb, or parsed)."""
    doc = json.loads(document) if isinstance(document, str) else document
    evidence = doc.get("evidence") or {}
    return Consent(
        channel=Channel(doc["channel"]),
        purpose=ConsentPurpose(doc["purpose"]),
        method=ConsentMethod(doc["method"]),
        kind=ConsentKind(doc["kind"]),
        status=ConsentStatus(doc["status"]),
        captured_at=_time(doc["captured_at"]),
        source=Source(doc["source"]),
        address=doc.get("address") or "",
        actor_id=doc.get("actor_id") or "",
        evidence=ConsentEvidence(
            **{name: str(evidence.get(name) or "") for name in _EVIDENCE_FIELDS}
        ),
        expires_at=_time_or_none(doc.get("expires_at")),
        confirm_by=_time_or_none(doc.get("confirm_by")),
        revoked_at=_time_or_none(doc.get("revoked_at")),
        revoked_by=doc.get("revoked_by") or "",
        consent_source=doc.get("consent_source") or "",
    )


def evidence_document(evidence: ConsentEvidence) -> str:
    """The ``evidence`` column of a consent row."""
    return json.dumps({name: getattr(evidence, name) for name in _EVIDENCE_FIELDS})


_EVIDENCE_FIELDS = tuple(f.name for f in fields(ConsentEvidence))


def _logged_consent(document: str | None, evidence: bool) -> Consent | None:
    if document is None:
        return None
    consent = to_consent(document)
    return consent if evidence else replace(consent, evidence=ConsentEvidence())


def _time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).astimezone(dt.UTC)


def _time_or_none(text: str | None) -> dt.datetime | None:
    return _time(text) if text else None


def _iso_or_none(when: dt.datetime | None) -> str | None:
    return when.isoformat() if when is not None else None
