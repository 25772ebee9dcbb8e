"""The one module that runs queries. Reads snapshot a contact; writes run a pure plan inside
one transaction that (optionally) claims an idempotency key, locks the contact and the
addresses involved, applies the plan's steps and appends them to the change log.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from dnd_server.domain.errors import InvalidArgument, Unavailable, VersionMismatch
from dnd_server.domain.keywords import KeywordSettings
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    Channel,
    ContactState,
    Direction,
    Reason,
    Source,
    Step,
    parse_scope,
    scope_name,
)
from dnd_server.domain.rules import summarize
from dnd_server.storage.errors import (
    CONNECTION_LOST,
    RETRYABLE_TRANSACTION_ERRORS,
    translate_errors,
)
from dnd_server.storage.sql import QUERIES

_TRANSACTION_ATTEMPTS = 3

# (channel, normalised address) pairs a read or write involves.
Addresses = Sequence[tuple[Channel, str]]


@dataclass(frozen=True, slots=True)
class ChangeMeta:
    """Who makes a change and what they say about it; recorded on every log row."""

    source: Source
    actor_id: str = ""
    note: str = ""
    evidence: str = ""
    provider_detail: str = ""
    # The authenticated caller making the change (a token's name, or ``anonymous <peer>``
    # without tokens), recorded beside the caller-supplied ``actor_id``.
    caller: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """A plan's steps plus what else it decided (handed back in ``WriteResult.detail``)."""

    steps: Sequence[Step]
    detail: object = None


# A plan decides, from the locked current state and the database's clock, which steps to take.
Plan = Callable[[ContactState, dt.datetime], Sequence[Step] | Decision]


@dataclass(frozen=True, slots=True)
class WriteResult:
    state: ContactState
    steps: tuple[Step, ...]
    # Sequence number of the contact's last change (the write's own when it changed something).
    last_seq: int
    # What the plan decided beside its steps (see Decision).
    detail: object = None


@dataclass(frozen=True, slots=True)
class Idempotency:
    """An idempotency key claimed in the write's transaction; ``respond`` encodes the answer
    stored for retries."""

    key: str
    method: str
    request_hash: bytes
    respond: Callable[[WriteResult], bytes]


@dataclass(frozen=True, slots=True)
class Replay:
    """The stored first answer to a retried idempotency key."""

    response: bytes


