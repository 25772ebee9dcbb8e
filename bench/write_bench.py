"""Write-path benchmark: the rate of a write against raw PostgreSQL baselines measured in the
same run, and what watch subscribers cost the writes.

Run from the repository root::

    .venv/bin/python bench/write_bench.py            # defaults: ~2.5 minutes
    .venv/bin/python bench/write_bench.py --help

Every figure comes from 16 connections (or callers) on 16 distinct locations, closed loop:

(a) free: a raw asyncpg transaction updating one contact row and inserting one change row;
(b) single log: the same with the change's sequence number taken from one shared head row
    (the change log of earlier versions: every write holds that row until it commits);
(c) SetDnd's own SQL: the statements the server's store issues for one SetDnd, recorded from
    the store itself (run in this process against the same database) and replayed by asyncpg;
(d) the SetDnd RPC, through one server process.

Then the change stream: the closed-loop SetDnd rate with 100 subscribers (each watching the 16
locations, several events per message) against (d), and commit-to-subscriber latency (from a
write's answer to each subscriber's receipt) at 200 paced writes/s.

It starts its own PostgreSQL (embedded, or a fresh database in ``DND_BENCH_DATABASE_URL``) and
server process, and stops both at the end, on error and on Ctrl-C. Figures go to stdout and to
``bench/results/write-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import signal
import sys
import time
import uuid
import warnings
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import grpc
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from infra import Database
from watch_bench import CpuMeter, Server, git_state, percentile, set_sms_dnd

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
RPC_TIMEOUT = 10.0
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]
# Wall-clock time: the subscribers run in processes of their own and their arrival times are
# compared with the writers' answer times.
clock = time.time

# Who used the CPU in each measured window (set once the server runs): server, postgres,
# bench, machine (cores).
METER: CpuMeter | None = None

TARGETS = {
    "own_sql_vs_free": 0.3,
    "rpc_vs_own_sql": 0.7,
    "watch_vs_raw": 0.5,
    "latency_p99_ms": 50.0,
}


def progress(message: str) -> None:
    print(f"[write-bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 3)


async def cores_between(begin: float, end: float) -> dict[str, float]:
    """The cores each part used from ``begin`` to ``end`` (wall clock; run beside a phase)."""
    if METER is None:
        return {}
    await asyncio.sleep(max(0.0, begin - clock()))
    before = METER.snapshot()
    await asyncio.sleep(max(0.0, end - clock()))
    return CpuMeter.cores(before, METER.snapshot())


# --- raw PostgreSQL baselines ----------------------------------------------------------------

BASELINE_SCHEMA = """
CREATE TABLE IF NOT EXISTS bench_contacts (
    location_id text NOT NULL,
    contact_id  text NOT NULL,
    version     bigint NOT NULL DEFAULT 0,
    updated_at  timestamptz,
    last_seq    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (location_id, contact_id)
);
CREATE TABLE IF NOT EXISTS bench_changes (
    seq         bigint,
    location_id text NOT NULL,
    contact_id  text NOT NULL,
    version     bigint NOT NULL,
    enabled     boolean NOT NULL,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (location_id, contact_id, version)
);
CREATE TABLE IF NOT EXISTS bench_head (singleton boolean PRIMARY KEY DEFAULT true, seq bigint);
INSERT INTO bench_head (seq) VALUES (0) ON CONFLICT DO NOTHING;
"""

FREE_UPDATE = (
    "UPDATE bench_contacts SET version = version + 1, updated_at = now() "
    "WHERE location_id = $1 AND contact_id = $2 RETURNING version"
)
FREE_INSERT = (
    "INSERT INTO bench_changes (location_id, contact_id, version, enabled, created_at) "
    "VALUES ($1, $2, $3, $4, now())"
)
SINGLE_LOG_INSERT = (
    "WITH head AS (UPDATE bench_head SET seq = seq + 1 RETURNING seq) "
    "INSERT INTO bench_changes (seq, location_id, contact_id, version, enabled, created_at) "
    "SELECT head.seq, $1, $2, $3, $4, now() FROM head"
)


async def closed_loop_pg(
    url: str,
    connections: int,
    seconds: float,
    prepare: Callable[[asyncpg.Connection, int], Awaitable[Any]],
    one: Callable[[asyncpg.Connection, int, int, Any], Awaitable[None]],
) -> dict[str, Any]:
    """``connections`` connections, each its own location (index), running ``one`` in a loop
    for ``seconds`` after a short warm-up: transactions per second."""
    conns = [await asyncpg.connect(url) for _ in range(connections)]
    try:
        states = [await prepare(c, i) for i, c in enumerate(conns)]
        counts = [0] * connections
        errors = 0
        warm_until = clock() + 1.0
        stop_at = warm_until + seconds

        async def run(i: int) -> None:
            nonlocal errors
            n = 0
            while clock() < stop_at:
                try:
                    await one(conns[i], i, n, states[i])
                except asyncpg.PostgresError:
                    errors += 1
                n += 1
                if clock() >= warm_until:
                    counts[i] += 1

        meter = asyncio.create_task(cores_between(warm_until, stop_at))
        await asyncio.gather(*(run(i) for i in range(connections)))
        total = sum(counts)
        return {
            "tx": total,
            "seconds": seconds,
            "rate": round(total / seconds, 1),
            "errors": errors,
            "cores": await meter,
        }
    finally:
        for conn in conns:
            await conn.close()


async def baseline_free(
    url: str, connections: int, seconds: float, shared_head: bool
) -> dict[str, Any]:
    tag = uuid.uuid4().hex[:6]

    async def prepare(conn: asyncpg.Connection, i: int) -> tuple[str, str]:
        loc, contact = f"raw-{tag}-{i}", "c"
        await conn.execute(
            "INSERT INTO bench_contacts (location_id, contact_id) VALUES ($1, $2)", loc, contact
        )
        return loc, contact

    insert = SINGLE_LOG_INSERT if shared_head else FREE_INSERT

    async def one(conn: asyncpg.Connection, _i: int, n: int, state: tuple[str, str]) -> None:
        loc, contact = state
        async with conn.transaction():
            version = await conn.fetchval(FREE_UPDATE, loc, contact)
            await conn.execute(insert, loc, contact, version, n % 2 == 0)

    return await closed_loop_pg(url, connections, seconds, prepare, one)


# --- SetDnd's own statements, recorded from the store ----------------------------------------

REC_CONTACT = "rec-contact-0000"


def location_in_lane(prefix: str, lane: int, lanes: int = 16) -> str:
    """A location id starting with ``prefix`` whose changes go to ``lane``."""
    from dnd_server.lanes import lane_of

    n = 0
    while lane_of(f"{prefix}-{n}", lanes) != lane:
        n += 1
    return f"{prefix}-{n}"


@dataclass
class Recorded:
    """The statements of one store write, in order: (method, query, args), made for
    ``location``."""

    location: str = ""
    calls: list[tuple[str, str, tuple[Any, ...]]] = field(default_factory=list)


class _RecordingConnection:
    """A pooled connection that notes every statement the store sends through it."""

    def __init__(self, conn: Any, recorded: Recorded) -> None:
        self._conn = conn
        self._recorded = recorded

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._conn, name)
        if name not in ("execute", "executemany", "fetch", "fetchrow", "fetchval"):
            return attr

        async def noted(query: str, *args: Any, **kwargs: Any) -> Any:
            self._recorded.calls.append((name, query, args))
            return await attr(query, *args, **kwargs)

        return noted


class _RecordingPool:
    def __init__(self, pool: asyncpg.Pool, recorded: Recorded) -> None:
        self._pool = pool
        self.recorded = recorded
        self._lent: dict[int, Any] = {}

    async def acquire(self) -> Any:
        conn = await self._pool.acquire()
        wrapped = _RecordingConnection(conn, self.recorded)
        self._lent[id(wrapped)] = conn
        return wrapped

    async def release(self, wrapped: Any) -> None:
        await self._pool.release(self._lent.pop(id(wrapped)))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


async def record_setdnd(url: str, lanes: int) -> list[dict[str, Recorded]]:
    """Per lane: the statements the store issues for a SetDnd enabling outbound SMS DND on a
    contact never seen (of a location of that lane), and for the one disabling it again (the
    server's own code, run in this process)."""
    from dnd_server.rpc import validate
    from dnd_server.service import DndService
    from dnd_server.storage.store import Store

    pool = await asyncpg.create_pool(url, min_size=1, max_size=1)
    assert pool is not None
    tag = uuid.uuid4().hex[:6]
    try:
        per_lane: list[dict[str, Recorded]] = []
        for lane in range(lanes):
            location = location_in_lane(f"rec-{tag}", lane)
            found: dict[str, Recorded] = {}
            for name, enable in (("enable", True), ("disable", False)):
                recorded = Recorded(location)
                store = Store(
                    pool=_RecordingPool(pool, recorded),  # type: ignore[arg-type]
                    timeout=10.0,
                    idempotency_ttl=86400.0,
                )
                await store.open_log(16)
                recorded.calls.clear()
                service = DndService(store=store)
                command = validate.set_dnd(set_sms_dnd(location, REC_CONTACT, enable), "US")
                outcome = await service.set_dnd(command)
                assert getattr(outcome, "steps", None), f"the recorded {name} changed nothing"
                found[name] = recorded
            per_lane.append(found)
        return per_lane
    finally:
        await pool.close()


def _substitute(value: Any, names: tuple[str, str, str, str]) -> Any:
    old_location, location, old_contact, contact = names
    if isinstance(value, str):
        return value.replace(old_location, location).replace(old_contact, contact)
    if isinstance(value, list):
        return [_substitute(v, names) for v in value]
    if isinstance(value, tuple):
        return tuple(_substitute(v, names) for v in value)
    return value


async def replay_setdnd(
    url: str, connections: int, seconds: float, recorded: list[dict[str, Recorded]]
) -> dict[str, Any]:
    """The recorded statements replayed in one transaction per write: on each connection's
    own location (in the lane of the recording it replays, so the same lane's head row), a
    fresh contact enabled, then disabled, then the next contact."""
    tag = uuid.uuid4().hex[:6]

    async def prepare(conn: asyncpg.Connection, i: int) -> tuple[str, dict[str, Recorded]]:
        mine = recorded[i % len(recorded)]
        for _, query, _ in mine["enable"].calls + mine["disable"].calls:
            await conn.prepare(query)  # the server's statements are prepared too
        return location_in_lane(f"own-{tag}-{i}", i % len(recorded)), mine

    async def one(
        conn: asyncpg.Connection, _i: int, n: int, state: tuple[str, dict[str, Recorded]]
    ) -> None:
        loc, mine = state
        write = mine["enable"] if n % 2 == 0 else mine["disable"]
        names = (write.location, loc, REC_CONTACT, f"c{n // 2}")
        async with conn.transaction():
            for method, query, args in write.calls:
                await getattr(conn, method)(query, *_substitute(args, names))

    return await closed_loop_pg(url, connections, seconds, prepare, one)


# --- the SetDnd RPC and the change stream ----------------------------------------------------


@dataclass
class Writes:
    # (location, contact, version) of each effective write -> when its answer came.
    acked: dict[tuple[str, str, int], float] = field(default_factory=dict)
    # The same writes -> when they were sent.
    sent: dict[tuple[str, str, int], float] = field(default_factory=dict)
    errors: int = 0
    started: float = 0.0
    finished: float = 0.0
    cores: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return len(self.acked) / max(self.finished - self.started, 1e-9)


async def rpc_closed_loop(
    stubs: list[Any], locations: list[str], seconds: float, warmup: float = 1.0
) -> Writes:
    """One closed-loop caller per location, toggling SMS DND on contacts of its own."""
    writes = Writes()
    begin = clock() + warmup
    stop_at = begin + seconds

    async def writer(w: int) -> None:
        stub = stubs[w % len(stubs)]
        n = 0
        while clock() < stop_at:
            request = set_sms_dnd(locations[w], f"c{n // 2}", n % 2 == 0)
            n += 1
            try:
                answer = await stub.SetDnd(request, timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError:
                writes.errors += 1
                n += 2 - n % 2  # a fresh contact
                continue
            at = clock()
            if at >= begin and answer.changed:
                writes.acked[(request.location_id, request.contact_id, answer.status.version)] = at

    meter = asyncio.create_task(cores_between(begin, stop_at))
    await asyncio.gather(*(writer(w) for w in range(len(locations))))
    writes.started, writes.finished = begin, stop_at
    writes.cores = await meter
    return writes


async def noop_closed_loop(
    channels: list[Any], callers: int, seconds: float, warmup: float = 1.0
) -> dict[str, Any]:
    """The same callers on the same connections calling Health/Check, which does no work: the
    cost of a call itself (client and server gRPC) on this machine."""
    stubs = [health_pb2_grpc.HealthStub(c) for c in channels]
    request = health_pb2.HealthCheckRequest()
    begin = clock() + warmup
    stop_at = begin + seconds
    calls = 0

    async def caller(w: int) -> None:
        nonlocal calls
        stub = stubs[w % len(stubs)]
        while clock() < stop_at:
            await stub.Check(request, timeout=RPC_TIMEOUT)  # type: ignore[attr-defined]
            if clock() >= begin:
                calls += 1

    meter = asyncio.create_task(cores_between(begin, stop_at))
    await asyncio.gather(*(caller(w) for w in range(callers)))
    return {"rate": round(calls / seconds, 1), "calls": calls, "cores": await meter}


async def rpc_paced(stubs: list[Any], locations: list[str], rate: float, seconds: float) -> Writes:
    writes = Writes()
    count = max(1, round(rate * seconds))
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        request = set_sms_dnd(locations[i % len(locations)], f"p{i}", True)
        sent = clock()
        try:
            answer = await stubs[i % len(stubs)].SetDnd(request, timeout=RPC_TIMEOUT)
        except grpc.aio.AioRpcError:
            writes.errors += 1
            return
        key = (request.location_id, request.contact_id, answer.status.version)
        writes.acked[key] = clock()
        writes.sent[key] = sent

    writes.started = start = clock() + 0.01
    for i in range(count):
        delay = start + i / rate - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(i)))
    await asyncio.gather(*tasks)
    writes.finished = clock()
    return writes


