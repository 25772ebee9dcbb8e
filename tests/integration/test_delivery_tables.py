"""The provider code tables over real gRPC on real PostgreSQL: a code of each provider sets
its block, every mapping names its table entry and source, a location's overrides add codes
and strengthen them (and only for that location), never weaken an opt-out, and hostile input
is refused without changing anything."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests import factories
from tests.support import Database, bad_fields

T = 10
R = pb.Reason
SMS, EMAIL, WHATSAPP = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, pb.CHANNEL_WHATSAPP
BUILT_IN, LOCATION = pb.MAPPING_ORIGIN_BUILT_IN, pb.MAPPING_ORIGIN_LOCATION

# One code of each provider, as a webhook would report it (not always as the table spells it).
ONE_PER_PROVIDER = [
    ("twilio", "21610", SMS, R.REASON_SMS_CARRIER_PERMANENT, "21610"),
    ("Telnyx", "40300", SMS, R.REASON_SMS_CARRIER_PERMANENT, "40300"),
    ("bandwidth", "4775", SMS, R.REASON_SMS_CARRIER_PERMANENT, "4775"),
    ("Nexmo", "9", SMS, R.REASON_SMS_CARRIER_PERMANENT, "9"),
    ("plivo", "200", SMS, R.REASON_SMS_CARRIER_PERMANENT, "200"),
    ("sinch", "300", SMS, R.REASON_SMS_CARRIER_TEMPORARY, "300"),
    ("meta", "131050", WHATSAPP, R.REASON_WHATSAPP_MARKETING_OPT_OUT, "131050"),
    ("sendgrid", "spamreport", EMAIL, R.REASON_EMAIL_SPAM_COMPLAINT, "spamreport"),
    (
        "Amazon SES",
        "bounce:permanent:general",
        EMAIL,
        R.REASON_EMAIL_HARD_BOUNCE,
        "Bounce:Permanent:General",
    ),
    ("postmark", "100001", EMAIL, R.REASON_EMAIL_SPAM_COMPLAINT, "SpamComplaint"),
    ("mailgun", "complained", EMAIL, R.REASON_EMAIL_SPAM_COMPLAINT, "complained"),
]


def report(stub: Any, loc: str, contact: str, provider: str, code: str, channel: int) -> Any:
    request = factories.delivery_event(loc, contact, code, provider=provider, channel=channel)
    return stub.ReportDeliveryEvent(request, timeout=T)


def refused(call: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
    return caught.value


@pytest.mark.parametrize(
    ("provider", "code", "on", "reason", "spelt"),
    ONE_PER_PROVIDER,
    ids=[p for p, *_ in ONE_PER_PROVIDER],
)
def test_a_code_of_each_provider_sets_its_block(
    stub: Any,
    db: Database,
    loc: str,
    contact: str,
    provider: str,
    code: str,
    on: int,
    reason: int,
    spelt: str,
) -> None:
    answer = report(stub, loc, contact, provider, code, on)
    assert (answer.outcome, answer.reason, answer.changed) == (
        pb.EVENT_OUTCOME_APPLIED,
        reason,
        True,
    )
    mapping = answer.mapping
    assert (mapping.code, mapping.channel, mapping.reason, mapping.origin) == (
        spelt,
        on,
        reason,
        BUILT_IN,
    )
    assert mapping.documentation_url.startswith("https://") and mapping.meaning
    assert answer.normalized_code == spelt
    assert answer.normalized_provider == mapping.provider
    [block] = answer.status.blocks
    assert block.actor_id == mapping.provider  # the provider's name as matched
    denied = stub.CheckSend(factories.check(loc, contact, on), timeout=T)
    assert not denied.allowed
    assert db.changes(loc) >= 1


def test_a_known_code_that_changes_nothing_is_ignored_and_says_why(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    answer = report(stub, loc, contact, "telnyx", "40002", SMS)
    assert answer.outcome == pb.EVENT_OUTCOME_IGNORED and not answer.changed
    assert answer.mapping.origin == BUILT_IN and answer.mapping.reason == R.REASON_UNSPECIFIED
    assert "Blocked as spam" in answer.explanation
    assert (db.changes(loc), db.blocks(loc)) == (0, 0)


def test_an_unknown_code_is_ignored_without_a_mapping(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    answer = report(stub, loc, contact, "Telnyx", "49999", SMS)
    assert answer.outcome == pb.EVENT_OUTCOME_IGNORED
    assert not answer.HasField("mapping")
    assert (answer.normalized_provider, answer.normalized_code) == ("telnyx", "49999")
    assert (db.changes(loc), db.blocks(loc)) == (0, 0)


def test_overrides_add_codes_for_their_location_only(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    other = f"{loc}-other"
    updated = stub.UpdateDeliveryEventMappings(
        factories.update_mappings(
            loc,
            factories.override("Telnyx", "40008", SMS, R.REASON_SMS_CARRIER_TEMPORARY),
            factories.override("twilio", "30003", SMS, ignore=True),
            factories.override("twilio", "030007", SMS, R.REASON_SMS_CARRIER_PERMANENT),
        ),
        timeout=T,
    )
    assert [(o.provider, o.code, o.ignore) for o in updated.overrides] == [
        ("telnyx", "40008", False),
        ("twilio", "30003", True),
        ("twilio", "30007", False),
    ]
    got = stub.GetDeliveryEventMappings(
        pb.GetDeliveryEventMappingsRequest(location_id=loc, provider="TWILIO"), timeout=T
    )
    assert [o.code for o in got.overrides] == ["30003", "30007"]
    assert {m.provider for m in got.built_in} == {"twilio"}

    answer = report(stub, loc, contact, "telnyx", "40008", SMS)
    assert answer.outcome == pb.EVENT_OUTCOME_APPLIED
    assert answer.mapping.origin == LOCATION
    assert answer.reason == R.REASON_SMS_CARRIER_TEMPORARY
    # The location ignores 30003 now, on ReportSmsDeliveryFailure too (Twilio's numbering).
    ignored = stub.ReportSmsDeliveryFailure(
        factories.sms_failure(loc, f"{contact}-2", "30003"), timeout=T
    )
    assert ignored.outcome == pb.EVENT_OUTCOME_IGNORED
    added = stub.ReportSmsDeliveryFailure(
        factories.sms_failure(loc, f"{contact}-3", "30007"), timeout=T
    )
    assert added.reason == R.REASON_SMS_CARRIER_PERMANENT

    # Another location keeps the built-in tables.
    elsewhere = report(stub, other, contact, "telnyx", "40008", SMS)
    assert elsewhere.outcome == pb.EVENT_OUTCOME_IGNORED
    assert elsewhere.mapping.origin == BUILT_IN
    assert not stub.GetDeliveryEventMappings(
        pb.GetDeliveryEventMappingsRequest(location_id=other), timeout=T
    ).overrides

    # Replacing with none clears them.
    stub.UpdateDeliveryEventMappings(factories.update_mappings(loc), timeout=T)
    again = report(stub, loc, f"{contact}-4", "telnyx", "40008", SMS)
    assert again.outcome == pb.EVENT_OUTCOME_IGNORED


@pytest.mark.parametrize(
    ("override", "field"),
    [
        (factories.override("twilio", "21610", SMS, ignore=True), "overrides[0].reason"),
        (
            factories.override("telnyx", "40300", SMS, R.REASON_SMS_CARRIER_TEMPORARY),
            "overrides[0].reason",
        ),
        (factories.override("sendgrid", "spamreport", EMAIL, ignore=True), "overrides[0].reason"),
        (
            factories.override(
                "sendgrid", "unsubscribe", EMAIL, R.REASON_EMAIL_MARKETING_UNSUBSCRIBE
            ),
            "overrides[0].reason",
        ),
        (factories.override("meta", "131050", WHATSAPP, ignore=True), "overrides[0].reason"),
        (
            factories.override("meta", "user_preferences:resume_marketing", WHATSAPP, ignore=True),
            "overrides[0].code",
        ),
        (factories.override("acme", "1", SMS, R.REASON_EMAIL_HARD_BOUNCE), "overrides[0].reason"),
        (
            factories.override("twilio", "21610", EMAIL, R.REASON_EMAIL_HARD_BOUNCE),
            "overrides[0].channel",
        ),
        (factories.override("p" * 10_000, "1", SMS, ignore=True), "overrides[0].provider"),
        (factories.override("acme", "1\x00", SMS, ignore=True), "overrides[0].code"),
        (factories.override("acme", "1", 42, ignore=True), "overrides[0].channel"),
    ],
)
def test_an_override_that_weakens_or_is_malformed_is_refused(
    stub: Any, loc: str, override: pb.DeliveryEventOverride, field: str
) -> None:
    error = refused(
        lambda: stub.UpdateDeliveryEventMappings(
            factories.update_mappings(loc, override), timeout=T
        )
    )
    assert bad_fields(error) == [field], error.details()
    got = stub.GetDeliveryEventMappings(
        pb.GetDeliveryEventMappingsRequest(location_id=loc), timeout=T
    )
    assert not got.overrides


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"provider": "p" * 10_000}, "provider"),
        ({"provider": "twi\u200blio"}, "provider"),
        ({"provider": "twilio\n"}, "provider"),
        ({"provider": "tw/ilio"}, "provider"),
        ({"code": "21610\x07"}, "code"),
        ({"code": "2161\u200b0"}, "code"),
        ({"code": "c" * 65}, "code"),
    ],
)
def test_hostile_reports_are_refused(
    stub: Any, db: Database, loc: str, contact: str, fields: dict[str, str], bad: str
) -> None:
    request = factories.delivery_event(loc, contact, "21610", provider="twilio", channel=SMS)
    for name, value in fields.items():
        setattr(request, name, value)
    error = refused(lambda: stub.ReportDeliveryEvent(request, timeout=T))
    assert bad_fields(error) == [bad]
    assert (db.changes(loc), db.blocks(loc)) == (0, 0)
