"""Watch benchmark: how fast committed changes reach WatchChanges subscribers, and which write
rate the change stream keeps up with, each set against the raw write rate measured in the same
run (absolute figures vary with the machine; the ratios are what to compare).

Run from the repository root::

    .venv/bin/python bench/watch_bench.py            # defaults: 100 subscribers, 200 writes/s
    .venv/bin/python bench/watch_bench.py --help

It starts its own PostgreSQL (embedded, in a temporary folder; or a fresh database in the
server named by ``DND_BENCH_DATABASE_URL``) and its own server process on a loopback port, and
stops both at the end, on error and on Ctrl-C. See bench/README.md for what each figure means.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import psutil  # type: ignore[import-untyped]
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from infra import Database, free_port, git_state

REPO = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO / "bench" / "results"
RPC_TIMEOUT = 10.0
clock = time.perf_counter

# Channel option: a channel of its own TCP connection (channels to one target share one
# connection by default).
OWN_CONNECTION = [("grpc.use_local_subchannel_pool", 1)]


# --- statistics ------------------------------------------------------------------------------


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (not empty)."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(values: list[float]) -> dict[str, Any]:
    """n, p50, p90, p99, max of durations given in seconds, in milliseconds."""
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": round(ordered[0] * 1000, 3),
        "p50": round(percentile(ordered, 50) * 1000, 3),
        "p90": round(percentile(ordered, 90) * 1000, 3),
        "p99": round(percentile(ordered, 99) * 1000, 3),
        "max": round(ordered[-1] * 1000, 3),
    }


def ratio(value: float | None, base: float | None) -> float | None:
    if value is None or not base:
        return None
    return round(value / base, 3)


# --- PostgreSQL and the server process -------------------------------------------------------


class Server:
    """A ``dnd-server serve`` process on a free loopback port, with ``extra_env`` on top of the
    bench's environment. Its log goes to a temporary file, read back at the end."""

    def __init__(self, database_url: str, extra_env: dict[str, str]) -> None:
        self.database_url = database_url
        self.extra_env = extra_env
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_lines: list[str] = []
        self.returncode: int | None = None
        self._log_path = ""

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 60.0) -> Server:
        self.port = free_port()
        fd, self._log_path = tempfile.mkstemp(prefix="dnd-bench-server-", suffix=".log")
        env = {
            **os.environ,
            "DND_DATABASE_URL": self.database_url,
            "DND_GRPC_ADDR": self.addr,
            **self.extra_env,
        }
        with os.fdopen(fd, "wb") as log:
            # A session of its own: Ctrl-C reaches the bench only, which stops the server.
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dnd_server", "serve"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        seen = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited early:\n{self.read_log()}")
            seen = self._health()
            if seen == "SERVING":
                return self
            time.sleep(0.1)
        raise TimeoutError(f"the server did not become SERVING ({seen}):\n{self.read_log()}")

    def _health(self) -> str:
        with grpc.insecure_channel(self.addr) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            try:
                request = health_pb2.HealthCheckRequest(service="")
                answer = stub.Check(request, timeout=1)  # type: ignore[attr-defined]
            except grpc.RpcError as error:
                return f"error:{error.code().name}"
            return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def read_log(self) -> str:
        if not self._log_path:
            return ""
        with contextlib.suppress(OSError), open(self._log_path, errors="replace") as log:
            return log.read()
        return ""

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            self.returncode = self.proc.returncode
            self.proc = None
        if self._log_path:
            self.log_lines = [line for line in self.read_log().splitlines() if line.strip()]
            with contextlib.suppress(OSError):
                os.unlink(self._log_path)
            self._log_path = ""


class CpuMeter:
    """CPU time of the server process (with any worker processes), of PostgreSQL (postmaster
    and backends), of the bench process itself and of the whole machine (``machine``: every
    process, other tenants' too), so a phase can say who was busy (cores used = CPU s / wall
    s)."""

    def __init__(self, server_pid: int, postmaster_pid: int | None) -> None:
        self._server = psutil.Process(server_pid)
        self._postmaster = psutil.Process(postmaster_pid) if postmaster_pid else None
        self._bench = psutil.Process()

    @staticmethod
    def _cpu(process: psutil.Process) -> float:
        with contextlib.suppress(psutil.Error):
            times = process.cpu_times()
            return float(times.user + times.system)
        return 0.0

    @classmethod
    def _tree(cls, process: psutil.Process) -> float:
        """A process and its children (server workers, PostgreSQL backends)."""
        total = cls._cpu(process)
        with contextlib.suppress(psutil.Error):
            for child in process.children(recursive=True):
                total += cls._cpu(child)
        return total

    def snapshot(self) -> tuple[float, dict[str, float]]:
        taken = {"server": self._tree(self._server), "bench": self._cpu(self._bench)}
        if self._postmaster is not None:
            taken["postgres"] = self._tree(self._postmaster)
        m = psutil.cpu_times()
        taken["machine"] = float(m.user + m.nice + m.system + m.irq + m.softirq)
        taken["steal"] = float(getattr(m, "steal", 0.0))
        return clock(), taken

    @staticmethod
    def cores(
        before: tuple[float, dict[str, float]], after: tuple[float, dict[str, float]]
    ) -> dict[str, float]:
        wall = max(after[0] - before[0], 1e-9)
        return {
            name: round(max(0.0, after[1][name] - before[1].get(name, 0.0)) / wall, 2)
            for name in after[1]
        }


