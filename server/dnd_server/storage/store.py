"""The one module that runs queries, every one through one helper (``Store._run``): a pooled
connection under the database deadline, the driver's errors translated, and the retries that
are safe. Reads snapshot contacts; a write runs a pure plan inside one transaction that
(optionally) claims an idempotency key, loads the contact and the addresses involved under
their locks, applies the plan's steps and appends them to the change log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, TypeAlias, TypeVar, cast

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from dnd_server import lanes
from dnd_server.cursor import varint
from dnd_server.domain.consent import Consent, ConsentPolicy, consent_sort_key
from dnd_server.domain.erasure import ErasureCounts, ErasureDone, plan_erasure
from dnd_server.domain.errors import (
    ClearNotPermitted,
    InvalidArgument,
    Unavailable,
    VersionMismatch,
)
from dnd_server.domain.expiry import BlockExpiry, expiry_of
from dnd_server.domain.keywords import KeywordSettings
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    ChangeKind,
    Channel,
    ContactState,
    Direction,
    Reason,
    ReplyClaim,
    StatusSummary,
    Step,
    scope_name,
)
from dnd_server.domain.provider_events import Override
from dnd_server.domain.quiet_hours import QuietHoursSettings
from dnd_server.domain.replies import ComplianceReplies
from dnd_server.domain.rules import summarize
from dnd_server.lanes import LogLayoutMismatch, Position
from dnd_server.records import (
    Addresses,
    BlockKey,
    BulkChunk,
    BulkClaim,
    BulkItem,
    ChangeMeta,
    ChangeRow,
    ContactsRead,
    CursorPosition,
    Decision,
    HistoryRow,
    Idempotency,
    ItemOutcome,
    ListedBlock,
    ListFilter,
    Plan,
    Replay,
    SuppressionKey,
    WriteResult,
)
from dnd_server.storage import rows
from dnd_server.storage.coalesce import ReadCoalescer
from dnd_server.storage.errors import (
    CONNECTION_LOST,
    RETRYABLE_TRANSACTION_ERRORS,
    translate_errors,
)
from dnd_server.storage.sql import QUERIES

# A connection as the pool lends it (the proxy is generic to the type checker only).
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

_T = TypeVar("_T")
_O = TypeVar("_O")
_R = TypeVar("_R")

_TRANSACTION_ATTEMPTS = 3
# A read is retried once on a fresh connection when the one used turns out to be lost.
_READ_ATTEMPTS = 2
# Pruning deletes in bulk: it may take this many database timeouts.
_PRUNE_TIMEOUTS = 6


class Store:
    def __init__(self, *, pool: asyncpg.Pool, timeout: float, idempotency_ttl: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._idempotency_ttl = idempotency_ttl
        # Reads of contacts without addresses: at most all the pool's connections but two
        # (left to writes), the reads beyond that sharing statements.
        self._reads = ReadCoalescer(
            self._fetch_contacts, in_flight=pool.get_max_size() - 2, timeout=timeout
        )
        # Called after every transaction that committed (the change feed wakes on it).
        self.committed: Callable[[], None] = _nothing

    async def _run(
        self,
        operation: Callable[[Connection], Awaitable[_T]],
        *,
        attempts: int = 1,
        transaction: bool = False,
        timeout: float | None = None,
    ) -> _T:
        """Run ``operation`` on a pooled connection, by one deadline (see ``_connection``), in
        a transaction when asked, with the driver's errors translated (storage/errors.py).

        Up to ``attempts`` tries, each on a fresh connection with a fresh deadline: after the
        connection was lost before a COMMIT was sent (nothing was written) and, in a
        transaction, after a serialization failure or a deadlock (rolled back). Never after the
        deadline passed, after a lost COMMIT (it may have committed), or on cancellation.
        """
        for attempt in range(1, attempts + 1):
            committing = False
            try:
                with translate_errors():
                    async with self._connection(timeout) as conn:
                        if not transaction:
                            return await operation(conn)
                        async with conn.transaction():
                            result = await operation(conn)
                            committing = True
                        self.committed()
                        return result
            except RETRYABLE_TRANSACTION_ERRORS:
                if not transaction:
                    raise
                if attempt == attempts:
                    raise Unavailable("database kept aborting the transaction; retry") from None
            except Unavailable as error:
                lost = isinstance(error.__cause__, CONNECTION_LOST)
                if committing or not lost or attempt == attempts:
                    raise
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def _connection(self, timeout: float | None = None) -> AsyncIterator[Connection]:
        """A pooled connection for one operation: acquiring it, every statement, the commit
        and the release all end by one deadline (``timeout``, by default the database
        timeout). At the deadline the connection is terminated, not closed or cancelled
        gracefully: both would wait for an answer from the server, which a hung server never
        gives. The caller gets TimeoutError (UNAVAILABLE). The server rolls back what it had
        not committed; a write whose COMMIT it had received may still commit, which is why a
        client retries an UNAVAILABLE write with its idempotency key.

        One timer per operation: an operation awaits only its connection, so terminating the
        connection ends whatever it waits for; and a free connection is taken without waiting
        (at most a reconnect, which the pool's connect timeout, the database timeout, bounds).
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._timeout if timeout is None else timeout)
        if _free_connections(self._pool):
            conn = await self._pool.acquire()
        else:
            async with asyncio.timeout_at(deadline):
                conn = await self._pool.acquire()
        expiry = loop.call_at(deadline, _terminate, conn)
        try:
            yield conn
        except Exception as error:
            # Past the deadline, whatever the operation met on its way out (such as a
            # transaction's rollback finding the connection terminated) is the deadline's
            # doing: never mistaken for a lost connection that a retry could fix.
            if loop.time() >= deadline and not isinstance(error, TimeoutError):
                raise TimeoutError("database deadline passed") from error
            raise
        finally:
            try:
                # Immediate unless the connection is busy on a server that does not answer;
                # then the deadline's terminate ends it.
                await self._pool.release(conn)
            finally:
                expiry.cancel()

    async def open_log(self, wanted: int) -> int:
        """The log's lane count, ``wanted`` (DND_CHANGE_LANES): the database's, or made so
        while the log never had a change. LogLayoutMismatch when the log has another."""

        async def check(conn: Connection) -> int:
            layout = await conn.fetchrow(QUERIES["log_layout"])
            assert layout is not None
            if layout["lanes"] == wanted:
                return wanted
            if not await conn.fetchval(QUERIES["log_unwritten"]):
                raise LogLayoutMismatch(wanted, layout["lanes"])
            running = await conn.fetchval(QUERIES["servers_following_the_log"])
            if running:
                # Laid out anew under a running server, the log would lose the lanes that
                # server writes to (or take changes its cursors cannot hold).
                raise LogLayoutMismatch(wanted, layout["lanes"], running=running)
            await conn.execute(QUERIES["clear_lanes"])
            await conn.execute(QUERIES["relayout_log"], wanted)
            return wanted

        found = await self._run(check, attempts=_TRANSACTION_ATTEMPTS, transaction=True)
        lanes.install(found)
        return found

    async def notify_changes(self) -> None:
        """Wake the change feeds of every replica (after writes committed)."""
        await self._run(lambda conn: conn.execute(QUERIES["notify_changes"]))

    async def heads(self) -> Position:
        """Every lane's head: the position of the whole log."""
        found = await self._run(lambda conn: conn.fetchval(QUERIES["log_heads"]))
        return tuple(found)

    async def cursor_key(self, candidate: bytes) -> bytes:
        """The deployment's cursor key: the stored one, or ``candidate`` when none is yet."""

        async def store_and_read(conn: Connection) -> bytes:
            await conn.execute(QUERIES["store_cursor_key"], candidate)
            # A statement of its own: it sees a key another server stored meanwhile.
            return bytes(await conn.fetchval(QUERIES["cursor_key"]))

        return await self._run(store_and_read)

    async def changes_after(
        self, lanes_read: Sequence[int], after: Position, limit: int
    ) -> dict[int, list[ChangeRow]]:
        """The changes of ``lanes_read`` after ``after``, up to ``limit`` per lane, each lane
        in order. A lane's numbers commit in order, so this never skips a change that commits
        later."""
        wanted = sorted(lanes_read)
        found = await self._run(
            lambda conn: conn.fetch(
                QUERIES["changes_after"], wanted, [after[lane] for lane in wanted], limit
            ),
            attempts=_READ_ATTEMPTS,
        )
        by_lane: dict[int, list[ChangeRow]] = {lane: [] for lane in wanted}
        count = lanes.count()
        for row in found:
            by_lane[row["lane"]].append(rows.to_change(row, count))
        return by_lane

    async def cursor_position(
        self, lanes_read: Sequence[int], position: Position, retention: float
    ) -> CursorPosition:
        wanted = sorted(lanes_read)
        found = await self._run(
            lambda conn: conn.fetch(
                QUERIES["cursor_position"], wanted, [position[lane] for lane in wanted], retention
            ),
            attempts=_READ_ATTEMPTS,
        )
        return rows.to_cursor_position(found)

    async def prune_changes(self, retention: float) -> int:
        count = await self._run(
            lambda conn: conn.fetchval(QUERIES["prune_changes"], retention),
            timeout=self._timeout * _PRUNE_TIMEOUTS,
        )
        return int(count)

    async def read_contacts(
        self, location_id: str, contact_ids: Sequence[str], addresses: Addresses = ()
    ) -> ContactsRead:
        """Several contacts of one location and the suppressions of ``addresses``, in one
        statement (one snapshot, one round trip): each contact's row, which holds its state.
        Without addresses, while the database is busy with other reads, the statement is one
        shared with the reads of the location asked meanwhile (``ReadCoalescer``). Unknown
        contacts come back at version 0; every contact's state carries all the suppressions
        read."""
        if not addresses:
            found = await self._reads.read(location_id, contact_ids)
            return rows.to_contacts(location_id, contact_ids, found)
        channels, values = _address_columns(addresses)
        args = (location_id, list(contact_ids), channels, values)
        union = await self._run(
            lambda conn: conn.fetch(QUERIES["read_contacts"], *args), attempts=_READ_ATTEMPTS
        )
        return rows.to_contacts_read(location_id, contact_ids, union)

    async def _fetch_contacts(
        self, location_id: str, contact_ids: Sequence[str], timeout: float | None
    ) -> dict[str, asyncpg.Record]:
        """The rows of ``contact_ids`` found, by contact id: a primary-key lookup."""
        key: str | list[str]
        if len(contact_ids) == 1:
            query, key = QUERIES["read_contact"], contact_ids[0]
        else:
            query, key = QUERIES["read_contact_batch"], list(contact_ids)
        found = await self._run(
            lambda conn: conn.fetch(query, location_id, key),
            attempts=_READ_ATTEMPTS,
            timeout=timeout,
        )
        return {row["contact_id"]: row for row in found}

    async def list_history(
        self, location_id: str, contact_id: str, *, before_seq: int, limit: int
    ) -> list[HistoryRow]:
        """A contact's changes, and those of the suppressions its events set (whichever
        contact's request made them), with a sequence number below ``before_seq``, newest
        first."""
        found = await self._run(
            lambda conn: conn.fetch(
                QUERIES["list_history"], location_id, contact_id, before_seq, limit
            ),
            attempts=_READ_ATTEMPTS,
        )
        return [rows.to_history(row, lanes.count()) for row in found]

    async def list_address_history(
        self, location_id: str, channel: Channel, address: str, *, before_seq: int, limit: int
    ) -> list[HistoryRow]:
        """Every change of the suppressions of (``channel``, ``address``) with a sequence
        number below ``before_seq``, newest first."""
        found = await self._run(
            lambda conn: conn.fetch(
                QUERIES["list_address_history"],
                location_id,
                channel.value,
                address,
                before_seq,
                limit,
            ),
            attempts=_READ_ATTEMPTS,
        )
        return [rows.to_history(row, lanes.count()) for row in found]

    async def get_settings(self, location_id: str) -> KeywordSettings:
        found = await self._run(
            lambda conn: conn.fetchrow(QUERIES["get_settings"], location_id),
            attempts=_READ_ATTEMPTS,
        )
        return rows.to_settings(found)

    async def put_settings(self, location_id: str, settings: KeywordSettings) -> None:
        await self._run(
            lambda conn: conn.execute(
                QUERIES["put_settings"],
                location_id,
                sorted(settings.extra_opt_out_words),
                sorted(settings.extra_opt_in_words),
                settings.detect_revocation_phrases,
                sorted(settings.languages),
                settings.default_language,
                rows.language_words_json(settings.language_words),
                settings.share_rcs_sms_opt_outs,
            )
        )

    async def get_compliance_replies(self, location_id: str) -> ComplianceReplies:
        found = await self._run(
            lambda conn: conn.fetchrow(QUERIES["get_compliance_replies"], location_id),
            attempts=_READ_ATTEMPTS,
        )
        return rows.to_compliance_replies(found)

    async def put_compliance_replies(self, location_id: str, replies: ComplianceReplies) -> None:
        await self._run(
            lambda conn: conn.execute(
                QUERIES["put_compliance_replies"],
                location_id,
                replies.brand_name,
                replies.support_contact,
                rows.reply_texts_json(replies.texts),
            )
        )

    async def get_consent_policy(self, location_id: str) -> ConsentPolicy:
        found = await self._run(
            lambda conn: conn.fetch(QUERIES["get_consent_policy"], location_id),
            attempts=_READ_ATTEMPTS,
        )
        return rows.to_consent_policy(found)

    async def put_consent_policy(self, location_id: str, policy: ConsentPolicy) -> None:
        """Replace the location's policy (the channels requiring nothing are not kept)."""
        required = [(c, p) for c, p in policy.channels.items() if p.marketing]

        async def replace_policy(conn: Connection) -> None:
            # First the location's settings row: its lock orders concurrent replacements
            # (each then deletes what the one before it inserted).
            await conn.execute(
                QUERIES["put_double_opt_in_window"],
                location_id,
                int(policy.double_opt_in_window.total_seconds()),
            )
            await conn.execute(QUERIES["delete_consent_policy"], location_id)
            if required:
                await conn.execute(
                    QUERIES["insert_consent_policy"],
                    location_id,
                    [c.value for c, _ in required],
                    [p.marketing for _, p in required],
                    [p.informational for _, p in required],
                )

        await self._run(replace_policy, attempts=_TRANSACTION_ATTEMPTS, transaction=True)

    async def get_delivery_overrides(self, location_id: str) -> tuple[Override, ...]:
        """The location's overrides of the provider code tables, by provider and code."""
        found = await self._run(
            lambda conn: conn.fetch(QUERIES["get_delivery_overrides"], location_id),
            attempts=_READ_ATTEMPTS,
        )
        return tuple(
            Override(
                provider=row["provider"],
                code=row["code"],
                channel=Channel(row["channel"]),
                reason=Reason(row["reason"]) if row["reason"] else None,
            )
            for row in found
        )

    async def put_delivery_overrides(self, location_id: str, overrides: Sequence[Override]) -> None:
        """Replace the location's overrides (validated: ``validate_overrides``)."""

        async def replace_overrides(conn: Connection) -> None:
            await conn.execute(QUERIES["lock_delivery_overrides"], location_id)
            await conn.execute(QUERIES["delete_delivery_overrides"], location_id)
            if overrides:
                await conn.execute(
                    QUERIES["insert_delivery_overrides"],
                    location_id,
                    [o.provider for o in overrides],
                    [o.code for o in overrides],
                    [o.channel.value for o in overrides],
                    [o.reason.value if o.reason else "" for o in overrides],
                )

        await self._run(replace_overrides, attempts=_TRANSACTION_ATTEMPTS, transaction=True)

    async def get_quiet_hours(self, location_id: str) -> QuietHoursSettings:
        found = await self._run(
            lambda conn: conn.fetchrow(QUERIES["get_quiet_hours"], location_id),
            attempts=_READ_ATTEMPTS,
        )
        return rows.to_quiet_hours(found)

    async def put_quiet_hours(self, location_id: str, settings: QuietHoursSettings) -> None:
        window = settings.window
        await self._run(
            lambda conn: conn.execute(
                QUERIES["put_quiet_hours"],
                location_id,
                settings.informational,
                settings.default_time_zone,
                window.start if window else None,
                window.end if window else None,
            )
        )

    async def prune_idempotency_keys(self) -> int:
        status = await self._run(
            lambda conn: conn.execute(QUERIES["prune_idempotency_keys"], self._idempotency_ttl),
            timeout=self._timeout * _PRUNE_TIMEOUTS,
        )
        return int(status.split()[-1])

    # -- erasure and block expiry ----------------------------------------------------------------

    async def erasure_key(self, candidate: bytes) -> bytes:
        """The deployment's erasure key: the stored one, or ``candidate`` when none is yet."""

        async def store_and_read(conn: Connection) -> bytes:
            await conn.execute(QUERIES["store_erasure_key"], candidate)
            return bytes(await conn.fetchval(QUERIES["erasure_key"]))

        return await self._run(store_and_read)

    async def erased_suppressions(
        self, location_id: str, hashed: Sequence[tuple[Channel, bytes]]
    ) -> list[tuple[Channel, bytes, AddressSuppression]]:
        """The kept suppressions of erased addresses among ``hashed`` (channel, keyed hash):
        each with its channel and hash, as a suppression without an address."""
        found = await self._run(
            lambda conn: conn.fetch(
                QUERIES["erased_suppressions"],
                location_id,
                [c.value for c, _ in hashed],
                [h for _, h in hashed],
            ),
            attempts=_READ_ATTEMPTS,
        )
        return [
            (Channel(r["channel"]), bytes(r["address_hash"]), rows.to_erased_suppression(r))
            for r in found
        ]

    async def erase(
        self,
        location_id: str,
        contact_id: str,
        *,
        named: Sequence[tuple[Channel, str]],
        digest: Callable[[Channel, str], bytes],
        scrub_answer: Callable[[str, bytes], bytes],
        meta: ChangeMeta,
        idempotency: Idempotency | None = None,
    ) -> WriteResult | Replay:
        """Erase the contact's personal data in one transaction (``plan_erasure``): lock the
        contact and every address involved, scrub its blocks, delete its consents, replace the
        plaintext suppressions by keyed-hash ones (``digest``), scrub its history and the
        stored answers about it (``scrub_answer``: method, answer -> answer), and log one
        ERASURE change when anything was erased. ``WriteResult.detail`` is an ErasureDone."""

        async def transaction(conn: Connection) -> WriteResult:
            if idempotency is not None:
                replay = await self._claim(conn, location_id, idempotency)
                if replay is not None:
                    raise _Rollback(replay)
            locked = await _load(conn, location_id, contact_id, ())
            before, now = locked.state, locked.now
            erased_at = await conn.fetchval(QUERIES["erasure_state"], location_id, contact_id)
            own = await conn.fetch(QUERIES["own_suppressions"], location_id, contact_id)
            involved = sorted(
                {(Channel(r["channel"]), r["address"]) for r in own}
                | set(named)
                | {(b.scope, b.address) for b in before.blocks if b.address and b.scope}
            )
            channels, values = _address_columns(involved)
            found: list[AddressSuppression] = []
            if involved:
                # Contact first, then its addresses in one global order: as every write.
                await conn.execute(QUERIES["lock_addresses"], location_id, channels, values)
                # Under the addresses' locks: the suppressions as they stand now.
                own = await conn.fetch(QUERIES["own_suppressions"], location_id, contact_id)
                found = [rows.to_suppression(r) for r in own]
            if named:
                named_channels, named_values = _address_columns(named)
                found += [
                    rows.to_suppression(r)
                    for r in await conn.fetch(
                        QUERIES["get_suppressions"], location_id, named_channels, named_values
                    )
                ]
            plan = plan_erasure(before, found, named, now)
            blocks = _rowcount(
                await conn.execute(QUERIES["erase_blocks"], location_id, contact_id, now)
            )
            consents = _rowcount(
                await conn.execute(QUERIES["erase_consents"], location_id, contact_id)
            )
            if plan.suppressions:
                await conn.execute(
                    QUERIES["erase_suppressions"],
                    location_id,
                    [x.channel.value for x in plan.suppressions],
                    [x.address for x in plan.suppressions],
                    [x.reason.value for x in plan.suppressions],
                )
            newly_kept = 0
            if plan.kept:
                hashes = [digest(k.channel, k.address) for k in plan.kept]
                kept_rows = await conn.fetch(
                    QUERIES["keep_erased_suppressions"],
                    location_id,
                    [k.channel.value for k in plan.kept],
                    hashes,
                    [k.reason.value for k in plan.kept],
                    [k.source.value for k in plan.kept],
                    [k.since for k in plan.kept],
                    now,
                )
                inserted = {
                    (r["channel"], bytes(r["address_hash"]), r["reason"]) for r in kept_rows
                }
                plain = {(x.channel, x.address, x.reason) for x in plan.suppressions}
                newly_kept = sum(
                    1
                    for k, h in zip(plan.kept, hashes, strict=True)
                    if (k.channel.value, h, k.reason.value) in inserted
                    and (k.channel, k.address, k.reason) not in plain
                )
            history = _rowcount(
                await conn.execute(
                    QUERIES["erase_history"], location_id, contact_id, channels, values
                )
            )
            scrubbed_answers = []
            erased_addresses = sorted(
                {x.address for x in plan.suppressions}
                | {k.address for k in plan.kept}
                | {address for _, address in named}
                | {b.address for b in before.blocks if b.address}
                | {c.address for c in before.consents if c.address}
            )
            # A stored answer is a protobuf message: a string field holding exactly the
            # address is its length (a varint) and its bytes ("a@b.co" then finds no answer
            # that names only "a@b.com").
            fields = [varint(len(e)) + e for e in (a.encode() for a in erased_addresses if a)]
            for row in await conn.fetch(
                QUERIES["erasure_answers"], location_id, contact_id, fields
            ):
                kept_answer = bytes(row["response"])
                answer = scrub_answer(row["method"], kept_answer)
                if answer != kept_answer:
                    scrubbed_answers.append((location_id, row["key"], answer))
            if scrubbed_answers:
                await conn.executemany(QUERIES["scrub_answer"], scrubbed_answers)
            counts = ErasureCounts(
                blocks_scrubbed=blocks,
                consents_erased=consents,
                suppressions_hashed=len(plan.suppressions) + newly_kept,
                history_entries_scrubbed=history,
                idempotent_answers_scrubbed=len(scrubbed_answers),
            )
            done = ErasureDone(counts, changed=counts.any, already_erased=erased_at is not None)
            if not done.changed:
                result = WriteResult(
                    state=replace(before, suppressions=()),
                    steps=(),
                    last_seq=locked.last_seq,
                    detail=done,
                )
                if idempotency is None:
                    raise _Rollback(result)  # an unknown contact stays unknown
            else:
                after = ContactState(
                    location_id=location_id,
                    contact_id=contact_id,
                    blocks=plan.blocks,
                    version=before.version + 1,
                    updated_at=now,
                    # What the answer shows of the opt-outs kept: never their addresses (the
                    # answer is stored for replays).
                    suppressions=tuple(
                        AddressSuppression(
                            channel=k.channel,
                            address="",
                            reason=k.reason,
                            source=k.source,
                            since=k.since,
                            erased=True,
                        )
                        for k in plan.kept
                    ),
                )
                summary = summarize(plan.blocks)
                change = _Change(
                    version=after.version,
                    direction=Direction.OUTBOUND.value,
                    scope="ALL",
                    enabled=False,
                    reason="",
                    outbound=summary.outbound.value,
                    inbound=summary.inbound.value,
                    blocked=",".join(c.value for c in summary.blocked_channels),
                    address="",
                    owner="",
                    kind=ChangeKind.ERASURE,
                )
                await conn.execute(QUERIES["mark_erased"], location_id, contact_id, now)
                last_seq, position = await _append(conn, after, [change], meta, now)
                result = WriteResult(
                    state=after, steps=(), last_seq=last_seq, detail=done, position=position
                )
            if idempotency is not None:
                result = await _with_position(conn, result)
                await conn.execute(
                    QUERIES["store_contact_answer"],
                    location_id,
                    idempotency.key,
                    idempotency.respond(result),
                    contact_id,
                )
            return result

        outcome: WriteResult | Replay
        try:
            outcome = await self._run(transaction, attempts=_TRANSACTION_ATTEMPTS, transaction=True)
        except _Rollback as kept_nothing:
            outcome = kept_nothing.outcome
        return await self._positioned(outcome)

    async def block_expiry(self, location_id: str) -> BlockExpiry:
        seconds = await self._run(
            lambda conn: conn.fetchval(QUERIES["get_block_expiry"], location_id),
            attempts=_READ_ATTEMPTS,
        )
        return expiry_of(int(seconds or 0))

    async def put_block_expiry(self, location_id: str, expiry: BlockExpiry) -> None:
        lifetime = expiry.sms_carrier_temporary
        seconds = int(lifetime.total_seconds()) if lifetime is not None else 0
        await self._run(
            lambda conn: conn.execute(QUERIES["put_block_expiry"], location_id, seconds)
        )

    async def expiring_contacts(self, now: dt.datetime | None, limit: int) -> list[tuple[str, str]]:
        """Up to ``limit`` (location, contact) holding a temporary carrier block at least its
        location's lifetime old at ``now`` (None: the database's clock), the oldest first; a
        contact may come more than once."""
        found = await self._run(
            lambda conn: conn.fetch(QUERIES["expiring_contacts"], now, limit),
            attempts=_READ_ATTEMPTS,
        )
        return [(r["location_id"], r["contact_id"]) for r in found]

    async def write(
        self,
        location_id: str,
        contact_id: str,
        plan: Plan,
        *,
        meta: ChangeMeta,
        expected_version: int | None = None,
        addresses: Addresses = (),
        idempotency: Idempotency | None = None,
        reply_marks: bool = False,
    ) -> WriteResult | Replay:
        """Lock the contact (and ``addresses``), run ``plan`` on its current state, persist the
        steps and log them, all in one transaction. With ``reply_marks`` the state the plan
        sees holds the contact's reply marks, and the marks the plan decides
        (``Decision.marks``) are kept in the same transaction.

        Nothing is written when the plan raises, nor when it takes no step (without an
        idempotency key to remember the answer by). Retried on serialization failures,
        deadlocks and connections lost before COMMIT was sent; never on cancellation.
        """

        async def transaction(conn: Connection) -> WriteResult:
            if idempotency is not None:
                replay = await self._claim(conn, location_id, idempotency)
                if replay is not None:
                    raise _Rollback(replay)
            locked = await _load(conn, location_id, contact_id, addresses)
            before = locked.state
            if expected_version is not None and expected_version != before.version:
                raise VersionMismatch(expected_version, before.version)
            if reply_marks:
                found = await conn.fetch(QUERIES["get_reply_marks"], location_id, contact_id)
                before = replace(before, reply_marks=tuple(map(rows.to_reply_mark, found)))
            planned = plan(before, locked.now)
            detail = planned.detail if isinstance(planned, Decision) else None
            steps = tuple(planned.steps if isinstance(planned, Decision) else planned)
            marks = planned.marks if isinstance(planned, Decision) else ()
            for mark in marks:
                await conn.execute(
                    QUERIES["put_reply_mark"],
                    location_id,
                    contact_id,
                    mark.channel,
                    mark.kind.value,
                    mark.at,
                )
            if not steps and not marks and idempotency is None:
                # Not even the contact's row is kept: an unknown contact stays unknown.
                raise _Rollback(
                    WriteResult(state=before, steps=steps, last_seq=locked.last_seq, detail=detail)
                )
            after, changes = _advance(before, steps, locked.now)
            last_seq, position = locked.last_seq, cast(Position, ())
            if changes:
                last_seq, position = await _append(
                    conn, after, changes, meta, locked.now, steps=steps
                )
            result = WriteResult(
                state=after, steps=steps, last_seq=last_seq, detail=detail, position=position
            )
            if idempotency is not None:
                result = await _with_position(conn, result)
                await conn.execute(
                    QUERIES["store_contact_answer"],
                    location_id,
                    idempotency.key,
                    idempotency.respond(result),
                    contact_id,
                )
            return result

        outcome: WriteResult | Replay
        try:
            outcome = await self._run(transaction, attempts=_TRANSACTION_ATTEMPTS, transaction=True)
        except _Rollback as kept_nothing:
            outcome = kept_nothing.outcome
        return await self._positioned(outcome)

    async def _positioned(self, outcome: _O) -> _O:
        """A write's result with the position of the contact's last change (its cursor):
        looked up when the write changed nothing."""
        if not isinstance(outcome, WriteResult) or outcome.position:
            return outcome
        return await self._run(lambda conn: _with_position(conn, outcome), attempts=_READ_ATTEMPTS)

    async def _claim(self, conn: Connection, location_id: str, claim: Idempotency) -> Replay | None:
        """Claim the key, or return the first answer of an earlier use of it."""
        ours = await conn.fetchval(
            QUERIES["claim_idempotency_key"],
            location_id,
            claim.key,
            claim.method,
            claim.request_hash,
            self._idempotency_ttl,
        )
        if ours is not None:
            return None
        row = await conn.fetchrow(QUERIES["get_idempotency_key"], location_id, claim.key)
        assert row is not None
        kept = bytes(row["request_hash"])
        if row["method"] != claim.method or kept not in (claim.request_hash, claim.legacy_hash):
            raise InvalidArgument.one(
                "idempotency_key",
                f"{claim.key!r} was already used for a different request "
                f"({row['method']}); use a new key for a new request",
            )
        return Replay(bytes(row["response"]))

    async def write_chunk(
        self,
        location_id: str,
        items: Sequence[BulkItem | None],
        *,
        start: int,
        size: int,
        claim: BulkClaim | None = None,
    ) -> BulkChunk:
        """Write the next chunk of a bulk write in one transaction, all or nothing: up to
        ``size`` items from ``start`` (with a claim, from the first item its kept progress
        does not answer), each run on the state the items before it left, as ``write`` runs
        one (an item whose plan raises a domain error is refused, and writes nothing). A
        ``None`` item (invalid) is skipped. The chunk's contacts are loaded together and its
        changes appended in one statement. Retried as ``write`` is.
        """

        async def transaction(conn: Connection) -> BulkChunk:
            first, progress = start, None
            if claim is not None:
                progress = await self._claim_progress(conn, location_id, claim)
                first = 0 if progress is None else claim.done(progress)
            chunk = items[first : first + size]
            written = [item for item in chunk if item is not None]
            if not written and claim is None:
                raise _KeepNothing(BulkChunk(first, [None] * len(chunk)))
            outcomes: list[ItemOutcome | None] = []
            changed = False
            if written:
                outcomes, changed = await _write_items(conn, location_id, chunk)
            else:
                outcomes = [None] * len(chunk)
            if claim is None:
                if not changed:
                    # Nothing to keep (not even the contacts' rows): unknown stays unknown.
                    raise _KeepNothing(BulkChunk(first, outcomes))
                return BulkChunk(first, outcomes)
            if chunk:
                progress = claim.record(progress, first, outcomes)
                await conn.execute(
                    QUERIES["store_idempotent_response"], location_id, claim.key, progress
                )
            return BulkChunk(first, outcomes, progress)

        try:
            return await self._run(transaction, attempts=_TRANSACTION_ATTEMPTS, transaction=True)
        except _KeepNothing as kept_nothing:
            return kept_nothing.chunk

    async def _claim_progress(
        self, conn: Connection, location_id: str, claim: BulkClaim
    ) -> bytes | None:
        """Claim a bulk write's key (locking it until commit): None when it is new, else the
        progress an earlier use of it kept."""
        replay = await self._claim(
            conn,
            location_id,
            Idempotency(
                claim.key,
                claim.method,
                claim.request_hash,
                lambda _: b"",
                legacy_hash=claim.legacy_hash,
            ),
        )
        return None if replay is None else replay.response

    async def list_blocks(
        self, location_id: str, flt: ListFilter, after: BlockKey | None, limit: int
    ) -> list[ListedBlock]:
        """Up to ``limit`` active blocks of the location matching ``flt``, in key order
        (contact, direction, scope, reason), after the key ``after``."""
        key = after or ("", "", "", "")
        args = _filter_args(flt)
        query, params = "list_blocks", (location_id, *key, *args, limit)
        if flt.contact_id:
            # Within the contact's rows (a token of this filter holds one of its keys).
            _, direction, scope, reason = key if key[0] == flt.contact_id else ("", "", "", "")
            query = "list_contact_blocks"
            params = (location_id, flt.contact_id, direction, scope, reason, *args[:6])
            params += (flt.address, limit)
        found = await self._run(
            lambda conn: conn.fetch(QUERIES[query], *params), attempts=_READ_ATTEMPTS
        )
        return [ListedBlock(row["contact_id"], rows.to_block(row)) for row in found]

    async def list_suppressions(
        self, location_id: str, flt: ListFilter, after: SuppressionKey | None, limit: int
    ) -> list[AddressSuppression]:
        """Up to ``limit`` active suppressions of the location matching ``flt``, in key order
        (channel, address, reason), after the key ``after``."""
        key = after or ("", "", "")
        args = _filter_args(flt)
        query, params = "list_suppressions", (location_id, *key, *args, limit)
        if flt.address and flt.channel is not None:
            # Within the address's rows (a token of this filter holds one of its keys).
            channel = flt.channel.value
            reason = key[2] if key[:2] == (channel, flt.address) else ""
            query = "list_address_suppressions"
            params = (location_id, channel, flt.address, reason, *args[1:6], flt.contact_id)
            params += (limit,)
        found = await self._run(
            lambda conn: conn.fetch(QUERIES[query], *params), attempts=_READ_ATTEMPTS
        )
        return [rows.to_suppression(row) for row in found]


