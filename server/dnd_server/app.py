"""Wiring: the gRPC server with health and reflection, the runtime once the database answers
(``runtime.py``), health kept in step with it, tokens reloads, graceful shutdown."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import grpc
import structlog
from dnd.v1 import dnd_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer
from grpc_reflection.v1alpha import reflection

from dnd_server.auth import TokensFileError, TokenTable, file_signature
from dnd_server.config import Config
from dnd_server.domain.errors import DndError, Unavailable
from dnd_server.lanes import LogLayoutMismatch, Position, behind
from dnd_server.metrics import LiveValues, Metrics
from dnd_server.readiness import FeedDelay
from dnd_server.rpc.decoding import add_dnd_service
from dnd_server.rpc.servicer import DndServicer
from dnd_server.runtime import Runtime, open_runtime
from dnd_server.storage.embedded import EmbeddedPostgres, start_embedded_postgres
from dnd_server.storage.store import Store
from dnd_server.tracing import Tracing, missing_modules, start_tracing
from dnd_server.waiting import wait_event

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


class App:
    """One server process: owns the gRPC server, the runtime and the health state."""

    def __init__(
        self,
        config: Config,
        url: str,
        tokens: TokenTable | None = None,
        embedded: EmbeddedPostgres | None = None,
        tracing: Tracing | None = None,
    ) -> None:
        self.config = config
        self.url = url
        # The embedded PostgreSQL this process started (None: an external database).
        self.embedded = embedded
        # Answers UNAVAILABLE until it is handed the runtime.
        self.servicer = DndServicer.from_config(config, tokens)
        # None: tracing off, no interceptor at all.
        self.tracing = tracing
        if tracing is not None:
            self.servicer.annotate = tracing.annotate
        self.health = HealthServicer()
        self.server: grpc.aio.Server | None = None
        # Set once the database is reachable and migrated.
        self.runtime: Runtime | None = None
        self.metrics: Metrics | None = None
        # The change log's head (every lane's) at the last health check.
        self.heads: Position = ()
        # Why the server cannot start, found once the database answered (it then stops).
        self.failure = ""
        self.failed = asyncio.Event()
        self.feed_delay = FeedDelay()
        self.metrics_port = 0
        self.port: int = 0
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._tokens_reload = asyncio.Event()

    async def start(self) -> None:
        server = grpc.aio.server(
            interceptors=self.tracing.interceptors if self.tracing is not None else None,
            options=[
                ("grpc.max_receive_message_length", self.config.max_message_bytes),
                ("grpc.max_send_message_length", self.config.response_limit),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                *connection_age_options(self.config),
            ],
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
            worker=self.config.worker_index,
        )
        self._tasks.append(asyncio.create_task(self._connect_and_monitor()))
        if self.config.tokens_file and self.servicer.tokens is not None:
            self._tasks.append(
                asyncio.create_task(self._watch_tokens(Path(self.config.tokens_file)))
            )

    def start_metrics(self) -> None:
        """Serve /metrics; with several workers each listens on the port plus its index.
        Each part registers its own values: the servicer (calls, streams) and the readiness
        check now, the runtime's parts (cache, feed, pool) when it opens."""
        metrics = Metrics()
        host, _, port = self.config.metrics_addr.rpartition(":")
        index = self.config.worker_index
        addr = f"{host}:{int(port) + index if int(port) else 0}"
        self.servicer.register_metrics(metrics)
        self._register_readiness_metrics(metrics.live)
        if self.runtime is not None:
            self.runtime.register_metrics(metrics.live)
        self.metrics = metrics
        self.metrics_port = metrics.serve(addr)
        log.info("metrics_listening", addr=addr, port=self.metrics_port)

    def _register_readiness_metrics(self, live: LiveValues) -> None:
        live.feed_delay = lambda: self.feed_delay.seconds
        live.feed_lag = lambda: (
            float(behind(self.heads, self.runtime.feed.position))
            if self.runtime and self.heads
            else 0.0
        )

    async def _connect_and_monitor(self) -> None:
        """Open the runtime (once the database answers) and hand it to the servicer, then
        keep health in step with the database: SERVING only while it answers."""
        try:
            runtime = await open_runtime(self.config, self.url, revive=self._revive_embedded)
        except LogLayoutMismatch as error:
            self.failure = str(error)
            self.failed.set()
            return
        self.runtime = runtime
        if self.metrics is not None:
            runtime.register_metrics(self.metrics.live)
        self.servicer.runtime = runtime
        self._tasks.append(asyncio.create_task(self._maintain(runtime.store)))
        if self.config.block_expiry_interval_seconds > 0:
            self._tasks.append(asyncio.create_task(self._expire_blocks(runtime)))
        serving: bool | None = None
        while not self._stopping.is_set():
            try:
                self.heads = await runtime.store.heads()
                healthy, reason = True, ""
            except Unavailable:
                healthy, reason = False, "database unreachable"
            else:
                behind = self.feed_delay.observe(
                    self.heads, runtime.feed.position, time.monotonic()
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

    async def _expire_blocks(self, runtime: Runtime) -> None:
        """Clear the temporary carrier blocks past their location's lifetime, every
        DND_BLOCK_EXPIRY_INTERVAL_SECONDS. Every replica runs it: each clear is decided again
        under the contact's lock, so a block is cleared once whichever replica gets there."""
        interval = self.config.block_expiry_interval_seconds
        while not await wait_event(self._stopping, interval):
            try:
                cleared = await runtime.service.expire_blocks()
            except DndError as error:
                log.warning("block_expiry_failed", error=str(error))
                continue
            if cleared:
                log.info("blocks_expired", count=cleared)

    async def stop(self) -> None:
        """Graceful stop: NOT_SERVING, refuse new calls, let in-flight ones finish."""
        log.info("server_stopping", grace_seconds=self.config.shutdown_grace_seconds)
        self._stopping.set()
        await self.health.enter_graceful_shutdown()
        if self.runtime is not None:
            # Watch streams end now (UNAVAILABLE, resumable) instead of holding the grace period.
            await self.runtime.feed.close()
        if self.server is not None:
            await self.server.stop(self.config.shutdown_grace_seconds)
        for task in self._tasks:
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        if self.runtime is not None:
            await self.runtime.close()
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


def require_tracing(config: Config) -> None:
    """Refuse to start with tracing on when the ``tracing`` extra is not installed."""
    if not config.tracing:
        return
    missing = missing_modules()
    if missing:
        raise StartupError(
            "tracing is on (DND_TRACING, or OTEL_* variables naming an exporter or an OTLP "
            f"endpoint) but OpenTelemetry is not installed ({', '.join(missing)} missing): "
            "install the `tracing` extra (pip install 'dnd-service[server,tracing]') or set "
            "DND_TRACING=false"
        )


def open_tracing(config: Config) -> Tracing | None:
    """Tracing as configured (``tracing.py``), or None when it is off: nothing of
    OpenTelemetry is then imported."""
    if not config.tracing:
        return None
    require_tracing(config)
    tracing = start_tracing()
    log.info(
        "tracing_enabled",
        exporters=os.environ.get("OTEL_TRACES_EXPORTER", "").strip() or "otlp",
        sampler=os.environ.get("OTEL_TRACES_SAMPLER", "").strip() or "parentbased_always_on",
    )
    return tracing


async def serve(config: Config) -> None:
    tokens = load_tokens(config)
    server_credentials(config)  # fail before starting anything when TLS files are unusable
    # The embedded PostgreSQL starts before any gRPC object exists (it forks processes).
    url, embedded = database_url(config)
    tracing = open_tracing(config)
    app = App(config, url, tokens, embedded, tracing)
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
    failed = asyncio.create_task(app.failed.wait())
    stopped = asyncio.create_task(stop.wait())
    await asyncio.wait({stopped, failed}, return_when=asyncio.FIRST_COMPLETED)
    try:
        await app.stop()
        if failed.done():
            raise StartupError(app.failure)
    finally:
        if tracing is not None:
            # Export the spans still buffered (off the loop: it waits for the exporter).
            await asyncio.to_thread(tracing.shutdown)
