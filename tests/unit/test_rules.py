"""Pure unit tests of the DND rules (``dnd_server.domain.rules``): no server, no database.

The clear policy is checked against a table written out here from the spec, independently of
``CLEAR_POLICY``, so a wrong entry in the server's policy shows up as a failing test.
"""

from __future__ import annotations

import itertools

import pytest
from dnd_server.domain.errors import ClearNotPermitted, InvalidArgument
from dnd_server.domain.model import ALL, Block, Channel, Direction, Reason, Scope, Source, Summary
from dnd_server.domain.rules import (
    ClearCredentials,
    decide_send,
    plan_disable,
    plan_enable,
    refusal_for,
    summarize,
    validate_block_shape,
)

OUT = Direction.OUTBOUND
IN = Direction.INBOUND

# The spec's clearing table. For each reason, what each source needs to clear a block:
#   "free"     - allowed with nothing more
#   "evidence" - allowed only with non-empty (not whitespace-only) evidence
#   "confirm"  - allowed only with suppression_removal_confirmed=True
#   "never"    - never allowed
SOURCES_ORDER = ("USER", "WORKFLOW", "CONTACT", "SYSTEM", "SUPPORT")
SPEC_TABLE: dict[str, tuple[str, str, str, str, str]] = {
    #                              USER       WORKFLOW  CONTACT   SYSTEM   SUPPORT
    "MANUAL": ("free", "free", "free", "never", "free"),
    "SMS_CARRIER_TEMPORARY": ("free", "free", "free", "never", "free"),
    "SMS_OPT_OUT_KEYWORD": ("never", "never", "free", "never", "evidence"),
    "SMS_CARRIER_PERMANENT": ("never", "never", "free", "never", "evidence"),
    "EMAIL_SPAM_COMPLAINT": ("never", "never", "never", "never", "evidence"),
    "EMAIL_HARD_BOUNCE": ("confirm", "never", "never", "never", "confirm"),
    "EMAIL_GENERIC_FAILURE": ("confirm", "never", "never", "never", "confirm"),
    "EMAIL_SUPPRESS_BOUNCE": ("confirm", "never", "never", "never", "confirm"),
    "EMAIL_SUPPRESS_UNSUBSCRIBE": ("confirm", "never", "never", "never", "confirm"),
    "EMAIL_SUPPRESS_COMPLAINT": ("confirm", "never", "never", "never", "confirm"),
    "EMAIL_UNSUBSCRIBE_LINK": ("free", "never", "free", "never", "free"),
    # Marketing-only opt-outs: the contact's "resume", USER, SUPPORT; never WORKFLOW for
    # Meta's or a marketing stream's unsubscribe.
    "MARKETING_OPT_OUT": ("free", "free", "free", "never", "free"),
    "WHATSAPP_MARKETING_OPT_OUT": ("free", "never", "free", "never", "free"),
    "EMAIL_MARKETING_UNSUBSCRIBE": ("free", "never", "free", "never", "free"),
    # The contact's STOP on WhatsApp or RCS: as SMS_OPT_OUT_KEYWORD.
    "KEYWORD_OPT_OUT": ("never", "never", "free", "never", "evidence"),
}

EVIDENCE_VARIANTS = ("", "   \n\t ", "opt-in form signed 2024-03-01")
CREDENTIAL_VARIANTS = list(itertools.product(EVIDENCE_VARIANTS, (False, True)))


def home_scope(reason: Reason) -> Scope:
    """A channel on which a block of ``reason`` may exist."""
    if reason.value.startswith("SMS_"):
        return Channel.SMS
    if reason.value.startswith("EMAIL_"):
        return Channel.EMAIL
    return Channel.WHATSAPP  # MANUAL, MARKETING_OPT_OUT and WHATSAPP_* may live there


def block(
    reason: Reason = Reason.MANUAL,
    scope: Scope = Channel.SMS,
    direction: Direction = OUT,
    source: Source = Source.SYSTEM,
) -> Block:
    return Block(direction=direction, scope=scope, reason=reason, source=source, actor_id="a1")


def creds(source: Source, evidence: str = "", confirmed: bool = False) -> ClearCredentials:
    return ClearCredentials(
        source=source, evidence=evidence, suppression_removal_confirmed=confirmed
    )


def expected_allowed(rule: str, evidence: str, confirmed: bool) -> bool:
    if rule == "free":
        return True
    if rule == "evidence":
        return bool(evidence.strip())
    if rule == "confirm":
        return confirmed
    assert rule == "never"
    return False