@dataclass(frozen=True, slots=True)
class _Locked:
    """A contact as a write found it under its lock, and the database's clock then."""

    state: ContactState
    now: dt.datetime
    # Sequence number of the contact's last change.
    last_seq: int


@dataclass(frozen=True, slots=True)
class _Change:
    """What the change log records of one step (beside the write's ChangeMeta)."""

    version: int
    direction: str
    scope: str
    enabled: bool
    reason: str
    # The contact's summary after the step.
    outbound: str
    inbound: str
    blocked: str
    # For a suppression: its address and the contact whose event set it.
    address: str
    owner: str
    kind: ChangeKind = ChangeKind.BLOCK
    # For a consent: its document after the step.
    consent: str | None = None


async def _load(
    conn: Connection, location_id: str, contact_id: str, addresses: Addresses
) -> _Locked:
    """Lock the contact, creating its row when it has none, and read its state (one
    statement); then lock ``addresses`` and read their suppressions."""
    contact = await conn.fetchrow(QUERIES["lock_contact"], location_id, contact_id)
    if contact is None:
        # Created by a concurrent writer after the statement's snapshot: now committed.
        contact = await conn.fetchrow(QUERIES["lock_contact_row"], location_id, contact_id)
        assert contact is not None
    suppressions: tuple[AddressSuppression, ...] = ()
    if addresses:
        channels, values = _address_columns(addresses)
        await conn.execute(QUERIES["lock_addresses"], location_id, channels, values)
        found = await conn.fetch(QUERIES["get_suppressions"], location_id, channels, values)
        suppressions = tuple(rows.to_suppression(row) for row in found)
    blocks, consents = rows.to_state(contact["state"])
    state = ContactState(
        location_id=location_id,
        contact_id=contact_id,
        blocks=blocks,
        version=contact["version"],
        updated_at=contact["updated_at"],
        suppressions=suppressions,
        consents=consents,
    )
    return _Locked(state=state, now=contact["now"], last_seq=contact["last_seq"])


