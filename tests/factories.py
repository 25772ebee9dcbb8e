"""Request builders shared by the tests: one per RPC, each filling in what a typical call sends
(an outbound SMS block by the user, the twilio and mailgun providers) so a test names only what
it is about. Every keyword argument is a field of the request and overrides the default.

    stub.SetDnd(enable(loc, contact), timeout=T)
    stub.SetDnd(disable(loc, contact, channel=None, source=pb.SOURCE_SUPPORT, evidence="..."))
    stub.CheckSend(check(loc, contact, channel=pb.CHANNEL_EMAIL, address="a@example.com"))
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dnd.v1 import dnd_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

SMS = pb.CHANNEL_SMS
OUT = pb.DIRECTION_OUTBOUND
IN = pb.DIRECTION_INBOUND
ENABLE = pb.DND_ACTION_ENABLE
DISABLE = pb.DND_ACTION_DISABLE


def scope(channel: int | None) -> pb.Scope:
    """The block scope of ``channel``; None is every channel."""
    if channel is None:
        return pb.Scope(all_channels=True)
    return pb.Scope(channel=channel)  # type: ignore[arg-type]


def set_dnd(
    loc: str,
    contact: str,
    action: int = ENABLE,
    channel: int | None = SMS,
    **fields: Any,
) -> pb.SetDndRequest:
    """A SetDnd of an outbound block on ``channel`` (None: all channels) by the user; an inbound
    one (``direction=IN``) has no scope unless given."""
    base: dict[str, Any] = {
        "location_id": loc,
        "contact_id": contact,
        "action": action,
        "direction": OUT,
        "source": pb.SOURCE_USER,
    }
    base.update(fields)
    if "scope" not in fields and base["direction"] == OUT:
        base["scope"] = scope(channel)
    return pb.SetDndRequest(**base)


def enable(loc: str, contact: str, channel: int | None = SMS, **fields: Any) -> pb.SetDndRequest:
    return set_dnd(loc, contact, ENABLE, channel, **fields)


def disable(loc: str, contact: str, channel: int | None = SMS, **fields: Any) -> pb.SetDndRequest:
    return set_dnd(loc, contact, DISABLE, channel, **fields)


def get_status(loc: str, contact: str, **fields: Any) -> pb.GetStatusRequest:
    return pb.GetStatusRequest(location_id=loc, contact_id=contact, **fields)


def check(loc: str, contact: str, channel: int = SMS, **fields: Any) -> pb.CheckSendRequest:
    return pb.CheckSendRequest(
        location_id=loc,
        contact_id=contact,
        channel=channel,  # type: ignore[arg-type]
        **fields,
    )


def targets(*contacts: str | tuple[str, str]) -> list[pb.CheckTarget]:
    """CheckTargets of contact ids, or of (contact id, address) pairs."""
    return [
        pb.CheckTarget(contact_id=c)
        if isinstance(c, str)
        else pb.CheckTarget(contact_id=c[0], address=c[1])
        for c in contacts
    ]


def batch_check(
    loc: str, contacts: Iterable[str | pb.CheckTarget], channel: int = SMS, **fields: Any
) -> pb.BatchCheckSendRequest:
    listed = [
        c if isinstance(c, pb.CheckTarget) else pb.CheckTarget(contact_id=c) for c in contacts
    ]
    return pb.BatchCheckSendRequest(
        location_id=loc,
        channel=channel,  # type: ignore[arg-type]
        targets=listed,
        **fields,
    )


def inbound(
    loc: str, contact: str, body: str = "STOP", channel: int = SMS, **fields: Any
) -> pb.ProcessInboundMessageRequest:
    return pb.ProcessInboundMessageRequest(
        location_id=loc,
        contact_id=contact,
        channel=channel,  # type: ignore[arg-type]
        body=body,
        **fields,
    )


def sms_failure(
    loc: str, contact: str, code: str = "30004", **fields: Any
) -> pb.ReportSmsDeliveryFailureRequest:
    base: dict[str, Any] = {"provider": "twilio", "error_code": code, **fields}
    return pb.ReportSmsDeliveryFailureRequest(location_id=loc, contact_id=contact, **base)


def email_event(
    loc: str, contact: str, event: int = pb.EMAIL_EVENT_BOUNCE, **fields: Any
) -> pb.ReportEmailEventRequest:
    base: dict[str, Any] = {"provider": "mailgun", **fields}
    return pb.ReportEmailEventRequest(
        location_id=loc,
        contact_id=contact,
        event=event,  # type: ignore[arg-type]
        **base,
    )


def delivery_event(
    loc: str, contact: str, code: str = "131050", **fields: Any
) -> pb.ReportDeliveryEventRequest:
    """A ReportDeliveryEvent of Meta (WhatsApp) with ``code``."""
    base: dict[str, Any] = {"provider": "meta", "channel": pb.CHANNEL_WHATSAPP, **fields}
    return pb.ReportDeliveryEventRequest(location_id=loc, contact_id=contact, code=code, **base)


def history(loc: str, contact: str = "", **fields: Any) -> pb.ListHistoryRequest:
    """A ListHistory of the contact (``contact_id=`` too), or of the whole location."""
    return pb.ListHistoryRequest(location_id=loc, **{"contact_id": contact, **fields})


def keyword_settings(
    loc: str,
    outs: Iterable[str] = (),
    ins: Iterable[str] = (),
    detect: bool = False,
    **fields: Any,
) -> pb.UpdateKeywordSettingsRequest:
    """An UpdateKeywordSettings of extra opt-out and opt-in words (``fields``: the other
    KeywordSettings fields, e.g. languages=["es", "fr"], default_language="fr")."""
    settings = pb.KeywordSettings(
        extra_opt_out_words=list(outs),
        extra_opt_in_words=list(ins),
        detect_revocation_phrases=detect,
        **fields,
    )
    return pb.UpdateKeywordSettingsRequest(location_id=loc, settings=settings)


BRAND = "Acme Dental"
SUPPORT = "+14155550100"


def compliance_replies(
    loc: str,
    brand_name: str = BRAND,
    support_contact: str = SUPPORT,
    texts: Iterable[pb.ComplianceReplyTexts] = (),
) -> pb.UpdateComplianceRepliesRequest:
    """An UpdateComplianceReplies with a brand name and support contact (the default texts
    unless ``texts``)."""
    return pb.UpdateComplianceRepliesRequest(
        location_id=loc,
        brand_name=brand_name,
        support_contact=support_contact,
        texts=list(texts),
    )


def watch(*locations: str, **fields: Any) -> pb.WatchChangesRequest:
    return pb.WatchChangesRequest(location_ids=list(locations), **fields)


def quiet_hours_settings(loc: str, **fields: Any) -> pb.UpdateQuietHoursSettingsRequest:
    """An UpdateQuietHoursSettings replacing the location's settings with ``fields`` (of
    QuietHoursSettings: informational, default_time_zone, window_start, window_end)."""
    return pb.UpdateQuietHoursSettingsRequest(
        location_id=loc, settings=pb.QuietHoursSettings(**fields)
    )


# A planned send time (send_at) every US zone's quiet hours allow: 13:00 in New York, 08:00 in
# Honolulu, a Thursday that is no holiday. Tests about DND or consent, not the hour, send at it.
DAYTIME = "2099-01-15T18:00:00Z"


def at(when: str) -> Timestamp:
    """A Timestamp of an RFC 3339 time, e.g. at("2030-01-10T02:30:00Z") for send_at."""
    stamp = Timestamp()
    stamp.FromJsonString(when)
    return stamp


def erase(loc: str, contact: str, **fields: Any) -> pb.EraseContactRequest:
    """An EraseContact of ``contact`` under a ticket reference."""
    base: dict[str, Any] = {"location_id": loc, "contact_id": contact, "reference": "GDPR-1"}
    base.update(fields)
    return pb.EraseContactRequest(**base)


def block_expiry(loc: str, seconds: int) -> pb.UpdateBlockExpirySettingsRequest:
    """An UpdateBlockExpirySettings giving SMS_CARRIER_TEMPORARY blocks ``seconds`` to live."""
    return pb.UpdateBlockExpirySettingsRequest(
        location_id=loc,
        settings=pb.BlockExpirySettings(sms_carrier_temporary_seconds=seconds),
    )


def override(
    provider: str, code: str, channel: int, reason: int = 0, *, ignore: bool = False
) -> pb.DeliveryEventOverride:
    """One override of a provider code table."""
    return pb.DeliveryEventOverride(
        provider=provider,
        code=code,
        channel=channel,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        ignore=ignore,
    )


def update_mappings(
    loc: str, *overrides: pb.DeliveryEventOverride
) -> pb.UpdateDeliveryEventMappingsRequest:
    return pb.UpdateDeliveryEventMappingsRequest(location_id=loc, overrides=list(overrides))
