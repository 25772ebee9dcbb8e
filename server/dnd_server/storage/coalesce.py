"""Reads of contacts that share a statement when the database is the bottleneck.

A read goes to the database at once while fewer than ``in_flight`` reads are out. When that
many are, it waits instead with the other reads of its location for the next free slot, and
one statement (one round trip, one ``= ANY`` lookup) answers all of them: under load the
statements grow instead of queueing for connections, and an idle service waits for nothing.

A read joins a statement not yet sent, never one already out, so it sees every write committed
before it asked, as a statement of its own would. A waiting read still ends by one deadline
(``timeout`` from the first read of its statement), and a statement that fails fails each read
in it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Generic, TypeVar

from dnd_server.domain.errors import Unavailable

_R = TypeVar("_R")

# fetch(location_id, contact_ids, timeout or None for the default): the rows found, by id.
Fetch = Callable[[str, Sequence[str], "float | None"], Awaitable[Mapping[str, _R]]]


class _Gathered(Generic[_R]):
    """Reads of one location waiting for one statement."""

    __slots__ = ("deadline", "ids", "location_id", "waiters")

    def __init__(self, location_id: str, deadline: float) -> None:
        self.location_id = location_id
        self.ids: dict[str, None] = {}
        self.waiters: list[asyncio.Future[Mapping[str, _R]]] = []
        self.deadline = deadline


class ReadCoalescer(Generic[_R]):
    def __init__(
        self, fetch: Fetch[_R], *, in_flight: int, timeout: float, max_ids: int = 5000
    ) -> None:
        self._fetch = fetch
        self._limit = max(1, in_flight)
        self._timeout = timeout
        self._max_ids = max_ids
        self._out = 0
        # Statements waiting for a slot, oldest first; the one each location's reads join.
        self._queue: deque[_Gathered[_R]] = deque()
        self._open: dict[str, _Gathered[_R]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def read(self, location_id: str, contact_ids: Sequence[str]) -> Mapping[str, _R]:
        """The rows of ``contact_ids`` found (by contact id), read by a statement sent after
        this call began."""
        if self._out < self._limit:
            self._out += 1
            try:
                return await self._fetch(location_id, contact_ids, None)
            finally:
                self._out -= 1
                self._next()
        loop = asyncio.get_running_loop()
        gathered = self._open.get(location_id)
        if gathered is None or len(gathered.ids) + len(contact_ids) > self._max_ids:
            gathered = _Gathered[_R](location_id, loop.time() + self._timeout)
            self._open[location_id] = gathered
            self._queue.append(gathered)
        gathered.ids.update(dict.fromkeys(contact_ids))
        waiter: asyncio.Future[Mapping[str, _R]] = loop.create_future()
        gathered.waiters.append(waiter)
        return await waiter

    def _next(self) -> None:
        """Send the oldest waiting statement into a free slot."""
        while self._queue and self._out < self._limit:
            gathered = self._queue.popleft()
            if self._open.get(gathered.location_id) is gathered:
                del self._open[gathered.location_id]
            if all(w.done() for w in gathered.waiters):
                continue  # every read of it was cancelled
            self._out += 1
            task = asyncio.get_running_loop().create_task(self._send(gathered))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _send(self, gathered: _Gathered[_R]) -> None:
        try:
            remaining = gathered.deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise Unavailable("database unavailable: TimeoutError")
            found = await self._fetch(gathered.location_id, list(gathered.ids), remaining)
        except BaseException as error:
            for waiter in gathered.waiters:
                if not waiter.done():
                    if isinstance(error, asyncio.CancelledError):
                        waiter.cancel()
                    else:
                        waiter.set_exception(error)
            if not isinstance(error, Exception):
                raise
        else:
            for waiter in gathered.waiters:
                if not waiter.done():
                    waiter.set_result(found)
        finally:
            self._out -= 1
            self._next()
