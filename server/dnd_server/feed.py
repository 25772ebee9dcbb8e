"""The change feed: one per process. It follows the change log, keeps the process's cache
current (each change evicts what it touched) and fans each change out to the process's watch
streams. The cache is trusted only while the feed is listening and caught up.

PostgreSQL LISTEN/NOTIFY is only a wake-up: the feed polls the log on a timer too, so a lost
listening connection (or a lost notification) delays delivery by at most one poll interval
and loses nothing. The feed reads every lane of the log after its position (one sequence
number per lane) in one statement and merges them (``lanes.merge``); each lane's sequence
numbers commit in order, so reading "after the last sequence seen" is gapless in every lane.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
from collections import deque
from collections.abc import Callable

import asyncpg
import structlog

from dnd_server import lanes
from dnd_server.cache import ContactCache
from dnd_server.domain.errors import Unavailable
from dnd_server.lanes import Position
from dnd_server.metrics import LiveValues
from dnd_server.records import ChangeRow
from dnd_server.storage.sql import QUERIES
from dnd_server.storage.store import Store
from dnd_server.waiting import wait_event, within

log = structlog.get_logger("dnd_server.feed")

CHANNEL = "dnd_changes"
_BATCH = 1000
_LISTENER_PING_SECONDS = 10.0
# Between two wake-ups of the other replicas (each a NOTIFY, which PostgreSQL serialises): the
# first NOTIFY after a quiet spell goes at once, later ones at most this often.
_NOTIFY_GAP_SECONDS = 0.010
# How long a woken feed waits for more commits before reading the log: briefly while writes
# come one at a time, longer once a read finds several (each read and each dispatch to every
# stream then serves more changes, and the feed's cost stops growing with the write rate).
_GATHER_SECONDS = 0.002
_GATHER_BUSY_SECONDS = 0.010


# A change as the feed dispatches it, with the feed's position right after it.
Dispatched = tuple[ChangeRow, Position]


class Subscription:
    """A watch stream's bounded mailbox of matching changes."""

    def __init__(self, start: Position, matches: Callable[[ChangeRow], bool], limit: int) -> None:
        # The feed position when the subscription began: later changes arrive here.
        self.start = start
        # The feed position after the last change dispatched here (matching or not).
        self.position = start
        self.matches = matches
        self.limit = limit
        self.queue: deque[Dispatched] = deque()
        self.overflowed = False
        self.closed_reason = ""
        self.wakeup = asyncio.Event()

    def offer(self, changes: list[Dispatched]) -> None:
        """Queue the matching changes. A subscriber that still holds ``limit`` undelivered
        changes and is offered more is cut off; one that has caught up takes any batch (at
        most the feed's batch size per lane), so a burst after a stall does not cut off
        everyone."""
        if self.overflowed or self.closed_reason:
            return
        matches = self.matches
        matching = [item for item in changes if matches(item[0])]
        if self.queue and len(self.queue) + len(matching) > self.limit:
            self.overflowed = True
            self.queue.clear()
            self.wakeup.set()
            return
        self.position = changes[-1][1]
        if matching:
            self.queue.extend(matching)
            self.wakeup.set()

    def close(self, reason: str) -> None:
        self.closed_reason = reason
        self.wakeup.set()


