"""The in-process cache of contact DND state that serves CheckSend and GetStatus.

Kept current by the change feed: every committed change evicts its contact (and address)
in every replica. The cache is only trusted while the feed is listening and caught up; when
the feed is lost the cache is dropped and reads go to the database until the feed is back and
caught up. An entry read from the database is not stored when an invalidation for it arrived
while it was being read (it may predate that change).

Locations' consent policies are cached apart (``PolicyCache``), for a short time to live.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import structlog

from dnd_server.domain.consent import ConsentPolicy
from dnd_server.domain.model import AddressSuppression, ChangeKind, Channel, ContactState
from dnd_server.lanes import Position, count, lane_of
from dnd_server.metrics import LiveValues
from dnd_server.records import ChangeRow

log = structlog.get_logger("dnd_server.cache")

ContactKey = tuple[str, str]  # (location, contact)
AddressKey = tuple[str, Channel, str]  # (location, channel, address)
LocationKey = tuple[str]  # (location,): every address of the location


@dataclass(frozen=True, slots=True)
class Entry:
    state: ContactState  # without suppressions
    # The contact's last change, in its location's lane.
    last_seq: int


class ContactCache:
    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self.enabled = False
        self.hits = 0
        self.misses = 0
        self._contacts: OrderedDict[ContactKey, Entry] = OrderedDict()
        self._addresses: OrderedDict[AddressKey, tuple[AddressSuppression, ...]] = OrderedDict()
        # Invalidations newer than the oldest read in flight: key -> (lane, sequence number).
        # A key is of one location, so of one lane: its numbers compare with its changes'.
        self._recent: dict[ContactKey | AddressKey | LocationKey, tuple[int, int]] = {}
        self._reads: Counter[Position] = Counter()
        self._position: Position = ()

    @property
    def position(self) -> Position:
        """The feed position (every lane's) every invalidation up to which has been
        applied."""
        return self._position

    def __len__(self) -> int:
        return len(self._contacts) + len(self._addresses)

    def register_metrics(self, live: LiveValues) -> None:
        live.cache_hits = lambda: float(self.hits)
        live.cache_misses = lambda: float(self.misses)
        live.cache_entries = lambda: float(len(self))
        live.cache_enabled = lambda: 1.0 if self.enabled else 0.0

    # -- feed side ---------------------------------------------------------------------------

    def feed_ready(self, position: Position) -> None:
        """The feed is listening and caught up to ``position``: trust the cache (from empty)."""
        self._position = position
        if not self.enabled:
            self.enabled = True
            log.info("cache_enabled", position=position)

    def feed_lost(self) -> None:
        """The feed may miss invalidations: drop everything and read through."""
        if self.enabled:
            log.warning("cache_disabled", reason="change feed lost", entries=len(self))
        self.enabled = False
        self._contacts.clear()
        self._addresses.clear()

    def apply(self, changes: Iterable[ChangeRow], position: Position) -> None:
        for change in changes:
            key: ContactKey = (change.location_id, change.contact_id)
            self._contacts.pop(key, None)
            self._recent[key] = (change.lane, change.seq)
            if change.address and change.scope is not None:
                akey: AddressKey = (change.location_id, change.scope, change.address)
                self._drop_address(akey, change.lane, change.seq)
            if change.kind is ChangeKind.ERASURE:
                # The change names no address (it holds no personal data).
                self.forget_addresses(change.location_id, change.seq)
        self._position = position
        self._prune_recent()

    def forget_addresses(self, location_id: str, seq: int) -> None:
        """Drop every cached suppression of the location, and refuse those read before
        ``seq``: an erasure (change ``seq``) replaced some by keyed-hash ones without naming
        their addresses. Erasures are rare; the location's addresses are read again."""
        for key in [k for k in self._addresses if k[0] == location_id]:
            del self._addresses[key]
        lane = lane_of(location_id, count())
        self._recent[(location_id,)] = (lane, max(seq, self._invalidated((location_id,))))

    def _prune_recent(self) -> None:
        # A read in flight started at a feed position it is at least as fresh as: changes at
        # or below the oldest such position (lane by lane) can no longer make a read stale.
        if not self._recent or not self._position:
            return
        floor = self._position
        if self._reads:
            floor = tuple(min(lane) for lane in zip(*self._reads, strict=True))
        self._recent = {k: ls for k, ls in self._recent.items() if ls[1] > floor[ls[0]]}

    def _invalidated(self, key: ContactKey | AddressKey | LocationKey) -> int:
        """The sequence number (in the key's lane) of the last change of ``key`` seen lately."""
        found = self._recent.get(key)
        return found[1] if found is not None else 0

    # -- read side ---------------------------------------------------------------------------

    @contextmanager
    def reading(self) -> Iterator[Position]:
        """Bracket a database read whose result may be stored: yields the feed position the
        read is at least as fresh as."""
        start = self._position
        self._reads[start] += 1
        try:
            yield start
        finally:
            self._reads[start] -= 1
            if not self._reads[start]:
                del self._reads[start]

    def get(self, key: ContactKey) -> Entry | None:
        if not self.enabled:
            return None
        entry = self._contacts.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._contacts.move_to_end(key)
        self.hits += 1
        return entry

    def get_address(self, key: AddressKey) -> tuple[AddressSuppression, ...] | None:
        if not self.enabled:
            return None
        found = self._addresses.get(key)
        if found is None:
            self.misses += 1
            return None
        self._addresses.move_to_end(key)
        self.hits += 1
        return found

    def fed_past(self, location_id: str, seq: int) -> bool:
        """Whether the feed has already applied change ``seq`` of the location's lane. A write
        must not store its state then: the feed may since have applied a newer change of the
        contact and forgotten it (nothing reads in flight keeps it in ``_recent``). Before
        that, storing is safe: every later change of the contact comes after ``seq`` in its
        lane, and the feed drops the entry when it applies it."""
        if not self._position:
            return True
        return self._position[lane_of(location_id, count())] >= seq

    def put(self, key: ContactKey, entry: Entry) -> None:
        """Store a state read from the database (or just written), unless the feed has since
        seen a change of the contact newer than the state's last change."""
        if not self.enabled or self._invalidated(key) > entry.last_seq:
            return
        current = self._contacts.get(key)
        if current is not None and current.last_seq > entry.last_seq:
            return  # a racing writer or reader already stored a newer state
        self._contacts[key] = entry
        self._contacts.move_to_end(key)
        self._trim()

    def put_address(
        self,
        key: AddressKey,
        suppressions: tuple[AddressSuppression, ...],
        read_from: Position,
    ) -> None:
        """Store an address's suppressions read at feed position ``read_from``, unless a
        change of the address was seen since the read began."""
        if not self.enabled:
            return
        seq = read_from[lane_of(key[0], count())] if read_from else 0
        if self._invalidated(key) > seq:
            return
        if self._invalidated((key[0],)) > seq:
            return  # an erasure of the location since the read began
        self._addresses[key] = suppressions
        self._addresses.move_to_end(key)
        self._trim()

    def drop_address(self, key: AddressKey, seq: int) -> None:
        """Forget an address's cached suppressions, as of change ``seq`` of its location's
        lane (a write that named it): a read that began before that change stores nothing."""
        if self.enabled:
            self._drop_address(key, lane_of(key[0], count()), seq)
        else:
            self._addresses.pop(key, None)

    def _drop_address(self, key: AddressKey, lane: int, seq: int) -> None:
        self._addresses.pop(key, None)
        self._recent[key] = (lane, max(seq, self._invalidated(key)))

    def _trim(self) -> None:
        while len(self._contacts) + len(self._addresses) > self.max_entries:
            if len(self._contacts) >= len(self._addresses):
                self._contacts.popitem(last=False)
            else:
                self._addresses.popitem(last=False)


class PolicyCache:
    """Locations' consent policies as last read, each reused for ``ttl`` seconds (0: never
    reused). Not kept current by the change feed: an update through this replica replaces
    its entry at once (``put``), other replicas read the new policy once their entry is
    ``ttl`` old."""

    def __init__(
        self,
        ttl: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._policies: OrderedDict[str, tuple[float, ConsentPolicy]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._policies)

    def get(self, location_id: str) -> ConsentPolicy | None:
        found = self._policies.get(location_id)
        if found is None:
            return None
        read_at, policy = found
        if self._clock() - read_at >= self.ttl:
            del self._policies[location_id]
            return None
        return policy

    def put(self, location_id: str, policy: ConsentPolicy) -> None:
        if self.ttl <= 0:
            return
        self._policies[location_id] = (self._clock(), policy)
        self._policies.move_to_end(location_id)
        while len(self._policies) > self.max_entries:
            self._policies.popitem(last=False)


_V = TypeVar("_V")


class SettingsCache(Generic[_V]):
    """Locations' settings of one kind (quiet hours...) as last read, each reused for ``ttl``
    seconds (0: never reused), like ``PolicyCache``: an update through this replica replaces
    its entry at once, other replicas read the new settings once their entry is ``ttl`` old."""

    def __init__(
        self, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, _V]] = OrderedDict()

    def get(self, location_id: str) -> _V | None:
        found = self._entries.get(location_id)
        if found is None:
            return None
        read_at, value = found
        if self._clock() - read_at >= self.ttl:
            del self._entries[location_id]
            return None
        return value

    def put(self, location_id: str, value: _V) -> None:
        if self.ttl <= 0:
            return
        self._entries[location_id] = (self._clock(), value)
        self._entries.move_to_end(location_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
