"""The change feed: one per process. It follows the change log, keeps the process's cache
current (each change evicts what it touched) and fans each change out to the process's watch
streams. The cache is trusted only while the feed is listening and caught up.

PostgreSQL LISTEN/NOTIFY is only a wake-up: the feed polls the log on a timer too, so a lost
listening connection (or a lost notification) delays delivery by at most one poll interval
and loses nothing. The log's sequence numbers commit in order, so reading "after the last
sequence seen" is gapless.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable

import asyncpg
import structlog

from dnd_server.cache import ContactCache
from dnd_server.domain.errors import Unavailable
from dnd_server.metrics import LiveValues
from dnd_server.records import ChangeRow
from dnd_server.storage.store import Store
from dnd_server.waiting import wait_event, within

log = structlog.get_logger("dnd_server.feed")

CHANNEL = "dnd_changes"
_BATCH = 1000
_LISTENER_PING_SECONDS = 10.0


class Subscription:
    """A watch stream's bounded mailbox of matching changes."""

    def __init__(self, start_seq: int, matches: Callable[[ChangeRow], bool], limit: int) -> None:
        # The feed position when the subscription began: later changes arrive here.
        self.start_seq = start_seq
        # The last sequence dispatched to this subscription (matching or not).
        self.position = start_seq
        self.matches = matches
        self.limit = limit
        self.queue: deque[ChangeRow] = deque()
        self.overflowed = False
        self.closed_reason = ""
        self.wakeup = asyncio.Event()

    def offer(self, changes: list[ChangeRow]) -> None:
        """Queue the matching changes. A subscriber that still holds ``limit`` undelivered
        changes and is offered more is cut off; one that has caught up takes any batch (at
        most the feed's batch size), so a burst after a stall does not cut off everyone."""
        if self.overflowed or self.closed_reason:
            return
        matching = [c for c in changes if self.matches(c)]
        if self.queue and len(self.queue) + len(matching) > self.limit:
            self.overflowed = True
            self.queue.clear()
            self.wakeup.set()
            return
        self.position = changes[-1].seq
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
        # The last sequence read from the log and dispatched.
        self.position = 0
        # Whether LISTEN is up (False: delivery falls back to polling).
        self.listening = False
        # Subscriptions cut off so far for falling behind (their mailbox overflowed).
        self.cut_off = 0

    def register_metrics(self, live: LiveValues) -> None:
        live.feed_listening = lambda: 1.0 if self.listening else 0.0
        live.watch_cut_off = lambda: float(self.cut_off)

    async def start(self) -> None:
        self.position = await self._store.head_seq()
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
            else:
                if self._cache is not None:
                    if self.listening:
                        self._cache.feed_ready(self.position)
                    else:
                        self._cache.feed_lost()
            await wait_event(self._wake, self._poll_interval)
            self._wake.clear()

    async def _catch_up(self) -> None:
        while True:
            changes = await self._store.changes_after(self.position, _BATCH)
            if changes:
                self.position = changes[-1].seq
                if self._cache is not None:
                    self._cache.apply(changes, self.position)
                for subscription in list(self._subscriptions):
                    if not subscription.overflowed:
                        subscription.offer(changes)
                        if subscription.overflowed:
                            self.cut_off += 1
            if len(changes) < _BATCH:
                return

    def _notified(self, *_args: object) -> None:
        self._wake.set()

    async def _ensure_listener(self) -> None:
        if self._listener is not None and not self._listener.is_closed():
            if time.monotonic() - self._last_ping > _LISTENER_PING_SECONDS:
                try:
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
