"""Consent and purpose, written to read like the rules.

- A send has a **purpose**: MARKETING, INFORMATIONAL (reminders, account notices),
  TRANSACTIONAL (receipts, codes the contact asked for) or COMPLIANCE_REPLY (an opt-out or
  opt-in confirmation, a HELP answer). Without one a check behaves as before purposes existed:
  DND only.
- DND blocks deny every purpose. **Marketing-only opt-outs** (WhatsApp's "stop marketing",
  a marketing stream's unsubscribe, a marketing-only SetDnd) deny MARKETING only.
- **Compliance allowance** (47 CFR 64.1200(a)(12)): right after an opt-out by keyword,
  revocation phrase or unsubscribe, exactly one COMPLIANCE_REPLY on the channel of the opt-out
  may go to that contact and address, within five minutes of it.
- **Consent** is recorded per contact (optionally one address), channel and purpose
  (MARKETING or INFORMATIONAL), with how and when it was captured and the proof. Express
  consent counts until revoked (or until an expiry the caller gave); implied consent counts
  until it expires (CASL: two years after a purchase, six months after an inquiry). A
  double opt-in consent is pending until the contact confirms (YES / START) within the
  location's window; unconfirmed, it expires.
- A location's **policy** may require consent, per channel, for MARKETING (and then optionally
  for INFORMATIONAL): a check of such a purpose without consent that counts is denied
  (NO_CONSENT), saying what would allow it. Off by default.
- An opt-out revokes the consent of its channel (a marketing-only opt-out: the marketing
  consent only) in the same change.
"""

from __future__ import annotations

import calendar
import datetime as dt
import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from dnd_server.domain.errors import FieldViolation, InvalidArgument
from dnd_server.domain.model import Block, Channel, Direction, Reason, Source


class Purpose(enum.StrEnum):
    MARKETING = "MARKETING"
    INFORMATIONAL = "INFORMATIONAL"
    TRANSACTIONAL = "TRANSACTIONAL"
    COMPLIANCE_REPLY = "COMPLIANCE_REPLY"


class ConsentPurpose(enum.StrEnum):
    """What a consent is given for (transactional messages and compliance replies need none)."""

    MARKETING = "MARKETING"
    INFORMATIONAL = "INFORMATIONAL"


class ConsentMethod(enum.StrEnum):
    WEB_FORM = "WEB_FORM"
    SMS_KEYWORD = "SMS_KEYWORD"
    DOUBLE_OPT_IN = "DOUBLE_OPT_IN"
    VERBAL = "VERBAL"
    WRITTEN = "WRITTEN"
    IMPORT = "IMPORT"
    API = "API"


class ConsentKind(enum.StrEnum):
    EXPRESS = "EXPRESS"
    IMPLIED = "IMPLIED"


class ImpliedBasis(enum.StrEnum):
    """Why implied consent exists (CASL's existing business relationship)."""

    PURCHASE = "PURCHASE"
    INQUIRY = "INQUIRY"


# How long implied consent lasts after what it rests on (CASL s. 10(10)), in months.
IMPLIED_VALIDITY_MONTHS: dict[ImpliedBasis, int] = {
    ImpliedBasis.PURCHASE: 24,
    ImpliedBasis.INQUIRY: 6,
}


class ConsentStatus(enum.StrEnum):
    ACTIVE = "ACTIVE"
    # A double opt-in waiting for the contact's confirmation.
    PENDING = "PENDING"
    REVOKED = "REVOKED"
    # Past its expiry (implied consent, a given expiry, an unconfirmed double opt-in).
    EXPIRED = "EXPIRED"


# Purposes a consent can be required for, and the consent purpose that covers each.
CONSENT_FOR: dict[Purpose, ConsentPurpose] = {
    Purpose.MARKETING: ConsentPurpose.MARKETING,
    Purpose.INFORMATIONAL: ConsentPurpose.INFORMATIONAL,
}

# Opt-outs that deny MARKETING only.
MARKETING_ONLY_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.MARKETING_OPT_OUT,
        Reason.WHATSAPP_MARKETING_OPT_OUT,
        Reason.EMAIL_MARKETING_UNSUBSCRIBE,
    }
)