# --- refusal_for -------------------------------------------------------------------------------


def test_spec_table_names_every_reason_and_source() -> None:
    assert set(SPEC_TABLE) == {r.value for r in Reason}
    assert set(SOURCES_ORDER) == {s.value for s in Source}


@pytest.mark.parametrize(
    ("reason", "source"),
    [(Reason(r), Source(s)) for r in SPEC_TABLE for s in SOURCES_ORDER],
    ids=lambda value: value.value,
)
def test_refusal_for_matches_spec_table(reason: Reason, source: Source) -> None:
    rule = SPEC_TABLE[reason.value][SOURCES_ORDER.index(source.value)]
    target = block(reason, home_scope(reason))
    for evidence, confirmed in CREDENTIAL_VARIANTS:
        refusal = refusal_for(target, creds(source, evidence, confirmed))
        allowed = expected_allowed(rule, evidence, confirmed)
        context = f"{reason}/{source} rule={rule} evidence={evidence!r} confirmed={confirmed}"
        if allowed:
            assert refusal is None, context
            continue
        assert refusal is not None, context
        assert refusal.block == target, context
        assert refusal.why, context
        # "What clears it" names every source that may clear this reason, and no other.
        clears = refusal.what_clears_it.lower()
        for other, other_rule in zip(SOURCES_ORDER, SPEC_TABLE[reason.value], strict=True):
            if other_rule == "never":
                assert other.lower() not in clears, (context, refusal.what_clears_it)
            else:
                assert other.lower() in clears, (context, refusal.what_clears_it)
        if "evidence" in SPEC_TABLE[reason.value]:
            assert "evidence" in clears, refusal.what_clears_it
        if "confirm" in SPEC_TABLE[reason.value]:
            assert "suppression_removal_confirmed" in clears, refusal.what_clears_it


@pytest.mark.parametrize("reason", [Reason.SMS_OPT_OUT_KEYWORD, Reason.EMAIL_SPAM_COMPLAINT])
@pytest.mark.parametrize("evidence", ["", " ", "\t", "\n", " \r\n\t  "])
def test_blank_evidence_is_no_evidence(reason: Reason, evidence: str) -> None:
    refusal = refusal_for(block(reason, home_scope(reason)), creds(Source.SUPPORT, evidence))
    assert refusal is not None
    assert refusal_for(block(reason, home_scope(reason)), creds(Source.SUPPORT, " x ")) is None


def test_confirmation_does_not_stand_in_for_evidence_nor_evidence_for_confirmation() -> None:
    spam = block(Reason.EMAIL_SPAM_COMPLAINT, Channel.EMAIL)
    bounce = block(Reason.EMAIL_HARD_BOUNCE, Channel.EMAIL)
    assert refusal_for(spam, creds(Source.SUPPORT, "", confirmed=True)) is not None
    assert refusal_for(bounce, creds(Source.SUPPORT, "proof", confirmed=False)) is not None
    assert refusal_for(bounce, creds(Source.USER, "proof", confirmed=False)) is not None


def test_refusal_for_manual_all_and_inbound_blocks() -> None:
    for target in (block(scope=ALL), block(scope=ALL, direction=IN)):
        assert refusal_for(target, creds(Source.SYSTEM, "proof", True)) is not None
        for source in (Source.USER, Source.WORKFLOW, Source.CONTACT, Source.SUPPORT):
            assert refusal_for(target, creds(source)) is None


# --- plan_enable -------------------------------------------------------------------------------


def test_plan_enable_adds_a_new_block() -> None:
    new = block(Reason.SMS_OPT_OUT_KEYWORD)
    assert plan_enable([], new) == [new]


def test_plan_enable_is_idempotent_on_the_same_key() -> None:
    active = [block(Reason.MANUAL, Channel.SMS, source=Source.USER)]
    # Same (direction, scope, reason) but a different source, actor, note: nothing to add.
    again = Block(OUT, Channel.SMS, Reason.MANUAL, Source.WORKFLOW, actor_id="wf", note="n")
    assert plan_enable(active, again) == []
    assert plan_enable(active, active[0]) == []


