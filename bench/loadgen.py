"""Load of one pre-encoded gRPC request: h2load (C, one thread) when installed, otherwise a
multi-process Python client (``pyload``) doing the same.

Closed loop (``closed``): C connections x M streams, each stream sending the next request as
soon as the last one answered; the figure is requests/s. Open loop (``paced``): a fixed total
rate whatever the answers do; the figure is the latency distribution. For the open loop,
h2load's ``--rps`` fires all of one process's connections at once, so the bench runs several
single-connection h2load processes, started one after another, each at its share of the rate:
arrivals are spread instead of arriving in bursts.
"""

from __future__ import annotations

import math
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyload
from grpc_frames import GRPC_HEADERS


def _ms(seconds: float) -> str:
    """An h2load duration (integers only: milliseconds)."""
    return f"{max(1, round(seconds * 1000))}ms"


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (not empty)."""
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary_ms(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"n": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": round(percentile(ordered, 50), 3),
        "p90": round(percentile(ordered, 90), 3),
        "p99": round(percentile(ordered, 99), 3),
        "max": round(ordered[-1], 3),
    }


@dataclass
class LoadResult:
    tool: str
    command: str
    seconds: float
    rate: float
    succeeded: int
    # Transport-level failures (h2load: failed + errored + timeout + non-2xx statuses).
    failed: int
    # Responses whose DATA was not exactly the expected message (a failed RPC has none).
    bodies_bad: int | None
    latency_ms: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "command": self.command,
            "seconds": round(self.seconds, 3),
            "rate": round(self.rate, 1),
            "succeeded": self.succeeded,
            "failed": self.failed,
            "bodies_bad": self.bodies_bad,
            "latency_ms": self.latency_ms,
            **self.extra,
        }


_FINISHED = re.compile(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s")
_REQUESTS = re.compile(
    r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, (\d+) failed, "
    r"(\d+) errored, (\d+) timeout"
)
_CODES = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_DATA = re.compile(r"\((\d+)\) data")


def parse_h2load(text: str) -> dict[str, Any]:
    finished = _FINISHED.search(text)
    requests = _REQUESTS.search(text)
    codes = _CODES.search(text)
    data = _DATA.search(text)
    if not (finished and requests and codes and data):
        raise RuntimeError(f"cannot parse h2load output:\n{text[-2000:]}")
    seconds = float(finished.group(1)) / (1000 if finished.group(2) == "ms" else 1)
    total, _started, done, ok, failed, errored, timeout = map(int, requests.groups())
    c2, c3, c4, c5 = map(int, codes.groups())
    return {
        "seconds": seconds,
        "rate": float(finished.group(3)),
        "total": total,
        "done": done,
        "succeeded": ok,
        "failed": failed + errored + timeout,
        "non_2xx": c3 + c4 + c5,
        "status_2xx": c2,
        "data_bytes": int(data.group(1)),
    }


class LoadGen:
    def __init__(self, prefer: str = "auto") -> None:
        found = shutil.which("h2load")
        self.h2load = found if prefer != "python" else None
        if prefer == "h2load" and found is None:
            raise RuntimeError("--load h2load: h2load is not installed (Debian: nghttp2-client)")
        self.version = ""
        if self.h2load:
            out = subprocess.run([self.h2load, "--version"], capture_output=True, text=True)
            self.version = out.stdout.strip()
        self.tool = "h2load" if self.h2load else "python"

    def _command(self, addr: str, method: str, frame_path: Path) -> list[str]:
        assert self.h2load is not None
        command = [self.h2load, "-t", "1", "-d", str(frame_path)]
        for header in GRPC_HEADERS:
            command += ["-H", header]
        return [*command, f"http://{addr}{method}"]

    def closed(
        self,
        addr: str,
        method: str,
        frame_path: Path,
        expect_len: int,
        seconds: float,
        warmup: float,
        clients: int,
        streams: int,
        server_cpu: Callable[[], float] | None = None,
    ) -> LoadResult:
        """h2load with a request count (``-n``), not a duration: a timed run resets the
        streams in flight when time is up, which the server logs as CANCELLED calls and which
        makes the DATA byte count of the run inexact. A short probe and a warm-up run of about
        ``warmup`` seconds estimate the rate; the measured run sends rate x ``seconds``."""
        if self.h2load is None:
            return self._py_closed(
                addr, method, frame_path, expect_len, seconds, warmup, clients, streams, server_cpu
            )
        in_flight = clients * streams
        probe = self._run_n(
            addr, method, frame_path, expect_len, 2 * in_flight, clients, streams, seconds
        )
        estimate = probe.rate
        warm_requests = probe.succeeded
        warm_bad = probe.failed + (probe.bodies_bad or 0)
        if warmup > 0:
            n = max(in_flight, round(estimate * warmup))
            warm = self._run_n(addr, method, frame_path, expect_len, n, clients, streams, seconds)
            estimate = warm.rate
            warm_requests += warm.succeeded
            warm_bad += warm.failed + (warm.bodies_bad or 0)
        n = max(2 * in_flight, round(estimate * seconds))
        before = server_cpu() if server_cpu else 0.0
        result = self._run_n(addr, method, frame_path, expect_len, n, clients, streams, seconds)
        if server_cpu:
            result.extra["server_cpu_us_per_request"] = round(
                (server_cpu() - before) * 1e6 / max(1, result.succeeded), 1
            )
        result.extra["warmup_requests"] = warm_requests
        result.extra["warmup_failed_or_bad"] = warm_bad
        return result

    def _run_n(
        self,
        addr: str,
        method: str,
        frame_path: Path,
        expect_len: int,
        n: int,
        clients: int,
        streams: int,
        seconds: float,
    ) -> LoadResult:
        command = self._command(addr, method, frame_path)
        command[1:1] = ["-n", str(n), "-c", str(clients), "-m", str(streams)]
        # Bounded even if the rate estimate was far off (or the server hangs).
        timeout = 20 * seconds + 60
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"h2load failed ({done.returncode}):\n{done.stdout}{done.stderr}")
        parsed = parse_h2load(done.stdout)
        bodies = parsed["data_bytes"] // expect_len if expect_len else 0
        exact = parsed["data_bytes"] == bodies * expect_len
        bad = parsed["succeeded"] - bodies if exact else max(1, abs(parsed["succeeded"] - bodies))
        return LoadResult(
            tool="h2load",
            command=shlex.join(command),
            seconds=parsed["seconds"],
            rate=parsed["rate"],
            succeeded=parsed["succeeded"],
            failed=max(parsed["failed"], n - parsed["succeeded"]) + parsed["non_2xx"],
            bodies_bad=bad,
            extra={"clients": clients, "streams": streams, "h2load": parsed},
        )

    def _py_closed(
        self,
        addr: str,
        method: str,
        frame_path: Path,
        expect_len: int,
        seconds: float,
        warmup: float,
        clients: int,
        streams: int,
        server_cpu: Callable[[], float] | None = None,
    ) -> LoadResult:
        payload = frame_path.read_bytes()[5:]
        processes = 2
        start_at = time.time() + 2.5
        tasks = max(1, clients * streams // processes)
        channels = max(1, clients // processes)
        args = [
            (addr, method, payload, expect_len, tasks, channels, start_at, warmup, seconds)
            for _ in range(processes)
        ]
        before = server_cpu() if server_cpu else 0.0
        merged = pyload.merge(
            pyload.run_parallel(pyload.grpc_raw_closed, args, timeout=seconds + warmup + 90)
        )
        if server_cpu:
            # Includes the processes' start-up and warm-up: an upper bound.
            spent = server_cpu() - before
            merged["server_cpu_us_per_request"] = round(spent * 1e6 / max(1, merged["ops"]), 1)
        return LoadResult(
            tool="python",
            command=f"pyload.grpc_raw_closed x{processes} processes, {tasks} tasks each",
            seconds=merged["seconds"],
            rate=merged["rate"],
            succeeded=merged["ops"],
            failed=sum(merged["errors"].values()),
            bodies_bad=merged.get("sizes_bad", 0),
            extra={
                "clients": clients,
                "streams": streams,
                "python": merged,
                "server_cpu_us_per_request": merged.get("server_cpu_us_per_request"),
            },
        )

    def paced(
        self,
        addr: str,
        method: str,
        frame_path: Path,
        expect_len: int,
        rate: float,
        seconds: float,
        processes: int = 8,
        skip: float = 0.5,
    ) -> LoadResult:
        if self.h2load is None:
            return self._py_paced(addr, method, frame_path, expect_len, rate, seconds, skip)
        folder = Path(tempfile.mkdtemp(prefix="dnd-hotbench-h2lat-"))
        procs: list[subprocess.Popen[str]] = []
        each = rate / processes
        command: list[str] = []
        try:
            for i in range(processes):
                command = self._command(addr, method, frame_path)
                command[1:1] = ["-c", "1", "-m", "64", "--rps", f"{each:.3f}"]
                command[1:1] = ["-D", _ms(seconds + skip), "--log-file", str(folder / f"{i}")]
                procs.append(
                    subprocess.Popen(
                        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
                    )
                )
                time.sleep(1.0 / rate)  # spread the processes' phases
            outputs = [p.communicate(timeout=seconds + skip + 60)[0] for p in procs]
            for p, out in zip(procs, outputs, strict=True):
                if p.returncode != 0:
                    raise RuntimeError(f"h2load failed ({p.returncode}):\n{out[-2000:]}")
            rows: list[tuple[int, int, int]] = []
            for i in range(processes):
                for line in (folder / f"{i}").read_text().splitlines():
                    start, status, micros = line.split("\t")[:3]
                    rows.append((int(start), int(status), int(micros)))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
            shutil.rmtree(folder, ignore_errors=True)
        parsed = [parse_h2load(o) for o in outputs]
        first = min(r[0] for r in rows) if rows else 0
        kept = [r for r in rows if r[0] >= first + skip * 1e6]
        ok = [r for r in kept if r[1] == 200]
        span = (max(r[0] for r in kept) - min(r[0] for r in kept)) / 1e6 if kept else 0.0
        return LoadResult(
            tool="h2load",
            command=f"{processes} x " + shlex.join(command),
            seconds=span,
            rate=len(kept) / span if span else 0.0,
            succeeded=len(ok),
            failed=len(kept) - len(ok) + sum(p["failed"] + p["non_2xx"] for p in parsed),
            # Timed runs reset the streams in flight at the end: no exact byte count.
            bodies_bad=None,
            latency_ms=summary_ms([r[2] / 1000 for r in ok]),
            extra={"offered_rate": round(rate, 1), "processes": processes},
        )

    def _py_paced(
        self,
        addr: str,
        method: str,
        frame_path: Path,
        expect_len: int,
        rate: float,
        seconds: float,
        skip: float,
    ) -> LoadResult:
        payload = frame_path.read_bytes()[5:]
        processes = 2
        start_at = time.time() + 2.5
        args = [
            (addr, method, payload, expect_len, rate / processes, 4, start_at, skip, seconds)
            for _ in range(processes)
        ]
        merged = pyload.merge(
            pyload.run_parallel(pyload.grpc_raw_paced, args, timeout=seconds + skip + 90)
        )
        return LoadResult(
            tool="python",
            command=f"pyload.grpc_raw_paced x{processes} processes",
            seconds=merged["seconds"],
            rate=merged["rate"],
            succeeded=merged["ops"],
            failed=sum(merged["errors"].values()),
            bodies_bad=merged.get("sizes_bad", 0),
            latency_ms=summary_ms(merged.pop("latencies_ms", [])),
            extra={"offered_rate": round(rate, 1), "processes": processes},
        )