def _advance(
    before: ContactState,
    steps: Sequence[Step],
    now: dt.datetime,
    summaries: dict[tuple[Block, ...], StatusSummary] | None = None,
) -> tuple[ContactState, list[_Change]]:
    """The contact's state after the steps, in order, and the log's record of each (every
    step is a version). Pure: ``_append`` persists the state, ``_apply`` the steps.
    ``summaries`` (a bulk chunk's) keeps the summary of each set of blocks met."""
    blocks = list(before.blocks)
    suppressions = list(before.suppressions)
    consents = list(before.consents)
    changes: list[_Change] = []
    for number, step in enumerate(steps, start=before.version + 1):
        target = step.target
        if isinstance(target, Block):
            if step.enabled:
                blocks.append(target)
            else:
                blocks = [b for b in blocks if b.key != target.key]
        elif isinstance(target, ReplyClaim):
            claimed = target.block.key
            blocks = [
                replace(b, replied_at=target.at) if b.key == claimed and b.replied_at is None else b
                for b in blocks
            ]
        elif isinstance(target, Consent):
            consents = [c for c in consents if c.key != target.key] + [target]
        elif step.enabled:
            # A suppression set again (by a second contact's event) replaces the one of its key.
            suppressions = [s for s in suppressions if s.key != target.key] + [target]
        else:
            suppressions = [s for s in suppressions if s.key != target.key]
        if summaries is None:
            summary = summarize(blocks)
        else:
            held = tuple(blocks)
            found = summaries.get(held)
            summary = summaries[held] = summarize(held) if found is None else found
        changes.append(_change(number, step, summary))
    after = ContactState(
        location_id=before.location_id,
        contact_id=before.contact_id,
        blocks=tuple(blocks),
        version=before.version + len(steps),
        updated_at=now if steps else before.updated_at,
        suppressions=tuple(suppressions),
        consents=tuple(sorted(consents, key=consent_sort_key)),
    )
    return after, changes


