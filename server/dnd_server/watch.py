"""One WatchChanges stream: catch up from the log after the client's cursor, then follow the
feed live, with bookmarks, a bounded mailbox and expiry of old cursors."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from dnd_server.cursor import encode_bookmark
from dnd_server.domain.errors import CursorExpired, InvalidArgument, SubscriberTooSlow, Unavailable
from dnd_server.domain.model import INBOUND_CHANNELS, ChangeKind, Channel, Direction, Source
from dnd_server.feed import ChangeFeed
from dnd_server.records import ChangeRow
from dnd_server.storage.store import Store
from dnd_server.waiting import wait_event

_CATCH_UP_BATCH = 500


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


# What a stream yields: a change, or a bookmark (the position as a sequence number).
Item = ChangeRow | int


async def follow(
    store: Store,
    feed: ChangeFeed,
    flt: WatchFilter,
    after: int | None,
    settings: WatchSettings,
    cursor_text: str,
) -> AsyncGenerator[Item, None]:
    """Every matching change after ``after`` (None: from now), in log order, then live."""
    subscription = feed.subscribe(flt.matches, settings.buffer)
    try:
        if after is None:
            last = await store.head_seq()
        else:
            position = await store.cursor_position(after, settings.retention)
            if after > position.head:
                raise InvalidArgument.one(
                    "after_cursor", "the cursor is ahead of this service's change log"
                )
            if after < position.pruned_below - 1 or position.next_expired:
                raise CursorExpired(cursor_text)
            last = after
        # Catch up from the log up to where the live subscription starts.
        while last < subscription.start_seq:
            rows = await store.changes_after(last, _CATCH_UP_BATCH)
            if not rows:
                break
            for row in rows:
                if row.seq > subscription.start_seq:
                    break
                if flt.matches(row):
                    yield row
                last = row.seq
            else:
                continue
            break
        # Live, starting with a bookmark: the client holds a resume point at once.
        last = max(last, subscription.position) if not subscription.queue else last
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
                row = subscription.queue.popleft()
                if row.seq > last:
                    yield row
                    last = row.seq
                    last_sent = time.monotonic()
                continue
            # Mailbox empty: every matching change up to the feed's position was delivered.
            last = max(last, subscription.position)
            due = last_sent + settings.bookmark_interval - time.monotonic()
            if due <= 0:
                yield last
                last_sent = time.monotonic()
                continue
            subscription.wakeup.clear()
            await wait_event(subscription.wakeup, due)
    finally:
        feed.unsubscribe(subscription)