# Opt-outs after which the one compliance reply is allowed: a keyword or revocation phrase
# (SMS), an unsubscribe (email). A marketing-only opt-out needs no allowance: it never denies a
# COMPLIANCE_REPLY.
ALLOWANCE_REASONS: frozenset[Reason] = frozenset(
    {Reason.SMS_OPT_OUT_KEYWORD, Reason.KEYWORD_OPT_OUT, Reason.EMAIL_UNSUBSCRIBE_LINK}
)
COMPLIANCE_REPLY_WINDOW = dt.timedelta(minutes=5)

# Opt-outs the contact (or a carrier or mailbox provider on the contact's behalf) expressed:
# they revoke the consent of their channel. A DND block a user or a workflow sets is not the
# contact withdrawing consent and revokes nothing.
REVOKING_REASONS: frozenset[Reason] = frozenset(
    {
        Reason.SMS_OPT_OUT_KEYWORD,
        Reason.KEYWORD_OPT_OUT,
        Reason.SMS_CARRIER_PERMANENT,
        Reason.EMAIL_SPAM_COMPLAINT,
        Reason.EMAIL_UNSUBSCRIBE_LINK,
        Reason.EMAIL_SUPPRESS_UNSUBSCRIBE,
        Reason.EMAIL_SUPPRESS_COMPLAINT,
    }
    | MARKETING_ONLY_REASONS
)

# Bounded sizes of a consent's proof (characters). Evidence is stored and shown to readers,
# never logged.
EVIDENCE_LIMITS: dict[str, int] = {
    "form_url": 2048,
    "disclosure_text": 4000,
    "disclosure_version": 64,
    "ip_address": 45,
    "user_agent": 512,
    "recording_ref": 512,
}


@dataclass(frozen=True, slots=True)
class ConsentEvidence:
    """The proof of a consent: where and how it was captured."""

    form_url: str = ""
    disclosure_text: str = ""
    disclosure_version: str = ""
    ip_address: str = ""
    user_agent: str = ""
    recording_ref: str = ""

    def violations(self, prefix: str = "evidence") -> list[FieldViolation]:
        problems = []
        for name, limit in EVIDENCE_LIMITS.items():
            value: str = getattr(self, name)
            if len(value) > limit:
                problems.append(
                    FieldViolation(
                        f"{prefix}.{name}", f"{len(value)} characters; at most {limit} allowed"
                    )
                )
        return problems


@dataclass(frozen=True, slots=True)
class ConsentKey:
    channel: Channel
    purpose: ConsentPurpose
    # "" for the contact itself (any of its addresses).
    address: str = ""


@dataclass(frozen=True, slots=True)
class Consent:
    """One consent of a contact for a channel and purpose (optionally one address)."""

    channel: Channel
    purpose: ConsentPurpose
    method: ConsentMethod
    kind: ConsentKind
    status: ConsentStatus
    captured_at: dt.datetime
    source: Source
    address: str = ""
    actor_id: str = ""
    evidence: ConsentEvidence = field(default_factory=ConsentEvidence)
    # From then on it no longer counts (implied consent, or an expiry the caller gave).
    expires_at: dt.datetime | None = None
    # A pending double opt-in must be confirmed before then, or it expires.
    confirm_by: dt.datetime | None = None
    revoked_at: dt.datetime | None = None
    # What revoked it: an opt-out's reason, or "REVOKED" for an explicit revocation.
    revoked_by: str = ""
    # Free text about where the consent came from (a campaign, an import batch, a form name).
    consent_source: str = ""

    @property
    def key(self) -> ConsentKey:
        return ConsentKey(self.channel, self.purpose, self.address)

    def status_at(self, now: dt.datetime) -> ConsentStatus:
        """The status at ``now``: a pending consent past its confirmation window, or an
        active one past its expiry, has expired."""
        if self.status is ConsentStatus.PENDING and self.confirm_by and now >= self.confirm_by:
            return ConsentStatus.EXPIRED
        if self.status is ConsentStatus.ACTIVE and self.expires_at and now >= self.expires_at:
            return ConsentStatus.EXPIRED
        return self.status

    def covers(self, channel: Channel, purpose: ConsentPurpose, address: str) -> bool:
        """Whether this consent is about ``channel`` and ``purpose`` for a send to
        ``address``: a contact-wide consent covers every address, an address's consent only
        sends that name that address."""
        return (
            self.channel is channel
            and self.purpose is purpose
            and (not self.address or self.address == address)
        )


