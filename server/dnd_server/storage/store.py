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
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import TypeAlias, TypeVar

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from dnd_server.domain.consent import Consent, ConsentPolicy, consent_sort_key
from dnd_server.domain.errors import InvalidArgument, Unavailable, VersionMismatch
from dnd_server.domain.keywords import KeywordSettings
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    ChangeKind,
    Channel,
    ContactState,
    Direction,
    ReplyClaim,
    StatusSummary,
    Step,
    scope_name,
)
from dnd_server.domain.rules import summarize
from dnd_server.records import (
    Addresses,
    ChangeMeta,
    ChangeRow,
    ContactsRead,
    CursorPosition,
    Decision,
    HistoryRow,
    Idempotency,
    Plan,
    Replay,
    WriteResult,
)
from dnd_server.storage import rows
from dnd_server.storage.errors import (
    CONNECTION_LOST,
    RETRYABLE_TRANSACTION_ERRORS,
    translate_errors,
)
from dnd_server.storage.sql import QUERIES

# A connection as the pool lends it (the proxy is generic to the type checker only).
Connection: TypeAlias = "PoolConnectionProxy[asyncpg.Record]"

_T = TypeVar("_T")

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
        client retries an UNAVAILABLE write with its idempotency key."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (self._timeout if timeout is None else timeout)
        async with asyncio.timeout_at(deadline):
            conn = await self._pool.acquire()
        expiry = loop.call_at(deadline, _terminate, conn)
        try:
            async with asyncio.timeout_at(deadline):
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

    async def head_seq(self) -> int:
        return int(await self._run(lambda conn: conn.fetchval(QUERIES["head_seq"])))

    async def cursor_key(self, candidate: bytes) -> bytes:
        """The deployment's cursor key: the stored one, or ``candidate`` when none is yet."""

        async def store_and_read(conn: Connection) -> bytes:
            await conn.execute(QUERIES["store_cursor_key"], candidate)
            # A statement of its own: it sees a key another server stored meanwhile.
            return bytes(await conn.fetchval(QUERIES["cursor_key"]))

        return await self._run(store_and_read)

    async def changes_after(self, seq: int, limit: int) -> list[ChangeRow]:
        """Changes with a sequence number above ``seq``, in order. Sequence numbers commit in
        order, so this never skips a change that commits later."""
        found = await self._run(
            lambda conn: conn.fetch(QUERIES["changes_after"], seq, limit),
            attempts=_READ_ATTEMPTS,
        )
        return [rows.to_change(row) for row in found]

    async def cursor_position(self, seq: int, retention: float) -> CursorPosition:
        found = await self._run(
            lambda conn: conn.fetchrow(QUERIES["cursor_position"], seq, retention),
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
        statement (one snapshot, one round trip). Unknown contacts come back at version 0;
        every contact's state carries all the suppressions read."""
        args: tuple[object, ...]
        if len(contact_ids) == 1 and not addresses:
            query, args = "read_contact", (location_id, contact_ids[0])
        else:
            channels, values = _address_columns(addresses)
            query, args = "read_contacts", (location_id, list(contact_ids), channels, values)
        found = await self._run(
            lambda conn: conn.fetch(QUERIES[query], *args), attempts=_READ_ATTEMPTS
        )
        return rows.to_contacts_read(location_id, contact_ids, found)

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
        return [rows.to_history(row) for row in found]

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
        return [rows.to_history(row) for row in found]

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

    async def prune_idempotency_keys(self) -> int:
        status = await self._run(
            lambda conn: conn.execute(QUERIES["prune_idempotency_keys"], self._idempotency_ttl),
            timeout=self._timeout * _PRUNE_TIMEOUTS,
        )
        return int(status.split()[-1])

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
    ) -> WriteResult | Replay:
        """Lock the contact (and ``addresses``), run ``plan`` on its current state, persist the
        steps and log them, all in one transaction.

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
            planned = plan(before, locked.now)
            detail = planned.detail if isinstance(planned, Decision) else None
            steps = tuple(planned.steps if isinstance(planned, Decision) else planned)
            if not steps and idempotency is None:
                # Not even the contact's row is kept: an unknown contact stays unknown.
                raise _Rollback(
                    WriteResult(state=before, steps=steps, last_seq=locked.last_seq, detail=detail)
                )
            after, changes = await _apply(conn, before, steps, locked.now)
            last_seq = locked.last_seq
            if changes:
                last_seq = await _append(conn, after, changes, meta, locked.now)
            result = WriteResult(state=after, steps=steps, last_seq=last_seq, detail=detail)
            if idempotency is not None:
                await conn.execute(
                    QUERIES["store_idempotent_response"],
                    location_id,
                    idempotency.key,
                    idempotency.respond(result),
                )
            return result

        try:
            return await self._run(transaction, attempts=_TRANSACTION_ATTEMPTS, transaction=True)
        except _Rollback as kept_nothing:
            return kept_nothing.outcome

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
        if row["method"] != claim.method or bytes(row["request_hash"]) != claim.request_hash:
            raise InvalidArgument.one(
                "idempotency_key",
                f"{claim.key!r} was already used for a different request "
                f"({row['method']}); use a new key for a new request",
            )
        return Replay(bytes(row["response"]))


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
    """Lock the contact, creating its row when it has none, and then ``addresses``; read its
    blocks, its consents and the addresses' suppressions."""
    contact = await conn.fetchrow(QUERIES["lock_contact"], location_id, contact_id)
    if contact is None:
        await conn.execute(QUERIES["ensure_contact"], location_id, contact_id)
        contact = await conn.fetchrow(QUERIES["lock_contact"], location_id, contact_id)
        assert contact is not None
    block_rows = await conn.fetch(QUERIES["get_blocks"], location_id, contact_id)
    consent_rows = await conn.fetch(QUERIES["get_consents"], location_id, contact_id)
    suppressions: tuple[AddressSuppression, ...] = ()
    if addresses:
        channels, values = _address_columns(addresses)
        await conn.execute(QUERIES["lock_addresses"], location_id, channels, values)
        found = await conn.fetch(QUERIES["get_suppressions"], location_id, channels, values)
        suppressions = tuple(rows.to_suppression(row) for row in found)
    state = ContactState(
        location_id=location_id,
        contact_id=contact_id,
        blocks=tuple(rows.to_block(row) for row in block_rows),
        version=contact["version"],
        updated_at=contact["updated_at"],
        suppressions=suppressions,
        consents=tuple(
            sorted((rows.to_consent(r["consent"]) for r in consent_rows), key=consent_sort_key)
        ),
    )
    return _Locked(state=state, now=contact["now"], last_seq=contact["last_seq"])


