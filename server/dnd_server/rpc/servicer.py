"""The DndService servicer: one method per RPC, each validating its request, requiring the
caller's permission, calling the use case and converting its answer. What every call shares
(authentication, readiness, errors to status, cancellation, the response limit, metrics and
the log line) is the call boundary's: ``rpc/boundary.py``."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from collections.abc import AsyncGenerator, Iterator, Sequence
from dataclasses import replace
from importlib import metadata
from typing import TypeVar

import structlog
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from google.protobuf.message import Message

from dnd_server.auth import SOURCE_PERMISSIONS, Permission, PermissionDenied, TokenTable
from dnd_server.config import Config
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.inbound import inbound_verdict
from dnd_server.domain.model import Channel, Source, scope_name
from dnd_server.domain.provider_events import event_outcome, resolve
from dnd_server.records import BulkClaim, WriteResult
from dnd_server.rpc import idempotency, page_tokens, validate
from dnd_server.rpc.boundary import Boundary, Call, stream, unary
from dnd_server.rpc.convert import (
    BULK_ANSWER_BYTES,
    BULK_DETAILS_SLACK,
    BULK_RESULT_BYTES,
    DETAILS_ALLOWANCE,
    ChangeMessages,
    Target,
    add_bulk_results,
    batch_check_to_pb,
    block_expiry_to_pb,
    bookmark_to_pb,
    bulk_progress,
    check_send_to_pb,
    compliance_replies_to_pb,
    decisions_only,
    delivery_mappings_to_pb,
    erase_to_pb,
    history_page_to_pb,
    inbound_to_pb,
    keyword_settings_to_pb,
    listed_block_to_pb,
    override_to_pb,
    policy_to_pb,
    provider_event_to_pb,
    quiet_hours_settings_to_pb,
    record_consent_to_pb,
    resolution_to_pb,
    revoke_consent_to_pb,
    server_info_to_pb,
    set_dnd_to_pb,
    settings_to_pb,
    status_to_pb,
    suppression_to_pb,
)
from dnd_server.rpc.scrub import scrub_answer
from dnd_server.service import ExportBatch, InboundDecision, ProviderEvent

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
        service = call.runtime.service
        timing = validate.send_timing(request, service.now())
        # The check permission suffices for a COMPLIANCE_REPLY too: claiming the one reply
        # after an opt-out is the send decision itself, whoever asks for it.
        call.require(Permission.CHECK, location_id)
        decision, state = await service.check_send(
            location_id,
            contact_id,
            channel,
            direction,
            address,
            options,
            purpose,
            caller=call.caller_name,
            timing=timing,
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
        service = call.runtime.service
        timing, zones = validate.batch_timing(request, service.now())
        # Each distinct (contact, normalised address[, time zone]) is decided and answered once.
        keyed: Sequence[Target] = targets
        time_zones: Sequence[str] = ()
        if zones is None:  # no target names its own zone: the common case
            pairs = list(dict.fromkeys(targets))
            keys: list[Target] = list(pairs)
        else:
            keyed = [(c, a, z) for (c, a), z in zip(targets, zones, strict=True)]
            keys = list(dict.fromkeys(keyed))
            pairs = [(key[0], key[1]) for key in keys]
            time_zones = [key[2] for key in keys]
        answers = await service.batch_check(
            location_id, channel, direction, pairs, options, purpose, timing, time_zones
        )
        allowance = min(DETAILS_ALLOWANCE, self.max_response_bytes // 2)
        by_target = dict(zip(keys, answers, strict=True))
        return batch_check_to_pb(keyed, by_target, channel, details, allowance)

    @stream("WatchChanges", ended="watch_ended")
    async def WatchChanges(  # type: ignore[override]  # the same messages, some pre-encoded
        self, request: pb.WatchChangesRequest, call: Call
    ) -> AsyncGenerator[pb.WatchChangesResponse | bytes, None]:
        # Events go out as serialized WatchChangesResponse bytes, encoded once for every
        # stream (ChangeMessages); bookmarks as messages.
        flt, after, cursor_text, batch = validate.watch(request)
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
            changes = runtime.service.watch(
                runtime.feed, flt, after, runtime.watch, cursor_text, batch
            )
            async with contextlib.aclosing(changes):
                async for item in changes:
                    still_allowed()
                    if isinstance(item, tuple):
                        yield bookmark_to_pb(item)
                    else:
                        call.events += len(item)
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
        event = await call.runtime.service.resolve_event(event)
        self._count_unknown(event)
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
        # A caller that may report nothing here is refused by the built-in tables alone
        # (nothing is read for it); any other by the source the resolved code acts as.
        locations = call.who.locations
        if not (call.may(Permission.WRITE) or call.may(Permission.CONTACT)) or (
            locations is not None and event.location_id not in locations
        ):
            call.require(SOURCE_PERMISSIONS[_built_in_source(event)], event.location_id)
        event = await call.runtime.service.resolve_event(event)
        call.require(SOURCE_PERMISSIONS[event.source], event.location_id)
        self._count_unknown(event)
        return await _provider_event(call, request, event, pb.ReportDeliveryEventResponse)

    def _count_unknown(self, event: ProviderEvent) -> None:
        """An unknown provider code is counted by provider (a bounded label: the providers the
        tables know, or "other"; never the code itself)."""
        known = event.resolution is not None and event.resolution.known
        if not known and self.metrics is not None:
            self.metrics.provider_event_ignored(event.provider)

    @unary("GetDeliveryEventMappings")
    async def GetDeliveryEventMappings(
        self, request: pb.GetDeliveryEventMappingsRequest, call: Call
    ) -> pb.GetDeliveryEventMappingsResponse:
        location_id, provider = validate.get_delivery_mappings(request)
        call.require(Permission.READ, location_id)
        overrides = await call.runtime.service.delivery_overrides(location_id)
        return delivery_mappings_to_pb(overrides, provider)

    @unary("UpdateDeliveryEventMappings")
    async def UpdateDeliveryEventMappings(
        self, request: pb.UpdateDeliveryEventMappingsRequest, call: Call
    ) -> pb.UpdateDeliveryEventMappingsResponse:
        location_id, overrides = validate.update_delivery_mappings(request)
        call.require(Permission.WRITE, location_id)
        await call.runtime.service.update_delivery_overrides(location_id, overrides)
        return pb.UpdateDeliveryEventMappingsResponse(
            overrides=[override_to_pb(o) for o in overrides]
        )

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

    @unary("GetComplianceReplies")
    async def GetComplianceReplies(
        self, request: pb.GetComplianceRepliesRequest, call: Call
    ) -> pb.GetComplianceRepliesResponse:
        location_id = validate.get_compliance_replies(request)
        call.require(Permission.READ, location_id)
        replies = await call.runtime.service.compliance_replies(location_id)
        return compliance_replies_to_pb(replies, pb.GetComplianceRepliesResponse)

    @unary("UpdateComplianceReplies")
    async def UpdateComplianceReplies(
        self, request: pb.UpdateComplianceRepliesRequest, call: Call
    ) -> pb.UpdateComplianceRepliesResponse:
        replies = validate.update_compliance_replies(request)
        call.require(Permission.WRITE, request.location_id)
        await call.runtime.service.update_compliance_replies(request.location_id, replies)
        return compliance_replies_to_pb(replies, pb.UpdateComplianceRepliesResponse)

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

    @unary("GetQuietHoursSettings")
    async def GetQuietHoursSettings(
        self, request: pb.GetQuietHoursSettingsRequest, call: Call
    ) -> pb.GetQuietHoursSettingsResponse:
        location_id = validate.get_quiet_hours_settings(request)
        call.require(Permission.READ, location_id)
        settings = await call.runtime.service.quiet_hours_settings(location_id, consistent=True)
        return pb.GetQuietHoursSettingsResponse(settings=quiet_hours_settings_to_pb(settings))

    @unary("UpdateQuietHoursSettings")
    async def UpdateQuietHoursSettings(
        self, request: pb.UpdateQuietHoursSettingsRequest, call: Call
    ) -> pb.UpdateQuietHoursSettingsResponse:
        settings = validate.update_quiet_hours_settings(request)
        call.require(Permission.WRITE, request.location_id)
        await call.runtime.service.update_quiet_hours_settings(request.location_id, settings)
        return pb.UpdateQuietHoursSettingsResponse(settings=quiet_hours_settings_to_pb(settings))

    @unary("GetServerInfo")
    async def GetServerInfo(
        self, request: pb.GetServerInfoRequest, call: Call
    ) -> pb.GetServerInfoResponse:
        # Authentication (the boundary's) is all it needs: it tells callers what they may do.
        now = dt.datetime.now(dt.UTC)
        auth = self.tokens is not None
        return server_info_to_pb(_VERSION, now, call.who, auth=auth, tls=self.tls)

    @unary("BulkSetDnd")
    async def BulkSetDnd(self, request: pb.BulkSetDndRequest, call: Call) -> pb.BulkSetDndResponse:
        commands, invalid = validate.bulk_set_dnd(request, self.region)
        location_id = request.location_id
        # The call needs write, and every item the permission of the source it acts as.
        needed = {SOURCE_PERMISSIONS[c.meta.source] for c in commands if c is not None}
        call.require(Permission.WRITE, location_id)
        for permission in sorted(needed, key=lambda p: p.value):
            call.require(permission, location_id)
        # Each item's compact result takes at most BULK_RESULT_BYTES: refused when even those
        # would not fit this server's response limit (before anything is written); details
        # (refusals, violations) fill what the compact results leave, less room for the last.
        compact = BULK_RESULT_BYTES * len(commands) + BULK_ANSWER_BYTES
        if compact > self.max_response_bytes:
            raise InvalidArgument.one(
                "items",
                f"{len(commands)} items could need {compact} bytes to answer, over this "
                f"server's response limit of {self.max_response_bytes} (DND_MAX_RESPONSE_BYTES):"
                " send fewer items per call",
            )
        allowance = max(0, self.max_response_bytes - compact - BULK_DETAILS_SLACK)
        record = functools.partial(bulk_progress, invalid, allowance)
        claim = None
        if request.idempotency_key:
            held = idempotency.claim(call.method, request, request.idempotency_key, set_dnd_to_pb)
            assert held is not None
            claim = BulkClaim(
                held.key,
                held.method,
                held.request_hash,
                done=lambda kept: len(pb.BulkSetDndResponse.FromString(kept).results),
                record=record,
                legacy_hash=held.legacy_hash,
            )
        chunks = await call.runtime.service.bulk_set_dnd(
            location_id, commands, claim, caller=call.caller_name
        )
        if claim is not None:
            kept = chunks[-1].progress
            assert kept is not None
            return pb.BulkSetDndResponse.FromString(kept)
        answer = pb.BulkSetDndResponse()
        for chunk in chunks:
            add_bulk_results(answer, invalid, allowance, chunk.start, chunk.outcomes)
        return answer

    @unary("ListBlocks")
    async def ListBlocks(self, request: pb.ListBlocksRequest, call: Call) -> pb.ListBlocksResponse:
        flt, after, size, bound = validate.list_blocks(request, self.region)
        call.require(Permission.READ, request.location_id)
        found = await call.runtime.service.list_blocks(request.location_id, flt, after, size + 1)
        answer = pb.ListBlocksResponse(blocks=[listed_block_to_pb(b) for b in found[:size]])
        if len(found) > size:
            last = found[size - 1]
            block = last.block
            key = [last.contact_id, block.direction.value, scope_name(block.scope)]
            answer.next_page_token = page_tokens.seal(bound, [*key, block.reason.value])
        return answer

    @unary("ListSuppressions")
    async def ListSuppressions(
        self, request: pb.ListSuppressionsRequest, call: Call
    ) -> pb.ListSuppressionsResponse:
        flt, after, size, bound = validate.list_suppressions(request, self.region)
        call.require(Permission.READ, request.location_id)
        found = await call.runtime.service.list_suppressions(
            request.location_id, flt, after, size + 1
        )
        answer = pb.ListSuppressionsResponse(
            suppressions=[suppression_to_pb(s) for s in found[:size]]
        )
        if len(found) > size:
            last = found[size - 1]
            key = [last.channel.value, last.address, last.reason.value]
            answer.next_page_token = page_tokens.seal(bound, key)
        return answer

    @stream("ExportSuppressions", ended="export_ended")
    async def ExportSuppressions(
        self, request: pb.ExportSuppressionsRequest, call: Call
    ) -> AsyncGenerator[pb.ExportSuppressionsResponse, None]:
        flt, start, bound = validate.export_suppressions(request, self.region)
        call.require(Permission.READ, request.location_id)
        with call.stream_slot():
            # A token removed, expired or narrowed meanwhile ends the export (as a watch).
            still_allowed = call.recheck(Permission.READ, frozenset({request.location_id}))
            batches = call.runtime.service.export(request.location_id, flt, start)
            async with contextlib.aclosing(batches) as rows:
                async for batch in rows:
                    still_allowed()
                    call.events += len(batch.blocks) + len(batch.suppressions)
                    # Each message is sent (flow control permitting) before the batch after
                    # the next is read; a batch of large rows goes as several messages.
                    for message in export_messages(batch, bound, self.max_response_bytes // 2):
                        yield message

    @unary("EraseContact")
    async def EraseContact(
        self, request: pb.EraseContactRequest, call: Call
    ) -> pb.EraseContactResponse:
        command = validate.erase_contact(request, self.region)
        # Its own permission: no other (not even write or support) lets a caller erase.
        call.require(Permission.ERASE, command.location_id)
        command = replace(command, meta=replace(command.meta, caller=call.caller_name))
        claim = idempotency.claim(call.method, request, request.idempotency_key, erase_to_pb)
        outcome = await call.runtime.service.erase_contact(command, scrub_answer, claim)
        return idempotency.answer(outcome, erase_to_pb, pb.EraseContactResponse)

    @unary("GetBlockExpirySettings")
    async def GetBlockExpirySettings(
        self, request: pb.GetBlockExpirySettingsRequest, call: Call
    ) -> pb.GetBlockExpirySettingsResponse:
        location_id = validate.get_block_expiry_settings(request)
        call.require(Permission.READ, location_id)
        expiry = await call.runtime.service.block_expiry(location_id)
        return pb.GetBlockExpirySettingsResponse(settings=block_expiry_to_pb(expiry))

    @unary("UpdateBlockExpirySettings")
    async def UpdateBlockExpirySettings(
        self, request: pb.UpdateBlockExpirySettingsRequest, call: Call
    ) -> pb.UpdateBlockExpirySettingsResponse:
        expiry = validate.update_block_expiry_settings(request)
        call.require(Permission.WRITE, request.location_id)
        await call.runtime.service.update_block_expiry(request.location_id, expiry)
        return pb.UpdateBlockExpirySettingsResponse(settings=block_expiry_to_pb(expiry))


_A = TypeVar("_A", bound=Message)


def _server_version() -> str:
    try:
        return metadata.version("dnd-service")
    except metadata.PackageNotFoundError:
        return "unknown"


_VERSION = _server_version()


def _shown(call: Call, answer: _A) -> _A:
    """A write's answer as the caller may see it: the contact's dossier (who wrote what, the
    proof, the contact holding a suppressed address, consent evidence) only with the read
    permission, decisions otherwise (``decisions_only``), as CheckSend answers. The answer
    kept for retries is whole; each caller is shown its share."""
    return answer if call.may(Permission.READ) else decisions_only(answer)


def _inbound_answer(channel: Channel, result: WriteResult) -> pb.ProcessInboundMessageResponse:
    decided = result.detail
    assert isinstance(decided, InboundDecision)
    verdict = inbound_verdict(
        channel, decided.keyword, decided.action, result.state, decided.channels
    )
    if decided.unread_sender:
        verdict = replace(verdict, explanation=verdict.explanation + decided.unread_sender)
    return inbound_to_pb(verdict, result, decided.reply_text, decided.reply_language, decided.reply)


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


def _built_in_source(event: ProviderEvent) -> Source:
    """The source an event's code acts as by the built-in tables (SYSTEM when none)."""
    effect = resolve(event.provider, event.code).effect
    return effect[1] if effect else Source.SYSTEM


