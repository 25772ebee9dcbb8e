"""Mapping between protobuf messages and domain types, and the answers of the RPCs."""

from __future__ import annotations

import datetime as dt
import functools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any, TypeVar

from dnd.v1 import dnd_pb2 as pb
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from dnd_server import lanes
from dnd_server.auth import Caller
from dnd_server.cursor import encode_bookmark, encode_cursor, encode_page_token, varint
from dnd_server.domain.consent import (
    MARKETING_ONLY_REASONS,
    Consent,
    ConsentKind,
    ConsentMethod,
    ConsentPolicy,
    ConsentPurpose,
    ConsentStatus,
    ImpliedBasis,
    Purpose,
    explain_recorded,
)
from dnd_server.domain.erasure import ErasureDone
from dnd_server.domain.errors import (
    ClearNotPermitted,
    FieldViolation,
    InvalidArgument,
    VersionMismatch,
)
from dnd_server.domain.expiry import BlockExpiry
from dnd_server.domain.inbound import InboundVerdict
from dnd_server.domain.keywords import (
    BUILT_IN_WORDS,
    HELP_WORDS,
    LANGUAGES,
    OPT_IN_WORDS,
    OPT_OUT_WORDS,
    REVOCATION_PHRASES,
    KeywordKind,
    KeywordSettings,
)
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    ChangeKind,
    Channel,
    ContactState,
    Direction,
    Reason,
    Scope,
    Source,
    Summary,
    block_sort_key,
    scope_name,
)
from dnd_server.domain.provider_events import (
    PROVIDER_TABLES,
    CodeEntry,
    EventOutcome,
    Origin,
    Override,
    Resolution,
)
from dnd_server.domain.quiet_hours import (
    QuietHoursSettings,
    QuietRule,
    QuietVerdict,
    Recipient,
    ZoneSource,
    clock_text,
)
from dnd_server.domain.replies import ComplianceReplies, ReplyKind, every_reply
from dnd_server.domain.rules import Denial, SendDecision, explain_without_holder, summarize
from dnd_server.lanes import Position
from dnd_server.records import ChangeRow, HistoryRow, ItemOutcome, ListedBlock, WriteResult
from dnd_server.rpc.scrub import messages
from dnd_server.watch import Event

CHANNEL_TO_PB: dict[Channel, pb.Channel.ValueType] = {
    c: pb.Channel.Value(f"CHANNEL_{c.value}") for c in Channel
}
DIRECTION_TO_PB: dict[Direction, pb.Direction.ValueType] = {
    d: pb.Direction.Value(f"DIRECTION_{d.value}") for d in Direction
}
REASON_TO_PB: dict[Reason, pb.Reason.ValueType] = {
    r: pb.Reason.Value(f"REASON_{r.value}") for r in Reason
}
SOURCE_TO_PB: dict[Source, pb.Source.ValueType] = {
    s: pb.Source.Value(f"SOURCE_{s.value}") for s in Source
}
SUMMARY_TO_PB: dict[Summary, pb.DndStatus.ValueType] = {
    s: pb.DndStatus.Value(f"DND_STATUS_{s.value}") for s in Summary
}

KEYWORD_ACTION_TO_PB: dict[KeywordKind, pb.KeywordAction.ValueType] = {
    KeywordKind.NONE: pb.KEYWORD_ACTION_NONE,
    KeywordKind.OPT_OUT: pb.KEYWORD_ACTION_OPTED_OUT,
    KeywordKind.OPT_IN: pb.KEYWORD_ACTION_OPTED_IN,
    KeywordKind.HELP: pb.KEYWORD_ACTION_HELP,
}

EVENT_OUTCOME_TO_PB: dict[EventOutcome, pb.EventOutcome.ValueType] = {
    o: pb.EventOutcome.Value(f"EVENT_OUTCOME_{o.value}") for o in EventOutcome
}
PURPOSE_TO_PB: dict[Purpose, pb.Purpose.ValueType] = {
    p: pb.Purpose.Value(f"PURPOSE_{p.value}") for p in Purpose
}
DENIAL_TO_PB: dict[Denial, pb.Denial.ValueType] = {
    d: pb.Denial.Value(f"DENIAL_{d.value}") for d in Denial
}
CHANGE_KIND_TO_PB: dict[ChangeKind, pb.ChangeKind.ValueType] = {
    k: pb.ChangeKind.Value(f"CHANGE_KIND_{k.value}") for k in ChangeKind
}

CHANNEL_FROM_PB: dict[int, Channel] = {int(v): k for k, v in CHANNEL_TO_PB.items()}
DIRECTION_FROM_PB: dict[int, Direction] = {int(v): k for k, v in DIRECTION_TO_PB.items()}
REASON_FROM_PB: dict[int, Reason] = {int(v): k for k, v in REASON_TO_PB.items()}
SOURCE_FROM_PB: dict[int, Source] = {int(v): k for k, v in SOURCE_TO_PB.items()}
PURPOSE_FROM_PB: dict[int, Purpose] = {int(v): k for k, v in PURPOSE_TO_PB.items()}

