"""What provider reports (carrier error codes, email events, messaging providers' events)
do to a contact's DND.

Every provider's codes are one data table (``PROVIDER_TABLES``): each code with the provider's
own name for it, the page that documents it, and what it does: set a block (an opt-out, a
complaint, a permanent failure; or, where the code means the number cannot be reached,
SMS_CARRIER_TEMPORARY), lift one (a contact's own "resume"), or nothing (a temporary failure,
a problem of the sender). A code missing from its table is unknown: it changes nothing either,
and is counted. A location may override a code (``Override``): add one, or make one act more
strongly, never weaken an opt-out (``validate_overrides``). A report's answer says what it did
(``event_outcome``) and which entry decided it (``Resolution``).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from dnd_server.domain.consent import MARKETING_ONLY_REASONS, REVOKING_REASONS
from dnd_server.domain.errors import FieldViolation, InvalidArgument
from dnd_server.domain.model import Channel, Reason, Source
from dnd_server.domain.rules import CLEAR_POLICY, Requirement


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


# --- provider tables ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CodeEntry:
    """One code of a provider's table: ``reason`` is the block it sets on ``channel`` acting as
    ``source`` (None: it changes nothing), or with ``clears`` the block it lifts. ``meaning`` is
    the provider's own name of the code; ``doc`` the page documenting it; ``note`` why it acts
    as it does where that is not plain from the name."""

    code: str
    channel: Channel
    meaning: str
    reason: Reason | None = None
    source: Source = Source.SYSTEM
    clears: bool = False
    doc: str = ""
    note: str = ""

    @property
    def effect(self) -> tuple[Reason, Source] | None:
        return None if self.reason is None else (self.reason, self.source)

    @property
    def protected(self) -> bool:
        """Whether the entry is an opt-out, a complaint or a permanent failure: a location's
        override may only make it act more strongly (``weakening``)."""
        return (
            self.reason is not None
            and not self.clears
            and self.reason is not Reason.SMS_CARRIER_TEMPORARY
        )


def _exact(code: str) -> str:
    return code


def _numeric(code: str) -> str:
    """A numeric code without leading zeros ("030004" is 30004); other codes as given."""
    if code.isascii() and code.isdigit():
        return str(int(code))
    return code


@dataclass(frozen=True, slots=True)
class ProviderTable:
    """A provider's codes: ``provider`` is its name as matched (lower case; ``aliases`` are
    other names of it), ``doc`` the page listing its codes, ``normalise`` turns a code as
    reported into the table's spelling of it."""

    provider: str
    title: str
    channel: Channel
    doc: str
    entries: tuple[CodeEntry, ...]
    normalise: Callable[[str], str] = _numeric
    aliases: tuple[str, ...] = ()
    _by_code: dict[str, CodeEntry] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            if entry.code in self._by_code:
                raise ValueError(f"{self.provider} lists {entry.code} twice")
            self._by_code[entry.code] = entry

    def entry(self, code: str) -> CodeEntry | None:
        """The entry of a code as reported (None: unknown)."""
        return self._by_code.get(self.normalise(code))

    def doc_of(self, entry: CodeEntry) -> str:
        return entry.doc or self.doc


def _table(
    provider: str,
    title: str,
    channel: Channel,
    doc: str,
    rows: Iterable[tuple[str, Reason | None, str] | tuple[str, Reason | None, str, str]],
    *,
    normalise: Callable[[str], str] = _numeric,
    aliases: tuple[str, ...] = (),
    entry_doc: Callable[[str], str] | None = None,
) -> ProviderTable:
    """A table of (code, reason or None, the provider's name of the code[, note]) rows of one
    channel, every block acting as SYSTEM (the provider reports it)."""
    entries = []
    for row in rows:
        code, reason, meaning = row[0], row[1], row[2]
        note = row[3] if len(row) > 3 else ""
        entries.append(
            CodeEntry(
                code=code,
                channel=channel,
                meaning=meaning,
                reason=reason,
                doc=entry_doc(code) if entry_doc else "",
                note=note,
            )
        )
    return ProviderTable(
        provider, title, channel, doc, tuple(entries), normalise=normalise, aliases=aliases
    )


PERMANENT = Reason.SMS_CARRIER_PERMANENT
TEMPORARY = Reason.SMS_CARRIER_TEMPORARY
UNREACHABLE = "the number cannot receive SMS: SMS_CARRIER_TEMPORARY, as Twilio's 30005"
RETRY = "temporary: the provider retries or asks to retry; no change"
SENDER = "a problem of the sender or the message, not of the recipient; no change"

# Twilio Programmable Messaging. The codes that set DND are the service's original table
# (Reason SMS_CARRIER_*): 30004 and 21610 are opt-outs (permanent); 30003, 30005 and 30006 mean
# the number cannot be reached (temporary). ReportSmsDeliveryFailure reads every code in this
# numbering, whichever provider it names.
TWILIO = _table(
    "twilio",
    "Twilio",
    Channel.SMS,
    "https://www.twilio.com/docs/api/errors",
    [
        ("21610", PERMANENT, "Attempt to send to unsubscribed recipient (replied STOP)"),
        ("30004", PERMANENT, "Message blocked (the recipient blocks messages from the sender)"),
        ("30003", TEMPORARY, "Unreachable destination handset"),
        ("30005", TEMPORARY, "Unknown destination handset"),
        ("30006", TEMPORARY, "Landline or unreachable carrier"),
        ("30001", None, "Queue overflow", RETRY),
        ("30002", None, "Account suspended", SENDER),
        ("30007", None, "Message filtered (carrier violation)", SENDER),
        ("30008", None, "Unknown error"),
        ("30009", None, "Missing inbound segment"),
        ("30010", None, "Message price exceeds max price", SENDER),
        ("21211", None, "Invalid 'To' phone number", "a malformed request; no change"),
    ],
    entry_doc=lambda code: f"https://www.twilio.com/docs/api/errors/{code}",
)