# --- writes ----------------------------------------------------------------------------------


def set_sms_dnd(location_id: str, contact_id: str, enable: bool) -> pb.SetDndRequest:
    return pb.SetDndRequest(
        location_id=location_id,
        contact_id=contact_id,
        action=pb.DND_ACTION_ENABLE if enable else pb.DND_ACTION_DISABLE,
        direction=pb.DIRECTION_OUTBOUND,
        scope=pb.Scope(channel=pb.CHANNEL_SMS),
        source=pb.SOURCE_USER,
        actor_id="watch-bench",
    )


@dataclass
class WriteLog:
    """Per effective write: when it was sent, when its answer arrived, its change cursor."""

    sent: list[float] = field(default_factory=list)
    acked: list[float] = field(default_factory=list)
    cursors: list[str] = field(default_factory=list)
    unchanged: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    started: float = 0.0
    finished: float = 0.0
    # Paced runs: how late each send was against its schedule; when the last one was sent.
    schedule_lag: list[float] = field(default_factory=list)
    last_sent: float = 0.0

    def record(self, sent: float, acked: float, answer: pb.SetDndResponse) -> None:
        if not answer.changed:
            self.unchanged += 1
            return
        self.sent.append(sent)
        self.acked.append(acked)
        self.cursors.append(answer.cursor)

    @property
    def rate(self) -> float:
        return len(self.cursors) / max(self.finished - self.started, 1e-9)

    def latency(self) -> list[float]:
        return [a - s for s, a in zip(self.sent, self.acked, strict=True)]