class Subscriber:
    def __init__(self) -> None:
        self.received: dict[tuple[str, str, int], float] = {}
        self.messages = 0
        self.end = ""
        self.call: Any = None

    async def run(self, stub: Any, request: pb.WatchChangesRequest) -> None:
        received = self.received
        self.call = stub.WatchChanges(request)
        try:
            async for message in self.call:
                self.messages += 1
                kind = message.WhichOneof("message")
                if kind == "event":
                    e = message.event
                    received[(e.location_id, e.contact_id, e.version)] = clock()
                elif kind == "events":
                    at = clock()
                    for e in message.events.events:
                        received[(e.location_id, e.contact_id, e.version)] = at
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.end = error.code().name


class Subscribers:
    def __init__(self, addr: str, count: int, channels: int, request: pb.WatchChangesRequest):
        self.all = [Subscriber() for _ in range(count)]
        self._channels = [
            grpc.aio.insecure_channel(addr, options=OWN_CONNECTION) for _ in range(channels)
        ]
        stubs = [dnd_pb2_grpc.DndServiceStub(c) for c in self._channels]
        self._tasks = [
            asyncio.create_task(s.run(stubs[i % len(stubs)], request))
            for i, s in enumerate(self.all)
        ]

    async def wait_all(self, cursors: list[tuple[str, str, int]], timeout: float) -> int:
        """Wait until every subscriber has every cursor: how many (subscriber, write) lack."""
        want = set(cursors)
        deadline = clock() + timeout
        while True:
            lacking = sum(len(want - s.received.keys()) for s in self.all)
            if not lacking or clock() > deadline:
                return lacking
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for s in self.all:
            if s.call is not None:
                s.call.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels:
            await channel.close()