@dataclass(frozen=True, slots=True)
class HistoryRow:
    seq: int
    time: dt.datetime
    version: int
    enabled: bool
    direction: Direction
    scope: Channel | None
    reason: Reason
    source: Source
    actor_id: str
    note: str
    evidence: str
    provider_detail: str
    address: str
    # The contact whose request made the change (histories mix contacts' changes).
    contact_id: str = ""
    # For an address suppression change: the contact whose event set the suppression.
    owner_contact_id: str = ""
    # The authenticated caller that made the change ("" if logged before it was recorded).
    caller: str = ""


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One change-log row as the change stream carries it (no note or evidence)."""

    seq: int
    location_id: str
    contact_id: str
    direction: Direction
    scope: Channel | None
    enabled: bool
    reason: Reason
    source: Source
    actor_id: str
    time: dt.datetime
    outbound: str
    inbound: str
    blocked_channels: tuple[Channel, ...]
    version: int
    address: str
    owner_contact_id: str = ""
    caller: str = ""


@dataclass(frozen=True, slots=True)
class ContactsRead:
    contacts: dict[str, ContactState]
    last_seqs: dict[str, int]
    suppressions: tuple[AddressSuppression, ...]


@dataclass(frozen=True, slots=True)
class CursorPosition:
    head: int
    pruned_below: int
    # Whether the change right after the cursor is older than the stream's retention.
    next_expired: bool


class Store:
    def __init__(self, pool: asyncpg.Pool, timeout: float, idempotency_ttl: float) -> None:
        self._pool = pool
        self._timeout = timeout
        self._idempotency_ttl = idempotency_ttl

    @contextlib.asynccontextmanager
    async def _connection(self, timeout: float | None = None) -> AsyncIterator[Any]:
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
        with translate_errors():
            async with self._connection() as conn:
                seq: int = await conn.fetchval(QUERIES["head_seq"])
                return seq

    async def cursor_key(self, candidate: bytes) -> bytes:
        """The deployment's cursor key: the stored one, or ``candidate`` when none is yet."""
        with translate_errors():
            async with self._connection() as conn:
                await conn.execute(QUERIES["store_cursor_key"], candidate)
                # A statement of its own: it sees a key another server stored meanwhile.
                key: bytes = await conn.fetchval(QUERIES["cursor_key"])
                return bytes(key)

    async def _read(self, fn: Callable[[Any], Any]) -> Any:
        """Run a read on a pooled connection; retried once on a fresh connection when the
        one used turns out to be lost."""
        for attempt in (1, 2):
            try:
                with translate_errors():
                    async with self._connection() as conn:
                        return await fn(conn)
            except Unavailable as error:
                if attempt == 2 or not isinstance(error.__cause__, CONNECTION_LOST):
                    raise
        raise AssertionError("unreachable")

    async def changes_after(self, seq: int, limit: int) -> list[ChangeRow]:
        """Changes with a sequence number above ``seq``, in order. Sequence numbers commit in
        order, so this never skips a change that commits later."""

        async def read(conn: Any) -> list[ChangeRow]:
            rows = await conn.fetch(QUERIES["changes_after"], seq, limit)
            return [change_row(r) for r in rows]

        result: list[ChangeRow] = await self._read(read)
        return result

    async def cursor_position(self, seq: int, retention: float) -> CursorPosition:
        async def read(conn: Any) -> CursorPosition:
            row = await conn.fetchrow(QUERIES["cursor_position"], seq, retention)
            return CursorPosition(row["head"], row["pruned_below"], bool(row["next_expired"]))

        result: CursorPosition = await self._read(read)
        return result

    async def prune_changes(self, retention: float) -> int:
        with translate_errors():
            async with self._connection(self._timeout * 6) as conn:
                count: int = await conn.fetchval(QUERIES["prune_changes"], retention)
        return count

    async def read_contacts(
        self, location_id: str, contact_ids: Sequence[str], addresses: Addresses = ()
    ) -> ContactsRead:
        """Several contacts of one location and the suppressions of ``addresses``, in one
        statement (one snapshot, one round trip). Unknown contacts come back at version 0;
        every contact's state carries all the suppressions read."""
        channels, values = _address_columns(addresses)

        async def read(conn: Any) -> list[asyncpg.Record]:
            if len(contact_ids) == 1 and not addresses:
                one: list[asyncpg.Record] = await conn.fetch(
                    QUERIES["read_contact"], location_id, contact_ids[0]
                )
                return one
            rows: list[asyncpg.Record] = await conn.fetch(
                QUERIES["read_contacts"], location_id, list(contact_ids), channels, values
            )
            return rows

        rows: list[asyncpg.Record] = await self._read(read)
        heads: dict[str, asyncpg.Record] = {}
        blocks: dict[str, list[Block]] = {}
        suppressions: list[AddressSuppression] = []
        for row in rows:
            kind = row["kind"]
            if kind == "c":
                heads[row["contact_id"]] = row
            elif kind == "b":
                blocks.setdefault(row["contact_id"], []).append(_block(row))
            else:
                suppressions.append(_suppression(row, channel_column="scope"))
        shown = tuple(suppressions)
        contacts: dict[str, ContactState] = {}
        last_seqs: dict[str, int] = {}
        for contact_id in contact_ids:
            head = heads.get(contact_id)
            contacts[contact_id] = ContactState(
                location_id,
                contact_id,
                tuple(blocks.get(contact_id, ())),
                head["version"] if head else 0,
                head["updated_at"] if head else None,
                shown,
            )
            last_seqs[contact_id] = head["last_seq"] if head else 0
        return ContactsRead(contacts, last_seqs, shown)

    async def list_history(
        self, location_id: str, contact_id: str, before_seq: int, limit: int
    ) -> list[HistoryRow]:
        """A contact's changes, and those of the suppressions its events set (whichever
        contact's request made them), with a sequence number below ``before_seq``, newest
        first."""

        async def read(conn: Any) -> list[HistoryRow]:
            rows = await conn.fetch(
                QUERIES["list_history"], location_id, contact_id, before_seq, limit
            )
            return [history_row(r) for r in rows]

        result: list[HistoryRow] = await self._read(read)
        return result

    async def list_address_history(
        self, location_id: str, channel: Channel, address: str, before_seq: int, limit: int
    ) -> list[HistoryRow]:
        """Every change of the suppressions of (``channel``, ``address``) with a sequence
        number below ``before_seq``, newest first."""

        async def read(conn: Any) -> list[HistoryRow]:
            rows = await conn.fetch(
                QUERIES["list_address_history"],
                location_id,
                channel.value,
                address,
                before_seq,
                limit,
            )
            return [history_row(r) for r in rows]

        result: list[HistoryRow] = await self._read(read)
        return result

    async def get_settings(self, location_id: str) -> KeywordSettings:
        async def read(conn: Any) -> KeywordSettings:
            row = await conn.fetchrow(QUERIES["get_settings"], location_id)
            if row is None:
                return KeywordSettings()
            return KeywordSettings(
                frozenset(row["extra_opt_out_words"]),
                frozenset(row["extra_opt_in_words"]),
                row["detect_revocation_phrases"],
            )

        result: KeywordSettings = await self._read(read)
        return result

    async def put_settings(self, location_id: str, settings: KeywordSettings) -> None:
        with translate_errors():
            async with self._connection() as conn:
                await conn.execute(
                    QUERIES["put_settings"],
                    location_id,
                    sorted(settings.extra_opt_out_words),
                    sorted(settings.extra_opt_in_words),
                    settings.detect_revocation_phrases,
                )

    async def prune_idempotency_keys(self) -> int:
        with translate_errors():
            async with self._connection(self._timeout * 6) as conn:
                status: str = await conn.execute(
                    QUERIES["prune_idempotency_keys"], self._idempotency_ttl
                )
        return int(status.split()[-1])

    async def write(
        self,
        location_id: str,
        contact_id: str,
        plan: Plan,
        meta: ChangeMeta,
        expected_version: int | None = None,
        addresses: Addresses = (),
        idempotency: Idempotency | None = None,
    ) -> WriteResult | Replay:
        """Lock the contact (and ``addresses``), run ``plan`` on its current state, persist the
        steps and log them, all in one transaction.

        Nothing is written when the plan raises. Retried on serialization failures, deadlocks
        and connections lost before COMMIT was sent; never on cancellation.
        """
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            committing = _Flag()
            try:
                with translate_errors():
                    async with self._connection() as conn:
                        async with conn.transaction():
                            outcome = await self._write(
                                conn,
                                location_id,
                                contact_id,
                                plan,
                                meta,
                                expected_version,
                                addresses,
                                idempotency,
                                committing,
                            )
                            nothing = isinstance(outcome, WriteResult) and not outcome.steps
                            if nothing and idempotency is None:
                                assert isinstance(outcome, WriteResult)
                                raise _NothingToWrite(outcome)
                        return outcome
            except _NothingToWrite as nothing:
                return nothing.result
            except RETRYABLE_TRANSACTION_ERRORS:
                if attempt == _TRANSACTION_ATTEMPTS:
                    raise Unavailable("database kept aborting the transaction; retry") from None
            except Unavailable as error:
                # A connection lost before COMMIT was sent wrote nothing: retry on another one.
                lost = isinstance(error.__cause__, CONNECTION_LOST)
                if committing.value or not lost or attempt == _TRANSACTION_ATTEMPTS:
                    raise
        raise AssertionError("unreachable")

    async def _write(
        self,
        conn: Any,
        location_id: str,
        contact_id: str,
        plan: Plan,
        meta: ChangeMeta,
        expected_version: int | None,
        addresses: Addresses,
        idempotency: Idempotency | None,
        committing: _Flag,
    ) -> WriteResult | Replay:
        if idempotency is not None:
            replay = await self._claim(conn, location_id, idempotency)
            if replay is not None:
                return replay
        contact = await conn.fetchrow(QUERIES["lock_contact"], location_id, contact_id)
        if contact is None:
            await conn.execute(QUERIES["ensure_contact"], location_id, contact_id)
            contact = await conn.fetchrow(QUERIES["lock_contact"], location_id, contact_id)
        rows = await conn.fetch(QUERIES["get_blocks"], location_id, contact_id)
        if addresses:
            channels, values = _address_columns(addresses)
            await conn.execute(QUERIES["lock_addresses"], location_id, channels, values)
        suppressions = await _suppressions(conn, location_id, addresses)
        blocks: list[Block] = [_block(row) for row in rows]
        current = list(suppressions)
        version: int = contact["version"]
        now: dt.datetime = contact["now"]
        before = ContactState(
            location_id, contact_id, tuple(blocks), version, contact["updated_at"], suppressions
        )
        if expected_version is not None and expected_version != version:
            raise VersionMismatch(expected_version, version)
        planned = plan(before, now)
        detail = planned.detail if isinstance(planned, Decision) else None
        steps = tuple(planned.steps if isinstance(planned, Decision) else planned)
        last_seq: int = contact["last_seq"]
        if steps:
            log: dict[str, list[Any]] = {k: [] for k in _LOG_COLUMNS}
            for step in steps:
                target = step.target
                if isinstance(target, Block):
                    key = (target.direction.value, scope_name(target.scope), target.reason.value)
                    if step.enabled:
                        await conn.execute(
                            QUERIES["insert_block"],
                            location_id,
                            contact_id,
                            *key,
                            target.source.value,
                            target.actor_id,
                            target.note,
                            target.evidence,
                            target.provider_detail,
                            target.since or now,
                            target.address,
                        )
                        blocks.append(target)
                    else:
                        await conn.execute(QUERIES["delete_block"], location_id, contact_id, *key)
                        blocks = [b for b in blocks if b.key != target.key]
                    address = owner = ""
                else:
                    skey = (target.channel.value, target.address, target.reason.value)
                    if step.enabled:
                        await conn.execute(
                            QUERIES["insert_suppression"],
                            location_id,
                            *skey,
                            target.source.value,
                            target.contact_id,
                            target.actor_id,
                            target.note,
                            target.evidence,
                            target.provider_detail,
                            target.since or now,
                        )
                        current.append(target)
                    else:
                        await conn.execute(QUERIES["delete_suppression"], location_id, *skey)
                        current = [s for s in current if s.key != target.key]
                    key = (Direction.OUTBOUND.value, target.channel.value, target.reason.value)
                    address = target.address
                    owner = target.contact_id
                version += 1
                summary = summarize(blocks)
                log["version"].append(version)
                log["direction"].append(key[0])
                log["scope"].append(key[1])
                log["enabled"].append(step.enabled)
                log["reason"].append(key[2])
                log["outbound"].append(summary.outbound.value)
                log["inbound"].append(summary.inbound.value)
                log["blocked"].append(",".join(c.value for c in summary.blocked_channels))
                log["address"].append(address)
                log["owner"].append(owner)
            last_seq = await conn.fetchval(
                QUERIES["append_changes"],
                location_id,
                contact_id,
                *(log[k] for k in _LOG_COLUMNS[:-2]),
                meta.source.value,
                meta.actor_id,
                meta.note,
                meta.evidence,
                meta.provider_detail,
                now,
                version,
                log["address"],
                log["owner"],
                meta.caller,
            )
        after = ContactState(
            location_id,
            contact_id,
            tuple(blocks),
            version,
            now if steps else contact["updated_at"],
            tuple(current),
        )
        result = WriteResult(after, steps, last_seq, detail)
        if idempotency is not None:
            await conn.execute(
                QUERIES["store_idempotent_response"],
                location_id,
                idempotency.key,
                idempotency.respond(result),
            )
        committing.value = True
        return result

    async def _claim(self, conn: Any, location_id: str, claim: Idempotency) -> Replay | None:
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
        if row["method"] != claim.method or bytes(row["request_hash"]) != claim.request_hash:
            raise InvalidArgument.one(
                "idempotency_key",
                f"{claim.key!r} was already used for a different request "
                f"({row['method']}); use a new key for a new request",
            )
        return Replay(bytes(row["response"]))


