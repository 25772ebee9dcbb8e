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
from dnd_server.domain.provider_events import ADDRESS_SUPPRESSING_REASONS
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
    steps = [Step(True, b) for b in plan_enable(state.blocks, replace(block, address=address))]
    if address and block.reason in ADDRESS_SUPPRESSING_REASONS and block.scope is not None:
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
        if all(s.key != suppression.key for s in state.suppressions):
            steps.append(Step(True, suppression))
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
    return any(b.covers(Direction.OUTBOUND, Channel.SMS) for b in state.blocks) or any(
        s.channel is Channel.SMS and s.address == address for s in state.suppressions if address
    )


@dataclass(frozen=True, slots=True)
class InboundOutcome:
    """What an inbound message did: the action and the steps it takes."""

    action: KeywordKind
    steps: list[Step]


def plan_inbound_message(
    state: ContactState,
    keyword: Classification,
    body: str,
    from_address: str,
    now: dt.datetime,
) -> InboundOutcome:
    """STOP and friends: an SMS opt-out block (and sender suppression), source CONTACT,
    revoking the SMS consents. START / UNSTOP (and YES while SMS DND is on or a double
    opt-in waits): clear every SMS outbound block of the contact and the sender's SMS
    suppressions, never an all-channels block or inbound DND; confirm the pending double
    opt-ins within their window; and when it lifted an opt-out, record the sender's express
    SMS_KEYWORD consent (MARKETING and INFORMATIONAL).
    """
    if keyword.kind is KeywordKind.OPT_OUT:
        block = Block(
            direction=Direction.OUTBOUND,
            scope=Channel.SMS,
            reason=Reason.SMS_OPT_OUT_KEYWORD,
            source=Source.CONTACT,
            actor_id=from_address,
            evidence=body,
            provider_detail=f"keyword:{keyword.matched}",
            since=now,
        )
        return InboundOutcome(KeywordKind.OPT_OUT, plan_add(state, block, from_address))
    if keyword.kind is KeywordKind.OPT_IN:
        pending = confirmable(state.consents, Channel.SMS, from_address, now)
        if keyword.conditional and not has_sms_dnd(state, from_address) and not pending:
            return InboundOutcome(KeywordKind.NONE, [])
        # The text comes from the number itself: it may lift the number's suppressions
        # whichever contact's event set them.
        who = ClearCredentials(source=Source.CONTACT, from_address=from_address)
        steps = plan_remove(state, Direction.OUTBOUND, Channel.SMS, None, who, from_address)
        consents = [confirmed(c) for c in pending]
        if steps:
            consents += keyword_consents(
                state.consents,
                Channel.SMS,
                from_address,
                body,
                keyword.matched,
                now,
                skip=[c.key for c in pending],
            )
        return InboundOutcome(KeywordKind.OPT_IN, steps + [Step(True, c) for c in consents])
    return InboundOutcome(keyword.kind, [])


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
