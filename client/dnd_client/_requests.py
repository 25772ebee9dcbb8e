"""Every RPC of dnd.v1.DndService defined once: its Python arguments, the request they build,
and what the client returns. Both clients take their methods from here (``_rpcs.py``)."""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dnd.v1 import dnd_pb2 as pb
from google.protobuf.message import Message

from dnd_client.types import Channel, Direction, EmailEvent, Reason, SendKind, Source

_R = TypeVar("_R")

# RPCs that change nothing: gRPC retries them on UNAVAILABLE (the channel's service config).
# Every other unary RPC is a write, retried by the client only with an idempotency key.
READS: tuple[str, ...] = (
    "GetStatus",
    "CheckSend",
    "BatchCheckSend",
    "ListHistory",
    "GetKeywordSettings",
)


class DndAction(enum.IntEnum):
    ENABLE = pb.DND_ACTION_ENABLE
    DISABLE = pb.DND_ACTION_DISABLE


@dataclass(frozen=True, slots=True)
class Prepared(Generic[_R]):
    """One unary call ready to go: the RPC, its request, how to read its answer."""

    method: str
    request: Message
    unwrap: Callable[[Any], _R]
    timeout: float | None = None
    # The client may retry it on UNAVAILABLE (a write carrying an idempotency key).
    retry: bool = False


@dataclass(frozen=True, slots=True)
class WatchPlan:
    """A resumable WatchChanges subscription."""

    filters: pb.WatchChangesRequest
    after_cursor: str | None
    bookmarks: bool

    def request(self, cursor: str | None) -> pb.WatchChangesRequest:
        request = pb.WatchChangesRequest()
        request.CopyFrom(self.filters)
        request.after_cursor = cursor or ""
        return request


def _same(answer: _R) -> _R:
    return answer


def get_status(
    location_id: str,
    contact_id: str,
    *,
    phone_numbers: Iterable[str] = (),
    email_addresses: Iterable[str] = (),
    min_cursor: str = "",
    fully_consistent: bool = False,
    timeout: float | None = None,
) -> Prepared[pb.ContactStatus]:
    """The contact's active blocks, summary, and the suppressions of the addresses named."""
    request = pb.GetStatusRequest(
        location_id=location_id,
        contact_id=contact_id,
        phone_numbers=list(phone_numbers),
        email_addresses=list(email_addresses),
        min_cursor=min_cursor,
        fully_consistent=fully_consistent,
    )
    return Prepared("GetStatus", request, _status_of, timeout)


def _status_of(answer: pb.GetStatusResponse) -> pb.ContactStatus:
    return answer.status


def scope(direction: Direction, channel: Channel | None, all_channels: bool) -> pb.Scope | None:
    if direction == Direction.INBOUND:
        if channel is not None:
            raise ValueError("inbound DND covers calls and SMS together: do not name a channel")
        return None
    if (channel is None) == (not all_channels):
        raise ValueError("outbound DND needs exactly one of channel=... or all_channels=True")
    if channel is not None:
        return pb.Scope(channel=channel.value)
    return pb.Scope(all_channels=True)


def set_dnd(
    location_id: str,
    contact_id: str,
    *,
    action: DndAction,
    source: Source,
    direction: Direction = Direction.OUTBOUND,
    channel: Channel | None = None,
    all_channels: bool = False,
    reason: Reason | None = None,
    actor_id: str = "",
    note: str = "",
    evidence: str = "",
    provider_detail: str = "",
    suppression_removal_confirmed: bool = False,
    expected_version: int | None = None,
    idempotency_key: str | None = None,
    address: str | None = None,
    timeout: float | None = None,
) -> Prepared[pb.SetDndResponse]:
    """Enable or clear DND on one scope (``channel=...`` or ``all_channels=True``)."""
    request = pb.SetDndRequest(
        location_id=location_id,
        contact_id=contact_id,
        action=action.value,
        direction=direction.value,
        scope=scope(direction, channel, all_channels),
        reason=reason.value if reason is not None else pb.REASON_UNSPECIFIED,
        source=source.value,
        actor_id=actor_id,
        note=note,
        evidence=evidence,
        provider_detail=provider_detail,
        suppression_removal_confirmed=suppression_removal_confirmed,
        idempotency_key=idempotency_key or "",
        address=address or "",
    )
    if expected_version is not None:
        request.expected_version = expected_version
    return Prepared("SetDnd", request, _same, timeout, retry=bool(idempotency_key))


def check_send(
    location_id: str,
    contact_id: str,
    channel: Channel,
    *,
    direction: Direction = Direction.OUTBOUND,
    send_kind: SendKind | None = None,
    address: str | None = None,
    min_cursor: str = "",
    fully_consistent: bool = False,
    timeout: float | None = None,
) -> Prepared[pb.CheckSendResponse]:
    """May a message go to (or come from) the contact on ``channel``?"""
    request = pb.CheckSendRequest(
        location_id=location_id,
        contact_id=contact_id,
        channel=channel.value,
        direction=direction.value,
        send_kind=send_kind.value if send_kind else pb.SEND_KIND_UNSPECIFIED,
        address=address or "",
        min_cursor=min_cursor,
        fully_consistent=fully_consistent,
    )
    return Prepared("CheckSend", request, _same, timeout)


