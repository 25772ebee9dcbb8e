"""One WatchChanges stream: catch up from the log after the client's cursor (the lanes its
locations write to), then follow the feed live, with bookmarks, a bounded mailbox, expiry of
old cursors and, when asked, several events per message."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from dnd_server import lanes
from dnd_server.cursor import encode_bookmark
from dnd_server.domain.errors import CursorExpired, InvalidArgument, SubscriberTooSlow, Unavailable
from dnd_server.domain.model import INBOUND_CHANNELS, ChangeKind, Channel, Direction, Source
from dnd_server.feed import ChangeFeed
from dnd_server.lanes import Position
from dnd_server.records import ChangeRow
from dnd_server.storage.store import Store
from dnd_server.waiting import wait_event

_CATCH_UP_BATCH = 500
# A stream sending several events per message lingers this long once woken, so the events of
# the next few feed reads go in one message.
_LINGER_SECONDS = 0.02


@dataclass(frozen=True, slots=True)
class WatchFilter:
    """Empty sets mean "all"."""

    locations: frozenset[str] = frozenset()
    channels: frozenset[Channel] = frozenset()
    directions: frozenset[Direction] = frozenset()
    sources: frozenset[Source] = frozenset()
    kinds: frozenset[ChangeKind] = frozenset()

    def matches(self, change: ChangeRow) -> bool:
        if self.locations and change.location_id not in self.locations:
            return False
        if self.kinds and change.kind not in self.kinds:
            return False
        if self.directions and change.direction not in self.directions:
            return False
        if self.sources and change.source not in self.sources:
            return False
        return not self.channels or bool(self.channels & touched_channels(change))


def touched_channels(change: ChangeRow) -> frozenset[Channel]:
    """The channels a change affects: its own, every one for all-channels, CALL and SMS for
    inbound."""
    if change.direction is Direction.INBOUND:
        return INBOUND_CHANNELS
    if change.scope is None:
        return frozenset(Channel)
    return frozenset({change.scope})


@dataclass(frozen=True, slots=True)
class WatchSettings:
    bookmark_interval: float
    retention: float
    buffer: int


@dataclass(frozen=True, slots=True)
class Event:
    """A change as a stream sends it, with the stream's position right after it (the
    event's cursor)."""

    change: ChangeRow
    position: Position


# What a stream yields: events ready together (one, unless the subscriber asked for several
# per message and is behind), or a bookmark (the stream's position).
Item = list[Event] | Position


async def follow(
    store: Store,
    feed: ChangeFeed,
    flt: WatchFilter,
    after: Position | None,
    settings: WatchSettings,
    cursor_text: str,
    batch: int = 1,
) -> AsyncGenerator[Item, None]:
    """Every matching change after ``after`` (None: from now), in the log's merged order,
    then live; up to ``batch`` events at a time when several are ready.

    A stream filtered to locations reads only their lanes. Its position holds every lane:
    the lanes it reads exactly, the others (none of whose changes match) at least where the
    positions of the changes it sent have them."""
    count = len(feed.position)
    followed = lanes.lanes_of(flt.locations, count)
    subscription = feed.subscribe(flt.matches, settings.buffer)
    try:
        if after is None:
            last = await store.heads()
        else:
            await _check_resumable(store, followed, after, settings.retention, cursor_text)
            last = after
        # Catch up from the log up to where the live subscription starts.
        start = subscription.start
        while True:
            behind = sorted(lane for lane in followed if last[lane] < start[lane])
            if not behind:
                break
            by_lane = await store.changes_after(behind, last, _CATCH_UP_BATCH)
            read: list[list[ChangeRow]] = [[] for _ in range(count)]
            complete = [True] * count
            for lane, found in by_lane.items():
                upto = [row for row in found if row.seq <= start[lane]]
                read[lane] = upto
                complete[lane] = len(found) < _CATCH_UP_BATCH or len(upto) < len(found)
            ready: list[Event] = []
            for row in lanes.merge(read, complete):
                last = lanes.advance(last, row, followed)
                if flt.matches(row):
                    ready.append(Event(row, last))
                    if len(ready) >= batch:
                        yield ready
                        ready = []
            if ready:
                yield ready
            if not any(read):
                break
        # Live, starting with a bookmark: the client holds a resume point at once.
        if not subscription.queue:
            last = lanes.join(last, subscription.position)
        yield last
        last_sent = time.monotonic()
        while True:
            if subscription.overflowed:
                raise SubscriberTooSlow(encode_bookmark(last))
            if subscription.closed_reason:
                resume = encode_bookmark(last)
                raise Unavailable(
                    f"{subscription.closed_reason}; resume with after_cursor={resume}"
                )
            if subscription.queue:
                ready = []
                while subscription.queue and len(ready) < batch:
                    row, position = subscription.queue.popleft()
                    if row.seq > last[row.lane]:
                        last = lanes.join(last, position)
                        ready.append(Event(row, last))
                if ready:
                    yield ready
                    last_sent = time.monotonic()
                continue
            # Mailbox empty: every matching change up to the feed's position was delivered.
            last = lanes.join(last, subscription.position)
            due = last_sent + settings.bookmark_interval - time.monotonic()
            if due <= 0:
                yield last
                last_sent = time.monotonic()
                continue
            subscription.wakeup.clear()
            if await wait_event(subscription.wakeup, due) and batch > 1:
                await asyncio.sleep(_LINGER_SECONDS)
    finally:
        feed.unsubscribe(subscription)


async def _check_resumable(
    store: Store, followed: frozenset[int], after: Position, retention: float, cursor_text: str
) -> None:
    """INVALID_ARGUMENT for a position ahead of the log, CURSOR_EXPIRED for one whose next
    change (in a lane the stream reads) was pruned or is older than the retention window."""
    position = await store.cursor_position(sorted(followed), after, retention)
    for lane in followed:
        if after[lane] > position.head[lane]:
            raise InvalidArgument.one(
                "after_cursor", "the cursor is ahead of this service's change log"
            )
    for lane in followed:
        if after[lane] < position.pruned_below[lane] - 1 or lane in position.expired:
            raise CursorExpired(cursor_text)