TELNYX = _table(
    "telnyx",
    "Telnyx",
    Channel.SMS,
    "https://developers.telnyx.com/docs/messaging/messages/error-codes",
    [
        ("40300", PERMANENT, "Blocked due to STOP message"),
        ("40001", TEMPORARY, "Not routable (landline or non-routable number)", UNREACHABLE),
        ("40012", TEMPORARY, "Invalid destination number", UNREACHABLE),
        ("40002", None, "Blocked as spam - temporary", SENDER),
        ("40003", None, "Blocked as spam - permanent (the sending number)", SENDER),
        ("40004", None, "Rejected by destination (unknown reason)", RETRY),
        ("40005", None, "Message expired during transmission", RETRY),
        ("40006", None, "Recipient server unavailable", RETRY),
        ("40007", None, "Loop detected", SENDER),
        ("40008", None, "Undeliverable", RETRY),
        ("40009", None, "Invalid message body", SENDER),
        ("40011", None, "Too many requests", RETRY),
        ("40013", None, "Invalid source number", SENDER),
        ("40014", None, "Expired in queue", RETRY),
        ("40015", None, "Internal spam filter", SENDER),
    ],
    entry_doc=lambda code: f"https://developers.telnyx.com/api/errors/{code}",
)

BANDWIDTH = _table(
    "bandwidth",
    "Bandwidth",
    Channel.SMS,
    "https://dev.bandwidth.com/docs/messaging/errors/",
    [
        ("4775", PERMANENT, "destination-rejected-due-to-user-opt-out"),
        (
            "4482",
            PERMANENT,
            "rejected-to-number-in-blacklist",
            "the number is blocked from receiving messages, as Twilio's 30004",
        ),
        ("4720", TEMPORARY, "invalid-destination-address", UNREACHABLE),
        ("4721", TEMPORARY, "destination-tn-deactivated", UNREACHABLE),
        ("4700", TEMPORARY, "invalid-service-type (no messaging on the handset)", UNREACHABLE),
        ("4701", TEMPORARY, "destination-service-unavailable", UNREACHABLE),
        ("4404", TEMPORARY, "rejected-forbidden-to-number (not active)", UNREACHABLE),
        ("4406", TEMPORARY, "rejected-unallocated-to-number", UNREACHABLE),
        ("4702", None, "destination-subscriber-unavailable (handset off, busy)", RETRY),
        ("4730", None, "no-route-to-destination-carrier", RETRY),
        ("4750", None, "destination-rejected-message (no reason given)", RETRY),
        ("4751", None, "destination-rejected-message-size-invalid", SENDER),
        ("4752", None, "destination-rejected-malformed", SENDER),
        ("4770", None, "destination-spam-detected", SENDER),
        ("4772", None, "rejected-tn-blocked (sender or receiver)", "unclear which; no change"),
        ("4773", None, "inactive-campaign", SENDER),
        ("4785", None, "volumetric-violation", RETRY),
        ("4790", None, "destination-rejected-sc-not-allowed (short codes only)", SENDER),
        ("4795", None, "tfn-not-verified", SENDER),
        ("4470", None, "rejected-spam-detected", SENDER),
        ("4481", None, "rejected-from-number-in-blacklist", SENDER),
        ("5100", None, "temporary-app-error", RETRY),
        ("5500", None, "message-send-failed", RETRY),
    ],
)

VONAGE = _table(
    "vonage",
    "Vonage (SMS API delivery receipt err-code)",
    Channel.SMS,
    "https://api.support.vonage.com/hc/en-us/articles/204014733",
    [
        (
            "9",
            PERMANENT,
            "Illegal Number: the user asked not to receive messages from this sender",
            "Vonage's opt-out code (developer.vonage.com/en/opt-out-assist)",
        ),
        ("4", PERMANENT, "Call Barred by User"),
        ("3", TEMPORARY, "Absent Subscriber - Permanent (number no longer active)", UNREACHABLE),
        ("12", TEMPORARY, "Destination Unreachable (confirm the number)", UNREACHABLE),
        ("14", TEMPORARY, "Number Blocked by Carrier (no SMS on the plan)", UNREACHABLE),
        ("0", None, "Delivered"),
        ("1", None, "Unknown"),
        ("2", None, "Absent Subscriber - Temporary", RETRY),
        ("5", None, "Portability Error"),
        ("6", None, "Anti-Spam Rejection", SENDER),
        ("7", None, "Handset Busy", RETRY),
        ("8", None, "Network Error", RETRY),
        ("10", None, "Illegal Message", SENDER),
        ("11", None, "Unroutable", RETRY),
        ("13", None, "Subscriber Age Restriction"),
        ("15", None, "Pre-Paid Insufficient Funds", RETRY),
        ("99", None, "General Error"),
    ],
    aliases=("nexmo",),
)

PLIVO = _table(
    "plivo",
    "Plivo",
    Channel.SMS,
    "https://www.plivo.com/docs/messaging/troubleshooting/error-codes",
    [
        ("200", PERMANENT, "Source number blocked by STOP from destination number"),
        ("50", TEMPORARY, "Invalid destination number", UNREACHABLE),
        ("70", TEMPORARY, "Destination permanently unavailable", UNREACHABLE),
        ("100", TEMPORARY, "Prohibited by carrier (the network does not support SMS)", UNREACHABLE),
        ("10", None, "Invalid message", SENDER),
        ("20", None, "Network error", RETRY),
        ("30", None, "Spam detected", SENDER),
        ("40", None, "Invalid source number", SENDER),
        ("60", None, "Loop detected", SENDER),
        ("80", None, "Destination temporarily unavailable", RETRY),
        ("90", None, "No route available", RETRY),
        ("110", None, "Message too long", SENDER),
        ("201", None, "US toll-free to Canadian destination blocked", SENDER),
        ("1000", None, "Unknown error"),
    ],
)