async def _apply(
    conn: Connection,
    before: ContactState,
    steps: Sequence[Step],
    now: dt.datetime,
    summaries: dict[tuple[Block, ...], StatusSummary] | None = None,
) -> tuple[ContactState, list[_Change]]:
    """``_advance``, with each step persisted by a statement of its own (on dnd_blocks,
    dnd_consents and dnd_address_suppressions; the state document is the caller's to write):
    for bulk writes, which send these statements batched."""
    for step in steps:
        target = step.target
        if isinstance(target, Block):
            await _apply_block(conn, before, step.enabled, target, now)
        elif isinstance(target, ReplyClaim):
            await _claim_reply(conn, before, target)
        elif isinstance(target, Consent):
            await _apply_consent(conn, before, target, now)
        else:
            await _apply_suppression(conn, before.location_id, step.enabled, target, now)
    return _advance(before, steps, now, summaries)


async def _apply_block(
    conn: Connection, contact: ContactState, enabled: bool, block: Block, now: dt.datetime
) -> None:
    if not enabled:
        await conn.execute(
            QUERIES["delete_block"],
            contact.location_id,
            contact.contact_id,
            block.direction.value,
            scope_name(block.scope),
            block.reason.value,
        )
        return
    await conn.execute(
        QUERIES["insert_block"],
        contact.location_id,
        contact.contact_id,
        block.direction.value,
        scope_name(block.scope),
        block.reason.value,
        block.source.value,
        block.actor_id,
        block.note,
        block.evidence,
        block.provider_detail,
        block.since or now,
        block.address,
    )