def test_plan_enable_stacks_other_reasons_scopes_and_directions() -> None:
    active = [block(Reason.MANUAL, Channel.SMS)]
    for new in (
        block(Reason.SMS_OPT_OUT_KEYWORD, Channel.SMS),
        block(Reason.MANUAL, Channel.EMAIL),
        block(Reason.MANUAL, ALL),
        block(Reason.MANUAL, ALL, direction=IN),
    ):
        assert plan_enable(active, new) == [new]


def test_plan_enable_validates_shape() -> None:
    with pytest.raises(InvalidArgument):
        plan_enable([], block(Reason.SMS_OPT_OUT_KEYWORD, Channel.EMAIL))
    with pytest.raises(InvalidArgument):
        plan_enable([], block(Reason.EMAIL_HARD_BOUNCE, ALL))


# --- plan_disable ------------------------------------------------------------------------------

SMS_MANUAL = block(Reason.MANUAL, Channel.SMS)
SMS_STOP = block(Reason.SMS_OPT_OUT_KEYWORD, Channel.SMS)
SMS_TEMP = block(Reason.SMS_CARRIER_TEMPORARY, Channel.SMS)
EMAIL_MANUAL = block(Reason.MANUAL, Channel.EMAIL)
EMAIL_SPAM = block(Reason.EMAIL_SPAM_COMPLAINT, Channel.EMAIL)
EMAIL_UNSUB = block(Reason.EMAIL_UNSUBSCRIBE_LINK, Channel.EMAIL)
CALL_MANUAL = block(Reason.MANUAL, Channel.CALL)
ALL_MANUAL = block(Reason.MANUAL, ALL)
INBOUND_MANUAL = block(Reason.MANUAL, ALL, direction=IN)


def test_plan_disable_channel_removes_only_that_channels_own_blocks() -> None:
    active = [SMS_MANUAL, SMS_TEMP, EMAIL_MANUAL, ALL_MANUAL, INBOUND_MANUAL, CALL_MANUAL]
    removed = plan_disable(active, OUT, Channel.SMS, None, creds(Source.USER))
    assert set(removed) == {SMS_MANUAL, SMS_TEMP}


def test_plan_disable_all_removes_every_outbound_block_but_not_inbound() -> None:
    active = [SMS_MANUAL, SMS_TEMP, EMAIL_MANUAL, EMAIL_UNSUB, ALL_MANUAL, INBOUND_MANUAL]
    removed = plan_disable(active, OUT, ALL, None, creds(Source.USER))
    assert set(removed) == {SMS_MANUAL, SMS_TEMP, EMAIL_MANUAL, EMAIL_UNSUB, ALL_MANUAL}


def test_plan_disable_inbound_removes_only_the_inbound_block() -> None:
    active = [SMS_MANUAL, ALL_MANUAL, INBOUND_MANUAL]
    assert plan_disable(active, IN, ALL, None, creds(Source.CONTACT)) == [INBOUND_MANUAL]
    with pytest.raises(InvalidArgument):
        plan_disable(active, IN, Channel.SMS, None, creds(Source.CONTACT))


def test_plan_disable_reason_narrows_the_scope() -> None:
    active = [SMS_MANUAL, SMS_STOP, EMAIL_MANUAL, EMAIL_SPAM, ALL_MANUAL, INBOUND_MANUAL]
    # The refusable STOP and spam blocks are out of the narrowed scope: no refusal.
    on_sms = plan_disable(active, OUT, Channel.SMS, Reason.MANUAL, creds(Source.WORKFLOW))
    assert on_sms == [SMS_MANUAL]
    on_all = plan_disable(active, OUT, ALL, Reason.MANUAL, creds(Source.WORKFLOW))
    assert set(on_all) == {SMS_MANUAL, EMAIL_MANUAL, ALL_MANUAL}
    stop = plan_disable(active, OUT, Channel.SMS, Reason.SMS_OPT_OUT_KEYWORD, creds(Source.CONTACT))
    assert stop == [SMS_STOP]


def test_plan_disable_nothing_to_clear_is_empty() -> None:
    assert plan_disable([], OUT, Channel.SMS, None, creds(Source.SYSTEM)) == []
    # An ALL block is not in a channel's scope; a refusable block on another channel neither.
    active = [ALL_MANUAL, EMAIL_SPAM, INBOUND_MANUAL]
    assert plan_disable(active, OUT, Channel.SMS, None, creds(Source.SYSTEM)) == []
    assert plan_disable([SMS_STOP], OUT, Channel.SMS, Reason.MANUAL, creds(Source.USER)) == []


