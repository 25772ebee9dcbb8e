"""The call boundary: what every DndService call goes through, unary and streaming alike.

``unary`` and ``stream`` run each handler with one ``Call``, which

- authenticates the caller by its bearer token (UNAUTHENTICATED without a known one);
- refuses a request body that did not decode (INVALID_ARGUMENT, see ``rpc/decoding.py``);
- answers UNAVAILABLE until the servicer has its runtime (the database is ready);
- refuses a response, or a stream message, larger than the send limit (RESOURCE_EXHAUSTED),
  so that the status the client gets is the one counted and logged (gRPC would fail the send
  after the call had been recorded as OK);
- turns a domain error into its status (``rpc/status.py``), a TimeoutError into
  DEADLINE_EXCEEDED and any other exception into INTERNAL (logged with its traceback);
- tells a call that was cancelled, lost its transport or outlived its deadline (CANCELLED,
  DEADLINE_EXCEEDED) from one that failed;
- records the call: one metric observation and one log line (``rpc`` for a unary call, the
  stream's own event for a stream) with the method, the code, the duration and the caller;
  with tracing on (``tracing.py``), the location and the code on the call's span.

Handlers get the ``Call``: its caller (``require``, ``may``, ``caller_name``), its runtime
and, for streams, the per-caller stream slots and the re-check of the caller's token.
"""

from __future__ import annotations

import contextlib
import functools
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from time import perf_counter
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import Message

from dnd_server.auth import (
    ANONYMOUS,
    Caller,
    Permission,
    PermissionDenied,
    TokenTable,
    Unauthenticated,
    bearer,
)
from dnd_server.domain.errors import DndError, ResponseTooLarge, TooManyStreams, Unavailable
from dnd_server.metrics import Metrics
from dnd_server.rpc.decoding import Undecodable
from dnd_server.rpc.status import deadline_status, internal_status, status_for
from dnd_server.runtime import Runtime

log = structlog.get_logger("dnd_server.rpc")

Context = grpc.aio.ServicerContext[Any, Any]

# Before authentication: may do nothing, named by no one.
_NOBODY = Caller("", frozenset(), frozenset())

# How often a stream looks its token up again when the tokens file did not change.
_RECHECK_SECONDS = 1.0

# A call cancelled this close to its deadline ended by it: the client's own deadline timer
# may cancel it a moment before the server sees the deadline pass.
_DEADLINE_SLACK_SECONDS = 0.05

_OK = grpc.StatusCode.OK
_CANCELLED = grpc.StatusCode.CANCELLED
_DEADLINE_EXCEEDED = grpc.StatusCode.DEADLINE_EXCEEDED


class Boundary:
    """What the calls of one servicer share: the tokens in force (None: no authentication,
    on loopback or explicitly disabled; replaced whole when the tokens file is reloaded),
    the runtime (None until the database is ready), metrics, limits and the streams open
    per caller."""

    def __init__(
        self,
        *,
        tokens: TokenTable | None = None,
        read_sample_rate: float = 0.0,
        max_response_bytes: int = 4 << 20,
        max_streams_per_caller: int = 64,
    ) -> None:
        self.runtime: Runtime | None = None
        self.tokens = tokens
        self.metrics: Metrics | None = None
        # With tracing on (``tracing.py``): puts the end of each call on its span.
        self.annotate: Callable[[Call, grpc.StatusCode], None] | None = None
        # Fraction of successful hot reads logged.
        self.read_sample_rate = read_sample_rate
        # The largest response gRPC is set to send; a larger answer is refused before.
        self.max_response_bytes = max_response_bytes
        self.max_streams_per_caller = max_streams_per_caller
        self.streams: dict[str, int] = {}

    def register_metrics(self, metrics: Metrics) -> None:
        """Count every call in ``metrics``, and report the open streams."""
        self.metrics = metrics
        metrics.live.watch_streams = lambda: float(sum(self.streams.values()))

    def authenticate(self, context: Context) -> Caller:
        if self.tokens is None:
            return ANONYMOUS
        token = bearer(context.invocation_metadata())
        if token is None:
            raise Unauthenticated(
                "missing bearer token: send metadata 'authorization: Bearer <token>'"
            )
        caller = self.tokens.authenticate(token)
        if caller is None:
            raise Unauthenticated("unknown token")
        return caller


# A response as a handler yields it: a message, or a stream message already serialized.
_S = TypeVar("_S", bound=Message | bytes)


@dataclass(frozen=True, slots=True)
class Rpc:
    """What the boundary knows of one RPC: its method name, whether it is a hot read (only
    failures and a sample of successes logged), the event of its log line, and whether it
    streams (its log line then counts the events sent)."""

    method: str
    hot: bool = False
    event: str = "rpc"
    streaming: bool = False