@dataclass
class _Arrivals:
    """What one subscriber received, as its process reports it."""

    received: dict[tuple[str, str, int], float]
    messages: int
    end: str


def _subscribe(
    addr: str, count: int, channels: int, request_bytes: bytes, stop_at: float
) -> list[tuple[dict[tuple[str, str, int], float], int, str]]:
    """A process of subscribers: ``count`` streams until ``stop_at`` (wall clock)."""

    async def run() -> list[tuple[dict[tuple[str, str, int], float], int, str]]:
        request = pb.WatchChangesRequest.FromString(request_bytes)
        group = Subscribers(addr, count, channels, request)
        await asyncio.sleep(max(0.0, stop_at - clock()))
        found = [(s.received, s.messages, s.end) for s in group.all]
        await group.close()
        return found

    return asyncio.run(run())


class SubscriberProcesses:
    """``count`` subscribers in ``procs`` processes of their own (so the writers' process
    measures the server, not its own event loop), reporting their arrivals when ``stop_at``
    (wall clock) has passed."""

    def __init__(
        self,
        addr: str,
        count: int,
        channels: int,
        request: pb.WatchChangesRequest,
        stop_at: float,
        procs: int = 2,
    ) -> None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self._pool = ProcessPoolExecutor(procs, mp_context=multiprocessing.get_context("spawn"))
        share = [count // procs + (1 if i < count % procs else 0) for i in range(procs)]
        self._futures = [
            self._pool.submit(
                _subscribe,
                addr,
                n,
                max(1, channels // procs),
                request.SerializeToString(),
                stop_at,
            )
            for n in share
            if n
        ]
        self.all: list[_Arrivals] = []

    def results(self) -> list[_Arrivals]:
        for future in self._futures:
            self.all.extend(_Arrivals(r, m, e) for r, m, e in future.result(timeout=300))
        self._pool.shutdown()
        return self.all

    def lacking(self, keys: list[tuple[str, str, int]]) -> int:
        want = set(keys)
        return sum(len(want - s.received.keys()) for s in self.all)


def latency(writes: Writes, subscribers: Any) -> dict[str, Any]:
    """Per (subscriber, write): the event's arrival minus the write's answer (the commit
    happened just before the answer left the server; negative when the event beat the
    answer), and minus the write's sending (an upper bound of commit->subscriber)."""

    def spread(since: dict[tuple[str, str, int], float]) -> list[float]:
        return sorted(
            (s.received[c] - at) * 1000
            for s in subscribers.all
            for c, at in since.items()
            if c in s.received
        )

    acked, sent = spread(writes.acked), spread(writes.sent)
    return {
        "samples": len(acked),
        "p50_ms": round(percentile(acked, 0.5), 2) if acked else None,
        "p99_ms": round(percentile(acked, 0.99), 2) if acked else None,
        "max_ms": round(acked[-1], 2) if acked else None,
        "send_p50_ms": round(percentile(sent, 0.5), 2) if sent else None,
        "send_p99_ms": round(percentile(sent, 0.99), 2) if sent else None,
    }


async def rpc_phases(addr: str, args: argparse.Namespace) -> dict[str, Any]:
    channels = [grpc.aio.insecure_channel(addr, options=OWN_CONNECTION) for _ in range(4)]
    stubs = [dnd_pb2_grpc.DndServiceStub(c) for c in channels]
    out: dict[str, Any] = {}
    try:
        for channel in channels:
            await channel.channel_ready()
        tag = uuid.uuid4().hex[:6]
        progress(f"(d) SetDnd RPC, {args.connections} callers on distinct locations ...")
        locs = [f"rpc-{tag}-{i}" for i in range(args.connections)]
        plain = await rpc_closed_loop(stubs, locs, args.seconds)
        out["rpc"] = {
            "rate": round(plain.rate, 1),
            "writes": len(plain.acked),
            "errors": plain.errors,
            "cores": plain.cores,
        }
        progress(f"(e) Health/Check (no work), {args.connections} callers ...")
        out["noop"] = await noop_closed_loop(channels, args.connections, args.seconds)

        # The subscribers start (in their own processes) before the writes and report once
        # the writes and the drain time are over.
        setup = 4.0
        progress(f"watch: the same with {args.subscribers} subscribers ...")
        locs = [f"watched-{tag}-{i}" for i in range(args.connections)]
        request = pb.WatchChangesRequest(location_ids=locs, max_events_per_message=args.batch)
        stop_at = clock() + setup + 1.0 + args.seconds + args.drain
        subs = SubscriberProcesses(addr, args.subscribers, args.sub_channels, request, stop_at)
        await asyncio.sleep(setup)
        watched = await rpc_closed_loop(stubs, locs, args.seconds)
        await asyncio.to_thread(subs.results)
        out["rpc_watched"] = {
            "rate": round(watched.rate, 1),
            "writes": len(watched.acked),
            "errors": watched.errors,
            "lacking_deliveries": subs.lacking(list(watched.acked)),
            "messages": sum(s.messages for s in subs.all),
            "ended": [s.end for s in subs.all if s.end],
            "cores": watched.cores,
        }

        progress(f"watch: {args.rate:.0f} paced writes/s with {args.subscribers} subscribers ...")
        locs = [f"paced-{tag}-{i}" for i in range(args.connections)]
        request = pb.WatchChangesRequest(location_ids=locs, max_events_per_message=args.batch)
        stop_at = clock() + setup + args.seconds + args.drain
        subs = SubscriberProcesses(addr, args.subscribers, args.sub_channels, request, stop_at)
        await asyncio.sleep(setup)
        paced = await rpc_paced(stubs, locs, args.rate, args.seconds)
        await asyncio.to_thread(subs.results)
        out["latency"] = {
            "offered": args.rate,
            "achieved": round(paced.rate, 1),
            "errors": paced.errors,
            "lacking_deliveries": subs.lacking(list(paced.acked)),
            "messages": sum(s.messages for s in subs.all),
            **latency(paced, subs),
        }
    finally:
        for channel in channels:
            await channel.close()
    return out


# --- the run ---------------------------------------------------------------------------------


async def pg_phases(url: str, args: argparse.Namespace) -> dict[str, Any]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(BASELINE_SCHEMA)
    finally:
        await conn.close()
    out: dict[str, Any] = {}
    n, s = args.connections, args.seconds
    progress(f"(a) free two-statement transaction, {n} connections ...")
    out["free"] = await baseline_free(url, n, s, shared_head=False)
    progress("(b) the same with a shared head row (the single log) ...")
    out["single_log"] = await baseline_free(url, n, s, shared_head=True)
    progress("(c) recording SetDnd's statements from the store, then replaying them ...")
    recorded = await record_setdnd(url, min(16, n))
    out["own_sql_statements"] = {k: len(v.calls) for k, v in recorded[0].items()}
    out["own_sql_statement_names"] = {
        k: [q.strip().splitlines()[0][:60] for _, q, _ in v.calls] for k, v in recorded[0].items()
    }
    out["own_sql"] = await replay_setdnd(url, n, s, recorded)
    return out


def cpu_us(phase: dict[str, Any]) -> dict[str, float]:
    """CPU microseconds per operation of the phase, by part: ``server``, ``postgres``, this
    process (``bench``: the callers), ``machine`` (everything, other tenants' too)."""
    rate, cores = phase.get("rate"), phase.get("cores") or {}
    if not rate:
        return {}
    parts = ("server", "postgres", "bench", "machine")
    return {k: round(cores[k] * 1e6 / rate) for k in parts if k in cores}


def ceiling(own: float, noop: float) -> float | None:
    """The highest (d)/(c) a server could reach on this machine if a write cost it nothing
    but one gRPC call: both phases keep the same machine busy, so a write costing the CPU of
    (c)'s transaction plus (e)'s call runs at 1 / (1/c + 1/e) = c x e / (c + e)."""
    if not own or not noop:
        return None
    return round(noop / (own + noop), 3)


def figures(phases: dict[str, Any]) -> dict[str, Any]:
    free = phases["free"]["rate"]
    own = phases["own_sql"]["rate"]
    rpc = phases["rpc"]["rate"]
    noop = phases["noop"]["rate"]
    return {
        "noop_calls_s": noop,
        "rpc_vs_own_sql_ceiling": ceiling(own, noop),
        "cpu_us_per_op": {
            name: cpu_us(phases[name])
            for name in ("free", "own_sql", "rpc", "noop", "rpc_watched")
            if name in phases
        },
        "free_tx_s": free,
        "single_log_tx_s": phases["single_log"]["rate"],
        "single_log_vs_free": ratio(phases["single_log"]["rate"], free),
        "own_sql_tx_s": own,
        "own_sql_vs_free": ratio(own, free),
        "rpc_writes_s": rpc,
        "rpc_vs_own_sql": ratio(rpc, own),
        "watched_writes_s": phases["rpc_watched"]["rate"],
        "watch_vs_raw": ratio(phases["rpc_watched"]["rate"], rpc),
        "watched_lacking": phases["rpc_watched"]["lacking_deliveries"],
        "latency_p50_ms": phases["latency"]["p50_ms"],
        "latency_p99_ms": phases["latency"]["p99_ms"],
        "send_to_subscriber_p50_ms": phases["latency"]["send_p50_ms"],
        "send_to_subscriber_p99_ms": phases["latency"]["send_p99_ms"],
        "latency_achieved_writes_s": phases["latency"]["achieved"],
        "latency_lacking": phases["latency"]["lacking_deliveries"],
    }


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("met" if ok else "NOT MET")


def table(fig: dict[str, Any], phases: dict[str, Any], args: argparse.Namespace) -> str:
    own_n = phases["own_sql_statements"]
    rows = [
        ("(a) free: update contact + insert change", f"{fig['free_tx_s']:.0f} tx/s", "1.000", ""),
        (
            "(b) single log: + shared head row",
            f"{fig['single_log_tx_s']:.0f} tx/s",
            f"{fig['single_log_vs_free']:.3f}",
            "",
        ),
        (
            f"(c) SetDnd's own SQL ({own_n['enable']}/{own_n['disable']} statements)",
            f"{fig['own_sql_tx_s']:.0f} tx/s",
            f"{fig['own_sql_vs_free']:.3f}",
            f">= {TARGETS['own_sql_vs_free']} x (a): "
            + verdict(fig["own_sql_vs_free"] >= TARGETS["own_sql_vs_free"]),
        ),
        (
            "(d) SetDnd RPC",
            f"{fig['rpc_writes_s']:.0f} writes/s",
            f"{fig['rpc_vs_own_sql']:.3f} x (c)",
            f">= {TARGETS['rpc_vs_own_sql']} x (c): "
            + verdict(fig["rpc_vs_own_sql"] >= TARGETS["rpc_vs_own_sql"]),
        ),
        (
            "(e) Health/Check, the same callers (a call alone)",
            f"{fig['noop_calls_s']:.0f} calls/s",
            "",
            f"(d) / (c) could reach {fig['rpc_vs_own_sql_ceiling']} here (see below)",
        ),
        (
            f"SetDnd RPC with {args.subscribers} subscribers",
            f"{fig['watched_writes_s']:.0f} writes/s",
            f"{fig['watch_vs_raw']:.3f} x (d)",
            f">= {TARGETS['watch_vs_raw']} x (d): "
            + verdict(fig["watch_vs_raw"] >= TARGETS["watch_vs_raw"] and not fig["watched_lacking"])
            + f" (undelivered {fig['watched_lacking']})",
        ),
        (
            f"commit->subscriber at {args.rate:.0f} writes/s, {args.subscribers} subscribers",
            f"p50 {fig['latency_p50_ms']} ms, p99 {fig['latency_p99_ms']} ms",
            f"{fig['latency_achieved_writes_s']:.0f} writes/s",
            f"p99 < {TARGETS['latency_p99_ms']:.0f} ms: "
            + verdict(
                fig["latency_p99_ms"] is not None
                and fig["latency_p99_ms"] < TARGETS["latency_p99_ms"]
                and not fig["latency_lacking"]
            )
            + f" (undelivered {fig['latency_lacking']})",
        ),
        (
            "  the same from each write's sending (upper bound)",
            f"p50 {fig['send_to_subscriber_p50_ms']} ms, p99 {fig['send_to_subscriber_p99_ms']} ms",
            "",
            "",
        ),
    ]
    width = max(len(r[0]) for r in rows)
    lines = [
        f"write path, {args.connections} connections on distinct locations, {args.seconds:.0f} s "
        f"per phase, events per message <= {args.batch}",
        "",
    ]
    for name, value, rel, target in rows:
        lines.append(f"{name:<{width}}  {value:>28}  {rel:>16}  {target}")
    lines += [
        "",
        "CPU per operation (microseconds; machine = every process, other tenants' too):",
        f"  {'phase':<14}{'server':>9}{'postgres':>10}{'callers':>9}{'machine':>9}",
    ]
    for name, us in fig["cpu_us_per_op"].items():
        if us:
            lines.append(
                f"  {name:<14}{us.get('server', 0):>9}{us.get('postgres', 0):>10}"
                f"{us.get('bench', 0):>9}{us.get('machine', 0):>9}"
            )
    lines.append(
        "  The ceiling of (d) / (c): a write that cost the server nothing beyond one gRPC call "
        "would run at c x e / (c + e)."
    )
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--seconds", type=float, default=8.0, help="measured seconds per phase (8)")
    p.add_argument("--connections", type=int, default=16, help="connections / callers (16)")
    p.add_argument("--subscribers", type=int, default=100, help="watch subscribers (100)")
    p.add_argument("--sub-channels", type=int, default=4, help="connections they share (4)")
    p.add_argument("--rate", type=float, default=200.0, help="paced writes/s (200)")
    p.add_argument("--batch", type=int, default=200, help="max_events_per_message (200)")
    p.add_argument("--drain", type=float, default=4.0, help="seconds to wait for deliveries")
    p.add_argument("--server-env", action="append", default=[], metavar="NAME=VALUE")
    p.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    return p.parse_args(argv)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_env = {
        "DND_LOG_LEVEL": "WARNING",
        "DND_MAX_STREAMS_PER_CALLER": str(args.subscribers + 16),
        "DND_FEED_POLL_SECONDS": "0.5",
        **dict(item.split("=", 1) for item in args.server_env),
    }
    started = dt.datetime.now(dt.UTC)
    source = git_state()
    signal.signal(signal.SIGTERM, _interrupt)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    db = Database(prefix="write")
    server: Server | None = None
    try:
        progress("starting PostgreSQL and the server ...")
        db.start()
        server = Server(db.url, server_env)
        server.start()
        global METER
        METER = CpuMeter(server.pid, db.postmaster_pid)
        phases = asyncio.run(pg_phases(db.url, args))
        phases |= asyncio.run(rpc_phases(server.addr, args))
    except KeyboardInterrupt:
        progress("interrupted: stopping the server and PostgreSQL")
        return 130
    finally:
        if server is not None:
            server.stop()
        db.stop()
        progress("stopped the server and PostgreSQL")
    fig = figures(phases)
    print(table(fig, phases, args))
    if not args.no_json:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"write-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        meta = {
            "benchmark": "write",
            "started_at": started.isoformat(timespec="seconds"),
            **source,
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "database": db.kind,
            "server_env": server_env,
            "args": vars(args),
        }
        path.write_text(json.dumps(meta | {"figures": fig, "phases": phases}, indent=2) + "\n")
        print(f"\nresults: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
