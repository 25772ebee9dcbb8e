"""Undecodable requests, over a raw gRPC channel to a real server process on real PostgreSQL:
bytes that are not the method's protobuf message are answered INVALID_ARGUMENT (BadRequest
and ErrorInfo of the service), on every RPC including the WatchChanges stream, with one JSON log
line per call and no traceback; nothing is written and the server keeps serving.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from google.protobuf.message import DecodeError

from tests.support import Database, ServerProcess, error_details

T = 10.0
SERVICE = pb.DESCRIPTOR.services_by_name["DndService"]
METHODS = [m.name for m in SERVICE.methods]


def garbage(method: str, seed: int) -> bytes:
    """Random bytes that the method's request type does not decode."""
    cls = getattr(pb, SERVICE.methods_by_name[method].input_type.name)
    rng = random.Random(f"{method}-{seed}")
    while True:
        data = rng.randbytes(rng.randint(1, 200))
        try:
            cls.FromString(data)
        except DecodeError:
            return data


@pytest.fixture(scope="module")
def own(fresh_database: Any) -> Iterator[ServerProcess]:
    process = ServerProcess(fresh_database()).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def raw(own: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(own.addr) as channel:
        yield channel


def send(channel: grpc.Channel, method: str, data: bytes) -> grpc.RpcError:
    path = f"/{SERVICE.full_name}/{method}"
    try:
        if SERVICE.methods_by_name[method].server_streaming:
            list(channel.unary_stream(path)(data, timeout=T))
        else:
            channel.unary_unary(path)(data, timeout=T)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{method} accepted {data!r}")


def printed_until_marker(process: ServerProcess, channel: grpc.Channel, since: int) -> list[str]:
    """The lines the server printed from index ``since`` up to the log line of a marker call
    made now (a refused GetStatus naming a location of its own): whatever the calls before
    it printed has been read by then."""
    marker = f"marker-{uuid.uuid4().hex}"
    stub = dnd_pb2_grpc.DndServiceStub(channel)
    with pytest.raises(grpc.RpcError):
        stub.GetStatus(pb.GetStatusRequest(location_id=marker), timeout=T)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        process.collect_logs()
        for index in range(since, len(process.raw)):
            if marker in process.raw[index]:
                return process.raw[since:index]
        time.sleep(0.05)
    raise AssertionError("the marker call was never logged")


@pytest.mark.parametrize("method", METHODS)
def test_random_bytes_are_invalid_argument(
    own: ServerProcess, raw: grpc.Channel, method: str
) -> None:
    data = garbage(method, 0)
    own.collect_logs()
    raw_mark = len(own.raw)
    error = send(raw, method, data)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, (error.code(), error.details())
    request_type = SERVICE.methods_by_name[method].input_type.full_name
    message = error.details() or ""
    assert f"not a serialized {request_type} message" in message
    assert "Traceback" not in message and "Exception" not in message
    details = error_details(error)
    assert [v.field for v in details["BadRequest"].field_violations] == ["request"]
    assert details["ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert details["ErrorInfo"].domain == "dnd.v1"

    printed = [
        line
        for line in printed_until_marker(own, raw, raw_mark)
        # The server's own background lines (its change feed, its cache) are not the call's.
        if not json.loads(line).get("event", "").startswith(("feed_", "cache_"))
    ]
    assert len(printed) == 1, f"one log line per call, got {printed}"
    line = json.loads(printed[0])
    assert line["code"] == "INVALID_ARGUMENT"
    streams = {"WatchChanges": "watch_ended", "ExportSuppressions": "export_ended"}
    if method in streams:
        assert line["event"] == streams[method]
    else:
        assert (line["event"], line["method"]) == ("rpc", method)


def test_many_undecodable_calls_change_nothing(own: ServerProcess, raw: grpc.Channel) -> None:
    db = Database(own.database_url)
    before = db.fetchval("SELECT count(*) FROM dnd_changes")
    own.collect_logs()
    raw_mark = len(own.raw)
    for seed in range(1, 6):
        for method in METHODS:
            assert send(raw, method, garbage(method, seed)).code() == (
                grpc.StatusCode.INVALID_ARGUMENT
            )
    assert db.fetchval("SELECT count(*) FROM dnd_changes") == before
    # The server still serves well-formed calls, and printed nothing but JSON lines.
    stub = dnd_pb2_grpc.DndServiceStub(raw)
    answer = stub.GetStatus(pb.GetStatusRequest(location_id="l", contact_id="c"), timeout=T)
    assert answer.status.version == 0
    printed = printed_until_marker(own, raw, raw_mark)
    assert len(printed) == 5 * len(METHODS)
    assert all(line.startswith("{") for line in printed), printed
    assert not any("Traceback" in line for line in printed)