async def closed_loop(
    stub: dnd_pb2_grpc.DndServiceAsyncStub,
    location_id: str,
    writers: int,
    duration: float,
    log: WriteLog | None = None,
    contacts_per_writer: int = 4,
) -> WriteLog:
    """``writers`` callers, each sending its next SetDnd as soon as the last one answered, on
    contacts of its own, alternating enable/disable so every call is an effective change."""
    log = log if log is not None else WriteLog()
    log.started = clock()
    stop_at = log.started + duration

    async def writer(w: int) -> None:
        enabled = [False] * contacts_per_writer
        generation = [0] * contacts_per_writer
        i = 0
        while clock() < stop_at:
            k = i % contacts_per_writer
            i += 1
            request = set_sms_dnd(location_id, f"w{w}-c{k}-g{generation[k]}", not enabled[k])
            sent = clock()
            try:
                answer = await stub.SetDnd(request, timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as error:
                log.errors[error.code().name] += 1
                # The contact's state is unknown now: carry on with a fresh one.
                generation[k] += 1
                enabled[k] = False
                await asyncio.sleep(0.05)
                continue
            log.record(sent, clock(), answer)
            enabled[k] = not enabled[k]

    await asyncio.gather(*(writer(w) for w in range(writers)))
    log.finished = clock()
    return log


async def paced(
    stub: dnd_pb2_grpc.DndServiceAsyncStub,
    location_id: str,
    rate: float,
    duration: float,
    log: WriteLog | None = None,
) -> WriteLog:
    """Open loop: one SetDnd every 1/rate s whatever the answers do, so a slow server shows as
    latency instead of a lower offered rate. Each write enables SMS DND on a contact of its own
    (an effective change, and no write waits for another)."""
    count = max(1, round(rate * duration))
    log = log if log is not None else WriteLog()
    tasks: list[asyncio.Task[None]] = []

    async def one(i: int) -> None:
        sent = clock()
        try:
            answer = await stub.SetDnd(set_sms_dnd(location_id, f"p{i}", True), timeout=RPC_TIMEOUT)
        except grpc.aio.AioRpcError as error:
            log.errors[error.code().name] += 1
            return
        log.record(sent, clock(), answer)

    log.started = start = clock() + 0.01
    for i in range(count):
        due = start + i / rate
        delay = due - clock()
        if delay > 0:
            await asyncio.sleep(delay)
        log.schedule_lag.append(max(0.0, clock() - due))
        tasks.append(asyncio.create_task(one(i)))
    log.last_sent = clock()
    await asyncio.gather(*tasks)
    log.finished = clock()
    return log


# --- subscribers -----------------------------------------------------------------------------


class Subscriber:
    """One WatchChanges stream; notes when each event (by cursor) arrived."""

    def __init__(self) -> None:
        self.received: dict[str, float] = {}
        self.bookmarks = 0
        self.duplicates = 0
        self.out_of_order = 0
        self.end_code = ""
        self.end_detail = ""
        self.call: Any = None

    async def run(
        self, stub: dnd_pb2_grpc.DndServiceAsyncStub, request: pb.WatchChangesRequest
    ) -> None:
        received = self.received
        # Cursors are opaque: delivery order is checked by each contact's versions, which
        # its changes carry in commit order.
        last_version: dict[tuple[str, str], int] = {}
        self.call = call = stub.WatchChanges(request)
        try:
            async for message in call:
                if message.HasField("event"):
                    cursor = message.event.cursor
                    if cursor in received:
                        self.duplicates += 1
                        continue
                    received[cursor] = clock()
                    event = message.event
                    key = (event.location_id, event.contact_id)
                    if event.version <= last_version.get(key, 0):
                        self.out_of_order += 1
                    last_version[key] = event.version
                else:
                    self.bookmarks += 1
            self.end_code = "OK"
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED:
                self.end_code = error.code().name
                self.end_detail = error.details() or ""


class SubscriberGroup:
    """``count`` subscribers of one location, spread over ``channels`` connections."""

    def __init__(self, addr: str, count: int, channels: int, request: pb.WatchChangesRequest):
        self.subscribers = [Subscriber() for _ in range(count)]
        self._channels = [
            grpc.aio.insecure_channel(addr, options=OWN_CONNECTION) for _ in range(channels)
        ]
        self._request = request
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        stubs = [dnd_pb2_grpc.DndServiceStub(c) for c in self._channels]
        for i, subscriber in enumerate(self.subscribers):
            stub = stubs[i % len(stubs)]
            self._tasks.append(asyncio.create_task(subscriber.run(stub, self._request)))

    def ended(self) -> Counter[str]:
        return Counter(s.end_code for s in self.subscribers if s.end_code)

    def end_reasons(self) -> Counter[tuple[str, str]]:
        return Counter((s.end_code, s.end_detail) for s in self.subscribers if s.end_code)

    async def wait_for(self, cursor: str, timeout: float) -> int:
        """Wait until every subscriber received ``cursor`` (or ended); how many did not."""
        deadline = clock() + timeout
        while True:
            lacking = [s for s in self.subscribers if cursor not in s.received]
            if not lacking or clock() > deadline or all(s.end_code for s in lacking):
                return len(lacking)
            await asyncio.sleep(0.02)

    async def wait_for_all(self, cursors: list[str], until: float) -> bool:
        """Wait (at most until ``until``) until every subscriber has every cursor; False when
        the time is up or every subscriber still lacking some has ended."""
        want = set(cursors)
        while True:
            # Streams carry this phase's location only: counting is the cheap check, the set
            # comparison the exact one.
            short = [s for s in self.subscribers if len(s.received) < len(want)]
            if not short and all(want <= s.received.keys() for s in self.subscribers):
                return True
            if clock() > until or (short and all(s.end_code for s in short)):
                return False
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for subscriber in self.subscribers:
            if subscriber.call is not None:
                subscriber.call.cancel()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for channel in self._channels:
            await channel.close()


def deliveries(log: WriteLog, subscribers: list[Subscriber], deadline: float) -> dict[str, Any]:
    """Per (subscriber, write): ack→delivered and send→delivered; what was missing by
    ``deadline`` and what never came."""
    from_ack: list[float] = []
    from_send: list[float] = []
    late = missing = 0
    for subscriber in subscribers:
        got = subscriber.received
        for sent, acked, cursor in zip(log.sent, log.acked, log.cursors, strict=True):
            at = got.get(cursor)
            if at is None:
                missing += 1
                continue
            if at > deadline:
                late += 1
            from_ack.append(at - acked)
            from_send.append(at - sent)
    expected = len(log.cursors) * len(subscribers)
    return {
        "expected": expected,
        "received": expected - missing,
        "missing": missing,
        "missing_at_drain_deadline": missing + late,
        "delivered_before_ack": sum(1 for x in from_ack if x < 0),
        "ack_to_delivered": from_ack,
        "send_to_delivered": from_send,
    }


# --- phases ----------------------------------------------------------------------------------

Load = Callable[[str, WriteLog], Awaitable[WriteLog]]


def write_figures(log: WriteLog) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "writes": len(log.cursors),
        "seconds": round(log.finished - log.started, 3),
        "writes_per_s": round(log.rate, 1),
        "write_rpc_ms": summary_ms(log.latency()),
        "unchanged": log.unchanged,
        "errors": dict(log.errors),
    }
    if log.schedule_lag:
        figures["schedule_lag_ms"] = summary_ms(log.schedule_lag)
        window = max(log.last_sent - log.started, 1e-9)
        figures["sent_per_s"] = round(len(log.schedule_lag) / window, 1)
        # Answers that came back while the load was still being sent: below the offered rate
        # when a backlog builds up (a few slow answers at the end do not count against it).
        answered = sum(1 for acked in log.acked if acked <= log.last_sent)
        figures["answered_while_sending_per_s"] = round(answered / window, 1)
        figures["last_answer_after_last_send_s"] = round(log.finished - log.last_sent, 3)
    return figures


