"""Every RPC of dnd.v1.DndService defined once: its Python arguments, the request they build,
and what the client returns. Both clients take their methods from here (``_rpcs.py``)."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from dnd.v1 import dnd_pb2 as pb
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from dnd_client.types import (
    ChangeKind,
    Channel,
    ConsentEvidence,
    ConsentKind,
    ConsentMethod,
    ConsentPurpose,
    Direction,
    EmailEvent,
    ImpliedBasis,
    Purpose,
    Reason,
    SendKind,
    Source,
)

_R = TypeVar("_R")

# RPCs that change nothing: gRPC retries them on UNAVAILABLE (the channel's service config).
# Every other unary RPC is a write, retried by the client only with an idempotency key.
READS: tuple[str, ...] = (
    "GetStatus",
    "CheckSend",
    "BatchCheckSend",
    "ListHistory",
    "GetKeywordSettings",
    "GetConsentPolicy",
    "ListBlocks",
    "ListSuppressions",
    "GetDeliveryEventMappings",
    "GetQuietHoursSettings",
    "GetServerInfo",
    "GetBlockExpirySettings",
    "GetComplianceReplies",
)

# Writes that replace a whole value: applying one twice is applying it once, so the client
# retries them on UNAVAILABLE without an idempotency key.
REPLACES: tuple[str, ...] = (
    "UpdateKeywordSettings",
    "UpdateConsentPolicy",
    "UpdateDeliveryEventMappings",
    "UpdateBlockExpirySettings",
    "UpdateQuietHoursSettings",
    "UpdateComplianceReplies",
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


def scope(
    direction: Direction, channel: Channel | None, all_channels: bool, marketing_only: bool = False
) -> pb.Scope | None:
    if direction == Direction.INBOUND:
        if channel is not None:
            raise ValueError("inbound DND covers calls and SMS together: do not name a channel")
        if marketing_only:
            raise ValueError("marketing-only opt-outs are outbound: do not set marketing_only")
        return None
    if (channel is None) == (not all_channels):
        raise ValueError("outbound DND needs exactly one of channel=... or all_channels=True")
    if channel is not None:
        return pb.Scope(channel=channel.value, marketing_only=marketing_only)
    return pb.Scope(all_channels=True, marketing_only=marketing_only)


def _timestamp(name: str, when: dt.datetime | None) -> Timestamp | None:
    """A protobuf Timestamp of an aware datetime (a naive one is refused: its zone is a
    guess)."""
    if when is None:
        return None
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError(f"{name} needs a timezone (e.g. datetime.now(datetime.UTC))")
    stamp = Timestamp()
    stamp.FromDatetime(when.astimezone(dt.UTC))
    return stamp


def set_dnd(
    location_id: str,
    contact_id: str,
    *,
    action: DndAction,
    source: Source,
    direction: Direction = Direction.OUTBOUND,
    channel: Channel | None = None,
    all_channels: bool = False,
    marketing_only: bool = False,
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
    """Enable or clear DND on one scope (``channel=...`` or ``all_channels=True``); with
    ``marketing_only`` a marketing-only opt-out (it denies MARKETING sends only)."""
    request = pb.SetDndRequest(
        location_id=location_id,
        contact_id=contact_id,
        action=action.value,
        direction=direction.value,
        scope=scope(direction, channel, all_channels, marketing_only),
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
    purpose: Purpose | None = None,
    min_cursor: str = "",
    fully_consistent: bool = False,
    time_zone: str = "",
    send_at: dt.datetime | None = None,
    timeout: float | None = None,
) -> Prepared[pb.CheckSendResponse]:
    """May a message go to (or come from) the contact on ``channel``? With a ``purpose``
    marketing-only opt-outs, the consent policy and the compliance allowance apply; without
    one, DND only. A MARKETING call or text is judged by quiet hours too, at ``send_at``
    (None: now) in the recipient's ``time_zone`` (IANA; "": the number's): the answer is
    then ``deferred`` with ``not_before`` when it may not go yet."""
    request = pb.CheckSendRequest(
        location_id=location_id,
        contact_id=contact_id,
        channel=channel.value,
        direction=direction.value,
        send_kind=send_kind.value if send_kind else pb.SEND_KIND_UNSPECIFIED,
        address=address or "",
        min_cursor=min_cursor,
        fully_consistent=fully_consistent,
        purpose=purpose.value if purpose is not None else pb.PURPOSE_UNSPECIFIED,
        time_zone=time_zone,
        send_at=_timestamp("send_at", send_at),
    )
    return Prepared("CheckSend", request, _same, timeout)


def batch_check_send(
    location_id: str,
    channel: Channel,
    targets: Iterable[str | tuple[str, str] | tuple[str, str, str]],
    *,
    direction: Direction = Direction.OUTBOUND,
    send_kind: SendKind | None = None,
    purpose: Purpose | None = None,
    min_cursor: str = "",
    fully_consistent: bool = False,
    include_details: bool = False,
    time_zone: str = "",
    send_at: dt.datetime | None = None,
    timeout: float | None = None,
) -> Prepared[pb.BatchCheckSendResponse]:
    """Up to 1,000 checks at once; ``targets`` are contact ids, (contact id, address) or
    (contact id, address, time zone). Denied results are compact unless ``include_details``
    (which needs the read scope). ``purpose``, ``time_zone`` (of targets without their own)
    and ``send_at`` as for check_send (not COMPLIANCE_REPLY: one contact's answer)."""
    request = pb.BatchCheckSendRequest(
        location_id=location_id,
        channel=channel.value,
        direction=direction.value,
        send_kind=send_kind.value if send_kind else pb.SEND_KIND_UNSPECIFIED,
        targets=[_target(t) for t in targets],
        min_cursor=min_cursor,
        fully_consistent=fully_consistent,
        include_details=include_details,
        purpose=purpose.value if purpose is not None else pb.PURPOSE_UNSPECIFIED,
        time_zone=time_zone,
        send_at=_timestamp("send_at", send_at),
    )
    return Prepared("BatchCheckSend", request, _same, timeout)


def _target(target: str | tuple[str, str] | tuple[str, str, str]) -> pb.CheckTarget:
    if isinstance(target, str):
        return pb.CheckTarget(contact_id=target)
    if len(target) == 3:
        contact_id, address, time_zone = target
        return pb.CheckTarget(contact_id=contact_id, address=address, time_zone=time_zone)
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
    marketing_stream: bool = False,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Prepared[pb.ReportEmailEventResponse]:
    """Apply an email provider event (bounce, complaint, unsubscribe...). With
    ``marketing_stream`` an unsubscribe opts out of marketing only."""
    request = pb.ReportEmailEventRequest(
        location_id=location_id,
        contact_id=contact_id,
        provider=provider,
        event=event.value,
        to_address=to_address or "",
        provider_detail=provider_detail,
        idempotency_key=idempotency_key or "",
        marketing_stream=marketing_stream,
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
    languages: Iterable[str] = (),
    default_language: str = "",
    language_words: Iterable[pb.LanguageKeywords] = (),
    share_rcs_sms_opt_outs: bool = False,
    timeout: float | None = None,
) -> Prepared[pb.KeywordSettings]:
    """Replace the location's keyword settings (a replace: safe to retry). ``languages``: the
    built-in keyword languages beyond English ("es", "fr"); ``language_words``: extra words
    of a named language (``language_keywords`` builds one)."""
    request = pb.UpdateKeywordSettingsRequest(
        location_id=location_id,
        settings=pb.KeywordSettings(
            extra_opt_out_words=list(extra_opt_out_words),
            extra_opt_in_words=list(extra_opt_in_words),
            detect_revocation_phrases=detect_revocation_phrases,
            languages=list(languages),
            default_language=default_language,
            language_words=list(language_words),
            share_rcs_sms_opt_outs=share_rcs_sms_opt_outs,
        ),
    )
    return Prepared("UpdateKeywordSettings", request, _settings_of, timeout, retry=True)


def language_keywords(
    language: str, *, opt_out_words: Iterable[str] = (), opt_in_words: Iterable[str] = ()
) -> pb.LanguageKeywords:
    """A location's extra keywords of one language (for ``update_keyword_settings``)."""
    return pb.LanguageKeywords(
        language=language, opt_out_words=list(opt_out_words), opt_in_words=list(opt_in_words)
    )


def get_compliance_replies(
    location_id: str, *, timeout: float | None = None
) -> Prepared[pb.GetComplianceRepliesResponse]:
    """The location's compliance replies per language, as they are sent."""
    request = pb.GetComplianceRepliesRequest(location_id=location_id)
    return Prepared("GetComplianceReplies", request, _same, timeout)


def update_compliance_replies(
    location_id: str,
    *,
    brand_name: str = "",
    support_contact: str = "",
    texts: Iterable[pb.ComplianceReplyTexts] = (),
    timeout: float | None = None,
) -> Prepared[pb.UpdateComplianceRepliesResponse]:
    """Replace the location's brand name, support contact and reply texts (a replace: safe to
    retry; both names are required by the server); ``reply_texts`` builds one language's
    texts."""
    request = pb.UpdateComplianceRepliesRequest(
        location_id=location_id,
        brand_name=brand_name,
        support_contact=support_contact,
        texts=list(texts),
    )
    return Prepared("UpdateComplianceReplies", request, _same, timeout, retry=True)


def reply_texts(
    language: str,
    *,
    opt_out_confirmation: str = "",
    opt_in_confirmation: str = "",
    help: str = "",
) -> pb.ComplianceReplyTexts:
    """One language's reply texts ("" keeps the language's default)."""
    return pb.ComplianceReplyTexts(
        language=language,
        opt_out_confirmation=opt_out_confirmation,
        opt_in_confirmation=opt_in_confirmation,
        help=help,
    )


def _settings_of(answer: pb.UpdateKeywordSettingsResponse) -> pb.KeywordSettings:
    return answer.settings


def report_delivery_event(
    location_id: str,
    contact_id: str,
    *,
    channel: Channel,
    provider: str,
    code: str,
    address: str | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Prepared[pb.ReportDeliveryEventResponse]:
    """Apply a messaging provider's event or error code (e.g. Meta's WhatsApp
    ``user_preferences:stop_marketing`` or ``131050``); unknown codes change nothing."""
    request = pb.ReportDeliveryEventRequest(
        location_id=location_id,
        contact_id=contact_id,
        channel=channel.value,
        provider=provider,
        code=code,
        address=address or "",
        idempotency_key=idempotency_key or "",
    )
    return Prepared("ReportDeliveryEvent", request, _same, timeout, bool(idempotency_key))


def record_consent(
    location_id: str,
    contact_id: str,
    channel: Channel,
    purpose: ConsentPurpose,
    *,
    method: ConsentMethod,
    source: Source,
    address: str | None = None,
    kind: ConsentKind | None = None,
    implied_basis: ImpliedBasis | None = None,
    captured_at: dt.datetime | None = None,
    expires_at: dt.datetime | None = None,
    actor_id: str = "",
    evidence: ConsentEvidence | None = None,
    pending: bool = False,
    consent_source: str = "",
    expected_version: int | None = None,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Prepared[pb.RecordConsentResponse]:
    """Record the contact's consent to ``purpose`` on ``channel`` (only for ``address`` when
    given), or with ``pending`` a double opt-in awaiting the contact's YES. ``kind`` None is
    express; times are aware datetimes (``captured_at`` None: now). Recording the same
    (channel, purpose, address) again replaces it."""
    request = pb.RecordConsentRequest(
        location_id=location_id,
        contact_id=contact_id,
        channel=channel.value,
        purpose=purpose.value,
        address=address or "",
        method=method.value,
        kind=kind.value if kind is not None else pb.CONSENT_KIND_UNSPECIFIED,
        implied_basis=(
            implied_basis.value if implied_basis is not None else pb.IMPLIED_BASIS_UNSPECIFIED
        ),
        source=source.value,
        actor_id=actor_id,
        pending=pending,
        consent_source=consent_source,
        idempotency_key=idempotency_key or "",
    )
    for name, when in (("captured_at", captured_at), ("expires_at", expires_at)):
        stamp = _timestamp(name, when)
        if stamp is not None:
            getattr(request, name).CopyFrom(stamp)
    if evidence is not None:
        request.evidence.CopyFrom(evidence.message())
    if expected_version is not None:
        request.expected_version = expected_version
    return Prepared("RecordConsent", request, _same, timeout, bool(idempotency_key))


def revoke_consent(
    location_id: str,
    contact_id: str,
    channel: Channel,
    *,
    source: Source,
    purpose: ConsentPurpose | None = None,
    address: str | None = None,
    actor_id: str = "",
    note: str = "",
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Prepared[pb.RevokeConsentResponse]:
    """Revoke the contact's consents on ``channel``: of one ``purpose`` (None: every
    purpose), of one ``address`` (None: the contact's and every address's)."""
    request = pb.RevokeConsentRequest(
        location_id=location_id,
        contact_id=contact_id,
        channel=channel.value,
        purpose=purpose.value if purpose is not None else pb.CONSENT_PURPOSE_UNSPECIFIED,
        address=address or "",
        source=source.value,
        actor_id=actor_id,
        note=note,
        idempotency_key=idempotency_key or "",
    )
    return Prepared("RevokeConsent", request, _same, timeout, bool(idempotency_key))


def get_consent_policy(
    location_id: str, *, timeout: float | None = None
) -> Prepared[pb.ConsentPolicy]:
    """The location's consent policy (no channel requires consent by default)."""
    request = pb.GetConsentPolicyRequest(location_id=location_id)
    return Prepared("GetConsentPolicy", request, _policy_of, timeout)


def get_server_info(*, timeout: float | None = None) -> Prepared[pb.GetServerInfoResponse]:
    """The server's version and clock, and what the caller may do there: its name,
    permissions and locations ("*": every one); whether authentication and TLS are on."""
    return Prepared("GetServerInfo", pb.GetServerInfoRequest(), _same, timeout)


def update_consent_policy(
    location_id: str,
    *,
    channels: Mapping[Channel, Collection[ConsentPurpose]] | None = None,
    double_opt_in_window_seconds: int = 0,
    timeout: float | None = None,
) -> Prepared[pb.ConsentPolicy]:
    """Replace the location's consent policy (a replace: safe to retry). ``channels`` maps
    each channel to the purposes that need consent on it (INFORMATIONAL only with
    MARKETING), e.g. ``{Channel.SMS: {ConsentPurpose.MARKETING}}``; a channel not named
    requires nothing. ``double_opt_in_window_seconds`` 0 is 24 hours."""
    request = pb.UpdateConsentPolicyRequest(
        location_id=location_id,
        policy=pb.ConsentPolicy(
            channels=[
                pb.ChannelConsentPolicy(
                    channel=channel.value,
                    require_marketing=ConsentPurpose.MARKETING in purposes,
                    require_informational=ConsentPurpose.INFORMATIONAL in purposes,
                )
                for channel, purposes in sorted((channels or {}).items(), key=_first)
            ],
            double_opt_in_window_seconds=double_opt_in_window_seconds,
        ),
    )
    return Prepared("UpdateConsentPolicy", request, _policy_of, timeout, retry=True)


def _first(item: tuple[Channel, Any]) -> Channel:
    return item[0]


def _policy_of(
    answer: pb.GetConsentPolicyResponse | pb.UpdateConsentPolicyResponse,
) -> pb.ConsentPolicy:
    return answer.policy


def watch_changes(
    *,
    location_ids: Iterable[str] = (),
    channels: Iterable[Channel] = (),
    directions: Iterable[Direction] = (),
    sources: Iterable[Source] = (),
    kinds: Iterable[ChangeKind] = (),
    after_cursor: str | None = None,
    bookmarks: bool = False,
    max_events_per_message: int = 0,
) -> WatchPlan:
    """Every change after ``after_cursor`` (None: from now), for ever.

    Survives disconnects and server restarts: reconnects with backoff and resumes from the
    last cursor seen, so no event is yielded twice or skipped. Raises CursorExpired when the
    server no longer has the changes after the cursor. With ``bookmarks`` the stream's
    bookmarks are yielded too (their ``cursor`` is a resume point). ``kinds`` narrows the
    stream to changes of blocks, of consents or compliance replies (empty: every change).
    ``max_events_per_message`` (up to 1,000) lets the server send the events that are ready
    together in one message when the stream is behind (they are still yielded one by one).
    """
    filters = pb.WatchChangesRequest(
        location_ids=list(location_ids),
        channels=[c.value for c in channels],
        directions=[d.value for d in directions],
        sources=[s.value for s in sources],
        kinds=[k.value for k in kinds],
        max_events_per_message=max_events_per_message,
    )
    return WatchPlan(filters, after_cursor, bookmarks)


def get_quiet_hours_settings(
    location_id: str, *, timeout: float | None = None
) -> Prepared[pb.QuietHoursSettings]:
    """The location's quiet-hours settings (none by default: the legal rules alone)."""
    request = pb.GetQuietHoursSettingsRequest(location_id=location_id)
    return Prepared("GetQuietHoursSettings", request, _quiet_settings_of, timeout)


def update_quiet_hours_settings(
    location_id: str,
    *,
    informational: bool = False,
    default_time_zone: str = "",
    window_start: str = "",
    window_end: str = "",
    timeout: float | None = None,
) -> Prepared[pb.QuietHoursSettings]:
    """Replace the location's quiet-hours settings (a replace: safe to retry): judge
    ``informational`` sends too; ``default_time_zone`` (IANA) for recipients of no known
    zone; a daily window "HH:MM" to "HH:MM" that narrows the law's (never widens it)."""
    request = pb.UpdateQuietHoursSettingsRequest(
        location_id=location_id,
        settings=pb.QuietHoursSettings(
            informational=informational,
            default_time_zone=default_time_zone,
            window_start=window_start,
            window_end=window_end,
        ),
    )
    return Prepared("UpdateQuietHoursSettings", request, _quiet_settings_of, timeout, retry=True)


def _quiet_settings_of(
    answer: pb.GetQuietHoursSettingsResponse | pb.UpdateQuietHoursSettingsResponse,
) -> pb.QuietHoursSettings:
    return answer.settings


def erase_contact(
    location_id: str,
    contact_id: str,
    *,
    reference: str,
    phone_numbers: Iterable[str] = (),
    email_addresses: Iterable[str] = (),
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Prepared[pb.EraseContactResponse]:
    """Erase the contact's personal data (GDPR Art. 17); ``reference`` is the erasure
    request's ticket id (no email address or phone number: it is kept). Phone numbers and
    email addresses known to the caller are erased too. The opt-outs stay, by keyed hash.
    Needs the ``erase`` scope."""
    request = pb.EraseContactRequest(
        location_id=location_id,
        contact_id=contact_id,
        phone_numbers=list(phone_numbers),
        email_addresses=list(email_addresses),
        reference=reference,
        idempotency_key=idempotency_key or "",
    )
    return Prepared("EraseContact", request, _same, timeout, retry=bool(idempotency_key))


def get_block_expiry_settings(
    location_id: str, *, timeout: float | None = None
) -> Prepared[pb.BlockExpirySettings]:
    """The location's lifetime of temporary carrier blocks (0: they never expire)."""
    request = pb.GetBlockExpirySettingsRequest(location_id=location_id)
    return Prepared("GetBlockExpirySettings", request, _expiry_of, timeout)


def update_block_expiry_settings(
    location_id: str, *, sms_carrier_temporary_seconds: int = 0, timeout: float | None = None
) -> Prepared[pb.BlockExpirySettings]:
    """Replace the location's lifetime of SMS_CARRIER_TEMPORARY blocks, in seconds (0: never;
    a replace: safe to retry)."""
    request = pb.UpdateBlockExpirySettingsRequest(
        location_id=location_id,
        settings=pb.BlockExpirySettings(
            sms_carrier_temporary_seconds=sms_carrier_temporary_seconds
        ),
    )
    return Prepared("UpdateBlockExpirySettings", request, _expiry_of, timeout, retry=True)


def _expiry_of(
    answer: pb.GetBlockExpirySettingsResponse | pb.UpdateBlockExpirySettingsResponse,
) -> pb.BlockExpirySettings:
    return answer.settings


def get_delivery_event_mappings(
    location_id: str, *, provider: str | None = None, timeout: float | None = None
) -> Prepared[pb.GetDeliveryEventMappingsResponse]:
    """The location's overrides of the provider code tables and the built-in tables (of one
    provider when ``provider`` is given)."""
    request = pb.GetDeliveryEventMappingsRequest(location_id=location_id, provider=provider or "")
    return Prepared("GetDeliveryEventMappings", request, _same, timeout)


def update_delivery_event_mappings(
    location_id: str,
    *,
    overrides: Iterable[pb.DeliveryEventOverride] = (),
    timeout: float | None = None,
) -> Prepared[pb.UpdateDeliveryEventMappingsResponse]:
    """Replace the location's overrides of the provider code tables (a replace: safe to
    retry), e.g. ``pb.DeliveryEventOverride(provider="telnyx", code="40008",
    channel=pb.CHANNEL_SMS, reason=pb.REASON_SMS_CARRIER_TEMPORARY)``; no override weakens a
    built-in opt-out (INVALID_ARGUMENT)."""
    request = pb.UpdateDeliveryEventMappingsRequest(
        location_id=location_id, overrides=list(overrides)
    )
    return Prepared("UpdateDeliveryEventMappings", request, _same, timeout, retry=True)


# -- bulk writes, listings and the export ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ExportPlan:
    """A restartable ExportSuppressions: the request, restarted after the last message's
    resume token when the stream breaks."""

    request: pb.ExportSuppressionsRequest

    def resumed(self, token: str) -> pb.ExportSuppressionsRequest:
        request = pb.ExportSuppressionsRequest()
        request.CopyFrom(self.request)
        request.resume_token = token
        return request


def bulk_item(
    contact_id: str,
    *,
    action: DndAction,
    source: Source,
    direction: Direction = Direction.OUTBOUND,
    channel: Channel | None = None,
    all_channels: bool = False,
    marketing_only: bool = False,
    reason: Reason | None = None,
    actor_id: str = "",
    note: str = "",
    evidence: str = "",
    provider_detail: str = "",
    suppression_removal_confirmed: bool = False,
    expected_version: int | None = None,
    address: str | None = None,
) -> pb.SetDndRequest:
    """One item of ``bulk_set_dnd``: what ``set_dnd`` takes for one contact (the call names
    the location and the idempotency key)."""
    item = set_dnd(
        "",
        contact_id,
        action=action,
        source=source,
        direction=direction,
        channel=channel,
        all_channels=all_channels,
        marketing_only=marketing_only,
        reason=reason,
        actor_id=actor_id,
        note=note,
        evidence=evidence,
        provider_detail=provider_detail,
        suppression_removal_confirmed=suppression_removal_confirmed,
        expected_version=expected_version,
        address=address,
    ).request
    assert isinstance(item, pb.SetDndRequest)
    return item


def bulk_set_dnd(
    location_id: str,
    items: Iterable[pb.SetDndRequest],
    *,
    idempotency_key: str | None = None,
    timeout: float | None = None,
) -> Prepared[pb.BulkSetDndResponse]:
    """Up to 10,000 SetDnd items (``bulk_item``) of one location, answered per item in
    order. With an ``idempotency_key`` the client retries UNAVAILABLE (also after part of
    the call was written): the retry finishes the call and answers every item."""
    request = pb.BulkSetDndRequest(
        location_id=location_id, items=list(items), idempotency_key=idempotency_key or ""
    )
    return Prepared("BulkSetDnd", request, _same, timeout, retry=bool(idempotency_key))


def suppression_filter(
    *,
    channel: Channel | None = None,
    direction: Direction | None = None,
    reason: Reason | None = None,
    source: Source | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    contact_id: str = "",
    address: str = "",
) -> pb.SuppressionFilter:
    return pb.SuppressionFilter(
        channel=channel.value if channel is not None else pb.CHANNEL_UNSPECIFIED,
        direction=direction.value if direction is not None else pb.DIRECTION_UNSPECIFIED,
        reason=reason.value if reason is not None else pb.REASON_UNSPECIFIED,
        source=source.value if source is not None else pb.SOURCE_UNSPECIFIED,
        since=_timestamp("since", since),
        until=_timestamp("until", until),
        contact_id=contact_id,
        address=address,
    )


def list_blocks(
    location_id: str,
    *,
    channel: Channel | None = None,
    direction: Direction | None = None,
    reason: Reason | None = None,
    source: Source | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    contact_id: str = "",
    address: str = "",
    page_size: int = 0,
    page_token: str = "",
    timeout: float | None = None,
) -> Prepared[pb.ListBlocksResponse]:
    """A page of the location's active blocks (filtered); pass ``next_page_token`` on."""
    request = pb.ListBlocksRequest(
        location_id=location_id,
        filter=suppression_filter(
            channel=channel,
            direction=direction,
            reason=reason,
            source=source,
            since=since,
            until=until,
            contact_id=contact_id,
            address=address,
        ),
        page_size=page_size,
        page_token=page_token,
    )
    return Prepared("ListBlocks", request, _same, timeout)


def list_suppressions(
    location_id: str,
    *,
    channel: Channel | None = None,
    direction: Direction | None = None,
    reason: Reason | None = None,
    source: Source | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    contact_id: str = "",
    address: str = "",
    page_size: int = 0,
    page_token: str = "",
    timeout: float | None = None,
) -> Prepared[pb.ListSuppressionsResponse]:
    """A page of the location's address suppressions (filtered)."""
    request = pb.ListSuppressionsRequest(
        location_id=location_id,
        filter=suppression_filter(
            channel=channel,
            direction=direction,
            reason=reason,
            source=source,
            since=since,
            until=until,
            contact_id=contact_id,
            address=address,
        ),
        page_size=page_size,
        page_token=page_token,
    )
    return Prepared("ListSuppressions", request, _same, timeout)


def export_suppressions(
    location_id: str,
    *,
    channel: Channel | None = None,
    direction: Direction | None = None,
    reason: Reason | None = None,
    source: Source | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    contact_id: str = "",
    address: str = "",
    suppressions_only: bool = False,
    resume_token: str = "",
) -> ExportPlan:
    """The location's blocks, then its address suppressions, as stream messages of up to
    1,000 rows. Restarts after the last message received when the stream breaks (server
    restart, lost connection), so no row is yielded twice; ``resume_token`` (of a message)
    continues an earlier export."""
    request = pb.ExportSuppressionsRequest(
        location_id=location_id,
        filter=suppression_filter(
            channel=channel,
            direction=direction,
            reason=reason,
            source=source,
            since=since,
            until=until,
            contact_id=contact_id,
            address=address,
        ),
        suppressions_only=suppressions_only,
        resume_token=resume_token,
    )
    return ExportPlan(request)
