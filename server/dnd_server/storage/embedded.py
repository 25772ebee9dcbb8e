"""The embedded PostgreSQL used when no ``DND_DATABASE_URL`` is given (``pgserver`` wheel)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

log = structlog.get_logger("dnd_server.embedded")


def start_embedded_postgres(data_dir: Path) -> tuple[str, Any]:
    """Start (or reuse) the PostgreSQL whose data lives in ``data_dir``.

    Returns its connection URL and the server handle; the server stops when the last
    process using it exits, and its data is kept for the next start.
    """
    from pgserver.postgres_server import get_server

    data_dir = data_dir.resolve()
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    url: str = server.get_uri()
    log.info("embedded_postgres_started", data_dir=str(data_dir))
    return url, server
