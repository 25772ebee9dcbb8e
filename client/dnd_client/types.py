"""Python enums of the dnd.v1 API: their values are the protobuf numbers, so they can be
passed wherever the generated enums are expected."""

from __future__ import annotations

import enum

from dnd.v1 import dnd_pb2 as pb


class Channel(enum.IntEnum):
    CALL = pb.CHANNEL_CALL
    EMAIL = pb.CHANNEL_EMAIL
    SMS = pb.CHANNEL_SMS
    WHATSAPP = pb.CHANNEL_WHATSAPP
    FACEBOOK = pb.CHANNEL_FACEBOOK
    GMB = pb.CHANNEL_GMB


class Direction(enum.IntEnum):
    OUTBOUND = pb.DIRECTION_OUTBOUND
    INBOUND = pb.DIRECTION_INBOUND


class Reason(enum.IntEnum):
    MANUAL = pb.REASON_MANUAL
    SMS_OPT_OUT_KEYWORD = pb.REASON_SMS_OPT_OUT_KEYWORD
    SMS_CARRIER_PERMANENT = pb.REASON_SMS_CARRIER_PERMANENT
    SMS_CARRIER_TEMPORARY = pb.REASON_SMS_CARRIER_TEMPORARY
    EMAIL_HARD_BOUNCE = pb.REASON_EMAIL_HARD_BOUNCE
    EMAIL_GENERIC_FAILURE = pb.REASON_EMAIL_GENERIC_FAILURE
    EMAIL_SUPPRESS_BOUNCE = pb.REASON_EMAIL_SUPPRESS_BOUNCE
    EMAIL_SUPPRESS_UNSUBSCRIBE = pb.REASON_EMAIL_SUPPRESS_UNSUBSCRIBE
    EMAIL_SUPPRESS_COMPLAINT = pb.REASON_EMAIL_SUPPRESS_COMPLAINT
    EMAIL_SPAM_COMPLAINT = pb.REASON_EMAIL_SPAM_COMPLAINT
    EMAIL_UNSUBSCRIBE_LINK = pb.REASON_EMAIL_UNSUBSCRIBE_LINK


class Source(enum.IntEnum):
    USER = pb.SOURCE_USER
    WORKFLOW = pb.SOURCE_WORKFLOW
    CONTACT = pb.SOURCE_CONTACT
    SYSTEM = pb.SOURCE_SYSTEM
    SUPPORT = pb.SOURCE_SUPPORT


class SendKind(enum.IntEnum):
    MANUAL = pb.SEND_KIND_MANUAL
    AUTOMATED = pb.SEND_KIND_AUTOMATED


class EmailEvent(enum.IntEnum):
    BOUNCE = pb.EMAIL_EVENT_BOUNCE
    GENERIC_FAILURE = pb.EMAIL_EVENT_GENERIC_FAILURE
    SUPPRESS_BOUNCE = pb.EMAIL_EVENT_SUPPRESS_BOUNCE
    SUPPRESS_UNSUBSCRIBE = pb.EMAIL_EVENT_SUPPRESS_UNSUBSCRIBE
    SUPPRESS_COMPLAINT = pb.EMAIL_EVENT_SUPPRESS_COMPLAINT
    SPAM_COMPLAINT = pb.EMAIL_EVENT_SPAM_COMPLAINT
    UNSUBSCRIBE_LINK = pb.EMAIL_EVENT_UNSUBSCRIBE_LINK
    LIST_UNSUBSCRIBE_POST = pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST
    TEMPORARY_FAILURE = pb.EMAIL_EVENT_TEMPORARY_FAILURE


def name_of(enum_type: str, value: int) -> str:
    """The short name of a protobuf enum value: ``name_of("Channel", 3) == "SMS"``."""
    full = pb.DESCRIPTOR.enum_types_by_name[enum_type].values_by_number.get(value)
    if full is None:
        return str(value)
    prefixes = {
        "Channel": "CHANNEL_",
        "Direction": "DIRECTION_",
        "Reason": "REASON_",
        "Source": "SOURCE_",
        "DndStatus": "DND_STATUS_",
        "KeywordAction": "KEYWORD_ACTION_",
        "EventOutcome": "EVENT_OUTCOME_",
        "EmailEvent": "EMAIL_EVENT_",
    }
    return full.name.removeprefix(prefixes.get(enum_type, ""))
