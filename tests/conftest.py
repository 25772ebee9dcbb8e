"""The fixtures every tier shares: one real PostgreSQL and one real server process per run.

The tests come in three tiers, one folder each, marked by their folder (``-m unit`` ...):

- ``tests/unit``: pure code in this process (rules, tables, codecs, parsers, manifests): no
  database, no server; a unit test that asks for one of their fixtures is refused here;
- ``tests/integration``: the service over real gRPC on real PostgreSQL, through the session's
  server (``stub``, ``db``) or a server of the module's own settings, and the store;
- ``tests/e2e``: server processes as operators meet them: signals, restarts, replicas and
  workers, database faults, the command line tools, the image and the deployment.

``make test-fast`` runs the first two. ``DND_TEST_DATABASE_URL`` names a PostgreSQL server to
use; otherwise the embedded PostgreSQL (pgserver) starts in a temporary folder. Either way the
session works in databases of its own (cloned from one migrated template), dropped at the end.
Tests isolate themselves by location id.
"""

from __future__ import annotations

import os

# Before gRPC is imported: this process forks only to exec (pg_ctl, server processes), and
# gRPC's fork handlers, run while watch and load threads are inside gRPC, can crash the child.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

import contextlib
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from typing import Any

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2_grpc
from dnd_server.storage.migrations import migrate

from tests.support import KEPT, Database, ServerProcess, new_id, run_async, with_database

TIERS = ("unit", "integration", "e2e")
# Fixtures that reach PostgreSQL or a server: not for tests/unit.
NEEDS_DATABASE = {
    "admin_url",
    "databases",
    "fresh_database",
    "empty_database",
    "database_url",
    "server",
    "db",
    "channel",
    "stub",
}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its tier (its folder), and refuse unit tests that need a database."""
    misplaced = []
    for item in items:
        parts = item.path.relative_to(config.rootpath).parts
        tier = parts[1] if len(parts) > 2 and parts[0] == "tests" else ""
        if tier in TIERS:
            item.add_marker(tier)
        if tier == "unit":
            wanted = sorted(name for name in NEEDS_DATABASE if _uses_shared(item, name))
            if wanted:
                misplaced.append(f"{item.nodeid} uses {', '.join(wanted)}")
    if misplaced:
        raise pytest.UsageError(
            "tests/unit is for tests without a database or a server; move these to "
            "tests/integration:\n  " + "\n  ".join(misplaced)
        )


def _uses_shared(item: pytest.Item, name: str) -> bool:
    """Whether ``item`` uses this module's fixture ``name`` (not a parameter or a fixture of its
    own module of the same name), itself or through another fixture."""
    info = getattr(item, "_fixtureinfo", None)
    definitions = info.name2fixturedefs.get(name, ()) if info is not None else ()
    return bool(definitions) and definitions[-1].func.__module__ == __name__


@pytest.fixture(scope="session")
def admin_url() -> Iterator[str]:
    url = os.environ.get("DND_TEST_DATABASE_URL", "").strip()
    if url:
        yield url
        return
    from pgserver.postgres_server import get_server

    folder = tempfile.mkdtemp(prefix="dnd-test-pg-")
    os.chmod(folder, 0o755)
    server = get_server(os.path.join(folder, "pgdata"), cleanup_mode="stop")
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


def _create_database(admin: str, template: str = "") -> str:
    name = f"dnd_test_{uuid.uuid4().hex[:10]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    Database(admin).execute(f'CREATE DATABASE "{name}"{clause}')
    return name


def _migrate(url: str) -> None:
    """Migrate on a connection of its own, closed at once: a template database being cloned
    may have no session."""

    async def go() -> None:
        conn = await asyncpg.connect(url)
        try:
            await migrate(conn)
        finally:
            await conn.close()

    run_async(go())


def _drop_database(admin: str, name: str) -> None:
    KEPT.close(with_database(admin, name))
    Database(admin).execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def databases(admin_url: str) -> Iterator[Any]:
    """A factory of new databases, empty or cloned from a template database migrated once
    (``CREATE DATABASE ... TEMPLATE``); all dropped at the end of the session."""
    made: list[str] = []
    template = ""

    def make(migrated: bool) -> str:
        nonlocal template
        if migrated and not template:
            template = _create_database(admin_url)
            made.append(template)
            _migrate(with_database(admin_url, template))
        name = _create_database(admin_url, template if migrated else "")
        made.append(name)
        return with_database(admin_url, name)

    yield make
    for name in reversed(made):
        with contextlib.suppress(Exception):
            _drop_database(admin_url, name)
    KEPT.close()


@pytest.fixture(scope="session")
def fresh_database(databases: Any) -> Any:
    """A factory of new databases with every migration applied."""
    return lambda: databases(True)


@pytest.fixture(scope="session")
def empty_database(databases: Any) -> Any:
    """A factory of new databases with no schema at all (for migration tests)."""
    return lambda: databases(False)


@pytest.fixture(scope="session")
def database_url(fresh_database: Any) -> str:
    return str(fresh_database())


@pytest.fixture(scope="session")
def server(database_url: str) -> Iterator[ServerProcess]:
    process = ServerProcess(database_url).start()
    yield process
    process.stop()


@pytest.fixture(scope="session")
def db(server: ServerProcess, database_url: str) -> Database:
    """The session database (migrated by the server)."""
    return Database(database_url)


@pytest.fixture(scope="session")
def channel(server: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(server.addr) as ch:
        grpc.channel_ready_future(ch).result(timeout=10)
        yield ch


@pytest.fixture(scope="session")
def stub(channel: grpc.Channel) -> dnd_pb2_grpc.DndServiceStub:
    return dnd_pb2_grpc.DndServiceStub(channel)


@pytest.fixture
def loc() -> str:
    """A location id of this test alone."""
    return new_id("loc")


@pytest.fixture
def contact() -> str:
    return new_id("contact")
