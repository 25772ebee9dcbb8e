"""``DND_WORKERS=N``: N server processes sharing the gRPC port (SO_REUSEPORT).

The supervisor holds no gRPC object: it prepares the database (embedded start, migrations),
then starts each worker as a fresh interpreter, so every gRPC object is created in its own
process after the split. Workers have their own pool, feed and cache. A worker that dies is
restarted; SIGTERM / SIGINT are passed on and the supervisor waits for the workers to drain;
SIGHUP is passed on (each worker reloads the tokens file). The embedded PostgreSQL, when the
supervisor started it, is the supervisor's to keep running: started again if it dies.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import structlog

from dnd_server.app import database_url, load_tokens, require_tracing, server_credentials
from dnd_server.config import Config
from dnd_server.runtime import run_migrations

log = structlog.get_logger("dnd_server.supervisor")

_RESTART_DELAY = 1.0


def supervise(config: Config) -> int:
    if config.grpc_addr.rsplit(":", 1)[-1] == "0":
        log.error("workers_need_fixed_port", addr=config.grpc_addr)
        return 2
    # Refuse an unsafe configuration once, here, rather than in every worker.
    load_tokens(config)
    server_credentials(config)
    require_tracing(config)
    url, embedded = database_url(config)
    if config.migrate_on_start:
        applied = asyncio.run(run_migrations(url, config.db_timeout_seconds))
        log.info("database_ready", migrations_applied=applied)
    env = {
        **os.environ,
        "DND_DATABASE_URL": url,
        "DND_WORKERS": "1",
        "DND_MIGRATE_ON_START": "false",
    }
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    def reload(signum: int, _frame: object) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    def start(index: int) -> subprocess.Popen[bytes]:
        worker_env = {**env, "DND_WORKER_INDEX": str(index)}
        return subprocess.Popen([sys.executable, "-m", "dnd_server", "serve"], env=worker_env)

    workers = [start(i) for i in range(config.workers)]
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    log.info("workers_started", workers=config.workers, pids=[w.pid for w in workers])
    while True:
        time.sleep(0.2)
        if embedded is not None and not stopping:
            embedded.revive()
        for i, worker in enumerate(workers):
            code = worker.poll()
            if code is None or stopping:
                continue
            log.warning("worker_exited", index=i, pid=worker.pid, code=code)
            if code == 2:  # a configuration error: restarting cannot help
                stop(signal.SIGTERM, None)
                log.error("workers_refused_to_start", index=i)
                continue
            time.sleep(_RESTART_DELAY)
            if not stopping:
                workers[i] = start(i)
                log.info("worker_restarted", index=i, pid=workers[i].pid)
        if stopping and all(w.poll() is not None for w in workers):
            break
    codes = [w.returncode for w in workers]
    log.info("workers_stopped", codes=codes)
    if any(c == 2 for c in codes):
        return 2
    return 0 if all(c == 0 for c in codes) else 1
