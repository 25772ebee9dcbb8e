"""Prometheus metrics (``DND_METRICS_ADDR``) scraped over HTTP from a real server process: RPC
counts and latency by method and status code, cache hits and misses, active watch streams,
change-feed state and database pool usage. Counters are compared before and after the calls a
test makes, so each must move by exactly what the test did.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from dnd_server.auth import hash_token
from prometheus_client.parser import text_string_to_metric_families

from tests import factories
from tests.support import ServerProcess, new_id

Metadata = tuple[tuple[str, str], ...]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
T = 10.0
POOL_MIN, POOL_MAX = 2, 7
LOC = new_id("loc-metrics")
TOKENS = {name: f"secret-{name}-{uuid.uuid4().hex}" for name in ("admin", "checker")}
REQUESTS = "dnd_rpc_requests_total"
LATENCY = "dnd_rpc_duration_seconds"


def bearer(name: str) -> Metadata:
    return (("authorization", f"Bearer {TOKENS[name]}"),)


ADMIN = bearer("admin")


class Metrics:
    """The server's /metrics endpoint."""

    def __init__(self, port: int) -> None:
        self.url = f"http://127.0.0.1:{port}/metrics"

    def text(self) -> str:
        with urllib.request.urlopen(self.url, timeout=5) as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/plain")
            body: bytes = response.read()
        return body.decode()

    def types(self) -> dict[str, str]:
        return {f.name: f.type for f in text_string_to_metric_families(self.text())}

    def scrape(self) -> Samples:
        samples: Samples = {}
        for family in text_string_to_metric_families(self.text()):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    def value(self, name: str, **labels: str) -> float:
        return value(self.scrape(), name, **labels)

    def wait_for(self, name: str, wanted: float, timeout: float = 10, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        while (seen := self.value(name, **labels)) != wanted and time.monotonic() < deadline:
            time.sleep(0.05)
        return seen


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def buckets(samples: Samples, **labels: str) -> list[tuple[float, float]]:
    """The latency histogram's (upper bound, cumulative count) of one method and code."""
    found = []
    for (name, key), count in samples.items():
        these = dict(key)
        if name == f"{LATENCY}_bucket" and all(these[k] == v for k, v in labels.items()):
            found.append((float(these["le"]), count))
    return sorted(found)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


@pytest.fixture(scope="module")
def served(fresh_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    entries = [
        {
            "name": name,
            "sha256": hash_token(TOKENS[name]),
            "locations": locations,
            "scopes": scopes,
        }
        for name, locations, scopes in (
            ("admin", "*", ["read", "write", "check", "watch"]),
            ("checker", [LOC], ["check"]),
        )
    ]
    path: Path = tmp_path_factory.mktemp("metrics") / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}), encoding="utf-8")
    process = ServerProcess(
        fresh_database(),
        {
            "DND_TOKENS_FILE": str(path),
            "DND_METRICS_ADDR": "127.0.0.1:0",
            "DND_DB_POOL_MIN": str(POOL_MIN),
            "DND_DB_POOL_MAX": str(POOL_MAX),
            "DND_WATCH_BOOKMARK_SECONDS": "0.2",
        },
    ).start()
    try:
        with grpc.insecure_channel(process.addr) as channel:
            yield process, channel
    finally:
        process.stop()


@pytest.fixture(scope="module")
def metrics(served: Any) -> Metrics:
    process, _channel = served
    listening = [e for e in process.logs if e.get("event") == "metrics_listening"]
    assert len(listening) == 1
    assert listening[0]["addr"] == "127.0.0.1:0"
    port = int(listening[0]["port"])
    assert port > 0
    # The cache serves (and counts) only once the feed is listening and caught up.
    wait_logged(process, "cache_enabled")
    return Metrics(port)


def wait_logged(process: ServerProcess, event: str, timeout: float = 10) -> None:
    process.wait_log({"event": event}, timeout=timeout)


@pytest.fixture(scope="module")
def mstub(served: Any) -> dnd_pb2_grpc.DndServiceStub:
    channel: grpc.Channel = served[1]
    return dnd_pb2_grpc.DndServiceStub(channel)


def check(
    stub: dnd_pb2_grpc.DndServiceStub, contact: str, md: Metadata = ADMIN, **extra: Any
) -> pb.CheckSendResponse:
    return stub.CheckSend(factories.check(LOC, contact, **extra), metadata=md, timeout=T)


