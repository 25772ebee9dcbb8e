"""Use cases: each joins the pure domain rules to the store. No protobuf here."""

from __future__ import annotations

import datetime as dt
import enum
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import structlog

from dnd_server.cache import ContactCache, Entry, PolicyCache
from dnd_server.domain.consent import (
    CONSENT_FOR,
    MARKETING_ONLY_REASONS,
    NO_POLICY,
    ConsentPolicy,
    ConsentPurpose,
    ConsentRecord,
    Purpose,
)
from dnd_server.domain.keywords import (
    Classification,
    IgnoredWord,
    KeywordKind,
    KeywordSettings,
    classify,
    effective_settings,
)
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
from dnd_server.domain.plans import (
    plan_add,
    plan_claim_reply,
    plan_inbound_message,
    plan_record_consent,
    plan_remove,
    plan_revoke_consent,
    provider_block,
)
from dnd_server.domain.provider_events import SMS_ERROR_CODES, EmailEvent, email_effect
from dnd_server.domain.rules import ClearCredentials, SendDecision, decide_send, own_address
from dnd_server.feed import ChangeFeed
from dnd_server.records import (
    Addresses,
    ChangeMeta,
    ChangeRow,
    Decision,
    HistoryRow,
    Idempotency,
    Replay,
    WriteResult,
)
from dnd_server.storage.store import Store
from dnd_server.watch import WatchFilter, WatchSettings, follow

log = structlog.get_logger("dnd_server.service")

# Locations whose ignored keyword words are remembered as logged (the oldest forgotten first).
_IGNORED_LOGGED_MAX = 4096


class Action(enum.Enum):
    ENABLE = "ENABLE"
    DISABLE = "DISABLE"


@dataclass(frozen=True, slots=True)
class SetDndCommand:
    location_id: str
    contact_id: str
    action: Action
    direction: Direction
    scope: Scope
    # ENABLE: the new block's reason. DISABLE: only clear this reason (None: every reason).
    reason: Reason | None
    meta: ChangeMeta
    suppression_removal_confirmed: bool = False
    expected_version: int | None = None
    # Normalised address ("" if none) on the scope's channel.
    address: str = ""
    # Marketing only (scope.marketing_only): DISABLE clears only the scope's marketing-only
    # blocks (ENABLE's reason is a marketing-only one already).
    marketing_only: bool = False


@dataclass(frozen=True, slots=True)
class RecordConsentCommand:
    location_id: str
    contact_id: str
    record: ConsentRecord
    meta: ChangeMeta
    expected_version: int | None = None


@dataclass(frozen=True, slots=True)
class RevokeConsentCommand:
    location_id: str
    contact_id: str
    channel: Channel
    # None: every purpose.
    purpose: ConsentPurpose | None
    # "": every consent of the channel; else only that address's.
    address: str
    meta: ChangeMeta


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class InboundMessage:
    location_id: str
    contact_id: str
    channel: Channel
    body: str
    # Normalised sender phone ("" if none).
    from_address: str = ""
    # The authenticated caller reporting it (see ChangeMeta.caller).
    caller: str = ""


@dataclass(frozen=True, slots=True)
class ProviderEvent:
    """A delivery failure or email event: the block it sets, or None when it sets none."""

    location_id: str
    contact_id: str
    channel: Channel
    provider: str
    detail: str
    effect: tuple[Reason, Source] | None
    # Normalised address ("" if none).
    address: str = ""
    # The authenticated caller reporting it (see ChangeMeta.caller).
    caller: str = ""
    # The event lifts the effect's block (e.g. WhatsApp "resume marketing") instead.
    clears: bool = False

    @property
    def source(self) -> Source:
        """The source the event acts as: that of the block it sets (SYSTEM when none)."""
        return self.effect[1] if self.effect else Source.SYSTEM


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """A page of history: a contact's (``contact_id``), or an address's (``address`` on
    ``channel``), of changes with a sequence number below ``before_seq``."""

    location_id: str
    contact_id: str
    channel: Channel | None
    address: str
    before_seq: int
    page_size: int