SINCH = _table(
    "sinch",
    "Sinch (SMS REST API delivery report code)",
    Channel.SMS,
    "https://developers.sinch.com/docs/sms/api-reference/sms/tag/Delivery-reports/",
    [
        (
            "300",
            TEMPORARY,
            "Invalid destination address",
            "SMPP status (developers.sinch.com/docs/sms/smpp/10dlc-errors); " + UNREACHABLE,
        ),
        (
            "152",
            TEMPORARY,
            "Teleservice not provisioned (no SMS for the subscriber)",
            "SMPP status (developers.sinch.com/docs/sms/smpp/10dlc-errors); " + UNREACHABLE,
        ),
        ("0", None, "Delivered"),
        ("400", None, "Queued"),
        ("401", None, "Dispatched"),
        ("402", None, "Message unroutable", RETRY),
        ("403", None, "Internal error", RETRY),
        ("404", None, "Temporary delivery failure", RETRY),
        ("405", None, "Unmatched parameter", SENDER),
        ("406", None, "Internal expiry", RETRY),
        ("407", None, "Cancelled", SENDER),
        ("408", None, "Internal reject", SENDER),
        ("410", None, "Unmatched default originator", SENDER),
        ("411", None, "Exceeded parts limit", SENDER),
        ("412", None, "Unprovisioned region", SENDER),
        ("413", None, "Blocked (the account)", SENDER),
        ("414", None, "Bad media", SENDER),
        ("415", None, "Delivery report rejected (MMS)", RETRY),
        ("416", None, "Delivery report not supported (MMS)", SENDER),
        ("417", None, "Delivery report unreachable (MMS)", RETRY),
        ("418", None, "Delivery report unrecognized (MMS)", SENDER),
        ("15", None, "Screening blocked the message (spam)", SENDER),
        ("62", None, "Message blocked by internal spam filtering", SENDER),
    ],
)

STOP_MARKETING = "user_preferences:stop_marketing"
RESUME_MARKETING = "user_preferences:resume_marketing"


def _meta_code(code: str) -> str:
    """Meta's numeric error codes without leading zeros; the user_preferences webhook as
    ``user_preferences:stop_marketing`` / ``resume_marketing``, also spelt as its payload
    says it (``user_preferences:marketing_messages:stop`` / ``:resume``), in any letter case
    (as the other providers' names: a caller's upper-cased stop is still a stop)."""
    spelt = {
        STOP_MARKETING: STOP_MARKETING,
        RESUME_MARKETING: RESUME_MARKETING,
        "user_preferences:marketing_messages:stop": STOP_MARKETING,
        "user_preferences:marketing_messages:resume": RESUME_MARKETING,
    }
    return spelt.get(code.strip().lower(), _numeric(code))


_META_ERRORS = "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes"
_META_PREFERENCES = (
    "https://developers.facebook.com/docs/whatsapp/cloud-api/webhooks/reference/user_preferences"
)
# Meta (WhatsApp Cloud API). Error 131050 is "the user has stopped marketing messages" (Meta
# reports it, source SYSTEM); the user_preferences webhook carries the contact's own choice to
# stop or resume them (source CONTACT). Neither is a full opt-out of WhatsApp: marketing only.
META = ProviderTable(
    "meta",
    "Meta (WhatsApp Cloud API)",
    Channel.WHATSAPP,
    _META_ERRORS,
    (
        CodeEntry(
            "131050",
            Channel.WHATSAPP,
            "Unable to deliver the message: the user has stopped marketing messages",
            Reason.WHATSAPP_MARKETING_OPT_OUT,
        ),
        CodeEntry(
            STOP_MARKETING,
            Channel.WHATSAPP,
            "user_preferences webhook: marketing_messages stop",
            Reason.WHATSAPP_MARKETING_OPT_OUT,
            Source.CONTACT,
            doc=_META_PREFERENCES,
        ),
        CodeEntry(
            RESUME_MARKETING,
            Channel.WHATSAPP,
            "user_preferences webhook: marketing_messages resume",
            Reason.WHATSAPP_MARKETING_OPT_OUT,
            Source.CONTACT,
            clears=True,
            doc=_META_PREFERENCES,
            note="the contact's own resume lifts the marketing opt-out (also Meta's 131050)",
        ),
        CodeEntry("131026", Channel.WHATSAPP, "Message undeliverable", note=RETRY),
        CodeEntry("131047", Channel.WHATSAPP, "Re-engagement message (24 h window)", note=SENDER),
        CodeEntry("131049", Channel.WHATSAPP, "Meta chose not to deliver", note=RETRY),
        CodeEntry("131048", Channel.WHATSAPP, "Spam rate limit hit", note=SENDER),
        CodeEntry("131051", Channel.WHATSAPP, "Unsupported message type", note=SENDER),
        CodeEntry("131056", Channel.WHATSAPP, "Pair rate limit hit", note=RETRY),
        CodeEntry("131000", Channel.WHATSAPP, "Something went wrong", note=RETRY),
        CodeEntry("130472", Channel.WHATSAPP, "User's number is part of an experiment"),
    ),
    normalise=_meta_code,
)


