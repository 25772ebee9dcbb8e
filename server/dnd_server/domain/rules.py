"""The DND rules, written to read like the spec.

- A channel is blocked while any active block covers it; blocks stack.
- Adding DND is always allowed; adding an active (direction, scope, reason) changes nothing.
- Clearing a scope removes every block in it (optionally of one reason), but only when the
  caller's source may clear each of them (``CLEAR_POLICY``); otherwise nothing changes.
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from dnd_server.domain.consent import (
    ALLOWANCE_REASONS,
    COMPLIANCE_REPLY_WINDOW,
    MARKETING_ONLY_REASONS,
    NO_POLICY,
    Consent,
    ConsentPolicy,
    Purpose,
    counting_consent,
    explain_no_consent,
    reply_allowance,
)
from dnd_server.domain.errors import ClearNotPermitted, InvalidArgument, Refusal
from dnd_server.domain.model import (
    ALL_CHANNELS,
    INBOUND_CHANNELS,
    AddressSuppression,
    Block,
    Channel,
    Direction,
    Reason,
    Scope,
    Source,
    StatusSummary,
    Summary,
)
from dnd_server.domain.quiet_hours import QuietVerdict

SMS_REASONS = frozenset(
    {Reason.SMS_OPT_OUT_KEYWORD, Reason.SMS_CARRIER_PERMANENT, Reason.SMS_CARRIER_TEMPORARY}
)
EMAIL_REASONS = frozenset(r for r in Reason if r.value.startswith("EMAIL_"))
WHATSAPP_REASONS = frozenset({Reason.WHATSAPP_MARKETING_OPT_OUT})
# The contact's own opt-out keyword on a channel other than SMS: WhatsApp and RCS, where
# keywords are processed as on SMS (SMS has its own SMS_OPT_OUT_KEYWORD). Not MANUAL: a
# user or a workflow may clear MANUAL, and only the contact (or support with proof) may undo
# the contact's own STOP.
KEYWORD_CHANNEL_REASONS = frozenset({Reason.KEYWORD_OPT_OUT})
KEYWORD_OPT_OUT_CHANNELS = frozenset({Channel.WHATSAPP, Channel.RCS})
# Reasons a block may have on any one channel or on all channels (outbound).
ANY_SCOPE_REASONS = frozenset({Reason.MANUAL, Reason.MARKETING_OPT_OUT})


class Requirement(enum.Enum):
    """What a source must bring to clear a block."""

    NOTHING = "nothing"
    EVIDENCE = "non-empty evidence"
    SUPPRESSION_REMOVED = (
        "confirmation that the address was removed from the provider's suppression list "
        "and re-validated (suppression_removal_confirmed)"
    )


_ANYONE_BUT_SYSTEM = {
    Source.USER: Requirement.NOTHING,
    Source.WORKFLOW: Requirement.NOTHING,
    Source.CONTACT: Requirement.NOTHING,
    Source.SUPPORT: Requirement.NOTHING,
}
_PERMANENT_SMS = {
    Source.CONTACT: Requirement.NOTHING,  # the contact texting START
    Source.SUPPORT: Requirement.EVIDENCE,  # proof of opt-in
}
_EMAIL_SUPPRESSION = {
    Source.USER: Requirement.SUPPRESSION_REMOVED,
    Source.SUPPORT: Requirement.SUPPRESSION_REMOVED,
}

# Who may clear a block of each reason, and what they must bring. A source not listed
# may never clear it.
CLEAR_POLICY: dict[Reason, dict[Source, Requirement]] = {
    Reason.MANUAL: _ANYONE_BUT_SYSTEM,
    Reason.SMS_CARRIER_TEMPORARY: _ANYONE_BUT_SYSTEM,
    Reason.SMS_OPT_OUT_KEYWORD: _PERMANENT_SMS,
    Reason.SMS_CARRIER_PERMANENT: _PERMANENT_SMS,
    # The contact sending START on WhatsApp or RCS, or support with proof of opt-in; never a
    # user, a workflow or a system.
    Reason.KEYWORD_OPT_OUT: _PERMANENT_SMS,
    Reason.EMAIL_SPAM_COMPLAINT: {Source.SUPPORT: Requirement.EVIDENCE},
    Reason.EMAIL_HARD_BOUNCE: _EMAIL_SUPPRESSION,
    Reason.EMAIL_GENERIC_FAILURE: _EMAIL_SUPPRESSION,
    Reason.EMAIL_SUPPRESS_BOUNCE: _EMAIL_SUPPRESSION,
    Reason.EMAIL_SUPPRESS_UNSUBSCRIBE: _EMAIL_SUPPRESSION,
    Reason.EMAIL_SUPPRESS_COMPLAINT: _EMAIL_SUPPRESSION,
    Reason.EMAIL_UNSUBSCRIBE_LINK: {
        Source.USER: Requirement.NOTHING,
        Source.CONTACT: Requirement.NOTHING,
        Source.SUPPORT: Requirement.NOTHING,
    },
    # Marketing-only opt-outs (they deny MARKETING sends only).
    Reason.MARKETING_OPT_OUT: _ANYONE_BUT_SYSTEM,
    # The contact's own "resume", a user or support; never a workflow.
    Reason.WHATSAPP_MARKETING_OPT_OUT: {
        Source.CONTACT: Requirement.NOTHING,
        Source.USER: Requirement.NOTHING,
        Source.SUPPORT: Requirement.NOTHING,
    },
    Reason.EMAIL_MARKETING_UNSUBSCRIBE: {
        Source.CONTACT: Requirement.NOTHING,
        Source.USER: Requirement.NOTHING,
        Source.SUPPORT: Requirement.NOTHING,
    },
}


@functools.cache
def what_clears(reason: Reason) -> str:
    """A one-line description of who may clear a block of ``reason``, from ``CLEAR_POLICY``."""
    if reason in (Reason.SMS_OPT_OUT_KEYWORD, Reason.SMS_CARRIER_PERMANENT):
        return "cleared only by the contact texting START, or by SUPPORT with opt-in evidence"
    if reason is Reason.KEYWORD_OPT_OUT:
        return (
            "cleared only by the contact sending START on the channel, or by SUPPORT with "
            "opt-in evidence"
        )
    parts = []
    for source, requirement in CLEAR_POLICY[reason].items():
        if requirement is Requirement.NOTHING:
            parts.append(source.value)
        else:
            parts.append(f"{source.value} with {requirement.value}")
    return "cleared only by " + ", ".join(parts)


@dataclass(frozen=True, slots=True)
class ClearCredentials:
    """What a clearing caller brings: who they are and what they attest."""

    source: Source
    evidence: str = ""
    suppression_removal_confirmed: bool = False
    # The contact the clearing request names: an address suppression set by another
    # contact's event is that contact's address's opt-out (see ``refusal_for``).
    contact_id: str = ""
    # The address the request comes from itself ("" if none): the number an inbound START
    # was texted from, or an email address undoing its own unsubscribe (``own_address``).
    from_address: str = ""


def own_address(source: Source, channel: Channel | None, address: str) -> str:
    """The address a SetDnd clear comes from itself: source CONTACT naming an email address
    (the address's own unsubscribe-undo). A number speaks for itself only by texting START
    (``plan_inbound_message``), never through SetDnd."""
    if source is Source.CONTACT and channel is Channel.EMAIL:
        return address
    return ""


def refusal_for(block: Block | AddressSuppression, who: ClearCredentials) -> Refusal | None:
    """Why ``who`` may not clear ``block``, or None when it may.

    An address suppression set by another contact's event than the one ``who`` names
    (a "foreign" suppression) belongs to the address: on top of ``CLEAR_POLICY`` it is
    cleared only by SUPPORT with evidence, or by the address itself (CONTACT coming from
    that very address); never by a USER or WORKFLOW acting on another contact.
    """
    foreign = isinstance(block, AddressSuppression) and block.contact_id != who.contact_id
    allowed = CLEAR_POLICY[block.reason]
    requirement = allowed.get(who.source)
    if requirement is None:
        why = f"source {who.source.value} may never clear {block.reason.value}"
    elif requirement is Requirement.EVIDENCE and not who.evidence.strip():
        why = f"source {who.source.value} must give {requirement.value}"
    elif requirement is Requirement.SUPPRESSION_REMOVED and not who.suppression_removal_confirmed:
        why = f"source {who.source.value} must give {requirement.value}"
    elif foreign:
        assert isinstance(block, AddressSuppression)
        refused = _foreign_refusal(block, who)
        if refused is None:
            return None
        why = refused
    else:
        return None
    if foreign:
        assert isinstance(block, AddressSuppression)
        return Refusal(block=block, why=why, what_clears_it=what_clears_foreign(block))
    return Refusal(block=block, why=why, what_clears_it=what_clears(block.reason))


def _foreign_refusal(suppression: AddressSuppression, who: ClearCredentials) -> str | None:
    """Why ``who`` (allowed by the clear policy) may still not clear a suppression set by
    another contact's event, or None when it may."""
    # The contact whose event set it is not named: a refusal reaches callers without the read
    # permission, who may not learn which contact holds an address (GetStatus shows it).
    if who.source is Source.SUPPORT:
        if who.evidence.strip():
            return None
        return (
            "source SUPPORT must give non-empty evidence to clear a suppression set by "
            "another contact's event"
        )
    if who.source is Source.CONTACT and who.from_address == suppression.address:
        return None
    return (
        f"the suppression was set by another contact's event; source {who.source.value} "
        f"acting on contact {who.contact_id} is not the address itself and may not clear it"
    )


def what_clears_foreign(suppression: AddressSuppression) -> str:
    """Who may clear ``suppression`` from a contact other than the one whose event set it,
    and what clears it from that contact."""
    reason = suppression.reason
    policy = CLEAR_POLICY[reason]
    support = policy.get(Source.SUPPORT)
    extra = (
        f" and {support.value}"
        if support not in (None, Requirement.NOTHING, Requirement.EVIDENCE)
        else ""
    )
    ways = [f"SUPPORT with non-empty evidence{extra}"]
    if Source.CONTACT in policy:
        if suppression.channel is Channel.SMS:
            ways.append(f"the number itself texting START from {suppression.address}")
        else:
            ways.append(
                f"the address itself undoing its unsubscribe (SetDnd DISABLE, source CONTACT, "
                f"address {suppression.address})"
            )
    return (
        f"set by another contact's event: from any other contact {' or '.join(ways)} may "
        f"clear it; from the contact whose event set it, {what_clears(reason)}"
    )


def validate_block_shape(direction: Direction, scope: Scope, reason: Reason) -> None:
    """Raise InvalidArgument unless a block of ``reason`` may exist on this scope."""
    if direction is Direction.INBOUND and scope is not None:
        raise InvalidArgument.one(
            "scope", "inbound DND covers calls and SMS together and cannot name a channel"
        )
    if reason is Reason.MANUAL:
        return
    if direction is Direction.INBOUND:
        raise InvalidArgument.one("reason", f"{reason.value} cannot be inbound; only MANUAL can")
    if scope is None and reason not in ANY_SCOPE_REASONS:
        raise InvalidArgument.one(
            "reason",
            f"{reason.value} cannot cover all channels; only MANUAL and MARKETING_OPT_OUT can",
        )
    if reason in SMS_REASONS and scope is not Channel.SMS:
        raise InvalidArgument.one("reason", f"{reason.value} exists only on the SMS channel")
    if reason in EMAIL_REASONS and scope is not Channel.EMAIL:
        raise InvalidArgument.one("reason", f"{reason.value} exists only on the EMAIL channel")
    if reason in WHATSAPP_REASONS and scope is not Channel.WHATSAPP:
        raise InvalidArgument.one("reason", f"{reason.value} exists only on the WHATSAPP channel")
    if reason in KEYWORD_CHANNEL_REASONS and scope not in KEYWORD_OPT_OUT_CHANNELS:
        raise InvalidArgument.one(
            "reason", f"{reason.value} exists only on the WHATSAPP and RCS channels"
        )


def plan_enable(active: Iterable[Block], new: Block) -> list[Block]:
    """The blocks to add: ``new``, unless a block with its key is already active."""
    validate_block_shape(new.direction, new.scope, new.reason)
    if any(block.key == new.key for block in active):
        return []
    return [new]


def in_clear_scope(block: Block, direction: Direction, scope: Scope, reason: Reason | None) -> bool:
    """Whether a clear of (direction, scope, reason) removes ``block``.

    One channel: that channel's own blocks. ALL: every block of the direction.
    """
    if block.direction is not direction:
        return False
    if scope is not None and block.scope is not scope:
        return False
    return reason is None or block.reason is reason


def plan_disable(
    active: Iterable[Block],
    direction: Direction,
    scope: Scope,
    reason: Reason | None,
    who: ClearCredentials,
) -> list[Block]:
    """The blocks a clear removes; raises ClearNotPermitted (changing nothing) if any of
    them may not be cleared by ``who``."""
    return plan_clear(active, (), direction, scope, reason, who)[0]


def plan_clear(
    active: Iterable[Block],
    suppressions: Iterable[AddressSuppression],
    direction: Direction,
    scope: Scope,
    reason: Reason | None,
    who: ClearCredentials,
    only: frozenset[Reason] | None = None,
) -> tuple[list[Block], list[AddressSuppression]]:
    """The blocks and address suppressions a clear removes, all or nothing: raises
    ClearNotPermitted listing every one ``who`` may not clear. ``only``: the clear removes
    blocks and suppressions of these reasons alone (a marketing-only clear:
    ``MARKETING_ONLY_REASONS``)."""
    if direction is Direction.INBOUND and scope is not None:
        raise InvalidArgument.one(
            "scope", "inbound DND covers calls and SMS together and cannot name a channel"
        )
    if reason is not None and reason is not Reason.MANUAL and scope is not None:
        validate_block_shape(direction, scope, reason)
    blocks = [
        b
        for b in active
        if in_clear_scope(b, direction, scope, reason) and (only is None or b.reason in only)
    ]
    addresses = [
        s
        for s in suppressions
        if direction is Direction.OUTBOUND
        and (scope is None or s.channel is scope)
        and (reason is None or s.reason is reason)
        and (only is None or s.reason in only)
    ]
    targets: list[Block | AddressSuppression] = [*blocks, *addresses]
    refusals = [r for r in (refusal_for(t, who) for t in targets) if r is not None]
    if refusals:
        raise ClearNotPermitted(refusals)
    return blocks, addresses


def summarize(blocks: Sequence[Block]) -> StatusSummary:
    if not blocks:
        return _NOTHING_BLOCKED
    # One pass over the blocks: an outbound block covers its channel, or every channel.
    all_block = inbound_block = False
    scoped: set[Channel] = set()
    for b in blocks:
        if b.direction is Direction.OUTBOUND:
            if b.scope is None:
                all_block = True
            else:
                scoped.add(b.scope)
        elif b.direction is Direction.INBOUND:
            inbound_block = True
    blocked = ALL_CHANNELS if all_block else tuple(c for c in ALL_CHANNELS if c in scoped)
    if all_block or len(blocked) == len(ALL_CHANNELS):
        outbound = Summary.ON
    elif blocked:
        outbound = Summary.PARTIAL
    else:
        outbound = Summary.OFF
    inbound = Summary.ON if inbound_block else Summary.OFF
    return StatusSummary(outbound=outbound, inbound=inbound, blocked_channels=blocked)


_NOTHING_BLOCKED = StatusSummary(outbound=Summary.OFF, inbound=Summary.OFF, blocked_channels=())


class Denial(enum.StrEnum):
    """What denied a send."""

    DND_BLOCK = "DND_BLOCK"
    ADDRESS_SUPPRESSED = "ADDRESS_SUPPRESSED"
    MARKETING_OPT_OUT = "MARKETING_OPT_OUT"
    NO_CONSENT = "NO_CONSENT"
    COMPLIANCE_REPLY_SPENT = "COMPLIANCE_REPLY_SPENT"


@dataclass(frozen=True, slots=True)
class SendDecision:
    allowed: bool
    denied_by: tuple[Block, ...]
    explanation: str
    denied_by_address: tuple[AddressSuppression, ...] = ()
    denial: Denial | None = None
    # A COMPLIANCE_REPLY is allowed only once the one reply of this opt-out is claimed (a
    # write: ``plan_claim_reply``); whoever claims it first sends it.
    claim: Block | None = None
    # The consent that allowed the send, where the location's policy requires one.
    consent: Consent | None = None
    # What quiet hours said of a send DND allows (None: not judged). Deferred: ``allowed``
    # is False, ``denial`` None and ``quiet.not_before`` the earliest allowed instant.
    quiet: QuietVerdict | None = None

    @property
    def deferred(self) -> bool:
        return self.quiet is not None and not self.quiet.allowed


def with_quiet_hours(decision: SendDecision, verdict: QuietVerdict) -> SendDecision:
    """``decision`` (an allowed one) as quiet hours leave it: allowed still, or deferred.
    A denial is never deferred: it stands, with no time it may go."""
    assert decision.allowed
    # Built field by field (dataclasses.replace costs more than the rest of the check);
    # tests/unit/test_quiet_hours.py fails when SendDecision gains a field not copied here.
    return SendDecision(
        allowed=verdict.allowed,
        denied_by=decision.denied_by,
        explanation=decision.explanation if verdict.allowed else verdict.explanation,
        denied_by_address=decision.denied_by_address,
        denial=decision.denial,
        claim=decision.claim,
        consent=decision.consent,
        quiet=verdict,
    )


def decide_send(
    blocks: Sequence[Block],
    channel: Channel,
    direction: Direction,
    suppressions: Sequence[AddressSuppression] = (),
    *,
    purpose: Purpose | None = None,
    address: str = "",
    consents: Sequence[Consent] = (),
    policy: ConsentPolicy = NO_POLICY,
    now: dt.datetime | None = None,
) -> SendDecision:
    """May a message go out (or come in) on ``channel``? Manual and automated sends alike.

    ``suppressions`` are those of the destination ``address``: any on this channel denies an
    outbound send, whichever contact set it. Then, by ``purpose`` (None: not stated):

    - DND blocks and suppressions deny every purpose, except the one COMPLIANCE_REPLY right
      after an opt-out (``reply_allowance``): allowed once claimed (``SendDecision.claim``);
    - marketing-only opt-outs deny MARKETING and unstated purposes;
    - where ``policy`` requires consent for the purpose on the channel, a consent must count
      at ``now`` (``counting_consent``), or the send is denied NO_CONSENT.

    A send denied without ``policy`` is denied alike whatever it says (a policy only ever
    denies what DND allows): the policy need be read only for the sends allowed without it.
    """
    outbound = direction is Direction.OUTBOUND
    needed = policy.requires(channel, purpose) if outbound else None
    if not blocks and not suppressions and needed is None:
        return _allowed(channel, direction)  # the common case: nothing to look at
    covering = [b for b in blocks if b.covers(direction, channel)]
    dnd = tuple(b for b in covering if b.reason not in MARKETING_ONLY_REASONS)
    by_address = tuple(s for s in suppressions if outbound and s.channel is channel)
    if dnd or by_address:
        if purpose is Purpose.COMPLIANCE_REPLY and outbound:
            return _compliance_reply(blocks, dnd, by_address, channel, address, _now(now))
        if dnd:
            why = explain_denial(dnd[0], channel, direction)
            return SendDecision(False, dnd, why, by_address, Denial.DND_BLOCK)
        why = explain_address_denial(by_address[0], channel)
        return SendDecision(False, (), why, by_address, Denial.ADDRESS_SUPPRESSED)
    marketing = tuple(b for b in covering if b.reason in MARKETING_ONLY_REASONS)
    if marketing and purpose in (None, Purpose.MARKETING):
        why = explain_denial(marketing[0], channel, direction)
        return SendDecision(False, marketing, why, (), Denial.MARKETING_OPT_OUT)
    if needed is not None:
        at = _now(now)
        counting = counting_consent(consents, channel, needed, address, at)
        if counting is None:
            why = explain_no_consent(consents, channel, needed, address, at)
            return SendDecision(False, (), why, (), Denial.NO_CONSENT)
        why = (
            f"allowed: no active DND covers outbound {channel.value}, and the contact's "
            f"{needed.value} consent ({counting.method.value}, captured "
            f"{_iso(counting.captured_at)}) counts"
        )
        return SendDecision(True, (), why, consent=counting)
    return _allowed(channel, direction)


def _now(now: dt.datetime | None) -> dt.datetime:
    return now if now is not None else dt.datetime.now(dt.UTC)


def _compliance_reply(
    blocks: Sequence[Block],
    dnd: tuple[Block, ...],
    by_address: tuple[AddressSuppression, ...],
    channel: Channel,
    address: str,
    now: dt.datetime,
) -> SendDecision:
    """A COMPLIANCE_REPLY where DND denies: the one reply of a fresh opt-out, or nothing."""
    opt_out = reply_allowance(blocks, channel, address, now)
    if opt_out is not None and not opt_out.address and by_address:
        assert opt_out.since is not None
        # An opt-out that named no address allows its reply to any address, but not to one
        # an opt-out suppressed (that opt-out had its own reply, or it is another contact's).
        why = (
            f"denied: the one compliance reply after the {opt_out.reason.value} opt-out of "
            f"{_iso(opt_out.since)} may not go to {address}, which is suppressed on "
            f"{channel.value}; name the address the opt-out came from"
        )
        return SendDecision(False, dnd, why, by_address, Denial.COMPLIANCE_REPLY_SPENT)
    if opt_out is not None:
        assert opt_out.since is not None
        why = (
            f"allowed once: the compliance reply to the {opt_out.reason.value} opt-out of "
            f"{_iso(opt_out.since)} (one reply, within "
            f"{int(COMPLIANCE_REPLY_WINDOW.total_seconds() // 60)} minutes of the opt-out)"
        )
        return SendDecision(True, (), why, claim=opt_out)
    spent = [
        b
        for b in dnd
        if b.reason in ALLOWANCE_REASONS and b.scope is channel and b.since is not None
    ]
    if spent:
        latest = max(spent, key=lambda b: b.since or now)
        assert latest.since is not None
        if latest.replied_at is not None:
            when = f"was already allowed at {_iso(latest.replied_at)}"
        elif now >= latest.since + COMPLIANCE_REPLY_WINDOW:
            when = "is no longer allowed: the 5 minutes after the opt-out are over"
        else:
            when = "may go only to the address that opted out"
        why = (
            f"denied: the one compliance reply after the {latest.reason.value} opt-out of "
            f"{_iso(latest.since)} {when}"
        )
        return SendDecision(False, dnd, why, by_address, Denial.COMPLIANCE_REPLY_SPENT)
    if dnd:
        return SendDecision(
            False,
            dnd,
            explain_denial(dnd[0], channel, Direction.OUTBOUND),
            by_address,
            Denial.DND_BLOCK,
        )
    why = explain_address_denial(by_address[0], channel)
    return SendDecision(False, (), why, by_address, Denial.ADDRESS_SUPPRESSED)


def explain_without_holder(decision: SendDecision, channel: Channel) -> str:
    """The explanation of ``decision`` for a caller told decisions, not dossiers: a denial by
    address suppressions alone names neither the address nor the contact whose event
    suppressed it (a contact's own blocks name no one else)."""
    if not decision.denied_by and decision.denied_by_address:
        return explain_address_denial(decision.denied_by_address[0], channel, name_holder=False)
    return decision.explanation


@functools.lru_cache(maxsize=65536)
def explain_address_denial(
    suppression: AddressSuppression, channel: Channel, name_holder: bool = True
) -> str:
    """Why a send to a suppressed address is denied. ``name_holder=False`` (for a caller told
    decisions only) names neither the address nor the contact whose event suppressed it."""
    if not name_holder:
        return (
            f"denied: the address is suppressed for {channel.value} by "
            f"{suppression.reason.value} (set by {suppression.source.value}"
            f"{_since(suppression.since)}); {what_clears(suppression.reason)}"
        )
    if suppression.erased:
        return (
            f"denied: address {suppression.address} is suppressed for {channel.value} by "
            f"{suppression.reason.value} (the opt-out of an erased contact, set by "
            f"{suppression.source.value}{_since(suppression.since)}); it is kept after the "
            "erasure and never cleared"
        )
    return (
        f"denied: address {suppression.address} is suppressed for {channel.value} by "
        f"{suppression.reason.value} (set by {suppression.source.value} via contact "
        f"{suppression.contact_id}{_since(suppression.since)}); {what_clears(suppression.reason)}"
    )


@functools.cache
def _allowed(channel: Channel, direction: Direction) -> SendDecision:
    if direction is Direction.INBOUND and channel not in INBOUND_CHANNELS:
        why = f"inbound DND never covers {channel.value}"
    else:
        why = f"no active DND covers {direction.value.lower()} {channel.value}"
    return SendDecision(True, (), f"allowed: {why}")


@functools.lru_cache(maxsize=65536)
def explain_denial(block: Block, channel: Channel, direction: Direction) -> str:
    scope = "all channels" if block.scope is None else block.scope.value
    return (
        f"denied: {direction.value.lower()} {channel.value} is blocked by {block.reason.value} "
        f"on {scope} (set by {block.source.value}{_since(block.since)}); "
        f"{what_clears(block.reason)}"
    )


def _since(when: dt.datetime | None) -> str:
    return f" since {_iso(when)}" if when else ""


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
