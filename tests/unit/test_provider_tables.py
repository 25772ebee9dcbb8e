"""The provider code tables (``domain.provider_events``), every code of every table written
out with what it must do, and the per-location overrides: what they may map, and that no
override weakens an opt-out. Pure: no server, no database."""

from __future__ import annotations

import pytest
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Channel, Reason, Source
from dnd_server.domain.provider_events import (
    KNOWN_PROVIDERS,
    PROVIDER_TABLES,
    EventOutcome,
    Origin,
    Override,
    OverrideInput,
    event_outcome,
    normalise_provider,
    overrides_by_key,
    resolve,
    validate_overrides,
)

PERM, TEMP = Reason.SMS_CARRIER_PERMANENT, Reason.SMS_CARRIER_TEMPORARY
HARD, GENERIC = Reason.EMAIL_HARD_BOUNCE, Reason.EMAIL_GENERIC_FAILURE
S_BOUNCE, S_UNSUB = Reason.EMAIL_SUPPRESS_BOUNCE, Reason.EMAIL_SUPPRESS_UNSUBSCRIBE
S_COMPLAINT, SPAM = Reason.EMAIL_SUPPRESS_COMPLAINT, Reason.EMAIL_SPAM_COMPLAINT
UNSUB, M_UNSUB = Reason.EMAIL_UNSUBSCRIBE_LINK, Reason.EMAIL_MARKETING_UNSUBSCRIBE
WA = Reason.WHATSAPP_MARKETING_OPT_OUT
SYSTEM, CONTACT = Source.SYSTEM, Source.CONTACT
NONE = None

