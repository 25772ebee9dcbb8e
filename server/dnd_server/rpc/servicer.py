"""The DndService servicer: one method per RPC, each validating its request, requiring the
caller's permission, calling the use case and converting its answer. What every call shares
(authentication, readiness, errors to status, cancellation, the response limit, metrics and
the log line) is the call boundary's: ``rpc/boundary.py``."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import AsyncGenerator
from dataclasses import replace
from importlib import metadata
from typing import TypeVar

import structlog
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from google.protobuf.message import Message

from dnd_server.auth import SOURCE_PERMISSIONS, Permission, PermissionDenied, TokenTable
from dnd_server.config import Config
from dnd_server.domain.inbound import inbound_verdict
from dnd_server.domain.model import Channel
from dnd_server.domain.provider_events import event_outcome
from dnd_server.records import WriteResult
from dnd_server.rpc import idempotency, validate
from dnd_server.rpc.boundary import Boundary, Call, stream, unary
from dnd_server.rpc.convert import (
    DETAILS_ALLOWANCE,
    ChangeMessages,
    batch_check_to_pb,
    bookmark_to_pb,
    check_send_to_pb,
    history_page_to_pb,
    inbound_to_pb,
    keyword_settings_to_pb,
    policy_to_pb,
    provider_event_to_pb,
    record_consent_to_pb,
    revoke_consent_to_pb,
    server_info_to_pb,
    set_dnd_to_pb,
    settings_to_pb,
    status_to_pb,
    without_consent_evidence,
)
from dnd_server.service import InboundDecision, ProviderEvent

log = structlog.get_logger("dnd_server.rpc")


class DndServicer(Boundary, dnd_pb2_grpc.DndServiceServicer):
    def __init__(
        self,
        *,
        phone_region: str = "US",
        tokens: TokenTable | None = None,
        read_sample_rate: float = 0.0,
        max_response_bytes: int = 4 << 20,
        max_streams_per_caller: int = 64,
        tls: bool = False,
    ) -> None:
        super().__init__(
            tokens=tokens,
            read_sample_rate=read_sample_rate,
            max_response_bytes=max_response_bytes,
            max_streams_per_caller=max_streams_per_caller,
        )
        # Region assumed for phone numbers written without a country code.
        self.region = phone_region
        # Whether the server serves TLS (told by GetServerInfo).
        self.tls = tls
        self._changes = ChangeMessages()

    @classmethod
    def from_config(cls, config: Config, tokens: TokenTable | None) -> DndServicer:
        return cls(
            phone_region=config.default_phone_region,
            tokens=tokens,
            read_sample_rate=config.log_read_sample_rate,
            max_response_bytes=config.response_limit,
            max_streams_per_caller=config.max_streams_per_caller,
            tls=bool(config.tls_cert_file),
        )

    @unary("GetStatus", hot=True)
    async def GetStatus(self, request: pb.GetStatusRequest, call: Call) -> pb.GetStatusResponse:
        location_id, contact_id, addresses, options = validate.get_status(request, self.region)
        call.require(Permission.READ, location_id)
        state = await call.runtime.service.get_status(location_id, contact_id, addresses, options)
        return pb.GetStatusResponse(status=status_to_pb(state))

    @unary("SetDnd")
    async def SetDnd(self, request: pb.SetDndRequest, call: Call) -> pb.SetDndResponse:
        command = validate.set_dnd(request, self.region)
        call.require(SOURCE_PERMISSIONS[command.meta.source], command.location_id)
        command = replace(command, meta=replace(command.meta, caller=call.caller_name))
        claim = idempotency.claim(call.method, request, request.idempotency_key, set_dnd_to_pb)
        outcome = await call.runtime.service.set_dnd(command, claim)
        return _shown(call, idempotency.answer(outcome, set_dnd_to_pb, pb.SetDndResponse))

    @unary("CheckSend", hot=True)
    async def CheckSend(self, request: pb.CheckSendRequest, call: Call) -> pb.CheckSendResponse:
        location_id, contact_id, channel, direction, address, options, purpose = (
            validate.check_send(request, self.region)
        )
        # The check permission suffices for a COMPLIANCE_REPLY too: claiming the one reply
        # after an opt-out is the send decision itself, whoever asks for it.
        call.require(Permission.CHECK, location_id)
        decision, state = await call.runtime.service.check_send(
            location_id,
            contact_id,
            channel,
            direction,
            address,
            options,
            purpose,
            caller=call.caller_name,
        )
        # A caller without the read permission is told decisions, not dossiers.
        return check_send_to_pb(decision, state, channel, dossier=call.may(Permission.READ))

    @unary("BatchCheckSend", hot=True)
    async def BatchCheckSend(
        self, request: pb.BatchCheckSendRequest, call: Call
    ) -> pb.BatchCheckSendResponse:
        location_id, channel, direction, targets, options, purpose = validate.batch_check_send(
            request, self.region
        )
        call.require(Permission.CHECK, location_id)
        details = request.include_details
        if details and not call.may(Permission.READ):
            raise PermissionDenied(
                f"caller {call.caller_name!r} lacks the 'read' permission, which "
                "include_details needs; ask without it for the compact answers"
            )
        # Each distinct (contact, normalised address) is decided and answered once.
        unique = list(dict.fromkeys(targets))
        answers = await call.runtime.service.batch_check(
            location_id, channel, direction, unique, options, purpose
        )
        allowance = min(DETAILS_ALLOWANCE, self.max_response_bytes // 2)
        by_target = dict(zip(unique, answers, strict=True))
        return batch_check_to_pb(targets, by_target, channel, details, allowance)

    @stream("WatchChanges", ended="watch_ended")
    async def WatchChanges(
        self, request: pb.WatchChangesRequest, call: Call
    ) -> AsyncGenerator[pb.WatchChangesResponse, None]:
        flt, after, cursor_text = validate.watch(request)
        flt = replace(flt, locations=call.reach(flt.locations))
        call.require(Permission.WATCH, *flt.locations)
        runtime = call.runtime
        with call.stream_slot():
            log.info(
                "watch_started",
                resume=after is not None,
                locations=len(flt.locations),
                caller=call.caller_name,
            )
            still_allowed = call.recheck(Permission.WATCH, flt.locations)
            changes = runtime.service.watch(runtime.feed, flt, after, runtime.watch, cursor_text)
            async with contextlib.aclosing(changes):
                async for item in changes:
                    still_allowed()
                    if isinstance(item, int):
                        yield bookmark_to_pb(item)
                    else:
                        call.events += 1
                        yield self._changes.message(item)

    @unary("ProcessInboundMessage")
    async def ProcessInboundMessage(
        self, request: pb.ProcessInboundMessageRequest, call: Call
    ) -> pb.ProcessInboundMessageResponse:
        message = validate.inbound_message(request, self.region)
        call.require(Permission.CONTACT, message.location_id)
        message = replace(message, caller=call.caller_name)
        build = functools.partial(_inbound_answer, message.channel)
        claim = idempotency.claim(call.method, request, request.idempotency_key, build)
        outcome = await call.runtime.service.inbound_message(message, claim)
        return _shown(call, idempotency.answer(outcome, build, pb.ProcessInboundMessageResponse))

    @unary("ReportSmsDeliveryFailure")
    async def ReportSmsDeliveryFailure(
        self, request: pb.ReportSmsDeliveryFailureRequest, call: Call
    ) -> pb.ReportSmsDeliveryFailureResponse:
        event = validate.sms_failure(request, self.region)
        call.require(Permission.WRITE, event.location_id)
        return await _provider_event(call, request, event, pb.ReportSmsDeliveryFailureResponse)

    @unary("ReportEmailEvent")
    async def ReportEmailEvent(
        self, request: pb.ReportEmailEventRequest, call: Call
    ) -> pb.ReportEmailEventResponse:
        event = validate.email_event(request, self.region)
        call.require(SOURCE_PERMISSIONS[event.source], event.location_id)
        return await _provider_event(call, request, event, pb.ReportEmailEventResponse)

    @unary("ReportDeliveryEvent")
    async def ReportDeliveryEvent(
        self, request: pb.ReportDeliveryEventRequest, call: Call
    ) -> pb.ReportDeliveryEventResponse:
        event = validate.delivery_event(request, self.region)
        call.require(SOURCE_PERMISSIONS[event.source], event.location_id)
        if event.effect is None and self.metrics is not None:
            self.metrics.provider_event_ignored(event.provider)
        return await _provider_event(call, request, event, pb.ReportDeliveryEventResponse)

    @unary("ListHistory")
    async def ListHistory(
        self, request: pb.ListHistoryRequest, call: Call
    ) -> pb.ListHistoryResponse:
        query = validate.list_history(request, self.region)
        call.require(Permission.READ, query.location_id)
        rows = await call.runtime.service.history(query, query.page_size + 1)
        return history_page_to_pb(rows, query.page_size)

    @unary("GetKeywordSettings")
    async def GetKeywordSettings(
        self, request: pb.GetKeywordSettingsRequest, call: Call
    ) -> pb.GetKeywordSettingsResponse:
        location_id = validate.get_keyword_settings(request)
        call.require(Permission.READ, location_id)
        return keyword_settings_to_pb(await call.runtime.service.keyword_settings(location_id))

    @unary("UpdateKeywordSettings")
    async def UpdateKeywordSettings(
        self, request: pb.UpdateKeywordSettingsRequest, call: Call
    ) -> pb.UpdateKeywordSettingsResponse:
        settings = validate.update_keyword_settings(request)
        call.require(Permission.WRITE, request.location_id)
        await call.runtime.service.update_keyword_settings(request.location_id, settings)
        return pb.UpdateKeywordSettingsResponse(settings=settings_to_pb(settings))

    @unary("RecordConsent")
    async def RecordConsent(
        self, request: pb.RecordConsentRequest, call: Call
    ) -> pb.RecordConsentResponse:
        service = call.runtime.service
        command = validate.record_consent(request, self.region, service.now())
        call.require(Permission.CONSENT, command.location_id)
        command = replace(command, meta=replace(command.meta, caller=call.caller_name))
        record = command.record
        build = functools.partial(
            record_consent_to_pb, (record.channel, record.purpose, record.address)
        )
        claim = idempotency.claim(call.method, request, request.idempotency_key, build)
        outcome = await service.record_consent(command, claim)
        return _shown(call, idempotency.answer(outcome, build, pb.RecordConsentResponse))

    @unary("RevokeConsent")
    async def RevokeConsent(
        self, request: pb.RevokeConsentRequest, call: Call
    ) -> pb.RevokeConsentResponse:
        command = validate.revoke_consent(request, self.region)
        call.require(Permission.CONSENT, command.location_id)
        command = replace(command, meta=replace(command.meta, caller=call.caller_name))
        claim = idempotency.claim(
            call.method, request, request.idempotency_key, revoke_consent_to_pb
        )
        outcome = await call.runtime.service.revoke_consent(command, claim)
        answer = idempotency.answer(outcome, revoke_consent_to_pb, pb.RevokeConsentResponse)
        return _shown(call, answer)

    @unary("GetConsentPolicy")
    async def GetConsentPolicy(
        self, request: pb.GetConsentPolicyRequest, call: Call
    ) -> pb.GetConsentPolicyResponse:
        location_id = validate.get_consent_policy(request)
        call.require(Permission.READ, location_id)
        policy = await call.runtime.service.consent_policy(location_id, consistent=True)
        return pb.GetConsentPolicyResponse(policy=policy_to_pb(policy))

    @unary("UpdateConsentPolicy")
    async def UpdateConsentPolicy(
        self, request: pb.UpdateConsentPolicyRequest, call: Call
    ) -> pb.UpdateConsentPolicyResponse:
        policy = validate.update_consent_policy(request)
        call.require(Permission.WRITE, request.location_id)
        await call.runtime.service.update_consent_policy(request.location_id, policy)
        return pb.UpdateConsentPolicyResponse(policy=policy_to_pb(policy))

    @unary("GetServerInfo")
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, call: Call
    ) -> pb.GetServerInfoResponse:
        # Authentication (the boundary's) is all it needs: it tells callers what they may do.
        now = dt.datetime.now(dt.UTC)
        auth = self.tokens is not None
        return server_info_to_pb(_VERSION, now, call.who, auth=auth, tls=self.tls)


_A = TypeVar("_A", bound=Message)


def _server_version() -> str:
    try:
        return metadata.version("dnd-service")
    except metadata.PackageNotFoundError:
        return "unknown"


_VERSION = _server_version()


def _shown(call: Call, answer: _A) -> _A:
    """A write's answer as the caller may see it: consent evidence only with the read
    permission (the answer kept for retries has it; each caller is shown its share)."""
    return answer if call.may(Permission.READ) else without_consent_evidence(answer)


def _inbound_answer(channel: Channel, result: WriteResult) -> pb.ProcessInboundMessageResponse:
    decided = result.detail
    assert isinstance(decided, InboundDecision)
    verdict = inbound_verdict(channel, decided.keyword, decided.action, result.state)
    return inbound_to_pb(verdict, result)


_E = TypeVar(
    "_E",
    pb.ReportSmsDeliveryFailureResponse,
    pb.ReportEmailEventResponse,
    pb.ReportDeliveryEventResponse,
)


async def _provider_event(
    call: Call,
    request: pb.ReportSmsDeliveryFailureRequest
    | pb.ReportEmailEventRequest
    | pb.ReportDeliveryEventRequest,
    event: ProviderEvent,
    cls: type[_E],
) -> _E:
    event = replace(event, caller=call.caller_name)
    build = functools.partial(_event_answer, cls, event)
    claim = idempotency.claim(call.method, request, request.idempotency_key, build)
    outcome = await call.runtime.service.provider_event(event, claim)
    return _shown(call, idempotency.answer(outcome, build, cls))


def _event_answer(cls: type[_E], event: ProviderEvent, result: WriteResult) -> _E:
    outcome, explanation = event_outcome(
        event.effect, event.channel, bool(result.steps), event.clears
    )
    reason = event.effect[0] if event.effect else None
    return provider_event_to_pb(cls, outcome, explanation, reason, result)
