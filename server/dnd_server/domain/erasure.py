"""Erasure of a contact's personal data (GDPR Art. 17), written to read like the rule.

- Erased: what identifies or describes the person: the actor ids, notes, evidence, provider
  detail and addresses of the contact's blocks; its consent records (their proof holds IP
  addresses, user agents, recordings); the same columns of its history and of the history of
  the addresses it names; the address suppressions its events set (an address is personal
  data); the personal data of stored idempotent answers.
- Kept: what keeps the opt-out honoured. The contact's blocks stay (without their personal
  fields), so the contact id still reads as blocked where it was. Each address the contact
  had suppressed, each block's address of an opt-out reason, and each address the request
  names on a channel the contact had opted out of, is kept as a suppression of a keyed hash
  of the address (``address_digest``) with its channel, reason, source and date: a send
  checked with that address is denied whichever contact it is checked for, so an erased
  person imported again under a new contact id is still never messaged. The hash is keyed
  with the deployment's secret and the location, so it neither reveals the address nor links
  one person across locations.
- The history rows stay where they are, scrubbed rather than deleted: the change log stays
  gapless and every cursor keeps its place.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

from dnd_server.domain.addresses import PHONE_CHANNELS
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    Channel,
    ContactState,
    Reason,
    Source,
)
from dnd_server.domain.provider_events import SUPPRESSING_REASONS

KEY_BYTES = 32
DIGEST_BYTES = 32
REFERENCE_MAX = 128

# The channels of an address the request names: a phone number is an address on each phone
# channel, an email address on EMAIL.
PHONE_ADDRESS_CHANNELS: tuple[Channel, ...] = tuple(c for c in Channel if c in PHONE_CHANNELS)
EMAIL_ADDRESS_CHANNELS: tuple[Channel, ...] = (Channel.EMAIL,)

# A reference is kept: it must not carry the person's contact data.
_EMAIL_LIKE = re.compile(r"[^@\s]+@[^@\s]+")
# A phone number as people write one: international ("+" and at least 7 digits, or "00" and a
# country code), grouped as a national number ("(415) 555-0123", "415.555.0123"), or 10 to 15
# digits in a row ("4155550123"). Ticket numbers are digits too: one attached to its prefix
# ("REQ-4155550123", "#4155550123") or shorter than a phone number passes.
_PHONE_LIKE = re.compile(
    r"\+\s*(?:\d[\s().-]*){7,}"
    r"|(?<![\w#-])00\d{1,3}(?:[\s.-]?\d){6,}"
    r"|(?<![\w#-])\(\d{2,5}\)[\s.-]*\d{3,4}[\s.-]?\d{3,4}(?!\d)"
    r"|(?<![\w#-])\d{2,5}[\s.-]\d{3,4}[\s.-]\d{4}(?!\d)"
    r"|(?<![\w#-])\d{10,15}(?!\d)"
)


def address_digest(key: bytes, location_id: str, channel: Channel, address: str) -> bytes:
    """The keyed hash an erased address is known by in ``location_id`` (BLAKE2b keyed with
    the deployment's secret; the location and channel are part of what is hashed)."""
    if len(key) != KEY_BYTES:
        raise ValueError(f"an erasure key has {KEY_BYTES} bytes, got {len(key)}")
    data = "\x1f".join((location_id, channel.value, address)).encode()
    return hashlib.blake2b(
        data, digest_size=DIGEST_BYTES, key=key, person=b"dnd-erased-addr"
    ).digest()


def validate_reference(reference: str) -> None:
    """The erasure's reference (a ticket id, a request number) is required, bounded, and holds
    no email address or phone number: it is kept after the erasure."""
    if not reference.strip():
        raise InvalidArgument.one(
            "reference",
            f"required: the erasure request's ticket or reference (1 to {REFERENCE_MAX} "
            "characters)",
        )
    if len(reference) > REFERENCE_MAX:
        raise InvalidArgument.one(
            "reference", f"{len(reference)} characters; at most {REFERENCE_MAX} allowed"
        )
    if _EMAIL_LIKE.search(reference) or _PHONE_LIKE.search(reference):
        raise InvalidArgument.one(
            "reference",
            "must not hold an email address or a phone number (it is kept after the "
            "erasure): give the ticket's id",
        )


@dataclass(frozen=True, slots=True)
class KeptSuppression:
    """An opt-out of an erased address, kept by the address's keyed hash."""

    channel: Channel
    address: str
    reason: Reason
    source: Source
    since: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ErasurePlan:
    """What an erasure does to the contact's locked state."""

    # The contact's blocks as kept: without actor, note, evidence, provider detail, address.
    blocks: tuple[Block, ...]
    # How many of them held personal data.
    blocks_scrubbed: int
    # The plaintext suppressions to delete (the contact's own, and those of named addresses).
    suppressions: tuple[AddressSuppression, ...]
    # The opt-outs kept by keyed hash, one per (channel, address, reason).
    kept: tuple[KeptSuppression, ...]
    consents_erased: int


def scrubbed(block: Block, now: dt.datetime) -> Block:
    """``block`` without its personal fields (what it is, who set it and when stay). An
    opt-out's one compliance reply goes only to the address it came from: with the address
    erased, a reply not yet sent is spent at ``now`` (an opt-out without an address would
    allow it to any address)."""
    replied = block.replied_at
    if block.address and replied is None:
        replied = now
    return replace(
        block,
        actor_id="",
        note="",
        evidence="",
        provider_detail="",
        address="",
        replied_at=replied,
    )


def plan_erasure(
    state: ContactState,
    suppressions: Iterable[AddressSuppression],
    named: Sequence[tuple[Channel, str]],
    now: dt.datetime,
) -> ErasurePlan:
    """The erasure of ``state``'s contact at ``now`` (the database's clock).
    ``suppressions``: the plaintext suppressions the contact's events set, and those of the
    ``named`` (channel, address) pairs, whoever set them (both are the person's addresses)."""
    blocks = tuple(scrubbed(b, now) for b in state.blocks)
    changed = sum(1 for before, after in zip(state.blocks, blocks, strict=True) if before != after)
    removed = tuple(dict.fromkeys(suppressions))
    kept: dict[tuple[Channel, str, Reason], KeptSuppression] = {}

    def keep(candidate: KeptSuppression) -> None:
        key = (candidate.channel, candidate.address, candidate.reason)
        earlier = kept.get(key)
        if earlier is None or _earlier(candidate.since, earlier.since):
            kept[key] = candidate

    for s in removed:
        keep(KeptSuppression(s.channel, s.address, s.reason, s.source, s.since))
    opt_outs = [b for b in state.blocks if b.reason in SUPPRESSING_REASONS and b.scope is not None]
    for b in opt_outs:
        if b.address and b.scope is not None:
            keep(KeptSuppression(b.scope, b.address, b.reason, b.source, b.since))
    for channel, address in named:
        for b in opt_outs:
            if b.scope is channel:
                keep(KeptSuppression(channel, address, b.reason, b.source, b.since))
    return ErasurePlan(
        blocks=blocks,
        blocks_scrubbed=changed,
        suppressions=removed,
        kept=tuple(sorted(kept.values(), key=lambda k: (k.channel, k.address, k.reason))),
        consents_erased=len(state.consents),
    )


def _earlier(a: dt.datetime | None, b: dt.datetime | None) -> bool:
    if a is None:
        return False
    return b is None or a < b


def named_addresses(phones: Iterable[str], emails: Iterable[str]) -> list[tuple[Channel, str]]:
    """The (channel, address) pairs of the normalised addresses a request names: each phone
    number on every phone channel, each email address on EMAIL."""
    pairs = [(c, p) for p in phones for c in PHONE_ADDRESS_CHANNELS]
    pairs += [(c, e) for e in emails for c in EMAIL_ADDRESS_CHANNELS]
    return sorted(set(pairs))


def explain_erasure(changed: bool, already_erased: bool, counts: ErasureCounts) -> str:
    """One line saying what an erasure did."""
    if not changed:
        if already_erased:
            return "already erased: nothing personal was written since"
        return "nothing to erase: the contact holds no personal data"
    parts = [
        _count(counts.blocks_scrubbed, "block", "blocks") + " scrubbed",
        _count(counts.consents_erased, "consent record", "consent records") + " deleted",
        _count(counts.suppressions_hashed, "suppression", "suppressions") + " kept by keyed hash",
        _count(counts.history_entries_scrubbed, "history entry", "history entries") + " scrubbed",
        _count(counts.idempotent_answers_scrubbed, "stored answer", "stored answers") + " scrubbed",
    ]
    return "erased: " + ", ".join(parts) + "; the contact's blocks stay"


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


@dataclass(frozen=True, slots=True)
class ErasureCounts:
    blocks_scrubbed: int = 0
    consents_erased: int = 0
    suppressions_hashed: int = 0
    history_entries_scrubbed: int = 0
    idempotent_answers_scrubbed: int = 0

    @property
    def any(self) -> bool:
        return any(
            (
                self.blocks_scrubbed,
                self.consents_erased,
                self.suppressions_hashed,
                self.history_entries_scrubbed,
                self.idempotent_answers_scrubbed,
            )
        )


@dataclass(frozen=True, slots=True)
class ErasureDone:
    """What an erasure did (``WriteResult.detail`` of its write)."""

    counts: ErasureCounts
    # Whether anything personal was erased (and the erasure change logged).
    changed: bool
    # The contact had been erased before.
    already_erased: bool

    @property
    def explanation(self) -> str:
        return explain_erasure(self.changed, self.already_erased, self.counts)
