"""The client's request builders put each argument where the contract wants it: purposes,
consent records with their evidence and times, the consent policy, change kinds. Pure: builds
requests, calls no server."""

from __future__ import annotations

import datetime as dt

import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_client import (
    ChangeKind,
    Channel,
    ConsentEvidence,
    ConsentKind,
    ConsentMethod,
    ConsentPurpose,
    ConsentStatus,
    Denial,
    DndAction,
    EmailEvent,
    ImpliedBasis,
    Purpose,
    Reason,
    Source,
)
from dnd_client import _requests as rq
from dnd_client.types import name_of

CAPTURED = dt.datetime(2026, 3, 1, 9, 30, tzinfo=dt.UTC)


def test_purpose_is_sent_and_none_is_unspecified() -> None:
    marketing = rq.check_send("loc", "c", Channel.SMS, purpose=Purpose.MARKETING).request
    assert isinstance(marketing, pb.CheckSendRequest)
    assert marketing.purpose == pb.PURPOSE_MARKETING
    plain = rq.check_send("loc", "c", Channel.SMS).request
    assert isinstance(plain, pb.CheckSendRequest)
    assert plain.purpose == pb.PURPOSE_UNSPECIFIED
    batch = rq.batch_check_send(
        "loc", Channel.EMAIL, ["a"], purpose=Purpose.TRANSACTIONAL, include_details=True
    ).request
    assert isinstance(batch, pb.BatchCheckSendRequest)
    assert (batch.purpose, batch.include_details) == (pb.PURPOSE_TRANSACTIONAL, True)


def test_record_consent_request() -> None:
    evidence = ConsentEvidence(
        form_url="https://example.com/join", disclosure_version="v3", ip_address="203.0.113.9"
    )
    prepared = rq.record_consent(
        "loc",
        "c",
        Channel.SMS,
        ConsentPurpose.MARKETING,
        method=ConsentMethod.WEB_FORM,
        source=Source.USER,
        address="+14155550100",
        captured_at=CAPTURED.astimezone(dt.timezone(dt.timedelta(hours=-5))),
        expires_at=CAPTURED + dt.timedelta(days=365),
        evidence=evidence,
        consent_source="spring-campaign",
        expected_version=4,
        idempotency_key="form-77",
    )
    request = prepared.request
    assert isinstance(request, pb.RecordConsentRequest)
    assert (prepared.method, prepared.retry) == ("RecordConsent", True)
    assert (request.channel, request.purpose, request.method) == (
        pb.CHANNEL_SMS,
        pb.CONSENT_PURPOSE_MARKETING,
        pb.CONSENT_METHOD_WEB_FORM,
    )
    assert request.kind == pb.CONSENT_KIND_UNSPECIFIED, "unspecified: the server reads EXPRESS"
    assert request.captured_at.ToDatetime(dt.UTC) == CAPTURED, "any zone, sent as UTC"
    assert request.expires_at.ToDatetime(dt.UTC) == CAPTURED + dt.timedelta(days=365)
    assert request.evidence.form_url == "https://example.com/join"
    assert (request.evidence.disclosure_version, request.evidence.ip_address) == (
        "v3",
        "203.0.113.9",
    )
    assert request.HasField("expected_version") and request.expected_version == 4
    assert (request.address, request.consent_source) == ("+14155550100", "spring-campaign")


def test_record_consent_defaults_leave_times_and_evidence_unset() -> None:
    prepared = rq.record_consent(
        "loc",
        "c",
        Channel.EMAIL,
        ConsentPurpose.INFORMATIONAL,
        method=ConsentMethod.DOUBLE_OPT_IN,
        source=Source.WORKFLOW,
        kind=ConsentKind.IMPLIED,
        implied_basis=ImpliedBasis.INQUIRY,
        pending=True,
    )
    request = prepared.request
    assert isinstance(request, pb.RecordConsentRequest)
    assert not prepared.retry, "no idempotency key: not retried"
    for name in ("captured_at", "expires_at", "evidence", "expected_version"):
        assert not request.HasField(name), name
    assert (request.kind, request.implied_basis, request.pending) == (
        pb.CONSENT_KIND_IMPLIED,
        pb.IMPLIED_BASIS_INQUIRY,
        True,
    )


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="captured_at needs a timezone"):
        rq.record_consent(
            "loc",
            "c",
            Channel.SMS,
            ConsentPurpose.MARKETING,
            method=ConsentMethod.API,
            source=Source.USER,
            captured_at=dt.datetime(2026, 3, 1, 9, 30),
        )


