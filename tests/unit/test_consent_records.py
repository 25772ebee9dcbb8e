"""Recording, confirming and revoking consent as pure functions (domain/consent.py,
domain/plans.py): what a RecordConsent may ask, when recording again changes nothing, what an
opt-out revokes within its own change, what START / YES record or confirm; the consent's stored
document, the policy cache's time to live and the change stream's kind filter. The clock is a
parameter throughout."""

from __future__ import annotations

import datetime as dt

import pytest
from dnd_server.cache import PolicyCache
from dnd_server.domain.consent import (
    CAPTURE_SKEW,
    ChannelPolicy,
    Consent,
    ConsentEvidence,
    ConsentKind,
    ConsentMethod,
    ConsentPolicy,
    ConsentPurpose,
    ConsentRecord,
    ConsentStatus,
    ImpliedBasis,
    confirmable,
    consent_sort_key,
    counting_consent,
    explain_recorded,
    keyword_consents,
    recorded_consent,
    to_revoke,
)
from dnd_server.domain.keywords import classify
from dnd_server.domain.model import (
    Block,
    ChangeKind,
    Channel,
    ContactState,
    Direction,
    Reason,
    Source,
    Step,
)
from dnd_server.domain.plans import (
    plan_add,
    plan_inbound_message,
    plan_record_consent,
    plan_revoke_consent,
)
from dnd_server.records import ChangeRow
from dnd_server.storage.rows import consent_document, to_consent
from dnd_server.watch import WatchFilter

T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
SECOND = dt.timedelta(seconds=1)
DAY = dt.timedelta(days=1)
WINDOW = dt.timedelta(hours=24)
PHONE = "+15555550100"
OTHER = "+15555550199"
SMS, EMAIL = Channel.SMS, Channel.EMAIL
MARKETING, INFORMATIONAL = ConsentPurpose.MARKETING, ConsentPurpose.INFORMATIONAL


def request(**changes: object) -> ConsentRecord:
    fields: dict[str, object] = {
        "channel": SMS,
        "purpose": MARKETING,
        "method": ConsentMethod.WEB_FORM,
        "kind": ConsentKind.EXPRESS,
        "source": Source.USER,
        "evidence": ConsentEvidence(form_url="https://example.com/f"),
    }
    fields.update(changes)
    return ConsentRecord(**fields)  # type: ignore[arg-type]


def consent(**changes: object) -> Consent:
    fields: dict[str, object] = {
        "channel": SMS,
        "purpose": MARKETING,
        "method": ConsentMethod.WEB_FORM,
        "kind": ConsentKind.EXPRESS,
        "status": ConsentStatus.ACTIVE,
        "captured_at": T0,
        "source": Source.USER,
    }
    fields.update(changes)
    return Consent(**fields)  # type: ignore[arg-type]


def state(*consents: Consent, blocks: tuple[Block, ...] = ()) -> ContactState:
    return ContactState("loc", "c1", blocks, version=len(consents), consents=consents)


def stop_block(**changes: object) -> Block:
    fields: dict[str, object] = {
        "direction": Direction.OUTBOUND,
        "scope": SMS,
        "reason": Reason.SMS_OPT_OUT_KEYWORD,
        "source": Source.CONTACT,
        "since": T0,
    }
    fields.update(changes)
    return Block(**fields)  # type: ignore[arg-type]


def consents_of(steps: list[Step]) -> list[tuple[bool, Consent]]:
    return [(s.enabled, s.target) for s in steps if isinstance(s.target, Consent)]