def _email(
    code: str, meaning: str, reason: Reason | None = None, *, contact: bool = False, note: str = ""
) -> CodeEntry:
    source = Source.CONTACT if contact else Source.SYSTEM
    return CodeEntry(code, Channel.EMAIL, meaning, reason, source, note=note)


def _words(code: str) -> str:
    """Lower case, each run of spaces inside a part one underscore, no spaces around ':'."""
    parts = [re.sub(r"\s+", "_", part.strip()) for part in code.strip().lower().split(":")]
    return ":".join(parts)


def _sendgrid_code(code: str) -> str:
    """``bounce`` (optionally ``bounce:<type>``), ``dropped:<reason>`` with SendGrid's
    reason text as sent ("Bounced Address"), ``spamreport``, ``unsubscribe``..."""
    return _words(code)


_SENDGRID_NOTE = "SendGrid keeps delivering to the group's others; marketing only"
SENDGRID = ProviderTable(
    "sendgrid",
    "Twilio SendGrid (Event Webhook)",
    Channel.EMAIL,
    "https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event",
    (
        _email("bounce", "bounce (type bounce): permanent rejection", Reason.EMAIL_HARD_BOUNCE),
        _email("bounce:bounce", "bounce, type bounce", Reason.EMAIL_HARD_BOUNCE),
        _email("bounce:blocked", "bounce, type blocked: temporary rejection", note=RETRY),
        _email("dropped:bounced_address", "dropped: Bounced Address", Reason.EMAIL_SUPPRESS_BOUNCE),
        _email(
            "dropped:invalid",
            "dropped: Invalid (address on the invalid emails list)",
            Reason.EMAIL_SUPPRESS_BOUNCE,
        ),
        _email(
            "dropped:unsubscribed_address",
            "dropped: Unsubscribed Address",
            Reason.EMAIL_SUPPRESS_UNSUBSCRIBE,
        ),
        _email(
            "dropped:spam_reporting_address",
            "dropped: Spam Reporting Address",
            Reason.EMAIL_SUPPRESS_COMPLAINT,
        ),
        _email("dropped:spam_content", "dropped: Spam Content", note=SENDER),
        _email("dropped:invalid_smtpapi_header", "dropped: Invalid SMTPAPI header", note=SENDER),
        _email(
            "spamreport",
            "spamreport: the recipient marked the email as spam",
            Reason.EMAIL_SPAM_COMPLAINT,
        ),
        _email(
            "unsubscribe",
            "unsubscribe: the recipient clicked the global unsubscribe link",
            Reason.EMAIL_UNSUBSCRIBE_LINK,
            contact=True,
        ),
        _email(
            "group_unsubscribe",
            "group_unsubscribe: the recipient left one unsubscribe group",
            Reason.EMAIL_MARKETING_UNSUBSCRIBE,
            contact=True,
            note=_SENDGRID_NOTE,
        ),
        _email(
            "group_resubscribe",
            "group_resubscribe: the recipient rejoined one unsubscribe group",
            note="rejoining one group lifts no opt-out (other groups may stand); no change",
        ),
        _email("deferred", "deferred: the receiving server delayed the message", note=RETRY),
        _email("delivered", "delivered"),
        _email("processed", "processed"),
        _email("open", "open"),
        _email("click", "click"),
    ),
    normalise=_sendgrid_code,
    aliases=("twilio-sendgrid",),
)


def _ses_code(code: str) -> str:
    """``Bounce:<bounceType>:<bounceSubType>`` and ``Complaint[:<complaintFeedbackType>]`` in
    any case; a permanent bounce of a subtype not listed is ``Bounce:Permanent``, a complaint
    of a feedback type not listed ``Complaint`` (both act: a new subtype must not silence an
    undeliverable address or a complaint)."""
    parts = [part.strip() for part in code.strip().split(":")]
    wanted = ":".join(parts).lower()
    found = _SES_CANONICAL.get(wanted)
    if found is not None:
        return found
    if len(parts) == 3 and wanted.startswith("bounce:permanent:"):
        return "Bounce:Permanent"
    if len(parts) == 2 and wanted.startswith("complaint:"):
        return "Complaint"
    return code


_SES_BOUNCE = "https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html"
SES = ProviderTable(
    "ses",
    "Amazon SES (bounce and complaint notifications)",
    Channel.EMAIL,
    _SES_BOUNCE,
    (
        _email("Bounce:Permanent:General", "Permanent / General", Reason.EMAIL_HARD_BOUNCE),
        _email("Bounce:Permanent:NoEmail", "Permanent / NoEmail", Reason.EMAIL_HARD_BOUNCE),
        _email(
            "Bounce:Permanent:Suppressed",
            "Permanent / Suppressed (on the SES global suppression list)",
            Reason.EMAIL_SUPPRESS_BOUNCE,
        ),
        _email(
            "Bounce:Permanent:OnAccountSuppressionList",
            "Permanent / OnAccountSuppressionList",
            Reason.EMAIL_SUPPRESS_BOUNCE,
        ),
        _email(
            "Bounce:Permanent",
            "Permanent, of a subtype not listed here",
            Reason.EMAIL_HARD_BOUNCE,
            note="SES: remove the address; a new subtype still means permanent",
        ),
        _email("Bounce:Transient:General", "Transient / General", note=RETRY),
        _email("Bounce:Transient:MailboxFull", "Transient / MailboxFull", note=RETRY),
        _email("Bounce:Transient:MessageTooLarge", "Transient / MessageTooLarge", note=SENDER),
        _email("Bounce:Transient:ContentRejected", "Transient / ContentRejected", note=SENDER),
        _email(
            "Bounce:Transient:AttachmentRejected", "Transient / AttachmentRejected", note=SENDER
        ),
        _email(
            "Bounce:Undetermined:Undetermined",
            "Undetermined / Undetermined",
            note="SES could not tell; no change",
        ),
        _email(
            "Complaint",
            "Complaint (no feedback type, or one not listed here)",
            Reason.EMAIL_SPAM_COMPLAINT,
        ),
        _email("Complaint:abuse", "Complaint / abuse", Reason.EMAIL_SPAM_COMPLAINT),
        _email("Complaint:fraud", "Complaint / fraud", Reason.EMAIL_SPAM_COMPLAINT),
        _email("Complaint:virus", "Complaint / virus", Reason.EMAIL_SPAM_COMPLAINT),
        _email("Complaint:other", "Complaint / other", Reason.EMAIL_SPAM_COMPLAINT),
        _email(
            "Complaint:not-spam",
            "Complaint / not-spam",
            note="the recipient says the email is not spam; no change",
        ),
        _email(
            "Complaint:auth-failure",
            "Complaint / auth-failure (an authentication failure report)",
            note="a report about the sender's authentication, not the recipient's; no change",
        ),
    ),
    normalise=_ses_code,
    aliases=("amazon-ses", "aws-ses", "amazonses"),
)
_SES_CANONICAL = {entry.code.lower(): entry.code for entry in SES.entries}


