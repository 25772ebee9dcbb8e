"""The typed Python client against a real server: every method of ``DndClient`` and
``AsyncDndClient`` (each test body runs on both through one awaitable adapter, tests/clients.py),
typed errors with their details, watch filters and bookmarks, and the client's dependencies
(grpcio, protobuf, grpcio-status only). tests/e2e/test_client_restarts.py restarts servers
under the clients."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import subprocess
import sys
import time
import uuid

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_client import (
    AsyncDndClient,
    ChangeKind,
    Channel,
    ClearNotPermitted,
    ConsentEvidence,
    ConsentKind,
    ConsentMethod,
    ConsentPurpose,
    ConsentStatus,
    DeadlineExceeded,
    Denial,
    Direction,
    DndAction,
    DndClient,
    DndError,
    EmailEvent,
    FieldViolation,
    ImpliedBasis,
    InvalidArgument,
    Purpose,
    Reason,
    Refusal,
    SendKind,
    Source,
    VersionMismatch,
)
from dnd_client.types import name_of

from tests.clients import KINDS, Client, Follow, disable, enable, expect_watch_error, first_events
from tests.support import REPO, Database, ServerProcess, new_id


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# --- every method, both clients ----------------------------------------------------------


async def test_get_status_of_a_contact_never_seen(
    kind: str, server: ServerProcess, loc: str
) -> None:
    async with Client(kind, server.addr) as dnd:
        status = await dnd.get_status(loc, "nobody")
    assert isinstance(status, pb.ContactStatus)
    assert (status.location_id, status.contact_id, status.version) == (loc, "nobody", 0)
    assert status.outbound == pb.DND_STATUS_OFF and status.inbound == pb.DND_STATUS_OFF
    assert not status.blocks and not status.blocked_channels
    assert not status.HasField("updated_at")


async def test_set_dnd_on_every_scope(
    kind: str, server: ServerProcess, db: Database, loc: str, contact: str
) -> None:
    async with Client(kind, server.addr) as dnd:
        sms = await dnd.set_dnd(
            loc,
            contact,
            **enable(channel=Channel.SMS),
            actor_id="user-7",
            note="asked by phone",
            evidence="call 12",
            provider_detail="crm",
        )
        assert isinstance(sms, pb.SetDndResponse)
        assert sms.changed and sms.cursor
        assert sms.status.version == 1 and sms.status.outbound == pb.DND_STATUS_PARTIAL
        assert list(sms.status.blocked_channels) == [Channel.SMS]
        [added] = sms.affected_blocks
        assert (added.direction, added.scope.channel, added.reason, added.source) == (
            Direction.OUTBOUND,
            Channel.SMS,
            Reason.MANUAL,
            Source.USER,
        )
        assert (added.actor_id, added.note, added.evidence, added.provider_detail) == (
            "user-7",
            "asked by phone",
            "call 12",
            "crm",
        )

        again = await dnd.set_dnd(loc, contact, **enable(channel=Channel.SMS))
        assert not again.changed and again.status.version == 1 and not again.affected_blocks

        everything = await dnd.set_dnd(
            loc, contact, **enable(all_channels=True), expected_version=1
        )
        assert everything.changed and everything.status.outbound == pb.DND_STATUS_ON
        assert everything.affected_blocks[0].scope.all_channels

        inbound = await dnd.set_dnd(
            loc, contact, **enable(direction=Direction.INBOUND, source=Source.WORKFLOW)
        )
        assert inbound.status.inbound == pb.DND_STATUS_ON and inbound.status.version == 3
        assert inbound.affected_blocks[0].source == Source.WORKFLOW

        status = await dnd.get_status(loc, contact)
        assert status.version == 3 and len(status.blocks) == 3

        cleared = await dnd.set_dnd(loc, contact, **disable(all_channels=True))
        assert cleared.changed and len(cleared.affected_blocks) == 2
        assert cleared.status.outbound == pb.DND_STATUS_OFF
        assert cleared.status.inbound == pb.DND_STATUS_ON
        inbound_off = await dnd.set_dnd(loc, contact, **disable(direction=Direction.INBOUND))
        assert inbound_off.status.inbound == pb.DND_STATUS_OFF and not inbound_off.status.blocks

        # An opt-out carrying the address suppresses the address too (normalised to E.164).
        stop = await dnd.set_dnd(
            loc,
            "texter",
            action=DndAction.ENABLE,
            source=Source.CONTACT,
            channel=Channel.SMS,
            reason=Reason.SMS_OPT_OUT_KEYWORD,
            address="(415) 555-0100",
        )
        assert [s.address for s in stop.status.address_suppressions] == ["+14155550100"]
        shown = await dnd.get_status(loc, "texter", phone_numbers=["+14155550100"])
        assert [(s.address, s.contact_id) for s in shown.address_suppressions] == [
            ("+14155550100", "texter")
        ]
        assert not (await dnd.get_status(loc, "texter")).address_suppressions
    assert db.changes(loc) == 8  # 3 enables, 2 + 1 clears, an opt-out and its address


async def test_set_dnd_scope_mistakes_raise_before_any_call(
    kind: str, server: ServerProcess, db: Database, loc: str
) -> None:
    async with Client(kind, server.addr) as dnd:
        with pytest.raises(ValueError, match="inbound"):
            await dnd.set_dnd(loc, "c", **enable(direction=Direction.INBOUND, channel=Channel.SMS))
        with pytest.raises(ValueError, match="exactly one"):
            await dnd.set_dnd(loc, "c", **enable())
        with pytest.raises(ValueError, match="exactly one"):
            await dnd.set_dnd(loc, "c", **enable(channel=Channel.SMS, all_channels=True))
    assert db.changes(loc) == 0


async def test_check_send(kind: str, server: ServerProcess, loc: str) -> None:
    async with Client(kind, server.addr) as dnd:
        fresh = await dnd.check_send(loc, "c", Channel.SMS)
        assert isinstance(fresh, pb.CheckSendResponse)
        assert fresh.allowed and fresh.version == 0
        assert fresh.explanation == "allowed: no active DND covers outbound SMS"

        await dnd.set_dnd(loc, "c", **enable(channel=Channel.SMS, actor_id="user-7"))
        denied = await dnd.check_send(loc, "c", Channel.SMS, send_kind=SendKind.AUTOMATED)
        assert not denied.allowed and denied.version == 1
        assert [(b.reason, b.actor_id) for b in denied.denied_by] == [(Reason.MANUAL, "user-7")]
        assert denied.explanation.startswith("denied: outbound SMS is blocked by MANUAL on SMS")
        manual = await dnd.check_send(loc, "c", Channel.SMS, send_kind=SendKind.MANUAL)
        assert not manual.allowed, "manual and automated sends are blocked alike"
        assert (await dnd.check_send(loc, "c", Channel.EMAIL)).allowed

        await dnd.set_dnd(loc, "c", **enable(direction=Direction.INBOUND))
        inbound = await dnd.check_send(loc, "c", Channel.CALL, direction=Direction.INBOUND)
        assert not inbound.allowed and inbound.denied_by[0].direction == Direction.INBOUND
        assert (await dnd.check_send(loc, "c", Channel.CALL)).allowed

        # A suppressed address denies the send to whichever contact holds it.
        await dnd.process_inbound_message(loc, "owner", "STOP", from_address="+14155550111")
        other = await dnd.check_send(loc, "other", Channel.SMS, address="+1 415 555 0111")
        assert not other.allowed and not other.denied_by
        assert [(s.address, s.contact_id) for s in other.denied_by_address] == [
            ("+14155550111", "owner")
        ]
        assert (await dnd.check_send(loc, "other", Channel.SMS)).allowed


async def test_process_inbound_message(
    kind: str, server: ServerProcess, db: Database, loc: str
) -> None:
    key = f"sms-in-{uuid.uuid4().hex}"
    async with Client(kind, server.addr) as dnd:
        stop = await dnd.process_inbound_message(
            loc, "c", " Stop! ", from_address="(415) 555-0122", idempotency_key=key
        )
        assert isinstance(stop, pb.ProcessInboundMessageResponse)
        assert stop.action == pb.KEYWORD_ACTION_OPTED_OUT and stop.matched_keyword == "STOP"
        assert stop.changed and stop.sms_blocked and stop.deliver_to_inbox
        assert [b.reason for b in stop.sms_blocked_by] == [Reason.SMS_OPT_OUT_KEYWORD]
        assert [s.address for s in stop.status.address_suppressions] == ["+14155550122"]
        changes = db.changes(loc)

        replay = await dnd.process_inbound_message(
            loc, "c", " Stop! ", from_address="(415) 555-0122", idempotency_key=key
        )
        assert replay.cursor == stop.cursor and replay.changed, "the first answer, replayed"
        assert db.changes(loc) == changes
        with pytest.raises(InvalidArgument):
            await dnd.process_inbound_message(loc, "c", "START", idempotency_key=key)

        help_ = await dnd.process_inbound_message(loc, "c", "help")
        assert help_.action == pb.KEYWORD_ACTION_HELP and not help_.changed
        email = await dnd.process_inbound_message(loc, "c", "START", channel=Channel.EMAIL)
        assert email.action == pb.KEYWORD_ACTION_NONE and not email.changed

        start = await dnd.process_inbound_message(loc, "c", "START", from_address="+14155550122")
        assert start.action == pb.KEYWORD_ACTION_OPTED_IN and start.changed
        assert not start.sms_blocked and start.status.outbound == pb.DND_STATUS_OFF
        assert (await dnd.check_send(loc, "x", Channel.SMS, address="+14155550122")).allowed


async def test_report_sms_delivery_failure(
    kind: str, server: ServerProcess, db: Database, loc: str
) -> None:
    async with Client(kind, server.addr) as dnd:
        permanent = await dnd.report_sms_delivery_failure(
            loc,
            "c1",
            provider="twilio",
            error_code="30004",
            to_address="+14155550133",
            idempotency_key=f"twilio-{uuid.uuid4().hex}",
        )
        assert isinstance(permanent, pb.ReportSmsDeliveryFailureResponse)
        assert permanent.outcome == pb.EVENT_OUTCOME_APPLIED and permanent.changed
        assert permanent.reason == Reason.SMS_CARRIER_PERMANENT and permanent.cursor
        [block] = permanent.status.blocks
        assert (block.source, block.actor_id) == (Source.SYSTEM, "twilio")
        assert "30004" in block.provider_detail
        assert [s.address for s in permanent.status.address_suppressions] == ["+14155550133"]

        again = await dnd.report_sms_delivery_failure(
            loc, "c1", provider="twilio", error_code="30004"
        )
        assert again.outcome == pb.EVENT_OUTCOME_ALREADY_ACTIVE and not again.changed

        temporary = await dnd.report_sms_delivery_failure(
            loc, "c2", provider="twilio", error_code="30003"
        )
        assert temporary.reason == Reason.SMS_CARRIER_TEMPORARY and temporary.changed

        unknown = await dnd.report_sms_delivery_failure(
            loc, "c3", provider="twilio", error_code="12345"
        )
        assert unknown.outcome == pb.EVENT_OUTCOME_IGNORED and not unknown.changed
        assert unknown.explanation.startswith("ignored")
    assert (
        db.fetchval(
            "SELECT count(*) FROM dnd_changes WHERE location_id = $1 AND contact_id = 'c3'", loc
        )
        == 0
    )


EMAIL_EFFECTS = {
    EmailEvent.BOUNCE: Reason.EMAIL_HARD_BOUNCE,
    EmailEvent.GENERIC_FAILURE: Reason.EMAIL_GENERIC_FAILURE,
    EmailEvent.SUPPRESS_BOUNCE: Reason.EMAIL_SUPPRESS_BOUNCE,
    EmailEvent.SUPPRESS_UNSUBSCRIBE: Reason.EMAIL_SUPPRESS_UNSUBSCRIBE,
    EmailEvent.SUPPRESS_COMPLAINT: Reason.EMAIL_SUPPRESS_COMPLAINT,
    EmailEvent.SPAM_COMPLAINT: Reason.EMAIL_SPAM_COMPLAINT,
    EmailEvent.UNSUBSCRIBE_LINK: Reason.EMAIL_UNSUBSCRIBE_LINK,
    EmailEvent.LIST_UNSUBSCRIBE_POST: Reason.EMAIL_UNSUBSCRIBE_LINK,
}


async def test_report_email_event(kind: str, server: ServerProcess, loc: str) -> None:
    async with Client(kind, server.addr) as dnd:
        for event, reason in EMAIL_EFFECTS.items():
            contact = f"c-{event.name.lower()}"
            address = f" {event.name.title()}@Example.com "
            answer = await dnd.report_email_event(
                loc,
                contact,
                provider="mailgun",
                event=event,
                to_address=address,
                provider_detail="550 5.1.1 mailbox unknown",
            )
            assert isinstance(answer, pb.ReportEmailEventResponse)
            assert (answer.outcome, answer.reason, answer.changed) == (
                pb.EVENT_OUTCOME_APPLIED,
                reason,
                True,
            ), event
            assert list(answer.status.blocked_channels) == [Channel.EMAIL]
            assert "550 5.1.1 mailbox unknown" in answer.status.blocks[0].provider_detail
            lower = address.strip().lower()
            status = await dnd.get_status(loc, contact, email_addresses=[lower])
            assert [(s.address, s.reason) for s in status.address_suppressions] == [
                (lower, reason)
            ], event
        soft = await dnd.report_email_event(
            loc, "soft", provider="mailgun", event=EmailEvent.TEMPORARY_FAILURE
        )
        assert soft.outcome == pb.EVENT_OUTCOME_IGNORED and not soft.changed
        assert (await dnd.get_status(loc, "soft")).version == 0


async def test_list_history_pages_newest_first(
    kind: str, server: ServerProcess, loc: str, contact: str
) -> None:
    async with Client(kind, server.addr) as dnd:
        cursors = []
        for i, channel in enumerate((Channel.SMS, Channel.EMAIL, Channel.CALL, Channel.GMB)):
            answer = await dnd.set_dnd(
                loc, contact, **enable(channel=channel), note=f"note {i}", actor_id=f"user-{i}"
            )
            cursors.append(answer.cursor)
        cleared = await dnd.set_dnd(loc, contact, **disable(channel=Channel.SMS), note="undo")
        cursors.append(cleared.cursor)

        seen = []
        token = ""
        pages = 0
        while True:
            page = await dnd.list_history(loc, contact, page_size=2, page_token=token)
            assert isinstance(page, pb.ListHistoryResponse)
            assert len(page.entries) <= 2
            seen.extend(page.entries)
            pages += 1
            token = page.next_page_token
            if not token:
                break
        default = await dnd.list_history(loc, contact)
    assert pages == 3
    assert [e.version for e in seen] == [5, 4, 3, 2, 1]
    assert [e.cursor for e in seen] == cursors[::-1]
    assert [e.enabled for e in seen] == [False, True, True, True, True]
    assert (seen[0].note, seen[-1].note, seen[-1].actor_id) == ("undo", "note 0", "user-0")
    assert [e.cursor for e in default.entries] == cursors[::-1] and not default.next_page_token


async def test_keyword_settings(kind: str, server: ServerProcess, loc: str) -> None:
    async with Client(kind, server.addr) as dnd:
        before = await dnd.get_keyword_settings(loc)
        assert isinstance(before, pb.GetKeywordSettingsResponse)
        assert not before.settings.extra_opt_out_words
        assert not before.settings.detect_revocation_phrases
        assert "STOP" in before.default_opt_out_words
        assert "START" in before.default_opt_in_words and "HELP" in before.help_words
        assert "stop texting me" in before.revocation_phrases

        ignored = await dnd.process_inbound_message(loc, "c1", "basta")
        assert ignored.action == pb.KEYWORD_ACTION_NONE

        updated = await dnd.update_keyword_settings(
            loc,
            extra_opt_out_words=["basta", "Fini"],
            extra_opt_in_words=["oui"],
            detect_revocation_phrases=True,
        )
        assert isinstance(updated, pb.KeywordSettings)
        assert list(updated.extra_opt_out_words) == ["BASTA", "FINI"]
        assert list(updated.extra_opt_in_words) == ["OUI"]
        after = await dnd.get_keyword_settings(loc)
        assert after.settings == updated

        out = await dnd.process_inbound_message(loc, "c1", "Basta")
        assert out.action == pb.KEYWORD_ACTION_OPTED_OUT and out.matched_keyword == "BASTA"
        back = await dnd.process_inbound_message(loc, "c1", "oui")
        assert back.action == pb.KEYWORD_ACTION_OPTED_IN
        phrase = await dnd.process_inbound_message(loc, "c2", "please stop texting me, thanks")
        assert phrase.action == pb.KEYWORD_ACTION_OPTED_OUT

        reset = await dnd.update_keyword_settings(loc)
        assert reset == pb.KeywordSettings()
        assert (await dnd.process_inbound_message(loc, "c3", "basta")).action == (
            pb.KEYWORD_ACTION_NONE
        )


async def test_consent_policy_record_and_revoke(
    kind: str, server: ServerProcess, db: Database, loc: str
) -> None:
    async with Client(kind, server.addr) as dnd:
        off = await dnd.get_consent_policy(loc)
        assert isinstance(off, pb.ConsentPolicy) and not off.channels
        policy = await dnd.update_consent_policy(
            loc,
            channels={Channel.SMS: [ConsentPurpose.MARKETING]},
            double_opt_in_window_seconds=600,
        )
        assert isinstance(policy, pb.ConsentPolicy)
        assert [(c.channel, c.require_marketing) for c in policy.channels] == [(Channel.SMS, True)]
        assert await dnd.get_consent_policy(loc) == policy

        denied = await dnd.check_send(loc, "c", Channel.SMS, purpose=Purpose.MARKETING)
        assert not denied.allowed and denied.denial == Denial.NO_CONSENT
        assert (await dnd.check_send(loc, "c", Channel.SMS, purpose=Purpose.TRANSACTIONAL)).allowed
        assert (await dnd.check_send(loc, "c", Channel.SMS)).allowed, "no purpose: DND only"

        captured = dt.datetime(2026, 1, 5, 10, 0, tzinfo=dt.UTC)
        recorded = await dnd.record_consent(
            loc,
            "c",
            Channel.SMS,
            ConsentPurpose.MARKETING,
            method=ConsentMethod.WEB_FORM,
            source=Source.USER,
            actor_id="form-12",
            captured_at=captured,
            evidence=ConsentEvidence(form_url="https://example.com/join", ip_address="203.0.113.9"),
            consent_source="spring",
            idempotency_key="form-12-1",
        )
        assert isinstance(recorded, pb.RecordConsentResponse)
        assert recorded.changed and recorded.cursor and recorded.status.version == 1
        consent = recorded.consent
        assert (consent.status, consent.kind, consent.method) == (
            ConsentStatus.ACTIVE,
            ConsentKind.EXPRESS,
            ConsentMethod.WEB_FORM,
        )
        assert consent.captured_at.ToDatetime(dt.UTC) == captured
        assert consent.evidence.ip_address == "203.0.113.9" and consent.consent_source == "spring"
        changes = db.changes(loc)
        replayed = await dnd.record_consent(
            loc,
            "c",
            Channel.SMS,
            ConsentPurpose.MARKETING,
            method=ConsentMethod.WEB_FORM,
            source=Source.USER,
            actor_id="form-12",
            captured_at=captured,
            evidence=ConsentEvidence(form_url="https://example.com/join", ip_address="203.0.113.9"),
            consent_source="spring",
            idempotency_key="form-12-1",
        )
        assert replayed.cursor == recorded.cursor and db.changes(loc) == changes

        allowed = await dnd.check_send(loc, "c", Channel.SMS, purpose=Purpose.MARKETING)
        assert allowed.allowed and allowed.consent.method == ConsentMethod.WEB_FORM
        batch = await dnd.batch_check_send(
            loc, Channel.SMS, ["c", "stranger"], purpose=Purpose.MARKETING
        )
        assert [(r.allowed, r.denial) for r in batch.results] == [
            (True, pb.DENIAL_UNSPECIFIED),
            (False, Denial.NO_CONSENT),
        ]

        month_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=30)
        implied = await dnd.record_consent(
            loc,
            "c",
            Channel.EMAIL,
            ConsentPurpose.INFORMATIONAL,
            method=ConsentMethod.API,
            source=Source.WORKFLOW,
            kind=ConsentKind.IMPLIED,
            implied_basis=ImpliedBasis.INQUIRY,
            captured_at=month_ago,
        )
        lasts = implied.consent.expires_at.ToDatetime(dt.UTC) - month_ago
        assert dt.timedelta(days=180) <= lasts <= dt.timedelta(days=185), "an inquiry: 6 months"
        assert implied.consent.status == ConsentStatus.ACTIVE
        old_purchase = await dnd.record_consent(
            loc,
            "c",
            Channel.CALL,
            ConsentPurpose.MARKETING,
            method=ConsentMethod.API,
            source=Source.WORKFLOW,
            implied_basis=ImpliedBasis.PURCHASE,
            kind=ConsentKind.IMPLIED,
            captured_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=800),
        )
        assert old_purchase.consent.status == ConsentStatus.EXPIRED, "a purchase: 2 years"

        revoked = await dnd.revoke_consent(
            loc, "c", Channel.SMS, source=Source.USER, note="asked by phone"
        )
        assert isinstance(revoked, pb.RevokeConsentResponse) and revoked.changed
        assert [(c.purpose, c.status, c.revoked_by) for c in revoked.revoked] == [
            (ConsentPurpose.MARKETING, ConsentStatus.REVOKED, "REVOKED")
        ]
        again = await dnd.check_send(loc, "c", Channel.SMS, purpose=Purpose.MARKETING)
        assert again.denial == Denial.NO_CONSENT
        statuses = {(c.channel, c.status) for c in (await dnd.get_status(loc, "c")).consents}
        assert statuses == {
            (Channel.SMS, ConsentStatus.REVOKED),
            (Channel.EMAIL, ConsentStatus.ACTIVE),
            (Channel.CALL, ConsentStatus.EXPIRED),
        }

        with pytest.raises(InvalidArgument) as bad:
            await dnd.update_consent_policy(
                loc, channels={Channel.SMS: [ConsentPurpose.INFORMATIONAL]}
            )
        assert bad.value.field_violations
        assert await dnd.get_consent_policy(loc) == policy, "a refused policy changes nothing"


async def test_marketing_only_opt_outs(kind: str, server: ServerProcess, loc: str) -> None:
    async with Client(kind, server.addr) as dnd:
        meta = await dnd.report_delivery_event(
            loc,
            "c",
            channel=Channel.WHATSAPP,
            provider="meta",
            code="user_preferences:stop_marketing",
            address="+14155550150",
            idempotency_key="meta-1",
        )
        assert isinstance(meta, pb.ReportDeliveryEventResponse)
        assert (meta.outcome, meta.reason, meta.changed) == (
            pb.EVENT_OUTCOME_APPLIED,
            Reason.WHATSAPP_MARKETING_OPT_OUT,
            True,
        )
        unknown = await dnd.report_delivery_event(
            loc, "c", channel=Channel.WHATSAPP, provider="meta", code="999999"
        )
        assert unknown.outcome == pb.EVENT_OUTCOME_IGNORED and not unknown.changed

        email = await dnd.report_email_event(
            loc,
            "c",
            provider="mailgun",
            event=EmailEvent.UNSUBSCRIBE_LINK,
            to_address="c@example.com",
            marketing_stream=True,
        )
        assert email.reason == Reason.EMAIL_MARKETING_UNSUBSCRIBE
        scoped = await dnd.set_dnd(loc, "c", **enable(channel=Channel.CALL), marketing_only=True)
        [call_block] = [b for b in scoped.affected_blocks]
        assert call_block.reason == Reason.MARKETING_OPT_OUT and call_block.scope.marketing_only

        for channel in (Channel.WHATSAPP, Channel.EMAIL, Channel.CALL):
            marketing = await dnd.check_send(loc, "c", channel, purpose=Purpose.MARKETING)
            assert marketing.denial == Denial.MARKETING_OPT_OUT, channel
            reminder = await dnd.check_send(loc, "c", channel, purpose=Purpose.INFORMATIONAL)
            assert reminder.allowed, channel
            assert not (await dnd.check_send(loc, "c", channel)).allowed, "unstated: marketing"


async def test_watch_filters_by_kind(kind: str, server: ServerProcess) -> None:
    loc = new_id("loc")
    async with Client(kind, server.addr) as dnd:
        marker = (await dnd.set_dnd(new_id("loc"), "m", **enable(channel=Channel.SMS))).cursor
        await dnd.set_dnd(loc, "c", **enable(channel=Channel.EMAIL))
        consent = await dnd.record_consent(
            loc,
            "c",
            Channel.SMS,
            ConsentPurpose.MARKETING,
            method=ConsentMethod.API,
            source=Source.USER,
        )
        [event] = await first_events(
            dnd, 1, location_ids=[loc], kinds=[ChangeKind.CONSENT], after_cursor=marker
        )
        assert event.cursor == consent.cursor and event.kind == ChangeKind.CONSENT
        assert (event.consent.channel, event.consent.status) == (
            Channel.SMS,
            ConsentStatus.ACTIVE,
        )
        assert not event.consent.HasField("evidence") or event.consent.evidence == (
            pb.ConsentEvidence()
        ), "the stream carries no evidence"
        [block] = await first_events(
            dnd, 1, location_ids=[loc], kinds=[ChangeKind.BLOCK], after_cursor=marker
        )
        assert block.kind == ChangeKind.BLOCK and block.scope.channel == Channel.EMAIL


# --- typed errors --------------------------------------------------------------------------


async def test_clear_not_permitted_lists_refusals(
    kind: str, server: ServerProcess, db: Database, loc: str
) -> None:
    async with Client(kind, server.addr) as dnd:
        await dnd.set_dnd(loc, "c", **enable(channel=Channel.SMS))
        await dnd.process_inbound_message(loc, "c", "STOP", from_address="+14155550144")
        changes = db.changes(loc)
        with pytest.raises(ClearNotPermitted) as caught:
            await dnd.set_dnd(loc, "c", **disable(channel=Channel.SMS), address="+14155550144")
        status = await dnd.get_status(loc, "c")
    error = caught.value
    assert isinstance(error, DndError)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION
    assert error.reason == "CLEAR_NOT_PERMITTED"
    assert str(error).startswith("FAILED_PRECONDITION: ")
    assert all(isinstance(r, Refusal) for r in error.refusals)
    by_subject = {r.subject: r for r in error.refusals}
    assert set(by_subject) == {"OUTBOUND/SMS", "ADDRESS/SMS/+14155550144"}
    for refusal in error.refusals:
        assert refusal.reason == "SMS_OPT_OUT_KEYWORD"
        assert "source USER may never clear SMS_OPT_OUT_KEYWORD" in refusal.description
        assert "START" in refusal.description and "SUPPORT" in refusal.description
    assert error.metadata["reasons"] == "SMS_OPT_OUT_KEYWORD"
    # Nothing changed: the manual block is still there too.
    assert db.changes(loc) == changes
    assert {b.reason for b in status.blocks} == {Reason.MANUAL, Reason.SMS_OPT_OUT_KEYWORD}


async def test_invalid_argument_names_each_field(
    kind: str, server: ServerProcess, db: Database, loc: str
) -> None:
    async with Client(kind, server.addr) as dnd:
        with pytest.raises(InvalidArgument) as caught:
            await dnd.set_dnd("", "x" * 200, **enable(channel=Channel.SMS))
        with pytest.raises(InvalidArgument) as wrong_reason:
            await dnd.set_dnd(
                loc, "c", **enable(channel=Channel.EMAIL, reason=Reason.SMS_OPT_OUT_KEYWORD)
            )
        with pytest.raises(InvalidArgument) as bad_page:
            await dnd.list_history(loc, "c", page_size=501)
    error = caught.value
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert all(isinstance(v, FieldViolation) for v in error.field_violations)
    described = {v.field: v.description for v in error.field_violations}
    assert set(described) == {"location_id", "contact_id"}
    assert "200 characters" in described["contact_id"] and "128" in described["contact_id"]
    assert described["location_id"]
    assert [v.field for v in wrong_reason.value.field_violations] == ["reason"]
    assert "SMS" in wrong_reason.value.field_violations[0].description
    assert [v.field for v in bad_page.value.field_violations] == ["page_size"]
    assert db.changes(loc) == 0


async def test_version_mismatch_carries_the_actual_version(
    kind: str, server: ServerProcess, db: Database, loc: str
) -> None:
    async with Client(kind, server.addr) as dnd:
        await dnd.set_dnd(loc, "c", **enable(channel=Channel.SMS))
        await dnd.set_dnd(loc, "c", **enable(channel=Channel.EMAIL))
        with pytest.raises(VersionMismatch) as caught:
            await dnd.set_dnd(loc, "c", **enable(channel=Channel.CALL), expected_version=1)
        applied = await dnd.set_dnd(
            loc,
            "c",
            **enable(channel=Channel.CALL),
            expected_version=int(caught.value.metadata["actual"]),
        )
    error = caught.value
    assert error.code == grpc.StatusCode.ABORTED and error.reason == "VERSION_MISMATCH"
    assert error.metadata["actual"] == "2" and error.metadata["expected"] == "1"
    assert applied.changed and applied.status.version == 3
    assert db.changes(loc) == 3


async def test_deadline_exceeded_is_typed(
    kind: str, server: ServerProcess, database_url: str, db: Database, loc: str
) -> None:
    # Another transaction holds the contact's row lock: the write waits past its deadline.
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            "INSERT INTO dnd_contacts (location_id, contact_id) VALUES ($1, 'busy')", loc
        )
        lock = conn.transaction()
        await lock.start()
        await conn.execute(
            "SELECT 1 FROM dnd_contacts WHERE location_id = $1 AND contact_id = 'busy' FOR UPDATE",
            loc,
        )
        async with Client(kind, server.addr) as dnd:
            started = time.monotonic()
            with pytest.raises(DeadlineExceeded) as caught:
                await dnd.set_dnd(loc, "busy", **enable(channel=Channel.SMS), timeout=0.5)
            assert time.monotonic() - started < 3
        # The server's own deadline (from its receipt of the call) ends a moment after the
        # client's: once it has ended the call (its log line), with the lock still held, the
        # write it abandoned can no longer land.
        await asyncio.to_thread(
            server.wait_log, {"event": "rpc", "method": "SetDnd", "location_id": loc}
        )
        await lock.rollback()
    finally:
        await conn.close()
    assert caught.value.code == grpc.StatusCode.DEADLINE_EXCEEDED
    assert db.changes(loc) == 0


def test_enums_are_the_protobuf_numbers() -> None:
    for cls, proto_enum, prefix in (
        (Channel, "Channel", "CHANNEL_"),
        (Direction, "Direction", "DIRECTION_"),
        (Reason, "Reason", "REASON_"),
        (Source, "Source", "SOURCE_"),
        (SendKind, "SendKind", "SEND_KIND_"),
        (EmailEvent, "EmailEvent", "EMAIL_EVENT_"),
        (DndAction, "DndAction", "DND_ACTION_"),
    ):
        values = pb.DESCRIPTOR.enum_types_by_name[proto_enum].values
        wanted = {v.name.removeprefix(prefix): v.number for v in values if v.number != 0}
        assert {m.name: m.value for m in cls} == wanted, cls  # type: ignore[attr-defined]
    assert name_of("Channel", Channel.SMS) == "SMS"
    assert name_of("Reason", Reason.EMAIL_SPAM_COMPLAINT) == "EMAIL_SPAM_COMPLAINT"


async def test_clients_close_their_channel(server: ServerProcess, loc: str) -> None:
    with DndClient(server.addr) as sync:
        assert sync.get_status(loc, "c").version == 0
    with pytest.raises(ValueError):
        sync.get_status(loc, "c")
    async with AsyncDndClient(server.addr) as aio:
        assert (await aio.get_status(loc, "c")).version == 0
    with pytest.raises(Exception) as caught:
        await aio.get_status(loc, "c")
    assert not isinstance(caught.value, AssertionError)


# --- watch ---------------------------------------------------------------------------------


async def test_watch_replays_and_filters(kind: str, server: ServerProcess) -> None:
    loc, other = new_id("loc"), new_id("loc")
    async with Client(kind, server.addr) as dnd:
        marker = (await dnd.set_dnd(other, "marker", **enable(channel=Channel.SMS))).cursor
        sms = (await dnd.set_dnd(loc, "c1", **enable(channel=Channel.SMS))).cursor
        email = await dnd.set_dnd(
            loc, "c2", action=DndAction.ENABLE, source=Source.WORKFLOW, channel=Channel.EMAIL
        )
        inbound = (await dnd.set_dnd(loc, "c3", **enable(direction=Direction.INBOUND))).cursor
        elsewhere = (await dnd.set_dnd(other, "c4", **enable(channel=Channel.EMAIL))).cursor

        everything = await first_events(dnd, 4, after_cursor=marker)
        assert [e.cursor for e in everything] == [sms, email.cursor, inbound, elsewhere]
        assert all(isinstance(e, pb.ChangeEvent) for e in everything), "no bookmarks unasked"
        first = everything[0]
        assert (first.location_id, first.contact_id, first.version, first.enabled) == (
            loc,
            "c1",
            1,
            True,
        )
        assert (first.scope.channel, first.reason, first.source) == (
            Channel.SMS,
            Reason.MANUAL,
            Source.USER,
        )
        assert first.outbound == pb.DND_STATUS_PARTIAL

        only_loc = await first_events(dnd, 3, location_ids=[loc], after_cursor=marker)
        assert [e.cursor for e in only_loc] == [sms, email.cursor, inbound]
        [by_channel] = await first_events(
            dnd, 1, location_ids=[loc], channels=[Channel.EMAIL], after_cursor=marker
        )
        assert by_channel.cursor == email.cursor
        [by_direction] = await first_events(
            dnd, 1, location_ids=[loc], directions=[Direction.INBOUND], after_cursor=marker
        )
        assert by_direction.cursor == inbound
        [by_source] = await first_events(dnd, 1, sources=[Source.WORKFLOW], after_cursor=marker)
        assert by_source.cursor == email.cursor
        resumed = await first_events(dnd, 2, location_ids=[loc], after_cursor=sms)
        assert [e.cursor for e in resumed] == [email.cursor, inbound]


async def test_watch_with_several_events_per_message(kind: str, server: ServerProcess) -> None:
    """Catching up with batching asked for, the server sends the ready events together; the
    client still yields them one by one, in order, each with its own cursor, and resumes
    after the last."""
    loc = new_id("loc")
    async with Client(kind, server.addr) as dnd:
        marker = (await dnd.set_dnd(loc, "c0", **enable(channel=Channel.SMS))).cursor
        cursors = [
            (await dnd.set_dnd(loc, f"c{i}", **enable(channel=Channel.EMAIL))).cursor
            for i in range(1, 6)
        ]
        batched = await first_events(
            dnd, 5, location_ids=[loc], after_cursor=marker, max_events_per_message=3
        )
        assert [e.cursor for e in batched] == cursors
        resumed = await first_events(
            dnd, 2, location_ids=[loc], after_cursor=cursors[2], max_events_per_message=1000
        )
        assert [e.cursor for e in resumed] == cursors[3:]


async def test_watch_from_now_with_bookmarks(kind: str, server: ServerProcess, loc: str) -> None:
    async with Client(kind, server.addr) as dnd:
        before = await dnd.set_dnd(loc, "old", **enable(channel=Channel.SMS))
        follow = Follow(dnd, location_ids=[loc])
        try:
            await follow.until(lambda: len(follow.bookmarks) >= 1)
            assert all(b.cursor for b in follow.bookmarks)
            written = [
                (await dnd.set_dnd(loc, f"c{i}", **enable(channel=Channel.SMS))).cursor
                for i in range(3)
            ]
            await follow.until(lambda: len(follow.events) >= 3)
            # Bookmarks keep coming while nothing happens (every 0.5 s on the test server).
            seen = len(follow.bookmarks)
            await follow.until(lambda: len(follow.bookmarks) >= seen + 2)
        finally:
            await follow.close()
    assert follow.cursors == written, "from now: the earlier change is not replayed"
    assert before.cursor not in follow.cursors


async def test_watch_rejects_a_foreign_cursor(kind: str, server: ServerProcess) -> None:
    async with Client(kind, server.addr) as dnd:
        error = await expect_watch_error(dnd, after_cursor="not-a-cursor")
    assert isinstance(error, InvalidArgument), "not retried for ever: raised"
    assert [v.field for v in error.field_violations] == ["after_cursor"]


# --- dependencies ----------------------------------------------------------------------------

_ISOLATED = """
import asyncio, importlib.metadata as md, json, re, sys