# --- what a record may ask ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"source": Source.SYSTEM}, "source"),
        ({"pending": True}, "pending"),
        ({"pending": True, "method": ConsentMethod.SMS_KEYWORD}, "pending"),
        ({"kind": ConsentKind.IMPLIED}, "kind"),
        ({"implied_basis": ImpliedBasis.PURCHASE}, "implied_basis"),
        ({"captured_at": T0 + CAPTURE_SKEW + SECOND}, "captured_at"),
        ({"expires_at": T0}, "expires_at"),
        ({"expires_at": T0 - SECOND}, "expires_at"),
        ({"captured_at": T0 - DAY, "expires_at": T0 - DAY}, "expires_at"),
        ({"evidence": ConsentEvidence(user_agent="u" * 513)}, "evidence.user_agent"),
        ({"consent_source": "s" * 257}, "consent_source"),
    ],
)
def test_a_record_that_cannot_be_kept_names_its_field(
    changes: dict[str, object], field: str
) -> None:
    assert [v.field for v in request(**changes).violations(T0)] == [field]


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"pending": True, "method": ConsentMethod.DOUBLE_OPT_IN},
        {"kind": ConsentKind.IMPLIED, "implied_basis": ImpliedBasis.INQUIRY},
        {"kind": ConsentKind.IMPLIED, "expires_at": T0 + SECOND},
        {"captured_at": T0 + CAPTURE_SKEW},
        {"captured_at": T0 - 400 * DAY, "expires_at": T0 - 399 * DAY},
        {"source": Source.CONTACT},
        {"source": Source.SUPPORT},
        {"source": Source.WORKFLOW},
        {"evidence": ConsentEvidence(user_agent="u" * 512)},
        {"consent_source": "s" * 256},
    ],
)
def test_a_record_that_may_be_kept(changes: dict[str, object]) -> None:
    assert request(**changes).violations(T0) == []


def test_the_consent_a_record_makes() -> None:
    made = request(kind=ConsentKind.IMPLIED, implied_basis=ImpliedBasis.INQUIRY).consent(T0, WINDOW)
    assert made.expires_at == dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.UTC)
    assert made.status is ConsentStatus.ACTIVE and made.confirm_by is None
    given = request(
        kind=ConsentKind.IMPLIED, implied_basis=ImpliedBasis.PURCHASE, expires_at=T0 + DAY
    ).consent(T0, WINDOW)
    assert given.expires_at == T0 + DAY  # an expiry given wins over the basis
    pending = request(method=ConsentMethod.DOUBLE_OPT_IN, pending=True).consent(T0, WINDOW)
    assert pending.status is ConsentStatus.PENDING and pending.confirm_by == T0 + WINDOW
    assert pending.status_at(T0 + WINDOW - SECOND) is ConsentStatus.PENDING
    assert pending.status_at(T0 + WINDOW) is ConsentStatus.EXPIRED


# --- recording again ------------------------------------------------------------------------


def test_recording_the_same_consent_again_changes_nothing() -> None:
    first = plan_record_consent(state(), request(), T0, WINDOW)
    [(enabled, made)] = consents_of(first)
    assert enabled and made.captured_at == T0
    # Later, without a captured_at: the consent recorded already is the same one.
    assert plan_record_consent(state(made), request(), T0 + DAY, WINDOW) == []
    # With the same captured_at given: the same too.
    assert plan_record_consent(state(made), request(captured_at=T0), T0 + DAY, WINDOW) == []
    # Anything else about it replaces it, captured now.
    [(_, other)] = consents_of(
        plan_record_consent(state(made), request(actor_id="u2"), T0 + DAY, WINDOW)
    )
    assert other.actor_id == "u2" and other.captured_at == T0 + DAY


@pytest.mark.parametrize(
    "existing",
    [
        consent(status=ConsentStatus.REVOKED, revoked_at=T0, revoked_by="REVOKED"),
        consent(expires_at=T0 + SECOND),
    ],
    ids=["revoked", "expired"],
)
def test_recording_over_a_consent_that_no_longer_stands_records_it_anew(
    existing: Consent,
) -> None:
    made = recorded_consent([existing], request(evidence=ConsentEvidence()), T0 + DAY, WINDOW)
    assert made is not None
    assert made.status is ConsentStatus.ACTIVE and made.captured_at == T0 + DAY
    assert made.revoked_at is None and made.expires_at is None


def test_a_pending_double_opt_in_recorded_again_keeps_its_window() -> None:
    doi = request(method=ConsentMethod.DOUBLE_OPT_IN, pending=True)
    pending = doi.consent(T0, WINDOW)
    assert recorded_consent([pending], doi, T0 + 3600 * SECOND, WINDOW) is None
    # Past the window it expired: recording again starts a new one.
    again = recorded_consent([pending], doi, T0 + WINDOW, WINDOW)
    assert again is not None and again.confirm_by == T0 + 2 * WINDOW


# --- revoking -------------------------------------------------------------------------------