def set_dnd(stub: dnd_pb2_grpc.DndServiceStub, contact: str) -> pb.SetDndResponse:
    return stub.SetDnd(factories.enable(LOC, contact), metadata=ADMIN, timeout=T)


def fails(fn: Callable[..., object], *args: Any, **kwargs: Any) -> grpc.StatusCode:
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as error:
        code: grpc.StatusCode = error.code()
        return code
    raise AssertionError("the call succeeded; an error was expected")


def test_metric_families_and_types(metrics: Metrics) -> None:
    types = metrics.types()
    assert types["dnd_rpc_requests"] == "counter"
    assert types[LATENCY] == "histogram"
    for gauge in (
        "dnd_cache_hits",
        "dnd_cache_misses",
        "dnd_cache_entries",
        "dnd_cache_enabled",
        "dnd_watch_streams_active",
        "dnd_feed_lag_changes",
        "dnd_feed_listening",
        "dnd_db_pool_connections",
        "dnd_db_pool_idle_connections",
        "dnd_db_pool_max_connections",
    ):
        assert types.get(gauge) == "gauge", gauge


def test_rpc_counts_and_latency_by_method_and_code(
    metrics: Metrics, mstub: dnd_pb2_grpc.DndServiceStub
) -> None:
    before = metrics.scrape()
    contacts = [new_id("contact") for _ in range(2)]
    for contact in contacts:
        set_dnd(mstub, contact)
    for contact in [*contacts, new_id("contact")]:
        check(mstub, contact)
    invalid = pb.CheckSendRequest(location_id=LOC, contact_id="c")  # no channel
    assert fails(mstub.CheckSend, invalid, metadata=ADMIN) is grpc.StatusCode.INVALID_ARGUMENT
    status = pb.GetStatusRequest(location_id=LOC, contact_id="c")
    assert fails(mstub.GetStatus, status) is grpc.StatusCode.UNAUTHENTICATED
    denied = bearer("checker")
    assert fails(mstub.GetStatus, status, metadata=denied) is grpc.StatusCode.PERMISSION_DENIED
    after = metrics.scrape()

    expected = {
        ("SetDnd", "OK"): 2,
        ("CheckSend", "OK"): 3,
        ("CheckSend", "INVALID_ARGUMENT"): 1,
        ("GetStatus", "UNAUTHENTICATED"): 1,
        ("GetStatus", "PERMISSION_DENIED"): 1,
    }
    for (method, code), count in expected.items():
        assert delta(before, after, REQUESTS, method=method, code=code) == count, (method, code)
        labels = {"method": method, "code": code}
        assert delta(before, after, f"{LATENCY}_count", **labels) == count
        assert delta(before, after, f"{LATENCY}_bucket", le="+Inf", **labels) == count
        assert delta(before, after, f"{LATENCY}_sum", **labels) > 0
        counts = [v for _, v in buckets(after, **labels)]
        assert len(counts) == 14 and counts == sorted(counts)  # 13 bounds and +Inf, cumulative
    # Nothing else was counted: health checks and scrapes are not DndService calls.
    assert total(after, REQUESTS) - total(before, REQUESTS) == sum(expected.values())