# opentelemetry: the optional `tracing` extra, which the client uses only when installed.
BLOCKED = ("asyncpg", "structlog", "dnd_server", "pgserver", "phonenumbers", "grpc_health",
           "grpc_reflection", "grpc_tools", "opentelemetry")
for name in BLOCKED:
    sys.modules[name] = None

import dnd_client
import dnd_client.cli
import dnd_client.importing
from dnd_client import AsyncDndClient, Channel, DndAction, DndClient, Source

addr, loc = sys.argv[1], sys.argv[2]
with DndClient(addr) as dnd:
    dnd.set_dnd(loc, "c", action=DndAction.ENABLE, source=Source.USER, channel=Channel.SMS)


async def main() -> int:
    async with AsyncDndClient(addr) as dnd:
        return (await dnd.get_status(loc, "c")).version


version = asyncio.run(main())
code = dnd_client.cli.main(["--addr", addr, "--json", "check", loc, "c", "--channel", "SMS"])

def canonical(name):
    return re.sub(r"[-_.]+", "-", name).lower()

allowed, todo = {"dnd-service"}, ["dnd-service"]
while todo:
    for requirement in md.requires(todo.pop()) or []:
        if "extra ==" in requirement:
            continue
        name = canonical(re.split(r"[<>=!~;\\[ ]", requirement, maxsplit=1)[0])
        if name not in allowed:
            allowed.add(name)
            todo.append(name)