def add_months(when: dt.datetime, months: int) -> dt.datetime:
    """``when`` plus whole calendar months, the day clamped to the month's length."""
    month_index = when.month - 1 + months
    year, month = when.year + month_index // 12, month_index % 12 + 1
    day = min(when.day, calendar.monthrange(year, month)[1])
    return when.replace(year=year, month=month, day=day)


def implied_expiry(basis: ImpliedBasis, since: dt.datetime) -> dt.datetime:
    """When implied consent resting on ``basis`` (a purchase or inquiry at ``since``) ends."""
    return add_months(since, IMPLIED_VALIDITY_MONTHS[basis])


@dataclass(frozen=True, slots=True)
class ChannelPolicy:
    """Which purposes need consent on one channel."""

    marketing: bool = False
    informational: bool = False

    def requires(self, purpose: Purpose) -> ConsentPurpose | None:
        if purpose is Purpose.MARKETING and self.marketing:
            return ConsentPurpose.MARKETING
        if purpose is Purpose.INFORMATIONAL and self.informational:
            return ConsentPurpose.INFORMATIONAL
        return None


DEFAULT_DOUBLE_OPT_IN_WINDOW = dt.timedelta(hours=24)
MAX_DOUBLE_OPT_IN_WINDOW = dt.timedelta(days=30)


@dataclass(frozen=True, slots=True)
class ConsentPolicy:
    """A location's consent policy: off by default (no channel requires consent)."""

    channels: Mapping[Channel, ChannelPolicy] = field(default_factory=dict)
    double_opt_in_window: dt.timedelta = DEFAULT_DOUBLE_OPT_IN_WINDOW

    def requires(self, channel: Channel, purpose: Purpose | None) -> ConsentPurpose | None:
        if purpose is None:
            return None
        rules = self.channels.get(channel)
        return rules.requires(purpose) if rules is not None else None


NO_POLICY = ConsentPolicy()


def validate_policy(policy: ConsentPolicy) -> ConsentPolicy:
    """Raise InvalidArgument for a policy that cannot be meant; return it unchanged."""
    problems = []
    for channel, rules in policy.channels.items():
        if rules.informational and not rules.marketing:
            problems.append(
                FieldViolation(
                    f"channels[{channel.value}].informational",
                    "requiring consent for INFORMATIONAL needs it for MARKETING too",
                )
            )
    window = policy.double_opt_in_window
    if not dt.timedelta(minutes=1) <= window <= MAX_DOUBLE_OPT_IN_WINDOW:
        problems.append(
            FieldViolation(
                "double_opt_in_window", "must be between 1 minute and 30 days (0 means 24 hours)"
            )
        )
    if problems:
        raise InvalidArgument(problems)
    return policy


def counting_consent(
    consents: Iterable[Consent],
    channel: Channel,
    purpose: ConsentPurpose,
    address: str,
    now: dt.datetime,
) -> Consent | None:
    """The consent that allows a send of ``purpose`` on ``channel`` to ``address`` at
    ``now``, or None: one active at ``now`` and captured by then, that covers the address,
    and (a contact-wide one) not revoked for that address since it was captured."""
    consents = list(consents)
    for consent in consents:
        if (
            consent.covers(channel, purpose, address)
            and consent.status_at(now) is ConsentStatus.ACTIVE
            and consent.captured_at <= now
            and not (not consent.address and _revoked_for(consents, consent, address))
        ):
            return consent
    return None


def _revoked_for(consents: Sequence[Consent], wide: Consent, address: str) -> bool:
    """Whether the contact-wide consent ``wide`` was revoked for ``address`` alone (a revoked
    consent of that address, revoked after ``wide`` was captured)."""
    return bool(address) and any(
        c.address == address
        and c.channel is wide.channel
        and c.purpose is wide.purpose
        and c.status is ConsentStatus.REVOKED
        and c.revoked_at is not None
        and c.revoked_at >= wide.captured_at
        for c in consents
    )


