"""Typed readers of the rows the statements of ``queries.sql`` return: each turns one row (or
one statement's rows) into the domain value or record it stands for."""

from __future__ import annotations

import datetime as dt
import functools
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
from dnd_server.domain.keywords import KeywordSettings, LanguageWords
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    ChangeKind,
    Channel,
    ContactState,
    Direction,
    Reason,
    Scope,
    Source,
    parse_scope,
    scope_name,
)
from dnd_server.domain.quiet_hours import QuietHoursSettings, Window
from dnd_server.domain.replies import (
    NOT_CONFIGURED,
    ComplianceReplies,
    ReplyKind,
    ReplyMark,
    ReplyTexts,
)
from dnd_server.lanes import Position, uniform
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


def to_erased_suppression(row: asyncpg.Record) -> AddressSuppression:
    """A row of ``erased_suppressions``: a suppression known by its keyed hash alone (the
    reader sets the address it asked about)."""
    return AddressSuppression(
        channel=Channel(row["channel"]),
        address="",
        reason=Reason(row["reason"]),
        source=Source(row["source"]),
        since=row["since"],
        erased=True,
    )


def to_contacts_read(
    location_id: str, contact_ids: Sequence[str], rows: Sequence[asyncpg.Record]
) -> ContactsRead:
    """The rows of ``read_contacts``: a contact row (kind ``c``) per known contact, with its
    state document, and the addresses' suppression rows (``s``). Unknown contacts come back at
    version 0; every contact's state carries all the suppressions."""
    found: dict[str, asyncpg.Record] = {}
    suppressions: list[AddressSuppression] = []
    for row in rows:
        if row["kind"] == "c":
            found[row["contact_id"]] = row
        else:
            suppressions.append(to_suppression(row))
    return to_contacts(location_id, contact_ids, found, tuple(suppressions))


def to_contacts(
    location_id: str,
    contact_ids: Sequence[str],
    found: Mapping[str, asyncpg.Record],
    suppressions: tuple[AddressSuppression, ...] = (),
) -> ContactsRead:
    """Contact rows by contact id (of ``read_contact``, ``read_contact_batch``, or kind ``c``
    of ``read_contacts``): each contact's version, update time, last change and state
    document. Unknown contacts come back at version 0; every contact's state carries
    ``suppressions``."""
    contacts: dict[str, ContactState] = {}
    last_seqs: dict[str, int] = {}
    for contact_id in contact_ids:
        row = found.get(contact_id)
        if row is None:
            contacts[contact_id] = ContactState(
                location_id=location_id,
                contact_id=contact_id,
                blocks=(),
                version=0,
                suppressions=suppressions,
            )
            last_seqs[contact_id] = 0
            continue
        blocks, consents = to_state(row["state"])
        contacts[contact_id] = ContactState(
            location_id=location_id,
            contact_id=contact_id,
            blocks=blocks,
            version=row["version"],
            updated_at=row["updated_at"],
            suppressions=suppressions,
            consents=consents,
        )
        last_seqs[contact_id] = row["last_seq"]
    return ContactsRead(contacts=contacts, last_seqs=last_seqs, suppressions=suppressions)


def position_of(row: asyncpg.Record, lanes: int) -> Position:
    """A change's position in the whole log: every lane's head its writer saw, its own lane
    at its own number (a change of the single log of earlier versions: its number in every
    lane)."""
    seq: int = row["seq"]
    heads = row["heads"]
    if heads is None:
        return uniform(seq, lanes)
    position = list(heads)
    position[row["lane"]] = seq
    return tuple(position)