def test_watch_streams_gauge(metrics: Metrics, mstub: dnd_pb2_grpc.DndServiceStub) -> None:
    assert metrics.value("dnd_watch_streams_active") == 0
    cancelled = metrics.value(REQUESTS, method="WatchChanges", code="CANCELLED")
    call = mstub.WatchChanges(
        pb.WatchChangesRequest(location_ids=[LOC]), metadata=ADMIN, timeout=30
    )
    received: list[Any] = []
    reader = threading.Thread(target=lambda: _drain(call, received), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 10
        while not received and time.monotonic() < deadline:
            time.sleep(0.02)
        assert received, "the stream sent nothing"
        assert metrics.value("dnd_watch_streams_active") == 1
        # A refused stream does not count.
        refused = mstub.WatchChanges(
            pb.WatchChangesRequest(location_ids=["loc-other"]), metadata=bearer("checker")
        )
        assert fails(next, refused) is grpc.StatusCode.PERMISSION_DENIED
        assert metrics.value("dnd_watch_streams_active") == 1
    finally:
        call.cancel()
        reader.join(10)
    assert metrics.wait_for("dnd_watch_streams_active", 0.0) == 0
    ended = metrics.wait_for(REQUESTS, cancelled + 1, method="WatchChanges", code="CANCELLED")
    assert ended == cancelled + 1
    assert metrics.value(REQUESTS, method="WatchChanges", code="PERMISSION_DENIED") >= 1


def _drain(call: Any, into: list[Any]) -> None:
    try:
        for message in call:
            into.append(message)
    except grpc.RpcError:
        pass


def test_cache_hits_and_misses(metrics: Metrics, mstub: dnd_pb2_grpc.DndServiceStub) -> None:
    # (The gauges read 0 while the cache is empty: see test_cache_gauges_when_empty.)
    check(mstub, new_id("contact"))
    assert metrics.value("dnd_cache_enabled") == 1
    contact = new_id("contact")
    before = metrics.scrape()
    assert check(mstub, contact).allowed  # not cached yet: a miss
    after_first = metrics.scrape()
    assert delta(before, after_first, "dnd_cache_misses") == 1
    assert delta(before, after_first, "dnd_cache_hits") == 0
    assert check(mstub, contact).allowed  # now a hit
    mstub.GetStatus(
        pb.GetStatusRequest(location_id=LOC, contact_id=contact), metadata=ADMIN, timeout=T
    )  # a hit too
    check(mstub, contact, fully_consistent=True)  # the database, not the cache
    after = metrics.scrape()
    assert delta(after_first, after, "dnd_cache_hits") == 2
    assert delta(after_first, after, "dnd_cache_misses") == 0
    assert value(after, "dnd_cache_entries") >= 1


def test_the_feed_counts_its_reads_and_the_changes_they_found(
    metrics: Metrics, mstub: dnd_pb2_grpc.DndServiceStub
) -> None:
    types = metrics.types()
    assert types["dnd_feed_reads"] == types["dnd_feed_changes_read"] == "counter"
    before = metrics.scrape()
    for _ in range(5):
        set_dnd(mstub, new_id("contact"))  # one change each
    deadline = time.monotonic() + 10
    while delta(before, metrics.scrape(), "dnd_feed_changes_read_total") < 5:
        assert time.monotonic() < deadline, "the feed did not read the changes"
        time.sleep(0.02)
    after = metrics.scrape()
    assert delta(before, after, "dnd_feed_changes_read_total") == 5
    # At least one read, and no more than one per write (and a poll or two meanwhile).
    assert 1 <= delta(before, after, "dnd_feed_reads_total") <= 7


def test_pool_and_feed_gauges(metrics: Metrics, mstub: dnd_pb2_grpc.DndServiceStub) -> None:
    samples = metrics.scrape()
    assert value(samples, "dnd_db_pool_max_connections") == POOL_MAX
    size = value(samples, "dnd_db_pool_connections")
    assert POOL_MIN <= size <= POOL_MAX
    assert 0 <= value(samples, "dnd_db_pool_idle_connections") <= size
    assert value(samples, "dnd_feed_listening") == 1
    set_dnd(mstub, new_id("contact"))
    # The feed reads the change at once: no lag left behind.
    assert metrics.wait_for("dnd_feed_lag_changes", 0.0) == 0


def test_no_metrics_endpoint_unless_configured(server: ServerProcess) -> None:
    assert not [e for e in server.collect_logs() if e.get("event") == "metrics_listening"]


def test_ipv6_metrics_address(fresh_database: Any) -> None:
    process = ServerProcess(fresh_database(), {"DND_METRICS_ADDR": "[::1]:0"})
    try:
        process.start(timeout=20)
        port = next(e["port"] for e in process.logs if e.get("event") == "metrics_listening")
        with urllib.request.urlopen(f"http://[::1]:{port}/metrics", timeout=5) as response:
            assert b"dnd_rpc_requests" in response.read()
    finally:
        process.stop()


def test_cache_gauges_when_empty(fresh_database: Any) -> None:
    process = ServerProcess(fresh_database(), {"DND_METRICS_ADDR": "127.0.0.1:0"}).start()
    try:
        wait_logged(process, "cache_enabled")
        port = next(e["port"] for e in process.logs if e.get("event") == "metrics_listening")
        assert Metrics(port).value("dnd_cache_enabled") == 1
    finally:
        process.stop()