class Bench:
    def __init__(self, args: argparse.Namespace, server: Server, cpu: CpuMeter) -> None:
        self.args = args
        self.server = server
        self.cpu = cpu
        self.run_id = uuid.uuid4().hex[:8]
        self.channel = grpc.aio.insecure_channel(server.addr, options=OWN_CONNECTION)
        self.stub = dnd_pb2_grpc.DndServiceStub(self.channel)

    def location(self, name: str) -> str:
        return f"bench-{self.run_id}-{name}"

    def check_server(self) -> None:
        if not self.server.alive():
            raise RuntimeError(f"the server process died:\n{self.server.read_log()[-4000:]}")

    async def alone(self, label: str, description: str, load: Load) -> dict[str, Any]:
        """A write load without subscribers."""
        progress(f"{description} ...")
        lag: list[float] = []
        monitor = asyncio.create_task(loop_lag(lag))
        before = self.cpu.snapshot()
        try:
            log = await load(self.location(label), WriteLog())
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
        cores = CpuMeter.cores(before, self.cpu.snapshot())
        self.check_server()
        return write_figures(log) | {"cpu_cores": cores, "bench_loop_lag_ms": summary_ms(lag)}

    async def with_subscribers(self, label: str, description: str, load: Load) -> dict[str, Any]:
        """Attach the subscribers (resuming after a sentinel write, so nothing of the phase can
        be missed while they connect), wait until a second sentinel reached every one of them
        (they are live), run ``load``, then give the stream the drain time to catch up."""
        a = self.args
        loc = self.location(label)
        first = await self.stub.SetDnd(set_sms_dnd(loc, "sentinel", True), timeout=RPC_TIMEOUT)
        request = pb.WatchChangesRequest(location_ids=[loc], after_cursor=first.cursor)
        group = SubscriberGroup(self.server.addr, a.subscribers, a.sub_channels, request)
        try:
            progress(f"{description}: attaching {a.subscribers} subscribers ...")
            attach_started = clock()
            group.start()
            second = await self.stub.SetDnd(
                set_sms_dnd(loc, "sentinel", False), timeout=RPC_TIMEOUT
            )
            not_live = await group.wait_for(second.cursor, timeout=30)
            attach_s = clock() - attach_started
            if not_live:
                why = "; ".join(
                    f"{code} {n}: {detail}" for (code, detail), n in group.end_reasons().items()
                )
                progress(f"  warning: {not_live} subscribers not live ({why or 'no answer'})")
            await asyncio.sleep(0.2)

            progress(f"{description} ...")
            log = WriteLog()
            lag: list[int] = []
            loop_delays: list[float] = []
            samplers = [
                asyncio.create_task(sample_lag(group, log, lag)),
                asyncio.create_task(loop_lag(loop_delays)),
            ]
            before = self.cpu.snapshot()
            try:
                await load(loc, log)
            finally:
                for sampler in samplers:
                    sampler.cancel()
                await asyncio.gather(*samplers, return_exceptions=True)
            writers_done = clock()
            drain_deadline = writers_done + a.drain
            wanted = [second.cursor, *log.cursors]
            kept_up = await group.wait_for_all(wanted, drain_deadline)
            cores = CpuMeter.cores(before, self.cpu.snapshot())
            if not kept_up:
                # Tell late events from lost ones.
                progress(f"  not drained after {a.drain:g} s; waiting up to {a.grace:g} s more")
                await group.wait_for_all(wanted, drain_deadline + a.grace)
            self.check_server()

            figures = deliveries(log, group.subscribers, drain_deadline)
            from_ack = figures.pop("ack_to_delivered")
            from_send = figures.pop("send_to_delivered")
            last_delivery = max(
                (max(s.received.values()) for s in group.subscribers if s.received),
                default=writers_done,
            )
            ended = group.ended()
            return (
                write_figures(log)
                | {
                    "location_id": loc,
                    "subscribers": a.subscribers,
                    "subscriber_channels": a.sub_channels,
                    "attach_seconds": round(attach_s, 3),
                    "not_live_after_attach": not_live,
                }
                | figures
                | {
                    "duplicates": sum(s.duplicates for s in group.subscribers),
                    "out_of_order": sum(s.out_of_order for s in group.subscribers),
                    "subscribers_ended": dict(ended),
                    "subscriber_end_details": [
                        {"code": code, "detail": detail, "streams": n}
                        for (code, detail), n in group.end_reasons().most_common(5)
                    ],
                    "kept_up": figures["missing_at_drain_deadline"] == 0 and not ended,
                    "drain_seconds": round(max(0.0, last_delivery - writers_done), 3),
                    "ack_to_delivered_ms": summary_ms(from_ack),
                    "send_to_delivered_ms": summary_ms(from_send),
                    "max_lag_events": max(lag, default=0),
                    "cpu_cores": cores,
                    "bench_loop_lag_ms": summary_ms(loop_delays),
                }
            )
        finally:
            await group.close()

    def closed(self) -> Load:
        a = self.args

        def load(loc: str, log: WriteLog) -> Awaitable[WriteLog]:
            return closed_loop(self.stub, loc, a.writers, a.duration, log)

        return load

    def paced(self, rate: float, duration: float) -> Load:
        def load(loc: str, log: WriteLog) -> Awaitable[WriteLog]:
            return paced(self.stub, loc, rate, duration, log)

        return load

    async def run(self) -> dict[str, Any]:
        a = self.args
        s = a.subscribers
        await self.alone("warmup", f"warm-up: closed-loop writers, {a.warmup:g} s", self.warmup())
        phases: dict[str, Any] = {}
        phases["raw_1"] = await self.alone(
            "raw-1", f"raw write rate (1/2): {a.writers} closed-loop writers", self.closed()
        )
        phases["paced_alone"] = await self.alone(
            "paced-alone",
            f"paced {a.rate:g} writes/s, no subscribers",
            self.paced(a.rate, a.duration),
        )
        phases["latency"] = await self.with_subscribers(
            "latency", f"paced {a.rate:g} writes/s, {s} subscribers", self.paced(a.rate, a.duration)
        )
        phases["max_rate"] = await self.with_subscribers(
            "max-rate", f"{a.writers} closed-loop writers, {s} subscribers", self.closed()
        )
        phases["search"] = await self.search(phases["latency"], phases["max_rate"])
        phases["below_max"] = None
        best, _ = max_sustained(phases, a.rate)
        if not sustained_at(phases["latency"], a.rate) and best and a.below_max > 0:
            rate = round(best * a.below_max, 1)
            result = await self.with_subscribers(
                "below-max",
                f"paced {rate:g} writes/s ({a.below_max:g} x max sustained), {s} subscribers",
                self.paced(rate, a.duration),
            )
            phases["below_max"] = {
                "offered_per_s": rate,
                "sustained": sustained_at(result, rate),
            } | result
        phases["raw_2"] = await self.alone(
            "raw-2", f"raw write rate (2/2): {a.writers} closed-loop writers", self.closed()
        )
        return phases

    def warmup(self) -> Load:
        a = self.args

        def load(loc: str, log: WriteLog) -> Awaitable[WriteLog]:
            return closed_loop(self.stub, loc, a.writers, a.warmup, log)

        return load

    async def search(self, latency: dict[str, Any], full: dict[str, Any]) -> list[dict[str, Any]]:
        """When the stream did not keep up with full-speed writers: bisect the paced rate
        between the highest rate known to keep up and the lowest known not to."""
        a = self.args
        if full["kept_up"] or a.search_steps <= 0:
            return []
        ok = sustained_at(latency, a.rate)
        low = a.rate if ok else 0.0
        high = full["writes_per_s"] if ok else min(a.rate, full["writes_per_s"])
        steps: list[dict[str, Any]] = []
        for step in range(a.search_steps):
            rate = round((low + high) / 2, 1)
            if rate <= 0 or high - low < 5:
                break
            result = await self.with_subscribers(
                f"search-{step}",
                f"search {step + 1}/{a.search_steps}: paced {rate:g} writes/s, "
                f"{a.subscribers} subscribers, {a.search_duration:g} s",
                self.paced(rate, a.search_duration),
            )
            result = {"offered_per_s": rate, "sustained": sustained_at(result, rate)} | result
            steps.append(result)
            if result["sustained"]:
                low = rate
            else:
                high = rate
        return steps

    async def close(self) -> None:
        await self.channel.close()