# Postmark's bounce types by their numeric TypeCode (the bounce webhook's "TypeCode").
_POSTMARK_TYPE_CODES = {
    "1": "HardBounce",
    "2": "Transient",
    "16": "Unsubscribe",
    "32": "Subscribe",
    "64": "AutoResponder",
    "128": "AddressChange",
    "256": "DnsError",
    "512": "SpamNotification",
    "1024": "OpenRelayTest",
    "2048": "Unknown",
    "4096": "SoftBounce",
    "8192": "VirusNotification",
    "16384": "ChallengeVerification",
    "100000": "BadEmailAddress",
    "100001": "SpamComplaint",
    "100002": "ManuallyDeactivated",
    "100003": "Unconfirmed",
    "100006": "Blocked",
    "100007": "SMTPApiError",
    "100008": "InboundError",
    "100009": "DMARCPolicy",
    "100010": "TemplateRenderingFailed",
}


def _postmark_code(code: str) -> str:
    """A bounce type by name ("HardBounce", any case) or by TypeCode ("1"); a subscription
    change as ``SubscriptionChange:<SuppressionReason>``."""
    wanted = code.strip()
    wanted = _POSTMARK_TYPE_CODES.get(_numeric(wanted), wanted)
    return _POSTMARK_CANONICAL.get(wanted.lower().replace(" ", ""), code)


POSTMARK = ProviderTable(
    "postmark",
    "Postmark (bounce types, subscription changes)",
    Channel.EMAIL,
    "https://postmarkapp.com/developer/api/bounce-api#bounce-types",
    (
        _email("HardBounce", "HardBounce (1)", Reason.EMAIL_HARD_BOUNCE),
        _email("BadEmailAddress", "BadEmailAddress (100000)", Reason.EMAIL_HARD_BOUNCE),
        _email("SpamComplaint", "SpamComplaint (100001)", Reason.EMAIL_SPAM_COMPLAINT),
        _email(
            "ManuallyDeactivated",
            "ManuallyDeactivated (100002)",
            Reason.EMAIL_GENERIC_FAILURE,
            note="Postmark no longer sends to the address until it is reactivated",
        ),
        _email(
            "Unsubscribe",
            "Unsubscribe (16): an unsubscribe or remove request",
            Reason.EMAIL_UNSUBSCRIBE_LINK,
            contact=True,
        ),
        _email(
            "SubscriptionChange:HardBounce",
            "Subscription change: suppressed after a hard bounce",
            Reason.EMAIL_SUPPRESS_BOUNCE,
        ),
        _email(
            "SubscriptionChange:SpamComplaint",
            "Subscription change: suppressed after a spam complaint",
            Reason.EMAIL_SUPPRESS_COMPLAINT,
        ),
        _email(
            "SubscriptionChange:ManualSuppression",
            "Subscription change: suppressed by an unsubscribe or by hand",
            Reason.EMAIL_SUPPRESS_UNSUBSCRIBE,
        ),
        _email(
            "SubscriptionChange:Reactivated",
            "Subscription change: the address was reactivated",
            note="a reactivation at the provider is not the contact's consent; no change",
        ),
        _email("Transient", "Transient (2)", note=RETRY),
        _email("SoftBounce", "SoftBounce (4096)", note=RETRY),
        _email("DnsError", "DnsError (256)", note=RETRY),
        _email("AutoResponder", "AutoResponder (64)"),
        _email("AddressChange", "AddressChange (128)"),
        _email("Subscribe", "Subscribe (32)"),
        _email(
            "SpamNotification", "SpamNotification (512): filtered, not a complaint", note=SENDER
        ),
        _email("OpenRelayTest", "OpenRelayTest (1024)"),
        _email("Unknown", "Unknown (2048)"),
        _email("VirusNotification", "VirusNotification (8192)", note=SENDER),
        _email("ChallengeVerification", "ChallengeVerification (16384)"),
        _email("Unconfirmed", "Unconfirmed (100003)", note=SENDER),
        _email("Blocked", "Blocked (100006): the receiving server blocked the sender", note=SENDER),
        _email("SMTPApiError", "SMTPApiError (100007)", note=SENDER),
        _email("InboundError", "InboundError (100008)"),
        _email("DMARCPolicy", "DMARCPolicy (100009)", note=SENDER),
        _email("TemplateRenderingFailed", "TemplateRenderingFailed (100010)", note=SENDER),
    ),
    normalise=_postmark_code,
)
_POSTMARK_CANONICAL = {entry.code.lower(): entry.code for entry in POSTMARK.entries}


