"""What provider reports (carrier error codes, email events, messaging providers' events)
do to a contact's DND.

Each mapping is one data table; an entry missing from a table means "no change". A report's
answer says what it did (``event_outcome``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from dnd_server.domain.model import Channel, Reason, Source

# Carrier / SMS provider error codes that set DND (Twilio's numbering). Temporary: the number
# cannot receive right now (out of service, filtered, inactive, landline); permanent: the
# recipient opted out at the carrier (30004) or replied STOP to the provider (21610).
SMS_ERROR_CODES: dict[str, Reason] = {
    "30003": Reason.SMS_CARRIER_TEMPORARY,  # unreachable / out of service / carrier filtering
    "30005": Reason.SMS_CARRIER_TEMPORARY,  # unknown or inactive number
    "30006": Reason.SMS_CARRIER_TEMPORARY,  # landline or unreachable carrier
    "30004": Reason.SMS_CARRIER_PERMANENT,  # message blocked: recipient does not want SMS
    "21610": Reason.SMS_CARRIER_PERMANENT,  # recipient replied STOP to the sender
}


class EmailEvent(enum.StrEnum):
    """Email provider events (Mailgun's vocabulary)."""

    BOUNCE = "BOUNCE"  # permanent failure, reason bounce
    GENERIC_FAILURE = "GENERIC_FAILURE"  # permanent failure, reason generic
    SUPPRESS_BOUNCE = "SUPPRESS_BOUNCE"  # permanent failure, reason suppress-bounce
    SUPPRESS_UNSUBSCRIBE = "SUPPRESS_UNSUBSCRIBE"  # permanent failure, suppress-unsubscribe
    SUPPRESS_COMPLAINT = "SUPPRESS_COMPLAINT"  # permanent failure, suppress-complaint
    SPAM_COMPLAINT = "SPAM_COMPLAINT"  # the recipient marked the email as spam
    UNSUBSCRIBE_LINK = "UNSUBSCRIBE_LINK"  # the recipient clicked the unsubscribe link
    LIST_UNSUBSCRIBE_POST = "LIST_UNSUBSCRIBE_POST"  # one-click List-Unsubscribe-Post
    TEMPORARY_FAILURE = "TEMPORARY_FAILURE"  # soft bounce, will be retried: no change


@dataclass(frozen=True, slots=True)
class EventEffect:
    reason: Reason
    source: Source


EMAIL_EVENTS: dict[EmailEvent, EventEffect] = {
    EmailEvent.BOUNCE: EventEffect(Reason.EMAIL_HARD_BOUNCE, Source.SYSTEM),
    EmailEvent.GENERIC_FAILURE: EventEffect(Reason.EMAIL_GENERIC_FAILURE, Source.SYSTEM),
    EmailEvent.SUPPRESS_BOUNCE: EventEffect(Reason.EMAIL_SUPPRESS_BOUNCE, Source.SYSTEM),
    EmailEvent.SUPPRESS_UNSUBSCRIBE: EventEffect(Reason.EMAIL_SUPPRESS_UNSUBSCRIBE, Source.SYSTEM),
    EmailEvent.SUPPRESS_COMPLAINT: EventEffect(Reason.EMAIL_SUPPRESS_COMPLAINT, Source.SYSTEM),
    EmailEvent.SPAM_COMPLAINT: EventEffect(Reason.EMAIL_SPAM_COMPLAINT, Source.SYSTEM),
    EmailEvent.UNSUBSCRIBE_LINK: EventEffect(Reason.EMAIL_UNSUBSCRIBE_LINK, Source.CONTACT),
    EmailEvent.LIST_UNSUBSCRIBE_POST: EventEffect(Reason.EMAIL_UNSUBSCRIBE_LINK, Source.CONTACT),
    # TEMPORARY_FAILURE: deliberately absent, it changes nothing.
}

# An email of a marketing stream (ReportEmailEvent.marketing_stream): its unsubscribe opts the
# recipient out of marketing only. Other events of a marketing stream act as in EMAIL_EVENTS.
MARKETING_STREAM_EVENTS: dict[EmailEvent, EventEffect] = {
    EmailEvent.UNSUBSCRIBE_LINK: EventEffect(Reason.EMAIL_MARKETING_UNSUBSCRIBE, Source.CONTACT),
    EmailEvent.LIST_UNSUBSCRIBE_POST: EventEffect(
        Reason.EMAIL_MARKETING_UNSUBSCRIBE, Source.CONTACT
    ),
}


def email_effect(event: EmailEvent, marketing_stream: bool = False) -> EventEffect | None:
    """What an email event does (None: nothing); of a marketing stream, see
    ``MARKETING_STREAM_EVENTS``."""
    if marketing_stream and event in MARKETING_STREAM_EVENTS:
        return MARKETING_STREAM_EVENTS[event]
    return EMAIL_EVENTS.get(event)


@dataclass(frozen=True, slots=True)
class DeliveryEffect:
    """What a messaging provider's event does: set (or, with ``clears``, lift) the block of
    ``reason`` on ``channel``, acting as ``source``."""

    channel: Channel
    reason: Reason
    source: Source
    clears: bool = False


# Messaging providers' error codes and events (ReportDeliveryEvent), by (provider, code); the
# provider's name is matched in lower case. Meta (WhatsApp Cloud API): error 131050 is "the
# user has stopped marketing messages" (Meta reports it, source SYSTEM); the user_preferences
# webhook carries the contact's own choice to stop or resume them (source CONTACT).
DELIVERY_EVENTS: dict[tuple[str, str], DeliveryEffect] = {
    ("meta", "131050"): DeliveryEffect(
        Channel.WHATSAPP, Reason.WHATSAPP_MARKETING_OPT_OUT, Source.SYSTEM
    ),
    ("meta", "user_preferences:stop_marketing"): DeliveryEffect(
        Channel.WHATSAPP, Reason.WHATSAPP_MARKETING_OPT_OUT, Source.CONTACT
    ),
    ("meta", "user_preferences:resume_marketing"): DeliveryEffect(
        Channel.WHATSAPP, Reason.WHATSAPP_MARKETING_OPT_OUT, Source.CONTACT, clears=True
    ),
}

# The providers DELIVERY_EVENTS knows (the values of the ignored-events metric's label; any
# other name counts as "other").
DELIVERY_PROVIDERS: frozenset[str] = frozenset(provider for provider, _ in DELIVERY_EVENTS)


def delivery_effect(provider: str, code: str) -> DeliveryEffect | None:
    """What a messaging provider's event does; None for an unknown provider or code."""
    return DELIVERY_EVENTS.get((provider.lower(), code))


# Reasons that, when an event carries the address, also suppress the address itself within
# the location (every contact holding it): opt-outs and permanent failures.
ADDRESS_SUPPRESSING_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.SMS_OPT_OUT_KEYWORD,
        Reason.SMS_CARRIER_PERMANENT,
        Reason.EMAIL_HARD_BOUNCE,
        Reason.EMAIL_GENERIC_FAILURE,
        Reason.EMAIL_SUPPRESS_BOUNCE,
        Reason.EMAIL_SUPPRESS_UNSUBSCRIBE,
        Reason.EMAIL_SUPPRESS_COMPLAINT,
        Reason.EMAIL_SPAM_COMPLAINT,
        Reason.EMAIL_UNSUBSCRIBE_LINK,
    }
)


class EventOutcome(enum.StrEnum):
    APPLIED = "APPLIED"  # the event set its block
    ALREADY_ACTIVE = "ALREADY_ACTIVE"  # its block was already active: nothing changed
    IGNORED = "IGNORED"  # the event sets no DND
    CLEARED = "CLEARED"  # the event lifted its block


def event_outcome(
    effect: tuple[Reason, Source] | None, channel: Channel, changed: bool, clears: bool = False
) -> tuple[EventOutcome, str]:
    """What a provider event with ``effect`` (None: it sets no DND) did on ``channel``, and
    the explanation its answer gives; ``changed``: whether its write changed anything;
    ``clears``: the event lifts the effect's block instead of setting it."""
    if effect is None:
        return EventOutcome.IGNORED, "ignored: this event does not set DND"
    if clears:
        if changed:
            return EventOutcome.CLEARED, f"cleared: {effect[0].value} lifted on {channel.value}"
        return EventOutcome.IGNORED, f"ignored: no {effect[0].value} to clear on {channel.value}"
    if changed:
        return EventOutcome.APPLIED, f"applied: {effect[0].value} set on {channel.value}"
    return EventOutcome.ALREADY_ACTIVE, f"unchanged: {effect[0].value} was already active"