async def _claim_reply(conn: Connection, contact: ContactState, claim: ReplyClaim) -> None:
    """Set the opt-out's ``replied_at``."""
    block = claim.block
    await conn.execute(
        QUERIES["claim_reply"],
        contact.location_id,
        contact.contact_id,
        block.direction.value,
        scope_name(block.scope),
        block.reason.value,
        claim.at,
    )


async def _apply_consent(
    conn: Connection, contact: ContactState, consent: Consent, now: dt.datetime
) -> None:
    await conn.execute(
        QUERIES["upsert_consent"],
        contact.location_id,
        contact.contact_id,
        consent.channel.value,
        consent.purpose.value,
        consent.address,
        consent.method.value,
        consent.kind.value,
        consent.status.value,
        consent.captured_at,
        consent.source.value,
        consent.actor_id,
        rows.evidence_document(consent.evidence),
        consent.expires_at,
        consent.confirm_by,
        consent.revoked_at,
        consent.revoked_by,
        consent.consent_source,
        now,
    )


async def _apply_suppression(
    conn: Connection,
    location_id: str,
    enabled: bool,
    suppression: AddressSuppression,
    now: dt.datetime,
) -> None:
    if not enabled:
        await conn.execute(
            QUERIES["delete_suppression"],
            location_id,
            suppression.channel.value,
            suppression.address,
            suppression.reason.value,
        )
        return
    await conn.execute(
        QUERIES["insert_suppression"],
        location_id,
        suppression.channel.value,
        suppression.address,
        suppression.reason.value,
        suppression.source.value,
        suppression.contact_id,
        suppression.actor_id,
        suppression.note,
        suppression.evidence,
        suppression.provider_detail,
        suppression.since or now,
    )