# Every code of every table: (provider, code, reason it sets or None, source, clears).
EXPECTED: list[tuple[str, str, Reason | None, Source, bool]] = [
    ("twilio", "21610", PERM, SYSTEM, False),
    ("twilio", "30004", PERM, SYSTEM, False),
    ("twilio", "30003", TEMP, SYSTEM, False),
    ("twilio", "30005", TEMP, SYSTEM, False),
    ("twilio", "30006", TEMP, SYSTEM, False),
    *[
        ("twilio", c, NONE, SYSTEM, False)
        for c in ("30001", "30002", "30007", "30008", "30009", "30010", "21211")
    ],
    ("telnyx", "40300", PERM, SYSTEM, False),
    ("telnyx", "40001", TEMP, SYSTEM, False),
    ("telnyx", "40012", TEMP, SYSTEM, False),
    *[
        ("telnyx", c, NONE, SYSTEM, False)
        for c in (
            "40002",
            "40003",
            "40004",
            "40005",
            "40006",
            "40007",
            "40008",
            "40009",
            "40011",
            "40013",
            "40014",
            "40015",
        )
    ],
    ("bandwidth", "4775", PERM, SYSTEM, False),
    ("bandwidth", "4482", PERM, SYSTEM, False),
    *[
        ("bandwidth", c, TEMP, SYSTEM, False)
        for c in ("4720", "4721", "4700", "4701", "4404", "4406")
    ],
    *[
        ("bandwidth", c, NONE, SYSTEM, False)
        for c in (
            "4702",
            "4730",
            "4750",
            "4751",
            "4752",
            "4770",
            "4772",
            "4773",
            "4785",
            "4790",
            "4795",
            "4470",
            "4481",
            "5100",
            "5500",
        )
    ],
    ("vonage", "9", PERM, SYSTEM, False),
    ("vonage", "4", PERM, SYSTEM, False),
    ("vonage", "3", TEMP, SYSTEM, False),
    ("vonage", "12", TEMP, SYSTEM, False),
    ("vonage", "14", TEMP, SYSTEM, False),
    *[
        ("vonage", c, NONE, SYSTEM, False)
        for c in ("0", "1", "2", "5", "6", "7", "8", "10", "11", "13", "15", "99")
    ],
    ("plivo", "200", PERM, SYSTEM, False),
    ("plivo", "50", TEMP, SYSTEM, False),
    ("plivo", "70", TEMP, SYSTEM, False),
    ("plivo", "100", TEMP, SYSTEM, False),
    *[
        ("plivo", c, NONE, SYSTEM, False)
        for c in ("10", "20", "30", "40", "60", "80", "90", "110", "201", "1000")
    ],
    ("sinch", "300", TEMP, SYSTEM, False),
    ("sinch", "152", TEMP, SYSTEM, False),
    *[
        ("sinch", c, NONE, SYSTEM, False)
        for c in (
            "0",
            "400",
            "401",
            "402",
            "403",
            "404",
            "405",
            "406",
            "407",
            "408",
            "410",
            "411",
            "412",
            "413",
            "414",
            "415",
            "416",
            "417",
            "418",
            "15",
            "62",
        )
    ],
    ("meta", "131050", WA, SYSTEM, False),
    ("meta", "user_preferences:stop_marketing", WA, CONTACT, False),
    ("meta", "user_preferences:resume_marketing", WA, CONTACT, True),
    *[
        ("meta", c, NONE, SYSTEM, False)
        for c in ("131026", "131047", "131049", "131048", "131051", "131056", "131000", "130472")
    ],
    ("sendgrid", "bounce", HARD, SYSTEM, False),
    ("sendgrid", "bounce:bounce", HARD, SYSTEM, False),
    ("sendgrid", "bounce:blocked", NONE, SYSTEM, False),
    ("sendgrid", "dropped:bounced_address", S_BOUNCE, SYSTEM, False),
    ("sendgrid", "dropped:invalid", S_BOUNCE, SYSTEM, False),
    ("sendgrid", "dropped:unsubscribed_address", S_UNSUB, SYSTEM, False),
    ("sendgrid", "dropped:spam_reporting_address", S_COMPLAINT, SYSTEM, False),
    ("sendgrid", "dropped:spam_content", NONE, SYSTEM, False),
    ("sendgrid", "dropped:invalid_smtpapi_header", NONE, SYSTEM, False),
    ("sendgrid", "spamreport", SPAM, SYSTEM, False),
    ("sendgrid", "unsubscribe", UNSUB, CONTACT, False),
    ("sendgrid", "group_unsubscribe", M_UNSUB, CONTACT, False),
    *[
        ("sendgrid", c, NONE, SYSTEM, False)
        for c in ("group_resubscribe", "deferred", "delivered", "processed", "open", "click")
    ],
    ("ses", "Bounce:Permanent:General", HARD, SYSTEM, False),
    ("ses", "Bounce:Permanent:NoEmail", HARD, SYSTEM, False),
    ("ses", "Bounce:Permanent:Suppressed", S_BOUNCE, SYSTEM, False),
    ("ses", "Bounce:Permanent:OnAccountSuppressionList", S_BOUNCE, SYSTEM, False),
    ("ses", "Bounce:Permanent", HARD, SYSTEM, False),
    *[
        ("ses", c, NONE, SYSTEM, False)
        for c in (
            "Bounce:Transient:General",
            "Bounce:Transient:MailboxFull",
            "Bounce:Transient:MessageTooLarge",
            "Bounce:Transient:ContentRejected",
            "Bounce:Transient:AttachmentRejected",
            "Bounce:Undetermined:Undetermined",
            "Complaint:not-spam",
            "Complaint:auth-failure",
        )
    ],
    *[
        ("ses", c, SPAM, SYSTEM, False)
        for c in (
            "Complaint",
            "Complaint:abuse",
            "Complaint:fraud",
            "Complaint:virus",
            "Complaint:other",
        )
    ],
    ("postmark", "HardBounce", HARD, SYSTEM, False),
    ("postmark", "BadEmailAddress", HARD, SYSTEM, False),
    ("postmark", "SpamComplaint", SPAM, SYSTEM, False),
    ("postmark", "ManuallyDeactivated", GENERIC, SYSTEM, False),
    ("postmark", "Unsubscribe", UNSUB, CONTACT, False),
    ("postmark", "SubscriptionChange:HardBounce", S_BOUNCE, SYSTEM, False),
    ("postmark", "SubscriptionChange:SpamComplaint", S_COMPLAINT, SYSTEM, False),
    ("postmark", "SubscriptionChange:ManualSuppression", S_UNSUB, SYSTEM, False),
    *[
        ("postmark", c, NONE, SYSTEM, False)
        for c in (
            "SubscriptionChange:Reactivated",
            "Transient",
            "SoftBounce",
            "DnsError",
            "AutoResponder",
            "AddressChange",
            "Subscribe",
            "SpamNotification",
            "OpenRelayTest",
            "Unknown",
            "VirusNotification",
            "ChallengeVerification",
            "Unconfirmed",
            "Blocked",
            "SMTPApiError",
            "InboundError",
            "DMARCPolicy",
            "TemplateRenderingFailed",
        )
    ],
    ("mailgun", "failed:permanent:bounce", HARD, SYSTEM, False),
    ("mailgun", "failed:permanent:suppress-bounce", S_BOUNCE, SYSTEM, False),
    ("mailgun", "failed:permanent:suppress-unsubscribe", S_UNSUB, SYSTEM, False),
    ("mailgun", "failed:permanent:suppress-complaint", S_COMPLAINT, SYSTEM, False),
    ("mailgun", "failed:permanent:generic", GENERIC, SYSTEM, False),
    ("mailgun", "failed:permanent", GENERIC, SYSTEM, False),
    ("mailgun", "failed:temporary", NONE, SYSTEM, False),
    ("mailgun", "complained", SPAM, SYSTEM, False),
    ("mailgun", "unsubscribed", UNSUB, CONTACT, False),
]


