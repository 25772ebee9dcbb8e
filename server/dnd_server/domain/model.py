"""Domain types of the DND model: channels, directions, reasons, sources, blocks."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dnd_server.domain.consent import Consent
    from dnd_server.domain.replies import ReplyMark


class Channel(enum.StrEnum):
    CALL = "CALL"
    EMAIL = "EMAIL"
    SMS = "SMS"
    WHATSAPP = "WHATSAPP"
    FACEBOOK = "FACEBOOK"
    GMB = "GMB"
    # RCS business messaging (to a phone number).
    RCS = "RCS"


ALL_CHANNELS: tuple[Channel, ...] = tuple(Channel)

# Inbound DND blocks these channels (one switch for both).
INBOUND_CHANNELS: frozenset[Channel] = frozenset({Channel.CALL, Channel.SMS})


class Direction(enum.StrEnum):
    OUTBOUND = "OUTBOUND"
    INBOUND = "INBOUND"


class Reason(enum.StrEnum):
    MANUAL = "MANUAL"
    SMS_OPT_OUT_KEYWORD = "SMS_OPT_OUT_KEYWORD"
    SMS_CARRIER_PERMANENT = "SMS_CARRIER_PERMANENT"
    SMS_CARRIER_TEMPORARY = "SMS_CARRIER_TEMPORARY"
    EMAIL_HARD_BOUNCE = "EMAIL_HARD_BOUNCE"
    EMAIL_GENERIC_FAILURE = "EMAIL_GENERIC_FAILURE"
    EMAIL_SUPPRESS_BOUNCE = "EMAIL_SUPPRESS_BOUNCE"
    EMAIL_SUPPRESS_UNSUBSCRIBE = "EMAIL_SUPPRESS_UNSUBSCRIBE"
    EMAIL_SUPPRESS_COMPLAINT = "EMAIL_SUPPRESS_COMPLAINT"
    EMAIL_SPAM_COMPLAINT = "EMAIL_SPAM_COMPLAINT"
    EMAIL_UNSUBSCRIBE_LINK = "EMAIL_UNSUBSCRIBE_LINK"
    # Marketing-only opt-outs: they deny MARKETING sends only (domain/consent.py).
    MARKETING_OPT_OUT = "MARKETING_OPT_OUT"
    WHATSAPP_MARKETING_OPT_OUT = "WHATSAPP_MARKETING_OPT_OUT"
    EMAIL_MARKETING_UNSUBSCRIBE = "EMAIL_MARKETING_UNSUBSCRIBE"
    # An opt-out keyword (or revocation phrase) on WHATSAPP or RCS: SMS_OPT_OUT_KEYWORD's twin.
    KEYWORD_OPT_OUT = "KEYWORD_OPT_OUT"


class Source(enum.StrEnum):
    USER = "USER"
    WORKFLOW = "WORKFLOW"
    CONTACT = "CONTACT"
    SYSTEM = "SYSTEM"
    SUPPORT = "SUPPORT"


class Summary(enum.StrEnum):
    OFF = "OFF"
    PARTIAL = "PARTIAL"
    ON = "ON"


# A block's scope: one channel, or None for all channels.
Scope = Channel | None

ALL = None


def scope_name(scope: Scope) -> str:
    """The scope as stored and shown: a channel name or ``ALL``."""
    return "ALL" if scope is None else scope.value


def parse_scope(name: str) -> Scope:
    return None if name == "ALL" else Channel(name)


@dataclass(frozen=True, slots=True)
class BlockKey:
    """What makes a block unique: at most one active block per key."""

    direction: Direction
    scope: Scope
    reason: Reason


@dataclass(frozen=True, slots=True)
class Block:
    """One active DND block of a contact."""

    direction: Direction
    scope: Scope
    reason: Reason
    source: Source
    actor_id: str = ""
    note: str = ""
    evidence: str = ""
    provider_detail: str = ""
    since: dt.datetime | None = None
    # The address the event that set the block carried ("" if none).
    address: str = ""
    # An opt-out's one compliance reply was allowed then (None: not yet).
    replied_at: dt.datetime | None = None

    @property
    def key(self) -> BlockKey:
        return BlockKey(self.direction, self.scope, self.reason)

    def covers(self, direction: Direction, channel: Channel) -> bool:
        """Whether this block stops ``channel`` in ``direction``."""
        if self.direction is not direction:
            return False
        if direction is Direction.INBOUND:
            return channel in INBOUND_CHANNELS
        return self.scope is None or self.scope is channel


@dataclass(frozen=True, slots=True)
class SuppressionKey:
    channel: Channel
    address: str
    reason: Reason


@dataclass(frozen=True, slots=True)
class AddressSuppression:
    """An address blocked within a location, whichever contact holds it."""

    channel: Channel
    address: str
    reason: Reason
    source: Source
    contact_id: str = ""
    actor_id: str = ""
    note: str = ""
    evidence: str = ""
    provider_detail: str = ""
    since: dt.datetime | None = None
    # Kept of an erased contact's address (domain/erasure.py): known only by its keyed hash,
    # ``address`` is the one the read named; no contact, actor, note, evidence or detail.
    erased: bool = False

    @property
    def key(self) -> SuppressionKey:
        return SuppressionKey(self.channel, self.address, self.reason)

    @property
    def direction(self) -> Direction:
        return Direction.OUTBOUND

    @property
    def scope(self) -> Scope:
        return self.channel


# Each member's place in its enum's order (the sort keys of blocks).
_DIRECTION_ORDER = {member: at for at, member in enumerate(Direction)}
_CHANNEL_ORDER = {member: at for at, member in enumerate(ALL_CHANNELS)}
_REASON_ORDER = {member: at for at, member in enumerate(Reason)}


def block_sort_key(block: Block) -> tuple[int, int, int]:
    scope_index = -1 if block.scope is None else _CHANNEL_ORDER[block.scope]
    return (_DIRECTION_ORDER[block.direction], scope_index, _REASON_ORDER[block.reason])


@dataclass(frozen=True, slots=True)
class StatusSummary:
    outbound: Summary
    inbound: Summary
    blocked_channels: tuple[Channel, ...]


@dataclass(frozen=True, slots=True)
class ContactState:
    """A contact's DND state at one version."""

    location_id: str
    contact_id: str
    blocks: tuple[Block, ...]
    version: int
    updated_at: dt.datetime | None = None
    # Suppressions of the addresses the read or write named (not every address of the contact).
    suppressions: tuple[AddressSuppression, ...] = ()
    # The contact's consents (every status), in ``consent_sort_key`` order.
    consents: tuple[Consent, ...] = ()
    # The last compliance replies due per channel (domain/replies.py), read only by writes
    # that ask for them (``Store.write(reply_marks=True)``).
    reply_marks: tuple[ReplyMark, ...] = ()


