"""Every metric and label the alert rules and the dashboard of deploy/monitoring/ name is served
by the ``/metrics`` of a real running server, and the watch cut-off counter counts a real slow
subscriber. tests/unit/test_monitoring.py checks the rules and the dashboard themselves."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServerProcess, new_id
from tests.unit.test_monitoring import TARGET_LABELS, expressions, label_names, metric_names

WATCH_BUFFER = 5
ACTIONS = (pb.DND_ACTION_ENABLE, pb.DND_ACTION_DISABLE)


@pytest.fixture(scope="module")
def served(fresh_database: Any) -> Iterator[tuple[ServerProcess, int]]:
    process = ServerProcess(
        fresh_database(),
        {"DND_METRICS_ADDR": "127.0.0.1:0", "DND_WATCH_BUFFER_EVENTS": str(WATCH_BUFFER)},
    ).start()
    try:
        port = next(
            int(entry["port"])
            for entry in process.logs
            if entry.get("event") == "metrics_listening"
        )
        yield process, port
    finally:
        process.stop()


def scrape(port: int) -> dict[str, list[dict[str, str]]]:
    """Every sample name in /metrics with the label sets it has."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


def value(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_every_metric_and_label_they_name_is_served(served: tuple[ServerProcess, int]) -> None:
    process, port = served
    with grpc.insecure_channel(process.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        stub.CheckSend(
            pb.CheckSendRequest(location_id=new_id("loc"), contact_id="c1", channel=pb.CHANNEL_SMS),
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.CheckSend(pb.CheckSendRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    samples = scrape(port)
    for expr in expressions():
        names = metric_names(expr)
        assert names, expr
        missing = names - set(samples)
        assert not missing, f"not in /metrics: {sorted(missing)} (named by: {expr.strip()})"
        served_labels = {label for name in names for labels in samples[name] for label in labels}
        unknown = label_names(expr) - served_labels - TARGET_LABELS
        assert not unknown, f"labels {sorted(unknown)} are on none of {sorted(names)}"
    codes = {labels["code"] for labels in samples["dnd_rpc_requests_total"]}
    assert {"OK", "INVALID_ARGUMENT"} <= codes, "the rules match codes by their names"
    # increase() and rate() of the rules need a counter; the delay is a level.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        types = {f.name: f.type for f in text_string_to_metric_families(response.read().decode())}
    assert types["dnd_watch_streams_cut_off"] == "counter"
    assert types["dnd_feed_delay_seconds"] == "gauge"


def test_watch_cut_off_is_counted(served: tuple[ServerProcess, int]) -> None:
    """A subscriber that stops reading while changes pile up past DND_WATCH_BUFFER_EVENTS is
    cut off (RESOURCE_EXHAUSTED, SUBSCRIBER_TOO_SLOW): dnd_watch_streams_cut_off_total counts it
    once, and a stream that keeps up is not counted."""
    process, port = served
    before = value(port, "dnd_watch_streams_cut_off_total")
    loc = new_id("loc-cut")
    # A small receive window and no window growth: the server cannot send ahead.
    slow = grpc.insecure_channel(
        process.addr,
        options=[
            ("grpc.http2.lookahead_bytes", 1024),
            ("grpc.http2.bdp_probe", 0),
            ("grpc.max_receive_message_length", 4096),
        ],
    )
    keeping_up = grpc.insecure_channel(process.addr)
    try:
        request = pb.WatchChangesRequest(location_ids=[loc])
        stream = dnd_pb2_grpc.DndServiceStub(slow).WatchChanges(request, timeout=30)
        assert next(stream).HasField("bookmark")  # open; from here on nobody reads it
        other = dnd_pb2_grpc.DndServiceStub(keeping_up).WatchChanges(
            pb.WatchChangesRequest(location_ids=[new_id("loc-quiet")]), timeout=30
        )
        assert next(other).HasField("bookmark")

        async def burst() -> None:
            async with grpc.aio.insecure_channel(process.addr) as channel:
                stub = dnd_pb2_grpc.DndServiceStub(channel)

                async def writer(contact: str) -> None:
                    for n in range(10):
                        await stub.SetDnd(
                            pb.SetDndRequest(
                                location_id=loc,
                                contact_id=contact,
                                action=ACTIONS[n % 2],
                                direction=pb.DIRECTION_OUTBOUND,
                                scope=pb.Scope(all_channels=True),
                                source=pb.SOURCE_USER,
                            ),
                            timeout=30,
                        )

                await asyncio.gather(*(writer(f"c{i}") for i in range(20)))

        asyncio.run(burst())
        with pytest.raises(grpc.RpcError) as cut:
            for _message in stream:
                pass
        assert cut.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, cut.value.details()
        deadline = time.monotonic() + 10
        while value(port, "dnd_watch_streams_cut_off_total") == before:
            assert time.monotonic() < deadline, "the cut-off was not counted"
            time.sleep(0.05)
        assert value(port, "dnd_watch_streams_cut_off_total") == before + 1
        other.cancel()
    finally:
        slow.close()
        keeping_up.close()
