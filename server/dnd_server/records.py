"""Plain records passed between the layers: what a write is asked to do and what it answers,
and what the reads and the change log hand back. Data only: no rules, no I/O. They build on
the domain types alone, so every layer (storage, service, cache, feed, rpc) may import them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from dnd_server.domain.consent import Consent
from dnd_server.domain.errors import DndError
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    ChangeKind,
    Channel,
    ContactState,
    Direction,
    Reason,
    Source,
    Step,
)
from dnd_server.domain.replies import ReplyMark
from dnd_server.lanes import Position

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
    # Reply marks to keep in the same transaction (domain/replies.py ReplyMark): not changes
    # (no version, no change-log row).
    marks: Sequence[ReplyMark] = ()


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
    # The position in the whole log of that change (its cursor; see dnd_server/lanes.py).
    position: Position = ()


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An idempotency key claimed in the write's transaction; ``respond`` encodes the answer
    stored for retries."""

    key: str
    method: str
    # The request's hash keyed with the deployment's secret (``rpc/idempotency.py``).
    request_hash: bytes
    respond: Callable[[WriteResult], bytes]
    # Its unkeyed hash, as earlier versions kept it: a key claimed before still replays.
    legacy_hash: bytes = b""


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
    # The change's position in the whole log (see ChangeRow.heads).
    heads: Position = ()


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
    # The change's lane (its location's) and its position in the whole log (its own lane's
    # entry being ``seq``).
    lane: int = 0
    heads: Position = ()


@dataclass(frozen=True, slots=True)
class ContactsRead:
    contacts: dict[str, ContactState]
    last_seqs: dict[str, int]
    suppressions: tuple[AddressSuppression, ...]


@dataclass(frozen=True, slots=True)
class CursorPosition:
    """Where a position stands in the lanes it was asked about (per lane, by lane)."""

    head: dict[int, int]
    pruned_below: dict[int, int]
    # The lanes whose change right after the position is older than the stream's retention.
    expired: frozenset[int]


@dataclass(frozen=True, slots=True)
class BulkItem:
    """One contact's write in a bulk write: its plan, as ``Store.write`` takes it."""

    contact_id: str
    plan: Plan
    meta: ChangeMeta
    addresses: Addresses = ()
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class ItemOutcome:
    """What one item of a bulk write did: its result, or the domain error that refused it
    (the clear policy's, a version mismatch); nothing of a refused item is written."""

    result: WriteResult | None = None
    error: DndError | None = None


@dataclass(frozen=True, slots=True)
class BulkClaim:
    """The idempotency key of a bulk write, which keeps the answer so far after each chunk:
    a retry resumes after the items it answers, and a finished call replays it."""

    key: str
    method: str
    request_hash: bytes
    # How many items (from the first) a kept progress answers.
    done: Callable[[bytes], int]
    # The progress after a chunk: the kept one (None at first), the chunk's first index and
    # its outcomes (None for an item that was not written: invalid).
    record: Callable[[bytes | None, int, Sequence[ItemOutcome | None]], bytes]
    # The request's unkeyed hash, as earlier versions kept it (``Idempotency.legacy_hash``).
    legacy_hash: bytes = b""


@dataclass(frozen=True, slots=True)
class BulkChunk:
    """One chunk of a bulk write as committed: its first index, its outcomes, and the kept
    progress (with a claim)."""

    start: int
    outcomes: Sequence[ItemOutcome | None]
    progress: bytes | None = None


@dataclass(frozen=True, slots=True)
class ListFilter:
    """What a listing or an export of blocks and suppressions keeps (None / "": any)."""

    channel: Channel | None = None
    direction: Direction | None = None
    reason: Reason | None = None
    source: Source | None = None
    # Set at or after ``since`` and before ``until``.
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    contact_id: str = ""
    # Normalised.
    address: str = ""


# A block's key in its location: (contact, direction, scope, reason).
BlockKey = tuple[str, str, str, str]
# A suppression's key in its location: (channel, address, reason).
SuppressionKey = tuple[str, str, str]


@dataclass(frozen=True, slots=True)
class ListedBlock:
    contact_id: str
    block: Block