def test_revoke_by_purpose_and_address() -> None:
    contact_wide = consent()
    address = consent(address=PHONE)
    info = consent(purpose=INFORMATIONAL)
    email = consent(channel=EMAIL)
    expired = consent(purpose=INFORMATIONAL, address=OTHER, expires_at=T0 + SECOND)
    everyone = (contact_wide, address, info, email, expired)
    at = T0 + DAY

    def keys(purpose: ConsentPurpose | None, addr: str) -> list[tuple[object, str]]:
        return [(c.purpose, c.address) for c in to_revoke(everyone, SMS, purpose, addr, at)]

    assert keys(None, "") == [(MARKETING, ""), (MARKETING, PHONE), (INFORMATIONAL, "")]
    assert keys(MARKETING, "") == [(MARKETING, ""), (MARKETING, PHONE)]
    # One address: its own consents, and a revoked record of it for each contact-wide one
    # covering it (unless the address has a record of that purpose: OTHER's expired one).
    assert keys(None, PHONE) == [(MARKETING, PHONE), (INFORMATIONAL, PHONE)]
    assert keys(None, OTHER) == [(MARKETING, OTHER)]
    [(enabled, revoked)] = consents_of(plan_revoke_consent(state(address), SMS, None, PHONE, at))
    assert not enabled
    assert (revoked.status, revoked.revoked_at, revoked.revoked_by) == (
        ConsentStatus.REVOKED,
        at,
        "REVOKED",
    )


# --- opt-outs revoke consent in their own change ----------------------------------------------


def test_stop_revokes_the_sms_consents_after_its_block_and_suppression() -> None:
    sms, email = consent(), consent(channel=EMAIL)
    steps = plan_add(state(sms, email), stop_block(), PHONE)
    assert [type(s.target).__name__ for s in steps] == [
        "Block",
        "AddressSuppression",
        "Consent",
    ]
    [(enabled, revoked)] = consents_of(steps)
    assert not enabled and revoked.channel is SMS
    assert (revoked.status, revoked.revoked_by, revoked.revoked_at) == (
        ConsentStatus.REVOKED,
        "SMS_OPT_OUT_KEYWORD",
        T0,
    )


def test_a_repeated_stop_still_revokes_a_consent_recorded_since() -> None:
    block = stop_block()
    steps = plan_add(state(consent(), blocks=(block,)), block)
    assert [s.target.status for s in steps if isinstance(s.target, Consent)] == [
        ConsentStatus.REVOKED
    ]


def test_a_users_manual_block_revokes_nothing() -> None:
    manual = stop_block(reason=Reason.MANUAL, source=Source.USER)
    assert consents_of(plan_add(state(consent()), manual)) == []
    by_contact = stop_block(reason=Reason.MANUAL, source=Source.CONTACT)
    assert len(consents_of(plan_add(state(consent()), by_contact))) == 1


# --- START / YES --------------------------------------------------------------------------------


def inbound(st: ContactState, body: str, at: dt.datetime = T0) -> tuple[str, list[Step]]:
    outcome = plan_inbound_message(st, classify(body), body, PHONE, at)
    return outcome.action.value, outcome.steps


def test_start_that_lifts_an_opt_out_records_the_senders_keyword_consent() -> None:
    stopped = state(
        consent(status=ConsentStatus.REVOKED, revoked_by="SMS_OPT_OUT_KEYWORD"),
        blocks=(stop_block(address=PHONE),),
    )
    action, steps = inbound(stopped, "Start", T0 + DAY)
    assert action == "OPT_IN"
    assert isinstance(steps[0].target, Block) and not steps[0].enabled
    made = [c for _, c in consents_of(steps)]
    assert [(c.purpose, c.address) for c in made] == [(MARKETING, PHONE), (INFORMATIONAL, PHONE)]
    for c in made:
        assert (c.method, c.kind, c.status) == (
            ConsentMethod.SMS_KEYWORD,
            ConsentKind.EXPRESS,
            ConsentStatus.ACTIVE,
        )
        assert (c.source, c.actor_id, c.captured_at) == (Source.CONTACT, PHONE, T0 + DAY)
        assert c.evidence.disclosure_text == "Start"
        assert c.consent_source == "keyword:START"
    # One of them already active for the sender: only the other is recorded.
    active = consent(address=PHONE, method=ConsentMethod.VERBAL)
    _, steps = inbound(state(active, blocks=(stop_block(),)), "START", T0 + DAY)
    assert [c.purpose for _, c in consents_of(steps)] == [INFORMATIONAL]


def test_start_without_an_opt_out_to_lift_records_nothing() -> None:
    assert inbound(state(), "START") == ("OPT_IN", [])