def to_change(row: asyncpg.Record, lanes: int) -> ChangeRow:
    """A row of ``changes_after``."""
    # The enums by value from tables: every write is read back by every replica's feed.
    reason = row["reason"]
    return ChangeRow(
        seq=row["seq"],
        location_id=row["location_id"],
        contact_id=row["contact_id"],
        direction=_DIRECTIONS[row["direction"]],
        scope=_SCOPES[row["scope"]],
        enabled=row["enabled"],
        reason=_REASONS[reason] if reason else None,
        source=_SOURCES[row["source"]],
        actor_id=row["actor_id"],
        time=row["created_at"],
        outbound=row["outbound"],
        inbound=row["inbound"],
        blocked_channels=tuple(map(_CHANNELS.__getitem__, row["blocked_channels"])),
        version=row["version"],
        address=row["address"],
        owner_contact_id=row["owner_contact_id"],
        caller=row["caller"],
        kind=_KINDS[row["kind"]],
        consent=_logged_consent(row["consent"], evidence=False),
        lane=row["lane"],
        heads=position_of(row, lanes),
    )


def to_history(row: asyncpg.Record, lanes: int) -> HistoryRow:
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
        heads=position_of(row, lanes),
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
        languages=frozenset(row["languages"]),
        default_language=row["default_language"],
        language_words=tuple(
            LanguageWords(
                str(entry["language"]),
                frozenset(entry.get("opt_out_words", ())),
                frozenset(entry.get("opt_in_words", ())),
            )
            for entry in _json(row["language_words"])
        ),
        share_rcs_sms_opt_outs=row["share_rcs_sms_opt_outs"],
    )


def _json(value: Any) -> Any:
    """A jsonb column as asyncpg returns it (text without a codec)."""
    return json.loads(value) if isinstance(value, str) else value


def language_words_json(words: Sequence[LanguageWords]) -> str:
    return json.dumps(
        [
            {
                "language": w.language,
                "opt_out_words": sorted(w.opt_out_words),
                "opt_in_words": sorted(w.opt_in_words),
            }
            for w in words
        ]
    )


def reply_texts_json(texts: Sequence[ReplyTexts]) -> str:
    return json.dumps(
        [
            {
                "language": t.language,
                "opt_out_confirmation": t.opt_out_confirmation,
                "opt_in_confirmation": t.opt_in_confirmation,
                "help": t.help,
            }
            for t in texts
        ]
    )


def to_compliance_replies(row: asyncpg.Record | None) -> ComplianceReplies:
    """The row of ``get_compliance_replies``; the defaults (not configured) without one."""
    if row is None:
        return NOT_CONFIGURED
    return ComplianceReplies(
        brand_name=row["brand_name"],
        support_contact=row["support_contact"],
        texts=tuple(
            ReplyTexts(
                str(t["language"]),
                t.get("opt_out_confirmation"),
                t.get("opt_in_confirmation"),
                t.get("help"),
            )
            for t in _json(row["texts"])
        ),
    )


def to_reply_mark(row: asyncpg.Record) -> ReplyMark:
    return ReplyMark(row["channel"], ReplyKind(row["kind"]), row["last_at"])


def to_cursor_position(found: Sequence[asyncpg.Record]) -> CursorPosition:
    """The rows of ``cursor_position``: one per lane asked about."""
    return CursorPosition(
        head={row["lane"]: row["head"] for row in found},
        pruned_below={row["lane"]: row["pruned_below"] for row in found},
        expired=frozenset(row["lane"] for row in found if row["next_expired"]),
    )


# A consent as one document (a read's consent rows, the change log's ``consent`` column): its
# fields by name, times in ISO 8601, evidence as an object.


def consent_document(consent: Consent) -> str:
    """The document of ``consent`` (``to_consent`` reads it back)."""
    return json.dumps(consent_fields(consent), separators=(",", ":"))


def consent_fields(consent: Consent) -> dict[str, Any]:
    """The document of ``consent``, not yet serialised."""
    evidence = consent.evidence
    return {
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
    }


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