def _mailgun_code(code: str) -> str:
    """``failed:permanent:<reason>`` (a reason not listed is ``failed:permanent``),
    ``failed:temporary[:<reason>]``, ``complained``, ``unsubscribed``."""
    wanted = _words(code)
    if wanted in _MAILGUN_CODES:
        return wanted
    if wanted.startswith("failed:permanent:"):
        return "failed:permanent"
    if wanted.startswith("failed:temporary:"):
        return "failed:temporary"
    return code


# Mailgun's events (ReportEmailEvent speaks the same vocabulary as an enum: EMAIL_EVENTS).
MAILGUN = ProviderTable(
    "mailgun",
    "Mailgun (events)",
    Channel.EMAIL,
    "https://documentation.mailgun.com/docs/mailgun/user-manual/events/",
    (
        _email("failed:permanent:bounce", "failed, permanent, bounce", Reason.EMAIL_HARD_BOUNCE),
        _email(
            "failed:permanent:suppress-bounce",
            "failed, permanent, suppress-bounce",
            Reason.EMAIL_SUPPRESS_BOUNCE,
        ),
        _email(
            "failed:permanent:suppress-unsubscribe",
            "failed, permanent, suppress-unsubscribe",
            Reason.EMAIL_SUPPRESS_UNSUBSCRIBE,
        ),
        _email(
            "failed:permanent:suppress-complaint",
            "failed, permanent, suppress-complaint",
            Reason.EMAIL_SUPPRESS_COMPLAINT,
        ),
        _email(
            "failed:permanent:generic", "failed, permanent, generic", Reason.EMAIL_GENERIC_FAILURE
        ),
        _email(
            "failed:permanent",
            "failed, permanent, of a reason not listed here",
            Reason.EMAIL_GENERIC_FAILURE,
        ),
        _email("failed:temporary", "failed, temporary", note=RETRY),
        _email("complained", "complained", Reason.EMAIL_SPAM_COMPLAINT),
        _email("unsubscribed", "unsubscribed", Reason.EMAIL_UNSUBSCRIBE_LINK, contact=True),
    ),
    normalise=_mailgun_code,
)
_MAILGUN_CODES = frozenset(entry.code for entry in MAILGUN.entries)

PROVIDER_TABLES: tuple[ProviderTable, ...] = (
    TWILIO,
    TELNYX,
    BANDWIDTH,
    VONAGE,
    PLIVO,
    SINCH,
    META,
    SENDGRID,
    SES,
    POSTMARK,
    MAILGUN,
)
_TABLES: dict[str, ProviderTable] = {}
for _t in PROVIDER_TABLES:
    for _name in (_t.provider, *_t.aliases):
        _TABLES[_name] = _t

# The names the tables know (the values of the unknown-codes metric's provider label; any
# other name counts as "other").
KNOWN_PROVIDERS: frozenset[str] = frozenset(t.provider for t in PROVIDER_TABLES)

_PROVIDER_NAME = re.compile(r"[a-z0-9][a-z0-9._-]*")


def normalise_provider(name: str) -> str:
    """A provider's name as matched: lower case, runs of spaces and underscores one hyphen,
    an alias its provider's name ("Nexmo" is vonage, "Amazon SES" ses)."""
    plain = re.sub(r"[\s_]+", "-", name.strip().lower())
    table = _TABLES.get(plain)
    return table.provider if table is not None else plain


def valid_provider_name(name: str) -> bool:
    """Whether a normalised name is usable: ASCII letters, digits, '.', '_' and '-'."""
    return _PROVIDER_NAME.fullmatch(name) is not None


def table_of(provider: str) -> ProviderTable | None:
    return _TABLES.get(normalise_provider(provider))


def normalise_code(provider: str, code: str) -> str:
    """A code as its provider's table spells it (unknown providers: as given)."""
    table = table_of(provider)
    return code if table is None else table.normalise(code)


# The service's original SMS table (Twilio's numbering): the codes that set DND.
SMS_ERROR_CODES: dict[str, Reason] = {
    e.code: e.reason for e in TWILIO.entries if e.reason is not None
}


@dataclass(frozen=True, slots=True)
class DeliveryEffect:
    """What a messaging provider's event does: set (or, with ``clears``, lift) the block of
    ``reason`` on ``channel``, acting as ``source``."""

    channel: Channel
    reason: Reason
    source: Source
    clears: bool = False


# Every built-in code that does something, by (provider, code).
DELIVERY_EVENTS: dict[tuple[str, str], DeliveryEffect] = {
    (t.provider, e.code): DeliveryEffect(e.channel, e.reason, e.source, e.clears)
    for t in PROVIDER_TABLES
    for e in t.entries
    if e.reason is not None
}
DELIVERY_PROVIDERS: frozenset[str] = KNOWN_PROVIDERS


def delivery_effect(provider: str, code: str) -> DeliveryEffect | None:
    """What a provider's code does by the built-in tables; None for an unknown provider or
    code, or one that changes nothing."""
    table = table_of(provider)
    entry = None if table is None else table.entry(code)
    if entry is None or entry.reason is None:
        return None
    return DeliveryEffect(entry.channel, entry.reason, entry.source, entry.clears)


# --- per-location overrides -----------------------------------------------------------------

