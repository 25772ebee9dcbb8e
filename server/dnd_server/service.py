"""Use cases: each joins the pure domain rules to the store. No protobuf here."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import enum
import functools
import time
from collections import OrderedDict
from collections.abc import AsyncGenerator, Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace

import structlog

from dnd_server.cache import ContactCache, Entry, PolicyCache, SettingsCache
from dnd_server.domain.addresses import former_spellings
from dnd_server.domain.consent import (
    CONSENT_FOR,
    MARKETING_ONLY_REASONS,
    NO_POLICY,
    ConsentPolicy,
    ConsentPurpose,
    ConsentRecord,
    Purpose,
)
from dnd_server.domain.erasure import address_digest
from dnd_server.domain.errors import FieldViolation, InvalidArgument, PartlyWritten, Unavailable
from dnd_server.domain.expiry import BlockExpiry, plan_expiry
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
    scope_name,
)
from dnd_server.domain.plans import (
    KEYWORD_CHANNELS,
    keyword_channels,
    plan_add,
    plan_claim_reply,
    plan_inbound_message,
    plan_record_consent,
    plan_remove,
    plan_revoke_consent,
    provider_block,
)
from dnd_server.domain.provider_events import (
    SMS_ERROR_CODES,
    EmailEvent,
    Override,
    Resolution,
    email_effect,
    overrides_by_key,
    resolve,
)
from dnd_server.domain.quiet_hours import QuietHoursSettings, judge, judged, recipient
from dnd_server.domain.replies import NOT_CONFIGURED, ComplianceReplies, ReplyKind
from dnd_server.domain.replies import reply as compliance_reply
from dnd_server.domain.rules import (
    ClearCredentials,
    SendDecision,
    decide_send,
    own_address,
    with_quiet_hours,
)
from dnd_server.feed import ChangeFeed
from dnd_server.lanes import Position, reached
from dnd_server.records import (
    Addresses,
    BlockKey,
    BulkChunk,
    BulkClaim,
    BulkItem,
    ChangeMeta,
    Decision,
    HistoryRow,
    Idempotency,
    ListedBlock,
    ListFilter,
    Replay,
    SuppressionKey,
    WriteResult,
)
from dnd_server.storage.store import Store
from dnd_server.watch import Item as WatchItem
from dnd_server.watch import WatchFilter, WatchSettings, follow

log = structlog.get_logger("dnd_server.service")

# Unknown provider codes logged per minute at most: anyone reporting may send unlimited
# distinct codes (the metric counts them all, by provider only).
_UNKNOWN_LOGGED_PER_MINUTE = 20

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
class SendTiming:
    """When a checked message would go, and the recipient's zone if the caller knows it."""

    # None: now (the service's clock).
    send_at: dt.datetime | None = None
    # IANA zone ("": from the number, else the location's default).
    time_zone: str = ""


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
    # Why the sender given could not be read as a number (then from_address is ""): an
    # opt-out still acts, on the contact; anything else is refused with it.
    unread_sender: tuple[FieldViolation, ...] = ()


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
    # A provider code still to resolve (``DndService.resolve_event``): its effect then comes
    # from the table of ``table`` (the provider itself when "") and the location's overrides.
    code: str = ""
    table: str = ""
    # What decided the effect, once resolved.
    resolution: Resolution | None = None
    # Why the address given could not be read (then address is ""): an event that sets a
    # block still sets it, on the contact; anything else is refused with it.
    unread_address: tuple[FieldViolation, ...] = ()

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
    # The channels the keyword acted on (SMS and RCS together when the location shares them).
    channels: tuple[Channel, ...] = ()
    # The compliance reply due (None: none), its language and its text.
    reply: ReplyKind | None = None
    reply_language: str = ""
    reply_text: str = ""
    # Set when the sender given was no number: what the answer says of it.
    unread_sender: str = ""


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
    """How fresh a read must be: at least the position ``min_seq`` (a write's cursor: every
    lane in it reached), or straight from the
    database when ``consistent``; otherwise whatever the cache holds."""

    min_seq: Position | None = None
    consistent: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Contacts of one location (without suppressions) and the suppressions per address."""

    contacts: dict[str, ContactState]
    suppressions: dict[tuple[Channel, str], tuple[AddressSuppression, ...]]


# Items per transaction of a bulk write.
BULK_CHUNK_ITEMS = 500
# Rows per statement (and per stream message) of an export.
EXPORT_BATCH_ROWS = 1000


class DndService:
    def __init__(
        self,
        *,
        store: Store,
        cache: ContactCache | None = None,
        policies: PolicyCache | None = None,
        clock: Callable[[], dt.datetime] = _utc_now,
        erasure_key: bytes | None = None,
    ) -> None:
        self._store = store
        self._cache = cache
        # The deployment's key of erased addresses' hashes (None: erasure unavailable).
        self._erasure_key = erasure_key
        self._policies = policies if policies is not None else PolicyCache(0)
        # Locations' quiet-hours settings, cached as long as consent policies.
        self._quiet: SettingsCache[QuietHoursSettings] = SettingsCache(self._policies.ttl)
        # The time consent is judged at on reads (writes use the database's clock).
        self._clock = clock
        # Unknown provider codes logged in the current minute (and those left unlogged).
        self._monotonic = time.monotonic
        self._unknown_window = -60.0
        self._unknown_logged = 0
        self._unknown_dropped = 0
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
            and (options.min_seq is None or reached(options.min_seq, cache.position))
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
            # After the plaintext read: an erasure committing in between is seen by one of
            # the two reads (it replaces the one by the other in one transaction).
            erased = await self._erased(location_id, missing_addresses)
        for channel, address in missing_addresses:
            matching = tuple(
                s for s in found.suppressions if s.channel is channel and s.address == address
            ) + erased.get((channel, address), ())
            by_address[(channel, address)] = matching
            if use_cache and cache is not None:
                cache.put_address((location_id, channel, address), matching, read_from)
        for contact_id in missing:
            state = found.contacts[contact_id]
            if state.suppressions:
                state = replace(state, suppressions=())
            contacts[contact_id] = state
            if use_cache and cache is not None:
                cache.put((location_id, contact_id), Entry(state, found.last_seqs[contact_id]))
        return Snapshot(contacts, by_address)

    def _remember(self, outcome: WriteResult | Replay, addresses: Addresses) -> None:
        """Writes through this replica update its cache before they return: the contact's
        state is stored, its addresses' cached suppressions dropped (the next read fills
        them). A write knows only the plaintext suppressions of its addresses, not those kept
        by keyed hash after an erasure, which a read adds (``_erased``): storing the write's
        would cache an erased opt-out as no suppression at all."""
        if self._cache is None or not isinstance(outcome, WriteResult):
            return
        state = outcome.state
        for channel, address in addresses:
            self._cache.drop_address((state.location_id, channel, address), outcome.last_seq)
        if self._cache.fed_past(state.location_id, outcome.last_seq):
            return  # the next read stores it (see ContactCache.fed_past)
        key = (state.location_id, state.contact_id)
        kept = replace(state, suppressions=()) if state.suppressions else state
        self._cache.put(key, Entry(kept, outcome.last_seq))

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
        timing: SendTiming = SendTiming(),
    ) -> tuple[SendDecision, ContactState]:
        """One decision. A COMPLIANCE_REPLY the read state allows is allowed only once its
        claim is written (``claim_reply``): that write decides again, on the locked state.
        A COMPLIANCE_REPLY is read from the database, never a cache: an opt-out made through
        another replica a moment ago must not read as no DND at all (which needs no claim)."""
        if purpose is Purpose.COMPLIANCE_REPLY:
            options = replace(options, consistent=True)
        results = await self.batch_check(
            location_id,
            channel,
            direction,
            [(contact_id, address)],
            options,
            purpose,
            timing,
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
        timing: SendTiming = SendTiming(),
        time_zones: Sequence[str] = (),
    ) -> list[tuple[SendDecision, ContactState]]:
        """One decision per (contact, address) target, in order (a COMPLIANCE_REPLY is never
        claimed here: see ``check_send``). A send DND allows is then judged by the location's
        consent policy, where it may require consent for ``purpose``, and by quiet hours
        where they apply (``judged``): at ``timing.send_at`` (None: now), for the recipient's
        zone of ``time_zones`` (one per target, "" none), else ``timing.time_zone``, else the
        number's (``recipient``). Neither is read for a check DND denies (a denial never
        depends on them): a check of no purpose, or one already denied, reads nothing more."""
        addresses = [(channel, address) for _, address in targets if address]
        snapshot = await self.read(
            location_id, [contact for contact, _ in targets], addresses, options
        )
        now = self._clock()
        # Consent is judged when the send is to go: one expiring before ``send_at`` does not
        # count for it. A compliance reply goes now, its window judged now.
        if (
            purpose is not Purpose.COMPLIANCE_REPLY
            and timing.send_at is not None
            and timing.send_at > now
        ):
            consent_at = timing.send_at
        else:
            consent_at = now

        def decide(index: int, policy: ConsentPolicy = NO_POLICY) -> SendDecision:
            contact_id, address = targets[index]
            state = snapshot.contacts[contact_id]
            suppressions = snapshot.suppressions.get((channel, address), ()) if address else ()
            return decide_send(
                state.blocks,
                channel,
                direction,
                suppressions,
                purpose=purpose,
                address=address,
                consents=state.consents,
                policy=policy,
                now=consent_at,
            )

        # Whether consent or quiet hours may judge the sends DND allows (``allowed``).
        judging = purpose in CONSENT_FOR and direction is Direction.OUTBOUND
        allowed: list[int] = []
        results = []
        for index, (contact_id, _) in enumerate(targets):
            decision = decide(index)
            if judging and decision.allowed:
                allowed.append(index)
            results.append((decision, snapshot.contacts[contact_id]))
        if not allowed:
            return results
        # The location's consent policy (cached): where it requires consent for the purpose
        # on the channel, the sends DND allows are decided again with it.
        policy = None if options.consistent else self._policies.get(location_id)
        if policy is None:
            policy = await self.consent_policy(location_id, options.consistent)
        if policy.requires(channel, purpose) is not None:
            for i in allowed:
                results[i] = (decide(i, policy), results[i][1])
            allowed = [i for i in allowed if results[i][0].allowed]
        if not allowed or not judged(purpose, channel, direction):
            return results
        # The location's quiet-hours settings (cached), for the sends still allowed.
        settings = None if options.consistent else self._quiet.get(location_id)
        if settings is None:
            settings = await self.quiet_hours_settings(location_id, options.consistent)
        if not judged(purpose, channel, direction, settings):
            return results
        send_at = timing.send_at if timing.send_at is not None and timing.send_at > now else now
        for i in allowed:
            decision, state = results[i]
            zone = (time_zones[i] if time_zones else "") or timing.time_zone
            who = recipient(targets[i][1], zone, settings)
            verdict = judge(send_at, who, purpose, channel, settings)
            results[i] = (with_quiet_hours(decision, verdict), state)
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
        """Classify and apply an inbound text; ``WriteResult.detail`` is an InboundDecision
        (with the compliance reply due, merged with the location's brand and support, decided
        in the write with the contact's last opt-out confirmation on the channel)."""
        settings = KeywordSettings()
        keyword = Classification(KeywordKind.NONE)
        replies = NOT_CONFIGURED
        if msg.channel in KEYWORD_CHANNELS:
            settings = await self.keyword_settings(msg.location_id)
            keyword = classify(msg.body, settings)
            if keyword.kind is not KeywordKind.NONE:
                replies = await self._store.get_compliance_replies(msg.location_id)
        refused = bool(msg.unread_sender) and keyword.kind is not KeywordKind.OPT_OUT
        # Said without the sender's text: an answer is kept, and erasure finds numbers only.
        unread = (
            "; from_address is no phone number: the contact is opted out, no number suppressed"
            if msg.unread_sender
            else ""
        )
        channels = keyword_channels(msg.channel, settings.share_rcs_sms_opt_outs)
        language = keyword.reply_language(settings.default_language)

        def plan(state: ContactState, now: dt.datetime) -> Decision:
            # In the plan, after a replay was looked for: a retry answers as the first time.
            if refused:
                raise InvalidArgument(list(msg.unread_sender))
            last = next(
                (
                    m.at
                    for m in state.reply_marks
                    if m.channel == msg.channel.value and m.kind is ReplyKind.OPT_OUT_CONFIRMATION
                ),
                None,
            )
            outcome = plan_inbound_message(
                state,
                keyword,
                msg.body,
                msg.from_address,
                now,
                msg.channel,
                settings.share_rcs_sms_opt_outs,
                last,
            )
            due = outcome.reply if replies.answers(outcome.reply) else None
            text = compliance_reply(replies, language, due).text if due is not None else ""
            decided = InboundDecision(
                keyword,
                outcome.action,
                channels if msg.channel in KEYWORD_CHANNELS else (),
                due,
                language if due is not None else "",
                text,
                unread,
            )
            marks = outcome.marks if due is not None else ()
            return Decision(outcome.steps, decided, marks)

        addresses = [(each, msg.from_address) for each in channels] if msg.from_address else []
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
            reply_marks=keyword.kind is KeywordKind.OPT_OUT,
        )
        self._remember(outcome, addresses)
        return outcome

    async def provider_event(
        self, event: ProviderEvent, idempotency: Idempotency | None = None
    ) -> WriteResult | Replay:
        effect = event.effect

        def plan(state: ContactState, now: dt.datetime) -> Sequence[Step]:
            # In the plan, after a replay was looked for: a retry answers as the first time.
            if event.unread_address and (effect is None or event.clears):
                raise InvalidArgument(list(event.unread_address))
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

    async def resolve_event(self, event: ProviderEvent) -> ProviderEvent:
        """``event`` with the effect of its provider code (``ProviderEvent.code``): the
        location's override or the built-in table (``provider_events.resolve``), read per
        event (events are not the hot path: an override written through any replica acts at
        once). A code the table or the override gives to another channel is InvalidArgument;
        an unknown one changes nothing, and is logged (at most ``_UNKNOWN_LOGGED_PER_MINUTE``
        lines a minute)."""
        if not event.code:
            return event
        overrides = await self._store.get_delivery_overrides(event.location_id)
        found = resolve(event.table or event.provider, event.code, overrides_by_key(overrides))
        entry = found.entry
        if entry is not None and entry.channel is not event.channel:
            field = "channel"
            raise InvalidArgument.one(
                field,
                f"{found.provider} {found.code} is a {entry.channel.value} event; report it "
                f"with channel CHANNEL_{entry.channel.value}",
            )
        if entry is None:
            self._log_unknown(event, found)
        return replace(
            event,
            effect=found.effect,
            clears=found.clears,
            resolution=found,
        )

    def _log_unknown(self, event: ProviderEvent, found: Resolution) -> None:
        now = self._monotonic()
        if now - self._unknown_window >= 60.0:
            if self._unknown_dropped:
                log.warning("delivery_codes_unlogged", count=self._unknown_dropped)
            self._unknown_window, self._unknown_logged, self._unknown_dropped = now, 0, 0
        if self._unknown_logged >= _UNKNOWN_LOGGED_PER_MINUTE:
            self._unknown_dropped += 1
            return
        self._unknown_logged += 1
        log.info(
            "delivery_code_unknown",
            location_id=event.location_id,
            provider=found.provider,
            code=found.code,
            channel=event.channel.value,
        )

    async def delivery_overrides(self, location_id: str) -> tuple[Override, ...]:
        return await self._store.get_delivery_overrides(location_id)

    async def update_delivery_overrides(
        self, location_id: str, overrides: Sequence[Override]
    ) -> None:
        await self._store.put_delivery_overrides(location_id, overrides)

    def watch(
        self,
        feed: ChangeFeed,
        flt: WatchFilter,
        after: Position | None,
        settings: WatchSettings,
        cursor_text: str,
        batch: int = 1,
    ) -> AsyncGenerator[WatchItem, None]:
        return follow(self._store, feed, flt, after, settings, cursor_text, batch)

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

    async def compliance_replies(self, location_id: str) -> ComplianceReplies:
        return await self._store.get_compliance_replies(location_id)

    async def update_compliance_replies(self, location_id: str, replies: ComplianceReplies) -> None:
        await self._store.put_compliance_replies(location_id, replies)

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

    async def quiet_hours_settings(
        self, location_id: str, consistent: bool = False
    ) -> QuietHoursSettings:
        """The location's quiet-hours settings: from their cache unless ``consistent``."""
        if not consistent:
            cached = self._quiet.get(location_id)
            if cached is not None:
                return cached
        settings = await self._store.get_quiet_hours(location_id)
        self._quiet.put(location_id, settings)
        return settings

    async def update_quiet_hours_settings(
        self, location_id: str, settings: QuietHoursSettings
    ) -> None:
        await self._store.put_quiet_hours(location_id, settings)
        self._quiet.put(location_id, settings)

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

    # -- bulk writes, listings and the export ------------------------------------------------

    async def bulk_set_dnd(
        self,
        location_id: str,
        commands: Sequence[SetDndCommand | None],
        claim: BulkClaim | None = None,
        chunk_items: int = BULK_CHUNK_ITEMS,
        caller: str = "",
    ) -> list[BulkChunk]:
        """Every item (None: invalid, skipped) as its SetDnd would be, in chunks of
        ``BULK_CHUNK_ITEMS`` items per transaction. With a claim each chunk keeps the answer
        so far: a retry resumes after it, a finished call replays it. An UNAVAILABLE after a
        committed chunk is ``PartlyWritten``."""
        metas: dict[ChangeMeta, ChangeMeta] = {}
        items = [None if c is None else _bulk_item(c, caller, metas) for c in commands]
        chunks: list[BulkChunk] = []
        start = 0
        while True:
            try:
                chunk = await self._store.write_chunk(
                    location_id, items, start=start, size=chunk_items, claim=claim
                )
            except Unavailable as error:
                if not chunks or not any(c.outcomes for c in chunks):
                    raise
                raise PartlyWritten(
                    f"{error}; {start} of {len(items)} items were written"
                ) from error
            for item, outcome in zip(items[chunk.start :], chunk.outcomes, strict=False):
                if item is not None and outcome is not None and outcome.result is not None:
                    self._remember(outcome.result, item.addresses)
            chunks.append(chunk)
            start = chunk.start + len(chunk.outcomes)
            if start >= len(items):
                return chunks

    async def list_blocks(
        self, location_id: str, flt: ListFilter, after: BlockKey | None, limit: int
    ) -> list[ListedBlock]:
        return await self._store.list_blocks(location_id, flt, after, limit)

    async def list_suppressions(
        self, location_id: str, flt: ListFilter, after: SuppressionKey | None, limit: int
    ) -> list[AddressSuppression]:
        return await self._store.list_suppressions(location_id, flt, after, limit)

    async def export(
        self, location_id: str, flt: ListFilter, start: ExportStart, batch: int = EXPORT_BATCH_ROWS
    ) -> AsyncGenerator[ExportBatch, None]:
        """The location's blocks (from ``start``), then its suppressions, one keyset batch
        per statement. The next batch is read while the caller sends this one: memory holds
        two batches, whatever the size of the location."""
        pending = asyncio.create_task(self._export_batch(location_id, flt, start, batch))
        try:
            while True:
                found, following = await pending
                if following is not None:
                    pending = asyncio.create_task(
                        self._export_batch(location_id, flt, following, batch)
                    )
                if found is not None:
                    yield found
                if following is None:
                    return
        finally:
            pending.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pending

    async def _export_batch(
        self, location_id: str, flt: ListFilter, at: ExportStart, batch: int
    ) -> tuple[ExportBatch | None, ExportStart | None]:
        """The batch at ``at`` (None when that phase has no more rows) and where the next one
        starts (None after the last)."""
        if at.blocks:
            found = await self._store.list_blocks(location_id, flt, at.block_after, batch)
            if len(found) < batch:
                after_blocks = ExportStart(blocks=False)
                return (self._blocks_batch(found) if found else None), after_blocks
            done = self._blocks_batch(found)
            _, contact, direction, scope, reason = done.last
            return done, ExportStart(blocks=True, block_after=(contact, direction, scope, reason))
        rows = await self._store.list_suppressions(location_id, flt, at.suppression_after, batch)
        if not rows:
            return None, None
        s = rows[-1]
        key = (s.channel.value, s.address, s.reason.value)
        following = ExportStart(blocks=False, suppression_after=key) if len(rows) == batch else None
        return ExportBatch(suppressions=rows, last=("s", *key, "")), following

    @staticmethod
    def _blocks_batch(found: Sequence[ListedBlock]) -> ExportBatch:
        last = found[-1]
        b = last.block
        key = (last.contact_id, b.direction.value, scope_name(b.scope), b.reason.value)
        return ExportBatch(blocks=found, last=("b", *key))

    # -- erasure and block expiry ---------------------------------------------------------------

    async def _erased(
        self, location_id: str, addresses: Addresses
    ) -> dict[tuple[Channel, str], tuple[AddressSuppression, ...]]:
        """The kept suppressions of erased addresses among ``addresses``, by address."""
        key = self._erasure_key
        if not addresses or key is None:
            return {}
        by_hash = {
            (c, address_digest(key, location_id, c, spelt)): (c, a)
            for c, a in addresses
            for spelt in former_spellings(c, a)
        }
        found: dict[tuple[Channel, str], list[AddressSuppression]] = {}
        for channel, digest, kept in await self._store.erased_suppressions(
            location_id, list(by_hash)
        ):
            pair = by_hash.get((channel, digest))
            if pair is not None:
                found.setdefault(pair, []).append(replace(kept, address=pair[1]))
        # One opt-out may be kept under two spellings (erased before and after migration 14).
        return {pair: tuple(dict.fromkeys(kept)) for pair, kept in found.items()}

    async def erase_contact(
        self,
        cmd: EraseCommand,
        scrub_answer: Callable[[str, bytes], bytes],
        idempotency: Idempotency | None = None,
    ) -> WriteResult | Replay:
        """Erase the contact's personal data (``domain/erasure.py``); ``WriteResult.detail``
        is an ErasureDone. ``scrub_answer`` clears the personal data of a stored answer."""
        key = self._erasure_key
        if key is None:
            raise Unavailable("the service is starting: the erasure key is not loaded yet")
        location_id = cmd.location_id
        outcome = await self._store.erase(
            location_id,
            cmd.contact_id,
            named=cmd.addresses,
            digest=lambda channel, address: address_digest(key, location_id, channel, address),
            scrub_answer=scrub_answer,
            meta=cmd.meta,
            idempotency=idempotency,
        )
        if isinstance(outcome, WriteResult) and self._cache is not None:
            # Every replica drops the location's cached suppressions when the feed brings the
            # erasure; this one before it answers.
            self._cache.forget_addresses(location_id, outcome.last_seq)
        self._remember(outcome, ())
        return outcome

    async def block_expiry(self, location_id: str) -> BlockExpiry:
        return await self._store.block_expiry(location_id)

    async def update_block_expiry(self, location_id: str, expiry: BlockExpiry) -> None:
        await self._store.put_block_expiry(location_id, expiry)

    async def expire_blocks(self, now: dt.datetime | None = None, batch: int = 100) -> int:
        """One expiry pass: clear every temporary carrier block at least its location's
        lifetime old at ``now`` (None: the database's clock), each contact in a write of its
        own, decided again under the contact's lock (``plan_expiry``), so passes racing on
        several replicas clear each block once. The location's lifetime is read again right
        before each write: a pass never clears a block by a lifetime the location has since
        lengthened or turned off. Returns the number of blocks cleared."""
        cleared = 0
        for _ in range(_EXPIRY_BATCHES_MAX):
            found = await self._store.expiring_contacts(now, batch)
            for location_id, contact_id in dict.fromkeys(found):
                lifetime = (await self._store.block_expiry(location_id)).sms_carrier_temporary
                if lifetime is None:
                    continue  # turned off since the contacts were found
                outcome = await self._store.write(
                    location_id,
                    contact_id,
                    functools.partial(_expiry_plan, lifetime, now),
                    meta=replace(EXPIRY_META, provider_detail=_expiry_detail(lifetime)),
                )
                assert isinstance(outcome, WriteResult)  # no idempotency key: never a replay
                self._remember(outcome, ())
                cleared += len(outcome.steps)
            if len(found) < batch:
                break
        return cleared


