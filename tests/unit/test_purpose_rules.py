"""Purpose rules as pure functions: claiming the one compliance reply on the locked state
(``plan_claim_reply``) at the edges of its window, a marketing-only clear, the marketing
stream's unsubscribe, and the messaging providers' event table."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from dnd_server.domain.consent import (
    COMPLIANCE_REPLY_WINDOW,
    MARKETING_ONLY_REASONS,
    ChannelPolicy,
    ConsentPolicy,
    Purpose,
)
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    Channel,
    ContactState,
    Direction,
    Reason,
    ReplyClaim,
    Source,
)
from dnd_server.domain.plans import plan_claim_reply, plan_remove
from dnd_server.domain.provider_events import (
    DELIVERY_EVENTS,
    DELIVERY_PROVIDERS,
    EmailEvent,
    EventOutcome,
    delivery_effect,
    email_effect,
    event_outcome,
)
from dnd_server.domain.rules import ClearCredentials, Denial, decide_send

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)
PHONE = "+15555550100"
OTHER = "+15555550199"


def block(
    reason: Reason = Reason.SMS_OPT_OUT_KEYWORD,
    scope: Channel | None = Channel.SMS,
    source: Source = Source.CONTACT,
    **changes: object,
) -> Block:
    fields: dict[str, object] = {
        "direction": Direction.OUTBOUND,
        "scope": scope,
        "reason": reason,
        "source": source,
        "since": T0,
        "address": PHONE,
    }
    fields.update(changes)
    return Block(**fields)  # type: ignore[arg-type]


def state(*blocks: Block, suppressions: tuple[AddressSuppression, ...] = ()) -> ContactState:
    return ContactState("loc", "c1", tuple(blocks), version=len(blocks), suppressions=suppressions)


# --- claiming the compliance reply ----------------------------------------------------------


@pytest.mark.parametrize(
    ("at", "claimed"),
    [
        (T0, True),
        (T0 + COMPLIANCE_REPLY_WINDOW - SECOND, True),
        (T0 + COMPLIANCE_REPLY_WINDOW, False),  # five minutes after the opt-out: over
        (T0 - SECOND, False),  # the database clock before the opt-out (never claimed early)
    ],
)
def test_claim_at_the_edges_of_the_window(at: dt.datetime, claimed: bool) -> None:
    opt_out = block()
    decision, steps = plan_claim_reply(state(opt_out), Channel.SMS, PHONE, at)
    assert decision.allowed is claimed
    if claimed:
        assert decision.claim == opt_out
        assert len(steps) == 1 and steps[0].enabled
        assert steps[0].target == ReplyClaim(opt_out, at)
    else:
        assert steps == []
        assert decision.denial is Denial.COMPLIANCE_REPLY_SPENT
        assert decision.denied_by == (opt_out,)


def test_a_claimed_reply_is_spent_and_says_when_it_was_allowed() -> None:
    replied = block(replied_at=T0 + SECOND)
    decision, steps = plan_claim_reply(state(replied), Channel.SMS, PHONE, T0 + 2 * SECOND)
    assert (decision.allowed, steps) == (False, [])
    assert decision.denial is Denial.COMPLIANCE_REPLY_SPENT
    assert "already allowed at 2026-03-01T12:00:01Z" in decision.explanation


def test_the_reply_goes_only_to_the_address_that_opted_out() -> None:
    decision, steps = plan_claim_reply(state(block()), Channel.SMS, OTHER, T0)
    assert (decision.allowed, steps) == (False, [])
    assert decision.denial is Denial.COMPLIANCE_REPLY_SPENT
    assert "only to the address that opted out" in decision.explanation
    # A check naming no address may reply (to the number the opt-out came from).
    decision, steps = plan_claim_reply(state(block()), Channel.SMS, "", T0)
    assert decision.allowed and len(steps) == 1


def test_an_opt_out_naming_no_address_replies_to_no_suppressed_address() -> None:
    """A STOP whose sender is not known allows its one reply to any address, but not to one
    an opt-out suppressed (another contact's, which had its reply, or one of its own)."""
    bare = block(address="")
    other_stop = AddressSuppression(
        Channel.SMS, OTHER, Reason.SMS_OPT_OUT_KEYWORD, Source.CONTACT, "c2", since=T0
    )
    decision = decide_send(
        (bare,),
        Channel.SMS,
        Direction.OUTBOUND,
        (other_stop,),
        purpose=Purpose.COMPLIANCE_REPLY,
        address=OTHER,
        now=T0 + SECOND,
    )
    assert not decision.allowed and decision.denial is Denial.COMPLIANCE_REPLY_SPENT
    assert f"may not go to {OTHER}" in decision.explanation
    # To an address no opt-out suppressed, the one reply still goes.
    decision, steps = plan_claim_reply(state(bare), Channel.SMS, PHONE, T0 + SECOND)
    assert decision.allowed and len(steps) == 1


def test_no_reply_on_another_channel_that_dnd_blocks() -> None:
    everything = block(Reason.MANUAL, scope=None, source=Source.USER, address="")
    contact = state(block(), everything)
    decision, steps = plan_claim_reply(contact, Channel.WHATSAPP, PHONE, T0)
    assert (decision.allowed, steps) == (False, [])
    assert decision.denial is Denial.DND_BLOCK
    # On the opt-out's own channel the allowance stands beside the all-channels block.
    decision, steps = plan_claim_reply(contact, Channel.SMS, PHONE, T0)
    assert decision.allowed and steps[0].target == ReplyClaim(block(), T0)


def test_no_reply_after_a_block_that_is_not_an_opt_out() -> None:
    for reason in (Reason.SMS_CARRIER_PERMANENT, Reason.SMS_CARRIER_TEMPORARY, Reason.MANUAL):
        decision, steps = plan_claim_reply(state(block(reason)), Channel.SMS, PHONE, T0)
        assert (decision.allowed, steps, decision.denial) == (False, [], Denial.DND_BLOCK)


def test_an_email_unsubscribe_allows_one_reply_to_its_address() -> None:
    unsubscribed = block(Reason.EMAIL_UNSUBSCRIBE_LINK, Channel.EMAIL, address="a@example.com")
    decision, steps = plan_claim_reply(
        state(unsubscribed), Channel.EMAIL, "a@example.com", T0 + 4 * 60 * SECOND
    )
    assert decision.allowed and len(steps) == 1


# --- a marketing-only clear -------------------------------------------------------------------


def test_a_marketing_only_clear_lifts_only_marketing_only_blocks() -> None:
    manual = block(Reason.MANUAL, source=Source.USER, address="")
    marketing = block(Reason.MARKETING_OPT_OUT, source=Source.USER, address="")
    everywhere = block(Reason.MARKETING_OPT_OUT, scope=None, source=Source.USER, address="")
    meta = block(Reason.WHATSAPP_MARKETING_OPT_OUT, Channel.WHATSAPP, Source.CONTACT)
    contact = state(manual, marketing, everywhere, meta)
    user = ClearCredentials(source=Source.USER)
    one = plan_remove(
        contact, Direction.OUTBOUND, Channel.SMS, None, user, only=MARKETING_ONLY_REASONS
    )
    assert [s.target for s in one] == [marketing]  # the SMS scope's own: not the ALL one
    every = plan_remove(contact, Direction.OUTBOUND, None, None, user, only=MARKETING_ONLY_REASONS)
    assert [s.target for s in every] == [marketing, everywhere, meta]
    assert all(not s.enabled for s in every)
    # Without ``only`` the clear of the scope lifts the MANUAL block as well.
    assert [
        s.target for s in plan_remove(contact, Direction.OUTBOUND, Channel.SMS, None, user)
    ] == [
        manual,
        marketing,
    ]


# --- the marketing stream and the messaging providers' events --------------------------------


@pytest.mark.parametrize("event", list(EmailEvent))
def test_a_marketing_stream_changes_only_the_unsubscribes(event: EmailEvent) -> None:
    plain = email_effect(event)
    marketing = email_effect(event, marketing_stream=True)
    if event in (EmailEvent.UNSUBSCRIBE_LINK, EmailEvent.LIST_UNSUBSCRIBE_POST):
        assert plain is not None and plain.reason is Reason.EMAIL_UNSUBSCRIBE_LINK
        assert marketing is not None
        assert (marketing.reason, marketing.source) == (
            Reason.EMAIL_MARKETING_UNSUBSCRIBE,
            Source.CONTACT,
        )
    else:
        assert marketing == plain


@pytest.mark.parametrize(
    ("provider", "code", "reason", "source", "clears"),
    [
        ("meta", "131050", Reason.WHATSAPP_MARKETING_OPT_OUT, Source.SYSTEM, False),
        ("Meta", "131050", Reason.WHATSAPP_MARKETING_OPT_OUT, Source.SYSTEM, False),
        (
            "meta",
            "user_preferences:stop_marketing",
            Reason.WHATSAPP_MARKETING_OPT_OUT,
            Source.CONTACT,
            False,
        ),
        (
            "meta",
            "user_preferences:resume_marketing",
            Reason.WHATSAPP_MARKETING_OPT_OUT,
            Source.CONTACT,
            True,
        ),
    ],
)
def test_meta_events(
    provider: str, code: str, reason: Reason, source: Source, clears: bool
) -> None:
    effect = delivery_effect(provider, code)
    assert effect is not None
    assert (effect.channel, effect.reason, effect.source, effect.clears) == (
        Channel.WHATSAPP,
        reason,
        source,
        clears,
    )


@pytest.mark.parametrize(
    ("provider", "code"),
    [
        ("meta", "131026"),  # undeliverable: not an opt-out
        ("meta", "131050 "),
        ("meta", "user_preferences:stop_everything"),
        ("twilio", "131050"),
        ("", "131050"),
    ],
)
def test_unknown_events_do_nothing(provider: str, code: str) -> None:
    assert delivery_effect(provider, code) is None


def test_every_meta_event_is_a_marketing_only_opt_out_of_its_channel() -> None:
    assert "meta" in DELIVERY_PROVIDERS
    meta = [e for (provider, _), e in DELIVERY_EVENTS.items() if provider == "meta"]
    assert len(meta) == 3
    for effect in meta:
        assert effect.reason in MARKETING_ONLY_REASONS


@pytest.mark.parametrize(
    ("clears", "changed", "outcome"),
    [
        (False, True, EventOutcome.APPLIED),
        (False, False, EventOutcome.ALREADY_ACTIVE),
        (True, True, EventOutcome.CLEARED),
        (True, False, EventOutcome.IGNORED),  # nothing to clear
    ],
)
def test_event_outcomes(clears: bool, changed: bool, outcome: EventOutcome) -> None:
    effect = (Reason.WHATSAPP_MARKETING_OPT_OUT, Source.CONTACT)
    found, explanation = event_outcome(effect, Channel.WHATSAPP, changed, clears)
    assert found is outcome
    assert "WHATSAPP_MARKETING_OPT_OUT" in explanation
    assert event_outcome(None, Channel.WHATSAPP, False, clears)[0] is EventOutcome.IGNORED


# --- the hot path -------------------------------------------------------------------------------


@pytest.mark.parametrize("purpose", [None, *Purpose])
def test_a_contact_without_blocks_takes_the_fast_path_whatever_the_purpose(
    purpose: Purpose | None,
) -> None:
    """No block, no suppression, no policy requiring consent: the one shared, prebuilt answer
    (nothing is built per call), as without a purpose."""
    plain = decide_send((), Channel.SMS, Direction.OUTBOUND)
    stated = decide_send(
        (), Channel.SMS, Direction.OUTBOUND, (), purpose=purpose, address=PHONE, now=T0
    )
    assert stated is plain
    assert stated.allowed and stated.claim is None and stated.denial is None


_DENYING = [
    pytest.param((block(),), (), id="sms-opt-out"),
    pytest.param((block(Reason.MANUAL, scope=None, source=Source.USER),), (), id="manual-all"),
    pytest.param((block(Reason.MARKETING_OPT_OUT, scope=None),), (), id="marketing-opt-out"),
    pytest.param(
        (),
        (
            AddressSuppression(
                channel=Channel.SMS,
                address=PHONE,
                reason=Reason.SMS_OPT_OUT_KEYWORD,
                source=Source.CONTACT,
                contact_id="c2",
                since=T0,
            ),
        ),
        id="address-suppressed",
    ),
]


@pytest.mark.parametrize(("blocks", "suppressions"), _DENYING)
@pytest.mark.parametrize("purpose", [None, *Purpose])
def test_a_denial_is_the_same_whatever_the_consent_policy(
    blocks: tuple[Block, ...],
    suppressions: tuple[AddressSuppression, ...],
    purpose: Purpose | None,
) -> None:
    """A check DND denies reads no consent policy (``DndService.batch_check``): a policy
    requiring consent on the channel never changes a denial, whatever the purpose."""
    requiring = ConsentPolicy(
        channels={Channel.SMS: ChannelPolicy(marketing=True, informational=True)}
    )
    args = (blocks, Channel.SMS, Direction.OUTBOUND, suppressions)
    # The compliance reply's window open and over, to the address that opted out and another.
    for at, address in itertools.product((T0, T0 + COMPLIANCE_REPLY_WINDOW), (PHONE, OTHER)):
        without = decide_send(*args, purpose=purpose, address=address, now=at)
        if without.allowed:
            continue  # e.g. a marketing-only opt-out and an INFORMATIONAL send
        with_policy = decide_send(*args, purpose=purpose, address=address, policy=requiring, now=at)
        assert with_policy == without
    # ...while it does deny what DND allows: the policy is read for those.
    allowed = decide_send((), Channel.SMS, Direction.OUTBOUND, purpose=Purpose.MARKETING, now=T0)
    assert allowed.allowed
    denied = decide_send(
        (), Channel.SMS, Direction.OUTBOUND, purpose=Purpose.MARKETING, policy=requiring, now=T0
    )
    assert not denied.allowed and denied.denial is Denial.NO_CONSENT
