"""DndClient: the typed blocking client. Its methods are those of ``_rpcs.Methods``."""

from __future__ import annotations

import time
from collections.abc import Iterator
from types import TracebackType
from typing import TypeVar, Unpack

import grpc
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from dnd_client._channel import ChannelOptions, ChannelSettings
from dnd_client._requests import ExportPlan, Prepared, WatchPlan
from dnd_client._rpcs import Attempts, Blocking, Methods, Restart, Resume, WatchItem

_R = TypeVar("_R")


class DndClient(Methods, Blocking):
    """Typed blocking client of dnd-service.

    ``timeout`` is the default per-call deadline (seconds). Reads are retried on UNAVAILABLE
    by gRPC; writes only when they carry an ``idempotency_key`` (then a retry can never apply
    twice). Use as ``with DndClient("host:50051") as dnd: ...``.
    """

    def __init__(self, target: str, **options: Unpack[ChannelOptions]) -> None:
        self._settings = ChannelSettings.of(target, **options)
        self._channel = self._settings.open(grpc.insecure_channel, grpc.secure_channel)
        self._stub = dnd_pb2_grpc.DndServiceStub(self._channel)

    def __enter__(self) -> DndClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._channel.close()

    def _unary(self, prepared: Prepared[_R]) -> _R:
        method = getattr(self._stub, prepared.method)
        attempts = Attempts(prepared, self._settings.max_attempts)
        while True:
            try:
                return prepared.unwrap(method(prepared.request, **self._settings.call(prepared)))
            except grpc.RpcError as error:
                time.sleep(attempts.after(error))

    def _stream(self, plan: WatchPlan) -> Iterator[WatchItem]:
        resume = Resume(plan)
        while True:
            call = self._stub.WatchChanges(resume.request(), metadata=self._settings.metadata)
            try:
                for message in call:
                    yield from resume.accept(message)
                delay = resume.ended()
            except grpc.RpcError as error:
                delay = resume.failed(error)
            finally:
                call.cancel()
            time.sleep(delay)

    def _export(self, plan: ExportPlan) -> Iterator[pb.ExportSuppressionsResponse]:
        restart = Restart(plan)
        while True:
            call = self._stub.ExportSuppressions(
                restart.request(), metadata=self._settings.metadata
            )
            try:
                for message in call:
                    restart.accept(message)
                    yield message
                return
            except grpc.RpcError as error:
                delay = restart.failed(error)
            finally:
                call.cancel()
            time.sleep(delay)