def test_yes_confirms_a_pending_double_opt_in_within_its_window() -> None:
    pending = request(method=ConsentMethod.DOUBLE_OPT_IN, pending=True).consent(T0, WINDOW)
    action, steps = inbound(state(pending), "yes", T0 + WINDOW - SECOND)
    assert action == "OPT_IN"
    [(enabled, confirmed)] = consents_of(steps)
    assert enabled and confirmed.status is ConsentStatus.ACTIVE
    assert confirmed.captured_at == T0 and confirmed.confirm_by == T0 + WINDOW
    # At the end of the window it has expired: YES is no keyword again.
    assert inbound(state(pending), "yes", T0 + WINDOW) == ("NONE", [])


def test_start_lifting_an_opt_out_confirms_and_records_without_repeating_a_key() -> None:
    pending = request(method=ConsentMethod.DOUBLE_OPT_IN, pending=True, address=PHONE).consent(
        T0, WINDOW
    )
    _, steps = inbound(state(pending, blocks=(stop_block(),)), "START", T0 + SECOND)
    made = [(c.purpose, c.method, c.status) for _, c in consents_of(steps)]
    assert made == [
        (MARKETING, ConsentMethod.DOUBLE_OPT_IN, ConsentStatus.ACTIVE),
        (INFORMATIONAL, ConsentMethod.SMS_KEYWORD, ConsentStatus.ACTIVE),
    ]


@pytest.mark.parametrize(
    ("consent_address", "sender", "confirmed"),
    [
        ("", PHONE, True),
        ("", "", True),
        (PHONE, PHONE, True),
        (OTHER, PHONE, False),
        # A reply of unknown sender never confirms one address's double opt-in.
        (PHONE, "", False),
    ],
)
def test_which_double_opt_ins_a_confirmation_confirms(
    consent_address: str, sender: str, confirmed: bool
) -> None:
    pending = request(
        method=ConsentMethod.DOUBLE_OPT_IN, pending=True, address=consent_address
    ).consent(T0, WINDOW)
    assert bool(confirmable([pending], SMS, sender, T0)) is confirmed
    assert confirmable([pending], EMAIL, sender, T0) == []


def test_keyword_consents_skip_the_keys_asked() -> None:
    made = keyword_consents([], SMS, PHONE, "START", "START", T0, skip=[consent(address=PHONE).key])
    assert [c.purpose for c in made] == [INFORMATIONAL]


# --- what the answer says -------------------------------------------------------------------


def test_explain_recorded_says_whether_dnd_still_denies() -> None:
    recorded = consent(address=PHONE)
    assert "no DND block denies SMS" in explain_recorded(recorded, (), T0)
    text = explain_recorded(recorded, (stop_block(),), T0)
    assert "still denied by DND (SMS_OPT_OUT_KEYWORD)" in text
    # A marketing-only opt-out denies marketing consent's channel, not informational's.
    marketing_only = stop_block(reason=Reason.MARKETING_OPT_OUT, scope=None)
    assert "still denied" in explain_recorded(recorded, (marketing_only,), T0)
    info = consent(purpose=INFORMATIONAL)
    assert "no DND block denies" in explain_recorded(info, (marketing_only,), T0)
    pending = request(method=ConsentMethod.DOUBLE_OPT_IN, pending=True).consent(T0, WINDOW)
    assert "PENDING until the contact confirms" in explain_recorded(pending, (), T0)


def test_consents_sort_by_channel_purpose_address() -> None:
    shuffled = [
        consent(channel=EMAIL),
        consent(purpose=INFORMATIONAL),
        consent(address=PHONE),
        consent(),
        consent(channel=Channel.CALL),
    ]
    ordered = sorted(shuffled, key=consent_sort_key)
    assert [(c.channel, c.purpose, c.address) for c in ordered] == [
        (Channel.CALL, MARKETING, ""),
        (EMAIL, MARKETING, ""),
        (SMS, MARKETING, ""),
        (SMS, MARKETING, PHONE),
        (SMS, INFORMATIONAL, ""),
    ]


# --- the stored document ----------------------------------------------------------------------


def test_a_consent_survives_its_document() -> None:
    full = consent(
        address=PHONE,
        kind=ConsentKind.IMPLIED,
        evidence=ConsentEvidence(
            form_url="u",
            disclosure_text="d\n",
            disclosure_version="v",
            ip_address="i",
            user_agent="a",
            recording_ref="r",
        ),
        expires_at=T0 + DAY,
        confirm_by=T0 + SECOND,
        revoked_at=T0 + 2 * SECOND,
        revoked_by="SMS_OPT_OUT_KEYWORD",
        status=ConsentStatus.REVOKED,
        consent_source="import-7",
        actor_id="u1",
        captured_at=T0 + dt.timedelta(microseconds=123456),
    )
    assert to_consent(consent_document(full)) == full
    assert to_consent(consent_document(consent())) == consent()