# What an override may map a code to on each channel (None: ignore the code).
OVERRIDE_REASONS: dict[Channel, frozenset[Reason]] = {
    Channel.SMS: frozenset({Reason.SMS_CARRIER_PERMANENT, Reason.SMS_CARRIER_TEMPORARY}),
    Channel.EMAIL: frozenset(
        {
            Reason.EMAIL_HARD_BOUNCE,
            Reason.EMAIL_GENERIC_FAILURE,
            Reason.EMAIL_SUPPRESS_BOUNCE,
            Reason.EMAIL_SUPPRESS_UNSUBSCRIBE,
            Reason.EMAIL_SUPPRESS_COMPLAINT,
            Reason.EMAIL_SPAM_COMPLAINT,
            Reason.EMAIL_UNSUBSCRIBE_LINK,
            Reason.EMAIL_MARKETING_UNSUBSCRIBE,
        }
    ),
    Channel.WHATSAPP: frozenset({Reason.WHATSAPP_MARKETING_OPT_OUT}),
}

# The source an override's block acts as: the contact's own unsubscribes are CONTACT (they
# need the contact permission to report), everything else the provider's (SYSTEM).
OVERRIDE_SOURCES: dict[Reason, Source] = {
    Reason.EMAIL_UNSUBSCRIBE_LINK: Source.CONTACT,
    Reason.EMAIL_MARKETING_UNSUBSCRIBE: Source.CONTACT,
}

OVERRIDES_MAX = 500
CODE_MAX = 64


@dataclass(frozen=True, slots=True)
class Override:
    """A location's mapping of one (provider, code), both normalised: the block of ``reason``
    on ``channel``, or with ``reason`` None nothing (the code is ignored)."""

    provider: str
    code: str
    channel: Channel
    reason: Reason | None

    @property
    def key(self) -> tuple[str, str]:
        return (self.provider, self.code)

    def as_entry(self) -> CodeEntry:
        source = OVERRIDE_SOURCES.get(self.reason, Source.SYSTEM) if self.reason else Source.SYSTEM
        return CodeEntry(self.code, self.channel, "the location's override", self.reason, source)


def weakening(entry: CodeEntry | None, reason: Reason | None) -> str | None:
    """Why mapping a built-in ``entry`` to ``reason`` (None: ignore) would weaken it, or None
    when it would not. An opt-out, complaint or permanent failure (``CodeEntry.protected``)
    may only be mapped to a reason that denies at least as much, suppresses the address and
    revokes consent where it does, and that nobody may clear who may not clear the original
    (with at least what they must bring): never to "ignore", never to a temporary reason."""
    if entry is None or not entry.protected:
        return None
    assert entry.reason is not None
    original = entry.reason
    if reason is None:
        return f"it is {original.value} in the built-in table; ignoring it would drop an opt-out"
    if reason is original:
        return None
    problems = []
    if reason in MARKETING_ONLY_REASONS and original not in MARKETING_ONLY_REASONS:
        problems.append(f"{reason.value} denies marketing only")
    if original in ADDRESS_SUPPRESSING_REASONS and reason not in ADDRESS_SUPPRESSING_REASONS:
        problems.append(f"{reason.value} does not suppress the address")
    if original in REVOKING_REASONS and reason not in REVOKING_REASONS:
        problems.append(f"{reason.value} does not revoke consent")
    allowed = CLEAR_POLICY[original]
    for source, requirement in CLEAR_POLICY[reason].items():
        before = allowed.get(source)
        if before is None or (before is not Requirement.NOTHING and requirement is not before):
            problems.append(f"{source.value} may clear {reason.value} more easily")
            break
    if not problems:
        return None
    return (
        f"it is {original.value} in the built-in table and {reason.value} is weaker: "
        + "; ".join(problems)
    )


@dataclass(frozen=True, slots=True)
class OverrideInput:
    """An override as requested: provider and code as given, reason None with ``ignore``."""

    provider: str
    code: str
    channel: Channel | None
    reason: Reason | None
    ignore: bool


def validate_overrides(
    items: Sequence[OverrideInput], field: str = "overrides"
) -> tuple[Override, ...]:
    """A location's overrides, normalised and checked together; InvalidArgument naming each
    problem (``overrides[i].<field>``): a provider or code unusable, a (provider, code) listed
    twice, a reason that is not one of its channel's (``OVERRIDE_REASONS``), a channel other
    than the built-in code's, or a mapping that would weaken a built-in opt-out
    (``weakening``)."""
    problems: list[FieldViolation] = []
    if len(items) > OVERRIDES_MAX:
        raise InvalidArgument.one(field, f"{len(items)} overrides; at most {OVERRIDES_MAX}")
    made: list[Override] = []
    seen: dict[tuple[str, str], int] = {}
    for i, item in enumerate(items):
        at = f"{field}[{i}]"
        provider = normalise_provider(item.provider)
        if not item.provider:
            problems.append(FieldViolation(f"{at}.provider", "required: the provider's name"))
            continue
        if not valid_provider_name(provider):
            problems.append(
                FieldViolation(
                    f"{at}.provider",
                    "a provider's name is ASCII letters, digits, '.', '_', '-' and spaces",
                )
            )
            continue
        if not item.code:
            problems.append(FieldViolation(f"{at}.code", "required: the provider's code"))
            continue
        code = normalise_code(provider, item.code)
        if item.channel is None:
            problems.append(FieldViolation(f"{at}.channel", "required: the code's channel"))
            continue
        table = table_of(provider)
        builtin = None if table is None else table.entry(code)
        if builtin is not None and builtin.channel is not item.channel:
            problems.append(
                FieldViolation(
                    f"{at}.channel",
                    f"{provider} {code} is a {builtin.channel.value} code in the built-in "
                    f"table; its override must be on CHANNEL_{builtin.channel.value}",
                )
            )
            continue
        if item.ignore and item.reason is not None:
            problems.append(FieldViolation(f"{at}.reason", "give a reason or ignore, not both"))
            continue
        if not item.ignore and item.reason is None:
            problems.append(
                FieldViolation(
                    f"{at}.reason", "required: the reason the code sets, or ignore = true"
                )
            )
            continue
        allowed = OVERRIDE_REASONS.get(item.channel, frozenset())
        if item.reason is not None and item.reason not in allowed:
            names = ", ".join(sorted(r.value for r in allowed)) or "none: ignore only"
            problems.append(
                FieldViolation(
                    f"{at}.reason",
                    f"{item.reason.value} cannot be set by a {item.channel.value} provider "
                    f"code; one of {names}",
                )
            )
            continue
        if builtin is not None and builtin.clears:
            problems.append(
                FieldViolation(
                    f"{at}.code",
                    f"{provider} {code} lifts {builtin.reason.value if builtin.reason else ''} "
                    "(the contact's own resume); it cannot be overridden",
                )
            )
            continue
        why = weakening(builtin, item.reason)
        if why is not None:
            problems.append(
                FieldViolation(f"{at}.reason", f"{provider} {code} may not be weakened: {why}")
            )
            continue
        key = (provider, code)
        if key in seen:
            problems.append(
                FieldViolation(f"{at}.code", f"{provider} {code} is also {field}[{seen[key]}]")
            )
            continue
        seen[key] = i
        made.append(Override(provider, code, item.channel, item.reason))
    if problems:
        raise InvalidArgument(problems)
    return tuple(sorted(made, key=lambda o: o.key))


