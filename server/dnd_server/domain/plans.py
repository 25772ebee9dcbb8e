"""What each request does to a contact's state: pure functions from the locked current state
to the steps to take. The storage layer runs them inside the writing transaction."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, replace

from dnd_server.domain.keywords import Classification, KeywordKind
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    Channel,
    ContactState,
    Direction,
    Reason,
    Scope,
    Source,
    Step,
)
from dnd_server.domain.provider_events import ADDRESS_SUPPRESSING_REASONS
from dnd_server.domain.rules import ClearCredentials, plan_clear, plan_enable


def plan_add(state: ContactState, block: Block, address: str = "") -> list[Step]:
    """Add ``block`` unless already active; with an address and an opt-out or permanent
    failure reason, also suppress the address (unless already suppressed for that reason)."""
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
    return steps


def plan_remove(
    state: ContactState,
    direction: Direction,
    scope: Scope,
    reason: Reason | None,
    who: ClearCredentials,
    address: str = "",
) -> list[Step]:
    """Clear the scope's blocks and, with an address, that address's suppressions in the
    scope: all or nothing under the clear policy. A suppression set by another contact's
    event is that address's opt-out: the clear acts on ``state``'s contact (see
    ``refusal_for``)."""
    who = replace(who, contact_id=state.contact_id)
    suppressions = [s for s in state.suppressions if address and s.address == address]
    blocks, cleared = plan_clear(state.blocks, suppressions, direction, scope, reason, who)
    return [Step(False, b) for b in blocks] + [Step(False, s) for s in cleared]


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
    """STOP and friends: an SMS opt-out block (and sender suppression), source CONTACT.
    START / UNSTOP (and YES while SMS DND is on): clear every SMS outbound block of the
    contact and the sender's SMS suppressions; never an all-channels block or inbound DND.
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
        if keyword.conditional and not has_sms_dnd(state, from_address):
            return InboundOutcome(KeywordKind.NONE, [])
        # The text comes from the number itself: it may lift the number's suppressions
        # whichever contact's event set them.
        who = ClearCredentials(source=Source.CONTACT, from_address=from_address)
        steps = plan_remove(state, Direction.OUTBOUND, Channel.SMS, None, who, from_address)
        return InboundOutcome(KeywordKind.OPT_IN, steps)
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
