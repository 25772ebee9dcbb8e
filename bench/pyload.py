"""Python load generators, each run in processes of its own (``spawn``: no gRPC state crosses a
fork), for what h2load cannot do: SetDnd on many distinct contacts, the raw asyncpg
baselines, the stale-read probe, and the fallback load when h2load is not installed.

Every process gets a wall-clock ``start_at`` (so processes started one after another measure
the same window), sets up its connections, waits for ``start_at``, runs ``warmup`` seconds
unmeasured and then ``duration`` measured seconds, and returns a plain dict.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

# Channel option: a channel of its own TCP connection (channels to one target share one
# connection by default). With DND_WORKERS=N the kernel spreads connections, not calls, over
# the workers, so every client opens several.
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
RPC_TIMEOUT = 10.0


class Window:
    """The measured window [begin, end) in wall-clock seconds."""

    def __init__(self, start_at: float, warmup: float, duration: float) -> None:
        self.start_at = start_at
        self.begin = start_at + warmup
        self.end = self.begin + duration
        self.late = 0.0

    async def wait_start(self) -> None:
        delay = self.start_at - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        else:
            self.late = -delay

    def counts(self, at: float) -> bool:
        return self.begin <= at < self.end

    def report(self, ops: int, **more: Any) -> dict[str, Any]:
        seconds = self.end - self.begin
        return {"ops": ops, "seconds": seconds, "rate": ops / seconds, "late_s": self.late, **more}


# --- running processes -------------------------------------------------------------------------


class Processes:
    """Functions of this module run in N fresh processes; results collected as dicts."""

    def __init__(self, count: int) -> None:
        self._pool = ProcessPoolExecutor(
            max_workers=count, mp_context=multiprocessing.get_context("spawn")
        )
        self._futures: list[Future[dict[str, Any]]] = []

    def submit(self, fn: Callable[..., dict[str, Any]], *args: Any) -> None:
        self._futures.append(self._pool.submit(fn, *args))

    def results(self, timeout: float) -> list[dict[str, Any]]:
        try:
            return [f.result(timeout=timeout) for f in self._futures]
        finally:
            self.close()

    def close(self) -> None:
        for f in self._futures:
            f.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


def run_parallel(
    fn: Callable[..., dict[str, Any]], arg_lists: Sequence[Sequence[Any]], timeout: float
) -> list[dict[str, Any]]:
    procs = Processes(len(arg_lists))
    for args in arg_lists:
        procs.submit(fn, *args)
    return procs.results(timeout)


def merge(results: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum of the processes' counts and rates (their windows coincide)."""
    errors: Counter[str] = Counter()
    for r in results:
        errors.update(r.get("errors", {}))
    merged: dict[str, Any] = {
        "ops": sum(r["ops"] for r in results),
        "rate": sum(r["rate"] for r in results),
        "seconds": max(r["seconds"] for r in results),
        "processes": len(results),
        "max_late_s": round(max(r["late_s"] for r in results), 3),
        "errors": dict(errors),
    }
    for key in ("unchanged", "sizes_bad"):
        if any(key in r for r in results):
            merged[key] = sum(r.get(key, 0) for r in results)
    if any("latencies_ms" in r for r in results):
        merged["latencies_ms"] = [x for r in results for x in r.get("latencies_ms", [])]
    return merged


# --- SetDnd -----------------------------------------------------------------------------------


def _set_sms(location: str, contact: str, enable: bool, actor: str) -> Any:
    from dnd.v1 import dnd_pb2 as pb

    return pb.SetDndRequest(
        location_id=location,
        contact_id=contact,
        action=pb.DND_ACTION_ENABLE if enable else pb.DND_ACTION_DISABLE,
        direction=pb.DIRECTION_OUTBOUND,
        scope=pb.Scope(channel=pb.CHANNEL_SMS),
        source=pb.SOURCE_USER,
        actor_id=actor,
    )