def explain_no_consent(
    consents: Sequence[Consent],
    channel: Channel,
    purpose: ConsentPurpose,
    address: str,
    now: dt.datetime,
) -> str:
    """Why no consent counts, and what would allow the send."""
    known = [c for c in consents if c.channel is channel and c.purpose is purpose]
    why = "no consent recorded"
    for consent in known:
        status = consent.status_at(now)
        if consent.address and consent.address != address:
            why = f"the consent recorded is for {consent.address} only"
            if not address:
                why += " and the check names no address"
        elif status is ConsentStatus.PENDING:
            why = "the double opt-in is still waiting for the contact's confirmation"
        elif status is ConsentStatus.EXPIRED:
            why = "the consent has expired"
        elif status is ConsentStatus.REVOKED:
            why = f"the consent was revoked ({consent.revoked_by or 'REVOKED'})"
    return (
        f"denied: NO_CONSENT: the location requires {purpose.value} consent on "
        f"{channel.value} and {why}; record the contact's consent (RecordConsent), or a "
        "double opt-in the contact confirms, to allow it"
    )


def reply_allowance(
    blocks: Iterable[Block], channel: Channel, address: str, now: dt.datetime
) -> Block | None:
    """The opt-out whose one compliance reply a send on ``channel`` to ``address`` may still
    be: by keyword, revocation phrase or unsubscribe, on this channel, less than five minutes
    before ``now``, its reply not yet allowed. None when there is none."""
    for block in blocks:
        if (
            block.reason in ALLOWANCE_REASONS
            and block.direction is Direction.OUTBOUND
            and block.scope is channel
            and block.since is not None
            and block.since <= now < block.since + COMPLIANCE_REPLY_WINDOW
            and block.replied_at is None
            and (not address or not block.address or block.address == address)
        ):
            return block
    return None


def revoked_by_opt_out(
    consents: Iterable[Consent], block: Block, address: str, now: dt.datetime
) -> list[Consent]:
    """The consents an opt-out ``block`` revokes, revoked: those of its channel (all
    channels for an all-channels block), every purpose for a DND opt-out, MARKETING only for a
    marketing-only one; for the contact and for the opt-out's address."""
    if block.reason not in REVOKING_REASONS and not (
        block.reason is Reason.MANUAL and block.source is Source.CONTACT
    ):
        return []
    if block.direction is not Direction.OUTBOUND:
        return []
    purposes = (
        {ConsentPurpose.MARKETING}
        if block.reason in MARKETING_ONLY_REASONS
        else set(ConsentPurpose)
    )
    revoked = []
    for consent in consents:
        if consent.status not in (ConsentStatus.ACTIVE, ConsentStatus.PENDING):
            continue
        if block.scope is not None and consent.channel is not block.scope:
            continue
        if consent.purpose not in purposes:
            continue
        # Every consent of the channel, whatever address it names: the opt-out blocks the
        # contact on the channel, and a consent of its other numbers must not outlive it.
        revoked.append(
            replace(
                consent,
                status=ConsentStatus.REVOKED,
                revoked_at=now,
                revoked_by=block.reason.value,
            )
        )
    return revoked


# --- recording, confirming and revoking consent -------------------------------------------

# How far in the future a captured_at may lie (the recorder's clock running ahead).
CAPTURE_SKEW = dt.timedelta(minutes=5)
CONSENT_SOURCE_MAX = 256
# A consent's ``revoked_by`` when revoked by RevokeConsent rather than by an opt-out.
REVOKED = "REVOKED"


def consent_sort_key(consent: Consent) -> tuple[int, int, str]:
    """The stable order of a contact's consents: channel, purpose, address."""
    return (
        list(Channel).index(consent.channel),
        list(ConsentPurpose).index(consent.purpose),
        consent.address,
    )