def test_the_expected_list_is_every_code_of_every_table() -> None:
    listed = {(p, c) for p, c, *_ in EXPECTED}
    assert len(listed) == len(EXPECTED)
    assert listed == {(t.provider, e.code) for t in PROVIDER_TABLES for e in t.entries}


@pytest.mark.parametrize(
    ("provider", "code", "reason", "source", "clears"),
    EXPECTED,
    ids=[f"{p}-{c}" for p, c, *_ in EXPECTED],
)
def test_every_code_does_what_its_table_says(
    provider: str, code: str, reason: Reason | None, source: Source, clears: bool
) -> None:
    found = resolve(provider, code)
    assert found.origin is Origin.BUILT_IN
    assert found.entry is not None
    assert (found.provider, found.code) == (provider, code)
    assert (found.entry.reason, found.entry.clears) == (reason, clears)
    if reason is not None:
        assert found.effect == (reason, source)
    else:
        assert found.effect is None
    # Every code names its source: the provider's documentation and its own name of the code.
    assert found.doc.startswith("https://")
    assert found.entry.meaning


def test_each_table_is_of_one_channel_and_each_reason_of_that_channel() -> None:
    for table in PROVIDER_TABLES:
        for entry in table.entries:
            assert entry.channel is table.channel
            if entry.reason in (PERM, TEMP):
                assert table.channel is Channel.SMS
            if entry.reason is not None and entry.reason.value.startswith("EMAIL_"):
                assert table.channel is Channel.EMAIL


def test_every_provider_has_an_opt_out_or_unreachable_code() -> None:
    for table in PROVIDER_TABLES:
        assert any(e.reason is not None for e in table.entries), table.provider