def _event_answer(cls: type[_E], event: ProviderEvent, result: WriteResult) -> _E:
    outcome, explanation = event_outcome(
        event.effect, event.channel, bool(result.steps), event.clears, event.resolution
    )
    if event.unread_address:
        # Said without the address's text: an answer is kept, and erasure finds keys only.
        explanation += "; the address given is no address: the contact is blocked, none suppressed"
    reason = event.effect[0] if event.effect else None
    answer = provider_event_to_pb(cls, outcome, explanation, reason, result)
    if isinstance(answer, pb.ReportDeliveryEventResponse) and event.resolution is not None:
        resolution_to_pb(answer, event.resolution)
    return answer


# The most one suppression takes in a message: its fields' limits (address, ids, detail) and
# framing, with room to spare.
_SUPPRESSION_MAX_BYTES = 2048


def export_messages(
    batch: ExportBatch, bound: str, budget: int
) -> Iterator[pb.ExportSuppressionsResponse]:
    """A batch of an export as messages of at most about ``budget`` bytes (at least one row
    each), every one with the resume token of its last row."""
    if not batch.blocks and len(batch.suppressions) * _SUPPRESSION_MAX_BYTES <= budget:
        # The common case: a batch of suppressions always fits one message.
        yield pb.ExportSuppressionsResponse(
            suppressions=[suppression_to_pb(s) for s in batch.suppressions],
            resume_token=page_tokens.seal(bound, list(batch.last)),
        )
        return
    message = pb.ExportSuppressionsResponse()
    size = 0
    last: list[str] = []
    for listed in batch.blocks:
        row = listed_block_to_pb(listed)
        row_size = row.ByteSize() + 4
        if size and size + row_size > budget:
            message.resume_token = page_tokens.seal(bound, last)
            yield message
            message, size = pb.ExportSuppressionsResponse(), 0
        message.blocks.append(row)
        size += row_size
        block = listed.block
        last = ["b", listed.contact_id, block.direction.value, scope_name(block.scope)]
        last.append(block.reason.value)
    for suppression in batch.suppressions:
        shown = suppression_to_pb(suppression)
        shown_size = shown.ByteSize() + 4
        if size and size + shown_size > budget:
            message.resume_token = page_tokens.seal(bound, last)
            yield message
            message, size = pb.ExportSuppressionsResponse(), 0
        message.suppressions.append(shown)
        size += shown_size
        last = ["s", suppression.channel.value, suppression.address, suppression.reason.value, ""]
    if size:
        message.resume_token = page_tokens.seal(bound, list(batch.last))
        yield message
