"""Wiring: database, migrations, gRPC server with health and reflection, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import asyncpg
import grpc
import structlog
from dnd.v1 import dnd_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from dnd_server import cursor
from dnd_server.auth import TokensFileError, TokenTable, file_signature
from dnd_server.cache import ContactCache
from dnd_server.config import Config
from dnd_server.domain.errors import Unavailable
from dnd_server.feed import ChangeFeed
from dnd_server.metrics import Metrics
from dnd_server.readiness import FeedDelay
from dnd_server.rpc.decoding import add_dnd_service
from dnd_server.rpc.servicer import DndServicer
from dnd_server.service import DndService
from dnd_server.storage.embedded import EmbeddedPostgres, start_embedded_postgres
from dnd_server.storage.migrations import migrate
from dnd_server.storage.store import Store
from dnd_server.waiting import wait_event, within
from dnd_server.watch import WatchSettings

log = structlog.get_logger("dnd_server.app")

SERVICE_NAME = dnd_pb2.DESCRIPTOR.services_by_name["DndService"].full_name
# Readiness: "" and the service are SERVING while the database answers and the change feed
# keeps up. Liveness: this name is SERVING from start to shutdown, whatever the database does.
_SERVICES_WITH_HEALTH = ("", SERVICE_NAME)
LIVENESS_SERVICE = "liveness"


def database_url(config: Config) -> tuple[str, EmbeddedPostgres | None]:
    """The configured database URL, or the embedded PostgreSQL's (started now) with the
    handle that keeps it running.

    The embedded PostgreSQL is a development default: off loopback (a server others reach,
    such as the container image's 0.0.0.0) the server refuses to start on it."""
    if config.database_url:
        return config.database_url, None
    if not config.loopback:
        raise StartupError(
            f"refusing to serve on {config.grpc_addr} with the embedded development database: "
            "set DND_DATABASE_URL to the PostgreSQL to use (the embedded PostgreSQL is for "
            "a server on loopback only)"
        )
    log.info(
        "embedded_postgres_selected",
        detail="DND_DATABASE_URL is not set: using the embedded PostgreSQL",
        data_dir=str(config.data_dir),
    )
    url, server = start_embedded_postgres(config.data_dir)
    return url, server


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
        server_settings={"application_name": "dnd-service"},
    )
    assert pool is not None
    return pool


async def run_migrations(url: str, timeout: float) -> list[int]:
    conn = await asyncpg.connect(url, timeout=timeout)
    try:
        applied: list[int] = await migrate(conn)
        return applied
    finally:
        await conn.close()