@pytest.mark.parametrize(
    ("provider", "code", "expected"),
    [
        ("Twilio", "21610", ("twilio", "21610")),
        ("  TELNYX ", "40300", ("telnyx", "40300")),
        ("Nexmo", "09", ("vonage", "9")),
        ("vonage", "0009", ("vonage", "9")),
        ("Amazon SES", "bounce:permanent:general", ("ses", "Bounce:Permanent:General")),
        ("aws_ses", "BOUNCE : Permanent : NoEmail", ("ses", "Bounce:Permanent:NoEmail")),
        # A permanent bounce of a new subtype is still permanent; a new complaint type acts.
        ("ses", "Bounce:Permanent:SomethingNew", ("ses", "Bounce:Permanent")),
        ("ses", "Complaint:new-type", ("ses", "Complaint")),
        ("sendgrid", "dropped:Bounced Address", ("sendgrid", "dropped:bounced_address")),
        ("SendGrid", "SPAMREPORT", ("sendgrid", "spamreport")),
        ("postmark", "100001", ("postmark", "SpamComplaint")),
        ("postmark", "hardbounce", ("postmark", "HardBounce")),
        (
            "postmark",
            "subscriptionchange:manualsuppression",
            ("postmark", "SubscriptionChange:ManualSuppression"),
        ),
        ("mailgun", "failed:permanent:old", ("mailgun", "failed:permanent")),
        (
            "meta",
            "user_preferences:marketing_messages:stop",
            ("meta", "user_preferences:stop_marketing"),
        ),
        # In any letter case, as the other providers' names: an upper-cased stop is a stop.
        ("meta", "USER_PREFERENCES:STOP_MARKETING", ("meta", "user_preferences:stop_marketing")),
        (
            "meta",
            "User_Preferences:Marketing_Messages:Stop",
            ("meta", "user_preferences:stop_marketing"),
        ),
        (
            "meta",
            " user_preferences:Resume_Marketing ",
            ("meta", "user_preferences:resume_marketing"),
        ),
    ],
)
def test_names_and_codes_are_normalised(
    provider: str, code: str, expected: tuple[str, str]
) -> None:
    found = resolve(provider, code)
    assert (found.provider, found.code) == expected
    assert found.known


@pytest.mark.parametrize(
    ("provider", "code"),
    [
        ("twilio", "99999"),
        ("twilio", "131050"),  # Meta's code, not Twilio's
        ("ses", "Bounce"),
        ("sendgrid", "bounce:permanent"),
        ("acme", "30004"),  # an unknown provider knows no code
        ("t" * 64, "x" * 64),
    ],
)
def test_unknown_codes_change_nothing(provider: str, code: str) -> None:
    found = resolve(provider, code)
    assert not found.known and found.effect is None and found.origin is None
    outcome, explanation = event_outcome(None, Channel.SMS, False, resolution=found)
    assert outcome is EventOutcome.IGNORED
    assert "not a code this service knows" in explanation


def test_a_known_code_that_changes_nothing_says_why() -> None:
    found = resolve("telnyx", "40002")
    outcome, explanation = event_outcome(found.effect, Channel.SMS, False, resolution=found)
    assert outcome is EventOutcome.IGNORED
    assert "Blocked as spam" in explanation and "sender" in explanation


def test_provider_names_normalise_to_a_bounded_set_for_metrics() -> None:
    assert normalise_provider("Amazon SES") == "ses"
    assert normalise_provider("Twilio SendGrid") == "sendgrid"
    assert {t.provider for t in PROVIDER_TABLES} == KNOWN_PROVIDERS


# --- overrides ------------------------------------------------------------------------------


def item(
    provider: str, code: str, channel: Channel | None, reason: Reason | None, ignore: bool = False
) -> OverrideInput:
    return OverrideInput(provider, code, channel, reason, ignore)


def problems(*items: OverrideInput) -> dict[str, str]:
    with pytest.raises(InvalidArgument) as caught:
        validate_overrides(list(items))
    return {v.field: v.description for v in caught.value.violations}


@pytest.mark.parametrize(
    ("provider", "code", "channel", "reason"),
    [
        # Every opt-out, complaint and permanent failure of every table, to ignore and to a
        # temporary or weaker reason.
        *[
            (t.provider, e.code, t.channel, weaker)
            for t in PROVIDER_TABLES
            for e in t.entries
            if e.protected
            for weaker in {
                Channel.SMS: [None, TEMP],
                Channel.EMAIL: [None, M_UNSUB],
            }.get(t.channel, [None])
            if weaker is not e.reason
        ],
    ],
)
def test_no_override_weakens_a_built_in_opt_out(
    provider: str, code: str, channel: Channel, reason: Reason | None
) -> None:
    found = problems(item(provider, code, channel, reason, ignore=reason is None))
    [(field, why)] = found.items()
    assert field == "overrides[0].reason"
    assert "may not be weakened" in why and code in why