def _change(version: int, step: Step, summary: StatusSummary) -> _Change:
    target = step.target
    if isinstance(target, Consent):
        # A consent is logged as an outbound change on its channel, of no reason, with the
        # consent after the change.
        return _Change(
            version=version,
            direction=Direction.OUTBOUND.value,
            scope=target.channel.value,
            enabled=step.enabled,
            reason="",
            outbound=summary.outbound.value,
            inbound=summary.inbound.value,
            blocked=",".join(c.value for c in summary.blocked_channels),
            address="",
            owner="",
            kind=ChangeKind.CONSENT,
            consent=rows.consent_document(target),
        )
    kind = ChangeKind.BLOCK
    if isinstance(target, Block | ReplyClaim):
        # A compliance reply is logged with the opt-out's direction, scope and reason.
        direction, scope = target.direction, scope_name(target.scope)
        address = owner = ""
        if isinstance(target, ReplyClaim):
            kind = ChangeKind.COMPLIANCE_REPLY
    else:
        # A suppression is logged as an outbound change on its channel.
        direction, scope = Direction.OUTBOUND, target.channel.value
        address, owner = target.address, target.contact_id
    return _Change(
        version=version,
        direction=direction.value,
        scope=scope,
        enabled=step.enabled,
        reason=target.reason.value,
        outbound=summary.outbound.value,
        inbound=summary.inbound.value,
        blocked=",".join(c.value for c in summary.blocked_channels),
        address=address,
        owner=owner,
        kind=kind,
    )


