"""The one module that runs queries. Reads snapshot a contact; writes run a pure plan inside
one transaction that locks the contact, applies the plan's steps and appends them to the
change log.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from dnd_server.domain.errors import Unavailable, VersionMismatch
from dnd_server.domain.model import (
    Block,
    ContactState,
    Direction,
    Reason,
    Source,
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


@dataclass(frozen=True, slots=True)
class Step:
    """One effective change: a block added (enabled) or removed."""

    enabled: bool
    block: Block


@dataclass(frozen=True, slots=True)
class ChangeMeta:
    """Who makes a change and what they say about it; recorded on every log row."""

    source: Source
    actor_id: str = ""
    note: str = ""
    evidence: str = ""
    provider_detail: str = ""


# A plan decides, from the locked current state and the database's clock, which steps to take.
Plan = Callable[[ContactState, dt.datetime], Sequence[Step]]


@dataclass(frozen=True, slots=True)
class WriteResult:
    state: ContactState
    steps: tuple[Step, ...]
    # Sequence number of the contact's last change (the write's own when it changed something).
    last_seq: int


class Store:
    def __init__(self, pool: asyncpg.Pool, timeout: float) -> None:
        self._pool = pool
        self._timeout = timeout

    async def ping(self) -> None:
        with translate_errors():
            async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
                await conn.fetchval(QUERIES["ping"])

    async def head_seq(self) -> int:
        with translate_errors():
            async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
                seq: int = await conn.fetchval(QUERIES["head_seq"])
                return seq

    async def get_state(self, location_id: str, contact_id: str) -> tuple[ContactState, int]:
        """The contact's state and the sequence number of its last change.

        Retried once on a fresh connection when the one used turns out to be lost.
        """
        for attempt in (1, 2):
            try:
                with translate_errors():
                    async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
                        return await self._read_state(conn, location_id, contact_id)
            except Unavailable as error:
                if attempt == 2 or not isinstance(error.__cause__, CONNECTION_LOST):
                    raise
        raise AssertionError("unreachable")

    async def _read_state(
        self,
        conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
        location_id: str,
        contact_id: str,
    ) -> tuple[ContactState, int]:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            contact = await conn.fetchrow(QUERIES["get_contact"], location_id, contact_id)
            if contact is None:
                return ContactState(location_id, contact_id, (), 0, None), 0
            rows = await conn.fetch(QUERIES["get_blocks"], location_id, contact_id)
        state = ContactState(
            location_id,
            contact_id,
            tuple(_block(row) for row in rows),
            contact["version"],
            contact["updated_at"],
        )
        return state, contact["last_seq"]

    async def write(
        self,
        location_id: str,
        contact_id: str,
        plan: Plan,
        meta: ChangeMeta,
        expected_version: int | None = None,
    ) -> WriteResult:
        """Lock the contact, run ``plan`` on its current state, persist the steps and log them.

        Nothing is written when the plan raises or takes no step. Retried on serialization
        failures and deadlocks; never on cancellation.
        """
        for attempt in range(1, _TRANSACTION_ATTEMPTS + 1):
            committing = _Flag()
            try:
                with translate_errors():
                    async with asyncio.timeout(self._timeout), self._pool.acquire() as conn:
                        return await self._write(
                            conn, location_id, contact_id, plan, meta, expected_version, committing
                        )
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
        conn: asyncpg.pool.PoolConnectionProxy[asyncpg.Record],
        location_id: str,
        contact_id: str,
        plan: Plan,
        meta: ChangeMeta,
        expected_version: int | None,
        committing: _Flag,
    ) -> WriteResult:
        try:
            async with conn.transaction():
                contact = await conn.fetchrow(QUERIES["lock_contact"], location_id, contact_id)
                if contact is None:
                    await conn.execute(QUERIES["ensure_contact"], location_id, contact_id)
                    contact = await conn.fetchrow(QUERIES["lock_contact"], location_id, contact_id)
                assert contact is not None
                rows = await conn.fetch(QUERIES["get_blocks"], location_id, contact_id)
                blocks = [_block(row) for row in rows]
                version: int = contact["version"]
                now: dt.datetime = contact["now"]
                before = ContactState(
                    location_id, contact_id, tuple(blocks), version, contact["updated_at"]
                )
                if expected_version is not None and expected_version != version:
                    raise VersionMismatch(expected_version, version)
                steps = tuple(plan(before, now))
                if not steps:
                    raise _NothingToWrite(WriteResult(before, (), contact["last_seq"]))

                log: dict[str, list[Any]] = {k: [] for k in _LOG_COLUMNS}
                for step in steps:
                    block = step.block
                    key = (block.direction.value, scope_name(block.scope), block.reason.value)
                    if step.enabled:
                        await conn.execute(
                            QUERIES["insert_block"],
                            location_id,
                            contact_id,
                            *key,
                            block.source.value,
                            block.actor_id,
                            block.note,
                            block.evidence,
                            block.provider_detail,
                            block.since or now,
                        )
                        blocks.append(block)
                    else:
                        await conn.execute(QUERIES["delete_block"], location_id, contact_id, *key)
                        blocks = [b for b in blocks if b.key != block.key]
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
                last_seq: int = await conn.fetchval(
                    QUERIES["append_changes"],
                    location_id,
                    contact_id,
                    *(log[k] for k in _LOG_COLUMNS),
                    meta.source.value,
                    meta.actor_id,
                    meta.note,
                    meta.evidence,
                    meta.provider_detail,
                    now,
                    version,
                )
                committing.value = True
        except _NothingToWrite as nothing:
            return nothing.result
        after = ContactState(location_id, contact_id, tuple(blocks), version, now)
        return WriteResult(after, steps, last_seq)


class _Flag:
    value = False


class _NothingToWrite(Exception):
    """Control flow: roll back and answer with the unchanged state."""

    def __init__(self, result: WriteResult) -> None:
        self.result = result


_LOG_COLUMNS = (
    "version",
    "direction",
    "scope",
    "enabled",
    "reason",
    "outbound",
    "inbound",
    "blocked",
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
    )