def setdnd_load(
    addr: str,
    location: str,
    proc: int,
    tasks: int,
    channels: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """Closed loop: ``tasks`` callers, each toggling outbound SMS DND on 4 contacts of its own
    (enable c0..c3, disable c0..c3, ...), so every call is an effective change."""
    return asyncio.run(
        _setdnd_load(addr, location, proc, tasks, channels, start_at, warmup, duration)
    )


async def _setdnd_load(
    addr: str,
    location: str,
    proc: int,
    tasks: int,
    channels: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    import grpc
    from dnd.v1 import dnd_pb2_grpc

    window = Window(start_at, warmup, duration)
    chans = [grpc.aio.insecure_channel(addr, options=OWN_CONNECTION) for _ in range(channels)]
    stubs = [dnd_pb2_grpc.DndServiceStub(c) for c in chans]
    for chan in chans:
        await chan.channel_ready()
    ops = 0
    unchanged = 0
    errors: Counter[str] = Counter()

    async def writer(t: int) -> None:
        nonlocal ops, unchanged
        stub = stubs[t % len(stubs)]
        enabled = [False] * 4
        generation = [0] * 4
        i = 0
        while time.time() < window.end:
            k = i % 4
            i += 1
            contact = f"p{proc}-t{t}-c{k}-g{generation[k]}"
            request = _set_sms(location, contact, not enabled[k], "hot-bench")
            try:
                answer = await stub.SetDnd(request, timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1
                generation[k] += 1  # state unknown: carry on with a fresh contact
                enabled[k] = False
                continue
            enabled[k] = not enabled[k]
            if window.counts(time.time()):
                if answer.changed:
                    ops += 1
                else:
                    unchanged += 1

    await window.wait_start()
    await asyncio.gather(*(writer(t) for t in range(tasks)))
    for chan in chans:
        await chan.close()
    return window.report(ops, unchanged=unchanged, errors=dict(errors))


def pg_setdnd_load(
    url: str,
    location: str,
    proc: int,
    tasks: int,
    pool_size: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """The raw asyncpg baseline of SetDnd: the statements the server's write runs, in one
    transaction per toggle, with the same contacts pattern as ``setdnd_load``."""
    return asyncio.run(
        _pg_setdnd_load(url, location, proc, tasks, pool_size, start_at, warmup, duration)
    )


async def _pg_setdnd_load(
    url: str,
    location: str,
    proc: int,
    tasks: int,
    pool_size: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    import asyncpg
    from dnd_server.storage.sql import QUERIES

    window = Window(start_at, warmup, duration)
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    assert pool is not None
    ops = 0
    errors: Counter[str] = Counter()
    from dnd_server.domain.model import Block, Channel, Direction, Reason, Source
    from dnd_server.lanes import DEFAULT_LANES, lane_of
    from dnd_server.storage.rows import state_document

    lock, relock, append = (
        QUERIES["lock_contact"],
        QUERIES["lock_contact_row"],
        QUERIES["append_changes"],
    )
    lane = lane_of(location, DEFAULT_LANES)

    async def toggle(contact: str, enable: bool) -> None:
        # The server's write: the contact's row locked and read (created when missing), then
        # one statement with its new state and the change.
        async with pool.acquire() as conn, conn.transaction():
            row = await conn.fetchrow(lock, location, contact)
            if row is None:
                row = await conn.fetchrow(relock, location, contact)
            assert row is not None
            now = row["now"]
            version = row["version"] + 1
            blocks = (
                [Block(Direction.OUTBOUND, Channel.SMS, Reason.MANUAL, Source.USER, "hot-bench")]
                if enable
                else []
            )
            await conn.fetchval(
                append, location, contact, [version], ["OUTBOUND"], ["SMS"], [enable],
                ["MANUAL"], ["PARTIAL" if enable else "OFF"], ["OFF"], ["SMS" if enable else ""],
                "USER", "hot-bench", "", "", "", now, version, [""], [""], "", ["BLOCK"], [None],
                lane, state_document(blocks, (), now), "{}",
            )  # fmt: skip

    async def writer(t: int) -> None:
        nonlocal ops
        enabled = [False] * 4
        generation = [0] * 4
        i = 0
        while time.time() < window.end:
            k = i % 4
            i += 1
            contact = f"p{proc}-t{t}-c{k}-g{generation[k]}"
            try:
                await toggle(contact, not enabled[k])
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as error:
                errors[type(error).__name__] += 1
                generation[k] += 1
                enabled[k] = False
                continue
            enabled[k] = not enabled[k]
            if window.counts(time.time()):
                ops += 1

    await window.wait_start()
    await asyncio.gather(*(writer(t) for t in range(tasks)))
    await pool.close()
    return window.report(ops, errors=dict(errors))


# --- raw lookups ------------------------------------------------------------------------------

CONTACT_ROW = (
    "SELECT version, updated_at, last_seq FROM dnd_contacts "
    "WHERE location_id = $1 AND contact_id = $2"
)


def pg_lookup_load(
    url: str,
    statement: str,
    location: str,
    contact: str,
    tasks: int,
    pool_size: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """Closed loop of ``tasks`` callers on a pool: ``contact_row`` (a single-row primary-key
    lookup) or ``read_contacts`` (the server's own read statement of one contact without an
    address, ``read_contact``) of one contact."""
    return asyncio.run(
        _pg_lookup_load(
            url, statement, location, contact, tasks, pool_size, start_at, warmup, duration
        )
    )


async def _pg_lookup_load(
    url: str,
    statement: str,
    location: str,
    contact: str,
    tasks: int,
    pool_size: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    import asyncpg
    from dnd_server.storage.sql import QUERIES

    window = Window(start_at, warmup, duration)
    pool = await asyncpg.create_pool(url, min_size=pool_size, max_size=pool_size)
    assert pool is not None
    args: tuple[Any, ...]
    if statement == "contact_row":
        query, args = CONTACT_ROW, (location, contact)
    else:
        query, args = QUERIES["read_contact"], (location, contact)
    ops = 0
    rows_bad = 0
    errors: Counter[str] = Counter()

    async def caller() -> None:
        nonlocal ops, rows_bad
        while time.time() < window.end:
            try:
                rows = await pool.fetch(query, *args)
            except (asyncpg.PostgresError, OSError, asyncpg.InterfaceError) as error:
                errors[type(error).__name__] += 1
                continue
            if window.counts(time.time()):
                ops += 1
                rows_bad += not rows

    await window.wait_start()
    await asyncio.gather(*(caller() for _ in range(tasks)))
    await pool.close()
    return window.report(ops, errors=dict(errors), sizes_bad=rows_bad)


# --- raw gRPC calls (the fallback when h2load is absent) --------------------------------------


def grpc_raw_closed(
    addr: str,
    method: str,
    payload: bytes,
    expect_len: int,
    tasks: int,
    channels: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """Closed loop of one pre-encoded request (grpcio, bytes in and out)."""
    return asyncio.run(
        _grpc_raw(
            addr, method, payload, expect_len, tasks, channels, start_at, warmup, duration, 0.0
        )
    )


def grpc_raw_paced(
    addr: str,
    method: str,
    payload: bytes,
    expect_len: int,
    rate: float,
    channels: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """Open loop: one call every 1/rate s (random phase), whatever the answers do; latency of
    each call from its send to its answer."""
    return asyncio.run(
        _grpc_raw(addr, method, payload, expect_len, 0, channels, start_at, warmup, duration, rate)
    )


async def _grpc_raw(
    addr: str,
    method: str,
    payload: bytes,
    expect_len: int,
    tasks: int,
    channels: int,
    start_at: float,
    warmup: float,
    duration: float,
    rate: float,
) -> dict[str, Any]:
    import grpc

    window = Window(start_at, warmup, duration)
    chans = [grpc.aio.insecure_channel(addr, options=OWN_CONNECTION) for _ in range(channels)]
    calls: list[Any] = [c.unary_unary(method) for c in chans]
    for chan in chans:
        await chan.channel_ready()
    ops = 0
    sizes_bad = 0
    errors: Counter[str] = Counter()
    latencies: list[float] = []

    async def one(i: int) -> None:
        nonlocal ops, sizes_bad
        sent = time.perf_counter()
        try:
            answer = await calls[i % len(calls)](payload, timeout=RPC_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            errors[error.code().name] += 1
            return
        took = time.perf_counter() - sent
        if window.counts(time.time()):
            ops += 1
            sizes_bad += len(answer) + 5 != expect_len
            if rate:
                latencies.append(took * 1000)

    async def closed(t: int) -> None:
        while time.time() < window.end:
            await one(t)

    await window.wait_start()
    if rate:
        pending = []
        begin = time.time() + random.random() / rate
        i = 0
        while True:
            due = begin + i / rate
            if due >= window.end:
                break
            delay = due - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            pending.append(asyncio.create_task(one(i)))
            i += 1
        await asyncio.gather(*pending)
    else:
        await asyncio.gather(*(closed(t) for t in range(tasks)))
    for chan in chans:
        await chan.close()
    return window.report(ops, errors=dict(errors), sizes_bad=sizes_bad, latencies_ms=latencies)


# --- stale reads ------------------------------------------------------------------------------


def stale_probe(
    addr_a: str,
    addr_b: str,
    location: str,
    probers: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """Read-your-write across replicas. Each prober loops over fresh contacts:

    1. CheckSend SMS on replica B (no cursor): allowed, and now cached by B;
    2. SetDnd enable SMS on replica A: returns the write's cursor;
    3. at once on B, on the connection of step 1: CheckSend with ``min_cursor`` = that cursor
       (must say denied) and CheckSend without it (may still say allowed while B's cache has
       not seen the change: the propagation window).
    """
    return asyncio.run(_stale_probe(addr_a, addr_b, location, probers, start_at, warmup, duration))


async def _stale_probe(
    addr_a: str,
    addr_b: str,
    location: str,
    probers: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    import grpc
    from dnd.v1 import dnd_pb2 as pb
    from dnd.v1 import dnd_pb2_grpc

    window = Window(start_at, 0.0, warmup + duration)
    chans = [grpc.aio.insecure_channel(addr_a, options=OWN_CONNECTION) for _ in range(2)]
    chans += [grpc.aio.insecure_channel(addr_b, options=OWN_CONNECTION) for _ in range(probers)]
    for chan in chans:
        await chan.channel_ready()
    writers = [dnd_pb2_grpc.DndServiceStub(c) for c in chans[:2]]
    readers = [dnd_pb2_grpc.DndServiceStub(c) for c in chans[2:]]
    counts: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    gaps_ms: list[float] = []

    async def prober(p: int) -> None:
        reader, writer = readers[p], writers[p % 2]
        n = 0
        while time.time() < window.end:
            contact = f"stale-{p}-{n}"
            n += 1
            check = pb.CheckSendRequest(
                location_id=location, contact_id=contact, channel=pb.CHANNEL_SMS
            )
            try:
                before = await reader.CheckSend(check, timeout=RPC_TIMEOUT)
                if not before.allowed:
                    counts["setup_not_allowed"] += 1
                    continue
                written = await writer.SetDnd(
                    _set_sms(location, contact, True, "stale-probe"), timeout=RPC_TIMEOUT
                )
                acked = time.perf_counter()
                fresh = pb.CheckSendRequest()
                fresh.CopyFrom(check)
                fresh.min_cursor = written.cursor
                with_cursor, without = await asyncio.gather(
                    reader.CheckSend(fresh, timeout=RPC_TIMEOUT),
                    reader.CheckSend(check, timeout=RPC_TIMEOUT),
                )
                gaps_ms.append((time.perf_counter() - acked) * 1000)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1
                continue
            counts["probes"] += 1
            counts["allowed_with_min_cursor"] += with_cursor.allowed
            counts["allowed_without_min_cursor"] += without.allowed
            counts["writes_unchanged"] += not written.changed

    await window.wait_start()
    await asyncio.gather(*(prober(p) for p in range(probers)))
    for chan in chans:
        await chan.close()
    gaps_ms.sort()
    report = window.report(counts["probes"], errors=dict(errors), **counts)
    report["read_after_ack_ms_p50"] = round(gaps_ms[len(gaps_ms) // 2], 3) if gaps_ms else None
    return report