def test_plan_disable_refuses_all_or_nothing_listing_every_refused_block() -> None:
    active = [SMS_MANUAL, SMS_STOP, EMAIL_SPAM, EMAIL_UNSUB, ALL_MANUAL, INBOUND_MANUAL]
    with pytest.raises(ClearNotPermitted) as caught:
        plan_disable(active, OUT, ALL, None, creds(Source.WORKFLOW))
    refused = [r.block for r in caught.value.refusals]
    # WORKFLOW may clear the MANUAL blocks, not STOP, spam or the unsubscribe link.
    assert sorted(refused, key=repr) == sorted([SMS_STOP, EMAIL_SPAM, EMAIL_UNSUB], key=repr)
    assert all(r.why and r.what_clears_it for r in caught.value.refusals)


def test_plan_disable_on_one_channel_refuses_with_the_refused_block_only() -> None:
    with pytest.raises(ClearNotPermitted) as caught:
        plan_disable([SMS_MANUAL, SMS_STOP, EMAIL_SPAM], OUT, Channel.SMS, None, creds(Source.USER))
    assert [r.block for r in caught.value.refusals] == [SMS_STOP]


def test_plan_disable_system_is_refused_every_block() -> None:
    active = [SMS_MANUAL, SMS_TEMP, ALL_MANUAL]
    with pytest.raises(ClearNotPermitted) as caught:
        plan_disable(active, OUT, ALL, None, creds(Source.SYSTEM, "proof", True))
    assert {r.block for r in caught.value.refusals} == set(active)


def test_plan_disable_with_credentials_clears_permanent_blocks() -> None:
    active = [SMS_MANUAL, SMS_STOP, EMAIL_SPAM]
    removed = plan_disable(active, OUT, ALL, None, creds(Source.SUPPORT, "signed opt-in"))
    assert set(removed) == set(active)


def test_plan_disable_rejects_a_reason_foreign_to_the_channel() -> None:
    with pytest.raises(InvalidArgument):
        plan_disable([], OUT, Channel.EMAIL, Reason.SMS_OPT_OUT_KEYWORD, creds(Source.USER))
    with pytest.raises(InvalidArgument):
        plan_disable([], OUT, Channel.SMS, Reason.EMAIL_HARD_BOUNCE, creds(Source.USER))


# --- summarize ---------------------------------------------------------------------------------


def test_summarize_nothing_is_off() -> None:
    summary = summarize([])
    assert (summary.outbound, summary.inbound, summary.blocked_channels) == (
        Summary.OFF,
        Summary.OFF,
        (),
    )


def test_summarize_one_channel_is_partial() -> None:
    summary = summarize([SMS_MANUAL, SMS_STOP])
    assert summary.outbound is Summary.PARTIAL
    assert summary.inbound is Summary.OFF
    assert summary.blocked_channels == (Channel.SMS,)


def test_summarize_channels_in_enum_order() -> None:
    blocks = [block(Reason.MANUAL, c) for c in (Channel.GMB, Channel.SMS, Channel.CALL)]
    assert summarize(blocks).blocked_channels == (Channel.CALL, Channel.SMS, Channel.GMB)


def test_summarize_all_block_is_on() -> None:
    summary = summarize([ALL_MANUAL])
    assert summary.outbound is Summary.ON
    assert summary.inbound is Summary.OFF
    assert summary.blocked_channels == (
        Channel.CALL,
        Channel.EMAIL,
        Channel.SMS,
        Channel.WHATSAPP,
        Channel.FACEBOOK,
        Channel.GMB,
        Channel.RCS,
    )


def test_summarize_every_channel_individually_is_on_and_one_missing_is_partial() -> None:
    six = [block(Reason.MANUAL, c) for c in Channel]
    assert len(six) == 7
    assert summarize(six).outbound is Summary.ON
    assert len(summarize(six).blocked_channels) == 7
    for missing in range(7):
        five = six[:missing] + six[missing + 1 :]
        assert summarize(five).outbound is Summary.PARTIAL, missing


def test_summarize_inbound() -> None:
    summary = summarize([INBOUND_MANUAL])
    assert summary.outbound is Summary.OFF
    assert summary.inbound is Summary.ON
    assert summary.blocked_channels == ()
    both = summarize([INBOUND_MANUAL, EMAIL_SPAM])
    assert (both.outbound, both.inbound) == (Summary.PARTIAL, Summary.ON)


