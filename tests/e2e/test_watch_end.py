"""Watch streams are logged and counted with their true end, over real gRPC to a real server
process on real PostgreSQL: a stream the client cancels, or whose client process dies, while
the server is sending it a backlog is CANCELLED (not OK); a stream that outlives its deadline
is DEADLINE_EXCEEDED; either way its slot is given back.

A client that does not read (and does not grow its flow-control window) stops the server
mid-backlog inside gRPC's send: that is where the transport cut reaches the stream.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support import OUT, REPO, ServerProcess, Watcher, new_id

T = 30.0
BACKLOG = 600
# A client that does not read beyond the first message, nor probe for a larger window.
NO_BDP = [("grpc.http2.bdp_probe", 0)]
HOLDER = """
import sys, time
import grpc
from dnd.v1 import dnd_pb2 as pb, dnd_pb2_grpc
addr, loc, cursor = sys.argv[1:4]
channel = grpc.insecure_channel(addr, options=[("grpc.http2.bdp_probe", 0)])
stream = dnd_pb2_grpc.DndServiceStub(channel).WatchChanges(
    pb.WatchChangesRequest(location_ids=[loc], after_cursor=cursor), timeout=300
)
next(stream)
print("reading no further", flush=True)
time.sleep(300)
"""


class Served:
    def __init__(self, url: str) -> None:
        self.process = ServerProcess(url, {"DND_METRICS_ADDR": "127.0.0.1:0"}).start()
        self.channel = grpc.insecure_channel(self.process.addr)
        self.stub = dnd_pb2_grpc.DndServiceStub(self.channel)
        port = next(e["port"] for e in self.process.logs if e.get("event") == "metrics_listening")
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"

    def samples(self) -> dict[tuple[str, str], float]:
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        found: dict[tuple[str, str], float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "dnd_rpc_requests_total":
                    if sample.labels["method"] == "WatchChanges":
                        found[("requests", sample.labels["code"])] = sample.value
                elif sample.name == "dnd_watch_streams_active":
                    found[("active", "")] = sample.value
        return found

    def watch_counts(self) -> dict[str, float]:
        return {code: v for (kind, code), v in self.samples().items() if kind == "requests"}

    def ended_after(self, mark: int, timeout: float = 20) -> dict[str, Any]:
        """The first watch_ended log line after log entry ``mark``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for entry in self.process.collect_logs()[mark:]:
                if entry.get("event") == "watch_ended":
                    return entry
            time.sleep(0.05)
        raise AssertionError("the stream's end was never logged")

    def wait_no_streams(self, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while self.samples().get(("active", "")) != 0.0:
            assert time.monotonic() < deadline, "the stream's slot was never given back"
            time.sleep(0.05)

    def close(self) -> None:
        self.channel.close()
        self.process.stop()


@pytest.fixture(scope="module")
def served(fresh_database: Any) -> Iterator[Served]:
    server = Served(fresh_database())
    yield server
    server.close()


@pytest.fixture(scope="module")
def backlog(served: Served) -> tuple[str, str]:
    """A location with BACKLOG changes of large events, and the cursor of its first change."""
    loc = "L" * 100 + new_id("loc")

    def enable(contact: str) -> str:
        answer = served.stub.SetDnd(
            pb.SetDndRequest(
                location_id=loc,
                contact_id=contact,
                action=pb.DND_ACTION_ENABLE,
                direction=OUT,
                scope=pb.Scope(channel=pb.CHANNEL_SMS),
                source=pb.SOURCE_USER,
                actor_id="a" * 128,
            ),
            timeout=T,
        )
        return str(answer.cursor)

    first = enable("c" * 110 + "-first")
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(enable, [f"{'c' * 110}-{i:05d}" for i in range(BACKLOG - 1)]))
    return loc, first


def assert_cut(served: Served, mark: int, before: dict[str, float]) -> None:
    ended = served.ended_after(mark)
    assert ended["code"] == "CANCELLED", ended
    assert 0 < ended["events"] < BACKLOG - 1, "the stream must have been cut mid-backlog"
    served.wait_no_streams()
    after = served.watch_counts()
    assert after.get("CANCELLED", 0) - before.get("CANCELLED", 0) == 1
    assert after.get("OK", 0) == before.get("OK", 0)


def test_stream_cancelled_by_the_client_mid_send(served: Served, backlog: tuple[str, str]) -> None:
    loc, first = backlog
    before = served.watch_counts()
    mark = len(served.process.collect_logs())
    with grpc.insecure_channel(served.process.addr, options=NO_BDP) as channel:
        stream = dnd_pb2_grpc.DndServiceStub(channel).WatchChanges(
            pb.WatchChangesRequest(location_ids=[loc], after_cursor=first), timeout=T
        )
        assert next(stream).HasField("event")
        stream.cancel()
    assert_cut(served, mark, before)


def test_stream_of_a_killed_client_process(served: Served, backlog: tuple[str, str]) -> None:
    loc, first = backlog
    before = served.watch_counts()
    mark = len(served.process.collect_logs())
    env = {**os.environ, "PYTHONPATH": os.path.join(REPO, "generated")}
    client = subprocess.Popen(
        [sys.executable, "-c", HOLDER, served.process.addr, loc, first],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert client.stdout is not None
        assert client.stdout.readline().strip() == "reading no further"
    finally:
        client.send_signal(signal.SIGKILL)
        client.wait(10)
        if client.stdout is not None:
            client.stdout.close()
    assert_cut(served, mark, before)


def test_stream_past_its_deadline(served: Served) -> None:
    before = served.watch_counts()
    mark = len(served.process.collect_logs())
    request = pb.WatchChangesRequest(location_ids=[new_id("quiet")])
    with Watcher(served.process.addr, request, timeout=1.5) as watcher:
        error = watcher.wait_done()
    assert error is not None and error.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    ended = served.ended_after(mark)
    assert ended["code"] == "DEADLINE_EXCEEDED", ended
    served.wait_no_streams()
    after = served.watch_counts()
    assert after.get("DEADLINE_EXCEEDED", 0) - before.get("DEADLINE_EXCEEDED", 0) == 1
    assert after.get("OK", 0) == before.get("OK", 0)
