"""Reads at scale (``make bench-scale``): 1,000,000 contacts of one location, 100,000 of them
blocked, loaded with COPY; then, in one run against one server (DND_WORKERS=1 by default, the
default 100,000-entry cache):

A. CheckSend on random contacts of the million (nearly every read misses the cache: a
   primary-key lookup of the contact's row) vs CheckSend on a hot set of 1,000 contacts (all
   cached), the hot set measured before and after (>= 0.7x);
B. BatchCheckSend of 1,000 random contacts per call vs the same call on the 1,000 warm ones,
   warm measured before and after (>= 0.5x, in contact-checks/s), with call p50 / p99.

Load comes from Python processes (grpc.aio, requests encoded per call: h2load sends one body,
and random contacts need a new one per call); both sides of each ratio use the same generator.
Run from the repository root::

    .venv/bin/python bench/scale_bench.py                 # ~3 minutes
    .venv/bin/python bench/scale_bench.py --contacts 200000 --blocked 20000 --seconds 5

It starts its own PostgreSQL (embedded, or a fresh database in ``DND_BENCH_DATABASE_URL``'s
server) and server, and stops both at the end, on error and on Ctrl-C. Figures go to stdout,
progress to stderr, everything to ``bench/results/scale-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import random
import signal
import sys
import time
from collections import Counter
from typing import Any

import asyncpg
import grpc
import pyload
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from dnd_server.domain.model import Block, Channel, Direction, Reason, Source
from dnd_server.storage import rows
from dnd_server.storage.migrations import migrate
from infra import REPO, CpuMeter, Database, ServerGroup, git_state

RESULTS_DIR = REPO / "bench" / "results"
LOCATION = "scale"
TARGETS = {"A": 0.7, "B": 0.5}
CHECK_SEND = "/dnd.v1.DndService/CheckSend"
BATCH_CHECK_SEND = "/dnd.v1.DndService/BatchCheckSend"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def contact(i: int) -> str:
    return f"c{i:07d}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="dnd-service reads at scale (module docstring)")
    parser.add_argument("--contacts", type=int, default=1_000_000, help="contacts loaded")
    parser.add_argument("--blocked", type=int, default=100_000, help="of them with SMS DND")
    parser.add_argument("--hot", type=int, default=1000, help="contacts of the hot set")
    parser.add_argument("--batch", type=int, default=1000, help="contacts per BatchCheckSend")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured seconds per phase")
    parser.add_argument("--workers", type=int, default=1, help="DND_WORKERS")
    parser.add_argument("--processes", type=int, default=2, help="load processes")
    parser.add_argument("--tasks", type=int, default=64, help="CheckSend callers per process")
    parser.add_argument("--batch-tasks", type=int, default=8, help="batch callers per process")
    parser.add_argument(
        "--server-env", action="append", default=[], metavar="NAME=VALUE", help="server setting"
    )
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if not 0 < args.blocked <= args.contacts or not 0 < args.hot <= args.contacts:
        parser.error("need 0 < --blocked <= --contacts and 0 < --hot <= --contacts")
    return args


# --- data ---------------------------------------------------------------------------------------


async def load(url: str, contacts: int, blocked: int) -> dict[str, Any]:
    """Migrate, then COPY ``contacts`` contact rows, every (contacts // blocked)-th with an
    outbound SMS block in its state document and its row in dnd_blocks (as a write leaves
    them); the others at version 2 with an empty state (blocked once, cleared since)."""
    started = time.perf_counter()
    conn = await asyncpg.connect(url)
    try:
        await migrate(conn)
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)
        block = Block(Direction.OUTBOUND, Channel.SMS, Reason.MANUAL, Source.USER, since=now)
        document = rows.state_document([block], (), now)
        every = contacts // blocked
        blocked_ids = [contact(i) for i in range(0, contacts, every)][:blocked]
        marked = set(blocked_ids)
        records = (
            (LOCATION, cid, 1, now, 0, document)
            if cid in marked
            else (LOCATION, cid, 2, now, 0, "{}")
            for cid in map(contact, range(contacts))
        )
        await conn.copy_records_to_table(
            "dnd_contacts",
            records=records,
            columns=["location_id", "contact_id", "version", "updated_at", "last_seq", "state"],
        )
        await conn.copy_records_to_table(
            "dnd_blocks",
            records=(
                (LOCATION, cid, "OUTBOUND", "SMS", "MANUAL", "USER", now) for cid in blocked_ids
            ),
            columns=[
                "location_id",
                "contact_id",
                "direction",
                "scope",
                "reason",
                "source",
                "since",
            ],
        )
        await conn.execute("VACUUM ANALYZE dnd_contacts")
        await conn.execute("VACUUM ANALYZE dnd_blocks")
        size = await conn.fetchval("SELECT pg_total_relation_size('dnd_contacts')")
    finally:
        await conn.close()
    return {
        "contacts": contacts,
        "blocked": len(blocked_ids),
        "every": every,
        "seconds": round(time.perf_counter() - started, 1),
        "dnd_contacts_bytes": size,
    }


# --- load (in processes of their own) -----------------------------------------------------------


def checks_closed(
    addr: str,
    kind: str,
    seed: int,
    contacts: int,
    hot: int,
    batch: int,
    tasks: int,
    channels: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    """Closed loop of ``tasks`` callers: ``check_hot`` / ``check_random`` (CheckSend of a
    random contact of the hot set / of all contacts) or ``batch_warm`` / ``batch_random``
    (BatchCheckSend of the hot set / of ``batch`` random contacts). Every request is encoded
    when sent."""
    return asyncio.run(
        _checks_closed(
            addr, kind, seed, contacts, hot, batch, tasks, channels, start_at, warmup, duration
        )
    )


async def _checks_closed(
    addr: str,
    kind: str,
    seed: int,
    contacts: int,
    hot: int,
    batch: int,
    tasks: int,
    channels: int,
    start_at: float,
    warmup: float,
    duration: float,
) -> dict[str, Any]:
    window = pyload.Window(start_at, warmup, duration)
    rng = random.Random(seed)
    chans = [
        grpc.aio.insecure_channel(addr, options=pyload.OWN_CONNECTION) for _ in range(channels)
    ]
    stubs = [dnd_pb2_grpc.DndServiceStub(c) for c in chans]
    for chan in chans:
        await chan.channel_ready()
    hot_targets = [pb.CheckTarget(contact_id=contact(i)) for i in range(hot)]

    def request() -> Any:
        if kind == "check_hot" or kind == "check_random":
            i = rng.randrange(hot if kind == "check_hot" else contacts)
            return pb.CheckSendRequest(
                location_id=LOCATION,
                contact_id=contact(i),
                channel=pb.CHANNEL_SMS,
                send_kind=pb.SEND_KIND_AUTOMATED,
            )
        if kind == "batch_warm":
            targets = hot_targets
        else:
            targets = [
                pb.CheckTarget(contact_id=contact(rng.randrange(contacts))) for _ in range(batch)
            ]
        return pb.BatchCheckSendRequest(
            location_id=LOCATION,
            channel=pb.CHANNEL_SMS,
            send_kind=pb.SEND_KIND_AUTOMATED,
            targets=targets,
        )

    ops = 0
    denied = 0
    errors: Counter[str] = Counter()
    latencies: list[float] = []

    async def caller(t: int) -> None:
        nonlocal ops, denied
        stub = stubs[t % len(stubs)]
        method = stub.CheckSend if kind.startswith("check") else stub.BatchCheckSend
        while time.time() < window.end:
            message = request()
            sent = time.perf_counter()
            try:
                answer = await method(message, timeout=30)
            except grpc.aio.AioRpcError as error:
                errors[error.code().name] += 1
                continue
            took = time.perf_counter() - sent
            if window.counts(time.time()):
                ops += 1
                latencies.append(took * 1000)
                if kind.startswith("check"):
                    denied += not answer.allowed
                else:
                    denied += sum(not r.allowed for r in answer.results)

    await window.wait_start()
    await asyncio.gather(*(caller(t) for t in range(tasks)))
    for chan in chans:
        await chan.close()
    return window.report(ops, errors=dict(errors), denied=denied, latencies_ms=latencies)


# --- the run ------------------------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


class Run:
    def __init__(self, args: argparse.Namespace, server: ServerGroup, cpu: CpuMeter) -> None:
        self.args = args
        self.server = server
        self.cpu = cpu
        self.phases: dict[str, Any] = {}
        self.seed = 0

    def phase(self, name: str, kind: str) -> dict[str, Any]:
        a = self.args
        progress(f"{name} ({kind})")
        batch = kind.startswith("batch")
        tasks = a.batch_tasks if batch else a.tasks
        start_at = time.time() + 2.5
        arg_lists = []
        for _ in range(a.processes):
            self.seed += 1
            arg_lists.append(
                (
                    self.server.addr,
                    kind,
                    self.seed,
                    a.contacts,
                    a.hot,
                    a.batch,
                    tasks,
                    max(1, min(tasks, 8)),
                    start_at,
                    a.warmup,
                    a.seconds,
                )
            )
        self.server.failures_since_last()
        before_cpu = self.server.cpu_seconds()
        before = self.cpu.snapshot()
        results = pyload.run_parallel(checks_closed, arg_lists, a.seconds + a.warmup + 120)
        after = self.cpu.snapshot()
        spent = self.server.cpu_seconds() - before_cpu
        merged = pyload.merge(results)
        latencies = merged.pop("latencies_ms", [])
        per_call = (a.batch if kind == "batch_random" else a.hot) if batch else 1
        failures = self.server.failures_since_last()
        result = {
            "kind": kind,
            "calls_per_s": round(merged["rate"], 1),
            "checks_per_s": round(merged["rate"] * per_call, 1),
            "calls": merged["ops"],
            "denied_share": round(
                sum(r["denied"] for r in results) / max(1, merged["ops"] * per_call), 4
            ),
            "latency_ms": {
                "p50": percentile(latencies, 0.5),
                "p99": percentile(latencies, 0.99),
            },
            # Includes the load's warm-up: an upper bound.
            "server_cpu_us_per_check": round(spent * 1e6 / max(1, merged["ops"] * per_call), 1),
            "errors": merged["errors"],
            "failed_rpcs_logged": failures["by"],
            "cpu_cores": CpuMeter.cores(before, after),
            "load": f"python grpc.aio x{a.processes} processes x{tasks} callers",
        }
        if not self.server.alive():
            raise RuntimeError(f"server died:\n{self.server.read_log()[-3000:]}")
        self.phases[name] = result
        return result

    def warm_hot_set(self) -> None:
        """Every contact of the hot set read once (into the cache) by one BatchCheckSend."""

        async def go() -> None:
            async with grpc.aio.insecure_channel(self.server.addr) as chan:
                stub = dnd_pb2_grpc.DndServiceStub(chan)
                request = pb.BatchCheckSendRequest(
                    location_id=LOCATION,
                    channel=pb.CHANNEL_SMS,
                    targets=[pb.CheckTarget(contact_id=contact(i)) for i in range(self.args.hot)],
                )
                answer = await stub.BatchCheckSend(request, timeout=30)
                blocked = [not r.allowed for r in answer.results]
                every = self.args.contacts // self.args.blocked
                if blocked != [i % every == 0 for i in range(self.args.hot)]:
                    raise RuntimeError("the hot set does not answer as loaded")

        asyncio.run(go())

    def run(self) -> dict[str, Any]:
        self.warm_hot_set()
        h1 = self.phase("A_check_hot_1", "check_hot")
        r = self.phase("A_check_random", "check_random")
        h2 = self.phase("A_check_hot_2", "check_hot")
        w1 = self.phase("B_batch_warm_1", "batch_warm")
        br = self.phase("B_batch_random", "batch_random")
        w2 = self.phase("B_batch_warm_2", "batch_warm")
        hot = (h1["checks_per_s"] + h2["checks_per_s"]) / 2
        warm = (w1["checks_per_s"] + w2["checks_per_s"]) / 2
        figures = {
            "A": {
                "measured": r["checks_per_s"],
                "baseline": round(hot, 1),
                "baseline_runs": [h1["checks_per_s"], h2["checks_per_s"]],
                "ratio": round(r["checks_per_s"] / hot, 3) if hot else None,
            },
            "B": {
                "measured": br["checks_per_s"],
                "baseline": round(warm, 1),
                "baseline_runs": [w1["checks_per_s"], w2["checks_per_s"]],
                "ratio": round(br["checks_per_s"] / warm, 3) if warm else None,
                "latency_ms": br["latency_ms"],
                "baseline_latency_ms": [w1["latency_ms"], w2["latency_ms"]],
            },
        }
        for key, target in TARGETS.items():
            fig = figures[key]
            fig["target"] = target
            fig["pass"] = fig["ratio"] is not None and fig["ratio"] >= target
        return figures


def table(figures: dict[str, Any], phases: dict[str, Any], loaded: dict[str, Any]) -> str:
    a, b = figures["A"], figures["B"]

    def result(fig: dict[str, Any]) -> str:
        return "PASS" if fig["pass"] else "FAIL"

    lines = [
        f"== reads at scale: {loaded['contacts']:,} contacts ({loaded['blocked']:,} blocked) in "
        f"one location, loaded in {loaded['seconds']} s ==",
        f"A CheckSend, random contacts   {a['measured']:>12,.0f} checks/s  vs hot set "
        f"{a['baseline']:>10,.0f} ({a['baseline_runs'][0]:,.0f} / {a['baseline_runs'][1]:,.0f})"
        f"  {a['ratio']:.2f}x  target >=0.7x  {result(a)}",
        f"B BatchCheckSend x1000 random  {b['measured']:>12,.0f} checks/s  vs warm    "
        f"{b['baseline']:>10,.0f} ({b['baseline_runs'][0]:,.0f} / {b['baseline_runs'][1]:,.0f})"
        f"  {b['ratio']:.2f}x  target >=0.5x  {result(b)}",
        f"    call p50 / p99: random {b['latency_ms']['p50']} / {b['latency_ms']['p99']} ms, "
        f"warm {b['baseline_latency_ms'][0]['p50']} / {b['baseline_latency_ms'][0]['p99']} ms",
        "phases:",
    ]
    for name, p in phases.items():
        c = p["cpu_cores"]
        lines.append(
            f"  {name:<16} {p['checks_per_s']:>10,.0f} checks/s  {p['calls_per_s']:>8,.1f} calls/s"
            f"  p50 {p['latency_ms']['p50']} ms  p99 {p['latency_ms']['p99']} ms"
            f"  server {p['server_cpu_us_per_check']} us/check  denied {p['denied_share']:.1%}"
            f"  cores: server {c.get('servers', 0):.2f} postgres {c.get('postgres', 0):.2f}"
            f" load {c.get('load_and_bench', 0):.2f} others {c.get('others', 0):.2f}"
            f"  errors {sum(p['errors'].values())}"
            f" failed-logged {sum(p['failed_rpcs_logged'].values())}"
        )
    return "\n".join(lines)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)
    started = dt.datetime.now(dt.UTC)
    db = Database("scalebench")
    server: ServerGroup | None = None
    try:
        progress("starting PostgreSQL ...")
        db.start()
        progress(f"loading {args.contacts:,} contacts ({args.blocked:,} blocked) with COPY ...")
        loaded = asyncio.run(load(db.url, args.contacts, args.blocked))
        progress(f"loaded in {loaded['seconds']} s")
        env = dict(item.split("=", 1) for item in args.server_env)
        server = ServerGroup("S", db.url, args.workers, env)
        cpu = CpuMeter(db.postmaster_pid)
        cpu.servers = [server]
        server.start()
        server.failures_since_last()
        run = Run(args, server, cpu)
        figures = run.run()
    except KeyboardInterrupt:
        progress("interrupted: stopping the server and PostgreSQL")
        return 130
    except (RuntimeError, TimeoutError, OSError) as error:
        progress(f"failed: {error}")
        return 1
    finally:
        if server is not None:
            server.stop()
        db.stop()
        progress("stopped the server and PostgreSQL")
    print(table(figures, run.phases, loaded), flush=True)
    passed = all(f["pass"] for f in figures.values())
    meta = {
        "benchmark": "scale",
        "started_at": started.isoformat(timespec="seconds"),
        "wall_seconds": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        **git_state(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "database": db.kind,
        "args": vars(args),
        "loaded": loaded,
        "figures": figures,
        "phases": run.phases,
    }
    print(f"all targets met: {'yes' if passed else 'no'} (wall {meta['wall_seconds']} s)")
    if not args.no_json:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"scale-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(meta, indent=2, default=str) + "\n")
        print(f"results: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