@dataclass(frozen=True, slots=True)
class InboundDecision:
    """What an inbound message was and did (``WriteResult.detail`` of its write)."""

    keyword: Classification
    action: KeywordKind


def sms_failure_effect(code: str) -> tuple[Reason, Source] | None:
    reason = SMS_ERROR_CODES.get(code)
    return None if reason is None else (reason, Source.SYSTEM)


def email_event_effect(
    event: EmailEvent, marketing_stream: bool = False
) -> tuple[Reason, Source] | None:
    effect = email_effect(event, marketing_stream)
    return None if effect is None else (effect.reason, effect.source)


@dataclass(frozen=True, slots=True)
class ReadOptions:
    """How fresh a read must be: at least the write at ``min_seq``, or straight from the
    database when ``consistent``; otherwise whatever the cache holds."""

    min_seq: int | None = None
    consistent: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Contacts of one location (without suppressions) and the suppressions per address."""

    contacts: dict[str, ContactState]
    suppressions: dict[tuple[Channel, str], tuple[AddressSuppression, ...]]


class DndService:
    def __init__(
        self,
        *,
        store: Store,
        cache: ContactCache | None = None,
        policies: PolicyCache | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self._store = store
        self._cache = cache
        self._policies = policies if policies is not None else PolicyCache(0)
        # The time consent is judged at on reads (writes use the database's clock).
        self._clock = clock
        # (location, ignored stored keyword words) already logged: each logged once.
        self._ignored_logged: OrderedDict[tuple[str, tuple[IgnoredWord, ...]], None] = OrderedDict()

    async def read(
        self,
        location_id: str,
        contact_ids: Sequence[str],
        addresses: Addresses = (),
        options: ReadOptions = ReadOptions(),
    ) -> Snapshot:
        """Contacts and address suppressions, from the cache where it may answer, with at
        most one database round trip for the rest."""
        cache = self._cache
        use_cache = (
            cache is not None
            and cache.enabled
            and not options.consistent
            and (options.min_seq is None or options.min_seq <= cache.position)
        )
        contacts: dict[str, ContactState] = {}
        by_address: dict[tuple[Channel, str], tuple[AddressSuppression, ...]] = {}
        missing = list(dict.fromkeys(contact_ids))
        missing_addresses = list(dict.fromkeys(addresses))
        if use_cache:
            assert cache is not None
            missing = []
            for contact_id in dict.fromkeys(contact_ids):
                entry = cache.get((location_id, contact_id))
                if entry is None:
                    missing.append(contact_id)
                else:
                    contacts[contact_id] = entry.state
            missing_addresses = []
            for channel, address in dict.fromkeys(addresses):
                cached = cache.get_address((location_id, channel, address))
                if cached is None:
                    missing_addresses.append((channel, address))
                else:
                    by_address[(channel, address)] = cached
        if not missing and not missing_addresses:
            return Snapshot(contacts, by_address)
        with _reading(cache if use_cache else None) as read_from:
            found = await self._store.read_contacts(location_id, missing, missing_addresses)
        for channel, address in missing_addresses:
            matching = tuple(
                s for s in found.suppressions if s.channel is channel and s.address == address
            )
            by_address[(channel, address)] = matching
            if use_cache and cache is not None:
                cache.put_address((location_id, channel, address), matching, read_from)
        for contact_id in missing:
            state = replace(found.contacts[contact_id], suppressions=())
            contacts[contact_id] = state
            if use_cache and cache is not None:
                cache.put((location_id, contact_id), Entry(state, found.last_seqs[contact_id]))
        return Snapshot(contacts, by_address)

    def _remember(self, outcome: WriteResult | Replay, addresses: Addresses) -> None:
        """Writes through this replica update its cache before they return."""
        if self._cache is None or not isinstance(outcome, WriteResult):
            return
        state = outcome.state
        key = (state.location_id, state.contact_id)
        self._cache.put(key, Entry(replace(state, suppressions=()), outcome.last_seq))
        for channel, address in addresses:
            matching = tuple(
                s for s in state.suppressions if s.channel is channel and s.address == address
            )
            self._cache.put_address(
                (state.location_id, channel, address), matching, outcome.last_seq
            )

    async def get_status(
        self,
        location_id: str,
        contact_id: str,
        addresses: Addresses = (),
        options: ReadOptions = ReadOptions(),
    ) -> ContactState:
        snapshot = await self.read(location_id, [contact_id], addresses, options)
        shown = tuple(s for group in snapshot.suppressions.values() for s in group)
        return replace(snapshot.contacts[contact_id], suppressions=shown)

    async def check_send(
        self,
        location_id: str,
        contact_id: str,
        channel: Channel,
        direction: Direction,
        address: str = "",
        options: ReadOptions = ReadOptions(),
        purpose: Purpose | None = None,
        caller: str = "",
    ) -> tuple[SendDecision, ContactState]:
        """One decision. A COMPLIANCE_REPLY the read state allows is allowed only once its
        claim is written (``claim_reply``): that write decides again, on the locked state.
        A COMPLIANCE_REPLY is read from the database, never a cache: an opt-out made through
        another replica a moment ago must not read as no DND at all (which needs no claim)."""
        if purpose is Purpose.COMPLIANCE_REPLY:
            options = replace(options, consistent=True)
        results = await self.batch_check(
            location_id, channel, direction, [(contact_id, address)], options, purpose
        )
        decision, state = results[0]
        if decision.claim is not None:
            return await self.claim_reply(location_id, contact_id, channel, address, caller)
        return decision, state

    async def batch_check(
        self,
        location_id: str,
        channel: Channel,
        direction: Direction,
        targets: Sequence[tuple[str, str]],
        options: ReadOptions = ReadOptions(),
        purpose: Purpose | None = None,
    ) -> list[tuple[SendDecision, ContactState]]:
        """One decision per (contact, address) target, in order (a COMPLIANCE_REPLY is never
        claimed here: see ``check_send``)."""
        addresses = [(channel, address) for _, address in targets if address]
        # The location's consent policy (cached), read only for a purpose it can require
        # consent for, outbound: a check of no purpose reads nothing more than before.
        policy = NO_POLICY
        if purpose in CONSENT_FOR and direction is Direction.OUTBOUND:
            policy = await self.consent_policy(location_id, options.consistent)
        snapshot = await self.read(
            location_id, [contact for contact, _ in targets], addresses, options
        )
        now = self._clock()
        results = []
        for contact_id, address in targets:
            state = snapshot.contacts[contact_id]
            suppressions = snapshot.suppressions.get((channel, address), ()) if address else ()
            decision = decide_send(
                state.blocks,
                channel,
                direction,
                suppressions,
                purpose=purpose,
                address=address,
                consents=state.consents,
                policy=policy,
                now=now,
            )
            results.append((decision, state))
        return results

    async def claim_reply(
        self, location_id: str, contact_id: str, channel: Channel, address: str, caller: str = ""
    ) -> tuple[SendDecision, ContactState]:
        """Claim the one compliance reply after the contact's opt-out on ``channel``: decided
        again on the locked state with the database's clock (``plan_claim_reply``), so of
        concurrent claims exactly one is allowed, and a stale cache cannot widen the window.
        The claim is a change of its own (kind COMPLIANCE_REPLY, version + 1)."""

        def plan(state: ContactState, now: dt.datetime) -> Decision:
            decision, steps = plan_claim_reply(state, channel, address, now)
            return Decision(steps, decision)

        addresses = [(channel, address)] if address else []
        meta = ChangeMeta(
            source=Source.SYSTEM,
            provider_detail=f"compliance_reply:{address}" if address else "compliance_reply",
            caller=caller,
        )
        outcome = await self._store.write(
            location_id, contact_id, plan, meta=meta, addresses=addresses
        )
        assert isinstance(outcome, WriteResult)  # no idempotency key: never a replay
        self._remember(outcome, addresses)
        decision = outcome.detail
        assert isinstance(decision, SendDecision)
        return decision, replace(outcome.state, suppressions=())

    async def set_dnd(
        self, cmd: SetDndCommand, idempotency: Idempotency | None = None
    ) -> WriteResult | Replay:
        addresses = [(cmd.scope, cmd.address)] if cmd.address and cmd.scope else []
        outcome = await self._store.write(
            cmd.location_id,
            cmd.contact_id,
            lambda state, now: plan_set_dnd(cmd, state, now),
            meta=cmd.meta,
            expected_version=cmd.expected_version,
            addresses=addresses,
            idempotency=idempotency,
        )
        self._remember(outcome, addresses)
        return outcome

    async def inbound_message(
        self, msg: InboundMessage, idempotency: Idempotency | None = None
    ) -> WriteResult | Replay:
        """Classify and apply an inbound text; ``WriteResult.detail`` is an InboundDecision."""
        if msg.channel is Channel.SMS:
            keyword = classify(msg.body, await self.keyword_settings(msg.location_id))
        else:
            keyword = Classification(KeywordKind.NONE)

        def plan(state: ContactState, now: dt.datetime) -> Decision:
            outcome = plan_inbound_message(state, keyword, msg.body, msg.from_address, now)
            return Decision(outcome.steps, InboundDecision(keyword, outcome.action))

        addresses = [(Channel.SMS, msg.from_address)] if msg.from_address else []
        meta = ChangeMeta(
            source=Source.CONTACT,
            actor_id=msg.from_address,
            evidence=msg.body if keyword.kind is not KeywordKind.NONE else "",
            provider_detail=f"keyword:{keyword.matched}" if keyword.matched else "",
            caller=msg.caller,
        )
        outcome = await self._store.write(
            msg.location_id,
            msg.contact_id,
            plan,
            meta=meta,
            addresses=addresses,
            idempotency=idempotency,
        )
        self._remember(outcome, addresses)
        return outcome

    async def provider_event(
        self, event: ProviderEvent, idempotency: Idempotency | None = None
    ) -> WriteResult | Replay:
        effect = event.effect

        def plan(state: ContactState, now: dt.datetime) -> Sequence[Step]:
            if effect is None:
                return []
            reason, source = effect
            if event.clears:
                who = ClearCredentials(source=source, contact_id=event.contact_id)
                return plan_remove(
                    state, Direction.OUTBOUND, event.channel, reason, who, event.address
                )
            block = provider_block(event.channel, reason, source, event.provider, event.detail, now)
            return plan_add(state, block, event.address)

        meta = ChangeMeta(
            source=event.source,
            actor_id=event.provider,
            provider_detail=event.detail,
            caller=event.caller,
        )
        addresses = [(event.channel, event.address)] if event.address else []
        outcome = await self._store.write(
            event.location_id,
            event.contact_id,
            plan,
            meta=meta,
            addresses=addresses,
            idempotency=idempotency,
        )
        self._remember(outcome, addresses)
        return outcome

    def watch(
        self,
        feed: ChangeFeed,
        flt: WatchFilter,
        after: int | None,
        settings: WatchSettings,
        cursor_text: str,
    ) -> AsyncGenerator[ChangeRow | int, None]:
        return follow(self._store, feed, flt, after, settings, cursor_text)

    async def history(self, query: HistoryQuery, limit: int) -> list[HistoryRow]:
        """Up to ``limit`` changes of the query's contact or address, newest first."""
        if query.channel is not None:
            return await self._store.list_address_history(
                query.location_id,
                query.channel,
                query.address,
                before_seq=query.before_seq,
                limit=limit,
            )
        return await self._store.list_history(
            query.location_id, query.contact_id, before_seq=query.before_seq, limit=limit
        )

    async def keyword_settings(self, location_id: str) -> KeywordSettings:
        """The location's settings as they act: stored words that break today's rules (written
        before them) are left out, and logged once."""
        effective = effective_settings(await self._store.get_settings(location_id))
        if effective.ignored:
            self._log_ignored(location_id, effective.ignored)
        return effective.settings

    def _log_ignored(self, location_id: str, ignored: tuple[IgnoredWord, ...]) -> None:
        key = (location_id, ignored)
        if key in self._ignored_logged:
            return
        self._ignored_logged[key] = None
        if len(self._ignored_logged) > _IGNORED_LOGGED_MAX:
            self._ignored_logged.popitem(last=False)
        log.warning(
            "keyword_words_ignored",
            location_id=location_id,
            words=[{"field": i.field, "word": i.word, "why": i.why} for i in ignored],
        )

    async def update_keyword_settings(self, location_id: str, settings: KeywordSettings) -> None:
        await self._store.put_settings(location_id, settings)

    # -- consent -------------------------------------------------------------------------------

    def now(self) -> dt.datetime:
        return self._clock()

    async def consent_policy(self, location_id: str, consistent: bool = False) -> ConsentPolicy:
        """The location's consent policy: from the policy cache unless ``consistent``."""
        if not consistent:
            cached = self._policies.get(location_id)
            if cached is not None:
                return cached
        policy = await self._store.get_consent_policy(location_id)
        self._policies.put(location_id, policy)
        return policy

    async def update_consent_policy(self, location_id: str, policy: ConsentPolicy) -> None:
        await self._store.put_consent_policy(location_id, policy)
        self._policies.put(location_id, policy)

    async def record_consent(
        self, cmd: RecordConsentCommand, idempotency: Idempotency | None = None
    ) -> WriteResult | Replay:
        """Record (or replace) one consent; a pending double opt-in waits for the location's
        window, read from the database."""
        window = (await self.consent_policy(cmd.location_id, consistent=True)).double_opt_in_window
        outcome = await self._store.write(
            cmd.location_id,
            cmd.contact_id,
            lambda state, now: plan_record_consent(state, cmd.record, now, window),
            meta=cmd.meta,
            expected_version=cmd.expected_version,
            idempotency=idempotency,
        )
        self._remember(outcome, ())
        return outcome

    async def revoke_consent(
        self, cmd: RevokeConsentCommand, idempotency: Idempotency | None = None
    ) -> WriteResult | Replay:
        outcome = await self._store.write(
            cmd.location_id,
            cmd.contact_id,
            lambda state, now: plan_revoke_consent(
                state, cmd.channel, cmd.purpose, cmd.address, now
            ),
            meta=cmd.meta,
            idempotency=idempotency,
        )
        self._remember(outcome, ())
        return outcome


