"""The runtime of one server process: what serving calls needs once the database answers (the
pool and store, the cache, the change feed keeping it current, the use cases, the stream
settings, the cursor key), opened in one step and handed whole to the servicer."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
import structlog

from dnd_server import cursor
from dnd_server.cache import ContactCache, PolicyCache
from dnd_server.config import Config
from dnd_server.domain.erasure import KEY_BYTES as ERASURE_KEY_BYTES
from dnd_server.domain.errors import Unavailable
from dnd_server.feed import ChangeFeed
from dnd_server.metrics import LiveValues
from dnd_server.rpc import idempotency
from dnd_server.service import DndService
from dnd_server.storage.migrations import REKEY_MIGRATION, MigrationError, migrate
from dnd_server.storage.rekey import Rekeyed, rekey_addresses
from dnd_server.storage.store import Store
from dnd_server.waiting import within
from dnd_server.watch import WatchSettings

log = structlog.get_logger("dnd_server.runtime")

# Errors meaning the database cannot be reached yet: opening retries them.
_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


@dataclass(frozen=True, slots=True)
class Runtime:
    pool: asyncpg.Pool
    store: Store
    # None: DND_CACHE=false, every read goes to the database.
    cache: ContactCache | None
    feed: ChangeFeed
    service: DndService
    watch: WatchSettings

    def register_metrics(self, live: LiveValues) -> None:
        """Each part's live values: the cache's, the feed's, the pool's."""
        if self.cache is not None:
            self.cache.register_metrics(live)
        self.feed.register_metrics(live)
        pool = self.pool
        live.pool_size = lambda: float(pool.get_size())
        live.pool_idle = lambda: float(pool.get_idle_size())
        live.pool_max = lambda: float(pool.get_max_size())

    async def close(self) -> None:
        """End the watch streams and the feed, then close the pool (terminating its
        connections when they do not close within 5 s)."""
        await self.feed.close()
        try:
            await within(self.pool.close(), 5)
        except TimeoutError:
            log.warning("pool_close_timeout", detail="terminating database connections")
            self.pool.terminate()


async def _no_revival() -> None:
    pass


async def open_runtime(
    config: Config, url: str, revive: Callable[[], Awaitable[None]] = _no_revival
) -> Runtime:
    """Connect and migrate (retrying with backoff until the database answers, calling
    ``revive`` before each retry), install the cursor key, start the change feed and the cache
    it keeps current: the runtime, whole."""
    pool = await _connect(config, url, revive)
    try:
        store = Store(
            pool=pool,
            timeout=config.db_timeout_seconds,
            idempotency_ttl=config.idempotency_ttl_seconds,
        )
        await install_cursor_key(config, store)
        # The log's lane count: the database's (LogLayoutMismatch when the setting differs).
        cursor.install_lanes(await store.open_log(config.change_lanes))
        erasure_key = await load_erasure_key(store)
        idempotency.install_key(erasure_key)
        cache = ContactCache(config.cache_max_entries) if config.cache else None
        feed = ChangeFeed(store, url, config.feed_poll_seconds, cache)
        await feed.start()
    except BaseException:
        pool.terminate()  # cancelled (the server stops) or failed before serving anything
        raise
    return Runtime(
        pool=pool,
        store=store,
        cache=cache,
        feed=feed,
        service=DndService(
            store=store,
            cache=cache,
            policies=PolicyCache(config.policy_cache_seconds),
            erasure_key=erasure_key,
        ),
        watch=WatchSettings(
            bookmark_interval=config.watch_bookmark_seconds,
            retention=config.watch_retention_seconds,
            buffer=config.watch_buffer_events,
        ),
    )


async def _connect(config: Config, url: str, revive: Callable[[], Awaitable[None]]) -> asyncpg.Pool:
    delay = 0.2
    while True:
        try:
            applied = (
                await run_migrations(url, config.db_timeout_seconds)
                if config.migrate_on_start
                else []
            )
            pool = await create_pool(url, config)
        except _UNREACHABLE as exc:
            log.warning("database_unreachable", error=type(exc).__name__, retry_in=delay)
            await revive()
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        log.info("database_ready", migrations_applied=applied)
        return pool


async def install_cursor_key(config: Config, store: Store) -> None:
    """Install the key sealing cursors and page tokens (before any call is served):
    DND_CURSOR_KEY's, else the database's, so every replica and worker shares it."""
    if config.cursor_key:
        cursor.install_key(cursor.key_from_secret(config.cursor_key))
        log.info("cursor_key_loaded", source="DND_CURSOR_KEY")
        return
    delay = 0.2
    while True:
        try:
            cursor.install_key(await store.cursor_key(cursor.new_key()))
        except (Unavailable, asyncpg.PostgresError) as exc:
            # PostgresError: e.g. the table is missing while migrations are yet to run.
            log.warning("cursor_key_unavailable", error=type(exc).__name__, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        log.info("cursor_key_loaded", source="database")
        return


async def load_erasure_key(store: Store) -> bytes:
    """The key of erased addresses' hashes, the database's (one per deployment, made by the
    first server to start), loaded before any call is served."""
    delay = 0.2
    while True:
        try:
            key = await store.erasure_key(secrets.token_bytes(ERASURE_KEY_BYTES))
        except (Unavailable, asyncpg.PostgresError) as exc:
            log.warning("erasure_key_unavailable", error=type(exc).__name__, retry_in=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
            continue
        log.info("erasure_key_loaded")
        return key


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """Pool release: asyncpg still rolls back an open transaction; the default extra round trip
    (advisory unlock, CLOSE ALL, UNLISTEN, RESET ALL) is skipped, as pooled connections take
    only transaction-scoped locks, open no cursors, never LISTEN and never SET."""


async def create_pool(url: str, config: Config) -> asyncpg.Pool:
    pool = await asyncpg.create_pool(
        url,
        min_size=config.db_pool_min,
        max_size=config.db_pool_max,
        timeout=config.db_timeout_seconds,
        reset=_keep_session,
        # Idle connections are kept (not closed after 5 minutes): no inactivity timer is set
        # and cancelled around every statement.
        max_inactive_connection_lifetime=0,
        server_settings={"application_name": "dnd-service"},
    )
    assert pool is not None
    return pool


async def run_rekey(url: str, timeout: float) -> Rekeyed:
    """``dnd-server rekey``: stored addresses moved to their keys, row by row beside serving
    servers (``storage/rekey.py``); refused before migration 14 (``migrate`` does it then)."""
    conn = await asyncpg.connect(url, timeout=timeout)
    try:
        applied = await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM information_schema.tables"
            " WHERE table_name = 'dnd_schema_migrations')"
        ) and await conn.fetchval("SELECT max(version) FROM dnd_schema_migrations")
        if not applied or applied < REKEY_MIGRATION:
            raise MigrationError(
                f"the database is not at migration {REKEY_MIGRATION} yet: run "
                "'dnd-server migrate' (it moves the addresses itself)"
            )
        return await rekey_addresses(conn)
    finally:
        await conn.close()


async def run_migrations(url: str, timeout: float) -> list[int]:
    conn = await asyncpg.connect(url, timeout=timeout)
    try:
        applied: list[int] = await migrate(conn)
        return applied
    finally:
        await conn.close()
