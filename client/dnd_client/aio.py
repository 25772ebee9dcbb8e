"""AsyncDndClient: the typed asyncio client (grpc.aio). Its methods are those of
``_rpcs.Methods``, each returning an awaitable (the watch: an async iterator)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import TracebackType
from typing import TypeVar, Unpack

import grpc
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from dnd_client._channel import ChannelOptions, ChannelSettings
from dnd_client._requests import ExportPlan, Prepared, WatchPlan
from dnd_client._rpcs import Asynchronous, Attempts, Methods, Restart, Resume, WatchItem

_R = TypeVar("_R")


class AsyncDndClient(Methods, Asynchronous):
    """Typed client of dnd-service for asyncio code (same options as ``DndClient``).

    Use as ``async with AsyncDndClient("host:50051") as dnd: ...``.
    """

    def __init__(self, target: str, **options: Unpack[ChannelOptions]) -> None:
        self._settings = ChannelSettings.of(target, **options)
        self._channel = self._settings.open(grpc.aio.insecure_channel, grpc.aio.secure_channel)
        self._stub = dnd_pb2_grpc.DndServiceStub(self._channel)

    async def __aenter__(self) -> AsyncDndClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        await self._channel.close()

    async def _unary(self, prepared: Prepared[_R]) -> _R:
        method = getattr(self._stub, prepared.method)
        attempts = Attempts(prepared, self._settings.max_attempts)
        while True:
            try:
                return prepared.unwrap(
                    await method(prepared.request, **self._settings.call(prepared))
                )
            except grpc.aio.AioRpcError as error:
                await asyncio.sleep(attempts.after(error))

    async def _stream(self, plan: WatchPlan) -> AsyncIterator[WatchItem]:
        resume = Resume(plan)
        while True:
            call = self._stub.WatchChanges(resume.request(), metadata=self._settings.metadata)
            try:
                async for message in call:
                    for item in resume.accept(message):
                        yield item
                delay = resume.ended()
            except grpc.aio.AioRpcError as error:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    # Our own cancellation (Ctrl-C, a timeout) surfaced as the call's
                    # CANCELLED: stop, never resume.
                    raise asyncio.CancelledError from None
                delay = resume.failed(error)
            finally:
                call.cancel()
            await asyncio.sleep(delay)

    async def _export(self, plan: ExportPlan) -> AsyncIterator[pb.ExportSuppressionsResponse]:
        restart = Restart(plan)
        while True:
            call = self._stub.ExportSuppressions(
                restart.request(), metadata=self._settings.metadata
            )
            try:
                async for message in call:
                    restart.accept(message)
                    yield message
                return
            except grpc.aio.AioRpcError as error:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise asyncio.CancelledError from None
                delay = restart.failed(error)
            finally:
                call.cancel()
            await asyncio.sleep(delay)