def plan_set_dnd(cmd: SetDndCommand, state: ContactState, now: dt.datetime) -> Sequence[Step]:
    """The steps a SetDnd takes on ``state``: pure, raises domain errors."""
    if cmd.action is Action.ENABLE:
        block = Block(
            direction=cmd.direction,
            scope=cmd.scope,
            reason=cmd.reason or Reason.MANUAL,
            source=cmd.meta.source,
            actor_id=cmd.meta.actor_id,
            note=cmd.meta.note,
            evidence=cmd.meta.evidence,
            provider_detail=cmd.meta.provider_detail,
            since=now,
        )
        return plan_add(state, block, cmd.address)
    who = ClearCredentials(
        source=cmd.meta.source,
        evidence=cmd.meta.evidence,
        suppression_removal_confirmed=cmd.suppression_removal_confirmed,
        contact_id=cmd.contact_id,
        from_address=own_address(cmd.meta.source, cmd.scope, cmd.address),
    )
    only = MARKETING_ONLY_REASONS if cmd.marketing_only else None
    return plan_remove(state, cmd.direction, cmd.scope, cmd.reason, who, cmd.address, only)


@contextmanager
def _reading(cache: ContactCache | None) -> Iterator[int]:
    if cache is None:
        yield 0
        return
    with cache.reading() as read_from:
        yield read_from
