"""``--profile``: py-spy sampling of the server's worker processes during an extra, unmeasured
repeat of a phase, summarised as the functions where the samples fall (own time and time
including callees) so a slow figure comes with where its time goes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any


def py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


class Recorder:
    """``py-spy record`` on each pid for ``seconds``, raw (collapsed stacks) output."""

    def __init__(self, pids: list[int], seconds: float, out: Path) -> None:
        self.files = [out.with_name(f"{out.name}-{pid}.txt") for pid in pids]
        self.procs: list[subprocess.Popen[bytes]] = []
        tool = py_spy()
        if tool is None:
            raise RuntimeError("--profile needs py-spy: .venv/bin/pip install py-spy")
        for pid, path in zip(pids, self.files, strict=True):
            command = [tool, "record", "--pid", str(pid), "--duration", f"{max(1, round(seconds))}"]
            command += ["--rate", "200", "--format", "raw", "--nonblocking", "-o", str(path)]
            self.procs.append(
                subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            )

    def wait(self, timeout: float) -> list[str]:
        problems = []
        for proc in self.procs:
            try:
                _out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                _out, err = proc.communicate()
            if proc.returncode != 0:
                problems.append(err.decode(errors="replace")[-500:])
        return problems


def _short(frame: str) -> str:
    # "handler (dnd_server/rpc/servicer.py:75)" -> "handler (rpc/servicer.py)"
    name, _, where = frame.partition(" (")
    where = where.rstrip(")")
    path = where.rsplit(":", 1)[0]
    for marker in ("site-packages/", "dnd_server/", "python3.11/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{name} ({path})" if path else name


# Where a sample's innermost Python frame says the time went. py-spy sees Python frames only
# (grpc's Cython module is stripped): native work shows as the Python frame that called it.
_CATEGORIES = (
    ("EpollSelector.select (", "idle: event loop waiting in epoll"),
    ("Handle._run (", "native code run by the event loop (grpc Cython server, C asyncio)"),
    ("Thread.run (", "grpc completion-queue poller thread (native)"),
    ("(dnd_server/", "dnd_server code"),
    ("__create_fn__", "dataclass constructors (dnd_server dataclasses)"),
    ("(asyncpg/", "asyncpg (Python part)"),
    ("_SelectorSocketTransport.write", "socket writes (asyncpg queries: send() syscalls)"),
    ("(structlog/", "structlog (logging)"),
    ("protobuf/", "protobuf Python helpers (Timestamp.FromDatetime...)"),
    ("(grpc", "grpc (Python part)"),
    ("(asyncio/", "asyncio event loop (Python)"),
    ("(selectors.py", "asyncio event loop (Python)"),
)


# The process's entry frames (on every stack): left out of the inclusive list.
_ENTRY_FILES = ("(dnd_server/__main__.py", "(dnd_server/cli.py")


def _category(frame: str) -> str:
    for marker, name in _CATEGORIES:
        if marker in frame:
            return name
    return "other Python (stdlib: enum, datetime, logging...)"


def summarize(files: list[Path], top: int = 14) -> dict[str, Any]:
    """Share of samples: per category of the innermost frame, per function running (``self``),
    and per dnd_server function on the stack (``total``: including its callees)."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    categories: Counter[str] = Counter()
    samples = 0
    for path in files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            raw = [f for f in stack.split(";") if f and not f.startswith(("process ", "thread ("))]
            if not raw:
                continue
            samples += count
            categories[_category(raw[-1])] += count
            own[_short(raw[-1])] += count
            shown = {
                f for f in raw if "(dnd_server/" in f and not any(e in f for e in _ENTRY_FILES)
            }
            for name in {_short(f) for f in shown}:
                total[name] += count
    if not samples:
        return {"samples": 0, "categories": [], "self": [], "total": []}

    def share(counter: Counter[str], n: int = top) -> list[tuple[str, float]]:
        return [(name, round(100 * k / samples, 1)) for name, k in counter.most_common(n)]

    return {
        "samples": samples,
        "categories": share(categories, 20),
        "self": share(own),
        "total": share(total),
    }


def render(title: str, summary: dict[str, Any]) -> str:
    lines = [f"  {title}: {summary['samples']} samples (200 Hz, every worker, unmeasured repeat)"]
    if not summary["samples"]:
        return lines[0] + " (none)"
    lines.append("    where the time goes (innermost frame):")
    lines += [f"      {pct:5.1f}%  {name}" for name, pct in summary["categories"]]
    lines.append("    functions running (own time):")
    lines += [f"      {pct:5.1f}%  {name}" for name, pct in summary["self"][:10]]
    lines.append("    dnd_server functions on the stack (inclusive):")
    lines += [f"      {pct:5.1f}%  {name}" for name, pct in summary["total"][:10]]
    return "\n".join(lines)