class Call:
    """One call through the boundary (see the module docstring): ``unary`` and ``stream``
    admit it, run the handler with it, and end it with ``record`` or ``failed``."""

    __slots__ = (
        "boundary",
        "caller_name",
        "context",
        "events",
        "request",
        "rpc",
        "runtime",
        "started",
        "status",
        "who",
    )

    # Set by ``admit``: the authenticated caller; who really makes the call, as recorded on
    # its changes and its log line (the token's name, or ``anonymous <peer>`` without
    # tokens: taken while the call is on, as the peer of a call that has ended may no longer
    # be asked for); the runtime serving it.
    who: Caller
    caller_name: str
    runtime: Runtime
    # Set when the call failed: the status it is answered with.
    status: grpc.Status
    # The events a stream sent, on its log line (counted by its handler).
    events: int

    def __init__(self, boundary: Boundary, rpc: Rpc, request: object, context: Context) -> None:
        self.boundary = boundary
        self.rpc = rpc
        self.request = request
        self.context = context
        self.started = perf_counter()

    def admit(self) -> None:
        """Authenticate the caller, and refuse an undecodable request or a call before the
        runtime is ready."""
        boundary = self.boundary
        self.caller_name = ""
        who = self.who = boundary.authenticate(self.context)
        self.caller_name = f"{who.name} {_peer(self.context)}" if who is ANONYMOUS else who.name
        if isinstance(self.request, Undecodable):
            raise self.request.invalid()
        runtime = boundary.runtime
        if runtime is None:
            raise Unavailable("the service is starting: the database is not ready yet")
        self.runtime = runtime

    @property
    def method(self) -> str:
        return self.rpc.method

    @property
    def location_id(self) -> str:
        """The location the request names (its first 128 characters; "" for none)."""
        return _location(self.request)

    # -- the caller ----------------------------------------------------------------------------

    def require(self, permission: Permission, *locations: str) -> None:
        self.who.require(permission, locations)

    def may(self, permission: Permission) -> bool:
        return permission in self.who.permissions

    def reach(self, named: frozenset[str]) -> frozenset[str]:
        """The locations a request naming ``named`` covers (see ``Caller.reach``)."""
        return self.who.reach(named)

    # -- answers -------------------------------------------------------------------------------

    def fits(self, response: _S) -> _S:
        """``response`` (a message, or a stream message already serialized), unless it is
        larger than the send limit: then ResponseTooLarge."""
        size = len(response) if isinstance(response, bytes) else response.ByteSize()
        if size > self.boundary.max_response_bytes:
            raise ResponseTooLarge(size, self.boundary.max_response_bytes)
        return response

    # -- streams -------------------------------------------------------------------------------

    @contextlib.contextmanager
    def stream_slot(self) -> Iterator[None]:
        """Hold one of the caller's stream slots while the stream runs (TooManyStreams when
        it holds them all): streams are counted per token, or per client host without
        tokens."""
        boundary = self.boundary
        name = _peer_host(_peer(self.context)) if self.who is ANONYMOUS else self.who.name
        streams = boundary.streams
        if streams.get(name, 0) >= boundary.max_streams_per_caller:
            raise TooManyStreams(boundary.max_streams_per_caller)
        streams[name] = streams.get(name, 0) + 1
        try:
            yield
        finally:
            streams[name] -= 1
            if not streams[name]:
                del streams[name]

    def recheck(self, permission: Permission, locations: frozenset[str]) -> Callable[[], None]:
        """A check run before each message of a stream: a token removed from the tokens file,
        expired, or no longer allowed ``permission`` on ``locations`` ends the stream (at
        the latest with the next bookmark). The token is looked up again when the table was
        reloaded, and at most once a second otherwise (for its expiry)."""
        boundary = self.boundary
        table = boundary.tokens
        checked = time.monotonic()

        def check() -> None:
            nonlocal table, checked
            if table is None:
                return
            now = time.monotonic()
            if boundary.tokens is table and now - checked < _RECHECK_SECONDS:
                return
            table, checked = boundary.tokens, now
            caller = boundary.authenticate(self.context)
            if not locations and caller.locations is not None:
                # The stream follows every location (its token had "*"): a token narrowed to
                # some locations may not go on watching the others.
                raise PermissionDenied(
                    f"caller {caller.name!r} may no longer act on every location; open a "
                    "stream naming the locations it may"
                )
            caller.require(permission, locations)

        return check

    # -- the end of the call -------------------------------------------------------------------

    def failed(self, error: BaseException) -> bool:
        """Record a call that raised ``error``. True: the error became the status to answer
        with (``status``); False: the call was cancelled or the like, and ``error`` is to
        propagate."""
        if isinstance(error, Exception):
            if isinstance(error, DndError):
                status = status_for(error)
            elif isinstance(error, TimeoutError):
                status = deadline_status()
            else:
                log.exception("rpc_internal_error", method=self.rpc.method, exc_info=error)
                status = internal_status()
            self.status = status
            self.record(status.code)
            return True
        # CancelledError: the call ended while awaiting (a stream: while waiting for changes);
        # GeneratorExit: a stream ended while gRPC was sending (gRPC stops reading the stream
        # and closes it). Either way the client cancelled, its transport was cut, or the
        # deadline passed.
        remaining = self.context.time_remaining()
        expired = remaining is not None and remaining <= _DEADLINE_SLACK_SECONDS
        self.record(_DEADLINE_EXCEEDED if expired else _CANCELLED)
        return False

    def record(self, code: grpc.StatusCode) -> None:
        """Count the call and log its line (a hot read's success only when sampled)."""
        seconds = perf_counter() - self.started
        boundary = self.boundary
        rpc = self.rpc
        if boundary.metrics is not None:
            boundary.metrics.observe(rpc.method, code.name, seconds)
        if boundary.annotate is not None:
            boundary.annotate(self, code)
        if rpc.hot and code is _OK:
            rate = boundary.read_sample_rate
            if not rate or random.random() >= rate:
                return
        caller = getattr(self, "caller_name", "")
        fields: dict[str, object] = {
            "method": rpc.method,
            "code": code.name,
            "duration_ms": round(seconds * 1000, 3),
            "location_id": _location(self.request),
            "caller": caller or f"unauthenticated {_peer(self.context)}",
        }
        if rpc.streaming:
            fields["events"] = self.events
        log.info(rpc.event, **fields)


