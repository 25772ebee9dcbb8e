"""Request builders shared by the sync and async clients: keyword arguments in, protobuf out."""

from __future__ import annotations

import enum
from collections.abc import Iterable

from dnd.v1 import dnd_pb2 as pb

from dnd_client.types import Channel, Direction, EmailEvent, Reason, SendKind, Source


class DndAction(enum.IntEnum):
    ENABLE = pb.DND_ACTION_ENABLE
    DISABLE = pb.DND_ACTION_DISABLE


def get_status(
    location_id: str,
    contact_id: str,
    phone_numbers: Iterable[str] = (),
    email_addresses: Iterable[str] = (),
) -> pb.GetStatusRequest:
    return pb.GetStatusRequest(
        location_id=location_id,
        contact_id=contact_id,
        phone_numbers=list(phone_numbers),
        email_addresses=list(email_addresses),
    )


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
) -> pb.SetDndRequest:
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
    return request


def check_send(
    location_id: str,
    contact_id: str,
    channel: Channel,
    direction: Direction = Direction.OUTBOUND,
    send_kind: SendKind | None = None,
    address: str | None = None,
) -> pb.CheckSendRequest:
    return pb.CheckSendRequest(
        location_id=location_id,
        contact_id=contact_id,
        channel=channel.value,
        direction=direction.value,
        send_kind=send_kind.value if send_kind else pb.SEND_KIND_UNSPECIFIED,
        address=address or "",
    )


def inbound_message(
    location_id: str,
    contact_id: str,
    body: str,
    channel: Channel = Channel.SMS,
    from_address: str | None = None,
    idempotency_key: str | None = None,
) -> pb.ProcessInboundMessageRequest:
    return pb.ProcessInboundMessageRequest(
        location_id=location_id,
        contact_id=contact_id,
        channel=channel.value,
        body=body,
        from_address=from_address or "",
        idempotency_key=idempotency_key or "",
    )


def sms_failure(
    location_id: str,
    contact_id: str,
    provider: str,
    error_code: str,
    to_address: str | None = None,
    idempotency_key: str | None = None,
) -> pb.ReportSmsDeliveryFailureRequest:
    return pb.ReportSmsDeliveryFailureRequest(
        location_id=location_id,
        contact_id=contact_id,
        provider=provider,
        error_code=error_code,
        to_address=to_address or "",
        idempotency_key=idempotency_key or "",
    )


def email_event(
    location_id: str,
    contact_id: str,
    provider: str,
    event: EmailEvent,
    to_address: str | None = None,
    provider_detail: str = "",
    idempotency_key: str | None = None,
) -> pb.ReportEmailEventRequest:
    return pb.ReportEmailEventRequest(
        location_id=location_id,
        contact_id=contact_id,
        provider=provider,
        event=event.value,
        to_address=to_address or "",
        provider_detail=provider_detail,
        idempotency_key=idempotency_key or "",
    )


def list_history(
    location_id: str, contact_id: str, page_size: int = 50, page_token: str = ""
) -> pb.ListHistoryRequest:
    return pb.ListHistoryRequest(
        location_id=location_id, contact_id=contact_id, page_size=page_size, page_token=page_token
    )


def update_keyword_settings(
    location_id: str,
    extra_opt_out_words: Iterable[str] = (),
    extra_opt_in_words: Iterable[str] = (),
    detect_revocation_phrases: bool = False,
) -> pb.UpdateKeywordSettingsRequest:
    return pb.UpdateKeywordSettingsRequest(
        location_id=location_id,
        settings=pb.KeywordSettings(
            extra_opt_out_words=list(extra_opt_out_words),
            extra_opt_in_words=list(extra_opt_in_words),
            detect_revocation_phrases=detect_revocation_phrases,
        ),
    )


def watch(
    location_ids: Iterable[str] = (),
    channels: Iterable[Channel] = (),
    directions: Iterable[Direction] = (),
    sources: Iterable[Source] = (),
    after_cursor: str | None = None,
) -> pb.WatchChangesRequest:
    return pb.WatchChangesRequest(
        location_ids=list(location_ids),
        channels=[c.value for c in channels],
        directions=[d.value for d in directions],
        sources=[s.value for s in sources],
        after_cursor=after_cursor or "",
    )
