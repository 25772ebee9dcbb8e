"""Plain records passed between the layers: what a write is asked to do and what it answers,
and what the reads and the change log hand back. Data only: no rules, no I/O. They build on
the domain types alone, so every layer (storage, service, cache, feed, rpc) may import them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dnd_server.domain.consent import Consent
from dnd_server.domain.model import (
    AddressSuppression,
    ChangeKind,
    Channel,
    ContactState,
    Direction,
    Reason,
    Source,
    Step,
)

# (channel, normalised address) pairs a read or write involves.
Addresses = Sequence[tuple[Channel, str]]


@dataclass(frozen=True, slots=True)
class ChangeMeta:
    """Who makes a change and what they say about it; recorded on every log row."""

    source: Source
    actor_id: str = ""
    note: str = ""
    evidence: str = ""
    provider_detail: str = ""
    # The authenticated caller making the change (a token's name, or ``anonymous <peer>``
    # without tokens), recorded beside the caller-supplied ``actor_id``.
    caller: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """A plan's steps plus what else it decided (handed back in ``WriteResult.detail``)."""

    steps: Sequence[Step]
    detail: object = None


# A plan decides, from the locked current state and the database's clock, which steps to take.
Plan = Callable[[ContactState, dt.datetime], Sequence[Step] | Decision]


@dataclass(frozen=True, slots=True)
class WriteResult:
    state: ContactState
    steps: tuple[Step, ...]
    # Sequence number of the contact's last change (the write's own when it changed something).
    last_seq: int
    # What the plan decided beside its steps (see Decision).
    detail: object = None


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An idempotency key claimed in the write's transaction; ``respond`` encodes the answer
    stored for retries."""

    key: str
    method: str
    request_hash: bytes
    respond: Callable[[WriteResult], bytes]


@dataclass(frozen=True, slots=True)
class Replay:
    """The stored first answer to a retried idempotency key."""

    response: bytes


@dataclass(frozen=True, slots=True)
class HistoryRow:
    seq: int
    time: dt.datetime
    version: int
    enabled: bool
    direction: Direction
    scope: Channel | None
    # None on a CONSENT row.
    reason: Reason | None
    source: Source
    actor_id: str
    note: str
    evidence: str
    provider_detail: str
    address: str
    # The contact whose request made the change (histories mix contacts' changes).
    contact_id: str = ""
    # For an address suppression change: the contact whose event set the suppression.
    owner_contact_id: str = ""
    # The authenticated caller that made the change ("" if logged before it was recorded).
    caller: str = ""
    kind: ChangeKind = ChangeKind.BLOCK
    # On a CONSENT row: the consent after the change (with its evidence).
    consent: Consent | None = None


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One change-log row as the change stream carries it (no note or evidence)."""

    seq: int
    location_id: str
    contact_id: str
    direction: Direction
    scope: Channel | None
    enabled: bool
    # None on a CONSENT row.
    reason: Reason | None
    source: Source
    actor_id: str
    time: dt.datetime
    outbound: str
    inbound: str
    blocked_channels: tuple[Channel, ...]
    version: int
    address: str
    owner_contact_id: str = ""
    caller: str = ""
    kind: ChangeKind = ChangeKind.BLOCK
    # On a CONSENT row: the consent after the change, without its evidence (the stream never
    # carries evidence).
    consent: Consent | None = None


@dataclass(frozen=True, slots=True)
class ContactsRead:
    contacts: dict[str, ContactState]
    last_seqs: dict[str, int]
    suppressions: tuple[AddressSuppression, ...]


@dataclass(frozen=True, slots=True)
class CursorPosition:
    head: int
    pruned_below: int
    # Whether the change right after the cursor is older than the stream's retention.
    next_expired: bool