async def _apply(
    conn: Connection, before: ContactState, steps: Sequence[Step], now: dt.datetime
) -> tuple[ContactState, list[_Change]]:
    """Persist the steps in order: the contact's state after them, and the log's record of
    each (every step is a version)."""
    blocks = list(before.blocks)
    suppressions = list(before.suppressions)
    consents = list(before.consents)
    changes: list[_Change] = []
    for number, step in enumerate(steps, start=before.version + 1):
        target = step.target
        if isinstance(target, Block):
            await _apply_block(conn, before, step.enabled, target, now)
            if step.enabled:
                blocks.append(target)
            else:
                blocks = [b for b in blocks if b.key != target.key]
        elif isinstance(target, ReplyClaim):
            blocks = await _claim_reply(conn, before, blocks, target)
        elif isinstance(target, Consent):
            await _apply_consent(conn, before, target, now)
            consents = [c for c in consents if c.key != target.key] + [target]
        else:
            await _apply_suppression(conn, before.location_id, step.enabled, target, now)
            if step.enabled:
                suppressions.append(target)
            else:
                suppressions = [s for s in suppressions if s.key != target.key]
        changes.append(_change(number, step, summarize(blocks)))
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


async def _claim_reply(
    conn: Connection, contact: ContactState, blocks: list[Block], claim: ReplyClaim
) -> list[Block]:
    """Set the opt-out's ``replied_at``: the blocks with it set."""
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
    return [replace(b, replied_at=claim.at) if b.key == block.key else b for b in blocks]


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
) -> int:
    """Append the changes to the log and move the contact to ``after``'s version; the last
    change's sequence number. Runs last: see ``append_changes``."""
    last_seq: int = await conn.fetchval(
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
    )
    return last_seq


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


def _address_columns(addresses: Addresses) -> tuple[list[str], list[str]]:
    return [c.value for c, _ in addresses], [a for _, a in addresses]