# --- decide_send -------------------------------------------------------------------------------


@pytest.mark.parametrize("channel", list(Channel), ids=str)
def test_decide_send_all_block_covers_every_outbound_channel(channel: Channel) -> None:
    decision = decide_send([ALL_MANUAL], channel, OUT)
    assert not decision.allowed
    assert decision.denied_by == (ALL_MANUAL,)
    assert decision.explanation.startswith("denied")
    assert decide_send([ALL_MANUAL], channel, IN).allowed


@pytest.mark.parametrize("channel", list(Channel), ids=str)
def test_decide_send_inbound_block_denies_inbound_call_and_sms_only(channel: Channel) -> None:
    decision = decide_send([INBOUND_MANUAL], channel, IN)
    if channel in (Channel.CALL, Channel.SMS):
        assert not decision.allowed
        assert decision.denied_by == (INBOUND_MANUAL,)
    else:
        assert decision.allowed
        assert decision.denied_by == ()
        assert decision.explanation.startswith("allowed")
    assert decide_send([INBOUND_MANUAL], channel, OUT).allowed


@pytest.mark.parametrize("channel", list(Channel), ids=str)
def test_decide_send_outbound_blocks_never_deny_inbound(channel: Channel) -> None:
    outbound = [block(Reason.MANUAL, c) for c in Channel] + [ALL_MANUAL, SMS_STOP, EMAIL_SPAM]
    assert decide_send(outbound, channel, IN).allowed


def test_decide_send_channel_block_denies_only_its_channel_and_lists_every_block() -> None:
    blocks = [SMS_MANUAL, SMS_STOP, ALL_MANUAL, EMAIL_SPAM]
    decision = decide_send(blocks, Channel.SMS, OUT)
    assert not decision.allowed
    assert set(decision.denied_by) == {SMS_MANUAL, SMS_STOP, ALL_MANUAL}
    only_sms = [SMS_STOP]
    for channel in Channel:
        assert decide_send(only_sms, channel, OUT).allowed is (channel is not Channel.SMS)


def test_decide_send_no_blocks_allows() -> None:
    for channel, direction in itertools.product(Channel, Direction):
        decision = decide_send([], channel, direction)
        assert decision.allowed
        assert decision.denied_by == ()


# --- validate_block_shape ----------------------------------------------------------------------

ALL_SCOPES: list[Scope] = [ALL, *Channel]


def shape_is_valid(direction: Direction, scope: Scope, reason: Reason) -> bool:
    """The spec's shape rule, written out independently."""
    if direction is IN:
        return scope is None and reason is Reason.MANUAL
    if reason in (Reason.MANUAL, Reason.MARKETING_OPT_OUT):
        return True
    if reason.value.startswith("SMS_"):
        return scope is Channel.SMS
    if reason.value.startswith("EMAIL_"):
        return scope is Channel.EMAIL
    if reason.value.startswith("WHATSAPP_"):
        return scope is Channel.WHATSAPP
    if reason is Reason.KEYWORD_OPT_OUT:
        return scope in (Channel.WHATSAPP, Channel.RCS)
    raise AssertionError(f"unclassified reason {reason}")


@pytest.mark.parametrize("reason", list(Reason), ids=str)
def test_validate_block_shape(reason: Reason) -> None:
    for direction, scope in itertools.product(Direction, ALL_SCOPES):
        context = f"{direction}/{scope}/{reason}"
        if shape_is_valid(direction, scope, reason):
            validate_block_shape(direction, scope, reason)
        else:
            with pytest.raises(InvalidArgument) as caught:
                validate_block_shape(direction, scope, reason)
            fields = {v.field for v in caught.value.violations}
            assert fields <= {"scope", "reason"} and fields, context
            if direction is IN and scope is not None:
                assert "scope" in fields, context


def test_validate_block_shape_counts() -> None:
    valid = [
        (d, s, r)
        for d, s, r in itertools.product(Direction, ALL_SCOPES, Reason)
        if shape_is_valid(d, s, r)
    ]
    # MANUAL: 8 outbound scopes + inbound ALL; MARKETING_OPT_OUT: 8 outbound scopes; 3 SMS
    # reasons on SMS; 8 EMAIL reasons on EMAIL; 1 WHATSAPP reason on WHATSAPP;
    # KEYWORD_OPT_OUT on WHATSAPP and RCS.
    assert len(valid) == 9 + 8 + 3 + 8 + 1 + 2
