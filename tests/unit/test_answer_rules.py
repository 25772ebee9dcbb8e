"""Pure unit tests of what the answers of writes and checks say, decided by the domain: the
verdict on an inbound message (``domain.inbound``), the outcome of a provider event
(``domain.provider_events.event_outcome``) and a denial explained to a caller told decisions,
not dossiers (``domain.rules.explain_without_holder``). No server, no database."""

from __future__ import annotations

import pytest
from dnd_server.domain.inbound import inbound_verdict
from dnd_server.domain.keywords import Classification, KeywordKind
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    Channel,
    ContactState,
    Direction,
    Reason,
    Source,
)
from dnd_server.domain.provider_events import EventOutcome, event_outcome
from dnd_server.domain.rules import decide_send, explain_without_holder

OUT = Direction.OUTBOUND
SMS_OPT_OUT = Block(OUT, Channel.SMS, Reason.SMS_OPT_OUT_KEYWORD, Source.CONTACT)
SMS_MANUAL = Block(OUT, Channel.SMS, Reason.MANUAL, Source.USER)
EMAIL_MANUAL = Block(OUT, Channel.EMAIL, Reason.MANUAL, Source.USER)
INBOUND = Block(Direction.INBOUND, None, Reason.MANUAL, Source.USER)
FOREIGN = AddressSuppression(
    Channel.SMS, "+14155552671", Reason.SMS_OPT_OUT_KEYWORD, Source.CONTACT, contact_id="other"
)


def state(*blocks: Block, suppressions: tuple[AddressSuppression, ...] = ()) -> ContactState:
    return ContactState("loc", "c1", blocks, len(blocks), suppressions=suppressions)


STOP = Classification(KeywordKind.OPT_OUT, "STOP")
START = Classification(KeywordKind.OPT_IN, "START")
YES = Classification(KeywordKind.OPT_IN, "YES")
NOTHING = Classification(KeywordKind.NONE)


def test_an_opt_out_is_delivered_and_leaves_sms_blocked_by_it() -> None:
    verdict = inbound_verdict(Channel.SMS, STOP, KeywordKind.OPT_OUT, state(SMS_OPT_OUT))
    assert (verdict.action, verdict.matched_keyword) == (KeywordKind.OPT_OUT, "STOP")
    assert verdict.deliver_to_inbox
    assert verdict.sms_blocked and verdict.sms_blocked_by == (SMS_OPT_OUT,)
    assert verdict.explanation == "opted out of SMS (STOP)"


def test_an_opt_in_names_what_still_blocks_sms() -> None:
    verdict = inbound_verdict(Channel.SMS, START, KeywordKind.OPT_IN, state(SMS_MANUAL))
    assert verdict.sms_blocked_by == (SMS_MANUAL,)
    assert verdict.explanation == "opted in to SMS (START); SMS is still blocked by MANUAL"


def test_an_opt_in_that_did_nothing_names_no_keyword() -> None:
    verdict = inbound_verdict(Channel.SMS, YES, KeywordKind.NONE, state())
    assert verdict.matched_keyword == ""
    assert not verdict.sms_blocked and verdict.sms_blocked_by == ()
    assert verdict.explanation == "YES ignored: the contact has no SMS DND"


@pytest.mark.parametrize(
    ("channel", "withheld"),
    [(Channel.SMS, True), (Channel.CALL, True), (Channel.EMAIL, False), (Channel.WHATSAPP, False)],
)
def test_inbound_dnd_withholds_calls_and_sms_only(channel: Channel, withheld: bool) -> None:
    verdict = inbound_verdict(channel, NOTHING, KeywordKind.NONE, state(INBOUND))
    assert verdict.deliver_to_inbox is not withheld
    if channel is Channel.SMS:
        assert verdict.explanation == (
            "not a keyword; inbound DND is on: do not deliver to the inbox"
        )
    elif channel is Channel.CALL:
        assert verdict.explanation == ("keywords are not processed on CALL; nothing changed"), (
            "off SMS the explanation speaks of keywords only"
        )


def test_sms_is_blocked_by_a_suppression_of_the_sender_too() -> None:
    verdict = inbound_verdict(
        Channel.SMS, NOTHING, KeywordKind.NONE, state(EMAIL_MANUAL, suppressions=(FOREIGN,))
    )
    assert verdict.sms_blocked and verdict.sms_blocked_by == ()


def test_provider_event_outcomes() -> None:
    effect = (Reason.EMAIL_HARD_BOUNCE, Source.SYSTEM)
    assert event_outcome(effect, Channel.EMAIL, changed=True) == (
        EventOutcome.APPLIED,
        "applied: EMAIL_HARD_BOUNCE set on EMAIL",
    )
    assert event_outcome(effect, Channel.EMAIL, changed=False) == (
        EventOutcome.ALREADY_ACTIVE,
        "unchanged: EMAIL_HARD_BOUNCE was already active",
    )
    assert event_outcome(None, Channel.EMAIL, changed=False) == (
        EventOutcome.IGNORED,
        "ignored: this event does not set DND",
    )


def test_a_denial_by_another_contacts_suppression_names_no_one_for_check_only_callers() -> None:
    decision = decide_send((), Channel.SMS, OUT, (FOREIGN,))
    assert "+14155552671" in decision.explanation and "other" in decision.explanation
    told = explain_without_holder(decision, Channel.SMS)
    assert told.startswith("denied: the address is suppressed for SMS by SMS_OPT_OUT_KEYWORD")
    assert "+14155552671" not in told and "other" not in told


def test_a_denial_by_the_contacts_own_block_is_explained_as_it_is() -> None:
    decision = decide_send((SMS_MANUAL,), Channel.SMS, OUT, (FOREIGN,))
    assert explain_without_holder(decision, Channel.SMS) == decision.explanation