def test_revoke_consent_request() -> None:
    everything = rq.revoke_consent("loc", "c", Channel.SMS, source=Source.CONTACT).request
    assert isinstance(everything, pb.RevokeConsentRequest)
    assert (everything.purpose, everything.address) == (pb.CONSENT_PURPOSE_UNSPECIFIED, "")
    one = rq.revoke_consent(
        "loc",
        "c",
        Channel.EMAIL,
        source=Source.USER,
        purpose=ConsentPurpose.MARKETING,
        address="pat@example.com",
        note="asked by phone",
    ).request
    assert isinstance(one, pb.RevokeConsentRequest)
    assert (one.channel, one.purpose, one.address, one.note) == (
        pb.CHANNEL_EMAIL,
        pb.CONSENT_PURPOSE_MARKETING,
        "pat@example.com",
        "asked by phone",
    )


def test_consent_policy_requests() -> None:
    read = rq.get_consent_policy("loc")
    assert (read.method, read.retry) == ("GetConsentPolicy", False)
    assert "GetConsentPolicy" in rq.READS
    prepared = rq.update_consent_policy(
        "loc",
        channels={
            Channel.SMS: {ConsentPurpose.MARKETING, ConsentPurpose.INFORMATIONAL},
            Channel.EMAIL: [ConsentPurpose.MARKETING],
        },
        double_opt_in_window_seconds=3600,
    )
    request = prepared.request
    assert isinstance(request, pb.UpdateConsentPolicyRequest)
    assert prepared.retry, "a replace: retried"
    assert [
        (c.channel, c.require_marketing, c.require_informational) for c in request.policy.channels
    ] == [(pb.CHANNEL_EMAIL, True, False), (pb.CHANNEL_SMS, True, True)]
    assert request.policy.double_opt_in_window_seconds == 3600
    off = rq.update_consent_policy("loc").request
    assert isinstance(off, pb.UpdateConsentPolicyRequest)
    assert not off.policy.channels, "no channels: the policy off"
    answer = pb.UpdateConsentPolicyResponse(policy=request.policy)
    assert prepared.unwrap(answer) == request.policy


def test_marketing_only_scope_and_stream() -> None:
    request = rq.set_dnd(
        "loc",
        "c",
        action=DndAction.ENABLE,
        source=Source.USER,
        all_channels=True,
        marketing_only=True,
    ).request
    assert isinstance(request, pb.SetDndRequest)
    assert request.scope.all_channels and request.scope.marketing_only
    with pytest.raises(ValueError, match="marketing-only opt-outs are outbound"):
        rq.scope(rq.Direction.INBOUND, None, False, marketing_only=True)
    email = rq.report_email_event(
        "loc", "c", provider="mailgun", event=EmailEvent.UNSUBSCRIBE_LINK, marketing_stream=True
    ).request
    assert isinstance(email, pb.ReportEmailEventRequest) and email.marketing_stream


def test_delivery_event_and_watch_kinds() -> None:
    prepared = rq.report_delivery_event(
        "loc",
        "c",
        channel=Channel.WHATSAPP,
        provider="meta",
        code="131050",
        address="+14155550100",
        idempotency_key="wamid-1",
    )
    request = prepared.request
    assert isinstance(request, pb.ReportDeliveryEventRequest)
    assert (request.channel, request.code, request.address, prepared.retry) == (
        pb.CHANNEL_WHATSAPP,
        "131050",
        "+14155550100",
        True,
    )
    plan = rq.watch_changes(kinds=[ChangeKind.CONSENT, ChangeKind.COMPLIANCE_REPLY])
    assert list(plan.request(None).kinds) == [
        pb.CHANGE_KIND_CONSENT,
        pb.CHANGE_KIND_COMPLIANCE_REPLY,
    ]


