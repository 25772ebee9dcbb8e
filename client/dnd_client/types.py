"""Python enums of the dnd.v1 API (their values are the protobuf numbers, so they can be
passed wherever the generated enums are expected) and the small values a request carries."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dnd.v1 import dnd_pb2 as pb


class Channel(enum.IntEnum):
    CALL = pb.CHANNEL_CALL
    EMAIL = pb.CHANNEL_EMAIL
    SMS = pb.CHANNEL_SMS
    WHATSAPP = pb.CHANNEL_WHATSAPP
    FACEBOOK = pb.CHANNEL_FACEBOOK
    GMB = pb.CHANNEL_GMB
    # RCS business messaging.
    RCS = pb.CHANNEL_RCS


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
    # Marketing-only opt-outs: they deny MARKETING sends (and sends of no stated purpose) only.
    MARKETING_OPT_OUT = pb.REASON_MARKETING_OPT_OUT
    WHATSAPP_MARKETING_OPT_OUT = pb.REASON_WHATSAPP_MARKETING_OPT_OUT
    EMAIL_MARKETING_UNSUBSCRIBE = pb.REASON_EMAIL_MARKETING_UNSUBSCRIBE
    # An opt-out keyword on WhatsApp or RCS.
    KEYWORD_OPT_OUT = pb.REASON_KEYWORD_OPT_OUT


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


class Purpose(enum.IntEnum):
    """What a message is for (``check_send(purpose=...)``); None: as before purposes existed."""

    MARKETING = pb.PURPOSE_MARKETING
    INFORMATIONAL = pb.PURPOSE_INFORMATIONAL
    TRANSACTIONAL = pb.PURPOSE_TRANSACTIONAL
    COMPLIANCE_REPLY = pb.PURPOSE_COMPLIANCE_REPLY


class Denial(enum.IntEnum):
    """What denied a send (``CheckSendResponse.denial``)."""

    DND_BLOCK = pb.DENIAL_DND_BLOCK
    ADDRESS_SUPPRESSED = pb.DENIAL_ADDRESS_SUPPRESSED
    MARKETING_OPT_OUT = pb.DENIAL_MARKETING_OPT_OUT
    NO_CONSENT = pb.DENIAL_NO_CONSENT
    COMPLIANCE_REPLY_SPENT = pb.DENIAL_COMPLIANCE_REPLY_SPENT


class ConsentPurpose(enum.IntEnum):
    """What a consent is given for."""

    MARKETING = pb.CONSENT_PURPOSE_MARKETING
    INFORMATIONAL = pb.CONSENT_PURPOSE_INFORMATIONAL


class ConsentMethod(enum.IntEnum):
    """How a consent was captured."""

    WEB_FORM = pb.CONSENT_METHOD_WEB_FORM
    SMS_KEYWORD = pb.CONSENT_METHOD_SMS_KEYWORD
    DOUBLE_OPT_IN = pb.CONSENT_METHOD_DOUBLE_OPT_IN
    VERBAL = pb.CONSENT_METHOD_VERBAL
    WRITTEN = pb.CONSENT_METHOD_WRITTEN
    IMPORT = pb.CONSENT_METHOD_IMPORT
    API = pb.CONSENT_METHOD_API


class ConsentKind(enum.IntEnum):
    EXPRESS = pb.CONSENT_KIND_EXPRESS
    IMPLIED = pb.CONSENT_KIND_IMPLIED


class ImpliedBasis(enum.IntEnum):
    """What implied consent rests on; it sets the expiry when none is given."""

    PURCHASE = pb.IMPLIED_BASIS_PURCHASE
    INQUIRY = pb.IMPLIED_BASIS_INQUIRY


class ConsentStatus(enum.IntEnum):
    ACTIVE = pb.CONSENT_STATUS_ACTIVE
    PENDING = pb.CONSENT_STATUS_PENDING
    REVOKED = pb.CONSENT_STATUS_REVOKED
    EXPIRED = pb.CONSENT_STATUS_EXPIRED


class ChangeKind(enum.IntEnum):
    """What a change is about (``watch(kinds=...)``)."""

    BLOCK = pb.CHANGE_KIND_BLOCK
    CONSENT = pb.CHANGE_KIND_CONSENT
    COMPLIANCE_REPLY = pb.CHANGE_KIND_COMPLIANCE_REPLY
    ERASURE = pb.CHANGE_KIND_ERASURE


@dataclass(frozen=True, slots=True)
class ConsentEvidence:
    """The proof of a consent (``record_consent(evidence=...)``). The server bounds each size:
    form_url 2048, disclosure_text 4000, disclosure_version 64, ip_address 45, user_agent 512,
    recording_ref 512 characters."""

    form_url: str = ""
    # The disclosure the contact agreed to, or its version.
    disclosure_text: str = ""
    disclosure_version: str = ""
    ip_address: str = ""
    user_agent: str = ""
    # A call recording or document reference (VERBAL, WRITTEN).
    recording_ref: str = ""

    def message(self) -> pb.ConsentEvidence:
        return pb.ConsentEvidence(
            form_url=self.form_url,
            disclosure_text=self.disclosure_text,
            disclosure_version=self.disclosure_version,
            ip_address=self.ip_address,
            user_agent=self.user_agent,
            recording_ref=self.recording_ref,
        )


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
        "Purpose": "PURPOSE_",
        "Denial": "DENIAL_",
        "ConsentPurpose": "CONSENT_PURPOSE_",
        "ConsentMethod": "CONSENT_METHOD_",
        "ConsentKind": "CONSENT_KIND_",
        "ConsentStatus": "CONSENT_STATUS_",
        "ImpliedBasis": "IMPLIED_BASIS_",
        "ChangeKind": "CHANGE_KIND_",
    }
    return full.name.removeprefix(prefixes.get(enum_type, ""))
