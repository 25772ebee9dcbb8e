"""Configuration from ``DND_*`` environment variables (each documented in docs/configuration.md)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class ConfigError(ValueError):
    """An environment variable has a value the service cannot use."""


@dataclass(frozen=True, slots=True)
class Config:
    # PostgreSQL URL; empty means start the embedded PostgreSQL under ``data_dir``.
    database_url: str = ""
    data_dir: Path = Path(".dnd-data")
    grpc_addr: str = "127.0.0.1:50051"
    db_pool_min: int = 1
    db_pool_max: int = 10
    # Upper bound of any one database operation (a hung database answers UNAVAILABLE).
    db_timeout_seconds: float = 5.0
    health_interval_seconds: float = 1.0
    shutdown_grace_seconds: float = 10.0
    log_level: str = "INFO"
    # Fraction of successful hot reads (CheckSend, GetStatus) logged; failures always are.
    log_read_sample_rate: float = 0.0
    # Whether the server applies migrations at start.
    migrate_on_start: bool = True
    # How long an idempotency key's first answer is replayed.
    idempotency_ttl_seconds: float = 86400.0
    # Region assumed for phone numbers written without a country code.
    default_phone_region: str = "US"
    # How often expired idempotency keys and old change-log rows are pruned.
    maintenance_interval_seconds: float = 300.0
    # How often each server clears the temporary carrier blocks past their location's lifetime
    # (off unless a location sets one); 0: never (this server runs no expiry pass).
    block_expiry_interval_seconds: float = 60.0
    # Change stream: bookmark interval, how far back a cursor may resume, mailbox size.
    watch_bookmark_seconds: float = 5.0
    watch_retention_seconds: float = 7 * 86400.0
    watch_buffer_events: int = 1000
    # Polling backstop of the change feed (LISTEN/NOTIFY wakes it sooner).
    feed_poll_seconds: float = 0.5
    # Lanes of the change log (fixed once the log has a change; the database keeps it).
    change_lanes: int = 16
    # Change-log rows (the audit history) are deleted after this long.
    history_retention_seconds: float = 4 * 365 * 86400.0
    # The contact state cache serving CheckSend / GetStatus.
    cache: bool = True
    cache_max_entries: int = 100_000
    # How long a location's consent policy read on the CheckSend path is reused (0: read it
    # every time); an update through this replica replaces it at once.
    policy_cache_seconds: float = 5.0
    # Server processes sharing the gRPC port (SO_REUSEPORT).
    workers: int = 1
    # The event loop each server process runs: uvloop (when installed) or the standard one.
    event_loop: str = "uvloop"
    # This process's index among them (set by the supervisor for each worker it starts).
    worker_index: int = 0
    # Security: bearer tokens file; "disabled" to run open off loopback; TLS files.
    tokens_file: str = ""
    # How often the tokens file is checked for changes (reloaded when it changed; SIGHUP
    # reloads it at once); 0: on SIGHUP only.
    tokens_reload_seconds: float = 1.0
    auth: str = ""
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    # The client certificate ``dnd-server healthcheck`` presents under mutual TLS (empty: the
    # server's own).
    healthcheck_cert_file: str = ""
    healthcheck_key_file: str = ""
    # Limits.
    max_message_bytes: int = 1024 * 1024
    # Largest response sent (a larger one is answered RESOURCE_EXHAUSTED); 0: the larger of
    # max_message_bytes and 4 MiB, the default receive limit of gRPC clients.
    max_response_bytes: int = 0
    max_streams_per_caller: int = 64
    # Prometheus metrics address (host:port); empty: no metrics endpoint.
    metrics_addr: str = ""
    # A client connection older than this is asked to reconnect (GOAWAY), so clients spread
    # over replicas added since; 0: never. In-flight calls then get the grace to finish.
    max_connection_age_seconds: float = 0.0
    max_connection_age_grace_seconds: float = 30.0
    # Readiness: NOT_SERVING while the change feed has been behind the log head this long.
    ready_max_feed_delay_seconds: float = 10.0
    # Secret sealing cursors and page tokens; empty: the random key stored in the database.
    cursor_key: str = ""
    # OpenTelemetry traces (``tracing.py``), configured by the standard OTEL_* variables;
    # unset, on when they name an exporter or an OTLP endpoint.
    tracing: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        env = os.environ if env is None else env
        d = cls()
        return cls(
            database_url=env.get("DND_DATABASE_URL", d.database_url).strip(),
            data_dir=Path(env.get("DND_DATA_DIR", str(d.data_dir))),
            grpc_addr=env.get("DND_GRPC_ADDR", d.grpc_addr),
            db_pool_min=_int(env, "DND_DB_POOL_MIN", d.db_pool_min, minimum=0),
            db_pool_max=_int(env, "DND_DB_POOL_MAX", d.db_pool_max, minimum=1),
            db_timeout_seconds=_float(env, "DND_DB_TIMEOUT_SECONDS", d.db_timeout_seconds),
            health_interval_seconds=_float(
                env, "DND_HEALTH_INTERVAL_SECONDS", d.health_interval_seconds
            ),
            shutdown_grace_seconds=_float(
                env, "DND_SHUTDOWN_GRACE_SECONDS", d.shutdown_grace_seconds
            ),
            log_level=env.get("DND_LOG_LEVEL", d.log_level).upper(),
            log_read_sample_rate=_float(
                env, "DND_LOG_READ_SAMPLE_RATE", d.log_read_sample_rate, maximum=1.0, minimum=0.0
            ),
            migrate_on_start=_bool(env, "DND_MIGRATE_ON_START", d.migrate_on_start),
            idempotency_ttl_seconds=_float(
                env, "DND_IDEMPOTENCY_TTL_SECONDS", d.idempotency_ttl_seconds, minimum=1.0
            ),
            default_phone_region=_region(env, d.default_phone_region),
            maintenance_interval_seconds=_float(
                env, "DND_MAINTENANCE_INTERVAL_SECONDS", d.maintenance_interval_seconds, 0.1
            ),
            block_expiry_interval_seconds=_float(
                env, "DND_BLOCK_EXPIRY_INTERVAL_SECONDS", d.block_expiry_interval_seconds
            ),
            watch_bookmark_seconds=_float(
                env, "DND_WATCH_BOOKMARK_SECONDS", d.watch_bookmark_seconds, 0.05
            ),
            watch_retention_seconds=_float(
                env, "DND_WATCH_RETENTION_SECONDS", d.watch_retention_seconds, 1.0
            ),
            watch_buffer_events=_int(env, "DND_WATCH_BUFFER_EVENTS", d.watch_buffer_events, 1),
            feed_poll_seconds=_float(env, "DND_FEED_POLL_SECONDS", d.feed_poll_seconds, 0.01),
            change_lanes=_change_lanes(env, d.change_lanes),
            history_retention_seconds=_float(
                env, "DND_HISTORY_RETENTION_SECONDS", d.history_retention_seconds, 1.0
            ),
            cache=_bool(env, "DND_CACHE", d.cache),
            cache_max_entries=_int(env, "DND_CACHE_MAX_ENTRIES", d.cache_max_entries, 1),
            policy_cache_seconds=_float(
                env, "DND_POLICY_CACHE_SECONDS", d.policy_cache_seconds, maximum=3600.0
            ),
            workers=_int(env, "DND_WORKERS", d.workers, 1),
            event_loop=_choice(env, "DND_EVENT_LOOP", ("", "uvloop", "asyncio")) or d.event_loop,
            worker_index=_int(env, "DND_WORKER_INDEX", d.worker_index, 0),
            tokens_file=env.get("DND_TOKENS_FILE", "").strip(),
            tokens_reload_seconds=_float(env, "DND_TOKENS_RELOAD_SECONDS", d.tokens_reload_seconds),
            auth=_choice(env, "DND_AUTH", ("", "enabled", "disabled")),
            tls_cert_file=env.get("DND_TLS_CERT_FILE", "").strip(),
            tls_key_file=env.get("DND_TLS_KEY_FILE", "").strip(),
            tls_client_ca_file=env.get("DND_TLS_CLIENT_CA_FILE", "").strip(),
            healthcheck_cert_file=env.get("DND_HEALTHCHECK_CERT_FILE", "").strip(),
            healthcheck_key_file=env.get("DND_HEALTHCHECK_KEY_FILE", "").strip(),
            max_message_bytes=_int(env, "DND_MAX_MESSAGE_BYTES", d.max_message_bytes, 1024),
            max_response_bytes=_response_bytes(env),
            max_streams_per_caller=_int(
                env, "DND_MAX_STREAMS_PER_CALLER", d.max_streams_per_caller, 1
            ),
            metrics_addr=env.get("DND_METRICS_ADDR", "").strip(),
            max_connection_age_seconds=_float(
                env, "DND_MAX_CONNECTION_AGE_SECONDS", d.max_connection_age_seconds
            ),
            max_connection_age_grace_seconds=_float(
                env, "DND_MAX_CONNECTION_AGE_GRACE_SECONDS", d.max_connection_age_grace_seconds
            ),
            ready_max_feed_delay_seconds=_float(
                env, "DND_READY_MAX_FEED_DELAY_SECONDS", d.ready_max_feed_delay_seconds
            ),
            cursor_key=_cursor_key(env),
            tracing=_tracing(env),
        )

    @property
    def response_limit(self) -> int:
        """The largest response the server sends."""
        return self.max_response_bytes or max(self.max_message_bytes, 4 << 20)

    @property
    def loopback(self) -> bool:
        """Whether the gRPC address is reachable from this machine only."""
        host = self.grpc_addr.rsplit(":", 1)[0].strip("[]").lower()
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


def _int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _float(
    env: Mapping[str, str],
    name: str,
    default: float,
    minimum: float = 0.0,
    maximum: float | None = None,
) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f">= {minimum}"
        raise ConfigError(f"{name} must be {bound}, got {value}")
    return value


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be true or false, got {raw!r}")


def _region(env: Mapping[str, str], default: str) -> str:
    raw = env.get("DND_DEFAULT_PHONE_REGION", "").strip().upper() or default
    if len(raw) != 2 or not raw.isalpha():
        raise ConfigError(f"DND_DEFAULT_PHONE_REGION must be a two-letter region code, got {raw!r}")
    return raw


def _response_bytes(env: Mapping[str, str]) -> int:
    value = _int(env, "DND_MAX_RESPONSE_BYTES", 0, minimum=0)
    if 0 < value < 1024:
        raise ConfigError(f"DND_MAX_RESPONSE_BYTES must be 0 (the default) or >= 1024, got {value}")
    return value


CURSOR_KEY_MIN_CHARS = 32


def _cursor_key(env: Mapping[str, str]) -> str:
    raw = env.get("DND_CURSOR_KEY", "").strip()
    if raw and len(raw) < CURSOR_KEY_MIN_CHARS:
        raise ConfigError(
            f"DND_CURSOR_KEY must be a secret of at least {CURSOR_KEY_MIN_CHARS} characters "
            f"(e.g. the output of `openssl rand -hex 32`), got {len(raw)}"
        )
    return raw


# The exporters OTEL_TRACES_EXPORTER may name (comma-separated).
TRACES_EXPORTERS = ("otlp", "console", "none")


def _tracing(env: Mapping[str, str]) -> bool:
    """DND_TRACING when set; else on when the OTEL_* variables ask for traces (an exporter
    other than ``none``, or an OTLP endpoint) and OTEL_SDK_DISABLED does not turn them off.
    When on, the exporter and OTLP protocol named must be ones the server has."""
    raw = env.get("DND_TRACING", "").strip()
    exporters = [
        name.strip().lower()
        for name in env.get("OTEL_TRACES_EXPORTER", "").split(",")
        if name.strip()
    ]
    if raw:
        on = _bool(env, "DND_TRACING", False)
    elif _bool_or(env, "OTEL_SDK_DISABLED", False):
        on = False
    elif exporters:
        on = exporters != ["none"]
    else:
        on = any(
            env.get(name, "").strip()
            for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        )
    if not on:
        return False
    unknown = [name for name in exporters if name not in TRACES_EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER names {', '.join(map(repr, unknown))}: the server exports "
            f"traces with {', '.join(TRACES_EXPORTERS)}"
        )
    for name in ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        protocol = env.get(name, "").strip().lower()
        if protocol and (not exporters or "otlp" in exporters):
            if protocol != "grpc":
                raise ConfigError(
                    f"{name} must be grpc (the server's OTLP exporter is OTLP/gRPC), "
                    f"got {protocol!r}"
                )
            break
    return True


def _bool_or(env: Mapping[str, str], name: str, default: bool) -> bool:
    """A boolean variable of another standard: what is not true is false."""
    raw = env.get(name, "").strip().lower()
    return raw in ("1", "true", "yes", "on") if raw else default


def _choice(env: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    raw = env.get(name, "").strip().lower()
    if raw not in choices:
        raise ConfigError(
            f"{name} must be one of {', '.join(c for c in choices if c)}, got {raw!r}"
        )
    return raw


def _change_lanes(env: Mapping[str, str], default: int) -> int:
    value = _int(env, "DND_CHANGE_LANES", default, 1)
    if value > 256:
        raise ConfigError(f"DND_CHANGE_LANES must be between 1 and 256, got {value}")
    return value