class App:
    """One server process: owns the gRPC server, the pool and the health state."""

    def __init__(
        self,
        config: Config,
        url: str,
        tokens: TokenTable | None = None,
        embedded: EmbeddedPostgres | None = None,
    ) -> None:
        self.config = config
        self.url = url
        # The embedded PostgreSQL this process started (None: an external database).
        self.embedded = embedded
        self.servicer = DndServicer(
            read_sample_rate=config.log_read_sample_rate,
            phone_region=config.default_phone_region,
            tokens=tokens,
            max_streams_per_caller=config.max_streams_per_caller,
            max_response_bytes=config.response_limit,
        )
        self.health = HealthServicer()
        self.server: grpc.aio.Server | None = None
        self.pool: asyncpg.Pool | None = None
        self.feed: ChangeFeed | None = None
        self.cache: ContactCache | None = None
        self.head_seq = 0
        self.feed_delay = FeedDelay()
        self.metrics_port = 0
        self.port: int = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._tokens_reload = asyncio.Event()

    async def start(self) -> None:
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self.config.max_message_bytes),
                ("grpc.max_send_message_length", self.config.response_limit),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                *connection_age_options(self.config),
            ]
        )
        add_dnd_service(self.servicer, server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection.enable_server_reflection(
            (
                SERVICE_NAME,
                health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
                reflection.SERVICE_NAME,
            ),
            server,
        )
        credentials = server_credentials(self.config)
        if credentials is None:
            self.port = server.add_insecure_port(self.config.grpc_addr)
        else:
            try:
                self.port = server.add_secure_port(self.config.grpc_addr, credentials)
            except RuntimeError:
                raise StartupError(
                    f"cannot serve TLS on {self.config.grpc_addr}: check that "
                    "DND_TLS_CERT_FILE and DND_TLS_KEY_FILE hold a matching PEM certificate "
                    "chain and private key"
                ) from None
        if self.port == 0:
            raise RuntimeError(f"cannot listen on DND_GRPC_ADDR={self.config.grpc_addr}")
        for name in _SERVICES_WITH_HEALTH:
            await self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)
        await self.health.set(LIVENESS_SERVICE, health_pb2.HealthCheckResponse.SERVING)
        if self.config.metrics_addr:
            self.start_metrics()
        await server.start()
        self.server = server
        log.info(
            "server_listening",
            addr=self.config.grpc_addr,
            port=self.port,
            pid=os.getpid(),
            worker=os.environ.get("DND_WORKER_INDEX", "0"),
        )
        self._tasks.append(asyncio.create_task(self._connect_and_monitor()))
        if self.config.tokens_file and self.servicer.tokens is not None:
            self._tasks.append(
                asyncio.create_task(self._watch_tokens(Path(self.config.tokens_file)))
            )

    def start_metrics(self) -> None:
        """Serve /metrics; with several workers each listens on the port plus its index."""
        metrics = Metrics()
        host, _, port = self.config.metrics_addr.rpartition(":")
        index = int(os.environ.get("DND_WORKER_INDEX", "0"))
        addr = f"{host}:{int(port) + index if int(port) else 0}"
        live = metrics.live
        live.watch_streams = lambda: float(sum(self.servicer.streams.values()))
        live.cache_hits = lambda: float(self.cache.hits) if self.cache is not None else 0.0
        live.cache_misses = lambda: float(self.cache.misses) if self.cache is not None else 0.0
        live.cache_entries = lambda: float(len(self.cache)) if self.cache is not None else 0.0
        live.cache_enabled = lambda: 1.0 if self.cache is not None and self.cache.enabled else 0.0
        live.feed_lag = lambda: (
            float(max(0, self.head_seq - self.feed.position)) if self.feed else 0.0
        )
        live.feed_delay = lambda: self.feed_delay.seconds
        live.watch_cut_off = lambda: float(self.feed.cut_off) if self.feed else 0.0
        live.feed_listening = lambda: 1.0 if self.feed and self.feed.listening else 0.0
        live.pool_size = lambda: float(self.pool.get_size()) if self.pool else 0.0
        live.pool_idle = lambda: float(self.pool.get_idle_size()) if self.pool else 0.0
        live.pool_max = lambda: float(self.pool.get_max_size()) if self.pool else 0.0
        self.metrics_port = metrics.serve(addr)
        self.servicer.metrics = metrics
        log.info("metrics_listening", addr=addr, port=self.metrics_port)

    async def _connect_and_monitor(self) -> None:
        """Connect and migrate (retrying with backoff), then keep health in step with the
        database: SERVING only while it answers."""
        url = self.url
        delay = 0.2
        while self.pool is None:
            try:
                applied = (
                    await run_migrations(url, self.config.db_timeout_seconds)
                    if (self.config.migrate_on_start)
                    else []
                )
                self.pool = await create_pool(url, self.config)
                log.info("database_ready", migrations_applied=applied)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("database_unreachable", error=type(exc).__name__, retry_in=delay)
                await self._revive_embedded()
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        store = Store(
            self.pool,
            timeout=self.config.db_timeout_seconds,
            idempotency_ttl=self.config.idempotency_ttl_seconds,
        )
        await self._install_cursor_key(store)
        self.cache = ContactCache(self.config.cache_max_entries) if self.config.cache else None
        self.feed = ChangeFeed(store, url, self.config.feed_poll_seconds, self.cache)
        await self.feed.start()
        self.servicer.feed = self.feed
        self.servicer.watch_settings = WatchSettings(
            bookmark_interval=self.config.watch_bookmark_seconds,
            retention=self.config.watch_retention_seconds,
            buffer=self.config.watch_buffer_events,
        )
        self.servicer.service = DndService(store, self.cache)
        self._tasks.append(asyncio.create_task(self._maintain(store)))
        serving: bool | None = None
        while not self._stopping.is_set():
            try:
                self.head_seq = await store.head_seq()
                healthy, reason = True, ""
            except Unavailable:
                healthy, reason = False, "database unreachable"
            else:
                behind = self.feed_delay.observe(
                    self.head_seq, self.feed.position, time.monotonic()
                )
                if behind > self.config.ready_max_feed_delay_seconds:
                    healthy, reason = False, f"change feed {behind:.1f} s behind the log"
            if healthy != serving:
                serving = healthy
                state = (
                    health_pb2.HealthCheckResponse.SERVING
                    if healthy
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for name in _SERVICES_WITH_HEALTH:
                    await self.health.set(name, state)
                log.info("health_changed", serving=healthy, reason=reason)
            if not healthy:
                await self._revive_embedded()
            await wait_event(self._stopping, self.config.health_interval_seconds)

    def request_tokens_reload(self) -> None:
        """SIGHUP: reload the tokens file now."""
        if self.config.tokens_file and self.servicer.tokens is not None:
            self._tokens_reload.set()
        else:
            log.info("tokens_reload_skipped", detail="no DND_TOKENS_FILE: nothing to reload")

    async def _watch_tokens(self, path: Path) -> None:
        """Reload the tokens file on SIGHUP and whenever it changes (checked every
        DND_TOKENS_RELOAD_SECONDS). The new table is swapped in at once, so a removed token
        is refused from the next call on."""
        interval = self.config.tokens_reload_seconds
        seen = file_signature(path)
        while not self._stopping.is_set():
            if interval > 0:
                requested = await wait_event(self._tokens_reload, interval)
            else:
                await self._tokens_reload.wait()
                requested = True
            self._tokens_reload.clear()
            current = file_signature(path)
            if not requested and current == seen:
                continue
            # A file that failed to load is tried again on its next change or SIGHUP.
            seen = current
            self.reload_tokens(path, "signal" if requested else "file_changed")

    def reload_tokens(self, path: Path, trigger: str) -> None:
        """Swap in the tokens of ``path``; a file that cannot be read or is invalid is not
        used: the tokens in force stay, and the error is logged."""
        try:
            tokens = TokenTable.load(path)
        except TokensFileError as error:
            log.error(
                "tokens_reload_failed",
                trigger=trigger,
                error=str(error),
                detail="the tokens loaded before stay in force",
            )
            return
        self.servicer.tokens = tokens
        log.info("tokens_reloaded", trigger=trigger, tokens=len(tokens))

    async def _revive_embedded(self) -> None:
        """The embedded PostgreSQL is this process's to keep running: when it stopped
        answering because its postmaster is gone, start it again (off the event loop; a
        fresh subprocess, so no gRPC state is forked). Pools reconnect by themselves."""
        if self.embedded is not None:
            await asyncio.to_thread(self.embedded.revive)

    async def _install_cursor_key(self, store: Store) -> None:
        """Install the key sealing cursors and page tokens (before any call is served):
        DND_CURSOR_KEY's, else the database's, so every replica and worker shares it."""
        if self.config.cursor_key:
            cursor.install_key(cursor.key_from_secret(self.config.cursor_key))
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

    async def _maintain(self, store: Store) -> None:
        """Periodic clean-up: expired idempotency keys, change-log rows past retention."""
        while not self._stopping.is_set():
            try:
                pruned = await store.prune_idempotency_keys()
                if pruned:
                    log.info("idempotency_keys_pruned", count=pruned)
                pruned = await store.prune_changes(self.config.history_retention_seconds)
                if pruned:
                    log.info("changes_pruned", count=pruned)
            except Unavailable:
                pass
            await wait_event(self._stopping, self.config.maintenance_interval_seconds)

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, refuse new calls, let in-flight ones finish."""
        log.info("server_stopping", grace_seconds=self.config.shutdown_grace_seconds)
        self._stopping.set()
        await self.health.enter_graceful_shutdown()
        if self.feed is not None:
            # Watch streams end now (UNAVAILABLE, resumable) instead of holding the grace period.
            await self.feed.close()
        if self.server is not None:
            await self.server.stop(self.config.shutdown_grace_seconds)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self.pool is not None:
            try:
                await within(self.pool.close(), 5)
            except TimeoutError:
                log.warning("pool_close_timeout", detail="terminating database connections")
                self.pool.terminate()
        log.info("server_stopped")


class StartupError(RuntimeError):
    """The configuration does not allow a safe start."""


def load_tokens(config: Config) -> TokenTable | None:
    """The tokens to check, or None to run open: only on loopback (with a warning) or when
    explicitly told ``DND_AUTH=disabled``."""
    if config.tokens_file:
        try:
            tokens = TokenTable.load(Path(config.tokens_file))
        except TokensFileError as error:
            raise StartupError(str(error)) from None
        log.info("auth_enabled", tokens=len(tokens))
        return tokens
    if config.auth == "enabled":
        raise StartupError("DND_AUTH=enabled needs DND_TOKENS_FILE")
    if config.auth == "disabled":
        log.warning("auth_disabled", detail="DND_AUTH=disabled: every caller may do everything")
        return None
    if config.loopback:
        log.warning(
            "auth_disabled_on_loopback",
            detail="no DND_TOKENS_FILE: running open, reachable from this machine only",
        )
        return None
    raise StartupError(
        f"refusing to serve on {config.grpc_addr} without authentication: set DND_TOKENS_FILE "
        "(or DND_AUTH=disabled to run open on purpose)"
    )


def connection_age_options(config: Config) -> list[tuple[str, int]]:
    """gRPC server options that send clients a GOAWAY after DND_MAX_CONNECTION_AGE_SECONDS,
    so long-lived channels spread over replicas added since (none when it is 0)."""
    if config.max_connection_age_seconds <= 0:
        return []
    return [
        ("grpc.max_connection_age_ms", max(1, round(config.max_connection_age_seconds * 1000))),
        ("grpc.max_connection_age_grace_ms", round(config.max_connection_age_grace_seconds * 1000)),
    ]


def server_credentials(config: Config) -> grpc.ServerCredentials | None:
    if not (config.tls_cert_file or config.tls_key_file):
        if config.tls_client_ca_file:
            raise StartupError(
                "DND_TLS_CLIENT_CA_FILE needs DND_TLS_CERT_FILE and DND_TLS_KEY_FILE"
            )
        return None
    if not (config.tls_cert_file and config.tls_key_file):
        raise StartupError("TLS needs both DND_TLS_CERT_FILE and DND_TLS_KEY_FILE")
    try:
        key = Path(config.tls_key_file).read_bytes()
        cert = Path(config.tls_cert_file).read_bytes()
        client_ca = (
            Path(config.tls_client_ca_file).read_bytes() if config.tls_client_ca_file else None
        )
    except OSError as error:
        raise StartupError(f"cannot read TLS files: {error}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def serve(config: Config) -> None:
    tokens = load_tokens(config)
    server_credentials(config)  # fail before starting anything when TLS files are unusable
    # The embedded PostgreSQL starts before any gRPC object exists (it forks processes).
    url, embedded = database_url(config)
    app = App(config, url, tokens, embedded)
    loop = asyncio.get_running_loop()
    signal.signal(
        signal.SIGHUP, lambda _signum, _frame: loop.call_soon_threadsafe(app.request_tokens_reload)
    )
    await app.start()
    stop = asyncio.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        loop.call_soon_threadsafe(stop.set)

    # A Python-level handler, not loop.add_signal_handler: asyncio would deliver the signal
    # through its self-pipe, which under heavy load can be full, and a signal byte that does
    # not fit is lost. Python runs this handler in the main thread whatever the pipe holds.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    await stop.wait()
    await app.stop()
