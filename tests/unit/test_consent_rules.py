"""Consent and purpose rules as pure functions (domain/consent.py): consent status over time,
implied expiry, coverage by address, the policy, the compliance allowance, and what an opt-out
revokes. The clock is a parameter: every window is tested at its edges."""

from __future__ import annotations

import datetime as dt

import pytest
from dnd_server.domain.consent import (
    COMPLIANCE_REPLY_WINDOW,
    ChannelPolicy,
    Consent,
    ConsentEvidence,
    ConsentKind,
    ConsentMethod,
    ConsentPolicy,
    ConsentPurpose,
    ConsentStatus,
    ImpliedBasis,
    Purpose,
    add_months,
    counting_consent,
    explain_no_consent,
    implied_expiry,
    reply_allowance,
    revoked_by_opt_out,
    validate_policy,
)
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Block, Channel, Direction, Reason, Source

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)
PHONE = "+15555550100"
OTHER = "+15555550199"


def consent(**changes: object) -> Consent:
    fields: dict[str, object] = {
        "channel": Channel.SMS,
        "purpose": ConsentPurpose.MARKETING,
        "method": ConsentMethod.WEB_FORM,
        "kind": ConsentKind.EXPRESS,
        "status": ConsentStatus.ACTIVE,
        "captured_at": T0,
        "source": Source.USER,
    }
    fields.update(changes)
    return Consent(**fields)  # type: ignore[arg-type]


def opt_out(reason: Reason = Reason.SMS_OPT_OUT_KEYWORD, **changes: object) -> Block:
    fields: dict[str, object] = {
        "direction": Direction.OUTBOUND,
        "scope": Channel.SMS,
        "reason": reason,
        "source": Source.CONTACT,
        "since": T0,
        "address": PHONE,
    }
    fields.update(changes)
    return Block(**fields)  # type: ignore[arg-type]


# --- status over time ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "extra", "at", "status"),
    [
        (ConsentStatus.ACTIVE, {}, T0 + dt.timedelta(days=9999), ConsentStatus.ACTIVE),
        (ConsentStatus.ACTIVE, {"expires_at": T0 + SECOND}, T0, ConsentStatus.ACTIVE),
        (ConsentStatus.ACTIVE, {"expires_at": T0 + SECOND}, T0 + SECOND, ConsentStatus.EXPIRED),
        (ConsentStatus.PENDING, {"confirm_by": T0 + SECOND}, T0, ConsentStatus.PENDING),
        (ConsentStatus.PENDING, {"confirm_by": T0 + SECOND}, T0 + SECOND, ConsentStatus.EXPIRED),
        (
            ConsentStatus.REVOKED,
            {"expires_at": T0 + SECOND},
            T0 + 2 * SECOND,
            ConsentStatus.REVOKED,
        ),
    ],
)
def test_status_at(
    stored: ConsentStatus, extra: dict[str, object], at: dt.datetime, status: ConsentStatus
) -> None:
    assert consent(status=stored, **extra).status_at(at) is status


@pytest.mark.parametrize(
    ("basis", "since", "ends"),
    [
        (ImpliedBasis.PURCHASE, T0, dt.datetime(2028, 3, 1, 12, 0, tzinfo=dt.UTC)),
        (ImpliedBasis.INQUIRY, T0, dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.UTC)),
        # A day the target month lacks is clamped to its last day.
        (
            ImpliedBasis.INQUIRY,
            dt.datetime(2026, 8, 31, tzinfo=dt.UTC),
            dt.datetime(2027, 2, 28, tzinfo=dt.UTC),
        ),
        (
            ImpliedBasis.PURCHASE,
            dt.datetime(2024, 2, 29, tzinfo=dt.UTC),
            dt.datetime(2026, 2, 28, tzinfo=dt.UTC),
        ),
    ],
)
def test_implied_consent_lasts_two_years_after_a_purchase_six_months_after_an_inquiry(
    basis: ImpliedBasis, since: dt.datetime, ends: dt.datetime
) -> None:
    assert implied_expiry(basis, since) == ends
    implied = consent(kind=ConsentKind.IMPLIED, expires_at=ends, captured_at=since)
    assert implied.status_at(ends - SECOND) is ConsentStatus.ACTIVE
    assert implied.status_at(ends) is ConsentStatus.EXPIRED


