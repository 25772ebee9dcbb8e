"""What each request does to a contact's state: pure functions from the locked current state
to the steps to take. The storage layer runs them inside the writing transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from dnd_server.domain.consent import (
    ConsentPurpose,
    ConsentRecord,
    Purpose,
    confirmable,
    confirmed,
    keyword_consents,
    recorded_consent,
    revoked_by_opt_out,
    to_revoke,
)
from dnd_server.domain.keywords import Classification, KeywordKind
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    Channel,
    ContactState,
    Direction,
    Reason,
    ReplyClaim,
    Scope,
    Source,
    Step,
)
from dnd_server.domain.provider_events import SUPPRESSING_REASONS
from dnd_server.domain.replies import ReplyKind, ReplyMark, reply_due
from dnd_server.domain.rules import (
    ClearCredentials,
    SendDecision,
    decide_send,
    plan_clear,
    plan_enable,
)


def plan_add(state: ContactState, block: Block, address: str = "") -> list[Step]:
    """Add ``block`` unless already active; with an address and an opt-out or permanent
    failure reason, also suppress the address (unless already suppressed for that reason).
    An opt-out revokes the consents it withdraws (``revoked_by_opt_out``) in the same change,
    at the block's ``since``."""
    addressed = block if block.address == address else replace(block, address=address)
    steps = [Step(True, b) for b in plan_enable(state.blocks, addressed)]
    if address and block.reason in SUPPRESSING_REASONS and block.scope is not None:
        suppression = AddressSuppression(
            channel=block.scope,
            address=address,
            reason=block.reason,
            source=block.source,
            contact_id=state.contact_id,
            actor_id=block.actor_id,
            note=block.note,
            evidence=block.evidence,
            provider_detail=block.provider_detail,
            since=block.since,
        )
        existing = next((s for s in state.suppressions if s.key == suppression.key), None)
        if existing is None:
            steps.append(Step(True, suppression))
        elif existing.contact_id and existing.contact_id != state.contact_id:
            # Another contact's event suppressed the address for this reason already: now it
            # is several contacts' opt-out, no one contact's to clear (``refusal_for``).
            steps.append(Step(True, replace(existing, contact_id="")))
    if block.since is not None:
        withdrawn = revoked_by_opt_out(state.consents, block, address, block.since)
        steps.extend(Step(False, c) for c in withdrawn)
    return steps


def plan_remove(
    state: ContactState,
    direction: Direction,
    scope: Scope,
    reason: Reason | None,
    who: ClearCredentials,
    address: str = "",
    only: frozenset[Reason] | None = None,
) -> list[Step]:
    """Clear the scope's blocks and, with an address, that address's suppressions in the
    scope: all or nothing under the clear policy. A suppression set by another contact's
    event is that address's opt-out: the clear acts on ``state``'s contact (see
    ``refusal_for``). ``only``: clear blocks and suppressions of these reasons alone."""
    who = replace(who, contact_id=state.contact_id)
    suppressions = [s for s in state.suppressions if address and s.address == address]
    blocks, cleared = plan_clear(state.blocks, suppressions, direction, scope, reason, who, only)
    return [Step(False, b) for b in blocks] + [Step(False, s) for s in cleared]


def plan_claim_reply(
    state: ContactState, channel: Channel, address: str, now: dt.datetime
) -> tuple[SendDecision, list[Step]]:
    """A COMPLIANCE_REPLY on ``channel`` to ``address`` decided again on the locked state at
    the database's ``now``: while the opt-out's one reply is still to be had
    (``reply_allowance``), the decision allows it and the step claims it (the block's
    ``replied_at``); otherwise the decision denies it (COMPLIANCE_REPLY_SPENT, or what else
    denies it) and there is no step. Of concurrent claims the first to lock the contact wins;
    the others find the reply claimed."""
    decision = decide_send(
        state.blocks,
        channel,
        Direction.OUTBOUND,
        state.suppressions,
        purpose=Purpose.COMPLIANCE_REPLY,
        address=address,
        now=now,
    )
    if decision.claim is None:
        return decision, []
    return decision, [Step(True, ReplyClaim(decision.claim, now))]


def has_sms_dnd(state: ContactState, address: str = "") -> bool:
    """Whether outbound SMS to the contact (or to ``address``) is currently blocked."""
    return has_dnd(state, Channel.SMS, address)


def has_dnd(state: ContactState, channel: Channel, address: str = "") -> bool:
    """Whether outbound ``channel`` to the contact (or to ``address``) is currently blocked."""
    return any(b.covers(Direction.OUTBOUND, channel) for b in state.blocks) or any(
        s.channel is channel and s.address == address for s in state.suppressions if address
    )


# Channels whose inbound messages are read for keywords (STOP, START, HELP...).
KEYWORD_CHANNELS: frozenset[Channel] = frozenset({Channel.SMS, Channel.WHATSAPP, Channel.RCS})
# Channels that share opt-outs for the same number when the location says so.
SHARED_OPT_OUT_CHANNELS: tuple[Channel, ...] = (Channel.SMS, Channel.RCS)


def keyword_channels(channel: Channel, share_rcs_sms: bool) -> tuple[Channel, ...]:
    """The channels a keyword received on ``channel`` acts on: the channel itself, and with
    ``share_rcs_sms`` SMS and RCS together (a keyword on either acts on both)."""
    if share_rcs_sms and channel in SHARED_OPT_OUT_CHANNELS:
        return SHARED_OPT_OUT_CHANNELS
    return (channel,)