def test_new_enum_names() -> None:
    assert name_of("Purpose", pb.PURPOSE_COMPLIANCE_REPLY) == "COMPLIANCE_REPLY"
    assert name_of("Denial", pb.DENIAL_NO_CONSENT) == "NO_CONSENT"
    assert name_of("ConsentStatus", pb.CONSENT_STATUS_PENDING) == "PENDING"
    assert name_of("ConsentMethod", pb.CONSENT_METHOD_DOUBLE_OPT_IN) == "DOUBLE_OPT_IN"
    assert name_of("ChangeKind", pb.CHANGE_KIND_CONSENT) == "CONSENT"


@pytest.mark.parametrize(
    ("ours", "prefix"),
    [
        (Purpose, "PURPOSE_"),
        (ConsentPurpose, "CONSENT_PURPOSE_"),
        (ConsentMethod, "CONSENT_METHOD_"),
        (ConsentKind, "CONSENT_KIND_"),
        (ImpliedBasis, "IMPLIED_BASIS_"),
        (ChangeKind, "CHANGE_KIND_"),
        (ConsentStatus, "CONSENT_STATUS_"),
        (Denial, "DENIAL_"),
        (Reason, "REASON_"),
    ],
)
def test_enums_cover_the_contract(ours: type, prefix: str) -> None:
    """Every value of the proto enum but UNSPECIFIED is a member, under its short name."""
    contract = pb.DESCRIPTOR.enum_types_by_name[ours.__name__]
    wanted = {v.name.removeprefix(prefix): v.number for v in contract.values if v.number}
    assert {m.name: m.value for m in ours} == wanted  # type: ignore[attr-defined]


def test_quiet_hours_requests() -> None:
    at = dt.datetime(2099, 1, 14, 21, 30, tzinfo=dt.timezone(dt.timedelta(hours=-5)))
    check = rq.check_send(
        "loc", "c", Channel.SMS, purpose=Purpose.MARKETING, time_zone="America/New_York", send_at=at
    ).request
    assert isinstance(check, pb.CheckSendRequest)
    assert (check.time_zone, check.send_at.ToJsonString()) == (
        "America/New_York",
        "2099-01-15T02:30:00Z",
    )
    plain = rq.check_send("loc", "c", Channel.SMS).request
    assert isinstance(plain, pb.CheckSendRequest)
    assert not plain.HasField("send_at") and plain.time_zone == ""
    with pytest.raises(ValueError, match="send_at"):
        rq.check_send("loc", "c", Channel.SMS, send_at=dt.datetime(2099, 1, 14, 21, 30))
    batch = rq.batch_check_send(
        "loc",
        Channel.SMS,
        ["a", ("b", "+13055551234"), ("c", "+13055551234", "Pacific/Honolulu")],
        time_zone="America/Chicago",
        send_at=at,
    ).request
    assert isinstance(batch, pb.BatchCheckSendRequest)
    assert [t.time_zone for t in batch.targets] == ["", "", "Pacific/Honolulu"]
    assert batch.time_zone == "America/Chicago" and batch.HasField("send_at")
    update = rq.update_quiet_hours_settings(
        "loc",
        informational=True,
        default_time_zone="America/Denver",
        window_start="09:00",
        window_end="18:00",
    )
    assert update.method == "UpdateQuietHoursSettings" and update.retry
    assert update.request == pb.UpdateQuietHoursSettingsRequest(
        location_id="loc",
        settings=pb.QuietHoursSettings(
            informational=True,
            default_time_zone="America/Denver",
            window_start="09:00",
            window_end="18:00",
        ),
    )
    read = rq.get_quiet_hours_settings("loc")
    assert read.method == "GetQuietHoursSettings" and not read.retry
    answer = pb.GetQuietHoursSettingsResponse(settings=pb.QuietHoursSettings(informational=True))
    assert read.unwrap(answer) == pb.QuietHoursSettings(informational=True)