def test_add_months_across_years() -> None:
    assert add_months(dt.datetime(2026, 11, 30, tzinfo=dt.UTC), 3) == dt.datetime(
        2027, 2, 28, tzinfo=dt.UTC
    )
    assert add_months(dt.datetime(2026, 1, 15, tzinfo=dt.UTC), 12) == dt.datetime(
        2027, 1, 15, tzinfo=dt.UTC
    )


# --- which consent counts -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recorded", "address", "counts"),
    [
        (consent(), PHONE, True),  # contact-wide: every address
        (consent(), "", True),
        (consent(address=PHONE), PHONE, True),
        (consent(address=PHONE), OTHER, False),  # another number of the contact
        (consent(address=PHONE), "", False),  # the check names no address
        (consent(channel=Channel.EMAIL), PHONE, False),
        (consent(purpose=ConsentPurpose.INFORMATIONAL), PHONE, False),
        (consent(status=ConsentStatus.PENDING), PHONE, False),
        (consent(status=ConsentStatus.REVOKED), PHONE, False),
        (consent(expires_at=T0), PHONE, False),
    ],
)
def test_counting_consent(recorded: Consent, address: str, counts: bool) -> None:
    found = counting_consent([recorded], Channel.SMS, ConsentPurpose.MARKETING, address, T0)
    assert (found is recorded) is counts


@pytest.mark.parametrize(
    ("recorded", "address", "says"),
    [
        ((), PHONE, "no consent recorded"),
        ((consent(address=OTHER),), PHONE, f"for {OTHER} only"),
        ((consent(address=OTHER),), "", "names no address"),
        ((consent(status=ConsentStatus.PENDING, confirm_by=T0 + SECOND),), PHONE, "waiting"),
        ((consent(status=ConsentStatus.PENDING, confirm_by=T0),), PHONE, "expired"),
        ((consent(expires_at=T0),), PHONE, "expired"),
        (
            (consent(status=ConsentStatus.REVOKED, revoked_by="SMS_OPT_OUT_KEYWORD"),),
            PHONE,
            "revoked (SMS_OPT_OUT_KEYWORD)",
        ),
    ],
)
def test_no_consent_says_why_and_what_would_allow_it(
    recorded: tuple[Consent, ...], address: str, says: str
) -> None:
    text = explain_no_consent(recorded, Channel.SMS, ConsentPurpose.MARKETING, address, T0)
    assert text.startswith("denied: NO_CONSENT")
    assert says in text
    assert "RecordConsent" in text


# --- the policy -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rules", "purpose", "needs"),
    [
        (ChannelPolicy(), Purpose.MARKETING, None),
        (ChannelPolicy(marketing=True), Purpose.MARKETING, ConsentPurpose.MARKETING),
        (ChannelPolicy(marketing=True), Purpose.INFORMATIONAL, None),
        (
            ChannelPolicy(marketing=True, informational=True),
            Purpose.INFORMATIONAL,
            ConsentPurpose.INFORMATIONAL,
        ),
        (ChannelPolicy(marketing=True, informational=True), Purpose.TRANSACTIONAL, None),
        (ChannelPolicy(marketing=True, informational=True), Purpose.COMPLIANCE_REPLY, None),
        (ChannelPolicy(marketing=True, informational=True), None, None),
    ],
)
def test_policy_requires(
    rules: ChannelPolicy, purpose: Purpose | None, needs: ConsentPurpose | None
) -> None:
    policy = ConsentPolicy(channels={Channel.SMS: rules})
    assert policy.requires(Channel.SMS, purpose) is needs
    assert policy.requires(Channel.EMAIL, purpose) is None


def test_policy_refuses_informational_without_marketing_and_odd_windows() -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_policy(
            ConsentPolicy(
                channels={Channel.SMS: ChannelPolicy(informational=True)},
                double_opt_in_window=dt.timedelta(seconds=5),
            )
        )
    fields = {v.field for v in refused.value.violations}
    assert fields == {"channels[SMS].informational", "double_opt_in_window"}
    ok = ConsentPolicy(channels={Channel.SMS: ChannelPolicy(marketing=True, informational=True)})
    assert validate_policy(ok) is ok