async def loop_lag(samples: list[float], interval: float = 0.01) -> None:
    """The bench's own event-loop delay: how late a 10 ms sleep wakes up. When it is large, the
    bench process (not the server) is the bottleneck and its timestamps run late."""
    while True:
        due = clock() + interval
        await asyncio.sleep(interval)
        samples.append(max(0.0, clock() - due))


async def sample_lag(group: SubscriberGroup, log: WriteLog, samples: list[int]) -> None:
    """Every 100 ms: how many answered writes the slowest subscriber has not received yet
    (its received count includes the sentinel, hence the - 1)."""
    while True:
        await asyncio.sleep(0.1)
        slowest = min(len(s.received) for s in group.subscribers) - 1
        samples.append(max(0, len(log.cursors) - slowest))


def progress(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# --- report ----------------------------------------------------------------------------------


def figures_of(phases: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    """The headline figures and their ratios to the same run's baselines."""
    r1, r2 = phases["raw_1"]["writes_per_s"], phases["raw_2"]["writes_per_s"]
    raw = (r1 + r2) / 2
    alone_w = phases["paced_alone"]["write_rpc_ms"]["p50"]
    lat = phases["latency"]
    w = lat["write_rpc_ms"]["p50"]
    full = phases["max_rate"]
    lat_sustained = sustained_at(lat, args.rate)
    sustained, bound = max_sustained(phases, args.rate)
    below = phases.get("below_max")
    return {
        "raw_writes_per_s": round(raw, 1),
        "raw_drift": round(abs(r1 - r2) / raw, 3) if raw else None,
        "offered_vs_raw": ratio(args.rate, raw),
        "write_p50_ms_alone": alone_w,
        "raw_write_p50_ms": round(
            (phases["raw_1"]["write_rpc_ms"]["p50"] + phases["raw_2"]["write_rpc_ms"]["p50"]) / 2, 3
        ),
        "write_p50_ms_with_subscribers": w,
        "write_p50_with_vs_without_subscribers": ratio(w, alone_w),
        "ack_to_delivered_p50_vs_write_p50": ratio(lat["ack_to_delivered_ms"]["p50"], w),
        "ack_to_delivered_p99_vs_write_p50": ratio(lat["ack_to_delivered_ms"]["p99"], w),
        "send_to_delivered_p50_vs_write_p50": ratio(lat["send_to_delivered_ms"]["p50"], w),
        "send_to_delivered_p99_vs_write_p50": ratio(lat["send_to_delivered_ms"]["p99"], w),
        "latency_phase_missing": lat["missing"],
        "latency_phase_sustained": lat_sustained,
        "with_subscribers_writes_per_s": full["writes_per_s"],
        "with_subscribers_vs_raw": ratio(full["writes_per_s"], raw),
        "max_sustained_writes_per_s": sustained,
        "max_sustained_vs_raw": ratio(sustained, raw),
        "max_sustained_note": bound,
        "below_max_writes_per_s": below["offered_per_s"] if below else None,
        "below_max_ack_to_delivered_p50_vs_write_p50": ratio(
            below["ack_to_delivered_ms"]["p50"], below["write_rpc_ms"]["p50"]
        )
        if below
        else None,
        "below_max_ack_to_delivered_p99_vs_write_p50": ratio(
            below["ack_to_delivered_ms"]["p99"], below["write_rpc_ms"]["p50"]
        )
        if below
        else None,
    }


def max_sustained(phases: dict[str, Any], rate: float) -> tuple[float | None, str]:
    """The highest write rate the stream was seen to keep up with, and how it was found."""
    full = phases["max_rate"]
    if full["kept_up"]:
        return full["writes_per_s"], "writers at full speed; all delivered in the drain time"
    known = [s["writes_per_s"] for s in phases["search"] if s["sustained"]]
    if sustained_at(phases["latency"], rate):
        known.append(phases["latency"]["writes_per_s"])
    above = min(
        [s["offered_per_s"] for s in phases["search"] if not s["sustained"]]
        + [full["writes_per_s"]]
    )
    return (max(known) if known else None), f"best paced rate sustained; not at {above:g}/s"


def sustained_at(result: dict[str, Any], offered: float) -> bool:
    """A paced rate is sustained when the writes kept pace (answered, while the load was sent,
    at >= 90 % of the offered rate) and the stream delivered everything within the drain time,
    dropping no subscriber."""
    answered = result.get("answered_while_sending_per_s", result["writes_per_s"])
    return bool(result["kept_up"]) and answered >= 0.9 * offered


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def table(meta: dict[str, Any], phases: dict[str, Any], fig: dict[str, Any]) -> str:
    a = meta["args"]
    subs = a["subscribers"]
    rows: list[tuple[str, ...]] = []

    def section(title: str) -> None:
        rows.append((title,))

    def row(label: str, value: str, rat: str = "", note: str = "") -> None:
        rows.append(("  " + label, value, rat, note))

    def pair(d: dict[str, Any]) -> str:
        return f"{ms(d['p50'])} / {ms(d['p99'])} ms"

    def pair_x(d: dict[str, Any], base: float | None) -> str:
        return f"{x(ratio(d['p50'], base))} / {x(ratio(d['p99'], base))} W"

    def errors(phase: dict[str, Any]) -> str:
        failed = phase["errors"]
        if not failed and not phase["unchanged"]:
            return ""
        listed = ", ".join(f"{v} {k}" for k, v in failed.items())
        unchanged = f", {phase['unchanged']} unchanged" if phase["unchanged"] else ""
        return f"; failed writes: {sum(failed.values())} ({listed}){unchanged}"

    def ended(phase: dict[str, Any]) -> str:
        codes = phase["subscribers_ended"]
        return f"{sum(codes.values())}" + (f" ({', '.join(codes)})" if codes else "")

    def stream_rows(p: dict[str, Any], offered: float | None) -> None:
        w = p["write_rpc_ms"]["p50"]
        # The same load without subscribers: paced alone, or the closed-loop raw runs.
        alone_p50 = fig["write_p50_ms_alone"] if offered is not None else fig["raw_write_p50_ms"]
        if offered is not None:
            row(
                "offered / sent / answered while sending",
                f"{offered:g} / {p['sent_per_s']:.1f} / {p['answered_while_sending_per_s']:.1f} /s",
                f"{x(ratio(offered, raw))} R",
                "sustained: "
                + ("yes" if sustained_at(p, offered) else "NO")
                + f"; last answer {p['last_answer_after_last_send_s']:.2f} s after the last send"
                + errors(p),
            )
        else:
            row(
                "write rate with subscribers",
                f"{p['writes_per_s']:.1f} writes/s",
                f"{x(ratio(p['writes_per_s'], raw))} R",
                errors(p).lstrip("; "),
            )
        row(
            "write RPC p50 / p99 (W = p50)",
            pair(p["write_rpc_ms"]),
            pair_x(p["write_rpc_ms"], w),
            f"W = {x(ratio(w, alone_p50))} the same load's p50 without subscribers",
        )
        row(
            "commit->subscriber: ack->delivered p50 / p99",
            pair(p["ack_to_delivered_ms"]),
            pair_x(p["ack_to_delivered_ms"], w),
            f"max {ms(p['ack_to_delivered_ms']['max'])} ms",
        )
        row(
            "send->delivered p50 / p99",
            pair(p["send_to_delivered_ms"]),
            pair_x(p["send_to_delivered_ms"], w),
        )
        row(
            "delivered / expected",
            f"{p['received']} / {p['expected']}",
            "",
            f"missing {p['missing']}, duplicates {p['duplicates']}, out of order "
            f"{p['out_of_order']}, streams ended {ended(p)}",
        )
        row(
            f"drained within {a['drain']:g} s of the last answer",
            "yes" if p["kept_up"] else "NO",
            "",
            f"last delivery after {p['drain_seconds']:.2f} s; slowest subscriber's lag up to "
            f"{p['max_lag_events']} events",
        )

    raw = fig["raw_writes_per_s"]
    section("baseline, no subscribers")
    row(
        f"raw write rate, {a['writers']} closed-loop writers (R)",
        f"{raw:.1f} writes/s",
        "1.00x R",
        f"runs {phases['raw_1']['writes_per_s']:.1f} / "
        f"{phases['raw_2']['writes_per_s']:.1f} (drift {fig['raw_drift'] * 100:.1f}%)",
    )
    alone = phases["paced_alone"]["write_rpc_ms"]
    row(f"write RPC p50 / p99, paced {a['rate']:g}/s", pair(alone), pair_x(alone, alone["p50"]))
    section(f"latency: {a['rate']:g} writes/s paced, {subs} subscribers")
    stream_rows(phases["latency"], a["rate"])
    section(f"max rate: {a['writers']} closed-loop writers at full speed, {subs} subscribers")
    stream_rows(phases["max_rate"], None)
    for step in phases["search"]:
        row(
            f"search: paced {step['offered_per_s']:g}/s",
            "sustained" if step["sustained"] else "NO",
            f"{x(ratio(step['offered_per_s'], raw))} R",
            f"answered while sending {step['answered_while_sending_per_s']:.1f}/s, "
            f"ack->delivered p99 "
            f"{ms(step['ack_to_delivered_ms']['p99'])} ms, missing at deadline "
            f"{step['missing_at_drain_deadline']}, streams ended {ended(step)}",
        )
    sustained = fig["max_sustained_writes_per_s"]
    row(
        "max sustained write rate with subscribers",
        "none found" if sustained is None else f"{sustained:.1f} writes/s",
        f"{x(fig['max_sustained_vs_raw'])} R",
        fig["max_sustained_note"],
    )
    below = phases.get("below_max")
    if below:
        section(
            f"latency below the max: {below['offered_per_s']:g} writes/s paced "
            f"({a['below_max']:g} x max sustained), {subs} subscribers"
        )
        stream_rows(below, below["offered_per_s"])
    section("CPU, cores busy: server / postgres / bench / whole machine (other tenants too)")
    for name, label in (
        ("raw_1", "raw writes, no subscribers"),
        ("paced_alone", f"paced {a['rate']:g}/s, no subscribers"),
        ("latency", f"paced {a['rate']:g}/s, {subs} subscribers"),
        ("max_rate", f"full speed, {subs} subscribers"),
        ("below_max", f"paced {below['offered_per_s']:g}/s, {subs} subscribers" if below else ""),
    ):
        if not phases.get(name):
            continue
        c = phases[name]["cpu_cores"]
        busy = " / ".join(
            f"{c.get(k, float('nan')):.2f}" for k in ("server", "postgres", "bench", "machine")
        )
        loop = phases[name]["bench_loop_lag_ms"]
        row(
            label,
            busy,
            "",
            f"bench event-loop lag p99 {ms(loop['p99'])} ms, max "
            f"{ms(loop['max'])} ms; steal {c.get('steal', 0.0):.2f}",
        )

    cells = [r for r in rows if len(r) == 4]
    widths = [max(len(r[i]) for r in cells) for i in range(3)]
    lines = [
        f"dnd-service watch benchmark: {subs} subscribers, {a['rate']:g} writes/s, "
        f"{a['duration']:g} s phases ({meta['cpus']} CPUs, {meta['database']} PostgreSQL)",
        "Ratios are to baselines of this same run: R = raw write rate without subscribers,",
        "W = write RPC p50 of the same phase. Times in ms, rates in writes/s.",
    ]
    for r in rows:
        if len(r) == 1:
            lines += ["", r[0]]
            continue
        label, value, rat, note = r
        lines.append(
            f"{label:<{widths[0]}}  {value:>{widths[1]}}  {rat:>{widths[2]}}  {note}".rstrip()
        )
    return "\n".join(lines)


# --- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--duration", type=float, default=10.0, help="seconds per measured phase")
    p.add_argument("--subscribers", type=int, default=100, help="concurrent WatchChanges streams")
    p.add_argument("--rate", type=float, default=200.0, help="paced write rate (writes/s)")
    p.add_argument("--writers", type=int, default=16, help="closed-loop writers")
    p.add_argument("--sub-channels", type=int, default=4, help="connections the subscribers share")
    p.add_argument(
        "--drain", type=float, default=2.0, help="seconds after writers stop to deliver all"
    )
    p.add_argument(
        "--grace", type=float, default=5.0, help="extra wait to tell late events from lost ones"
    )
    p.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds (not reported)")
    p.add_argument(
        "--search-steps",
        type=int,
        default=3,
        help="when full-speed writes outrun the stream: paced bisection steps for the max rate",
    )
    p.add_argument("--search-duration", type=float, default=5.0, help="seconds per search step")
    p.add_argument(
        "--below-max",
        type=float,
        default=0.5,
        help="when --rate is not sustained: also measure latency at this fraction of the max "
        "sustained rate (0: skip)",
    )
    p.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment of the server process (repeatable)",
    )
    p.add_argument("--no-json", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    if args.duration <= 0 or args.rate <= 0 or args.subscribers < 1 or args.writers < 1:
        p.error("duration and rate must be > 0, subscribers and writers >= 1")
    if args.sub_channels < 1:
        p.error("--sub-channels must be >= 1")
    for item in args.server_env:
        if "=" not in item:
            p.error(f"--server-env wants NAME=VALUE, got {item!r}")
    return args


async def run(args: argparse.Namespace, server: Server, db: Database) -> dict[str, Any]:
    bench = Bench(args, server, CpuMeter(server.pid, db.postmaster_pid))
    try:
        return await bench.run()
    finally:
        await bench.close()


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_env = {
        "DND_LOG_LEVEL": "WARNING",
        # Open (no tokens), the server counts every stream from one host as one caller, and
        # all the bench's subscribers come from 127.0.0.1.
        "DND_MAX_STREAMS_PER_CALLER": str(args.subscribers + 16),
        **dict(item.split("=", 1) for item in args.server_env),
    }
    started = dt.datetime.now(dt.UTC)
    source = git_state()
    signal.signal(signal.SIGTERM, _interrupt)
    # pgserver's lock folder falls back to /tmp without XDG_RUNTIME_DIR, and says so.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    db = Database(prefix="bench")
    server: Server | None = None
    try:
        progress("starting PostgreSQL ...")
        db.start()
        progress("starting the server ...")
        server = Server(db.url, server_env)
        server.start()
        phases = asyncio.run(run(args, server, db))
    except KeyboardInterrupt:
        progress("interrupted: stopping the server and PostgreSQL")
        return 130
    except (RuntimeError, TimeoutError) as error:
        progress(f"failed: {error}")
        return 1
    finally:
        if server is not None:
            server.stop()
        db.stop()
        progress("stopped the server and PostgreSQL")

    meta = {
        "benchmark": "watch",
        "started_at": started.isoformat(timespec="seconds"),
        "wall_seconds": round((dt.datetime.now(dt.UTC) - started).total_seconds(), 1),
        **source,
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "grpcio": grpc.__version__,
        "database": db.kind,
        "server_env": server_env,
        "server_exit_code": server.returncode if server else None,
        "server_log_lines": server.log_lines[-50:] if server else [],
        "args": vars(args),
    }
    fig = figures_of(phases, args)
    print(table(meta, phases, fig))
    if server is not None and server.log_lines:
        print(f"\nserver log (WARNING and up): {len(server.log_lines)} lines, last ones:")
        for line in server.log_lines[-5:]:
            print("  " + line[:300])
    if not args.no_json:
        RESULTS_DIR.mkdir(parents=True, exist_ok=True)
        path = RESULTS_DIR / f"watch-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
        path.write_text(json.dumps(meta | {"figures": fig, "phases": phases}, indent=2) + "\n")
        print(f"\nresults: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