owners = md.packages_distributions()
used = {}
for module, value in list(sys.modules.items()):
    top = module.split(".")[0]
    if value is None or top in sys.stdlib_module_names or top.startswith("_"):
        continue
    dists = {canonical(d) for d in owners.get(top, [])}
    if dists:
        used[top] = sorted(dists)
print(json.dumps({"version": version, "check_exit": code, "used": used,
                  "allowed": sorted(allowed)}))
"""


def test_client_needs_only_grpcio_protobuf_and_grpcio_status(
    server: ServerProcess, loc: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-c", _ISOLATED, server.addr, loc],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    check = json.loads(lines[0])
    report = json.loads(lines[-1])
    assert check["explanation"].startswith("denied:")
    assert report["version"] == 1 and report["check_exit"] == 1
    assert {"grpcio", "protobuf", "grpcio-status"} <= set(report["allowed"])
    assert not {"asyncpg", "structlog", "pgserver", "phonenumbers"} & set(report["allowed"])
    strays = {
        module: dists
        for module, dists in report["used"].items()
        if not set(dists) & set(report["allowed"])
    }
    assert not strays, strays
    requires = [r for r in _requires() if "extra ==" not in r]
    assert sorted(re.split(r"[<>=!~; ]", r)[0] for r in requires) == [
        "grpcio",
        "grpcio-status",
        "protobuf",
    ]


def _requires() -> list[str]:
    import importlib.metadata

    return importlib.metadata.requires("dnd-service") or []
