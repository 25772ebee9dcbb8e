"""What the hot-path benchmark runs against: a PostgreSQL (embedded, or a fresh database in the
server named by ``DND_BENCH_DATABASE_URL``), ``dnd-server`` process groups on fixed loopback
ports with their JSON log collected in a file, and a CPU meter.

Everything started here is stopped by ``stop()`` (the server group by its own process group id,
since ``DND_WORKERS=N`` forks worker processes).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import asyncpg
import grpc
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
clock = time.perf_counter


def with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name`` instead (query string and socket kept)."""
    base, _, query = url.partition("?")
    scheme_host, _, _old = base.rpartition("/")
    return f"{scheme_host}/{name}" + (f"?{query}" if query else "")


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url, timeout=10)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


class Database:
    """A fresh database in ``DND_BENCH_DATABASE_URL``'s server (dropped at the end), or the
    embedded PostgreSQL in a temporary folder (removed at the end)."""

    def __init__(self, prefix: str = "hotbench") -> None:
        self.prefix = prefix
        self.url = ""
        self.kind = ""
        self.postmaster_pid: int | None = None
        self._admin_url = ""
        self._name = ""
        self._folder = ""
        self._pg: Any = None

    def start(self) -> Database:
        external = os.environ.get("DND_BENCH_DATABASE_URL", "").strip()
        if external:
            self.kind = "DND_BENCH_DATABASE_URL"
            self._admin_url = external
        else:
            from pgserver.postgres_server import get_server

            self.kind = "embedded"
            self._folder = tempfile.mkdtemp(prefix=f"dnd-{self.prefix}-pg-")
            os.chmod(self._folder, 0o755)
            self._pg = get_server(os.path.join(self._folder, "pgdata"), cleanup_mode="stop")
            self._admin_url = self._pg.get_uri()
            self.postmaster_pid = self._pg.get_pid()
        self._name = f"dnd_{self.prefix}_{uuid.uuid4().hex[:10]}"
        asyncio.run(_admin(self._admin_url, f'CREATE DATABASE "{self._name}"'))
        self.url = with_database(self._admin_url, self._name)
        return self

    def stop(self) -> None:
        if self._name and self._pg is None and self._admin_url:
            with contextlib.suppress(Exception):
                drop = f'DROP DATABASE IF EXISTS "{self._name}" WITH (FORCE)'
                asyncio.run(_admin(self._admin_url, drop))
        self._name = ""
        if self._pg is not None:
            with contextlib.suppress(Exception):
                self._pg.cleanup()
            self._pg = None
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = ""


_DECODER = json.JSONDecoder()


def parse_log_line(line: str) -> list[dict[str, Any]]:
    """The JSON objects of one log line. Workers sharing stdout can glue two lines into one
    (``{...}{...}``): each object is still returned, plus a ``glued_log_lines`` marker entry;
    text that is not JSON becomes a ``non_json_line`` entry."""
    found: list[dict[str, Any]] = []
    text = line.strip()
    i = 0
    while i < len(text):
        try:
            entry, end = _DECODER.raw_decode(text, i)
        except ValueError:
            found.append({"event": "non_json_line", "level": "warning", "text": text[i:][:400]})
            break
        if isinstance(entry, dict):
            found.append(entry)
        i = end
        while i < len(text) and text[i].isspace():
            i += 1
    if len(found) > 1:
        found.append({"event": "glued_log_lines", "level": "warning", "objects": len(found)})
    return found


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class ServerGroup:
    """``python -m dnd_server serve`` with ``DND_WORKERS`` processes on a fixed loopback port.

    Its stdout (JSON log lines, INFO and up; hot reads log failures only) goes to a temporary
    file that ``new_entries()`` reads incrementally."""

    def __init__(
        self, name: str, database_url: str, workers: int, extra_env: dict[str, str] | None = None
    ) -> None:
        self.name = name
        self.database_url = database_url
        self.workers = workers
        self.extra_env = dict(extra_env or {})
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.worker_pids: list[int] = []
        self.returncode: int | None = None
        self.env: dict[str, str] = {}
        self._log_path = ""
        self._offset = 0
        self._partial = b""
        self.entries: list[dict[str, Any]] = []

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 90.0) -> ServerGroup:
        self.port = free_port()
        fd, self._log_path = tempfile.mkstemp(prefix=f"dnd-hotbench-{self.name}-", suffix=".log")
        os.close(fd)
        self.env = {
            "DND_DATABASE_URL": self.database_url,
            "DND_GRPC_ADDR": self.addr,
            "DND_LOG_LEVEL": "INFO",
            "DND_LOG_READ_SAMPLE_RATE": "0",
            "DND_WORKERS": str(self.workers),
            **self.extra_env,
        }
        # O_APPEND: the workers of a group share the file and write whole lines.
        with open(self._log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "dnd_server", "serve"],
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                # A process group of its own: Ctrl-C reaches the bench only, and stop() can
                # reach the workers even if the supervisor is gone.
                start_new_session=True,
            )
        cache = self.env.get("DND_CACHE", "true").lower() not in ("0", "false", "no", "off")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server {self.name} exited early:\n{self.read_log()[-3000:]}")
            self.new_entries()
            events = Counter(e.get("event") for e in self.entries)
            listening = [e for e in self.entries if e.get("event") == "server_listening"]
            serving = sum(
                1
                for e in self.entries
                if e.get("event") == "health_changed" and e.get("serving") is True
            )
            ready = serving >= self.workers and (
                not cache or events["cache_enabled"] >= self.workers
            )
            if ready and len(listening) >= self.workers and self._health() == "SERVING":
                self.worker_pids = [int(e["pid"]) for e in listening[-self.workers :]]
                return self
            time.sleep(0.1)
        raise TimeoutError(f"server {self.name} did not become ready:\n{self.read_log()[-3000:]}")

    def _health(self) -> str:
        with grpc.insecure_channel(self.addr) as channel:
            stub: Any = health_pb2_grpc.HealthStub(channel)
            try:
                answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1)
            except grpc.RpcError as error:
                failed: Any = error
                return f"error:{failed.code().name}"
            return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def cpu_seconds(self) -> float:
        """CPU time used so far by the group (supervisor and workers)."""
        if self.proc is None:
            return 0.0
        try:
            return tree_cpu(psutil.Process(self.proc.pid))
        except psutil.Error:
            return 0.0

    def new_entries(self) -> list[dict[str, Any]]:
        """Log entries written since the last call (also appended to ``self.entries``)."""
        if not self._log_path:
            return []
        with contextlib.suppress(OSError), open(self._log_path, "rb") as log:
            log.seek(self._offset)
            chunk = log.read()
            self._offset += len(chunk)
            data = self._partial + chunk
            lines = data.split(b"\n")
            self._partial = lines.pop()
            found = []
            for line in lines:
                found += parse_log_line(line.decode(errors="replace"))
            self.entries.extend(found)
            return found
        return []

    def failures_since_last(self) -> dict[str, Any]:
        """Failed RPCs logged since the last call: {"count": n, "by": {"Method CODE": n}}, plus
        warnings/errors the server logged."""
        entries = self.new_entries()
        by: Counter[str] = Counter()
        problems: Counter[str] = Counter()
        examples: dict[str, list[str]] = {}
        for e in entries:
            if e.get("event") == "rpc" and e.get("code") != "OK":
                by[f"{e.get('method')} {e.get('code')}"] += 1
            elif e.get("level") in ("warning", "error", "critical") or e.get("event") == (
                "non_json_line"
            ):
                key = str(e.get("event"))
                problems[key] += 1
                if len(examples.setdefault(key, [])) < 3:
                    examples[key].append(json.dumps(e)[:400])
        return {
            "count": sum(by.values()),
            "by": dict(by),
            "log_problems": dict(problems),
            "examples": examples,
        }

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
                    self.proc.wait(timeout=25)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
            # Workers of a supervisor that did not wait for them: the group we started.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.returncode = self.proc.returncode
            self.proc = None
        if self._log_path:
            self.new_entries()
            with contextlib.suppress(OSError):
                os.unlink(self._log_path)
            self._log_path = ""


