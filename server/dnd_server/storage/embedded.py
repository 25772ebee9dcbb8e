"""The embedded PostgreSQL used when no ``DND_DATABASE_URL`` is given (``pgserver`` wheel),
and its supervision: the process that started it starts it again when it dies."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("dnd_server.embedded")

_RESTART_BACKOFF_MAX = 5.0


class EmbeddedPostgres:
    """The embedded PostgreSQL of one data directory, kept running by whoever holds it.

    ``revive`` (called when the database stops answering) starts the postmaster again, on the
    same data directory and socket, so the URL stays valid and pools simply reconnect.
    PostgreSQL recovers from its write-ahead log: committed data survives a crash.
    """

    def __init__(self, server: Any) -> None:
        self._server = server
        self.data_dir = Path(server.pgdata)
        self.url: str = server.get_uri()
        self._retry_at = 0.0
        self._backoff = 0.5

    def postmaster_pid(self) -> int | None:
        """The pid in ``postmaster.pid``, or None when there is none."""
        try:
            with open(self.data_dir / "postmaster.pid", encoding="utf-8") as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def running(self) -> bool:
        """Whether the postmaster runs (a killed one not yet reaped, a zombie, does not)."""
        pid = self.postmaster_pid()
        return pid is not None and _alive(pid)

    def revive(self) -> bool:
        """Start the postmaster again when it is gone; True when it was restarted. Blocks
        while it starts (run it off the event loop). After a failed start (the dead
        postmaster's children may still hold its shared memory for a moment), the next
        attempt waits a little longer, up to a few seconds."""
        if self.running() or time.monotonic() < self._retry_at:
            return False
        log.warning("embedded_postgres_down", data_dir=str(self.data_dir))
        try:
            # pgserver's own start path (pg_ctl in a subprocess, as its unprivileged user
            # when run as root), under its lock against other processes starting it too.
            with self._server._lock:
                self._server.ensure_postgres_running()
        except Exception as error:
            log.error("embedded_postgres_restart_failed", error=f"{type(error).__name__}: {error}")
        if not self.running():
            self._retry_at = time.monotonic() + self._backoff
            self._backoff = min(self._backoff * 2, _RESTART_BACKOFF_MAX)
            return False
        self._retry_at, self._backoff = 0.0, 0.5
        log.info("embedded_postgres_restarted", pid=self.postmaster_pid())
        return True


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel (a zombie then counts as running)
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state != "Z"


def start_embedded_postgres(data_dir: Path) -> tuple[str, EmbeddedPostgres]:
    """Start (or reuse) the PostgreSQL whose data lives in ``data_dir``.

    Returns its connection URL and the handle supervising it; the server stops when the
    last process using it exits, and its data is kept for the next start.
    """
    try:
        from pgserver.postgres_server import get_server
    except ImportError:
        from dnd_server.app import StartupError

        raise StartupError(
            "DND_DATABASE_URL is not set and the embedded PostgreSQL is not installed: set "
            "DND_DATABASE_URL, or install it for development (pip install "
            "'dnd-service[embedded]', which `make` does)"
        ) from None

    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded_postgres_started", data_dir=str(data_dir))
    return url, EmbeddedPostgres(server)