# --- the policy cache -------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_policy_cache_reuses_a_policy_for_its_time_to_live() -> None:
    clock = Clock()
    cache = PolicyCache(5.0, max_entries=2, clock=clock)
    policy = ConsentPolicy(channels={SMS: ChannelPolicy(marketing=True)})
    assert cache.get("loc") is None
    cache.put("loc", policy)
    clock.now += 4.999
    assert cache.get("loc") is policy
    clock.now += 0.001
    assert cache.get("loc") is None and len(cache) == 0
    # The least recently stored go first.
    for name in ("a", "b", "c"):
        cache.put(name, policy)
    assert cache.get("a") is None and cache.get("c") is policy


def test_a_policy_cache_of_no_time_keeps_nothing() -> None:
    cache = PolicyCache(0)
    cache.put("loc", ConsentPolicy())
    assert cache.get("loc") is None


# --- the change stream's kinds ----------------------------------------------------------------


def change(kind: ChangeKind) -> ChangeRow:
    return ChangeRow(
        seq=1,
        location_id="loc",
        contact_id="c1",
        direction=Direction.OUTBOUND,
        scope=SMS,
        enabled=True,
        reason=None if kind is ChangeKind.CONSENT else Reason.MANUAL,
        source=Source.USER,
        actor_id="",
        time=T0,
        outbound="PARTIAL",
        inbound="OFF",
        blocked_channels=(SMS,),
        version=1,
        address="",
        kind=kind,
    )


@pytest.mark.parametrize("kind", list(ChangeKind))
def test_watch_filter_by_kind(kind: ChangeKind) -> None:
    assert WatchFilter().matches(change(kind))
    assert WatchFilter(kinds=frozenset({kind})).matches(change(kind))
    others = frozenset(ChangeKind) - {kind}
    assert not WatchFilter(kinds=others).matches(change(kind))


def test_a_contact_wide_consent_revoked_for_one_address_no_longer_counts_there() -> None:
    """RevokeConsent for one number stops sends to it under the contact-wide consent, not to
    the contact's other numbers; a contact-wide consent captured after that counts again."""
    wide = consent()
    at = T0 + DAY
    [for_phone] = to_revoke((wide,), SMS, MARKETING, PHONE, at)
    assert (for_phone.address, for_phone.status, for_phone.revoked_at) == (
        PHONE,
        ConsentStatus.REVOKED,
        at,
    )
    held = (wide, for_phone)
    assert counting_consent(held, SMS, MARKETING, PHONE, at + SECOND) is None
    assert counting_consent(held, SMS, MARKETING, OTHER, at + SECOND) == wide
    again = consent(captured_at=at + DAY)
    assert counting_consent((again, for_phone), SMS, MARKETING, PHONE, at + 2 * DAY) == again


def test_a_consent_counts_once_captured() -> None:
    """A capture time ahead of the clock (allowed within the skew) counts from then on."""
    ahead = consent(captured_at=T0 + 4 * 60 * SECOND)
    assert counting_consent((ahead,), SMS, MARKETING, PHONE, T0) is None
    assert counting_consent((ahead,), SMS, MARKETING, PHONE, T0 + 5 * 60 * SECOND) == ahead


def test_an_implied_basis_bounds_the_expiry_given() -> None:
    """CASL: an inquiry counts 6 months, a purchase 2 years; a later expiry is cut to it, an
    earlier one kept."""
    captured = T0
    long = request(
        kind=ConsentKind.IMPLIED,
        implied_basis=ImpliedBasis.INQUIRY,
        captured_at=captured,
        expires_at=dt.datetime(2098, 1, 1, tzinfo=dt.UTC),
    )
    made = long.consent(captured, WINDOW)
    assert made.expires_at == dt.datetime(2026, 9, 1, 12, 0, tzinfo=dt.UTC)
    short = request(
        kind=ConsentKind.IMPLIED,
        implied_basis=ImpliedBasis.PURCHASE,
        captured_at=captured,
        expires_at=captured + DAY,
    )
    assert short.consent(captured, WINDOW).expires_at == captured + DAY