@dataclass(frozen=True, slots=True)
class ExportStart:
    """Where an export starts: in the blocks (after ``block_after``) or in the suppressions
    (after ``suppression_after``)."""

    blocks: bool = True
    block_after: BlockKey | None = None
    suppression_after: SuppressionKey | None = None


@dataclass(frozen=True, slots=True)
class ExportBatch:
    """One batch of an export, and the key of its last row (in its phase)."""

    blocks: Sequence[ListedBlock] = ()
    suppressions: Sequence[AddressSuppression] = ()
    # ("b", contact, direction, scope, reason) or ("s", channel, address, reason, "").
    last: tuple[str, str, str, str, str] = ("", "", "", "", "")


def _bulk_item(
    cmd: SetDndCommand, caller: str, metas: dict[ChangeMeta, ChangeMeta] | None = None
) -> BulkItem:
    """The write of a bulk item; ``caller`` is recorded on its changes (the plan does not
    read it). ``metas`` keeps the call's metadata with its caller, each made once."""
    meta = cmd.meta
    if caller:
        made = None if metas is None else metas.get(meta)
        if made is None:
            made = replace(meta, caller=caller)
            if metas is not None:
                metas[meta] = made
        meta = made
    return BulkItem(
        contact_id=cmd.contact_id,
        plan=functools.partial(_plan_of, cmd),
        meta=meta,
        addresses=[(cmd.scope, cmd.address)] if cmd.address and cmd.scope else [],
        expected_version=cmd.expected_version,
    )


