"""What the answer to an inbound message tells the messaging system: the keyword that acted,
whether to deliver the message to the inbox, whether outbound SMS stays blocked, and why."""

from __future__ import annotations

from dataclasses import dataclass

from dnd_server.domain.keywords import Classification, KeywordKind
from dnd_server.domain.model import INBOUND_CHANNELS, Block, Channel, ContactState, Direction
from dnd_server.domain.plans import KEYWORD_CHANNELS


@dataclass(frozen=True, slots=True)
class InboundVerdict:
    action: KeywordKind
    # The keyword that acted ("" when none did).
    matched_keyword: str
    deliver_to_inbox: bool
    # Whether outbound SMS to the contact is still blocked, and the contact's blocks doing it.
    sms_blocked: bool
    sms_blocked_by: tuple[Block, ...]
    explanation: str


def inbound_verdict(
    channel: Channel,
    keyword: Classification,
    action: KeywordKind,
    state: ContactState,
    channels: tuple[Channel, ...] = (),
) -> InboundVerdict:
    """The verdict on an inbound message on ``channel`` classified as ``keyword`` that did
    ``action`` (on ``channels``), from the contact's state after it (``state``)."""
    sms_blocks = tuple(b for b in state.blocks if b.covers(Direction.OUTBOUND, Channel.SMS))
    channel_blocks = tuple(b for b in state.blocks if b.covers(Direction.OUTBOUND, channel))
    inbound_on = any(b.direction is Direction.INBOUND for b in state.blocks)
    # Inbound DND stops inbound calls and SMS only.
    withheld = inbound_on and channel in INBOUND_CHANNELS
    return InboundVerdict(
        action=action,
        matched_keyword=keyword.matched if action is not KeywordKind.NONE else "",
        deliver_to_inbox=not withheld,
        sms_blocked=bool(sms_blocks) or any(s.channel is Channel.SMS for s in state.suppressions),
        sms_blocked_by=sms_blocks,
        explanation=explain_inbound(channel, keyword, action, channel_blocks, withheld, channels),
    )


def explain_inbound(
    channel: Channel,
    keyword: Classification,
    action: KeywordKind,
    channel_blocks: tuple[Block, ...],
    withheld: bool,
    channels: tuple[Channel, ...] = (),
) -> str:
    """One line saying what the message did; ``channels``: those the keyword acted on."""
    if channel not in KEYWORD_CHANNELS:
        return f"keywords are not processed on {channel.value}; nothing changed"
    names = " and ".join(c.value for c in channels) if channels else channel.value
    if action is KeywordKind.OPT_OUT:
        text = f"opted out of {names} ({keyword.matched})"
    elif action is KeywordKind.OPT_IN:
        text = f"opted in to {names} ({keyword.matched})"
        if channel_blocks:
            reasons = ", ".join(sorted({b.reason.value for b in channel_blocks}))
            text += f"; {channel.value} is still blocked by {reasons}"
    elif action is KeywordKind.HELP:
        text = "help requested: send the location's help text"
    elif keyword.kind is KeywordKind.OPT_IN:
        text = f"{keyword.matched} ignored: the contact has no {channel.value} DND"
    else:
        text = "not a keyword"
    if withheld:
        text += "; inbound DND is on: do not deliver to the inbox"
    return text
