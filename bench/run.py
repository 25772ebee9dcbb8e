"""Hot-path benchmark suite (``make bench``): one command, one run, one table per worker count,
every figure set against a baseline measured in the same run, JSON under ``bench/results/``.

Run from the repository root::

    .venv/bin/python bench/run.py                     # workers 1 and 2, 5 s per phase
    .venv/bin/python bench/run.py --workers 2 --seconds 3
    .venv/bin/python bench/run.py --profile           # + py-spy of extra, unmeasured repeats

Figures (targets from the issue):

1. warm CheckSend req/s vs the no-op ``grpc.health.v1.Health/Check`` on the same server (>= 0.7x)
   1p. the same CheckSend with ``purpose`` = MARKETING (no consent policy) vs figure 1 (>= 0.9x:
   a stated purpose costs less than 10 %); and (info) a contact without blocks, checked with
   and without the purpose (decide_send's fast path)
   1q. the same CheckSend with purpose MARKETING to a phone address, quiet hours evaluated (a
   Florida number, a planned send_at at 21:30 there: deferred) vs figure 1 (>= 0.9x: quiet hours
   cost less than 10 %); and (info) the same at 10:00 there (allowed); ``--only-quiet`` runs
   figures 1 and 1q alone (figure 1's CheckSend measured again after 1q: its drift)
2. CheckSend req/s with ``DND_CACHE=false`` vs raw asyncpg single-row lookups (>= 0.5x)
3. BatchCheckSend (1,000 contacts) contact-checks/s vs single CheckSend req/s (>= 50x)
4. SetDnd writes/s vs a raw asyncpg transaction running the same statements (>= 0.5x)
5. CheckSend p50 / p99 at half its measured maximum rate, vs Health/Check at the same rate
6. stale reads: CheckSend answers "allowed" on replica B with ``min_cursor`` = the cursor of a
   blocking write just acknowledged by replica A, during a write-heavy run (must be 0)
7. CheckSend with tracing on (every call sampled, spans exported over OTLP/gRPC to a receiver
   in the bench's process) vs figure 1's server, tracing off: req/s and server CPU per call
   (info; ``--only-tracing`` runs figures 1 and 7 alone)

Load of one pre-encoded request comes from h2load (nghttp2-client) when installed, else from a
multi-process Python client. SetDnd, the raw asyncpg baselines and the stale-read probe are
Python processes (SetDnd needs a different contact per call; h2load sends one body).

It starts its own PostgreSQL (embedded in a temporary folder, or a fresh database in the
server named by ``DND_BENCH_DATABASE_URL``) and its own servers on loopback ports, and stops
all of them at the end, on error and on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import handler_profile
import profiling
import pyload
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from dnd_server.config import Config
from grpc_frames import (
    BATCH_CHECK_SEND,
    CHECK_SEND,
    HEALTH_CHECK,
    Verified,
    nghttp_call,
    python_call,
    write_frame,
)
from grpc_health.v1 import health_pb2
from infra import REPO, CpuMeter, Database, ServerGroup, git_state
from loadgen import LoadGen, LoadResult
from otlp_sink import OtlpSink

RESULTS_DIR = REPO / "bench" / "results"
BATCH_SIZE = 1000
TARGETS = {"1": 0.7, "1p": 0.9, "1q": 0.9, "2": 0.5, "3": 50.0, "4": 0.5}
# A contact the seed gives no block (neither every 10th nor every 7th).
OPEN_CONTACT = "c00001"
# Figure 1q: a Florida number, and planned sends at 21:30 (deferred) and 10:00 (allowed) there.
QUIET_ADDRESS = "+13055551234"
QUIET_EVENING = "2099-01-15T02:30:00Z"
QUIET_MORNING = "2099-01-15T15:00:00Z"


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="dnd-service hot-path benchmark suite (see the module docstring)."
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="DND_WORKERS runs")
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per phase")
    parser.add_argument("--warmup", type=float, default=1.0, help="unmeasured seconds per phase")
    parser.add_argument("--clients", type=int, default=16, help="h2load connections")
    parser.add_argument("--streams", type=int, default=8, help="h2load streams per connection")
    parser.add_argument(
        "--batch-streams", type=int, default=1, help="streams per connection for BatchCheckSend"
    )
    parser.add_argument("--writers", type=int, default=32, help="concurrent SetDnd callers")
    parser.add_argument("--stale-probers", type=int, default=8, help="stale-read probe loops")
    parser.add_argument(
        "--stale-writers", type=int, default=16, help="background SetDnd callers (figure 6)"
    )
    parser.add_argument(
        "--latency-processes", type=int, default=16, help="paced h2load processes (figure 5)"
    )
    parser.add_argument(
        "--load", choices=["auto", "h2load", "python"], default="auto", help="load generator"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="py-spy the workers during extra, unmeasured repeats of phases 1, 2 and 4",
    )
    parser.add_argument(
        "--only-tracing",
        action="store_true",
        help="figure 7 alone: CheckSend with tracing on vs off (figure 1's CheckSend)",
    )
    parser.add_argument(
        "--only-cache-off",
        action="store_true",
        help="figure 2 alone: CheckSend with DND_CACHE=false vs raw asyncpg lookups",
    )
    parser.add_argument(
        "--only-quiet",
        action="store_true",
        help="figure 1q alone: CheckSend with quiet hours evaluated vs figure 1's CheckSend",
    )
    parser.add_argument("--no-json", action="store_true", help="do not write bench/results/")
    args = parser.parse_args(argv)
    if any(w < 1 for w in args.workers) or args.seconds <= 0:
        parser.error("--workers must be >= 1 and --seconds > 0")
    return args


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 3)


def mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else 0.0


# --- one worker count ----------------------------------------------------------------------


class WorkerRun:
    def __init__(
        self, args: argparse.Namespace, workers: int, db: Database, cpu: CpuMeter, gen: LoadGen
    ) -> None:
        self.args = args
        self.workers = workers
        self.db = db
        self.cpu = cpu
        self.gen = gen
        self.pool_size = Config.from_env().db_pool_max
        self.servers: list[ServerGroup] = []
        self.phases: dict[str, Any] = {}
        self.checks: dict[str, Any] = {
            "verified": {},
            "server_problems": {},
            "server_problem_examples": {},
        }
        self.profiles: dict[str, Any] = {}
        self.folder = Path(tempfile.mkdtemp(prefix=f"dnd-hotbench-w{workers}-"))
        self.location = f"hot-w{workers}"
        self.source: dict[str, Any] = {}

    # -- infrastructure ----------------------------------------------------------------------

    def start_server(self, name: str, **env: str) -> ServerGroup:
        progress(f"workers={self.workers}: starting server {name} {env or ''}".rstrip())
        server = ServerGroup(name, self.db.url, self.workers, env)
        self.servers.append(server)
        self.cpu.servers = [s for s in self.servers if s.alive() or s is server]
        server.start()
        server.failures_since_last()  # start-up lines
        return server

    def stop_server(self, server: ServerGroup) -> None:
        self._collect_problems(server)
        server.stop()
        self.servers.remove(server)
        self.cpu.servers = list(self.servers)
        if server.returncode not in (0, None):
            self.checks["server_problems"][f"{server.name} exit code"] = server.returncode

    def _collect_problems(self, server: ServerGroup) -> dict[str, Any]:
        found = server.failures_since_last()
        for key, n in found["log_problems"].items():
            name = f"{server.name}: {key}"
            self.checks["server_problems"][name] = self.checks["server_problems"].get(name, 0) + n
            examples = self.checks["server_problem_examples"].setdefault(name, [])
            examples += found["examples"].get(key, [])[: 3 - len(examples)]
        return found

    def close(self) -> None:
        for server in list(self.servers):
            server.stop()
        self.servers.clear()
        shutil.rmtree(self.folder, ignore_errors=True)

    def phase(
        self, name: str, servers: list[ServerGroup], fn: Callable[[], dict[str, Any]]
    ) -> dict[str, Any]:
        """Run one measured phase: its result, the cores each party kept busy, and the failed
        RPCs the servers logged meanwhile (must be 0)."""
        progress(f"workers={self.workers}: {name}")
        for server in servers:
            self._collect_problems(server)
        before = self.cpu.snapshot()
        result = fn()
        after = self.cpu.snapshot()
        failed: dict[str, int] = {}
        for server in servers:
            found = self._collect_problems(server)
            for key, n in found["by"].items():
                failed[f"{server.name}: {key}"] = n
            if not server.alive():
                raise RuntimeError(f"server {server.name} died:\n{server.read_log()[-3000:]}")
        result["cpu_cores"] = CpuMeter.cores(before, after)
        result["failed_rpcs_logged"] = failed
        self.phases[name] = result
        return result

    def profile(self, name: str, server: ServerGroup, fn: Callable[[], Any]) -> None:
        """An extra, unmeasured repeat of a phase with py-spy attached to every worker."""
        if not self.args.profile:
            return
        progress(f"workers={self.workers}: profiling {name} (py-spy, not measured)")
        # Raw stacks in the run's temporary folder; the summary goes into the JSON.
        stem = self.folder / f"profile-w{self.workers}-{name}"
        seconds = self.args.seconds + self.args.warmup
        recorder = profiling.Recorder(server.worker_pids, seconds, stem)
        fn()
        problems = recorder.wait(timeout=seconds + 60)
        server.failures_since_last()
        summary = profiling.summarize(recorder.files)
        summary["problems"] = problems
        self.profiles[name] = summary

    # -- frames ------------------------------------------------------------------------------

    def verify(self, server: ServerGroup, label: str, method: str, path: Path) -> Verified:
        """One call of the frame before h2load sends it thousands of times: grpcio's status and
        response, and nghttp's grpc-status (the same HTTP/2 request h2load makes)."""
        payload = path.read_bytes()[5:]
        py = python_call(server.addr, method, payload)
        ng = nghttp_call(server.addr, method, path)
        self.checks["verified"][f"{server.name} {label}"] = {
            "grpcio_status": py.grpc_status,
            "nghttp_status": ng.grpc_status if ng else "nghttp not installed",
            "response_frame_len": py.response_frame_len,
        }
        if not py.ok:
            raise RuntimeError(
                f"{label} on {server.name}: grpc-status {py.grpc_status} {py.grpc_message}"
            )
        if ng is not None and (not ng.ok or ng.response_frame_len != py.response_frame_len):
            raise RuntimeError(
                f"{label} on {server.name} via nghttp: grpc-status {ng.grpc_status} "
                f"{ng.grpc_message!r}, {ng.response_frame_len} bytes "
                f"(grpcio: {py.response_frame_len})"
            )
        return py

    # -- data --------------------------------------------------------------------------------

    def contact(self, i: int) -> str:
        return f"c{i:05d}"

    async def seed_and_warm(self, server: ServerGroup) -> dict[str, int]:
        """Contacts c00000..c00999: every 10th with outbound SMS DND, every 7th with EMAIL DND
        (c00000 has both: the contact of the single CheckSend frame, a denied answer with its
        block). Then every contact is read once through several connections (each worker's
        cache) with BatchCheckSend and the fixed contact with CheckSend."""
        writes = []
        for i in range(BATCH_SIZE):
            for channel, every in ((pb.CHANNEL_SMS, 10), (pb.CHANNEL_EMAIL, 7)):
                if i % every == 0:
                    writes.append(
                        pb.SetDndRequest(
                            location_id=self.location,
                            contact_id=self.contact(i),
                            action=pb.DND_ACTION_ENABLE,
                            direction=pb.DIRECTION_OUTBOUND,
                            scope=pb.Scope(channel=channel),
                            source=pb.SOURCE_USER,
                            actor_id="hot-bench-seed",
                        )
                    )
        channels = [
            grpc.aio.insecure_channel(server.addr, options=pyload.OWN_CONNECTION)
            for _ in range(4 * self.workers)
        ]
        stubs = [dnd_pb2_grpc.DndServiceStub(c) for c in channels]
        try:
            queue = list(writes)

            async def writer(stub: dnd_pb2_grpc.DndServiceStub) -> None:
                while queue:
                    await stub.SetDnd(queue.pop(), timeout=30)

            await asyncio.gather(*(writer(stubs[i % len(stubs)]) for i in range(16)))
            batch = self.batch_request()
            check = self.check_request()
            for stub in stubs:
                answer = await stub.BatchCheckSend(batch, timeout=30)
                await stub.CheckSend(check, timeout=30)
            denied = sum(not r.allowed for r in answer.results)
        finally:
            for c in channels:
                await c.close()
        return {"writes": len(writes), "batch_denied": denied}

    async def batch_worst_case(self, server: ServerGroup) -> dict[str, Any]:
        """BatchCheckSend response sizes of the worst case: one contact with the 5 blocks that
        cover outbound SMS, each with 4,000 characters of evidence (and the longest note,
        provider detail and actor), checked 200 times in one call; compact and with details."""
        location = f"{self.location}-worst"
        sms, every = pb.Scope(channel=pb.CHANNEL_SMS), pb.Scope(all_channels=True)
        blocks = [(sms, pb.REASON_MANUAL), (every, pb.REASON_MANUAL)] + [
            (sms, r)
            for r in (
                pb.REASON_SMS_OPT_OUT_KEYWORD,
                pb.REASON_SMS_CARRIER_PERMANENT,
                pb.REASON_SMS_CARRIER_TEMPORARY,
            )
        ]
        sizes: dict[str, Any] = {"targets": 200, "blocks": len(blocks)}
        async with grpc.aio.insecure_channel(server.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            for scope, reason in blocks:
                await stub.SetDnd(
                    pb.SetDndRequest(
                        location_id=location,
                        contact_id="heavy",
                        action=pb.DND_ACTION_ENABLE,
                        direction=pb.DIRECTION_OUTBOUND,
                        scope=scope,
                        reason=reason,
                        source=pb.SOURCE_USER,
                        actor_id="a" * 128,
                        note="n" * 1000,
                        evidence="e" * 4000,
                        provider_detail="d" * 256,
                    ),
                    timeout=30,
                )
            for name, details in (("compact_bytes", False), ("details_bytes", True)):
                request = pb.BatchCheckSendRequest(
                    location_id=location,
                    channel=pb.CHANNEL_SMS,
                    targets=[pb.CheckTarget(contact_id="heavy")] * 200,
                    include_details=details,
                )
                answer = await stub.BatchCheckSend(request, timeout=30)
                sizes[name] = answer.ByteSize()
        return sizes

    def check_request(
        self, contact: str = "c00000", purpose: pb.Purpose.ValueType = pb.PURPOSE_UNSPECIFIED
    ) -> pb.CheckSendRequest:
        return pb.CheckSendRequest(
            location_id=self.location,
            contact_id=contact,
            channel=pb.CHANNEL_SMS,
            send_kind=pb.SEND_KIND_AUTOMATED,
            purpose=purpose,
        )

    def purpose_phases(self, server: ServerGroup, c1: dict[str, Any]) -> dict[str, Any]:
        """Figure 1p: figure 1's CheckSend with purpose MARKETING (the location has no consent
        policy), then a contact without blocks with and without it; each frame verified to
        answer as figure 1's (denied by the block) or allowed."""
        marketing = pb.PURPOSE_MARKETING
        frames = {
            "1p_checksend_marketing": ("c00000", marketing, False),
            "1p_open_checksend": (OPEN_CONTACT, pb.PURPOSE_UNSPECIFIED, True),
            "1p_open_checksend_marketing": (OPEN_CONTACT, marketing, True),
        }
        rates: dict[str, dict[str, Any]] = {}
        for name, (contact, purpose, allowed) in frames.items():
            path = write_frame(self.folder, name, self.check_request(contact, purpose))
            verified = self.verify(server, name, CHECK_SEND, path)
            answer = pb.CheckSendResponse.FromString(verified.response)
            if answer.allowed is not allowed:
                raise RuntimeError(f"{name}: allowed={answer.allowed}: {answer.explanation}")
            expect = verified.response_frame_len
            rates[name] = self.phase(
                name,
                [server],
                lambda p=path, n=expect: self.closed(server, CHECK_SEND, p, n),
            )
        c1p = rates["1p_checksend_marketing"]
        plain, with_purpose = rates["1p_open_checksend"], rates["1p_open_checksend_marketing"]
        us = c1p.get("server_cpu_us_per_request")
        base_us = c1.get("server_cpu_us_per_request")
        return {
            "measured": c1p["rate"],
            "baseline": c1["rate"],
            "ratio": ratio(c1p["rate"], c1["rate"]),
            "server_cpu_us_per_request": us,
            "baseline_server_cpu_us_per_request": base_us,
            "info_open_rate": plain["rate"],
            "info_open_marketing_rate": with_purpose["rate"],
            "info_open_ratio": ratio(with_purpose["rate"], plain["rate"]),
        }

    def quiet_phases(self, server: ServerGroup, c1: dict[str, Any]) -> dict[str, Any]:
        """Figure 1q: CheckSend with purpose MARKETING to a Florida number, quiet hours
        evaluated: at a planned 21:30 there (deferred: the rule, not_before and the
        explanation built) and at 10:00 (allowed); each frame verified to answer so."""
        frames = {
            "1q_checksend_deferred": (QUIET_EVENING, True),
            "1q_checksend_allowed": (QUIET_MORNING, False),
        }
        rates: dict[str, dict[str, Any]] = {}
        for name, (when, deferred) in frames.items():
            request = self.check_request(OPEN_CONTACT, pb.PURPOSE_MARKETING)
            request.address = QUIET_ADDRESS
            request.send_at.FromJsonString(when)
            path = write_frame(self.folder, name, request)
            verified = self.verify(server, name, CHECK_SEND, path)
            answer = pb.CheckSendResponse.FromString(verified.response)
            if answer.deferred is not deferred or not answer.HasField("quiet_hours"):
                raise RuntimeError(f"{name}: deferred={answer.deferred}: {answer.explanation}")
            expect = verified.response_frame_len
            rates[name] = self.phase(
                name,
                [server],
                lambda p=path, n=expect: self.closed(server, CHECK_SEND, p, n),
            )
        deferred, allowed = rates["1q_checksend_deferred"], rates["1q_checksend_allowed"]
        return {
            "measured": deferred["rate"],
            "baseline": c1["rate"],
            "ratio": ratio(deferred["rate"], c1["rate"]),
            "server_cpu_us_per_request": deferred.get("server_cpu_us_per_request"),
            "baseline_server_cpu_us_per_request": c1.get("server_cpu_us_per_request"),
            "info_allowed_rate": allowed["rate"],
            "info_allowed_ratio": ratio(allowed["rate"], c1["rate"]),
        }

    def batch_request(self) -> pb.BatchCheckSendRequest:
        return pb.BatchCheckSendRequest(
            location_id=self.location,
            channel=pb.CHANNEL_SMS,
            send_kind=pb.SEND_KIND_AUTOMATED,
            targets=[pb.CheckTarget(contact_id=self.contact(i)) for i in range(BATCH_SIZE)],
        )

    def traced_checksend(self, path: Path, expect: int) -> dict[str, Any]:
        """Figure 7's phase: CheckSend on a server of its own with tracing on, every call
        sampled and exported (default batching) to an OTLP receiver counting the spans."""
        with OtlpSink() as sink:
            traced = self.start_server(
                "T",
                DND_TRACING="true",
                OTEL_TRACES_EXPORTER="otlp",
                OTEL_EXPORTER_OTLP_ENDPOINT=sink.endpoint,
                OTEL_EXPORTER_OTLP_INSECURE="true",
                OTEL_TRACES_SAMPLER="always_on",
            )
            try:
                self.verify(traced, "CheckSend (tracing on)", CHECK_SEND, path)
                verified = self.checks["verified"][f"{traced.name} CheckSend (tracing on)"]
                result = self.phase(
                    "7_checksend_traced",
                    [traced],
                    lambda: self.closed(traced, CHECK_SEND, path, expect),
                )
            finally:
                self.stop_server(traced)  # exports what it still holds
            result["spans_received"] = sink.spans
            # The verifying calls: grpcio's, and nghttp's when it is installed.
            result["verify_calls"] = 1 + (verified["nghttp_status"] != "nghttp not installed")
            result["exports_received"] = sink.exports
        return result

    def tracing_figure(self, off: dict[str, Any], on: dict[str, Any]) -> dict[str, Any]:
        off_us, on_us = off.get("server_cpu_us_per_request"), on.get("server_cpu_us_per_request")
        return {
            "measured": on["rate"],
            "baseline": off["rate"],
            "ratio": ratio(on["rate"], off["rate"]),
            "server_cpu_us_per_request": on_us,
            "baseline_server_cpu_us_per_request": off_us,
            "cpu_us_added_per_request": round(on_us - off_us, 1) if on_us and off_us else None,
            "spans_received": on["spans_received"],
            # Every call of the phase (probe, warm-up, measured) and the verifying ones.
            "calls": on.get("succeeded", 0) + on.get("warmup_requests", 0) + on["verify_calls"],
        }

    def cache_off_figure(
        self, check_path: Path, check: Verified, health_path: Path, health: Verified
    ) -> dict[str, Any]:
        """Figure 2: CheckSend on a server with DND_CACHE=false (the frame must answer as on
        the cached server) vs raw asyncpg primary-key lookups of the same row, run before and
        after it, and (info) asyncpg running the server's own read statement, and the
        ceiling of the ratio on this machine: Health/Check on that server (a call that does
        nothing) at rate H and the lookup at rate R keep the same machine busy, so a CheckSend
        that cost a call plus a lookup would run at H x R / (H + R), H / (H + R) of R."""
        a = self.args
        seconds, warmup, procs = a.seconds, a.warmup, self.workers
        cold = self.start_server("C", DND_CACHE="false")
        check_c = self.verify(cold, "CheckSend (cache off)", CHECK_SEND, check_path)
        if check_c.response != check.response:
            raise RuntimeError("the cache-off server answered the CheckSend frame differently")

        def raw_lookup(statement: str) -> dict[str, Any]:
            start_at = time.time() + 2.5
            tasks = max(1, a.clients * a.streams // procs)
            arg_lists = [
                (
                    self.db.url,
                    statement,
                    self.location,
                    "c00000",
                    tasks,
                    self.pool_size,
                    start_at,
                    warmup,
                    seconds,
                )
                for _ in range(procs)
            ]
            merged = pyload.merge(
                pyload.run_parallel(pyload.pg_lookup_load, arg_lists, seconds + warmup + 90)
            )
            merged["tool"] = (
                f"python asyncpg x{procs} processes x{tasks} callers, pool {self.pool_size}"
            )
            return merged

        r1 = self.phase("2_raw_contact_row_a", [cold], lambda: raw_lookup("contact_row"))
        c2 = self.phase(
            "2_checksend_cache_off",
            [cold],
            lambda: self.closed(cold, CHECK_SEND, check_path, check.response_frame_len),
        )
        r1b = self.phase("2_raw_contact_row_b", [cold], lambda: raw_lookup("contact_row"))
        r2 = self.phase("2_raw_read_contacts", [cold], lambda: raw_lookup("read_contacts"))
        h2 = self.phase(
            "2_health",
            [cold],
            lambda: self.closed(cold, HEALTH_CHECK, health_path, health.response_frame_len),
        )
        self.profile(
            "checksend_cache_off",
            cold,
            lambda: self.closed(cold, CHECK_SEND, check_path, check.response_frame_len),
        )
        self.stop_server(cold)
        raw_rate = mean([r1["rate"], r1b["rate"]])
        us = c2.get("server_cpu_us_per_request")
        return {
            "measured": c2["rate"],
            "baseline": raw_rate,
            "baseline_runs": [r1["rate"], r1b["rate"]],
            "ratio": ratio(c2["rate"], raw_rate),
            "info_read_contacts_raw": r2["rate"],
            "info_ratio_vs_read_contacts_raw": ratio(c2["rate"], r2["rate"]),
            "server_cpu_us_per_request": float(us) if us else None,
            "info_health_rate": h2["rate"],
            "info_ceiling_ratio": ratio(h2["rate"], h2["rate"] + raw_rate),
        }

    # -- the run -----------------------------------------------------------------------------

    def closed(
        self, server: ServerGroup, method: str, path: Path, expect: int, streams: int = 0
    ) -> dict[str, Any]:
        result: LoadResult = self.gen.closed(
            server.addr,
            method,
            path,
            expect,
            self.args.seconds,
            self.args.warmup,
            self.args.clients,
            streams or self.args.streams,
            server_cpu=server.cpu_seconds,
        )
        return result.as_dict()

    def run(self) -> dict[str, Any]:
        # The code measured (the server may change between worker counts of one run).
        self.source = git_state()
        a = self.args
        seconds, warmup = a.seconds, a.warmup
        server = self.start_server("A")
        seeded = asyncio.run(self.seed_and_warm(server))
        check_path = write_frame(self.folder, "check", self.check_request())
        batch_path = write_frame(self.folder, "batch", self.batch_request())
        health_path = write_frame(self.folder, "health", health_pb2.HealthCheckRequest())
        check = self.verify(server, "CheckSend", CHECK_SEND, check_path)
        batch = self.verify(server, "BatchCheckSend", BATCH_CHECK_SEND, batch_path)
        health = self.verify(server, "Health/Check", HEALTH_CHECK, health_path)
        answer = pb.CheckSendResponse.FromString(check.response)
        batch_answer = pb.BatchCheckSendResponse.FromString(batch.response)
        self.checks["frames"] = {
            "check_send": {
                "contact": "c00000",
                "allowed": answer.allowed,
                "denied_by": len(answer.denied_by),
                "request_bytes": check_path.stat().st_size,
                "response_bytes": check.response_frame_len,
            },
            "batch": {
                "targets": BATCH_SIZE,
                "denied": sum(not r.allowed for r in batch_answer.results),
                "request_bytes": batch_path.stat().st_size,
                "response_bytes": batch.response_frame_len,
            },
            "seeded": seeded,
        }
        self.checks["batch_worst_case"] = asyncio.run(self.batch_worst_case(server))
        if a.only_cache_off:
            self.stop_server(server)
            f2 = self.cache_off_figure(check_path, check, health_path, health)
            f2["target"] = TARGETS["2"]
            f2["pass"] = f2["ratio"] is not None and f2["ratio"] >= TARGETS["2"]
            return {
                "workers": self.workers,
                "source": self.source,
                "figures": {"2": f2},
                "checks": self.checks,
                "phases": self.phases,
                "profiles": self.profiles,
            }

        # 1. warm CheckSend vs Health/Check (baseline before and after: drift).
        h1 = self.phase(
            "1_health_a",
            [server],
            lambda: self.closed(server, HEALTH_CHECK, health_path, health.response_frame_len),
        )
        c1 = self.phase(
            "1_checksend",
            [server],
            lambda: self.closed(server, CHECK_SEND, check_path, check.response_frame_len),
        )
        if a.only_quiet:
            f1q = self.quiet_phases(server, c1)
            # Figure 1's CheckSend again after 1q: the baseline's drift over the figure.
            c1b = self.phase(
                "1_checksend_b",
                [server],
                lambda: self.closed(server, CHECK_SEND, check_path, check.response_frame_len),
            )
            self.stop_server(server)
            # As figure 1 does with its Health/Check runs: the baseline is the mean of the runs
            # before and after (the machine's drift over the figure).
            base = mean([c1["rate"], c1b["rate"]])
            f1q["baseline_runs"] = [c1["rate"], c1b["rate"]]
            f1q["baseline"] = base
            f1q["ratio"] = ratio(f1q["measured"], base)
            f1q["info_allowed_ratio"] = ratio(f1q["info_allowed_rate"], base)
            f1q["target"] = TARGETS["1q"]
            f1q["pass"] = f1q["ratio"] is not None and f1q["ratio"] >= TARGETS["1q"]
            return {
                "workers": self.workers,
                "source": self.source,
                "figures": {"1q": f1q},
                "checks": self.checks,
                "phases": self.phases,
                "profiles": self.profiles,
            }
        f1p = None if a.only_tracing else self.purpose_phases(server, c1)
        f1q = None if a.only_tracing else self.quiet_phases(server, c1)
        h2 = self.phase(
            "1_health_b",
            [server],
            lambda: self.closed(server, HEALTH_CHECK, health_path, health.response_frame_len),
        )
        self.profile(
            "checksend",
            server,
            lambda: self.closed(server, CHECK_SEND, check_path, check.response_frame_len),
        )
        self.profile(
            "health",
            server,
            lambda: self.closed(server, HEALTH_CHECK, health_path, health.response_frame_len),
        )

        # 7. CheckSend with tracing on, against figure 1's (tracing off).
        t7 = self.traced_checksend(check_path, check.response_frame_len)
        if a.only_tracing:
            self.stop_server(server)
            return {
                "workers": self.workers,
                "source": self.source,
                "figures": {"7": self.tracing_figure(c1, t7)},
                "checks": self.checks,
                "phases": self.phases,
                "profiles": self.profiles,
            }

        # 3. BatchCheckSend.
        b = self.phase(
            "3_batch",
            [server],
            lambda: self.closed(
                server, BATCH_CHECK_SEND, batch_path, batch.response_frame_len, a.batch_streams
            ),
        )
        self.profile(
            "batch",
            server,
            lambda: self.closed(
                server, BATCH_CHECK_SEND, batch_path, batch.response_frame_len, a.batch_streams
            ),
        )

        # 5. latency at half the max rate (the max: figure 1), Health/Check at the same rate.
        half = c1["rate"] / 2
        lat_c = self.phase(
            "5_checksend_paced",
            [server],
            lambda: self.gen.paced(
                server.addr,
                CHECK_SEND,
                check_path,
                check.response_frame_len,
                half,
                seconds,
                processes=a.latency_processes,
            ).as_dict(),
        )
        lat_h = self.phase(
            "5_health_paced",
            [server],
            lambda: self.gen.paced(
                server.addr,
                HEALTH_CHECK,
                health_path,
                health.response_frame_len,
                half,
                seconds,
                processes=a.latency_processes,
            ).as_dict(),
        )

        # 4. SetDnd vs the same statements in raw asyncpg transactions.
        procs = self.workers
        per_proc = max(1, a.writers // procs)

        def setdnd(location: str) -> dict[str, Any]:
            start_at = time.time() + 2.5
            arg_lists = [
                (server.addr, location, p, per_proc, 4, start_at, warmup, seconds)
                for p in range(procs)
            ]
            merged = pyload.merge(
                pyload.run_parallel(pyload.setdnd_load, arg_lists, seconds + warmup + 90)
            )
            merged["tool"] = f"python grpc.aio x{procs} processes x{per_proc} callers"
            return merged

        def raw_setdnd(location: str) -> dict[str, Any]:
            start_at = time.time() + 2.5
            arg_lists = [
                (self.db.url, location, p, per_proc, self.pool_size, start_at, warmup, seconds)
                for p in range(procs)
            ]
            merged = pyload.merge(
                pyload.run_parallel(pyload.pg_setdnd_load, arg_lists, seconds + warmup + 90)
            )
            merged["tool"] = (
                f"python asyncpg x{procs} processes x{per_proc} callers, pool {self.pool_size}"
            )
            return merged

        wr1 = self.phase(
            "4_raw_setdnd_tx_a", [server], lambda: raw_setdnd(f"{self.location}-raw-a")
        )
        w = self.phase("4_setdnd", [server], lambda: setdnd(f"{self.location}-write"))
        wr2 = self.phase(
            "4_raw_setdnd_tx_b", [server], lambda: raw_setdnd(f"{self.location}-raw-b")
        )
        self.profile("setdnd", server, lambda: setdnd(f"{self.location}-write-profile"))

        # 6. stale reads across replicas during a write-heavy run.
        replica_b = self.start_server("B")

        def stale() -> dict[str, Any]:
            start_at = time.time() + 2.5
            bg = pyload.Processes(procs + 1)
            per = max(1, a.stale_writers // procs)
            for p in range(procs):
                bg.submit(
                    pyload.setdnd_load,
                    server.addr,
                    f"{self.location}-stale-bg",
                    p,
                    per,
                    4,
                    start_at,
                    warmup,
                    seconds,
                )
            bg.submit(
                pyload.stale_probe,
                server.addr,
                replica_b.addr,
                f"{self.location}-stale",
                a.stale_probers,
                start_at + warmup,
                0.0,
                seconds,
            )
            *writers, probe = bg.results(seconds + warmup + 90)
            return {"probe": probe, "background_writes": pyload.merge(writers)}

        st = self.phase("6_stale_reads", [server, replica_b], stale)
        self.stop_server(replica_b)
        self.stop_server(server)

        # 2. cache off: CheckSend vs raw asyncpg lookups of the same row.
        f2 = self.cache_off_figure(check_path, check, health_path, health)

        health_rate = mean([h1["rate"], h2["rate"]])
        raw_tx_rate = mean([wr1["rate"], wr2["rate"]])
        probe = st["probe"]

        def us(phase: dict[str, Any]) -> float | None:
            value = phase.get("server_cpu_us_per_request")
            return float(value) if value else None

        health_us = mean([x for x in (us(h1), us(h2)) if x is not None]) or None
        batch_total_us = us(b)
        batch_us = batch_total_us / BATCH_SIZE if batch_total_us else None
        figures = {
            "1": {
                "measured": c1["rate"],
                "baseline": health_rate,
                "baseline_runs": [h1["rate"], h2["rate"]],
                "ratio": ratio(c1["rate"], health_rate),
                "server_cpu_us_per_request": us(c1),
                "baseline_server_cpu_us_per_request": health_us,
                "cpu_cost_ratio": ratio(health_us, us(c1)),
            },
            "2": f2,
            "3": {
                "measured": b["rate"] * BATCH_SIZE,
                "baseline": c1["rate"],
                "ratio": ratio(b["rate"] * BATCH_SIZE, c1["rate"]),
                "batch_requests_per_s": b["rate"],
                "server_cpu_us_per_check": batch_us,
                "baseline_server_cpu_us_per_request": us(c1),
                "cpu_cost_ratio": ratio(us(c1), batch_us),
            },
            "4": {
                "measured": w["rate"],
                "baseline": raw_tx_rate,
                "baseline_runs": [wr1["rate"], wr2["rate"]],
                "ratio": ratio(w["rate"], raw_tx_rate),
            },
            "5": {
                "offered_rate": half,
                "checksend_ms": lat_c["latency_ms"],
                "health_ms": lat_h["latency_ms"],
                "p50_ratio": ratio(lat_c["latency_ms"].get("p50"), lat_h["latency_ms"].get("p50")),
                "p99_ratio": ratio(lat_c["latency_ms"].get("p99"), lat_h["latency_ms"].get("p99")),
                "checksend_achieved_rate": lat_c["rate"],
                "health_achieved_rate": lat_h["rate"],
            },
            "6": {
                "probes": probe["ops"],
                "allowed_with_min_cursor": probe.get("allowed_with_min_cursor", 0),
                "allowed_without_min_cursor": probe.get("allowed_without_min_cursor", 0),
                "probe_errors": probe["errors"],
                "background_writes_per_s": st["background_writes"]["rate"],
            },
            "7": self.tracing_figure(c1, t7),
        }
        assert f1p is not None and f1q is not None
        figures["1p"] = f1p
        figures["1q"] = f1q
        for key, target in TARGETS.items():
            fig = figures[key]
            fig["target"] = target
            fig["pass"] = fig["ratio"] is not None and fig["ratio"] >= target
        f6 = figures["6"]
        f6["target"] = 0
        f6["pass"] = f6["probes"] > 0 and f6["allowed_with_min_cursor"] == 0
        f6["pass"] = f6["pass"] and not f6["probe_errors"]
        return {
            "workers": self.workers,
            "source": self.source,
            "figures": figures,
            "checks": self.checks,
            "phases": self.phases,
            "profiles": self.profiles,
        }


# --- output -----------------------------------------------------------------------------------


def _n(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def _x(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _result(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def tracing_rows(f7: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    added = f7["cpu_us_added_per_request"]
    return [
        (
            "7 CheckSend, tracing on (all sampled, OTLP)",
            f"{_n(f7['measured'])} req/s",
            f"{_n(f7['baseline'])} req/s tracing off",
            _x(f7["ratio"]),
            "info",
            "",
        ),
        (
            "    (info) tracing cost per CheckSend",
            "-" if added is None else f"{added:+,.1f} us CPU",
            f"{_n(f7['server_cpu_us_per_request'])} us on, "
            f"{_n(f7['baseline_server_cpu_us_per_request'])} us off",
            "",
            "",
            "",
        ),
        (
            "    (info) spans the OTLP receiver got",
            f"{f7['spans_received']:,}",
            f"for {f7['calls']:,} calls (fewer: a full queue dropped some)",
            "",
            "",
            "",
        ),
    ]


def quiet_rows(f1q: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    rows = [
        (
            "1q warm CheckSend, quiet hours (deferred)",
            f"{_n(f1q['measured'])} req/s",
            f"{_n(f1q['baseline'])} req/s figure 1 (no purpose)",
            _x(f1q["ratio"]),
            ">=0.9x",
            _result(f1q["pass"]),
        ),
        (
            "    (info) quiet hours, allowed (10:00 local)",
            f"{_n(f1q['info_allowed_rate'])} req/s",
            f"{_n(f1q['baseline'])} req/s figure 1 (no purpose)",
            _x(f1q["info_allowed_ratio"]),
            "",
            "",
        ),
        (
            "    (info) server CPU per request",
            f"{_n(f1q['server_cpu_us_per_request'])} us",
            f"{_n(f1q['baseline_server_cpu_us_per_request'])} us figure 1",
            "",
            "",
            "",
        ),
    ]
    if "baseline_runs" in f1q:
        before, after = f1q["baseline_runs"]
        rows.append(
            (
                "    (figure 1 runs before / after)",
                "",
                f"{_n(before)} / {_n(after)} req/s",
                "",
                "",
                "",
            )
        )
    return rows


def cache_off_rows(f2: dict[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    return [
        (
            "2 CheckSend, DND_CACHE=false",
            f"{_n(f2['measured'])} req/s",
            f"{_n(f2['baseline'])} req/s asyncpg PK lookup",
            _x(f2["ratio"]),
            ">=0.5x",
            _result(f2["pass"]),
        ),
        (
            "    (asyncpg runs before / after)",
            "",
            f"{_n(f2['baseline_runs'][0])} / {_n(f2['baseline_runs'][1])} req/s",
            "",
            "",
            "",
        ),
        (
            "    (info) vs asyncpg running read_contacts",
            "",
            f"{_n(f2['info_read_contacts_raw'])} req/s",
            _x(f2["info_ratio_vs_read_contacts_raw"]),
            "",
            "",
        ),
        (
            "    (info) ceiling: a call + a lookup (H/(H+R))",
            f"{_n(f2['info_health_rate'])} req/s H",
            "Health/Check on that server",
            _x(f2["info_ceiling_ratio"]),
            "",
            "",
        ),
    ]


def table(run: dict[str, Any], gen: LoadGen, args: argparse.Namespace) -> str:
    f = run["figures"]
    phases = run["phases"]
    load = gen.version or "python fallback (h2load not installed)"
    lines = [
        f"== DND_WORKERS={run['workers']} == load: {load}; {args.clients} connections x "
        f"{args.streams} streams; {args.seconds:g} s measured per phase",
        f"{'figure':<44} {'measured':>22}  {'baseline':<36} {'ratio':>7}  {'target':>7}  result",
    ]

    def row(fig: str, measured: str, baseline: str, r: str, target: str, result: str) -> None:
        lines.append(f"{fig:<44} {measured:>22}  {baseline:<36} {r:>7}  {target:>7}  {result}")

    if set(f) == {"7"}:  # --only-tracing
        for cells in tracing_rows(f["7"]):
            row(*cells)
        return "\n".join(lines)
    if set(f) == {"2"}:  # --only-cache-off
        for cells in cache_off_rows(f["2"]):
            row(*cells)
        return "\n".join(lines)
    if set(f) == {"1q"}:  # --only-quiet
        for cells in quiet_rows(f["1q"]):
            row(*cells)
        return "\n".join(lines)
    f1, f2, f3, f4, f5, f6 = (f[k] for k in "123456")
    drift = f1["baseline_runs"]
    row(
        "1 warm CheckSend",
        f"{_n(f1['measured'])} req/s",
        f"{_n(f1['baseline'])} req/s Health/Check",
        _x(f1["ratio"]),
        ">=0.7x",
        _result(f1["pass"]),
    )
    row(
        "    (Health/Check runs before / after)",
        "",
        f"{_n(drift[0])} / {_n(drift[1])} req/s",
        "",
        "",
        "",
    )
    row(
        "    (info) server CPU per request",
        f"{_n(f1['server_cpu_us_per_request'])} us",
        f"{_n(f1['baseline_server_cpu_us_per_request'])} us Health/Check",
        _x(f1["cpu_cost_ratio"]),
        "",
        "",
    )
    f1p = f["1p"]
    row(
        "1p warm CheckSend, purpose=MARKETING",
        f"{_n(f1p['measured'])} req/s",
        f"{_n(f1p['baseline'])} req/s figure 1 (no purpose)",
        _x(f1p["ratio"]),
        ">=0.9x",
        _result(f1p["pass"]),
    )
    row(
        "    (info) contact without blocks, MARKETING",
        f"{_n(f1p['info_open_marketing_rate'])} req/s",
        f"{_n(f1p['info_open_rate'])} req/s same contact, no purpose",
        _x(f1p["info_open_ratio"]),
        "",
        "",
    )
    for cells in quiet_rows(f["1q"]):
        row(*cells)
    for cells in cache_off_rows(f2):
        row(*cells)
    row(
        f"3 BatchCheckSend x{BATCH_SIZE} ({_n(f3['batch_requests_per_s'], 1)} req/s)",
        f"{_n(f3['measured'])} checks/s",
        f"{_n(f3['baseline'])} req/s CheckSend",
        _x(f3["ratio"]),
        ">=50x",
        _result(f3["pass"]),
    )
    row(
        "    (info) server CPU per contact-check",
        f"{_n(f3['server_cpu_us_per_check'], 1)} us",
        f"{_n(f3['baseline_server_cpu_us_per_request'])} us per CheckSend",
        _x(f3["cpu_cost_ratio"]),
        "",
        "",
    )
    row(
        "4 SetDnd (python client, distinct contacts)",
        f"{_n(f4['measured'])} writes/s",
        f"{_n(f4['baseline'])} tx/s asyncpg same SQL",
        _x(f4["ratio"]),
        ">=0.5x",
        _result(f4["pass"]),
    )
    row(
        "    (asyncpg runs before / after)",
        "",
        f"{_n(f4['baseline_runs'][0])} / {_n(f4['baseline_runs'][1])} tx/s",
        "",
        "",
        "",
    )
    cs, hs = f5["checksend_ms"], f5["health_ms"]
    for q in ("p50", "p99"):
        row(
            f"5 CheckSend {q} @ {_n(f5['offered_rate'])} req/s (R/2)",
            f"{_n(cs.get(q), 2)} ms",
            f"{_n(hs.get(q), 2)} ms Health/Check same rate",
            _x(f5[f"{q}_ratio"]),
            "info",
            "",
        )
    if f5["checksend_achieved_rate"] < 0.95 * f5["offered_rate"]:
        lines.append(
            f"    (!) CheckSend kept up with only {_n(f5['checksend_achieved_rate'])} of "
            f"{_n(f5['offered_rate'])} req/s offered: overloaded during figure 5 (a queue "
            "built up), latencies include the queue"
        )
    row(
        "6 stale 'allowed' with min_cursor",
        f"{f6['allowed_with_min_cursor']} of {f6['probes']}",
        f"probes ({_n(f6['background_writes_per_s'])} bg writes/s)",
        "",
        "=0",
        _result(f6["pass"]),
    )
    row(
        "    (info) 'allowed' without min_cursor",
        f"{f6['allowed_without_min_cursor']} of {f6['probes']}",
        "same probes: cache propagation window",
        "",
        "",
        "",
    )
    for cells in tracing_rows(f["7"]):
        row(*cells)
    worst = run["checks"]["batch_worst_case"]
    lines.append(
        f"BatchCheckSend worst case ({worst['targets']} targets of one contact, "
        f"{worst['blocks']} blocks with 4,000-character evidence): response "
        f"{_n(worst['compact_bytes'])} bytes compact, {_n(worst['details_bytes'])} bytes "
        "with include_details (clients accept 4 MiB)"
    )
    failed = {
        f"{name}: {k}": n
        for name, p in phases.items()
        for k, n in p.get("failed_rpcs_logged", {}).items()
    }
    transport = sum(p.get("failed", 0) for p in phases.values() if isinstance(p, dict))
    bodies = sum((p.get("bodies_bad") or 0) for p in phases.values() if isinstance(p, dict))
    errors: dict[str, int] = {}
    for name, p in phases.items():
        for k, n in (p.get("errors") or {}).items():
            errors[f"{name}: {k}"] = n
        for part in ("probe", "background_writes"):
            for k, n in ((p.get(part) or {}).get("errors") or {}).items():
                errors[f"{name} {part}: {k}"] = n
    verified = run["checks"]["verified"]
    statuses = {v["grpcio_status"] for v in verified.values()}
    statuses |= {v["nghttp_status"] for v in verified.values()}
    lines.append(
        f"checks: frames verified grpc-status {sorted(map(str, statuses))} (grpcio + nghttp); "
        f"failed RPCs in server logs: {sum(failed.values())}{' ' + str(failed) if failed else ''}; "
        f"load-generator failures (h2load failed/non-2xx): {transport}; "
        f"responses without the expected body: {bodies}; "
        f"client errors: {sum(errors.values())}{' ' + str(errors) if errors else ''}"
    )
    problems = run["checks"]["server_problems"]
    if problems:
        lines.append(f"server warnings/errors logged: {problems}")
        for name, examples in run["checks"]["server_problem_examples"].items():
            lines += [f"  {name}: {x[:240]}" for x in examples[:1]]
    cores = []
    for name in (
        "1_health_a",
        "1_checksend",
        "1p_checksend_marketing",
        "1p_open_checksend",
        "1p_open_checksend_marketing",
        "1q_checksend_deferred",
        "1q_checksend_allowed",
        "2_raw_contact_row_a",
        "2_checksend_cache_off",
        "2_raw_contact_row_b",
        "2_raw_read_contacts",
        "2_health",
        "3_batch",
        "4_raw_setdnd_tx_a",
        "4_setdnd",
        "4_raw_setdnd_tx_b",
        "5_checksend_paced",
        "5_health_paced",
        "6_stale_reads",
        "7_checksend_traced",
    ):
        c = phases[name]["cpu_cores"]
        cores.append(
            f"{name:<22} server {c.get('servers', 0):.2f}  postgres {c.get('postgres', 0):.2f}"
            f"  load+bench {c.get('load_and_bench', 0):.2f}  others {c.get('others', 0):.2f}"
            f"  (machine {c.get('machine', 0):.2f} of {os.cpu_count()})"
        )
    busy = [phases[n]["cpu_cores"].get("others", 0.0) for n in phases if "cpu_cores" in phases[n]]
    if busy and mean(busy) > 0.25:
        lines.append(
            f"NOTE: processes not started by the bench kept {mean(busy):.2f} of {os.cpu_count()} "
            "cores busy on average during the phases: absolute rates are depressed and ratios "
            "noisy; compare ratios across runs, ideally on a quiet machine."
        )
    lines.append("cores busy per phase (others = processes not started by the bench):")
    lines += [f"  {c}" for c in cores]
    for name, summary in run["profiles"].items():
        lines.append(profiling.render(f"py-spy {name} (workers={run['workers']})", summary))
    return "\n".join(lines)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = dt.datetime.now(dt.UTC)
    signal.signal(signal.SIGTERM, _interrupt)
    # pgserver's lock folder falls back to /tmp without XDG_RUNTIME_DIR, and says so.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR")
    gen = LoadGen(args.load)
    if gen.tool == "python":
        progress("h2load not found: falling back to the multi-process Python client")
    db = Database()
    runs: list[dict[str, Any]] = []
    current: WorkerRun | None = None
    try:
        progress("starting PostgreSQL ...")
        db.start()
        cpu = CpuMeter(db.postmaster_pid)
        for workers in args.workers:
            current = WorkerRun(args, workers, db, cpu, gen)
            try:
                runs.append(current.run())
            finally:
                current.close()
                current = None
            print(table(runs[-1], gen, args), flush=True)
            print(flush=True)
    except KeyboardInterrupt:
        progress("interrupted: stopping the servers and PostgreSQL")
        return 130
    except (RuntimeError, TimeoutError, OSError, subprocess.SubprocessError) as error:
        progress(f"failed: {error}")
        return 1
    finally:
        if current is not None:
            current.close()
        db.stop()
        progress("stopped the servers and PostgreSQL")

    meta = {
        "benchmark": "hot-path",
        "started_at": started.isoformat(timespec="seconds"),
        "wall_seconds": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        **git_state(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "load_generator": gen.version or "python",
        "database": db.kind,
        "server_env": {"DND_LOG_LEVEL": "INFO", "DND_LOG_READ_SAMPLE_RATE": "0"},
        "args": vars(args),
    }
    if args.profile:
        progress("handler micro-profile (in-process)")
        meta["handler_profile"] = handler_profile.safe_measure()
        print(handler_profile.render(meta["handler_profile"]))
        print()
    passed = all(fig["pass"] for run in runs for fig in run["figures"].values() if "pass" in fig)
    verdict = "figure 7 only, no targets" if args.only_tracing else "yes" if passed else "no"
    print(f"all targets met: {verdict} (wall {meta['wall_seconds']} s)")
    if not args.no_json:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"bench-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(meta | {"runs": runs}, indent=2, default=str) + "\n")
        print(f"results: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