@dataclass(frozen=True, slots=True)
class ConsentRecord:
    """What a RecordConsent asks to record (validated field by field by the rpc layer)."""

    channel: Channel
    purpose: ConsentPurpose
    method: ConsentMethod
    kind: ConsentKind
    source: Source
    address: str = ""
    actor_id: str = ""
    evidence: ConsentEvidence = field(default_factory=ConsentEvidence)
    implied_basis: ImpliedBasis | None = None
    # None: when the write happens.
    captured_at: dt.datetime | None = None
    expires_at: dt.datetime | None = None
    # A double opt-in sent and not yet confirmed.
    pending: bool = False
    consent_source: str = ""

    @property
    def key(self) -> ConsentKey:
        return ConsentKey(self.channel, self.purpose, self.address)

    def violations(self, now: dt.datetime) -> list[FieldViolation]:
        """What makes this record impossible to keep, judged at ``now``."""
        problems = []
        if self.source is Source.SYSTEM:
            problems.append(
                FieldViolation(
                    "source",
                    "SYSTEM may not record consent: consent is the contact's, recorded by "
                    "USER, WORKFLOW, CONTACT or SUPPORT",
                )
            )
        if self.pending and self.method is not ConsentMethod.DOUBLE_OPT_IN:
            problems.append(
                FieldViolation(
                    "pending", "only a DOUBLE_OPT_IN consent can be pending confirmation"
                )
            )
        if self.kind is ConsentKind.IMPLIED:
            if self.expires_at is None and self.implied_basis is None:
                problems.append(
                    FieldViolation(
                        "kind",
                        "IMPLIED consent needs expires_at or implied_basis (PURCHASE: 2 years, "
                        "INQUIRY: 6 months)",
                    )
                )
        elif self.implied_basis is not None:
            problems.append(
                FieldViolation("implied_basis", "only IMPLIED consent rests on an implied basis")
            )
        if self.captured_at is not None and self.captured_at > now + CAPTURE_SKEW:
            problems.append(
                FieldViolation(
                    "captured_at",
                    f"in the future: {_iso(self.captured_at)} is after now ({_iso(now)}) by "
                    f"more than {int(CAPTURE_SKEW.total_seconds() // 60)} minutes",
                )
            )
        captured = self.captured_at or now
        if self.expires_at is not None and self.expires_at <= captured:
            problems.append(
                FieldViolation(
                    "expires_at",
                    f"must be after captured_at ({_iso(captured)})"
                    + ("" if self.captured_at else ", which is now when unset"),
                )
            )
        problems.extend(self.evidence.violations())
        if len(self.consent_source) > CONSENT_SOURCE_MAX:
            problems.append(
                FieldViolation(
                    "consent_source",
                    f"{len(self.consent_source)} characters; at most {CONSENT_SOURCE_MAX} allowed",
                )
            )
        return problems

    def consent(self, captured_at: dt.datetime, window: dt.timedelta) -> Consent:
        """The consent this record makes, captured at ``captured_at``: an implied basis sets
        the expiry unless one is given; a pending double opt-in must be confirmed within
        ``window`` of its capture."""
        expires_at = self.expires_at
        if self.implied_basis is not None:
            # The basis bounds an implied consent: an expiry given may shorten it, never
            # lengthen it past what the basis allows (CASL).
            limit = implied_expiry(self.implied_basis, captured_at)
            expires_at = limit if expires_at is None else min(expires_at, limit)
        return Consent(
            channel=self.channel,
            purpose=self.purpose,
            method=self.method,
            kind=self.kind,
            status=ConsentStatus.PENDING if self.pending else ConsentStatus.ACTIVE,
            captured_at=captured_at,
            source=self.source,
            address=self.address,
            actor_id=self.actor_id,
            evidence=self.evidence,
            expires_at=expires_at,
            confirm_by=captured_at + window if self.pending else None,
            consent_source=self.consent_source,
        )


def recorded_consent(
    consents: Iterable[Consent], record: ConsentRecord, now: dt.datetime, window: dt.timedelta
) -> Consent | None:
    """The consent ``record`` makes at ``now``, or None when the same one is already recorded
    (then nothing changes). Without a captured_at, a record repeating a consent that still
    stands (not revoked, not expired) keeps its captured_at; otherwise it is captured now."""
    existing = next((c for c in consents if c.key == record.key), None)
    if existing is not None and record.captured_at is None:
        standing = existing.status is not ConsentStatus.REVOKED and (
            existing.status_at(now) is existing.status
        )
        if standing and record.consent(existing.captured_at, window) == existing:
            return None
    made = record.consent(record.captured_at or now, window)
    return None if made == existing else made


def revoked(consent: Consent, now: dt.datetime, by: str = REVOKED) -> Consent:
    return replace(consent, status=ConsentStatus.REVOKED, revoked_at=now, revoked_by=by)


