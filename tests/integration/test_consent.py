"""Consent records over real gRPC and PostgreSQL: RecordConsent / RevokeConsent /
GetConsentPolicy / UpdateConsentPolicy, consent in GetStatus and ListHistory, the policy on the
CheckSend path (NO_CONSENT, allowed after RecordConsent, denied again after STOP or expiry),
opt-outs revoking consent and START recording it, double opt-in confirmed and expired, every
invalid field refused with nothing written.

Times are never slept through: an expired consent is recorded with a captured_at in the past,
or its stored times are moved with SQL (then read with fully_consistent, past the cache)."""

from __future__ import annotations

import concurrent.futures
import datetime as dt
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from tests import factories
from tests.support import (
    Database,
    ServerProcess,
    Watcher,
    bad_fields,
    cursor_codec,
    error_details,
    new_id,
)

T = 10
SMS, EMAIL, CALL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, pb.CHANNEL_CALL
MARKETING = pb.CONSENT_PURPOSE_MARKETING
INFORMATIONAL = pb.CONSENT_PURPOSE_INFORMATIONAL
PHONE_RAW, PHONE = "+1 (415) 555-0142", "+14155550142"
OTHER_PHONE = "+14155550199"
EVIDENCE = pb.ConsentEvidence(
    form_url="https://example.com/signup",
    disclosure_text="I agree to receive marketing texts. Reply STOP to opt out.",
    disclosure_version="v3",
    ip_address="203.0.113.7",
    user_agent="Mozilla/5.0",
)