# --- the compliance allowance ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("block", "channel", "address", "at", "allowed"),
    [
        (opt_out(), Channel.SMS, PHONE, T0, True),
        (opt_out(), Channel.SMS, PHONE, T0 + COMPLIANCE_REPLY_WINDOW - SECOND, True),
        (opt_out(), Channel.SMS, PHONE, T0 + COMPLIANCE_REPLY_WINDOW, False),  # 5 min: over
        (opt_out(), Channel.SMS, PHONE, T0 - SECOND, False),  # before the opt-out
        (opt_out(), Channel.SMS, "", T0, True),
        (opt_out(), Channel.SMS, OTHER, T0, False),  # to another number
        (opt_out(address=""), Channel.SMS, OTHER, T0, True),
        (opt_out(), Channel.EMAIL, PHONE, T0, False),  # another channel
        (opt_out(replied_at=T0), Channel.SMS, PHONE, T0, False),  # already replied
        (opt_out(Reason.SMS_CARRIER_PERMANENT), Channel.SMS, PHONE, T0, False),
        (opt_out(Reason.MANUAL, source=Source.USER), Channel.SMS, PHONE, T0, False),
        (
            opt_out(Reason.EMAIL_UNSUBSCRIBE_LINK, scope=Channel.EMAIL, address="a@example.com"),
            Channel.EMAIL,
            "a@example.com",
            T0 + dt.timedelta(minutes=4),
            True,
        ),
    ],
)
def test_reply_allowance(
    block: Block, channel: Channel, address: str, at: dt.datetime, allowed: bool
) -> None:
    assert (reply_allowance([block], channel, address, at) is block) is allowed


# --- an opt-out revokes consent -------------------------------------------------------------


def test_a_dnd_opt_out_revokes_every_purpose_of_its_channel_only() -> None:
    held = [
        consent(),
        consent(purpose=ConsentPurpose.INFORMATIONAL),
        consent(channel=Channel.EMAIL),
        consent(address=OTHER),
        consent(status=ConsentStatus.REVOKED),
    ]
    revoked = revoked_by_opt_out(held, opt_out(), PHONE, T0)
    # The contact's other numbers too: the opt-out blocks the contact on the channel, and a
    # consent of another number must not outlive it (to count again once the block lifts).
    assert [(c.channel, c.purpose, c.address) for c in revoked] == [
        (Channel.SMS, ConsentPurpose.MARKETING, ""),
        (Channel.SMS, ConsentPurpose.INFORMATIONAL, ""),
        (Channel.SMS, ConsentPurpose.MARKETING, OTHER),
    ]
    assert all(c.status is ConsentStatus.REVOKED and c.revoked_at == T0 for c in revoked)
    assert {c.revoked_by for c in revoked} == {"SMS_OPT_OUT_KEYWORD"}


def test_a_marketing_only_opt_out_revokes_the_marketing_consent_only() -> None:
    held = [
        consent(channel=Channel.WHATSAPP),
        consent(channel=Channel.WHATSAPP, purpose=ConsentPurpose.INFORMATIONAL),
    ]
    block = opt_out(Reason.WHATSAPP_MARKETING_OPT_OUT, scope=Channel.WHATSAPP, source=Source.SYSTEM)
    revoked = revoked_by_opt_out(held, block, PHONE, T0)
    assert [c.purpose for c in revoked] == [ConsentPurpose.MARKETING]


@pytest.mark.parametrize(
    ("block", "revokes"),
    [
        (opt_out(Reason.MANUAL, source=Source.USER), False),  # a user's DND is no withdrawal
        (opt_out(Reason.MANUAL, source=Source.CONTACT), True),  # the contact asked
        (opt_out(Reason.MANUAL, source=Source.CONTACT, scope=None), True),  # all channels
        (opt_out(Reason.SMS_CARRIER_TEMPORARY, source=Source.SYSTEM), False),
        (opt_out(Reason.SMS_CARRIER_PERMANENT, source=Source.SYSTEM), True),
        (
            opt_out(Reason.MANUAL, source=Source.CONTACT, direction=Direction.INBOUND, scope=None),
            False,
        ),
    ],
)
def test_which_blocks_revoke(block: Block, revokes: bool) -> None:
    assert bool(revoked_by_opt_out([consent()], block, PHONE, T0)) is revokes


def test_evidence_sizes_are_bounded() -> None:
    evidence = ConsentEvidence(form_url="x" * 2049, user_agent="y" * 512)
    assert [v.field for v in evidence.violations()] == ["evidence.form_url"]