def opt_out_reason(channel: Channel) -> Reason:
    """The reason of the block an opt-out keyword sets on ``channel``."""
    return Reason.SMS_OPT_OUT_KEYWORD if channel is Channel.SMS else Reason.KEYWORD_OPT_OUT


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    """What an inbound message did: the action, the steps it takes, and the reply due
    (``reply_due``) with the mark it leaves."""

    action: KeywordKind
    steps: list[Step]
    reply: ReplyKind | None = None
    marks: tuple[ReplyMark, ...] = ()


def plan_inbound_message(
    state: ContactState,
    keyword: Classification,
    body: str,
    from_address: str,
    now: dt.datetime,
    channel: Channel = Channel.SMS,
    share_rcs_sms: bool = False,
    last_opt_out_reply: dt.datetime | None = None,
) -> InboundOutcome:
    """STOP and friends: an opt-out block on the channel (SMS_OPT_OUT_KEYWORD on SMS,
    KEYWORD_OPT_OUT on WhatsApp and RCS) and sender suppression, source CONTACT, revoking the
    channel's consents. START / UNSTOP (and YES while the channel's DND is on or a double
    opt-in waits): clear every outbound block of the channel and the sender's suppressions on
    it, never an all-channels block or inbound DND; confirm the pending double opt-ins within
    their window; and when it lifted an SMS opt-out, record the sender's express SMS_KEYWORD
    consent (MARKETING and INFORMATIONAL). With ``share_rcs_sms`` a keyword on SMS or RCS acts
    on both (``keyword_channels``). Keywords on other channels do nothing.

    The reply due (``replies.reply_due``) comes with the outcome; an opt-out confirmation
    leaves a mark at ``now`` (``last_opt_out_reply`` is the last one on the channel).
    """
    if channel not in KEYWORD_CHANNELS:
        return InboundOutcome(KeywordKind.NONE, [])
    channels = keyword_channels(channel, share_rcs_sms)
    if keyword.kind is KeywordKind.OPT_OUT:
        steps: list[Step] = []
        for each in channels:
            block = Block(
                direction=Direction.OUTBOUND,
                scope=each,
                reason=opt_out_reason(each),
                source=Source.CONTACT,
                actor_id=from_address,
                evidence=body,
                provider_detail=f"keyword:{keyword.matched}",
                since=now,
            )
            steps += plan_add(state, block, from_address)
        opted_out = any(
            isinstance(s.target, Block) and s.enabled and s.target.scope is channel for s in steps
        )
        due = reply_due(KeywordKind.OPT_OUT, opted_out, False, True, last_opt_out_reply, now)
        marks = (ReplyMark(channel.value, due, now),) if due is not None else ()
        return InboundOutcome(KeywordKind.OPT_OUT, steps, due, marks)
    if keyword.kind is KeywordKind.OPT_IN:
        pending = [
            c for each in channels for c in confirmable(state.consents, each, from_address, now)
        ]
        if (
            keyword.conditional
            and not any(has_dnd(state, each, from_address) for each in channels)
            and not pending
        ):
            return InboundOutcome(KeywordKind.NONE, [])
        # The text comes from the number itself: it may lift the number's suppressions
        # whichever contact's event set them.
        who = ClearCredentials(source=Source.CONTACT, from_address=from_address)
        steps = []
        for each in channels:
            steps += plan_remove(state, Direction.OUTBOUND, each, None, who, from_address)
        consents = [confirmed(c) for c in pending]
        if steps and Channel.SMS in channels:
            consents += keyword_consents(
                state.consents,
                Channel.SMS,
                from_address,
                body,
                keyword.matched,
                now,
                skip=[c.key for c in pending],
            )
        removed = {s.target.key for s in steps if isinstance(s.target, Block)}
        still_blocked = any(
            b.covers(Direction.OUTBOUND, channel) and b.key not in removed for b in state.blocks
        )
        due = reply_due(KeywordKind.OPT_IN, False, bool(steps), still_blocked, None, now)
        return InboundOutcome(KeywordKind.OPT_IN, steps + [Step(True, c) for c in consents], due)
    return InboundOutcome(keyword.kind, [], reply_due(keyword.kind, False, False, False, None, now))


def provider_block(
    channel: Channel,
    reason: Reason,
    source: Source,
    provider: str,
    detail: str,
    now: dt.datetime,
) -> Block:
    """The block a provider event sets."""
    return Block(
        direction=Direction.OUTBOUND,
        scope=channel,
        reason=reason,
        source=source,
        actor_id=provider,
        provider_detail=detail,
        since=now,
    )


def plan_record_consent(
    state: ContactState, record: ConsentRecord, now: dt.datetime, window: dt.timedelta
) -> list[Step]:
    """Record (or replace) the consent of ``record``'s key: no step when the same consent is
    already recorded. ``window``: the location's double opt-in window."""
    made = recorded_consent(state.consents, record, now, window)
    return [] if made is None else [Step(True, made)]


def plan_revoke_consent(
    state: ContactState,
    channel: Channel,
    purpose: ConsentPurpose | None,
    address: str,
    now: dt.datetime,
) -> list[Step]:
    """Revoke the standing consents of ``channel`` (one purpose or both, one address or
    all)."""
    return [Step(False, c) for c in to_revoke(state.consents, channel, purpose, address, now)]