class ChangeFeed:
    def __init__(
        self,
        store: Store,
        database_url: str,
        poll_interval: float,
        cache: ContactCache | None = None,
    ) -> None:
        self._store = store
        self._cache = cache
        self._url = database_url
        self._poll_interval = poll_interval
        self._subscriptions: set[Subscription] = set()
        self._wake = asyncio.Event()
        self._listener: asyncpg.Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_ping = 0.0
        self._closing = False
        # The position (every lane's) read from the log and dispatched.
        self.position: Position = ()
        # Whether LISTEN is up (False: delivery falls back to polling).
        self.listening = False
        # Subscriptions cut off so far for falling behind (their mailbox overflowed).
        self.cut_off = 0
        # Reads of the log so far, and the changes they found.
        self.reads = 0
        self.changes_read = 0
        # Reads that failed other than by the database being unavailable (each logged).
        self.failures = 0
        # The other replicas' wake-up after this process's writes: one NOTIFY in flight.
        self._notifier: asyncio.Task[None] | None = None
        self._notify_again = False
        # Whether the last read of the log found more than one change.
        self._busy = False
        # The listening connection runs one statement at a time (a ping or a NOTIFY).
        self._listener_busy = asyncio.Lock()

    def register_metrics(self, live: LiveValues) -> None:
        live.feed_listening = lambda: 1.0 if self.listening else 0.0
        live.watch_cut_off = lambda: float(self.cut_off)
        live.feed_reads = lambda: float(self.reads)
        live.feed_changes_read = lambda: float(self.changes_read)
        live.feed_failures = lambda: float(self.failures)

    async def start(self) -> None:
        self.position = await self._store.heads()
        self._store.committed = self._committed
        self._task = asyncio.create_task(self._run())
        log.info("feed_started", position=self.position)

    def subscribe(self, matches: Callable[[ChangeRow], bool], limit: int) -> Subscription:
        subscription = Subscription(self.position, matches, limit)
        self._subscriptions.add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        self._subscriptions.discard(subscription)

    async def close(self) -> None:
        self._closing = True
        self._store.committed = lambda: None
        for subscription in list(self._subscriptions):
            subscription.close("the server is shutting down")
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait({self._task}, timeout=5)
        await self._drop_listener()

    async def _run(self) -> None:
        while True:
            await self._ensure_listener()
            try:
                await self._catch_up()
            except Unavailable as error:
                if self._cache is not None:
                    self._cache.feed_lost()
                log.warning("feed_poll_failed", error=str(error))
            except Exception as error:
                # Anything else (a change row it cannot read, a bug): the feed must never end
                # behind a cache still trusted. The cache is dropped, the read tried again.
                if self._cache is not None:
                    self._cache.feed_lost()
                self.failures += 1
                log.error("feed_failed", error=type(error).__name__, exc_info=True)
            else:
                if self._cache is not None:
                    if self.listening:
                        self._cache.feed_ready(self.position)
                    else:
                        self._cache.feed_lost()
            await wait_event(self._wake, self._poll_interval)
            # Woken: let the writes committing right now join this read (one read, one
            # dispatch to every stream, for all of them).
            await asyncio.sleep(_GATHER_BUSY_SECONDS if self._busy else _GATHER_SECONDS)
            self._wake.clear()

    async def _catch_up(self) -> None:
        every = frozenset(range(len(self.position)))
        self._busy = False
        while True:
            by_lane = await self._store.changes_after(sorted(every), self.position, _BATCH)
            self.reads += 1
            read = [by_lane[lane] for lane in sorted(every)]
            complete = [len(found) < _BATCH for found in read]
            dispatched: list[Dispatched] = []
            position = self.position
            for change in lanes.merge(read, complete):
                position = lanes.advance(position, change, every)
                dispatched.append((change, position))
            if dispatched:
                self.changes_read += len(dispatched)
                self._busy = len(dispatched) > 1
                self.position = position
                if self._cache is not None:
                    self._cache.apply([change for change, _ in dispatched], self.position)
                for subscription in list(self._subscriptions):
                    if not subscription.overflowed:
                        subscription.offer(dispatched)
                        if subscription.overflowed:
                            self.cut_off += 1
            if all(complete):
                return

    def _notified(self, _conn: object, pid: int, *_args: object) -> None:
        # This process's own NOTIFY (sent on the listening connection) wakes only the others:
        # its writes woke this feed when they committed.
        listener = self._listener
        if listener is not None and pid == listener.get_server_pid():
            return
        self._wake.set()

    def _committed(self) -> None:
        """A write of this process committed: read the log now, and wake the other replicas'
        feeds with one NOTIFY (another after it when more writes committed meanwhile)."""
        self._wake.set()
        if self._closing:
            return
        if self._notifier is not None and not self._notifier.done():
            self._notify_again = True
            return
        # In a context of its own: the NOTIFY serves every write of the process, not the
        # request whose commit started it (its trace, its log fields).
        self._notifier = asyncio.create_task(self._notify_others(), context=contextvars.Context())

    async def _notify_others(self) -> None:
        while True:
            self._notify_again = False
            try:
                await self._notify()
            except Unavailable as error:
                # The others find the changes by polling.
                log.warning("feed_notify_failed", error=str(error))
                return
            if not self._notify_again:
                return
            # Writes committed meanwhile: one more, a moment later, for all of them.
            await asyncio.sleep(_NOTIFY_GAP_SECONDS)

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            if time.monotonic() - self._last_ping > _LISTENER_PING_SECONDS:
                try:
                    async with self._listener_busy:
                        await within(self._listener.fetchval("SELECT 1"), 5)
                    self._last_ping = time.monotonic()
                except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
                    await self._drop_listener()
            if self._listener is not None:
                return
        try:
            listener = await asyncpg.connect(
                self._url, timeout=5, server_settings={"application_name": "dnd-service-feed"}
            )
            await listener.add_listener(CHANNEL, self._notified)
            listener.add_termination_listener(self._listener_lost)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as error:
            if self.listening:
                log.warning("feed_listener_down", error=type(error).__name__)
            self.listening = False
            return
        self._listener = listener
        self._last_ping = time.monotonic()
        self.listening = True
        log.info("feed_listening")
        # Changes committed while nobody listened are picked up by the poll that follows.
        self._wake.set()

    async def _notify(self) -> None:
        """One NOTIFY: on the listening connection (so no pooled connection a write needs is
        taken), or through the pool while there is none."""
        listener = self._listener
        if listener is None or listener.is_closed():
            await self._store.notify_changes()
            return
        try:
            async with self._listener_busy:
                await within(listener.execute(QUERIES["notify_changes"]), 5)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError):
            await self._store.notify_changes()

    def _listener_lost(self, *_args: object) -> None:
        self.listening = False
        if self._closing:
            return
        log.warning("feed_listener_lost")
        if self._cache is not None:
            self._cache.feed_lost()
        self._listener = None
        self._wake.set()

    async def _drop_listener(self) -> None:
        listener, self._listener = self._listener, None
        self.listening = False
        if self._cache is not None and not self._closing:
            self._cache.feed_lost()
        if listener is not None and not listener.is_closed():
            with contextlib.suppress(Exception):
                await within(listener.close(), 2)