def to_quiet_hours(row: asyncpg.Record | None) -> QuietHoursSettings:
    """The row of ``get_quiet_hours``; none for a location that never stored its settings."""
    if row is None:
        return QuietHoursSettings()
    start, end = row["window_start"], row["window_end"]
    return QuietHoursSettings(
        informational=row["informational"],
        default_time_zone=row["default_time_zone"],
        window=Window(start, end) if start is not None and end is not None else None,
    )


# A contact's state document (dnd_contacts.state): {"blocks": [...], "consents": [...]}, a key
# left out when it has nothing; each block as the columns of dnd_blocks by name, each consent as
# its document (``consent_fields``). Times in ISO 8601.

_EMPTY_STATE = "{}"
_DIRECTIONS = {d.value: d for d in Direction}
_SCOPES: dict[str, Scope] = {"ALL": None, **{c.value: c for c in Channel}}
_REASONS = {r.value: r for r in Reason}
_SOURCES = {s.value: s for s in Source}
_CHANNELS = {c.value: c for c in Channel}
_KINDS = {k.value: k for k in ChangeKind}


def state_document(blocks: Sequence[Block], consents: Sequence[Consent], now: dt.datetime) -> str:
    """The state document of a contact holding ``blocks`` and ``consents`` (``to_state``
    reads it back); a block without ``since`` counts from ``now``, as its row does."""
    if not blocks and not consents:
        return _EMPTY_STATE
    doc: dict[str, Any] = {}
    if blocks:
        doc["blocks"] = [block_fields(b, now) for b in blocks]
    if consents:
        doc["consents"] = [consent_fields(c) for c in consents]
    return json.dumps(doc, separators=(",", ":"))


def block_fields(block: Block, now: dt.datetime) -> dict[str, Any]:
    """A block as its row of dnd_blocks, by column name."""
    return {
        "direction": block.direction.value,
        "scope": scope_name(block.scope),
        "reason": block.reason.value,
        "source": block.source.value,
        "actor_id": block.actor_id,
        "note": block.note,
        "evidence": block.evidence,
        "provider_detail": block.provider_detail,
        "since": _utc_iso(block.since or now),
        "address": block.address,
        "replied_at": None if block.replied_at is None else _utc_iso(block.replied_at),
    }


def to_state(document: str | Mapping[str, Any]) -> tuple[tuple[Block, ...], tuple[Consent, ...]]:
    """The blocks (in the document's order) and consents (in ``consent_sort_key`` order) of a
    state document (text, as the driver hands jsonb, or parsed). The values are immutable: a
    document read again (the same text) is decoded once."""
    if document == _EMPTY_STATE:
        return (), ()
    if isinstance(document, str):
        return _decoded(document)
    return _decode(document)


@functools.lru_cache(maxsize=4096)
def _decoded(document: str) -> tuple[tuple[Block, ...], tuple[Consent, ...]]:
    return _decode(json.loads(document))


def _decode(doc: Mapping[str, Any]) -> tuple[tuple[Block, ...], tuple[Consent, ...]]:
    blocks = tuple(_block_of(b) for b in doc.get("blocks", ()))
    found = doc.get("consents")
    consents = tuple(sorted(map(to_consent, found), key=consent_sort_key)) if found else ()
    return blocks, consents


def _block_of(doc: Mapping[str, Any]) -> Block:
    replied = doc.get("replied_at")
    return Block(
        direction=_DIRECTIONS[doc["direction"]],
        scope=_SCOPES[doc["scope"]],
        reason=_REASONS[doc["reason"]],
        source=_SOURCES[doc["source"]],
        actor_id=doc.get("actor_id") or "",
        note=doc.get("note") or "",
        evidence=doc.get("evidence") or "",
        provider_detail=doc.get("provider_detail") or "",
        since=_time(doc["since"]),
        address=doc.get("address") or "",
        replied_at=_time(replied) if replied else None,
    )


def _utc_iso(when: dt.datetime) -> str:
    return (when if when.tzinfo is dt.UTC else when.astimezone(dt.UTC)).isoformat()
