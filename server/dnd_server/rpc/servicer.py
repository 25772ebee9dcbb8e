"""The DndService servicer: validate, call the use case, map the answer; errors in one place."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import hashlib
import random
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from typing import Any, Protocol, TypeVar

import grpc
import structlog
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from google.protobuf.message import Message

from dnd_server.auth import (
    ANONYMOUS,
    SOURCE_SCOPES,
    Caller,
    PermissionDenied,
    Scope,
    TokenTable,
    Unauthenticated,
    bearer,
)
from dnd_server.cursor import encode_bookmark, encode_cursor, encode_page_token
from dnd_server.domain.errors import DndError, ResponseTooLarge, TooManyStreams, Unavailable
from dnd_server.domain.keywords import (
    HELP_WORDS,
    OPT_IN_WORDS,
    OPT_OUT_WORDS,
    REVOCATION_PHRASES,
    KeywordKind,
    KeywordSettings,
)
from dnd_server.domain.model import INBOUND_CHANNELS, Block, Channel, Direction, Source
from dnd_server.domain.rules import SendDecision, explain_address_denial
from dnd_server.feed import ChangeFeed
from dnd_server.metrics import Metrics
from dnd_server.rpc import validate
from dnd_server.rpc.convert import (
    KEYWORD_ACTION_TO_PB,
    REASON_TO_PB,
    block_summary_to_pb,
    block_to_pb,
    change_to_pb,
    history_to_pb,
    status_to_pb,
    suppression_summary_to_pb,
    suppression_to_pb,
)
from dnd_server.rpc.decoding import Undecodable
from dnd_server.rpc.status import deadline_status, internal_status, status_for
from dnd_server.service import DndService, InboundDecision, ProviderEvent
from dnd_server.storage.store import ChangeRow, Idempotency, Replay, WriteResult
from dnd_server.watch import WatchSettings

log = structlog.get_logger("dnd_server.rpc")

# The authenticated caller of the RPC being handled.
CALLER: contextvars.ContextVar[Caller] = contextvars.ContextVar("caller", default=ANONYMOUS)


def require(scope: Scope, *locations: str) -> None:
    CALLER.get().require(scope, locations)


class _HasLocation(Protocol):
    @property
    def location_id(self) -> str: ...


_S = TypeVar("_S", bound="DndServicer")
_R = TypeVar("_R", bound=_HasLocation)
_T = TypeVar("_T", bound=Message)

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
            caller = ""
            try:
                CALLER.set(self.authenticate(context))
                caller = self.recorded_caller(context)
                if isinstance(request, Undecodable):
                    raise request.invalid()
                if self.service is None:
                    raise Unavailable("the service is starting: the database is not ready yet")
                return self.fits(await fn(self, request, context))
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
                if self.metrics is not None:
                    self.metrics.observe(name, code.name, time.perf_counter() - started)
                if not hot or code is not grpc.StatusCode.OK or self.sampled():
                    log.info(
                        "rpc",
                        method=name,
                        code=code.name,
                        duration_ms=round((time.perf_counter() - started) * 1000, 3),
                        location_id=_location(request),
                        caller=caller or f"unauthenticated {_peer(context)}",
                    )
            assert status is not None
            await context.abort_with_status(status)

        return handler

    return wrap


def _location(request: object) -> str:
    value = getattr(request, "location_id", "")
    return value[:128] if isinstance(value, str) else ""


_M = TypeVar("_M", bound=Message)


def idempotency_for(
    method: str, request: Message, key: str, build: Callable[[WriteResult], Message]
) -> Idempotency | None:
    """The idempotency claim of a mutating request (None without a key): the request is
    hashed without its key, and ``build`` encodes the answer kept for retries."""
    if not key:
        return None
    copy = type(request)()
    copy.CopyFrom(request)
    copy.ClearField("idempotency_key")
    digest = hashlib.sha256(method.encode() + b"\0" + copy.SerializeToString(deterministic=True))
    return Idempotency(key, method, digest.digest(), lambda r: build(r).SerializeToString())


def answer(outcome: WriteResult | Replay, build: Callable[[WriteResult], _M], cls: type[_M]) -> _M:
    if isinstance(outcome, Replay):
        return cls.FromString(outcome.response)
    return build(outcome)


class DndServicer(dnd_pb2_grpc.DndServiceServicer):
    def __init__(
        self,
        read_sample_rate: float = 0.0,
        phone_region: str = "US",
        tokens: TokenTable | None = None,
        max_streams_per_caller: int = 64,
        max_response_bytes: int = 4 << 20,
    ) -> None:
        # Set once the database is reachable and migrated.
        self.service: DndService | None = None
        # The largest response gRPC is set to send; a larger answer is refused before.
        self.max_response_bytes = max_response_bytes
        # None: no authentication (loopback or explicitly disabled).
        self.tokens = tokens
        self.max_streams_per_caller = max_streams_per_caller
        self.streams: dict[str, int] = {}
        self._events: OrderedDict[int, pb.WatchChangesResponse] = OrderedDict()
        self.metrics: Metrics | None = None
        self._sample_rate = read_sample_rate
        self._region = phone_region
        # Set with the service: the process's change feed and the stream settings.
        self.feed: ChangeFeed | None = None
        self.watch_settings: WatchSettings | None = None

    def authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
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

    def recorded_caller(self, context: grpc.aio.ServicerContext[Any, Any]) -> str:
        """Who really makes the call, as recorded on its changes and its log line: the
        authenticated token's name, or ``anonymous <peer>`` without tokens."""
        if self.tokens is None:
            return f"{ANONYMOUS.name} {_peer(context)}"
        return CALLER.get().name

    def fits(self, response: _M) -> _M:
        """``response``, unless it is too large to send: then ResponseTooLarge, so that the
        status the client gets is the one counted and logged (gRPC would fail the send after
        the call had been recorded as OK)."""
        size = response.ByteSize()
        if size > self.max_response_bytes:
            raise ResponseTooLarge(size, self.max_response_bytes)
        return response

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
        location_id, contact_id, addresses, options = validate.get_status(request, self._region)
        require(Scope.READ, location_id)
        state = await self._svc().get_status(location_id, contact_id, addresses, options)
        return pb.GetStatusResponse(status=status_to_pb(state))

    @rpc("SetDnd")
    async def SetDnd(
        self,
        request: pb.SetDndRequest,
        context: grpc.aio.ServicerContext[pb.SetDndRequest, pb.SetDndResponse],
    ) -> pb.SetDndResponse:
        command = validate.set_dnd(request, self._region)
        require(SOURCE_SCOPES[command.meta.source], command.location_id)
        command = replace(command, meta=replace(command.meta, caller=self.recorded_caller(context)))

        def build(result: WriteResult) -> pb.SetDndResponse:
            return pb.SetDndResponse(
                status=status_to_pb(result.state),
                changed=bool(result.steps),
                affected_blocks=[
                    block_to_pb(step.target)
                    for step in result.steps
                    if isinstance(step.target, Block)
                ],
                cursor=encode_cursor(result.last_seq),
            )

        claim = idempotency_for("SetDnd", request, request.idempotency_key, build)
        return answer(await self._svc().set_dnd(command, claim), build, pb.SetDndResponse)

    @rpc("CheckSend", hot=True)
    async def CheckSend(
        self,
        request: pb.CheckSendRequest,
        context: grpc.aio.ServicerContext[pb.CheckSendRequest, pb.CheckSendResponse],
    ) -> pb.CheckSendResponse:
        location_id, contact_id, channel, direction, address, options = validate.check_send(
            request, self._region
        )
        require(Scope.CHECK, location_id)
        decision, state = await self._svc().check_send(
            location_id, contact_id, channel, direction, address, options
        )
        if decision.allowed:
            return pb.CheckSendResponse(
                allowed=True, version=state.version, explanation=decision.explanation
            )
        if Scope.READ in CALLER.get().scopes:
            return pb.CheckSendResponse(
                allowed=False,
                denied_by=[block_to_pb(b) for b in decision.denied_by],
                version=state.version,
                explanation=decision.explanation,
                denied_by_address=[suppression_to_pb(s) for s in decision.denied_by_address],
            )
        blocks, suppressions, explanation = denial_summary(decision, channel)
        return pb.CheckSendResponse(
            allowed=False,
            denied_by=blocks,
            version=state.version,
            explanation=explanation,
            denied_by_address=suppressions,
        )

    @rpc("BatchCheckSend", hot=True)
    async def BatchCheckSend(
        self,
        request: pb.BatchCheckSendRequest,
        context: grpc.aio.ServicerContext[pb.BatchCheckSendRequest, pb.BatchCheckSendResponse],
    ) -> pb.BatchCheckSendResponse:
        location_id, channel, direction, targets, options = validate.batch_check_send(
            request, self._region
        )
        require(Scope.CHECK, location_id)
        details = request.include_details
        if details and Scope.READ not in CALLER.get().scopes:
            raise PermissionDenied(
                f"caller {CALLER.get().name!r} lacks the 'read' scope, which include_details "
                "needs; ask without it for the compact answers"
            )
        # Each distinct (contact, normalised address) is decided and answered once.
        unique = list(dict.fromkeys(targets))
        answers = await self._svc().batch_check(location_id, channel, direction, unique, options)
        allowance = min(DETAILS_ALLOWANCE, self.max_response_bytes // 2)
        first: dict[tuple[str, str], int] = {}
        by_target = dict(zip(unique, answers, strict=True))
        results = []
        for index, target in enumerate(targets):
            decision, state = by_target[target]
            earlier = first.setdefault(target, index)
            if earlier != index:
                results.append(
                    pb.CheckResult(
                        contact_id=target[0],
                        allowed=decision.allowed,
                        version=state.version,
                        repeat_of=earlier,
                    )
                )
                continue
            if decision.allowed:  # most answers: no repeated fields to build
                results.append(
                    pb.CheckResult(
                        contact_id=target[0],
                        allowed=True,
                        version=state.version,
                        explanation=decision.explanation,
                    )
                )
                continue
            if details and allowance >= 0:
                full = pb.CheckResult(
                    contact_id=target[0],
                    allowed=False,
                    denied_by=[block_to_pb(b) for b in decision.denied_by],
                    denied_by_address=[suppression_to_pb(s) for s in decision.denied_by_address],
                    version=state.version,
                    explanation=decision.explanation,
                )
                size = full.ByteSize()
                if size <= allowance:
                    allowance -= size
                    results.append(full)
                    continue
                allowance = -1  # in request order: no later result gets details either
            blocks, suppressions, explanation = denial_summary(decision, channel)
            results.append(
                pb.CheckResult(
                    contact_id=target[0],
                    allowed=False,
                    denied_by=blocks,
                    denied_by_address=suppressions,
                    version=state.version,
                    explanation=explanation,
                    details_omitted=details,
                )
            )
        return pb.BatchCheckSendResponse(results=results)

    async def WatchChanges(
        self,
        request: pb.WatchChangesRequest,
        context: grpc.aio.ServicerContext[pb.WatchChangesRequest, pb.WatchChangesResponse],
    ) -> AsyncIterator[pb.WatchChangesResponse]:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        status: grpc.Status | None = None
        sent = 0
        counted = ""
        try:
            caller = self.authenticate(context)
            if isinstance(request, Undecodable):
                raise request.invalid()
            if self.service is None or self.feed is None or self.watch_settings is None:
                raise Unavailable("the service is starting: the database is not ready yet")
            flt, after, cursor_text = validate.watch(request)
            if caller.locations is not None and not flt.locations:
                if not caller.locations:
                    raise PermissionDenied(f"caller {caller.name!r} may act on no location")
                flt = replace(flt, locations=caller.locations)
            caller.require(Scope.WATCH, flt.locations)
            name = caller.name if self.tokens is not None else _peer_host(context.peer())
            if self.streams.get(name, 0) >= self.max_streams_per_caller:
                raise TooManyStreams(self.max_streams_per_caller)
            self.streams[name] = self.streams.get(name, 0) + 1
            counted = name
            log.info(
                "watch_started",
                resume=after is not None,
                locations=len(flt.locations),
                caller=self.recorded_caller(context) if self.tokens is None else caller.name,
            )
            changes = self.service.watch(self.feed, flt, after, self.watch_settings, cursor_text)
            still_allowed = self._still_allowed(context, flt.locations)
            async with contextlib.aclosing(changes):
                async for item in changes:
                    still_allowed()
                    if isinstance(item, int):
                        bookmark = pb.Bookmark(cursor=encode_bookmark(item))
                        yield pb.WatchChangesResponse(bookmark=bookmark)
                    else:
                        yield self._event_message(item)
                        sent += 1
        except DndError as error:
            status = status_for(error)
        except (asyncio.CancelledError, GeneratorExit):
            # CancelledError: the stream ended while waiting for changes; GeneratorExit: while
            # gRPC was sending (gRPC stops reading the stream and closes it). Either way the
            # client cancelled, its transport was cut, or the deadline passed.
            code = grpc.StatusCode.CANCELLED
            remaining = context.time_remaining()
            if remaining is not None and remaining <= 0:
                code = grpc.StatusCode.DEADLINE_EXCEEDED
            raise
        except Exception:
            log.exception("rpc_internal_error", method="WatchChanges")
            status = internal_status()
        finally:
            if counted:
                self.streams[counted] -= 1
                if not self.streams[counted]:
                    del self.streams[counted]
            if status is not None:
                code = status.code
            if self.metrics is not None:
                self.metrics.observe("WatchChanges", code.name, time.perf_counter() - started)
            log.info(
                "watch_ended",
                code=code.name,
                events=sent,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            )
        if status is not None:
            await context.abort_with_status(status)

    def _still_allowed(
        self, context: grpc.aio.ServicerContext[Any, Any], locations: frozenset[str]
    ) -> Callable[[], None]:
        """A check run before each message of a stream: a token removed from the tokens file,
        expired, or no longer allowed to watch these locations ends the stream (at the latest
        with the next bookmark). The token is looked up again when the table was reloaded, and
        at most once a second otherwise (for its expiry)."""
        table = self.tokens
        checked = time.monotonic()

        def check() -> None:
            nonlocal table, checked
            if table is None:
                return
            now = time.monotonic()
            if self.tokens is table and now - checked < _RECHECK_SECONDS:
                return
            table, checked = self.tokens, now
            caller = self.authenticate(context)
            caller.require(Scope.WATCH, locations)

        return check

    def _event_message(self, change: ChangeRow) -> pb.WatchChangesResponse:
        """The stream message of a change, built once and shared by every stream."""
        message = self._events.get(change.seq)
        if message is None:
            event = change_to_pb(change, encode_cursor(change.seq))
            message = pb.WatchChangesResponse(event=event)
            self._events[change.seq] = message
            if len(self._events) > _EVENT_MESSAGES:
                self._events.popitem(last=False)
        return message

    @rpc("ProcessInboundMessage")
    async def ProcessInboundMessage(
        self,
        request: pb.ProcessInboundMessageRequest,
        context: grpc.aio.ServicerContext[
            pb.ProcessInboundMessageRequest, pb.ProcessInboundMessageResponse
        ],
    ) -> pb.ProcessInboundMessageResponse:
        message = validate.inbound_message(request, self._region)
        require(Scope.CONTACT, message.location_id)
        message = replace(message, caller=self.recorded_caller(context))

        def build(result: WriteResult) -> pb.ProcessInboundMessageResponse:
            decided = result.detail
            assert isinstance(decided, InboundDecision)
            state = result.state
            sms_blocks = [b for b in state.blocks if b.covers(Direction.OUTBOUND, Channel.SMS)]
            inbound_on = any(b.direction is Direction.INBOUND for b in state.blocks)
            # Inbound DND stops inbound calls and SMS only.
            withheld = inbound_on and message.channel in INBOUND_CHANNELS
            return pb.ProcessInboundMessageResponse(
                action=KEYWORD_ACTION_TO_PB[decided.action],
                matched_keyword=(
                    decided.keyword.matched if decided.action is not KeywordKind.NONE else ""
                ),
                deliver_to_inbox=not withheld,
                changed=bool(result.steps),
                status=status_to_pb(state),
                cursor=encode_cursor(result.last_seq),
                sms_blocked=bool(sms_blocks)
                or any(s.channel is Channel.SMS for s in state.suppressions),
                sms_blocked_by=[block_to_pb(b) for b in sms_blocks],
                explanation=explain_inbound(message.channel, decided, sms_blocks, withheld),
            )

        claim = idempotency_for("ProcessInboundMessage", request, request.idempotency_key, build)
        outcome = await self._svc().inbound_message(message, claim)
        return answer(outcome, build, pb.ProcessInboundMessageResponse)

    async def _provider_event(
        self,
        method: str,
        request: pb.ReportSmsDeliveryFailureRequest | pb.ReportEmailEventRequest,
        event: ProviderEvent,
        cls: type[_E],
    ) -> _E:
        def build(result: WriteResult) -> _E:
            if event.effect is None:
                outcome = pb.EVENT_OUTCOME_IGNORED
                why = "ignored: this event does not set DND"
            elif result.steps:
                outcome = pb.EVENT_OUTCOME_APPLIED
                why = f"applied: {event.effect[0].value} set on {event.channel.value}"
            else:
                outcome = pb.EVENT_OUTCOME_ALREADY_ACTIVE
                why = f"unchanged: {event.effect[0].value} was already active"
            return cls(
                outcome=outcome,
                reason=REASON_TO_PB[event.effect[0]] if event.effect else pb.REASON_UNSPECIFIED,
                changed=bool(result.steps),
                status=status_to_pb(result.state),
                cursor=encode_cursor(result.last_seq),
                explanation=why,
            )

        claim = idempotency_for(method, request, request.idempotency_key, build)
        return answer(await self._svc().provider_event(event, claim), build, cls)

    @rpc("ReportSmsDeliveryFailure")
    async def ReportSmsDeliveryFailure(
        self,
        request: pb.ReportSmsDeliveryFailureRequest,
        context: grpc.aio.ServicerContext[
            pb.ReportSmsDeliveryFailureRequest, pb.ReportSmsDeliveryFailureResponse
        ],
    ) -> pb.ReportSmsDeliveryFailureResponse:
        event = validate.sms_failure(request, self._region)
        require(Scope.WRITE, event.location_id)
        event = replace(event, caller=self.recorded_caller(context))
        return await self._provider_event(
            "ReportSmsDeliveryFailure", request, event, pb.ReportSmsDeliveryFailureResponse
        )

    @rpc("ReportEmailEvent")
    async def ReportEmailEvent(
        self,
        request: pb.ReportEmailEventRequest,
        context: grpc.aio.ServicerContext[pb.ReportEmailEventRequest, pb.ReportEmailEventResponse],
    ) -> pb.ReportEmailEventResponse:
        event = validate.email_event(request, self._region)
        acting_as = event.effect[1] if event.effect else Source.SYSTEM
        require(SOURCE_SCOPES[acting_as], event.location_id)
        event = replace(event, caller=self.recorded_caller(context))
        return await self._provider_event(
            "ReportEmailEvent", request, event, pb.ReportEmailEventResponse
        )

    @rpc("ListHistory")
    async def ListHistory(
        self,
        request: pb.ListHistoryRequest,
        context: grpc.aio.ServicerContext[pb.ListHistoryRequest, pb.ListHistoryResponse],
    ) -> pb.ListHistoryResponse:
        query = validate.list_history(request, self._region)
        require(Scope.READ, query.location_id)
        size = query.page_size
        rows = await self._svc().history(query, size + 1)
        page = rows[:size]
        more = len(rows) > size
        # Pages are cut by sequence number: changes committed while paging (all above the
        # first page's) never shift later pages.
        return pb.ListHistoryResponse(
            entries=[history_to_pb(row, encode_cursor(row.seq)) for row in page],
            next_page_token=encode_page_token(page[-1].seq) if more else "",
        )

    @rpc("GetKeywordSettings")
    async def GetKeywordSettings(
        self,
        request: pb.GetKeywordSettingsRequest,
        context: grpc.aio.ServicerContext[
            pb.GetKeywordSettingsRequest, pb.GetKeywordSettingsResponse
        ],
    ) -> pb.GetKeywordSettingsResponse:
        location_id = validate.get_keyword_settings(request)
        require(Scope.READ, location_id)
        settings = await self._svc().keyword_settings(location_id)
        return pb.GetKeywordSettingsResponse(
            settings=settings_to_pb(settings),
            default_opt_out_words=sorted(OPT_OUT_WORDS),
            default_opt_in_words=sorted(OPT_IN_WORDS),
            help_words=sorted(HELP_WORDS),
            revocation_phrases=list(REVOCATION_PHRASES),
        )

    @rpc("UpdateKeywordSettings")
    async def UpdateKeywordSettings(
        self,
        request: pb.UpdateKeywordSettingsRequest,
        context: grpc.aio.ServicerContext[
            pb.UpdateKeywordSettingsRequest, pb.UpdateKeywordSettingsResponse
        ],
    ) -> pb.UpdateKeywordSettingsResponse:
        settings = validate.update_keyword_settings(request)
        require(Scope.WRITE, request.location_id)
        await self._svc().update_keyword_settings(request.location_id, settings)
        return pb.UpdateKeywordSettingsResponse(settings=settings_to_pb(settings))


_E = TypeVar("_E", pb.ReportSmsDeliveryFailureResponse, pb.ReportEmailEventResponse)

# The part of a BatchCheckSend response that details (include_details) may take, at most.
DETAILS_ALLOWANCE = 2 << 20


def denial_summary(
    decision: SendDecision, channel: Channel
) -> tuple[list[pb.Block], list[pb.AddressSuppression], str]:
    """What denies a send, without the dossier: block and suppression summaries, and an
    explanation naming no other contact."""
    explanation = decision.explanation
    if not decision.denied_by and decision.denied_by_address:
        first = decision.denied_by_address[0]
        explanation = explain_address_denial(first, channel, name_holder=False)
    return (
        [block_summary_to_pb(b) for b in decision.denied_by],
        [suppression_summary_to_pb(s) for s in decision.denied_by_address],
        explanation,
    )


# How often a stream looks its token up again when the tokens file did not change.
_RECHECK_SECONDS = 1.0

# Stream messages of recent changes kept for the streams that have yet to send them.
_EVENT_MESSAGES = 4096


def _peer(context: grpc.aio.ServicerContext[Any, Any]) -> str:
    """The client's address as gRPC reports it, e.g. ``ipv4:127.0.0.1:5555``."""
    peer = context.peer()
    return peer if isinstance(peer, str) and peer else "unknown-peer"


def _peer_host(peer: str) -> str:
    """``ipv4:127.0.0.1:5555`` -> ``ipv4:127.0.0.1``: streams are counted per client host."""
    return peer.rsplit(":", 1)[0] if peer.count(":") >= 2 else peer


def settings_to_pb(settings: KeywordSettings) -> pb.KeywordSettings:
    return pb.KeywordSettings(
        extra_opt_out_words=sorted(settings.extra_opt_out_words),
        extra_opt_in_words=sorted(settings.extra_opt_in_words),
        detect_revocation_phrases=settings.detect_revocation_phrases,
    )


def explain_inbound(
    channel: Channel, decided: InboundDecision, sms_blocks: list[Block], withheld: bool
) -> str:
    if channel is not Channel.SMS:
        return f"keywords are not processed on {channel.value}; nothing changed"
    kind = decided.action
    if kind is KeywordKind.OPT_OUT:
        text = f"opted out of SMS ({decided.keyword.matched})"
    elif kind is KeywordKind.OPT_IN:
        text = f"opted in to SMS ({decided.keyword.matched})"
        if sms_blocks:
            reasons = ", ".join(sorted({b.reason.value for b in sms_blocks}))
            text += f"; SMS is still blocked by {reasons}"
    elif kind is KeywordKind.HELP:
        text = "help requested: send the location's help text"
    elif decided.keyword.kind is KeywordKind.OPT_IN:
        text = f"{decided.keyword.matched} ignored: the contact has no SMS DND"
    else:
        text = "not a keyword"
    if withheld:
        text += "; inbound DND is on: do not deliver to the inbox"
    return text
