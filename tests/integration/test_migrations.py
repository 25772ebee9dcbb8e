"""Migrations: numbered files only ever added, applied once, safe when replicas start together,
an edited applied migration refused, and the ``migrate`` command."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from typing import Any

import asyncpg
import pytest
from dnd_server.storage.migrations import MigrationError, load_migrations, migrate

from tests.support import REPO, run_async


def test_migration_files_are_numbered_without_gaps() -> None:
    migrations = load_migrations()
    assert [m.version for m in migrations] == list(range(1, len(migrations) + 1))
    folder = os.path.join(REPO, "server", "dnd_server", "storage", "migrations")
    for name in os.listdir(folder):
        assert name.endswith(".sql") and name[:4].isdigit() and name[4] == "_", name


def test_concurrent_migrations_apply_once(empty_database: Any) -> None:
    url = empty_database()

    async def race() -> list[list[int]]:
        conns = [await asyncpg.connect(url) for _ in range(4)]
        try:
            return list(await asyncio.gather(*(migrate(c) for c in conns)))
        finally:
            for c in conns:
                await c.close()

    results = run_async(race())
    everything = list(range(1, len(load_migrations()) + 1))
    assert sorted(v for applied in results for v in applied) == everything
    assert results.count([]) == 3

    async def rows() -> list[int]:
        conn = await asyncpg.connect(url)
        try:
            return [r[0] for r in await conn.fetch("SELECT version FROM dnd_schema_migrations")]
        finally:
            await conn.close()

    assert sorted(run_async(rows())) == everything


def test_edited_applied_migration_is_refused(empty_database: Any) -> None:
    url = empty_database()

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
            await conn.execute("UPDATE dnd_schema_migrations SET checksum = 'x' WHERE version = 1")
            with pytest.raises(MigrationError, match="edited after it was applied"):
                await migrate(conn)
            await conn.execute(
                "UPDATE dnd_schema_migrations SET checksum = $1 WHERE version = 1",
                load_migrations()[0].checksum,
            )
            assert await migrate(conn) == []
            await conn.execute(
                "INSERT INTO dnd_schema_migrations (version, name, checksum) "
                "VALUES (9999, 'future', 'y')"
            )
            with pytest.raises(MigrationError, match="newer version"):
                await migrate(conn)
        finally:
            await conn.close()

    run_async(go())


def test_migrate_command(empty_database: Any) -> None:
    url = empty_database()
    result = subprocess.run(
        [sys.executable, "-m", "dnd_server", "migrate"],
        env={**os.environ, "DND_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"migrations_done"' in result.stdout