def to_revoke(
    consents: Iterable[Consent],
    channel: Channel,
    purpose: ConsentPurpose | None,
    address: str,
    now: dt.datetime,
) -> list[Consent]:
    """The consents a RevokeConsent of ``channel`` (``purpose`` None: both purposes;
    ``address`` "": the contact's and every address's) revokes, revoked: those still
    standing (active or pending at ``now``). Revoked for one address, a contact-wide consent
    that covers it gets a revoked record of that address (``counting_consent`` then no
    longer counts it there), unless the address has a record of its own."""
    consents = list(consents)
    standing = (ConsentStatus.ACTIVE, ConsentStatus.PENDING)
    made = [
        revoked(c, now)
        for c in consents
        if c.channel is channel
        and (purpose is None or c.purpose is purpose)
        and (not address or c.address == address)
        and c.status_at(now) in standing
    ]
    if address:
        own = {c.key for c in consents if c.address == address}
        for wide in consents:
            if (
                not wide.address
                and wide.channel is channel
                and (purpose is None or wide.purpose is purpose)
                and wide.status_at(now) in standing
                and ConsentKey(channel, wide.purpose, address) not in own
            ):
                made.append(replace(revoked(wide, now), address=address))
    return made


def confirmable(
    consents: Iterable[Consent], channel: Channel, address: str, now: dt.datetime
) -> list[Consent]:
    """The pending double opt-ins the contact's confirmation (YES / START) from ``address``
    on ``channel`` at ``now`` activates: within their window, for the contact or that
    address. A double opt-in of one address is confirmed only from that address: a reply
    whose sender is not known confirms the contact's own double opt-ins only."""
    return [
        c
        for c in consents
        if c.channel is channel
        and c.method is ConsentMethod.DOUBLE_OPT_IN
        and c.status_at(now) is ConsentStatus.PENDING
        and (not c.address or c.address == address)
    ]


def confirmed(consent: Consent) -> Consent:
    return replace(consent, status=ConsentStatus.ACTIVE)


def keyword_consents(
    consents: Sequence[Consent],
    channel: Channel,
    address: str,
    message: str,
    matched: str,
    now: dt.datetime,
    skip: Iterable[ConsentKey] = (),
) -> list[Consent]:
    """The express SMS_KEYWORD consents an opt-in keyword that lifted an opt-out records:
    MARKETING and INFORMATIONAL on ``channel`` for the sender's ``address`` (the contact when
    none), the message as their evidence; none for a key in ``skip`` or whose consent is
    already active."""
    skipped = set(skip)
    made = []
    for purpose in ConsentPurpose:
        key = ConsentKey(channel, purpose, address)
        if key in skipped:
            continue
        current = next((c for c in consents if c.key == key), None)
        if current is not None and current.status_at(now) is ConsentStatus.ACTIVE:
            continue
        made.append(
            Consent(
                channel=channel,
                purpose=purpose,
                method=ConsentMethod.SMS_KEYWORD,
                kind=ConsentKind.EXPRESS,
                status=ConsentStatus.ACTIVE,
                captured_at=now,
                source=Source.CONTACT,
                address=address,
                actor_id=address,
                evidence=ConsentEvidence(
                    disclosure_text=message[: EVIDENCE_LIMITS["disclosure_text"]]
                ),
                consent_source=f"keyword:{matched}"[:CONSENT_SOURCE_MAX],
            )
        )
    return made


def explain_recorded(consent: Consent, blocks: Iterable[Block], now: dt.datetime) -> str:
    """One line on a recorded consent: what it is, its status, and whether a DND block
    still denies its channel (consent never lifts an opt-out)."""
    whom = consent.address or "the contact"
    text = (
        f"{consent.kind.value.lower()} {consent.purpose.value} consent on "
        f"{consent.channel.value} for {whom} ({consent.method.value}) is "
        f"{consent.status_at(now).value}"
    )
    if consent.status_at(now) is ConsentStatus.PENDING and consent.confirm_by is not None:
        text += f" until the contact confirms (YES / START) by {_iso(consent.confirm_by)}"
    denying = sorted(
        {
            b.reason.value
            for b in blocks
            if b.covers(Direction.OUTBOUND, consent.channel)
            and (
                b.reason not in MARKETING_ONLY_REASONS
                or consent.purpose is ConsentPurpose.MARKETING
            )
        }
    )
    if denying:
        text += (
            f"; {consent.channel.value} is still denied by DND ({', '.join(denying)}): "
            "consent does not lift an opt-out"
        )
    else:
        text += f"; no DND block denies {consent.channel.value}"
    return text


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