def batch_check_send(
    location_id: str,
    channel: Channel,
    targets: Iterable[str | tuple[str, str]],
    *,
    direction: Direction = Direction.OUTBOUND,
    send_kind: SendKind | None = None,
    min_cursor: str = "",
    fully_consistent: bool = False,
    include_details: bool = False,
    timeout: float | None = None,
) -> Prepared[pb.BatchCheckSendResponse]:
    """Up to 1,000 checks at once; ``targets`` are contact ids or (contact id, address).
    Denied results are compact unless ``include_details`` (which needs the read scope)."""
    request = pb.BatchCheckSendRequest(
        location_id=location_id,
        channel=channel.value,
        direction=direction.value,
        send_kind=send_kind.value if send_kind else pb.SEND_KIND_UNSPECIFIED,
        targets=[_target(t) for t in targets],
        min_cursor=min_cursor,
        fully_consistent=fully_consistent,
        include_details=include_details,
    )
    return Prepared("BatchCheckSend", request, _same, timeout)


def _target(target: str | tuple[str, str]) -> pb.CheckTarget:
    if isinstance(target, str):
        return pb.CheckTarget(contact_id=target)
    contact_id, address = target
    return pb.CheckTarget(contact_id=contact_id, address=address)


def process_inbound_message(
    location_id: str,
    contact_id: str,
    body: str,
    *,
    channel: Channel = Channel.SMS,
    from_address: str | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Prepared[pb.ProcessInboundMessageResponse]:
    """Classify a text the contact sent (STOP, START, HELP...) and apply it."""
    request = pb.ProcessInboundMessageRequest(
        location_id=location_id,
        contact_id=contact_id,
        channel=channel.value,
        body=body,
        from_address=from_address or "",
        idempotency_key=idempotency_key or "",
    )
    return Prepared("ProcessInboundMessage", request, _same, timeout, bool(idempotency_key))


def report_sms_delivery_failure(
    location_id: str,
    contact_id: str,
    *,
    provider: str,
    error_code: str,
    to_address: str | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Prepared[pb.ReportSmsDeliveryFailureResponse]:
    """Apply a carrier / SMS provider error code."""
    request = pb.ReportSmsDeliveryFailureRequest(
        location_id=location_id,
        contact_id=contact_id,
        provider=provider,
        error_code=error_code,
        to_address=to_address or "",
        idempotency_key=idempotency_key or "",
    )
    return Prepared("ReportSmsDeliveryFailure", request, _same, timeout, bool(idempotency_key))


def report_email_event(
    location_id: str,
    contact_id: str,
    *,
    provider: str,
    event: EmailEvent,
    to_address: str | None = None,
    provider_detail: str = "",
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Prepared[pb.ReportEmailEventResponse]:
    """Apply an email provider event (bounce, complaint, unsubscribe...)."""
    request = pb.ReportEmailEventRequest(
        location_id=location_id,
        contact_id=contact_id,
        provider=provider,
        event=event.value,
        to_address=to_address or "",
        provider_detail=provider_detail,
        idempotency_key=idempotency_key or "",
    )
    return Prepared("ReportEmailEvent", request, _same, timeout, bool(idempotency_key))


def list_history(
    location_id: str,
    contact_id: str = "",
    *,
    page_size: int = 50,
    page_token: str = "",
    address: str = "",
    channel: Channel | None = None,
    timeout: float | None = None,
) -> Prepared[pb.ListHistoryResponse]:
    """One page of the contact's changes (also those of the suppressions its events set),
    newest first; or, with ``address`` and ``channel`` instead of a contact, of the address's
    suppressions."""
    request = pb.ListHistoryRequest(
        location_id=location_id,
        contact_id=contact_id,
        page_size=page_size,
        page_token=page_token,
        address=address,
        channel=channel.value if channel is not None else pb.CHANNEL_UNSPECIFIED,
    )
    return Prepared("ListHistory", request, _same, timeout)


def get_keyword_settings(
    location_id: str, *, timeout: float | None = None
) -> Prepared[pb.GetKeywordSettingsResponse]:
    """The location's keyword settings and the built-in keywords."""
    request = pb.GetKeywordSettingsRequest(location_id=location_id)
    return Prepared("GetKeywordSettings", request, _same, timeout)


def update_keyword_settings(
    location_id: str,
    *,
    extra_opt_out_words: Iterable[str] = (),
    extra_opt_in_words: Iterable[str] = (),
    detect_revocation_phrases: bool = False,
    timeout: float | None = None,
) -> Prepared[pb.KeywordSettings]:
    """Replace the location's keyword settings (a replace: safe to retry)."""
    request = pb.UpdateKeywordSettingsRequest(
        location_id=location_id,
        settings=pb.KeywordSettings(
            extra_opt_out_words=list(extra_opt_out_words),
            extra_opt_in_words=list(extra_opt_in_words),
            detect_revocation_phrases=detect_revocation_phrases,
        ),
    )
    return Prepared("UpdateKeywordSettings", request, _settings_of, timeout, retry=True)


def _settings_of(answer: pb.UpdateKeywordSettingsResponse) -> pb.KeywordSettings:
    return answer.settings


def watch_changes(
    *,
    location_ids: Iterable[str] = (),
    channels: Iterable[Channel] = (),
    directions: Iterable[Direction] = (),
    sources: Iterable[Source] = (),
    after_cursor: str | None = None,
    bookmarks: bool = False,
) -> WatchPlan:
    """Every change after ``after_cursor`` (None: from now), for ever.

    Survives disconnects and server restarts: reconnects with backoff and resumes from the
    last cursor seen, so no event is yielded twice or skipped. Raises CursorExpired when the
    server no longer has the changes after the cursor. With ``bookmarks`` the stream's
    bookmarks are yielded too (their ``cursor`` is a resume point).
    """
    filters = pb.WatchChangesRequest(
        location_ids=list(location_ids),
        channels=[c.value for c in channels],
        directions=[d.value for d in directions],
        sources=[s.value for s in sources],
    )
    return WatchPlan(filters, after_cursor, bookmarks)