CONSENT_PURPOSE_TO_PB: dict[ConsentPurpose, pb.ConsentPurpose.ValueType] = {
    p: pb.ConsentPurpose.Value(f"CONSENT_PURPOSE_{p.value}") for p in ConsentPurpose
}
CONSENT_METHOD_TO_PB: dict[ConsentMethod, pb.ConsentMethod.ValueType] = {
    m: pb.ConsentMethod.Value(f"CONSENT_METHOD_{m.value}") for m in ConsentMethod
}
CONSENT_KIND_TO_PB: dict[ConsentKind, pb.ConsentKind.ValueType] = {
    k: pb.ConsentKind.Value(f"CONSENT_KIND_{k.value}") for k in ConsentKind
}
CONSENT_STATUS_TO_PB: dict[ConsentStatus, pb.ConsentStatus.ValueType] = {
    s: pb.ConsentStatus.Value(f"CONSENT_STATUS_{s.value}") for s in ConsentStatus
}
IMPLIED_BASIS_TO_PB: dict[ImpliedBasis, pb.ImpliedBasis.ValueType] = {
    b: pb.ImpliedBasis.Value(f"IMPLIED_BASIS_{b.value}") for b in ImpliedBasis
}
CONSENT_PURPOSE_FROM_PB: dict[int, ConsentPurpose] = {
    int(v): k for k, v in CONSENT_PURPOSE_TO_PB.items()
}
CONSENT_METHOD_FROM_PB: dict[int, ConsentMethod] = {
    int(v): k for k, v in CONSENT_METHOD_TO_PB.items()
}
CONSENT_KIND_FROM_PB: dict[int, ConsentKind] = {int(v): k for k, v in CONSENT_KIND_TO_PB.items()}
IMPLIED_BASIS_FROM_PB: dict[int, ImpliedBasis] = {int(v): k for k, v in IMPLIED_BASIS_TO_PB.items()}
CHANGE_KIND_FROM_PB: dict[int, ChangeKind] = {int(v): k for k, v in CHANGE_KIND_TO_PB.items()}


def timestamp(when: dt.datetime) -> Timestamp:
    """``when`` as a Timestamp (what ``Timestamp.FromDatetime`` makes of it in UTC, without
    its round trip through a time tuple)."""
    utc = when.astimezone(dt.UTC)
    return Timestamp(seconds=(utc - _EPOCH) // _SECOND, nanos=utc.microsecond * 1000)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)
_SECOND = dt.timedelta(seconds=1)


def scope_to_pb(scope: Scope, reason: Reason | None = None) -> pb.Scope:
    """The scope of a block (or change) of ``reason``: marketing_only for a marketing-only
    opt-out."""
    marketing_only = reason in MARKETING_ONLY_REASONS
    if scope is None:
        return pb.Scope(all_channels=True, marketing_only=marketing_only)
    return pb.Scope(channel=CHANNEL_TO_PB[scope], marketing_only=marketing_only)


@functools.lru_cache(maxsize=65536)
def block_to_pb(block: Block) -> pb.Block:
    """The message of a block (cached: blocks are immutable; callers copy it into theirs)."""
    return _block_to_pb(block)


def _block_to_pb(block: Block) -> pb.Block:
    message = pb.Block(
        direction=DIRECTION_TO_PB[block.direction],
        scope=scope_to_pb(block.scope, block.reason),
        reason=REASON_TO_PB[block.reason],
        source=SOURCE_TO_PB[block.source],
        actor_id=block.actor_id,
        note=block.note,
        evidence=block.evidence,
        provider_detail=block.provider_detail,
        address=block.address,
    )
    if block.since is not None:
        message.since.CopyFrom(timestamp(block.since))
    return message


def suppression_to_pb(suppression: AddressSuppression) -> pb.AddressSuppression:
    message = pb.AddressSuppression(
        address=suppression.address,
        channel=CHANNEL_TO_PB[suppression.channel],
        reason=REASON_TO_PB[suppression.reason],
        source=SOURCE_TO_PB[suppression.source],
        actor_id=suppression.actor_id,
        contact_id=suppression.contact_id,
        provider_detail=suppression.provider_detail,
        erased=suppression.erased,
    )
    if suppression.since is not None:
        message.since.CopyFrom(timestamp(suppression.since))
    return message


# The decision view, for callers told decisions rather than dossiers (no read scope) and for
# compact BatchCheckSend results: what denies the send, not who wrote what about the contact.


def block_summary_to_pb(block: Block) -> pb.Block:
    """A block's direction, scope, reason, source and since (no actor, note, evidence,
    provider detail or address)."""
    return _block_summary(block.direction, block.scope, block.reason, block.source, block.since)


@functools.lru_cache(maxsize=65536)
def _block_summary(
    direction: Direction, scope: Scope, reason: Reason, source: Source, since: dt.datetime | None
) -> pb.Block:
    message = pb.Block(
        direction=DIRECTION_TO_PB[direction],
        scope=scope_to_pb(scope, reason),
        reason=REASON_TO_PB[reason],
        source=SOURCE_TO_PB[source],
    )
    if since is not None:
        message.since.CopyFrom(timestamp(since))
    return message


def suppression_summary_to_pb(suppression: AddressSuppression) -> pb.AddressSuppression:
    """A suppression's channel, reason, source and since (no address, holding contact, actor
    or provider detail)."""
    return _suppression_summary(
        suppression.channel, suppression.reason, suppression.source, suppression.since
    )


@functools.lru_cache(maxsize=65536)
def _suppression_summary(
    channel: Channel, reason: Reason, source: Source, since: dt.datetime | None
) -> pb.AddressSuppression:
    message = pb.AddressSuppression(
        channel=CHANNEL_TO_PB[channel], reason=REASON_TO_PB[reason], source=SOURCE_TO_PB[source]
    )
    if since is not None:
        message.since.CopyFrom(timestamp(since))
    return message


def status_to_pb(
    state: ContactState, now: dt.datetime | None = None, evidence: bool = True
) -> pb.ContactStatus:
    """A contact's status; its consents' status as at ``now`` (None: the current time),
    with their evidence unless ``evidence`` is false."""
    summary = summarize(state.blocks)
    message = pb.ContactStatus(
        location_id=state.location_id,
        contact_id=state.contact_id,
        outbound=SUMMARY_TO_PB[summary.outbound],
        inbound=SUMMARY_TO_PB[summary.inbound],
        blocked_channels=[CHANNEL_TO_PB[c] for c in summary.blocked_channels],
        blocks=[block_to_pb(b) for b in sorted(state.blocks, key=block_sort_key)],
        version=state.version,
        address_suppressions=[
            suppression_to_pb(s)
            for s in sorted(
                state.suppressions, key=lambda s: (s.channel.value, s.address, s.reason.value)
            )
        ],
    )
    if state.consents:
        at = now if now is not None else dt.datetime.now(dt.UTC)
        message.consents.extend(consent_to_pb(c, at, evidence) for c in state.consents)
    if state.updated_at is not None:
        message.updated_at.CopyFrom(timestamp(state.updated_at))
    return message


def consent_to_pb(consent: Consent, now: dt.datetime, evidence: bool = True) -> pb.Consent:
    """A consent with its status as at ``now``; its evidence unless ``evidence`` is false."""
    message = pb.Consent(
        channel=CHANNEL_TO_PB[consent.channel],
        purpose=CONSENT_PURPOSE_TO_PB[consent.purpose],
        address=consent.address,
        method=CONSENT_METHOD_TO_PB[consent.method],
        kind=CONSENT_KIND_TO_PB[consent.kind],
        status=CONSENT_STATUS_TO_PB[consent.status_at(now)],
        captured_at=timestamp(consent.captured_at),
        source=SOURCE_TO_PB[consent.source],
        actor_id=consent.actor_id,
        revoked_by=consent.revoked_by,
        consent_source=consent.consent_source,
    )
    if evidence:
        proof = consent.evidence
        message.evidence.CopyFrom(
            pb.ConsentEvidence(
                form_url=proof.form_url,
                disclosure_text=proof.disclosure_text,
                disclosure_version=proof.disclosure_version,
                ip_address=proof.ip_address,
                user_agent=proof.user_agent,
                recording_ref=proof.recording_ref,
            )
        )
    for name, when in (
        ("expires_at", consent.expires_at),
        ("confirm_by", consent.confirm_by),
        ("revoked_at", consent.revoked_at),
    ):
        if when is not None:
            getattr(message, name).CopyFrom(timestamp(when))
    return message


def logged_consent_to_pb(
    consent: Consent | None, time: dt.datetime, evidence: bool
) -> pb.Consent | None:
    """The consent a change-log row holds, its status as right after the change."""
    return None if consent is None else consent_to_pb(consent, time, evidence)


def _reason(reason: Reason | None) -> pb.Reason.ValueType:
    return pb.REASON_UNSPECIFIED if reason is None else REASON_TO_PB[reason]


def history_to_pb(row: HistoryRow, cursor: str) -> pb.HistoryEntry:
    return pb.HistoryEntry(
        cursor=cursor,
        time=timestamp(row.time),
        version=row.version,
        enabled=row.enabled,
        direction=DIRECTION_TO_PB[row.direction],
        scope=scope_to_pb(row.scope, row.reason),
        reason=_reason(row.reason),
        source=SOURCE_TO_PB[row.source],
        actor_id=row.actor_id,
        note=row.note,
        evidence=row.evidence,
        provider_detail=row.provider_detail,
        address=row.address,
        contact_id=row.contact_id,
        suppression_contact_id=row.owner_contact_id,
        authenticated_caller=row.caller,
        kind=CHANGE_KIND_TO_PB[row.kind],
        consent=logged_consent_to_pb(row.consent, row.time, evidence=True),
    )


def change_to_pb(row: ChangeRow, cursor: str) -> pb.ChangeEvent:
    return pb.ChangeEvent(
        cursor=cursor,
        location_id=row.location_id,
        contact_id=row.contact_id,
        direction=DIRECTION_TO_PB[row.direction],
        scope=scope_to_pb(row.scope, row.reason),
        enabled=row.enabled,
        reason=_reason(row.reason),
        source=SOURCE_TO_PB[row.source],
        actor_id=row.actor_id,
        time=timestamp(row.time),
        outbound=SUMMARY_TO_PB[Summary(row.outbound)],
        inbound=SUMMARY_TO_PB[Summary(row.inbound)],
        blocked_channels=[CHANNEL_TO_PB[c] for c in row.blocked_channels],
        version=row.version,
        address=row.address,
        authenticated_caller=row.caller,
        suppression_contact_id=row.owner_contact_id,
        kind=CHANGE_KIND_TO_PB[row.kind],
        # The stream never carries consent evidence (nor do its rows: storage/rows.py).
        consent=logged_consent_to_pb(row.consent, row.time, evidence=False),
    )


def settings_to_pb(settings: KeywordSettings) -> pb.KeywordSettings:
    return pb.KeywordSettings(
        extra_opt_out_words=sorted(settings.extra_opt_out_words),
        extra_opt_in_words=sorted(settings.extra_opt_in_words),
        detect_revocation_phrases=settings.detect_revocation_phrases,
        languages=[lang for lang in LANGUAGES if lang in settings.languages],
        # The default (English) is left out, so a location never configured reads as empty.
        default_language="" if settings.default_language == "en" else settings.default_language,
        language_words=[
            pb.LanguageKeywords(
                language=w.language,
                opt_out_words=sorted(w.opt_out_words),
                opt_in_words=sorted(w.opt_in_words),
            )
            for w in settings.language_words
        ],
        share_rcs_sms_opt_outs=settings.share_rcs_sms_opt_outs,
    )


REPLY_KIND_TO_PB: dict[ReplyKind, pb.ComplianceReplyKind.ValueType] = {
    k: pb.ComplianceReplyKind.Value(f"COMPLIANCE_REPLY_KIND_{k.value}") for k in ReplyKind
}


_R = TypeVar("_R", pb.GetComplianceRepliesResponse, pb.UpdateComplianceRepliesResponse)


def compliance_replies_to_pb(replies: ComplianceReplies, cls: type[_R]) -> _R:
    """A location's replies: its own texts and every reply as sent, with its measure."""
    return cls(
        brand_name=replies.brand_name,
        support_contact=replies.support_contact,
        configured=replies.configured,
        texts=[
            pb.ComplianceReplyTexts(
                language=t.language,
                opt_out_confirmation=t.opt_out_confirmation or "",
                opt_in_confirmation=t.opt_in_confirmation or "",
                help=t.help or "",
            )
            for t in replies.texts
        ],
        replies=[
            pb.ComplianceReply(
                language=r.language,
                kind=REPLY_KIND_TO_PB[r.kind],
                template=r.template,
                text=r.text,
                is_default=r.is_default,
                encoding=r.measure.encoding,
                length=r.measure.length,
                segments=r.measure.segments,
                warning=r.measure.warning,
            )
            for r in every_reply(replies)
        ],
    )


def keyword_settings_to_pb(settings: KeywordSettings) -> pb.GetKeywordSettingsResponse:
    """A location's settings, with the built-in words they add to."""
    return pb.GetKeywordSettingsResponse(
        settings=settings_to_pb(settings),
        default_opt_out_words=sorted(OPT_OUT_WORDS),
        default_opt_in_words=sorted(OPT_IN_WORDS),
        help_words=sorted(HELP_WORDS),
        revocation_phrases=list(REVOCATION_PHRASES),
        built_in_words=[
            pb.LanguageKeywords(
                language=lang,
                opt_out_words=sorted(BUILT_IN_WORDS[lang].opt_out),
                opt_in_words=sorted(BUILT_IN_WORDS[lang].opt_in),
                help_words=sorted(BUILT_IN_WORDS[lang].help),
            )
            for lang in LANGUAGES
        ],
    )


# --- answers of writes ---------------------------------------------------------------------


def set_dnd_to_pb(result: WriteResult) -> pb.SetDndResponse:
    return pb.SetDndResponse(
        status=status_to_pb(result.state),
        changed=bool(result.steps),
        affected_blocks=[
            block_to_pb(step.target) for step in result.steps if isinstance(step.target, Block)
        ],
        cursor=write_cursor(result),
    )


def inbound_to_pb(
    verdict: InboundVerdict,
    result: WriteResult,
    reply_text: str = "",
    reply_language: str = "",
    reply_kind: ReplyKind | None = None,
) -> pb.ProcessInboundMessageResponse:
    return pb.ProcessInboundMessageResponse(
        reply_text=reply_text,
        reply_language=reply_language,
        reply_kind=(
            REPLY_KIND_TO_PB[reply_kind]
            if reply_kind is not None
            else pb.COMPLIANCE_REPLY_KIND_UNSPECIFIED
        ),
        action=KEYWORD_ACTION_TO_PB[verdict.action],
        matched_keyword=verdict.matched_keyword,
        deliver_to_inbox=verdict.deliver_to_inbox,
        changed=bool(result.steps),
        status=status_to_pb(result.state),
        cursor=write_cursor(result),
        sms_blocked=verdict.sms_blocked,
        sms_blocked_by=[block_to_pb(b) for b in verdict.sms_blocked_by],
        explanation=verdict.explanation,
    )


_E = TypeVar(
    "_E",
    pb.ReportSmsDeliveryFailureResponse,
    pb.ReportEmailEventResponse,
    pb.ReportDeliveryEventResponse,
)


def provider_event_to_pb(
    cls: type[_E],
    outcome: EventOutcome,
    explanation: str,
    reason: Reason | None,
    result: WriteResult,
) -> _E:
    """The answer of a provider event report (``reason``: of the block it sets, if any)."""
    return cls(
        outcome=EVENT_OUTCOME_TO_PB[outcome],
        reason=REASON_TO_PB[reason] if reason is not None else pb.REASON_UNSPECIFIED,
        changed=bool(result.steps),
        status=status_to_pb(result.state),
        cursor=write_cursor(result),
        explanation=explanation,
    )


# --- answers of send checks ----------------------------------------------------------------


def check_send_to_pb(
    decision: SendDecision, state: ContactState, channel: Channel, dossier: bool
) -> pb.CheckSendResponse:
    """A CheckSend answer; a denial in full for a caller shown ``dossier`` (read
    permission), else in its decision view (``denial_summary``)."""
    if decision.quiet is not None:
        return _judged_by_quiet_hours(decision, state, dossier)
    if decision.allowed:
        if decision.consent is not None:
            return pb.CheckSendResponse(
                allowed=True,
                version=state.version,
                explanation=decision.explanation,
                consent=consent_to_pb(decision.consent, dt.datetime.now(dt.UTC), dossier),
            )
        return pb.CheckSendResponse(
            allowed=True, version=state.version, explanation=decision.explanation
        )
    if dossier:
        return pb.CheckSendResponse(
            allowed=False,
            denied_by=[block_to_pb(b) for b in decision.denied_by],
            version=state.version,
            explanation=decision.explanation,
            denied_by_address=[suppression_to_pb(s) for s in decision.denied_by_address],
            denial=_denial(decision),
        )
    blocks, suppressions, explanation = denial_summary(decision, channel)
    return pb.CheckSendResponse(
        allowed=False,
        denied_by=blocks,
        version=state.version,
        explanation=explanation,
        denied_by_address=suppressions,
        denial=_denial(decision),
    )


def _judged_by_quiet_hours(
    decision: SendDecision, state: ContactState, dossier: bool
) -> pb.CheckSendResponse:
    """The answer to a send DND allows, judged by quiet hours: allowed, or deferred."""
    verdict = decision.quiet
    assert verdict is not None
    fields = _deferral_fields(decision)
    if decision.consent is not None:
        fields["consent"] = consent_to_pb(decision.consent, dt.datetime.now(dt.UTC), dossier)
    return pb.CheckSendResponse(
        allowed=decision.allowed,
        version=state.version,
        explanation=decision.explanation,
        quiet_hours=_recipient_to_pb(verdict.recipient),
        **fields,
    )


TIME_ZONE_SOURCE_TO_PB: dict[ZoneSource, pb.TimeZoneSource.ValueType] = {
    z: pb.TimeZoneSource.Value(f"TIME_ZONE_SOURCE_{z.value}") for z in ZoneSource
}


@functools.lru_cache(maxsize=4096)
def _recipient_to_pb(who: Recipient) -> pb.QuietHoursRecipient:
    # Cached: a message field set from it is a copy.
    return pb.QuietHoursRecipient(
        time_zones=who.zones, time_zone_source=TIME_ZONE_SOURCE_TO_PB[who.source], state=who.state
    )


def quiet_rule_to_pb(verdict: QuietVerdict) -> pb.QuietHoursRule:
    assert verdict.rule is not None
    return _quiet_rule_to_pb(verdict.rule, verdict.window, verdict.time_zone)


@functools.lru_cache(maxsize=4096)
def _quiet_rule_to_pb(rule: QuietRule, window: str, time_zone: str) -> pb.QuietHoursRule:
    # Cached: a message field set from it is a copy.
    return pb.QuietHoursRule(
        rule_id=rule.rule_id,
        jurisdiction=rule.jurisdiction,
        window=window,
        citation=rule.citation,
        source_url=rule.source_url,
        time_zone=time_zone,
    )


@functools.lru_cache(maxsize=4096)
def _not_before_to_pb(when: dt.datetime) -> Timestamp:
    # Cached (the mornings repeat): a message field set from it is a copy.
    return timestamp(when)


def quiet_hours_settings_to_pb(settings: QuietHoursSettings) -> pb.QuietHoursSettings:
    window = settings.window
    return pb.QuietHoursSettings(
        informational=settings.informational,
        default_time_zone=settings.default_time_zone,
        window_start=clock_text(window.start) if window else "",
        window_end=clock_text(window.end) if window else "",
    )


def _deferral_fields(decision: SendDecision) -> dict[str, Any]:
    """The CheckResult fields of a deferred decision (none for any other)."""
    verdict = decision.quiet
    if verdict is None or verdict.allowed:
        return {}
    fields: dict[str, Any] = {"deferred": True, "deferred_by": quiet_rule_to_pb(verdict)}
    if verdict.not_before is not None:
        fields["not_before"] = _not_before_to_pb(verdict.not_before)
    return fields


def _denial(decision: SendDecision) -> pb.Denial.ValueType:
    denial = decision.denial
    return pb.DENIAL_UNSPECIFIED if denial is None else DENIAL_TO_PB[denial]


# The part of a BatchCheckSend response that details (include_details) may take, at most.
DETAILS_ALLOWANCE = 2 << 20

# (contact, normalised address[, the recipient's time zone for quiet hours])
Target = tuple[str, ...]


def batch_check_to_pb(
    targets: Sequence[Target],
    answers: Mapping[Target, tuple[SendDecision, ContactState]],
    channel: Channel,
    details: bool,
    allowance: int,
) -> pb.BatchCheckSendResponse:
    """One result per target, in request order: a repeated target refers to its first
    result (``repeat_of``); denials in their decision view, or with ``details`` in full
    while they fit in ``allowance`` bytes (later ones then say ``details_omitted``)."""
    first: dict[Target, int] = {}
    results = []
    for index, target in enumerate(targets):
        decision, state = answers[target]
        earlier = first.setdefault(target, index)
        if earlier != index:
            results.append(
                pb.CheckResult(
                    contact_id=target[0],
                    allowed=decision.allowed,
                    version=state.version,
                    repeat_of=earlier,
                    **_deferral_fields(decision),
                )
            )
            continue
        if decision.allowed:  # most answers: no repeated fields to build
            results.append(
                pb.CheckResult(
                    contact_id=target[0],
                    allowed=True,
                    version=state.version,
                    explanation=decision.explanation,
                )
            )
            continue
        if decision.deferred:  # no blocks deny it: nothing compact or detailed to tell
            results.append(
                pb.CheckResult(
                    contact_id=target[0],
                    allowed=False,
                    version=state.version,
                    explanation=decision.explanation,
                    **_deferral_fields(decision),
                )
            )
            continue
        if details and allowance >= 0:
            full = pb.CheckResult(
                contact_id=target[0],
                allowed=False,
                denied_by=[block_to_pb(b) for b in decision.denied_by],
                denied_by_address=[suppression_to_pb(s) for s in decision.denied_by_address],
                version=state.version,
                explanation=decision.explanation,
                denial=_denial(decision),
            )
            size = full.ByteSize()
            if size <= allowance:
                allowance -= size
                results.append(full)
                continue
            allowance = -1  # in request order: no later result gets details either
        blocks, suppressions, explanation = denial_summary(decision, channel)
        results.append(
            pb.CheckResult(
                contact_id=target[0],
                allowed=False,
                denied_by=blocks,
                denied_by_address=suppressions,
                version=state.version,
                explanation=explanation,
                details_omitted=details,
                denial=_denial(decision),
            )
        )
    return pb.BatchCheckSendResponse(results=results)


def denial_summary(
    decision: SendDecision, channel: Channel
) -> tuple[list[pb.Block], list[pb.AddressSuppression], str]:
    """What denies a send, without the dossier: block and suppression summaries, and an
    explanation naming no other contact."""
    return (
        [block_summary_to_pb(b) for b in decision.denied_by],
        [suppression_summary_to_pb(s) for s in decision.denied_by_address],
        explain_without_holder(decision, channel),
    )


# --- history and change streams ------------------------------------------------------------


def history_page_to_pb(rows: Sequence[HistoryRow], page_size: int) -> pb.ListHistoryResponse:
    """A page of history from up to ``page_size + 1`` rows (one more: there is a next page).
    Pages are cut by sequence number: changes committed while paging (all above the first
    page's) never shift later pages."""
    page = rows[:page_size]
    more = len(rows) > page_size
    return pb.ListHistoryResponse(
        entries=[history_to_pb(row, encode_cursor(row.heads)) for row in page],
        next_page_token=encode_page_token(page[-1].seq) if more else "",
    )


def bookmark_to_pb(position: Position) -> pb.WatchChangesResponse:
    return pb.WatchChangesResponse(bookmark=pb.Bookmark(cursor=encode_bookmark(position)))


def write_cursor(result: WriteResult) -> str:
    """The cursor of a write's answer: the position of the contact's last change."""
    position = result.position
    if not position:
        # A result that came without its position: its lane at the change, the others at
        # the start (as a min_cursor it asks exactly for the change).
        count = lanes.count()
        at = [0] * count
        at[lanes.lane_of(result.state.location_id, count)] = result.last_seq
        position = tuple(at)
    return encode_cursor(position)


_BATCHES_KEPT = 64


def _tag(message: Any, field: str) -> bytes:
    """The key of a length-delimited field of ``message``, as protobuf encodes it."""
    number = message.DESCRIPTOR.fields_by_name[field].number
    return varint(number << 3 | 2)


_EVENT_TAG = _tag(pb.WatchChangesResponse, "event")
_EVENTS_TAG = _tag(pb.WatchChangesResponse, "events")
_EVENTS_EVENT_TAG = _tag(pb.ChangeEvents, "events")


def _field(tag: bytes, data: bytes) -> bytes:
    return tag + varint(len(data)) + data


class ChangeMessages:
    """The stream message of each recent event (a change at a stream position), encoded once
    and shared by every stream that has yet to send it (the ``keep`` most recent are kept);
    several events ready together go in one message. Messages are serialized
    ``WatchChangesResponse`` bytes, which gRPC sends as they are (``rpc/decoding.py``): a
    message of several events is its events' encodings joined, each encoded once however many
    streams send it in however many batches."""

    def __init__(self, keep: int = 4096) -> None:
        self._keep = keep
        # (lane, seq, position) -> the serialized ChangeEvent.
        self._events: OrderedDict[tuple[int, int, Position], bytes] = OrderedDict()
        self._batches: OrderedDict[tuple[tuple[tuple[int, int], ...], Position], bytes] = (
            OrderedDict()
        )

    def message(self, events: Sequence[Event]) -> bytes:
        if len(events) == 1:
            return _field(_EVENT_TAG, self._event(events[0]))
        # Streams of one filter get the same events together from one feed batch: built once.
        key = (tuple((e.change.lane, e.change.seq) for e in events), events[-1].position)
        message = self._batches.get(key)
        if message is None:
            joined = b"".join([_field(_EVENTS_EVENT_TAG, self._event(e)) for e in events])
            message = _field(_EVENTS_TAG, joined)
            self._batches[key] = message
            if len(self._batches) > _BATCHES_KEPT:
                self._batches.popitem(last=False)
        return message

    def _event(self, event: Event) -> bytes:
        change = event.change
        key = (change.lane, change.seq, event.position)
        encoded = self._events.get(key)
        if encoded is None:
            encoded = change_to_pb(change, encode_cursor(event.position)).SerializeToString()
            self._events[key] = encoded
            if len(self._events) > self._keep:
                self._events.popitem(last=False)
        return encoded


# --- consent ---------------------------------------------------------------------------------


def policy_to_pb(policy: ConsentPolicy) -> pb.ConsentPolicy:
    """A location's consent policy: its channels requiring consent, in enum order."""
    return pb.ConsentPolicy(
        channels=[
            pb.ChannelConsentPolicy(
                channel=CHANNEL_TO_PB[channel],
                require_marketing=rules.marketing,
                require_informational=rules.informational,
            )
            for channel, rules in sorted(
                policy.channels.items(), key=lambda item: list(Channel).index(item[0])
            )
            if rules.marketing
        ],
        double_opt_in_window_seconds=int(policy.double_opt_in_window.total_seconds()),
    )


_M = TypeVar("_M", bound=Message)


# What a caller without the read permission is not shown of a write's answer, by message:
# who wrote what about the contact (as CheckSend's decision view), and which other contact
# holds a suppressed address.
_DOSSIER_FIELDS: dict[str, tuple[str, ...]] = {
    "dnd.v1.Block": ("actor_id", "note", "evidence", "provider_detail", "address"),
    "dnd.v1.AddressSuppression": ("address", "actor_id", "contact_id", "provider_detail"),
    "dnd.v1.Consent": ("evidence",),
}


def decisions_only(answer: _M) -> _M:
    """``answer`` as a caller without the read permission is shown it: every block with its
    direction, scope, reason, source and since only, every suppression with its channel,
    reason, source and since only, no consent's evidence (at any depth)."""
    for message in messages(answer):
        for name in _DOSSIER_FIELDS.get(message.DESCRIPTOR.full_name, ()):
            message.ClearField(name)
    return answer


def record_consent_to_pb(
    key: tuple[Channel, ConsentPurpose, str], result: WriteResult
) -> pb.RecordConsentResponse:
    """The answer of a RecordConsent of the consent of ``key`` (channel, purpose, address)."""
    now = dt.datetime.now(dt.UTC)
    state = result.state
    consent = next(c for c in state.consents if (c.channel, c.purpose, c.address) == key)
    return pb.RecordConsentResponse(
        consent=consent_to_pb(consent, now),
        status=status_to_pb(state, now),
        changed=bool(result.steps),
        cursor=write_cursor(result),
        explanation=explain_recorded(consent, state.blocks, now),
    )


def revoke_consent_to_pb(result: WriteResult) -> pb.RevokeConsentResponse:
    now = dt.datetime.now(dt.UTC)
    return pb.RevokeConsentResponse(
        revoked=[
            consent_to_pb(step.target, now)
            for step in result.steps
            if isinstance(step.target, Consent)
        ],
        status=status_to_pb(result.state, now),
        changed=bool(result.steps),
        cursor=write_cursor(result),
    )


def server_info_to_pb(
    version: str, now: dt.datetime, caller: Caller, *, auth: bool, tls: bool
) -> pb.GetServerInfoResponse:
    """The server and the caller as GetServerInfo tells them: permissions by their scope
    names, locations sorted ("*" for every location)."""
    locations = ["*"] if caller.locations is None else sorted(caller.locations)
    return pb.GetServerInfoResponse(
        server_version=version,
        server_time=timestamp(now),
        caller_name=caller.name,
        permissions=sorted(p.value for p in caller.permissions),
        locations=locations,
        auth_enabled=auth,
        tls_enabled=tls,
    )


# -- bulk writes, listings and the export ------------------------------------------------------

_REFUSALS_PER_ITEM = 8
_DESCRIPTION_MAX = 300
# The most a result without details takes (outcome, version, framing), and the answer's own
# fields (cursor, counts, flag): a bound on the compact answer of a call.
BULK_RESULT_BYTES = 16
BULK_ANSWER_BYTES = 512
# Room for the details of the item that crosses the allowance (refusals or violations).
BULK_DETAILS_SLACK = 16 << 10


def bulk_progress(
    invalid: Mapping[int, Sequence[FieldViolation]],
    allowance: int,
    kept: bytes | None,
    start: int,
    outcomes: Sequence[ItemOutcome | None],
) -> bytes:
    """The answer of a bulk write so far, as kept with its idempotency key: the kept one
    (None at first) with the results of a chunk of ``outcomes`` from item ``start`` added.
    Refusal and violation details stop once they take ``allowance`` bytes (the outcomes
    never do)."""
    answer = pb.BulkSetDndResponse.FromString(kept) if kept else pb.BulkSetDndResponse()
    add_bulk_results(answer, invalid, allowance, start, outcomes)
    return answer.SerializeToString()


def add_bulk_results(
    answer: pb.BulkSetDndResponse,
    invalid: Mapping[int, Sequence[FieldViolation]],
    allowance: int,
    start: int,
    outcomes: Sequence[ItemOutcome | None],
) -> None:
    details = sum(r.ByteSize() for r in answer.results if r.refusals or r.violations)
    last_seq, last_written = 0, None
    for index, outcome in enumerate(outcomes, start=start):
        result = answer.results.add()
        if outcome is None:
            result.outcome = pb.BULK_ITEM_OUTCOME_INVALID
            answer.invalid += 1
            if details < allowance:
                result.violations.extend(
                    pb.BulkItemViolation(
                        field=v.field[:_DESCRIPTION_MAX],
                        description=v.description[:_DESCRIPTION_MAX],
                    )
                    for v in invalid.get(index, ())
                )
        elif isinstance(outcome.error, ClearNotPermitted):
            result.outcome = pb.BULK_ITEM_OUTCOME_REFUSED
            answer.refused += 1
            if details < allowance:
                result.refusals.extend(
                    pb.BulkItemRefusal(
                        reason=REASON_TO_PB[r.block.reason],
                        subject=refusal_subject(r.block),
                        description=f"{r.why}; {r.what_clears_it}"[:_DESCRIPTION_MAX],
                    )
                    for r in outcome.error.refusals[:_REFUSALS_PER_ITEM]
                )
        elif isinstance(outcome.error, VersionMismatch):
            result.outcome = pb.BULK_ITEM_OUTCOME_VERSION_MISMATCH
            result.version = outcome.error.actual
            answer.version_mismatches += 1
        elif outcome.error is not None:
            # Another domain refusal of the item's fields (as SetDnd's INVALID_ARGUMENT).
            result.outcome = pb.BULK_ITEM_OUTCOME_INVALID
            answer.invalid += 1
            if isinstance(outcome.error, InvalidArgument) and details < allowance:
                result.violations.extend(
                    pb.BulkItemViolation(
                        field=f"items[{index}].{v.field}"[:_DESCRIPTION_MAX],
                        description=v.description[:_DESCRIPTION_MAX],
                    )
                    for v in outcome.error.violations
                )
        else:
            written = outcome.result
            assert written is not None
            result.version = written.state.version
            if written.steps:
                result.outcome = pb.BULK_ITEM_OUTCOME_CHANGED
                answer.changed += 1
                if written.last_seq > last_seq:
                    last_seq, last_written = written.last_seq, written
            else:
                result.outcome = pb.BULK_ITEM_OUTCOME_UNCHANGED
                answer.unchanged += 1
        if result.refusals or result.violations:
            details += result.ByteSize()
        elif details >= allowance and result.outcome in (
            pb.BULK_ITEM_OUTCOME_INVALID,
            pb.BULK_ITEM_OUTCOME_REFUSED,
        ):
            answer.details_truncated = True
    if last_written is not None:
        answer.cursor = write_cursor(last_written)


def refusal_subject(target: Block | AddressSuppression) -> str:
    """``OUTBOUND/SMS`` for a contact's block, ``ADDRESS/SMS/+14155552671`` for a
    suppression (as SetDnd's PreconditionFailure names them)."""
    if isinstance(target, AddressSuppression):
        return f"ADDRESS/{target.channel.value}/{target.address}"
    return f"{target.direction.value}/{scope_name(target.scope)}"


def listed_block_to_pb(listed: ListedBlock) -> pb.ListedBlock:
    message = pb.ListedBlock(contact_id=listed.contact_id)
    message.block.CopyFrom(block_to_pb(listed.block))
    return message


# --- erasure and block expiry ----------------------------------------------------------------


def erase_to_pb(result: WriteResult) -> pb.EraseContactResponse:
    """The answer of an erasure (no personal data: it is kept for retries as it is)."""
    done = result.detail
    assert isinstance(done, ErasureDone)
    counts = done.counts
    return pb.EraseContactResponse(
        changed=done.changed,
        already_erased=done.already_erased and not done.changed,
        erased=pb.ErasureCounts(
            blocks_scrubbed=counts.blocks_scrubbed,
            consents_erased=counts.consents_erased,
            suppressions_hashed=counts.suppressions_hashed,
            history_entries_scrubbed=counts.history_entries_scrubbed,
            idempotent_answers_scrubbed=counts.idempotent_answers_scrubbed,
        ),
        status=status_to_pb(replace(result.state, consents=())),
        cursor=write_cursor(result),
        explanation=done.explanation,
    )


def block_expiry_to_pb(expiry: BlockExpiry) -> pb.BlockExpirySettings:
    lifetime = expiry.sms_carrier_temporary
    return pb.BlockExpirySettings(
        sms_carrier_temporary_seconds=int(lifetime.total_seconds()) if lifetime else 0
    )


# --- provider code tables ---------------------------------------------------------------------

_ORIGIN_TO_PB: dict[Origin, pb.MappingOrigin.ValueType] = {
    Origin.BUILT_IN: pb.MAPPING_ORIGIN_BUILT_IN,
    Origin.LOCATION: pb.MAPPING_ORIGIN_LOCATION,
}


def mapping_to_pb(
    provider: str, entry: CodeEntry, origin: Origin, doc: str
) -> pb.DeliveryEventMapping:
    return pb.DeliveryEventMapping(
        provider=provider,
        code=entry.code,
        channel=CHANNEL_TO_PB[entry.channel],
        reason=REASON_TO_PB[entry.reason] if entry.reason else pb.REASON_UNSPECIFIED,
        source=SOURCE_TO_PB[entry.source],
        clears=entry.clears,
        meaning=entry.meaning,
        documentation_url=doc,
        note=entry.note,
        origin=_ORIGIN_TO_PB[origin],
    )


def resolution_to_pb(answer: pb.ReportDeliveryEventResponse, found: Resolution) -> None:
    """Adds to a ReportDeliveryEvent's answer what decided it."""
    answer.normalized_provider = found.provider
    answer.normalized_code = found.code
    if found.entry is not None and found.origin is not None:
        answer.mapping.CopyFrom(mapping_to_pb(found.provider, found.entry, found.origin, found.doc))


def override_to_pb(override: Override) -> pb.DeliveryEventOverride:
    return pb.DeliveryEventOverride(
        provider=override.provider,
        code=override.code,
        channel=CHANNEL_TO_PB[override.channel],
        reason=REASON_TO_PB[override.reason] if override.reason else pb.REASON_UNSPECIFIED,
        ignore=override.reason is None,
    )


def delivery_mappings_to_pb(
    overrides: Sequence[Override], provider: str = ""
) -> pb.GetDeliveryEventMappingsResponse:
    """A location's overrides and the built-in tables, of ``provider`` only when given."""
    tables = [t for t in PROVIDER_TABLES if not provider or t.provider == provider]
    return pb.GetDeliveryEventMappingsResponse(
        overrides=[override_to_pb(o) for o in overrides if not provider or o.provider == provider],
        built_in=[
            mapping_to_pb(t.provider, e, Origin.BUILT_IN, t.doc_of(e))
            for t in tables
            for e in t.entries
        ],
    )
