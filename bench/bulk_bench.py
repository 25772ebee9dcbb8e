"""Bulk writes and the export (``make bench-bulk``): BulkSetDnd of 1,000-item calls against
single SetDnd calls in the same run (changes/s), and ExportSuppressions of 1,000,000
suppressions (rows/s, and the server's resident memory sampled during the export: before,
peak, after).

    .venv/bin/python bench/bulk_bench.py                 # ~2 minutes on 2 cores
    .venv/bin/python bench/bulk_bench.py --seconds 3 --rows 200000

It starts the embedded PostgreSQL (or a fresh database in ``DND_BENCH_DATABASE_URL``) and one
server process (``DND_WORKERS=1``), talks to it over loopback and stops both at the end. The
suppressions to export are inserted with SQL (``generate_series``): the export is what is
measured, not the load. Progress goes to stderr, the table to stdout, the figures to
``bench/results/bulk-<UTC timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import psutil
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.infra import REPO, CpuMeter, Database, ServerGroup

clock = time.perf_counter


def progress(message: str) -> None:
    print(f"[bulk-bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=6.0, help="length of each write phase")
    parser.add_argument("--concurrency", type=int, default=16, help="SetDnd calls in flight")
    parser.add_argument("--bulk-concurrency", type=int, default=2, help="BulkSetDnd in flight")
    parser.add_argument("--items", type=int, default=1000, help="items per BulkSetDnd")
    parser.add_argument("--rows", type=int, default=1_000_000, help="suppressions to export")
    parser.add_argument("--no-json", action="store_true")
    return parser.parse_args(argv)


def enable(contact: str) -> pb.SetDndRequest:
    return pb.SetDndRequest(
        contact_id=contact,
        action=pb.DND_ACTION_ENABLE,
        direction=pb.DIRECTION_OUTBOUND,
        scope=pb.Scope(channel=pb.CHANNEL_SMS),
        source=pb.SOURCE_USER,
        actor_id="bench",
    )


async def single_set_dnd(addr: str, seconds: float, concurrency: int) -> dict[str, float]:
    """Closed loop: ``concurrency`` callers, each SetDnd on a new contact of its own location."""
    async with grpc.aio.insecure_channel(addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        changes = 0
        stop = clock() + seconds

        async def caller(n: int) -> None:
            nonlocal changes
            at = 0
            while clock() < stop:
                request = enable(f"s{n}-{at}")
                request.location_id = f"bench-single-{n}"
                answer = await stub.SetDnd(request, timeout=30)
                changes += 1 if answer.changed else 0
                at += 1

        started = clock()
        await asyncio.gather(*(caller(n) for n in range(concurrency)))
        elapsed = clock() - started
    return {"changes": changes, "seconds": elapsed, "changes_per_s": changes / elapsed}


async def bulk_set_dnd(addr: str, seconds: float, concurrency: int, items: int) -> dict[str, float]:
    """Closed loop: ``concurrency`` callers, each BulkSetDnd of ``items`` new contacts of its
    own location."""
    options = [("grpc.max_receive_message_length", 64 << 20)]
    async with grpc.aio.insecure_channel(addr, options=options) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        changes = calls = 0
        latencies: list[float] = []
        stop = clock() + seconds

        async def caller(n: int) -> None:
            nonlocal changes, calls
            call = 0
            while clock() < stop:
                request = pb.BulkSetDndRequest(
                    location_id=f"bench-bulk-{n}",
                    items=[enable(f"b{n}-{call}-{i}") for i in range(items)],
                )
                began = clock()
                answer = await stub.BulkSetDnd(request, timeout=120)
                latencies.append(clock() - began)
                changes += answer.changed
                calls += 1
                call += 1

        started = clock()
        await asyncio.gather(*(caller(n) for n in range(concurrency)))
        elapsed = clock() - started
    latencies.sort()
    return {
        "changes": changes,
        "calls": calls,
        "seconds": elapsed,
        "changes_per_s": changes / elapsed,
        "call_p50_ms": 1000 * latencies[len(latencies) // 2] if latencies else 0.0,
    }


async def load_suppressions(url: str, location_id: str, rows: int) -> float:
    started = clock()
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            """
            INSERT INTO dnd_address_suppressions
                (location_id, channel, address, reason, source, contact_id, provider_detail,
                 since)
            SELECT $1, 'SMS', '+1' || lpad(i::text, 10, '0'), 'SMS_OPT_OUT_KEYWORD',
                   'CONTACT', 'contact-' || i, 'keyword:STOP', now()
            FROM generate_series(1, $2) AS i
            """,
            location_id,
            rows,
        )
        await conn.execute("ANALYZE dnd_address_suppressions")
    finally:
        await conn.close()
    return clock() - started


class RssSampler:
    """The server process tree's resident memory, sampled every 20 ms in a thread."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def rss(self) -> int:
        total = 0
        for p in [self.process, *self.process.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.samples.append(self.rss())
            time.sleep(0.02)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


async def export(addr: str, location_id: str, pid: int) -> dict[str, float]:
    options = [("grpc.max_receive_message_length", 64 << 20)]
    sampler = RssSampler(pid)
    before = sampler.rss()
    async with grpc.aio.insecure_channel(addr, options=options) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        rows = messages = 0
        started = clock()
        with sampler:
            request = pb.ExportSuppressionsRequest(location_id=location_id, suppressions_only=True)
            async for message in stub.ExportSuppressions(request, timeout=600):
                rows += len(message.suppressions)
                messages += 1
        elapsed = clock() - started
    after = sampler.rss()
    peak = max(sampler.samples or [after])
    return {
        "rows": rows,
        "messages": messages,
        "seconds": elapsed,
        "rows_per_s": rows / elapsed,
        "rss_before_mb": before / 2**20,
        "rss_peak_mb": peak / 2**20,
        "rss_after_mb": after / 2**20,
        "rss_samples": len(sampler.samples),
    }


def table(figures: dict[str, Any]) -> str:
    single, bulk, exp = figures["single"], figures["bulk"], figures["export"]
    ratio = bulk["changes_per_s"] / single["changes_per_s"] if single["changes_per_s"] else 0.0
    growth = exp["rss_peak_mb"] - exp["rss_before_mb"]
    lines = [
        "| figure | measured | baseline (same run) | ratio | target |",
        "|---|---|---|---|---|",
        f"| BulkSetDnd ({figures['items']}-item calls, {figures['bulk_concurrency']} in flight)"
        f" | {bulk['changes_per_s']:,.0f} changes/s (call p50 {bulk['call_p50_ms']:.0f} ms)"
        f" | SetDnd ({figures['concurrency']} in flight) {single['changes_per_s']:,.0f} changes/s"
        f" | {ratio:.1f}x | >= 25x |",
        f"| ExportSuppressions of {exp['rows']:,} suppressions | {exp['rows_per_s']:,.0f} rows/s"
        f" ({exp['seconds']:.1f} s, {exp['messages']:,} messages)"
        f" | server RSS before {exp['rss_before_mb']:.0f} MB | peak {exp['rss_peak_mb']:.0f} MB"
        f" (+{growth:.0f} MB), after {exp['rss_after_mb']:.0f} MB | flat |",
        "",
        "CPU microseconds per change (cores busy x 10^6 / changes per second):",
        "",
        "| phase | server | postgres | callers | machine |",
        "|---|---|---|---|---|",
    ]
    for name, phase in (("SetDnd", single), ("BulkSetDnd", bulk)):
        us = phase.get("cpu_us_per_change") or {}
        lines.append(
            f"| {name} | {us.get('servers')} | {us.get('postgres')} | {us.get('load_and_bench')}"
            f" | {us.get('machine')} |"
        )
    return "\n".join(lines)


def with_cpu(result: dict[str, Any], before: Any, meter: CpuMeter) -> dict[str, Any]:
    """The phase's cores busy per part, and CPU microseconds per change of each."""
    cores = CpuMeter.cores(before, meter.snapshot())
    rate = result["changes_per_s"]
    result["cores"] = cores
    result["cpu_us_per_change"] = {
        name: round(cores[name] * 1e6 / rate, 1) if rate else None
        for name in ("servers", "postgres", "load_and_bench", "machine")
    }
    return result


async def run(args: argparse.Namespace, server: ServerGroup, db: Database) -> dict[str, Any]:
    meter = CpuMeter(db.postmaster_pid)
    meter.servers.append(server)
    progress(f"single SetDnd, {args.concurrency} in flight, {args.seconds:.0f} s ...")
    before = meter.snapshot()
    single = await single_set_dnd(server.addr, args.seconds, args.concurrency)
    single = with_cpu(single, before, meter)
    progress(f"BulkSetDnd of {args.items} items, {args.bulk_concurrency} in flight ...")
    before = meter.snapshot()
    bulk = await bulk_set_dnd(server.addr, args.seconds, args.bulk_concurrency, args.items)
    bulk = with_cpu(bulk, before, meter)
    progress(f"inserting {args.rows:,} suppressions with SQL ...")
    loaded = await load_suppressions(db.url, "bench-export", args.rows)
    progress(f"loaded in {loaded:.1f} s; exporting ...")
    exported = await export(server.addr, "bench-export", server.pid)
    return {
        "single": single,
        "bulk": bulk,
        "export": exported,
        "load_seconds": loaded,
        "items": args.items,
        "concurrency": args.concurrency,
        "bulk_concurrency": args.bulk_concurrency,
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    started = dt.datetime.now(dt.UTC)
    db = Database(prefix="bulkbench")
    server: ServerGroup | None = None
    try:
        progress("starting PostgreSQL ...")
        db.start()
        progress("starting the server ...")
        server = ServerGroup("bulk", db.url, workers=1, extra_env={})
        server.start()
        figures = asyncio.run(run(args, server, db))
    except KeyboardInterrupt:
        progress("interrupted: stopping the server and PostgreSQL")
        return 130
    finally:
        if server is not None:
            server.stop()
        db.stop()
        progress("stopped the server and PostgreSQL")
    print(table(figures))
    if not args.no_json:
        folder = REPO / "bench" / "results"
        folder.mkdir(parents=True, exist_ok=True)
        stamp = started.strftime("%Y%m%dT%H%M%SZ")
        path = folder / f"bulk-{stamp}.json"
        meta = {"benchmark": "bulk", "started_at": started.isoformat(timespec="seconds")}
        path.write_text(json.dumps({**meta, **figures}, indent=2) + "\n", encoding="utf-8")
        progress(f"figures saved to {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