@dataclass(frozen=True, slots=True)
class ReplyClaim:
    """The one compliance reply after the opt-out ``block``, allowed at ``at`` (its step is
    enabled; it sets the block's ``replied_at``)."""

    block: Block
    at: dt.datetime

    @property
    def direction(self) -> Direction:
        return self.block.direction

    @property
    def scope(self) -> Scope:
        return self.block.scope

    @property
    def reason(self) -> Reason:
        return self.block.reason


@dataclass(frozen=True, slots=True)
class Step:
    """One effective change: a block or an address suppression added (enabled) or removed,
    or an opt-out's compliance reply claimed, or a consent recorded, replaced or confirmed
    (enabled) or revoked (not enabled): the consent as it stands after the step."""

    enabled: bool
    target: Block | AddressSuppression | ReplyClaim | Consent


class ChangeKind(enum.StrEnum):
    """What a change-log row is about."""

    # A block or an address suppression added or cleared.
    BLOCK = "BLOCK"
    # A consent recorded, confirmed, replaced or revoked (the row holds the consent after it).
    CONSENT = "CONSENT"
    # The one compliance reply after an opt-out was allowed (scope and reason: the opt-out's).
    COMPLIANCE_REPLY = "COMPLIANCE_REPLY"
    # The contact's personal data was erased (domain/erasure.py); the row holds none.
    ERASURE = "ERASURE"