async def _append(
    conn: Connection,
    after: ContactState,
    changes: Sequence[_Change],
    meta: ChangeMeta,
    now: dt.datetime,
    *,
    steps: Sequence[Step] = (),
) -> tuple[int, Position]:
    """Persist ``after`` (the contact's state document and the rows of dnd_blocks and
    dnd_consents it holds, and the address suppressions ``steps`` change), append the changes
    to the log (the location's lane) and move the contact to ``after``'s version, in one
    statement; the last change's sequence number and position. Runs last: see
    ``append_changes``."""
    lane = lanes.lane_of(after.location_id, lanes.count())
    row = await conn.fetchrow(
        QUERIES["append_changes"],
        after.location_id,
        after.contact_id,
        # The lists have one element per change; the other values hold for all of them.
        [c.version for c in changes],
        [c.direction for c in changes],
        [c.scope for c in changes],
        [c.enabled for c in changes],
        [c.reason for c in changes],
        [c.outbound for c in changes],
        [c.inbound for c in changes],
        [c.blocked for c in changes],
        meta.source.value,
        meta.actor_id,
        meta.note,
        meta.evidence,
        meta.provider_detail,
        now,
        after.version,
        [c.address for c in changes],
        [c.owner for c in changes],
        meta.caller,
        [c.kind.value for c in changes],
        [c.consent for c in changes],
        lane,
        rows.state_document(after.blocks, after.consents, now),
        _suppression_ops(steps, now),
    )
    assert row is not None
    last_seq: int = row["last_seq"]
    return last_seq, lanes.position_at(lane, last_seq, row["heads"])


async def _write_items(
    conn: Connection, location_id: str, chunk: Sequence[BulkItem | None]
) -> tuple[list[ItemOutcome | None], bool]:
    """Run a chunk's items in order on their contacts loaded together (``_load_many``), each
    as ``write`` runs one; persist their steps in few statements (``_Deferred``) and append
    every change in one (``_append_many``). The outcomes, and whether anything changed."""
    written = [item for item in chunk if item is not None]
    contact_ids = sorted({item.contact_id for item in written})
    addresses = sorted({a for item in written for a in item.addresses})
    states, last_seqs, by_address, now = await _load_many(conn, location_id, contact_ids, addresses)
    deferred = _Deferred(conn)
    summaries: dict[tuple[Block, ...], StatusSummary] = {}
    entries: list[tuple[ContactState, list[_Change], ChangeMeta]] = []
    # Per item written: (index in outcomes, index in entries, its steps and plan's detail).
    pending: list[tuple[int, int, tuple[Step, ...], object]] = []
    outcomes: list[ItemOutcome | None] = []
    for item in chunk:
        if item is None:
            outcomes.append(None)
            continue
        # The states kept have no suppressions: an item's are those of its addresses.
        before = states[item.contact_id]
        if item.addresses:
            shown = tuple(s for a in dict.fromkeys(item.addresses) for s in by_address[a])
            before = replace(before, suppressions=shown)
        if item.expected_version is not None and item.expected_version != before.version:
            mismatch = VersionMismatch(item.expected_version, before.version)
            outcomes.append(ItemOutcome(error=mismatch))
            continue
        try:
            planned = item.plan(before, now)
        except (ClearNotPermitted, VersionMismatch, InvalidArgument) as error:
            outcomes.append(ItemOutcome(error=error))
            continue
        detail = planned.detail if isinstance(planned, Decision) else None
        steps = tuple(planned.steps if isinstance(planned, Decision) else planned)
        if not steps:
            result = WriteResult(before, steps, last_seqs[item.contact_id], detail)
            outcomes.append(ItemOutcome(result=result))
            continue
        after, changes = await _apply(cast(Connection, deferred), before, steps, now, summaries)
        states[item.contact_id] = replace(after, suppressions=()) if after.suppressions else after
        for address in dict.fromkeys(item.addresses):
            by_address[address] = tuple(
                s for s in after.suppressions if (s.channel, s.address) == address
            )
        pending.append((len(outcomes), len(entries), steps, detail))
        entries.append((after, changes, item.meta))
        # Set once the changes are appended (below).
        outcomes.append(None)
    await deferred.flush()
    if not entries:
        return outcomes, False
    seqs = await _append_many(conn, location_id, entries, now)
    for at, entry, steps, detail in pending:
        last_seq, position = seqs[entry]
        result = WriteResult(entries[entry][0], steps, last_seq, detail, position)
        outcomes[at] = ItemOutcome(result=result)
    return outcomes, True


async def _load_many(
    conn: Connection, location_id: str, contact_ids: list[str], addresses: list[tuple[Channel, str]]
) -> tuple[
    dict[str, ContactState],
    dict[str, int],
    dict[tuple[Channel, str], tuple[AddressSuppression, ...]],
    dt.datetime,
]:
    """``_load`` of several contacts (sorted) and addresses in four statements: their rows
    created where missing and locked in contact order, the addresses locked, then read as
    ``read_contacts`` reads them. The states (without suppressions), the contacts' last
    sequence numbers, the suppressions per address and the database's clock."""
    await conn.execute(QUERIES["ensure_contacts"], location_id, contact_ids)
    locked = await conn.fetch(QUERIES["lock_contacts"], location_id, contact_ids)
    now: dt.datetime = locked[0]["now"]
    channels, values = _address_columns(addresses)
    if addresses:
        await conn.execute(QUERIES["lock_addresses"], location_id, channels, values)
    found = await conn.fetch(QUERIES["read_contacts"], location_id, contact_ids, channels, values)
    read = rows.to_contacts_read(location_id, contact_ids, found)
    by_address: dict[tuple[Channel, str], tuple[AddressSuppression, ...]] = {
        a: tuple(s for s in read.suppressions if (s.channel, s.address) == a) for a in addresses
    }
    states = {
        c: replace(s, suppressions=()) if s.suppressions else s for c, s in read.contacts.items()
    }
    return states, dict(read.last_seqs), by_address, now


# Statements ``_Deferred`` sends as one statement of arrays when it has several rows of them.
_MANY = {QUERIES["insert_block"]: QUERIES["insert_blocks"]}