def _terminate(conn: Any) -> None:
    """Drop a pooled connection at its deadline, unless the pool took it back meanwhile (its
    proxy then refuses, and the connection is another caller's)."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()


class _NothingToWrite(Exception):
    """Control flow: roll back (nothing to keep) and answer with the unchanged state."""

    def __init__(self, result: WriteResult) -> None:
        self.result = result


class _Flag:
    def __init__(self) -> None:
        self.value = False


_LOG_COLUMNS = (
    "version",
    "direction",
    "scope",
    "enabled",
    "reason",
    "outbound",
    "inbound",
    "blocked",
    "address",
    "owner",
)


def _address_columns(addresses: Addresses) -> tuple[list[str], list[str]]:
    return [c.value for c, _ in addresses], [a for _, a in addresses]


async def _suppressions(
    conn: Any, location_id: str, addresses: Addresses
) -> tuple[AddressSuppression, ...]:
    if not addresses:
        return ()
    channels, values = _address_columns(addresses)
    rows = await conn.fetch(QUERIES["get_suppressions"], location_id, channels, values)
    return tuple(_suppression(r) for r in rows)


def _suppression(r: asyncpg.Record, channel_column: str = "channel") -> AddressSuppression:
    return AddressSuppression(
        channel=Channel(r[channel_column]),
        address=r["address"],
        reason=Reason(r["reason"]),
        source=Source(r["source"]),
        contact_id=r["contact_id"],
        actor_id=r["actor_id"],
        note=r["note"],
        evidence=r["evidence"],
        provider_detail=r["provider_detail"],
        since=r["since"],
    )


def _block(row: asyncpg.Record) -> Block:
    return Block(
        direction=Direction(row["direction"]),
        scope=parse_scope(row["scope"]),
        reason=Reason(row["reason"]),
        source=Source(row["source"]),
        actor_id=row["actor_id"],
        note=row["note"],
        evidence=row["evidence"],
        provider_detail=row["provider_detail"],
        since=row["since"],
        address=row["address"],
    )


def change_row(r: asyncpg.Record) -> ChangeRow:
    return ChangeRow(
        seq=r["seq"],
        location_id=r["location_id"],
        contact_id=r["contact_id"],
        direction=Direction(r["direction"]),
        scope=parse_scope(r["scope"]),
        enabled=r["enabled"],
        reason=Reason(r["reason"]),
        source=Source(r["source"]),
        actor_id=r["actor_id"],
        time=r["created_at"],
        outbound=r["outbound"],
        inbound=r["inbound"],
        blocked_channels=tuple(Channel(c) for c in r["blocked_channels"]),
        version=r["version"],
        address=r["address"],
        owner_contact_id=r["owner_contact_id"],
        caller=r["caller"],
    )


def history_row(r: asyncpg.Record) -> HistoryRow:
    return HistoryRow(
        seq=r["seq"],
        time=r["created_at"],
        version=r["version"],
        enabled=r["enabled"],
        direction=Direction(r["direction"]),
        scope=parse_scope(r["scope"]),
        reason=Reason(r["reason"]),
        source=Source(r["source"]),
        actor_id=r["actor_id"],
        note=r["note"],
        evidence=r["evidence"],
        provider_detail=r["provider_detail"],
        address=r["address"],
        contact_id=r["contact_id"],
        owner_contact_id=r["owner_contact_id"],
        caller=r["caller"],
    )