@pytest.mark.parametrize(
    ("provider", "code", "channel", "reason"),
    [
        ("twilio", "30007", Channel.SMS, PERM),  # add: a no-change code made an opt-out
        ("twilio", "30003", Channel.SMS, None),  # a temporary block may be ignored
        ("twilio", "30003", Channel.SMS, PERM),  # strengthen
        ("acme", "STOPPED", Channel.SMS, PERM),  # an unknown provider's code
        ("sendgrid", "group_unsubscribe", Channel.EMAIL, UNSUB),  # marketing-only -> full
        ("ses", "Bounce:Permanent:General", Channel.EMAIL, S_BOUNCE),
        ("meta", "131026", Channel.WHATSAPP, WA),
    ],
)
def test_overrides_may_add_and_strengthen(
    provider: str, code: str, channel: Channel, reason: Reason | None
) -> None:
    [made] = validate_overrides([item(provider, code, channel, reason, ignore=reason is None)])
    assert made.reason is reason
    found = resolve(provider, code, overrides_by_key([made]))
    assert found.origin is Origin.LOCATION
    assert found.effect == (None if reason is None else (reason, found.entry.source))  # type: ignore[union-attr]


def test_override_problems_are_named_each() -> None:
    found = problems(
        item("", "1", Channel.SMS, PERM),
        item("twilio", "", Channel.SMS, PERM),
        item("twilio", "30007", None, PERM),
        item("twilio", "30007", Channel.EMAIL, PERM),  # a Twilio SMS code on email
        item("acme", "x", Channel.SMS, HARD),  # an EMAIL reason on SMS
        item("acme", "y", Channel.CALL, PERM),  # no provider reason on calls
        item("acme", "z", Channel.SMS, None),  # neither reason nor ignore
        item("acme", "w", Channel.SMS, PERM, ignore=True),  # both
        item("meta", "user_preferences:resume_marketing", Channel.WHATSAPP, None, True),
        item("Acme", "dup", Channel.SMS, PERM),
        item("acme", "dup", Channel.SMS, TEMP),
        item("ac\u200bme", "v", Channel.SMS, PERM),
    )
    assert set(found) == {
        "overrides[0].provider",
        "overrides[1].code",
        "overrides[2].channel",
        "overrides[3].channel",
        "overrides[4].reason",
        "overrides[5].reason",
        "overrides[6].reason",
        "overrides[7].reason",
        "overrides[8].code",
        "overrides[10].code",
        "overrides[11].provider",
    }
    assert "CHANNEL_SMS" in found["overrides[3].channel"]


def test_too_many_overrides() -> None:
    items = [item("acme", str(i), Channel.SMS, PERM) for i in range(501)]
    assert set(problems(*items)) == {"overrides"}


def test_a_stored_override_that_now_weakens_is_not_used() -> None:
    """An override stored before the built-in table made its code an opt-out is skipped."""
    stale = Override("twilio", "21610", Channel.SMS, None)
    found = resolve("twilio", "21610", overrides_by_key([stale]))
    assert found.origin is Origin.BUILT_IN and found.effect == (PERM, SYSTEM)
    other_channel = Override("twilio", "30007", Channel.EMAIL, HARD)
    assert resolve("twilio", "30007", overrides_by_key([other_channel])).origin is Origin.BUILT_IN


# --- the unknown-code log -------------------------------------------------------------------


def test_unknown_codes_are_logged_at_most_twenty_a_minute() -> None:
    """Anyone reporting may send unlimited distinct codes: the log line is rate limited."""
    from dnd_server.service import DndService, ProviderEvent
    from structlog.testing import capture_logs

    service = DndService(store=None)  # type: ignore[arg-type]  # the log reads no store
    now = [1000.0]
    service._monotonic = lambda: now[0]
    event = ProviderEvent("loc", "c", Channel.SMS, "acme", "", None, code="x")
    with capture_logs() as logs:
        for i in range(50):
            service._log_unknown(event, resolve("acme", f"code-{i}"))
        now[0] += 61
        service._log_unknown(event, resolve("acme", "later"))
    lines = [e["event"] for e in logs]
    assert lines.count("delivery_code_unknown") == 21
    assert lines.count("delivery_codes_unlogged") == 1
    dropped = next(e for e in logs if e["event"] == "delivery_codes_unlogged")
    assert dropped["count"] == 30