_B = TypeVar("_B", bound=Boundary)
_R = TypeVar("_R")
_T = TypeVar("_T", bound=Message)

UnaryHandler = Callable[[_B, _R, Call], Awaitable[_T]]
UnaryMethod = Callable[[_B, _R, grpc.aio.ServicerContext[_R, _T]], Awaitable[_T]]
StreamHandler = Callable[[_B, _R, Call], AsyncGenerator[_S, None]]
StreamMethod = Callable[[_B, _R, grpc.aio.ServicerContext[_R, _S]], AsyncIterator[_S]]


def unary(
    method: str, hot: bool = False
) -> Callable[[UnaryHandler[_B, _R, _T]], UnaryMethod[_B, _R, _T]]:
    """A unary RPC through the boundary: the handler gets the admitted ``Call``. ``hot``
    reads log only failures and a configurable sample of successes."""

    rpc = Rpc(method, hot=hot)

    def wrap(fn: UnaryHandler[_B, _R, _T]) -> UnaryMethod[_B, _R, _T]:
        @functools.wraps(fn)
        async def handler(self: _B, request: _R, context: grpc.aio.ServicerContext[_R, _T]) -> _T:
            call = Call(self, rpc, request, context)
            try:
                call.admit()
                response = call.fits(await fn(self, request, call))
            except BaseException as error:
                if not call.failed(error):
                    raise
            else:
                call.record(_OK)
                return response
            await context.abort_with_status(call.status)

        return handler

    return wrap


def stream(
    method: str, ended: str
) -> Callable[[StreamHandler[_B, _R, _S]], StreamMethod[_B, _R, _S]]:
    """A server-streaming RPC through the boundary: the handler gets the admitted ``Call``
    and counts the events it sends in ``call.events``; its end is logged as ``ended``."""

    rpc = Rpc(method, event=ended, streaming=True)

    def wrap(fn: StreamHandler[_B, _R, _S]) -> StreamMethod[_B, _R, _S]:
        @functools.wraps(fn)
        async def handler(
            self: _B, request: _R, context: grpc.aio.ServicerContext[_R, _S]
        ) -> AsyncIterator[_S]:
            call = Call(self, rpc, request, context)
            call.events = 0
            try:
                call.admit()
                if self.annotate is not None:
                    # Until its end is known the stream's span says CANCELLED: when the client
                    # leaves while a message is being sent, the tracing interceptor ends the
                    # span before this handler hears of it.
                    self.annotate(call, _CANCELLED)
                async with contextlib.aclosing(fn(self, request, call)) as messages:
                    async for message in messages:
                        yield call.fits(message)
            except BaseException as error:
                if not call.failed(error):
                    raise
            else:
                call.record(_OK)
                return
            await context.abort_with_status(call.status)

        return handler

    return wrap


def _location(request: object) -> str:
    value = getattr(request, "location_id", "")
    return value[:128] if isinstance(value, str) else ""


def _peer(context: Context) -> str:
    """The client's address as gRPC reports it, e.g. ``ipv4:127.0.0.1:5555``."""
    peer = context.peer()
    return peer if isinstance(peer, str) and peer else "unknown-peer"


def _peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` -> ``ipv4:127.0.0.1``: streams are counted per client host."""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer
