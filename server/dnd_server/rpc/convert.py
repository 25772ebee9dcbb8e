"""Mapping between protobuf messages and domain types, and the answers of the RPCs."""

from __future__ import annotations

import datetime as dt
import functools
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from dnd.v1 import dnd_pb2 as pb
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp

from dnd_server.auth import Caller
from dnd_server.cursor import encode_bookmark, encode_cursor, encode_page_token
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
from dnd_server.domain.inbound import InboundVerdict
from dnd_server.domain.keywords import (
    HELP_WORDS,
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
)
from dnd_server.domain.provider_events import EventOutcome
from dnd_server.domain.rules import Denial, SendDecision, explain_without_holder, summarize
from dnd_server.records import ChangeRow, HistoryRow, WriteResult

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
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(dt.UTC))
    return ts


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
    )


def keyword_settings_to_pb(settings: KeywordSettings) -> pb.GetKeywordSettingsResponse:
    """A location's settings, with the built-in words they add to."""
    return pb.GetKeywordSettingsResponse(
        settings=settings_to_pb(settings),
        default_opt_out_words=sorted(OPT_OUT_WORDS),
        default_opt_in_words=sorted(OPT_IN_WORDS),
        help_words=sorted(HELP_WORDS),
        revocation_phrases=list(REVOCATION_PHRASES),
    )


# --- answers of writes ---------------------------------------------------------------------


def set_dnd_to_pb(result: WriteResult) -> pb.SetDndResponse:
    return pb.SetDndResponse(
        status=status_to_pb(result.state),
        changed=bool(result.steps),
        affected_blocks=[
            block_to_pb(step.target) for step in result.steps if isinstance(step.target, Block)
        ],
        cursor=encode_cursor(result.last_seq),
    )


def inbound_to_pb(verdict: InboundVerdict, result: WriteResult) -> pb.ProcessInboundMessageResponse:
    return pb.ProcessInboundMessageResponse(
        action=KEYWORD_ACTION_TO_PB[verdict.action],
        matched_keyword=verdict.matched_keyword,
        deliver_to_inbox=verdict.deliver_to_inbox,
        changed=bool(result.steps),
        status=status_to_pb(result.state),
        cursor=encode_cursor(result.last_seq),
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
        cursor=encode_cursor(result.last_seq),
        explanation=explanation,
    )


# --- answers of send checks ----------------------------------------------------------------


def check_send_to_pb(
    decision: SendDecision, state: ContactState, channel: Channel, dossier: bool
) -> pb.CheckSendResponse:
    """A CheckSend answer; a denial in full for a caller shown ``dossier`` (read
    permission), else in its decision view (``denial_summary``)."""
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


def _denial(decision: SendDecision) -> pb.Denial.ValueType:
    denial = decision.denial
    return pb.DENIAL_UNSPECIFIED if denial is None else DENIAL_TO_PB[denial]


# The part of a BatchCheckSend response that details (include_details) may take, at most.
DETAILS_ALLOWANCE = 2 << 20

Target = tuple[str, str]  # (contact, normalised address)


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
        entries=[history_to_pb(row, encode_cursor(row.seq)) for row in page],
        next_page_token=encode_page_token(page[-1].seq) if more else "",
    )


def bookmark_to_pb(seq: int) -> pb.WatchChangesResponse:
    return pb.WatchChangesResponse(bookmark=pb.Bookmark(cursor=encode_bookmark(seq)))


class ChangeMessages:
    """The stream message of each recent change, built once and shared by every stream that
    has yet to send it (the ``keep`` most recent are kept)."""

    def __init__(self, keep: int = 4096) -> None:
        self._keep = keep
        self._messages: OrderedDict[int, pb.WatchChangesResponse] = OrderedDict()

    def message(self, change: ChangeRow) -> pb.WatchChangesResponse:
        message = self._messages.get(change.seq)
        if message is None:
            event = change_to_pb(change, encode_cursor(change.seq))
            message = pb.WatchChangesResponse(event=event)
            self._messages[change.seq] = message
            if len(self._messages) > self._keep:
                self._messages.popitem(last=False)
        return message


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


def without_consent_evidence(answer: _M) -> _M:
    """``answer`` with the evidence of every consent it shows cleared (its ``status``'s
    consents, its ``consent``, its ``revoked``), for a caller without the read permission."""
    message: Any = answer  # one of several answers: its fields are looked up by name
    fields = answer.DESCRIPTOR.fields_by_name
    shown: list[pb.Consent] = []
    if "status" in fields and message.HasField("status"):
        shown.extend(message.status.consents)
    if "consent" in fields and message.HasField("consent"):
        shown.append(message.consent)
    if "revoked" in fields:
        shown.extend(message.revoked)
    for consent in shown:
        consent.ClearField("evidence")
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
        cursor=encode_cursor(result.last_seq),
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
        cursor=encode_cursor(result.last_seq),
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
