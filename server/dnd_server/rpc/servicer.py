"""The DndService servicer: validate, call the use case, map the answer; errors in one place."""

from __future__ import annotations

import asyncio
import functools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Protocol, TypeVar

import grpc
import structlog
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from dnd_server.cursor import encode_cursor
from dnd_server.domain.errors import DndError, Unavailable
from dnd_server.rpc import validate
from dnd_server.rpc.convert import block_to_pb, status_to_pb
from dnd_server.rpc.status import deadline_status, internal_status, status_for
from dnd_server.service import DndService

log = structlog.get_logger("dnd_server.rpc")

_Req = TypeVar("_Req", contravariant=True)
_Resp = TypeVar("_Resp", covariant=True)


class _HasLocation(Protocol):
    @property
    def location_id(self) -> str: ...


_S = TypeVar("_S", bound="DndServicer")
_R = TypeVar("_R", bound=_HasLocation)
_T = TypeVar("_T")

Handler = Callable[[_S, _R, grpc.aio.ServicerContext[_R, _T]], Awaitable[_T]]


def rpc(name: str, hot: bool = False) -> Callable[[Handler[_S, _R, _T]], Handler[_S, _R, _T]]:
    """Wrap a unary handler: readiness gate, error → status, one log line per call.

    ``hot`` reads log only failures and a configurable sample of successes.
    """

    def wrap(fn: Handler[_S, _R, _T]) -> Handler[_S, _R, _T]:
        @functools.wraps(fn)
        async def handler(self: _S, request: _R, context: grpc.aio.ServicerContext[_R, _T]) -> _T:
            started = time.perf_counter()
            code = grpc.StatusCode.OK
            status: grpc.Status | None = None
            try:
                if self.service is None:
                    raise Unavailable("the service is starting: the database is not ready yet")
                return await fn(self, request, context)
            except DndError as error:
                status = status_for(error)
            except asyncio.CancelledError:
                code = grpc.StatusCode.CANCELLED
                if context.time_remaining() is not None and context.time_remaining() <= 0:
                    code = grpc.StatusCode.DEADLINE_EXCEEDED
                raise
            except TimeoutError:
                status = deadline_status()
            except Exception:
                log.exception("rpc_internal_error", method=name)
                status = internal_status()
            finally:
                if status is not None:
                    code = status.code
                if not hot or code is not grpc.StatusCode.OK or self.sampled():
                    log.info(
                        "rpc",
                        method=name,
                        code=code.name,
                        duration_ms=round((time.perf_counter() - started) * 1000, 3),
                        location_id=_location(request),
                    )
            assert status is not None
            await context.abort_with_status(status)

        return handler

    return wrap


def _location(request: object) -> str:
    value = getattr(request, "location_id", "")
    return value[:128] if isinstance(value, str) else ""


class DndServicer(dnd_pb2_grpc.DndServiceServicer):
    def __init__(self, read_sample_rate: float = 0.0) -> None:
        # Set once the database is reachable and migrated.
        self.service: DndService | None = None
        self._sample_rate = read_sample_rate

    def sampled(self) -> bool:
        return self._sample_rate > 0 and random.random() < self._sample_rate

    def _svc(self) -> DndService:
        assert self.service is not None
        return self.service

    @rpc("GetStatus", hot=True)
    async def GetStatus(
        self,
        request: pb.GetStatusRequest,
        context: grpc.aio.ServicerContext[pb.GetStatusRequest, pb.GetStatusResponse],
    ) -> pb.GetStatusResponse:
        location_id, contact_id = validate.get_status(request)
        state, _ = await self._svc().get_status(location_id, contact_id)
        return pb.GetStatusResponse(status=status_to_pb(state))

    @rpc("SetDnd")
    async def SetDnd(
        self,
        request: pb.SetDndRequest,
        context: grpc.aio.ServicerContext[pb.SetDndRequest, pb.SetDndResponse],
    ) -> pb.SetDndResponse:
        command = validate.set_dnd(request)
        result = await self._svc().set_dnd(command)
        return pb.SetDndResponse(
            status=status_to_pb(result.state),
            changed=bool(result.steps),
            affected_blocks=[block_to_pb(step.block) for step in result.steps],
            cursor=encode_cursor(result.last_seq),
        )

    @rpc("CheckSend", hot=True)
    async def CheckSend(
        self,
        request: pb.CheckSendRequest,
        context: grpc.aio.ServicerContext[pb.CheckSendRequest, pb.CheckSendResponse],
    ) -> pb.CheckSendResponse:
        location_id, contact_id, channel, direction = validate.check_send(request)
        decision, state = await self._svc().check_send(location_id, contact_id, channel, direction)
        return pb.CheckSendResponse(
            allowed=decision.allowed,
            denied_by=[block_to_pb(b) for b in decision.denied_by],
            version=state.version,
            explanation=decision.explanation,
        )

    async def WatchChanges(
        self,
        request: pb.WatchChangesRequest,
        context: grpc.aio.ServicerContext[pb.WatchChangesRequest, pb.WatchChangesResponse],
    ) -> AsyncIterator[pb.WatchChangesResponse]:
        await context.abort(
            grpc.StatusCode.UNIMPLEMENTED,
            "WatchChanges is declared but not implemented yet in this version of dnd-service",
        )
        yield pb.WatchChangesResponse()  # pragma: no cover - makes this an async generator