def ts(when: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(when)
    return stamp


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def record(loc: str, contact: str, **fields: Any) -> pb.RecordConsentRequest:
    """A RecordConsent of an express SMS marketing consent from a web form, by the user."""
    base: dict[str, Any] = {
        "location_id": loc,
        "contact_id": contact,
        "channel": SMS,
        "purpose": MARKETING,
        "method": pb.CONSENT_METHOD_WEB_FORM,
        "source": pb.SOURCE_USER,
        "actor_id": "user-7",
        "evidence": EVIDENCE,
        "consent_source": "spring-campaign",
    }
    base.update(fields)
    return pb.RecordConsentRequest(**base)


def revoke(loc: str, contact: str, **fields: Any) -> pb.RevokeConsentRequest:
    base: dict[str, Any] = {
        "location_id": loc,
        "contact_id": contact,
        "channel": SMS,
        "source": pb.SOURCE_USER,
    }
    base.update(fields)
    return pb.RevokeConsentRequest(**base)


def require(
    stub: Any, loc: str, *channels: int, informational: bool = False, window: int = 0
) -> pb.UpdateConsentPolicyResponse:
    policy = pb.ConsentPolicy(
        channels=[
            pb.ChannelConsentPolicy(
                channel=c,  # type: ignore[arg-type]
                require_marketing=True,
                require_informational=informational,
            )
            for c in channels
        ],
        double_opt_in_window_seconds=window,
    )
    return stub.UpdateConsentPolicy(
        pb.UpdateConsentPolicyRequest(location_id=loc, policy=policy), timeout=T
    )


def check(stub: Any, loc: str, contact: str, **fields: Any) -> pb.CheckSendResponse:
    fields.setdefault("purpose", pb.PURPOSE_MARKETING)
    # A planned time quiet hours allow wherever the number is: these checks are about consent,
    # not the hour (docs/quiet-hours.md).
    fields.setdefault("send_at", factories.at(factories.DAYTIME))
    return stub.CheckSend(factories.check(loc, contact, **fields), timeout=T)


def soon() -> Any:
    """A send planned a minute from now (consent is judged at the planned time)."""
    return ts(now() + dt.timedelta(minutes=1))


def status(stub: Any, loc: str, contact: str, **fields: Any) -> pb.ContactStatus:
    return stub.GetStatus(factories.get_status(loc, contact, **fields), timeout=T).status


def history(stub: Any, loc: str, contact: str) -> list[pb.HistoryEntry]:
    return list(stub.ListHistory(factories.history(loc, contact), timeout=T).entries)


def inbound(stub: Any, loc: str, contact: str, body: str) -> pb.ProcessInboundMessageResponse:
    return stub.ProcessInboundMessage(
        factories.inbound(loc, contact, body, from_address=PHONE), timeout=T
    )


def failure(fn: Any, request: Any) -> grpc.RpcError:
    try:
        fn(request, timeout=T)
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded; an error was expected")


def refresh_state(db: Database, loc: str, contact: str) -> None:
    """After an edit of the contact's consent rows: its state document rebuilt from them."""
    db.execute(
        "UPDATE dnd_contacts SET state = dnd_contact_state(location_id, contact_id) "
        "WHERE location_id = $1 AND contact_id = $2",
        loc,
        contact,
    )


def written(db: Database, loc: str) -> tuple[int, int, int]:
    """(change-log rows, consent rows, contact rows) of the location."""
    return (
        db.changes(loc),
        db.fetchval("SELECT count(*) FROM dnd_consents WHERE location_id = $1", loc),
        db.fetchval("SELECT count(*) FROM dnd_contacts WHERE location_id = $1", loc),
    )


# --- recording and reading ------------------------------------------------------------------


def test_record_consent_is_stored_shown_and_logged(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    captured = now() - dt.timedelta(days=3)
    answer = stub.RecordConsent(
        record(loc, contact, address=PHONE_RAW, captured_at=ts(captured)), timeout=T
    )
    assert answer.changed
    consent = answer.consent
    assert (consent.channel, consent.purpose, consent.address) == (SMS, MARKETING, PHONE)
    assert consent.status == pb.CONSENT_STATUS_ACTIVE
    assert consent.kind == pb.CONSENT_KIND_EXPRESS
    assert consent.method == pb.CONSENT_METHOD_WEB_FORM
    assert consent.captured_at.ToDatetime(dt.UTC) == captured
    assert consent.evidence == EVIDENCE
    assert consent.consent_source == "spring-campaign"
    assert not consent.HasField("expires_at")
    assert "no DND block denies SMS" in answer.explanation
    assert answer.status.version == 1

    shown = status(stub, loc, contact)
    assert shown.version == 1
    assert list(shown.consents) == [consent]
    stored = "SELECT evidence->>'ip_address' FROM dnd_consents WHERE location_id = $1"
    assert db.fetchval(stored, loc) == "203.0.113.7"

    (entry,) = history(stub, loc, contact)
    assert entry.kind == pb.CHANGE_KIND_CONSENT
    assert entry.enabled
    assert entry.reason == pb.REASON_UNSPECIFIED
    assert entry.direction == pb.DIRECTION_OUTBOUND and entry.scope.channel == SMS
    assert entry.version == 1
    assert entry.source == pb.SOURCE_USER and entry.actor_id == "user-7"
    assert entry.consent == consent  # with its evidence
    assert entry.cursor == answer.cursor


def test_consents_come_in_a_stable_order(stub: Any, loc: str, contact: str) -> None:
    for channel, purpose, address in [
        (EMAIL, INFORMATIONAL, ""),
        (SMS, INFORMATIONAL, ""),
        (SMS, MARKETING, PHONE),
        (SMS, MARKETING, ""),
        (CALL, MARKETING, ""),
    ]:
        stub.RecordConsent(
            record(loc, contact, channel=channel, purpose=purpose, address=address), timeout=T
        )
    got = [(c.channel, c.purpose, c.address) for c in status(stub, loc, contact).consents]
    assert got == [
        (CALL, MARKETING, ""),
        (EMAIL, INFORMATIONAL, ""),
        (SMS, MARKETING, ""),
        (SMS, MARKETING, PHONE),
        (SMS, INFORMATIONAL, ""),
    ]
    # The same from the database as from the cache.
    assert (
        status(stub, loc, contact, fully_consistent=True).consents
        == status(stub, loc, contact).consents
    )


def test_recording_the_same_consent_again_changes_nothing(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    first = stub.RecordConsent(record(loc, contact), timeout=T)
    again = stub.RecordConsent(record(loc, contact), timeout=T)
    assert first.changed and not again.changed
    assert again.consent == first.consent  # captured_at kept
    assert again.status.version == 1
    assert db.changes(loc) == 1
    # Something else about it replaces it: a version and a history row more.
    other = stub.RecordConsent(record(loc, contact, consent_source="fall-campaign"), timeout=T)
    assert other.changed and other.status.version == 2
    assert other.consent.consent_source == "fall-campaign"
    assert [c.consent_source for c in status(stub, loc, contact).consents] == ["fall-campaign"]
    assert len(history(stub, loc, contact)) == 2


def test_record_consent_replays_its_idempotency_key(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    request = record(loc, contact, idempotency_key="form-123")
    first = stub.RecordConsent(request, timeout=T)
    retried = stub.RecordConsent(request, timeout=T)
    assert retried == first
    assert db.changes(loc) == 1
    error = failure(
        stub.RecordConsent, record(loc, contact, idempotency_key="form-123", actor_id="other")
    )
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["idempotency_key"]
    assert db.changes(loc) == 1


def test_record_consent_honours_expected_version(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    error = failure(stub.RecordConsent, record(loc, contact, expected_version=3))
    assert error.code() is grpc.StatusCode.ABORTED
    assert written(db, loc) == (0, 0, 0)
    answer = stub.RecordConsent(record(loc, contact, expected_version=0), timeout=T)
    assert answer.status.version == 1


def test_implied_consent_expires_by_its_basis(stub: Any, loc: str, contact: str) -> None:
    captured = dt.datetime(2026, 1, 15, 9, 30, tzinfo=dt.UTC)
    answer = stub.RecordConsent(
        record(
            loc,
            contact,
            kind=pb.CONSENT_KIND_IMPLIED,
            implied_basis=pb.IMPLIED_BASIS_PURCHASE,
            captured_at=ts(captured),
        ),
        timeout=T,
    )
    assert answer.consent.expires_at.ToDatetime(dt.UTC) == dt.datetime(
        2028, 1, 15, 9, 30, tzinfo=dt.UTC
    )
    assert answer.consent.kind == pb.CONSENT_KIND_IMPLIED


def test_explanation_says_when_dnd_still_denies_the_channel(
    stub: Any, loc: str, contact: str
) -> None:
    stub.SetDnd(factories.enable(loc, contact, channel=SMS), timeout=T)
    answer = stub.RecordConsent(record(loc, contact), timeout=T)
    assert "still denied by DND (MANUAL)" in answer.explanation
    # Consent never lifts a block.
    assert not check(stub, loc, contact).allowed


# --- revoking ---------------------------------------------------------------------------------


def test_revoke_consent(stub: Any, db: Database, loc: str, contact: str) -> None:
    stub.RecordConsent(record(loc, contact), timeout=T)
    stub.RecordConsent(record(loc, contact, purpose=INFORMATIONAL), timeout=T)
    stub.RecordConsent(record(loc, contact, address=PHONE), timeout=T)
    stub.RecordConsent(record(loc, contact, channel=EMAIL), timeout=T)
    # One address's: its own consent, and the contact-wide informational one for it alone (a
    # revoked record of the address, so the contact-wide one no longer counts there).
    one = stub.RevokeConsent(revoke(loc, contact, address=PHONE_RAW, note="asked"), timeout=T)
    assert one.changed and [(c.address, c.purpose, c.status) for c in one.revoked] == [
        (PHONE, MARKETING, pb.CONSENT_STATUS_REVOKED),
        (PHONE, INFORMATIONAL, pb.CONSENT_STATUS_REVOKED),
    ]
    assert one.revoked[0].revoked_by == "REVOKED"
    assert one.revoked[0].HasField("revoked_at")
    # One purpose of the channel (the contact's and every address's).
    marketing = stub.RevokeConsent(revoke(loc, contact, purpose=MARKETING), timeout=T)
    assert [(c.purpose, c.address) for c in marketing.revoked] == [(MARKETING, "")]
    # Then everything else on SMS; EMAIL untouched.
    rest = stub.RevokeConsent(revoke(loc, contact), timeout=T)
    assert [c.purpose for c in rest.revoked] == [INFORMATIONAL]
    nothing = stub.RevokeConsent(revoke(loc, contact), timeout=T)
    assert not nothing.changed and not nothing.revoked
    assert nothing.status.version == rest.status.version == 8
    by_channel = {
        (c.channel, c.purpose, c.address): c.status for c in status(stub, loc, contact).consents
    }
    assert by_channel == {
        (SMS, MARKETING, ""): pb.CONSENT_STATUS_REVOKED,
        (SMS, MARKETING, PHONE): pb.CONSENT_STATUS_REVOKED,
        (SMS, INFORMATIONAL, ""): pb.CONSENT_STATUS_REVOKED,
        (SMS, INFORMATIONAL, PHONE): pb.CONSENT_STATUS_REVOKED,
        (EMAIL, MARKETING, ""): pb.CONSENT_STATUS_ACTIVE,
    }
    entry = history(stub, loc, contact)[0]
    assert entry.kind == pb.CHANGE_KIND_CONSENT and not entry.enabled
    assert entry.consent.status == pb.CONSENT_STATUS_REVOKED
    assert entry.note == ""  # the last revoke had no note
    assert history(stub, loc, contact)[2].note == "asked"
    assert history(stub, loc, contact)[3].note == "asked"


def test_revoking_one_number_stops_sends_to_it_under_a_contact_wide_consent(
    stub: Any, loc: str, contact: str
) -> None:
    require(stub, loc, SMS)
    stub.RecordConsent(record(loc, contact), timeout=T)
    other = "+14155550199"
    assert check(stub, loc, contact, address=PHONE_RAW).allowed
    stub.RevokeConsent(revoke(loc, contact, address=PHONE_RAW), timeout=T)
    denied = check(stub, loc, contact, address=PHONE_RAW)
    assert denied.denial == pb.DENIAL_NO_CONSENT and "revoked" in denied.explanation
    # The contact's other numbers keep the contact-wide consent.
    assert check(stub, loc, contact, address=other).allowed


# --- the policy on the send path ------------------------------------------------------------


def test_policy_is_off_by_default_and_replaced_whole(stub: Any, loc: str) -> None:
    got = stub.GetConsentPolicy(pb.GetConsentPolicyRequest(location_id=loc), timeout=T).policy
    assert list(got.channels) == [] and got.double_opt_in_window_seconds == 86400
    answer = require(stub, loc, EMAIL, SMS, informational=True, window=3600)
    expected = pb.ConsentPolicy(
        channels=[
            pb.ChannelConsentPolicy(
                channel=EMAIL, require_marketing=True, require_informational=True
            ),
            pb.ChannelConsentPolicy(
                channel=SMS, require_marketing=True, require_informational=True
            ),
        ],
        double_opt_in_window_seconds=3600,
    )
    assert answer.policy == expected
    got = stub.GetConsentPolicy(pb.GetConsentPolicyRequest(location_id=loc), timeout=T).policy
    assert got == expected
    require(stub, loc, CALL)
    got = stub.GetConsentPolicy(pb.GetConsentPolicyRequest(location_id=loc), timeout=T).policy
    assert [c.channel for c in got.channels] == [CALL]
    assert got.double_opt_in_window_seconds == 86400


def test_concurrent_policy_updates_each_replace_it_whole(stub: Any, loc: str) -> None:
    choices = [SMS, EMAIL, CALL, pb.CHANNEL_WHATSAPP]
    updates = [
        policy_request(loc, (choices[i % 4], True, False), (choices[(i + 1) % 4], True, True))
        for i in range(16)
    ]
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda r: stub.UpdateConsentPolicy(r, timeout=T), updates))
    got = stub.GetConsentPolicy(pb.GetConsentPolicyRequest(location_id=loc), timeout=T).policy
    assert got in [a.policy for a in answers]
    assert len(got.channels) == 2


def test_no_consent_denies_marketing_until_recorded_and_again_after_stop(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    # Without a policy: allowed, as before consent existed.
    assert check(stub, loc, contact).allowed
    require(stub, loc, SMS)
    denied = check(stub, loc, contact, address=PHONE)
    assert not denied.allowed
    assert denied.denial == pb.DENIAL_NO_CONSENT
    assert "NO_CONSENT" in denied.explanation and "no consent recorded" in denied.explanation
    assert "RecordConsent" in denied.explanation
    assert not denied.denied_by and not denied.HasField("consent")
    # Other purposes and no purpose are not subject to the policy; nor is EMAIL.
    for purpose in (
        pb.PURPOSE_UNSPECIFIED,
        pb.PURPOSE_TRANSACTIONAL,
        pb.PURPOSE_INFORMATIONAL,
        pb.PURPOSE_COMPLIANCE_REPLY,
    ):
        assert check(stub, loc, contact, purpose=purpose).allowed, purpose
    assert check(stub, loc, contact, channel=EMAIL).allowed

    recorded = stub.RecordConsent(record(loc, contact), timeout=T)
    allowed = check(stub, loc, contact, address=PHONE)
    assert allowed.allowed and allowed.denial == pb.DENIAL_UNSPECIFIED
    assert allowed.consent == recorded.consent  # a caller with read sees its evidence
    assert "consent (WEB_FORM" in allowed.explanation
    assert allowed.version == 1

    # STOP: denied by the opt-out, and the consent is revoked in the same change.
    stopped = inbound(stub, loc, contact, "STOP")
    assert stopped.action == pb.KEYWORD_ACTION_OPTED_OUT
    (consent,) = stopped.status.consents
    assert consent.status == pb.CONSENT_STATUS_REVOKED
    assert consent.revoked_by == "SMS_OPT_OUT_KEYWORD"
    again = check(stub, loc, contact, address=PHONE)
    assert not again.allowed and again.denial == pb.DENIAL_DND_BLOCK
    kinds = [(e.kind, e.enabled, e.version) for e in history(stub, loc, contact)]
    # Newest first: the consent revoked after the opt-out's block and suppression, in one
    # transaction (one cursor per row, consecutive versions).
    assert kinds[:3] == [
        (pb.CHANGE_KIND_CONSENT, False, 4),
        (pb.CHANGE_KIND_BLOCK, True, 3),
        (pb.CHANGE_KIND_BLOCK, True, 2),
    ]
    times = {e.time.ToDatetime() for e in history(stub, loc, contact)[:3]}
    assert len(times) == 1
    # With the block lifted by a user the consent does not come back: NO_CONSENT again.
    lifted = stub.SetDnd(
        factories.disable(loc, contact, channel=SMS, source=pb.SOURCE_CONTACT, address=PHONE),
        timeout=T,
    )
    assert lifted.changed
    after = check(stub, loc, contact, address=PHONE)
    assert not after.allowed and after.denial == pb.DENIAL_NO_CONSENT
    assert "revoked (SMS_OPT_OUT_KEYWORD)" in after.explanation


def test_start_after_stop_records_the_senders_keyword_consent(
    stub: Any, loc: str, contact: str
) -> None:
    require(stub, loc, SMS, informational=True)
    inbound(stub, loc, contact, "STOP")
    started = inbound(stub, loc, contact, "START")
    assert started.action == pb.KEYWORD_ACTION_OPTED_IN and not started.sms_blocked
    made = {(c.purpose, c.address): c for c in started.status.consents}
    assert set(made) == {(MARKETING, PHONE), (INFORMATIONAL, PHONE)}
    for consent in made.values():
        assert consent.method == pb.CONSENT_METHOD_SMS_KEYWORD
        assert consent.kind == pb.CONSENT_KIND_EXPRESS
        assert consent.status == pb.CONSENT_STATUS_ACTIVE
        assert consent.source == pb.SOURCE_CONTACT and consent.actor_id == PHONE
        assert consent.evidence.disclosure_text == "START"
        assert consent.consent_source == "keyword:START"
    # The sender's consent covers checks naming the sender; not another number nor none.
    assert check(stub, loc, contact, address=PHONE).allowed
    assert check(stub, loc, contact, address=PHONE, purpose=pb.PURPOSE_INFORMATIONAL).allowed
    other = check(stub, loc, contact, address=OTHER_PHONE)
    assert not other.allowed and other.denial == pb.DENIAL_NO_CONSENT
    assert f"for {PHONE} only" in other.explanation
    assert not check(stub, loc, contact).allowed
    # START without an opt-out to lift records nothing more.
    repeated = inbound(stub, loc, contact, "START")
    assert not repeated.changed


def test_consent_that_expired_no_longer_counts(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    require(stub, loc, SMS)
    # Implied by an inquiry seven months ago: expired a month ago.
    answer = stub.RecordConsent(
        record(
            loc,
            contact,
            kind=pb.CONSENT_KIND_IMPLIED,
            implied_basis=pb.IMPLIED_BASIS_INQUIRY,
            captured_at=ts(now() - dt.timedelta(days=213)),
        ),
        timeout=T,
    )
    assert answer.consent.status == pb.CONSENT_STATUS_EXPIRED
    denied = check(stub, loc, contact)
    assert not denied.allowed and denied.denial == pb.DENIAL_NO_CONSENT
    assert "has expired" in denied.explanation

    # An express consent with an expiry, counting until its stored expiry is moved past.
    other = new_id("contact")
    stub.RecordConsent(record(loc, other, expires_at=ts(now() + dt.timedelta(days=30))), timeout=T)
    assert check(stub, loc, other, send_at=soon()).allowed
    # A send planned after the expiry is not allowed by it.
    planned = check(stub, loc, other, send_at=ts(now() + dt.timedelta(days=31)))
    assert planned.denial == pb.DENIAL_NO_CONSENT and "has expired" in planned.explanation
    db.execute(
        "UPDATE dnd_consents SET expires_at = now() - interval '1 second' "
        "WHERE location_id = $1 AND contact_id = $2",
        loc,
        other,
    )
    refresh_state(db, loc, other)
    expired = check(stub, loc, other, fully_consistent=True)
    assert not expired.allowed and expired.denial == pb.DENIAL_NO_CONSENT
    shown = status(stub, loc, other, fully_consistent=True)
    assert [c.status for c in shown.consents] == [pb.CONSENT_STATUS_EXPIRED]


def test_batch_check_send_applies_the_policy(stub: Any, loc: str) -> None:
    require(stub, loc, SMS)
    with_consent, without = new_id("contact"), new_id("contact")
    stub.RecordConsent(record(loc, with_consent), timeout=T)
    answer = stub.BatchCheckSend(
        factories.batch_check(loc, [with_consent, without], purpose=pb.PURPOSE_MARKETING),
        timeout=T,
    )
    assert [(r.allowed, r.denial) for r in answer.results] == [
        (True, pb.DENIAL_UNSPECIFIED),
        (False, pb.DENIAL_NO_CONSENT),
    ]
    v1 = stub.BatchCheckSend(factories.batch_check(loc, [with_consent, without]), timeout=T)
    assert all(r.allowed for r in v1.results)


def test_policy_update_acts_at_once_on_this_replica(stub: Any, loc: str, contact: str) -> None:
    assert check(stub, loc, contact).allowed  # the policy (none) is now cached
    require(stub, loc, SMS)
    assert check(stub, loc, contact).denial == pb.DENIAL_NO_CONSENT
    stub.UpdateConsentPolicy(pb.UpdateConsentPolicyRequest(location_id=loc), timeout=T)
    assert check(stub, loc, contact).allowed


def test_informational_policy(stub: Any, loc: str, contact: str) -> None:
    require(stub, loc, SMS, informational=True)
    denied = check(stub, loc, contact, purpose=pb.PURPOSE_INFORMATIONAL)
    assert denied.denial == pb.DENIAL_NO_CONSENT
    assert "INFORMATIONAL consent on SMS" in denied.explanation
    stub.RecordConsent(record(loc, contact), timeout=T)  # marketing does not cover it
    assert not check(stub, loc, contact, purpose=pb.PURPOSE_INFORMATIONAL).allowed
    stub.RecordConsent(record(loc, contact, purpose=INFORMATIONAL), timeout=T)
    assert check(stub, loc, contact, purpose=pb.PURPOSE_INFORMATIONAL).allowed


# --- double opt-in --------------------------------------------------------------------------


def test_double_opt_in_confirmed_by_yes_within_the_window(
    stub: Any, loc: str, contact: str
) -> None:
    require(stub, loc, SMS, window=3600)
    answer = stub.RecordConsent(
        record(loc, contact, method=pb.CONSENT_METHOD_DOUBLE_OPT_IN, pending=True), timeout=T
    )
    pending = answer.consent
    assert pending.status == pb.CONSENT_STATUS_PENDING
    window = pending.confirm_by.ToDatetime() - pending.captured_at.ToDatetime()
    assert window == dt.timedelta(hours=1)
    assert "until the contact confirms" in answer.explanation
    denied = check(stub, loc, contact, send_at=soon())
    assert denied.denial == pb.DENIAL_NO_CONSENT
    assert "waiting for the contact's confirmation" in denied.explanation

    # YES acts although the contact has no SMS DND: a double opt-in waits.
    yes = inbound(stub, loc, contact, "Yes")
    assert yes.action == pb.KEYWORD_ACTION_OPTED_IN and yes.changed
    (confirmed,) = yes.status.consents
    assert confirmed.status == pb.CONSENT_STATUS_ACTIVE
    assert confirmed.method == pb.CONSENT_METHOD_DOUBLE_OPT_IN
    assert confirmed.captured_at == pending.captured_at
    assert check(stub, loc, contact).allowed
    entry = history(stub, loc, contact)[0]
    assert entry.kind == pb.CHANGE_KIND_CONSENT and entry.source == pb.SOURCE_CONTACT
    assert entry.consent.status == pb.CONSENT_STATUS_ACTIVE
    # Once confirmed, YES is no keyword again.
    assert inbound(stub, loc, contact, "YES").action == pb.KEYWORD_ACTION_NONE


def test_double_opt_in_not_confirmed_in_time_expires(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    require(stub, loc, SMS, window=3600)
    # Sent two hours ago with a one-hour window: already expired.
    answer = stub.RecordConsent(
        record(
            loc,
            contact,
            method=pb.CONSENT_METHOD_DOUBLE_OPT_IN,
            pending=True,
            captured_at=ts(now() - dt.timedelta(hours=2)),
        ),
        timeout=T,
    )
    assert answer.consent.status == pb.CONSENT_STATUS_EXPIRED
    late = inbound(stub, loc, contact, "YES")
    assert late.action == pb.KEYWORD_ACTION_NONE and not late.changed
    assert [c.status for c in late.status.consents] == [pb.CONSENT_STATUS_EXPIRED]
    denied = check(stub, loc, contact)
    assert denied.denial == pb.DENIAL_NO_CONSENT and "has expired" in denied.explanation

    # One sent now, its window then moved past in the database: START comes too late too.
    other = new_id("contact")
    stub.RecordConsent(
        record(loc, other, method=pb.CONSENT_METHOD_DOUBLE_OPT_IN, pending=True), timeout=T
    )
    db.execute(
        "UPDATE dnd_consents SET confirm_by = now() - interval '1 second' "
        "WHERE location_id = $1 AND contact_id = $2",
        loc,
        other,
    )
    refresh_state(db, loc, other)
    start = stub.ProcessInboundMessage(
        factories.inbound(loc, other, "START", from_address=PHONE), timeout=T
    )
    assert not start.changed
    shown = status(stub, loc, other, fully_consistent=True)
    assert [c.status for c in shown.consents] == [pb.CONSENT_STATUS_EXPIRED]


def test_double_opt_in_of_another_number_is_not_confirmed(
    stub: Any, loc: str, contact: str
) -> None:
    stub.RecordConsent(
        record(
            loc,
            contact,
            method=pb.CONSENT_METHOD_DOUBLE_OPT_IN,
            pending=True,
            address=OTHER_PHONE,
        ),
        timeout=T,
    )
    yes = inbound(stub, loc, contact, "YES")  # from PHONE
    assert yes.action == pb.KEYWORD_ACTION_NONE and not yes.changed


# --- the change stream -----------------------------------------------------------------------


def test_consent_changes_are_streamed_without_evidence_and_filtered_by_kind(
    server: ServerProcess, stub: Any, loc: str, contact: str
) -> None:
    codec = cursor_codec(server.database_url)
    requests = {
        "consent": factories.watch(loc, kinds=[pb.CHANGE_KIND_CONSENT]),
        "block": factories.watch(loc, kinds=[pb.CHANGE_KIND_BLOCK]),
        "all": factories.watch(loc),
    }
    watchers = {name: Watcher(server.addr, request) for name, request in requests.items()}
    try:
        for watcher in watchers.values():
            assert watcher.wait_bookmarks(1), watcher.error
        start = watchers["all"].last_cursor
        recorded = stub.RecordConsent(record(loc, contact), timeout=T)
        stopped = inbound(stub, loc, contact, "STOP")
        seen = {name: w.wait_past(stopped.cursor, codec) for name, w in watchers.items()}
    finally:
        for watcher in watchers.values():
            watcher.close()
    assert [e.version for e in seen["all"]] == [1, 2, 3, 4]
    assert [e.version for e in seen["block"]] == [2, 3]
    assert all(e.kind == pb.CHANGE_KIND_BLOCK for e in seen["block"])
    first, revoked = seen["consent"]
    assert (first.kind, first.enabled, first.version) == (pb.CHANGE_KIND_CONSENT, True, 1)
    assert first.cursor == recorded.cursor
    assert first.reason == pb.REASON_UNSPECIFIED and first.scope.channel == SMS
    assert first.direction == pb.DIRECTION_OUTBOUND and first.source == pb.SOURCE_USER
    expected = pb.Consent()
    expected.CopyFrom(recorded.consent)
    expected.ClearField("evidence")
    assert first.consent == expected  # no evidence on the stream
    assert not first.consent.HasField("evidence")
    assert (revoked.enabled, revoked.consent.status) == (False, pb.CONSENT_STATUS_REVOKED)
    assert revoked.consent.revoked_by == "SMS_OPT_OUT_KEYWORD"
    assert revoked.source == pb.SOURCE_CONTACT

    # Read back from the log (a resumed stream) they are the same.
    resumed = factories.watch(loc, kinds=[pb.CHANGE_KIND_CONSENT], after_cursor=start)
    with Watcher(server.addr, resumed) as watcher:
        again = watcher.wait_past(stopped.cursor, codec)
    assert again == seen["consent"]


def test_watch_refuses_an_unknown_kind(stub: Any) -> None:
    stream = stub.WatchChanges(factories.watch(kinds=[pb.CHANGE_KIND_CONSENT, 9]), timeout=T)
    with pytest.raises(grpc.RpcError) as caught:
        next(stream)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == ["kinds[1]"]


# --- validation -----------------------------------------------------------------------------

FUTURE = now() + dt.timedelta(hours=1)

INVALID_RECORDS: list[tuple[str, dict[str, Any], str]] = [
    ("location_id", {"location_id": ""}, "required"),
    ("contact_id", {"contact_id": " x"}, "whitespace"),
    ("channel", {"channel": pb.CHANNEL_UNSPECIFIED}, "required"),
    ("channel", {"channel": 99}, "unknown value 99"),
    ("purpose", {"purpose": pb.CONSENT_PURPOSE_UNSPECIFIED}, "CONSENT_PURPOSE_MARKETING"),
    ("method", {"method": pb.CONSENT_METHOD_UNSPECIFIED}, "CONSENT_METHOD_WEB_FORM"),
    ("kind", {"kind": 7}, "unknown value 7"),
    ("implied_basis", {"implied_basis": 9}, "unknown value 9"),
    ("source", {"source": pb.SOURCE_UNSPECIFIED}, "required"),
    ("source", {"source": pb.SOURCE_SYSTEM}, "SYSTEM may not record consent"),
    ("pending", {"pending": True}, "only a DOUBLE_OPT_IN consent"),
    ("kind", {"kind": pb.CONSENT_KIND_IMPLIED}, "needs expires_at or implied_basis"),
    (
        "implied_basis",
        {"implied_basis": pb.IMPLIED_BASIS_PURCHASE},
        "only IMPLIED consent rests on an implied basis",
    ),
    ("captured_at", {"captured_at": ts(FUTURE)}, "in the future"),
    ("captured_at", {"captured_at": Timestamp(seconds=-(10**12))}, "not a valid time"),
    ("expires_at", {"expires_at": ts(now() - dt.timedelta(days=1))}, "after captured_at"),
    (
        "expires_at",
        {
            "captured_at": ts(now() - dt.timedelta(days=2)),
            "expires_at": ts(now() - dt.timedelta(days=3)),
        },
        "after captured_at",
    ),
    ("address", {"address": "not a phone"}, "not a phone number"),
    ("address", {"channel": EMAIL, "address": "nobody"}, "not an email address"),
    ("actor_id", {"actor_id": "a" * 129}, "at most 128"),
    ("evidence.form_url", {"evidence": pb.ConsentEvidence(form_url="u" * 2049)}, "2048"),
    (
        "evidence.disclosure_text",
        {"evidence": pb.ConsentEvidence(disclosure_text="d" * 4001)},
        "4000",
    ),
    (
        "evidence.disclosure_version",
        {"evidence": pb.ConsentEvidence(disclosure_version="v" * 65)},
        "64",
    ),
    ("evidence.ip_address", {"evidence": pb.ConsentEvidence(ip_address="1" * 46)}, "45"),
    ("evidence.user_agent", {"evidence": pb.ConsentEvidence(user_agent="m" * 513)}, "512"),
    (
        "evidence.recording_ref",
        {"evidence": pb.ConsentEvidence(recording_ref="r" * 513)},
        "512",
    ),
    (
        "evidence.ip_address",
        {"evidence": pb.ConsentEvidence(ip_address="1.2.3.4\x00")},
        "control characters",
    ),
    ("consent_source", {"consent_source": "s" * 257}, "at most 256"),
    ("consent_source", {"consent_source": "a\nb"}, "control characters"),
    ("expected_version", {"expected_version": -1}, ">= 0"),
    ("idempotency_key", {"idempotency_key": "k" * 129}, "at most 128"),
]


@pytest.mark.parametrize(
    ("field", "change", "says"),
    INVALID_RECORDS,
    ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(INVALID_RECORDS)],
)
def test_invalid_record_consent_is_refused_naming_the_field(
    stub: Any, db: Database, loc: str, contact: str, field: str, change: dict[str, Any], says: str
) -> None:
    request = record(loc, contact, **change)
    error = failure(stub.RecordConsent, request)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error
    assert bad_fields(error) == [field], error.details()
    assert says in (error.details() or ""), error.details()
    assert error_details(error)["ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert written(db, loc) == (0, 0, 0)


def test_every_problem_of_a_record_is_reported_at_once(stub: Any, db: Database, loc: str) -> None:
    request = pb.RecordConsentRequest(location_id=loc, contact_id="c", pending=True)
    error = failure(stub.RecordConsent, request)
    assert set(bad_fields(error)) == {"channel", "purpose", "method", "source"}
    assert written(db, loc) == (0, 0, 0)


def test_captured_at_within_the_clock_skew_is_accepted(stub: Any, loc: str, contact: str) -> None:
    ahead = now() + dt.timedelta(minutes=2)
    answer = stub.RecordConsent(record(loc, contact, captured_at=ts(ahead)), timeout=T)
    assert answer.consent.captured_at.ToDatetime(dt.UTC) == ahead


INVALID_REVOKES: list[tuple[str, dict[str, Any]]] = [
    ("location_id", {"location_id": ""}),
    ("channel", {"channel": pb.CHANNEL_UNSPECIFIED}),
    ("purpose", {"purpose": 5}),
    ("source", {"source": pb.SOURCE_UNSPECIFIED}),
    ("source", {"source": pb.SOURCE_SYSTEM}),
    ("address", {"address": "12"}),
    ("actor_id", {"actor_id": "a" * 129}),
    ("note", {"note": "n" * 1001}),
    ("idempotency_key", {"idempotency_key": "a\tb"}),
]


@pytest.mark.parametrize(("field", "change"), INVALID_REVOKES, ids=lambda x: str(x))
def test_invalid_revoke_consent_is_refused_naming_the_field(
    stub: Any, db: Database, loc: str, contact: str, field: str, change: dict[str, Any]
) -> None:
    stub.RecordConsent(record(loc, contact), timeout=T)
    before = written(db, loc)
    error = failure(stub.RevokeConsent, revoke(loc, contact, **change))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == [field], error.details()
    assert written(db, loc) == before
    assert [c.status for c in status(stub, loc, contact).consents] == [pb.CONSENT_STATUS_ACTIVE]


def policy_request(loc: str, *entries: tuple[int, bool, bool], window: int = 0) -> Any:
    return pb.UpdateConsentPolicyRequest(
        location_id=loc,
        policy=pb.ConsentPolicy(
            channels=[
                pb.ChannelConsentPolicy(
                    channel=c,  # type: ignore[arg-type]
                    require_marketing=m,
                    require_informational=i,
                )
                for c, m, i in entries
            ],
            double_opt_in_window_seconds=window,
        ),
    )


INVALID_POLICIES: list[tuple[str, tuple[tuple[int, bool, bool], ...], int, str]] = [
    ("policy.channels[1].channel", ((SMS, True, False), (SMS, True, True)), 0, "more than once"),
    ("policy.channels[0].channel", ((pb.CHANNEL_UNSPECIFIED, True, False),), 0, "required"),
    ("policy.channels[0].channel", ((42, True, False),), 0, "unknown value 42"),
    (
        "policy.channels[1].require_informational",
        ((EMAIL, True, False), (SMS, False, True)),
        0,
        "needs it for MARKETING too",
    ),
    ("policy.double_opt_in_window_seconds", (), 59, "between 1 minute and 30 days"),
    ("policy.double_opt_in_window_seconds", (), 2_592_001, "between 1 minute and 30 days"),
    ("policy.double_opt_in_window_seconds", (), -1, "between 60 and 2592000"),
    ("policy.double_opt_in_window_seconds", (), 2**62, "between 60 and 2592000"),
    ("location_id", (), 0, "required"),
]


@pytest.mark.parametrize(
    ("field", "entries", "window", "says"),
    INVALID_POLICIES,
    ids=[f"{f}-{i}" for i, (f, _, _, _) in enumerate(INVALID_POLICIES)],
)
def test_invalid_policy_is_refused_naming_the_field(
    stub: Any, db: Database, loc: str, field: str, entries: Any, window: int, says: str
) -> None:
    require(stub, loc, CALL)
    target = "" if field == "location_id" else loc
    error = failure(stub.UpdateConsentPolicy, policy_request(target, *entries, window=window))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == [field], error.details()
    assert says in (error.details() or "")
    got = stub.GetConsentPolicy(pb.GetConsentPolicyRequest(location_id=loc), timeout=T).policy
    assert [c.channel for c in got.channels] == [CALL]
    assert got.double_opt_in_window_seconds == 86400


def test_window_bounds_are_accepted(stub: Any, loc: str) -> None:
    for seconds in (60, 2_592_000):
        answer = stub.UpdateConsentPolicy(policy_request(loc, window=seconds), timeout=T)
        assert answer.policy.double_opt_in_window_seconds == seconds


def test_get_consent_policy_needs_a_valid_location(stub: Any) -> None:
    error = failure(stub.GetConsentPolicy, pb.GetConsentPolicyRequest(location_id=""))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["location_id"]
