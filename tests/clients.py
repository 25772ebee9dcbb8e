"""Both Python clients, ``DndClient`` and ``AsyncDndClient``, behind one awaitable adapter so
that a client test body runs on each (the ``kind`` fixture of a test module names which)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from typing import Any

import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_client import AsyncDndClient, DndAction, DndClient, DndError, Source

KINDS = ("sync", "async")


class Client:
    """``DndClient`` or ``AsyncDndClient`` behind one awaitable interface, so that a test body
    reads the same for both: blocking calls run in a worker thread (a server can be restarted
    while one is in flight). Create it inside the test (its event loop)."""

    def __init__(self, kind: str, target: str, **options: Any) -> None:
        self.kind = kind
        self.raw: DndClient | AsyncDndClient
        if kind == "sync":
            self.raw = DndClient(target, **options)
        else:
            self.raw = AsyncDndClient(target, **options)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if isinstance(self.raw, AsyncDndClient):
            await self.raw.close()
        else:
            self.raw.close()

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.raw, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.kind == "sync":
                return await asyncio.to_thread(method, *args, **kwargs)
            return await method(*args, **kwargs)

        return call


class Follow:
    """A client's ``watch(bookmarks=True, ...)`` consumed in the background (a task, or a
    thread for the blocking client), events and bookmarks kept apart."""

    def __init__(self, client: Client, **filters: Any) -> None:
        self.events: list[pb.ChangeEvent] = []
        self.bookmarks: list[pb.Bookmark] = []
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        raw = client.raw
        if isinstance(raw, AsyncDndClient):
            self._task = asyncio.create_task(self._consume_async(raw, filters))
        else:
            self._thread = threading.Thread(
                target=self._consume_sync, args=(raw, filters), daemon=True
            )
            self._thread.start()

    def _keep(self, item: Any) -> None:
        if isinstance(item, pb.ChangeEvent):
            self.events.append(item)
        else:
            assert isinstance(item, pb.Bookmark), type(item)
            self.bookmarks.append(item)

    async def _consume_async(self, raw: AsyncDndClient, filters: dict[str, Any]) -> None:
        try:
            async for item in raw.watch(bookmarks=True, **filters):
                self._keep(item)
        except DndError as error:
            self.error = error

    def _consume_sync(self, raw: DndClient, filters: dict[str, Any]) -> None:
        stream = raw.watch(bookmarks=True, **filters)
        try:
            for item in stream:
                self._keep(item)
                if self._stop.is_set():
                    break
        except DndError as error:
            self.error = error
        finally:
            stream.close()

    @property
    def cursors(self) -> list[str]:
        return [e.cursor for e in self.events]

    async def until(self, predicate: Callable[[], bool], timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if self.error is not None:
                raise AssertionError(f"the watch failed: {self.error!r}")
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; events so far: {self.cursors}")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        if self._thread is not None:
            self._stop.set()
            await asyncio.to_thread(self._thread.join, 15)
            assert not self._thread.is_alive()


async def first_events(client: Client, count: int, **filters: Any) -> list[Any]:
    """The first ``count`` items of ``watch(**filters)`` (no bookmarks asked for)."""
    raw = client.raw
    if isinstance(raw, AsyncDndClient):

        async def take() -> list[Any]:
            items: list[Any] = []
            async for item in raw.watch(**filters):
                items.append(item)
                if len(items) == count:
                    break
            return items

        return await asyncio.wait_for(take(), 20)

    assert isinstance(raw, DndClient)

    def take_sync() -> list[Any]:
        items: list[Any] = []
        stream = raw.watch(**filters)
        try:
            for item in stream:
                items.append(item)
                if len(items) == count:
                    break
        finally:
            stream.close()
        return items

    return await asyncio.wait_for(asyncio.to_thread(take_sync), 20)


async def expect_watch_error(client: Client, **filters: Any) -> DndError:
    """The error ``watch(**filters)`` raises before yielding any event."""
    raw = client.raw
    if isinstance(raw, AsyncDndClient):

        async def consume() -> None:
            async for item in raw.watch(**filters):
                raise AssertionError(f"yielded {item} instead of failing")

        with pytest.raises(DndError) as caught:
            await asyncio.wait_for(consume(), 20)
        return caught.value

    assert isinstance(raw, DndClient)

    def consume_sync() -> None:
        stream = raw.watch(**filters)
        try:
            for item in stream:
                raise AssertionError(f"yielded {item} instead of failing")
        finally:
            stream.close()

    with pytest.raises(DndError) as caught:
        await asyncio.wait_for(asyncio.to_thread(consume_sync), 20)
    return caught.value


def enable(**kwargs: Any) -> dict[str, Any]:
    return {"action": DndAction.ENABLE, "source": Source.USER, **kwargs}


def disable(**kwargs: Any) -> dict[str, Any]:
    return {"action": DndAction.DISABLE, "source": Source.USER, **kwargs}