def _plan_of(cmd: SetDndCommand, state: ContactState, now: dt.datetime) -> Sequence[Step]:
    return plan_set_dnd(cmd, state, now)


# Who makes the expiry's clears: the service itself.
EXPIRY_META = ChangeMeta(source=Source.SYSTEM, caller="dnd-service block expiry")
# One pass clears at most this many batches (the next pass goes on).
_EXPIRY_BATCHES_MAX = 100


def _expiry_plan(
    lifetime: dt.timedelta, now: dt.datetime | None, state: ContactState, db_now: dt.datetime
) -> Sequence[Step]:
    return plan_expiry(state, lifetime, now or db_now)


def _expiry_detail(lifetime: dt.timedelta) -> str:
    return f"expired:{Reason.SMS_CARRIER_TEMPORARY.value} after {int(lifetime.total_seconds())}s"


@dataclass(frozen=True, slots=True)
class EraseCommand:
    location_id: str
    contact_id: str
    # The (channel, normalised address) pairs the request names (``named_addresses``).
    addresses: Sequence[tuple[Channel, str]]
    # Source SUPPORT, the request's reference as the note, the caller.
    meta: ChangeMeta


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
def _reading(cache: ContactCache | None) -> Iterator[Position]:
    if cache is None:
        yield ()
        return
    with cache.reading() as read_from:
        yield read_from