class _Deferred:
    """A connection for ``_apply`` in a bulk write: its ``execute`` calls are kept and sent
    by ``flush`` with ``executemany`` (consecutive calls of one statement together, in
    order; those of a statement in ``_MANY`` as one statement of arrays); any other call
    sends what is kept first."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._kept: list[tuple[str, tuple[object, ...]]] = []

    async def execute(self, query: str, *args: object) -> str:
        self._kept.append((query, args))
        return ""

    async def flush(self) -> None:
        kept, self._kept = self._kept, []
        at = 0
        while at < len(kept):
            query = kept[at][0]
            end = at
            while end < len(kept) and kept[end][0] == query:
                end += 1
            batch = [args for _, args in kept[at:end]]
            many = _MANY.get(query)
            if many is not None and len(batch) > 1:
                # One statement of arrays (a column per parameter), not one per row.
                await self._conn.execute(
                    many, *(list(column) for column in zip(*batch, strict=True))
                )
            else:
                await self._conn.executemany(query, batch)
            at = end

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._conn, name)

        async def flushed(*args: Any, **kwargs: Any) -> Any:
            await self.flush()
            return await method(*args, **kwargs)

        return flushed


async def _append_many(
    conn: Connection,
    location_id: str,
    entries: Sequence[tuple[ContactState, Sequence[_Change], ChangeMeta]],
    now: dt.datetime,
) -> list[tuple[int, Position]]:
    """``_append`` of several writes of one location (in order, several per contact allowed)
    in one statement, in the location's lane; each write's last sequence number and
    position. Runs last, like ``_append``."""
    flat = [(after, change, meta) for after, changes, meta in entries for change in changes]
    lane = lanes.lane_of(location_id, lanes.count())
    # Each contact's state after its last write of the chunk.
    final = {after.contact_id: after for after, _, _ in entries}
    found = await conn.fetch(
        QUERIES["append_changes_many"],
        location_id,
        [after.contact_id for after, _, _ in flat],
        [c.version for _, c, _ in flat],
        [c.direction for _, c, _ in flat],
        [c.scope for _, c, _ in flat],
        [c.enabled for _, c, _ in flat],
        [c.reason for _, c, _ in flat],
        [c.outbound for _, c, _ in flat],
        [c.inbound for _, c, _ in flat],
        [c.blocked for _, c, _ in flat],
        [m.source.value for _, _, m in flat],
        [m.actor_id for _, _, m in flat],
        [m.note for _, _, m in flat],
        [m.evidence for _, _, m in flat],
        [m.provider_detail for _, _, m in flat],
        now,
        [c.address for _, c, _ in flat],
        [c.owner for _, c, _ in flat],
        [m.caller for _, _, m in flat],
        [c.kind.value for _, c, _ in flat],
        [c.consent for _, c, _ in flat],
        lane,
        list(final),
        _state_documents(final.values(), now),
    )
    # The rows' sequence numbers, in order: the first is the head before plus one.
    first = int(found[0]["first_seq"])
    heads = found[0]["heads"]
    seqs, at = [], first - 1
    for _, changes, _ in entries:
        at += len(changes)
        seqs.append((at, lanes.position_at(lane, at, heads)))
    return seqs


def _state_documents(states: Iterable[ContactState], now: dt.datetime) -> list[str]:
    """``rows.state_document`` of each state, each distinct set of blocks and consents
    encoded once."""
    documents: list[str] = []
    encoded: dict[tuple[tuple[Block, ...], tuple[Consent, ...]], str] = {}
    for state in states:
        held = (state.blocks, state.consents)
        try:
            document = encoded.get(held)
        except TypeError:  # a consent's evidence is not hashable
            documents.append(rows.state_document(state.blocks, state.consents, now))
            continue
        if document is None:
            document = encoded[held] = rows.state_document(state.blocks, state.consents, now)
        documents.append(document)
    return documents


def _filter_args(flt: ListFilter) -> tuple[object, ...]:
    return (
        flt.channel.value if flt.channel else "",
        flt.direction.value if flt.direction else "",
        flt.reason.value if flt.reason else "",
        flt.source.value if flt.source else "",
        flt.since,
        flt.until,
        flt.contact_id,
        flt.address,
    )


def _suppression_ops(steps: Sequence[Step], now: dt.datetime) -> str:
    """What ``steps`` do to address suppressions, net, as ``append_changes`` takes it: the
    keys removed and the suppressions set (each key by its last step)."""
    last: dict[tuple[str, str, str], tuple[bool, AddressSuppression]] = {}
    for step in steps:
        s = step.target
        if isinstance(s, AddressSuppression):
            last[(s.channel.value, s.address, s.reason.value)] = (step.enabled, s)
    if not last:
        return _NO_SUPPRESSION_OPS
    gone: list[dict[str, str]] = []
    put: list[dict[str, str]] = []
    for (channel, address, reason), (enabled, s) in last.items():
        if not enabled:
            gone.append({"channel": channel, "address": address, "reason": reason})
            continue
        put.append(
            {
                "channel": s.channel.value,
                "address": s.address,
                "reason": s.reason.value,
                "source": s.source.value,
                "contact_id": s.contact_id,
                "actor_id": s.actor_id,
                "note": s.note,
                "evidence": s.evidence,
                "provider_detail": s.provider_detail,
                "since": (s.since or now).isoformat(),
            }
        )
    return json.dumps({"gone": gone, "put": put}, separators=(",", ":"))


_NO_SUPPRESSION_OPS = "{}"


async def _with_position(conn: Connection, result: _R) -> _R:
    """``result`` with the position of the contact's last change when it has none (a write
    that changed nothing): read from that change's row (0: before its lane's first change; a
    pruned change: its lane at its number, every other lane at 0)."""
    if not isinstance(result, WriteResult) or result.position:
        return result
    lane = lanes.lane_of(result.state.location_id, lanes.count())
    seq = result.last_seq
    found = await conn.fetch(QUERIES["change_heads"], lane, seq) if seq > 0 else []
    if found:
        return replace(result, position=lanes.position_at(lane, seq, found[0]["heads"]))
    position = [0] * lanes.count()
    position[lane] = seq
    return replace(result, position=tuple(position))


def _nothing() -> None:
    pass


def _free_connections(pool: asyncpg.Pool) -> int:
    """How many of the pool's connections are free: taking one does not wait. (The pool's
    queue of free connections: ``get_idle_size`` counts them in a loop over every one.)"""
    queue = getattr(pool, "_queue", None)
    return queue.qsize() if isinstance(queue, asyncio.Queue) else 0


def _terminate(conn: Connection) -> None:
    """Drop a pooled connection at its deadline, unless the pool took it back meanwhile (its
    proxy then refuses, and the connection is another caller's)."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


class _Rollback(Exception):
    """Control flow: a write with nothing to keep (no step, or a replayed answer) rolls back
    and answers ``outcome``."""

    def __init__(self, outcome: WriteResult | Replay) -> None:
        self.outcome = outcome


def _rowcount(status: str) -> int:
    """The row count of a command's status (``UPDATE 3``)."""
    return int(status.split()[-1])


class _KeepNothing(Exception):
    """Control flow: a bulk chunk with nothing to keep rolls back and answers ``chunk``."""

    def __init__(self, chunk: BulkChunk) -> None:
        self.chunk = chunk


def _address_columns(addresses: Addresses) -> tuple[list[str], list[str]]:
    return [c.value for c, _ in addresses], [a for _, a in addresses]