# --- resolution -----------------------------------------------------------------------------


class Origin(enum.StrEnum):
    BUILT_IN = "BUILT_IN"  # the provider's built-in table
    LOCATION = "LOCATION"  # the location's override


@dataclass(frozen=True, slots=True)
class Resolution:
    """What decided a report: its provider and code normalised, and the entry that matched
    (None: unknown, it changes nothing) with where it comes from and its documentation."""

    provider: str
    code: str
    entry: CodeEntry | None = None
    origin: Origin | None = None
    doc: str = ""

    @property
    def effect(self) -> tuple[Reason, Source] | None:
        return None if self.entry is None else self.entry.effect

    @property
    def clears(self) -> bool:
        return self.entry is not None and self.entry.clears

    @property
    def known(self) -> bool:
        return self.entry is not None


def resolve(
    provider: str, code: str, overrides: Mapping[tuple[str, str], Override] | None = None
) -> Resolution:
    """What a (provider, code) does at a location with ``overrides`` (keyed by normalised
    provider and code): the override when there is one that does not weaken the built-in
    entry (one stored before the built-in table made the code an opt-out is not used), else
    the built-in entry, else unknown."""
    name = normalise_provider(provider)
    table = _TABLES.get(name)
    normalised = code if table is None else table.normalise(code)
    builtin = None if table is None else table.entry(normalised)
    override = (overrides or {}).get((name, normalised))
    usable = (
        override is not None
        and (builtin is None or builtin.channel is override.channel)
        and not (builtin is not None and builtin.clears)
        and weakening(builtin, override.reason) is None
    )
    if usable:
        assert override is not None
        return Resolution(name, normalised, override.as_entry(), Origin.LOCATION)
    if builtin is not None:
        assert table is not None
        return Resolution(name, normalised, builtin, Origin.BUILT_IN, table.doc_of(builtin))
    return Resolution(name, normalised)


def overrides_by_key(overrides: Iterable[Override]) -> dict[tuple[str, str], Override]:
    return {o.key: o for o in overrides}


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
# Reasons whose blocks, set with an address, suppress it: those above, and the keyword opt-out
# of WhatsApp and RCS (an opt-out of the number on its channel). An erasure keeps each of them
# by the address's keyed hash.
SUPPRESSING_REASONS: frozenset[Reason] = ADDRESS_SUPPRESSING_REASONS | {Reason.KEYWORD_OPT_OUT}


class EventOutcome(enum.StrEnum):
    APPLIED = "APPLIED"  # the event set its block
    ALREADY_ACTIVE = "ALREADY_ACTIVE"  # its block was already active: nothing changed
    IGNORED = "IGNORED"  # the event sets no DND
    CLEARED = "CLEARED"  # the event lifted its block


def event_outcome(
    effect: tuple[Reason, Source] | None,
    channel: Channel,
    changed: bool,
    clears: bool = False,
    resolution: Resolution | None = None,
) -> tuple[EventOutcome, str]:
    """What a provider event with ``effect`` (None: it sets no DND) did on ``channel``, and
    the explanation its answer gives; ``changed``: whether its write changed anything;
    ``clears``: the event lifts the effect's block instead of setting it; ``resolution``: what
    decided the effect (named in the explanation of an ignored code)."""
    if effect is None:
        if resolution is None:
            return EventOutcome.IGNORED, "ignored: this event does not set DND"
        what = f"{resolution.provider} {resolution.code}"
        if resolution.entry is None:
            return EventOutcome.IGNORED, f"ignored: {what} is not a code this service knows"
        if resolution.origin is Origin.LOCATION:
            return EventOutcome.IGNORED, f"ignored: the location's override ignores {what}"
        why = f": {resolution.entry.note}" if resolution.entry.note else ""
        return (
            EventOutcome.IGNORED,
            f"ignored: {what} ({resolution.entry.meaning}) changes nothing{why}",
        )
    if clears:
        if changed:
            return EventOutcome.CLEARED, f"cleared: {effect[0].value} lifted on {channel.value}"
        return EventOutcome.IGNORED, f"ignored: no {effect[0].value} to clear on {channel.value}"
    if changed:
        return EventOutcome.APPLIED, f"applied: {effect[0].value} set on {channel.value}"
    return EventOutcome.ALREADY_ACTIVE, f"unchanged: {effect[0].value} was already active"