def tree_cpu(process: psutil.Process | None) -> float:
    """CPU seconds of a process, its reaped children and its live descendants."""
    if process is None:
        return 0.0
    total = 0.0
    with contextlib.suppress(psutil.Error):
        times = process.cpu_times()
        total += times.user + times.system + times.children_user + times.children_system
        for child in process.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                t = child.cpu_times()
                total += t.user + t.system
    return total


class CpuMeter:
    """CPU seconds per wall second (cores busy) of the server groups, PostgreSQL, the load
    generators (children of the bench) and the whole machine."""

    def __init__(self, postmaster_pid: int | None) -> None:
        self._postmaster = psutil.Process(postmaster_pid) if postmaster_pid else None
        self._bench = psutil.Process()
        self.servers: list[ServerGroup] = []

    def snapshot(self) -> tuple[float, dict[str, float]]:
        taken: dict[str, float] = {}
        server_total = 0.0
        for server in self.servers:
            if server.proc is not None:
                server_total += server.cpu_seconds()
        taken["servers"] = server_total
        bench_tree = 0.0
        with contextlib.suppress(psutil.Error):
            own = self._bench.cpu_times()
            # children_*: load generators that ended (h2load runs, client processes).
            bench_tree = own.user + own.system + own.children_user + own.children_system
            for child in self._bench.children(recursive=True):
                if any(s.proc is not None and child.pid == s.proc.pid for s in self.servers):
                    continue
                if any(child.pid in s.worker_pids for s in self.servers):
                    continue
                with contextlib.suppress(psutil.Error):
                    t = child.cpu_times()
                    bench_tree += t.user + t.system
        taken["load_and_bench"] = bench_tree
        if self._postmaster is not None:
            taken["postgres"] = tree_cpu(self._postmaster)
        m = psutil.cpu_times()
        taken["machine"] = float(m.user + m.nice + m.system + m.irq + m.softirq)
        taken["steal"] = float(getattr(m, "steal", 0.0))
        return clock(), taken

    @staticmethod
    def cores(
        before: tuple[float, dict[str, float]], after: tuple[float, dict[str, float]]
    ) -> dict[str, float]:
        wall = max(after[0] - before[0], 1e-9)
        cores = {
            name: round(max(0.0, after[1][name] - before[1].get(name, 0.0)) / wall, 2)
            for name in after[1]
            if name in before[1]
        }
        ours = sum(cores.get(k, 0.0) for k in ("servers", "postgres", "load_and_bench"))
        # Everything else on the machine (other tenants, the system).
        cores["others"] = round(max(0.0, cores["machine"] - ours), 2)
        return cores


def git_state() -> dict[str, Any]:
    """The commit measured, and the files outside bench/ that differ from it."""

    def git(*argv: str) -> str:
        try:
            done = subprocess.run(
                ["git", *argv], cwd=REPO, capture_output=True, text=True, timeout=5, check=False
            )
        except (OSError, subprocess.SubprocessError):
            return ""
        return done.stdout.rstrip("\n")  # porcelain lines start with a space

    changed = [
        line[3:]
        for line in git("status", "--porcelain", "--untracked-files=no").splitlines()
        if not line[3:].startswith("bench/")
    ]
    return {"git_commit": git("rev-parse", "--short", "HEAD"), "git_modified_files": changed}
