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
) -> pb.UpdateKeywordSettingsRequest:
    """An UpdateKeywordSettings of extra opt-out and opt-in words."""
    settings = pb.KeywordSettings(
        extra_opt_out_words=list(outs),
        extra_opt_in_words=list(ins),
        detect_revocation_phrases=detect,
    )
    return pb.UpdateKeywordSettingsRequest(location_id=loc, settings=settings)


def watch(*locations: str, **fields: Any) -> pb.WatchChangesRequest:
    return pb.WatchChangesRequest(location_ids=list(locations), **fields)
