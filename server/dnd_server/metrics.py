"""Prometheus metrics (``DND_METRICS_ADDR``): RPCs by method and status code with latency,
cache hits and misses, active watch streams and those cut off, change-feed lag and delay,
database pool usage, messaging providers' events ignored."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from dnd_server.domain.provider_events import KNOWN_PROVIDERS, normalise_provider

_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class LiveValues:
    """Callables read at scrape time (each returns the current value), set by the part that
    owns the value (``register_metrics`` of the servicer, cache, feed and runtime; the app's
    readiness check); 0 until then."""

    cache_hits: Callable[[], float] = lambda: 0.0
    cache_misses: Callable[[], float] = lambda: 0.0
    cache_entries: Callable[[], float] = lambda: 0.0
    cache_enabled: Callable[[], float] = lambda: 0.0
    watch_streams: Callable[[], float] = lambda: 0.0
    feed_lag: Callable[[], float] = lambda: 0.0
    feed_listening: Callable[[], float] = lambda: 0.0
    feed_delay: Callable[[], float] = lambda: 0.0
    watch_cut_off: Callable[[], float] = lambda: 0.0
    feed_reads: Callable[[], float] = lambda: 0.0
    feed_changes_read: Callable[[], float] = lambda: 0.0
    feed_failures: Callable[[], float] = lambda: 0.0
    pool_size: Callable[[], float] = lambda: 0.0
    pool_idle: Callable[[], float] = lambda: 0.0
    pool_max: Callable[[], float] = lambda: 0.0


class _LiveCollector(Collector):
    def __init__(self, live: LiveValues) -> None:
        self.live = live

    def collect(self) -> Iterator[Metric]:
        gauges = (
            ("dnd_cache_hits", "Cache hits (CheckSend, GetStatus, BatchCheckSend).", "cache_hits"),
            ("dnd_cache_misses", "Cache misses read from the database.", "cache_misses"),
            ("dnd_cache_entries", "Contacts and addresses held by the cache.", "cache_entries"),
            ("dnd_cache_enabled", "1 while the cache is trusted (feed up).", "cache_enabled"),
            ("dnd_watch_streams_active", "Open WatchChanges streams.", "watch_streams"),
            ("dnd_feed_lag_changes", "Changes committed but not yet read by the feed.", "feed_lag"),
            ("dnd_feed_listening", "1 while the feed's LISTEN connection is up.", "feed_listening"),
            (
                "dnd_feed_delay_seconds",
                "How long the feed has been behind the log head (readiness fails past a limit).",
                "feed_delay",
            ),
            ("dnd_db_pool_connections", "Open database connections.", "pool_size"),
            ("dnd_db_pool_idle_connections", "Idle database connections.", "pool_idle"),
            ("dnd_db_pool_max_connections", "Most database connections.", "pool_max"),
        )
        for name, text, attribute in gauges:
            yield GaugeMetricFamily(name, text, value=getattr(self.live, attribute)())
        counters = (
            (
                "dnd_watch_streams_cut_off",
                "WatchChanges streams cut off for falling behind (SUBSCRIBER_TOO_SLOW).",
                "watch_cut_off",
            ),
            (
                "dnd_feed_reads",
                "Reads of the change log by this process's feed (each one reads every change "
                "committed since the one before).",
                "feed_reads",
            ),
            ("dnd_feed_changes_read", "Changes the feed read and dispatched.", "feed_changes_read"),
            (
                "dnd_feed_failures",
                "Reads of the change log that failed other than by an unavailable database "
                "(each logged as feed_failed; the cache is dropped, the read tried again).",
                "feed_failures",
            ),
        )
        for name, text, attribute in counters:
            yield CounterMetricFamily(name, text, value=getattr(self.live, attribute)())


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "dnd_rpc_requests",
            "RPCs handled, by method and status code.",
            ["method", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "dnd_rpc_duration_seconds",
            "RPC latency, by method and status code.",
            ["method", "code"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self.ignored_events = Counter(
            "dnd_provider_events_ignored",
            "ReportDeliveryEvent and ReportSmsDeliveryFailure reports of an unknown provider "
            "or code (changing nothing), by provider (a provider the service does not know "
            "counts as 'other'; the code is never a label: see the delivery_code_unknown log).",
            ["provider"],
            registry=self.registry,
        )
        self.live = LiveValues()
        self.registry.register(_LiveCollector(self.live))

    def provider_event_ignored(self, provider: str) -> None:
        known = normalise_provider(provider)
        self.ignored_events.labels(known if known in KNOWN_PROVIDERS else "other").inc()

    def observe(self, method: str, code: str, seconds: float) -> None:
        self.requests.labels(method, code).inc()
        self.latency.labels(method, code).observe(seconds)

    def serve(self, addr: str) -> int:
        host, _, port = addr.rpartition(":")
        host = host.strip("[]") or "0.0.0.0"  # an IPv6 literal comes bracketed: [::1]:9090
        server, _thread = start_http_server(int(port), addr=host, registry=self.registry)
        bound: int = server.server_port
        return bound
