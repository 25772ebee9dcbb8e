"""Limits over real gRPC, real server processes and real PostgreSQL: the largest request
(``DND_MAX_MESSAGE_BYTES``), watch streams per caller (``DND_MAX_STREAMS_PER_CALLER``, by token,
or by client host when open) and the batch size of BatchCheckSend. Each is answered with a
clear status and the server keeps serving.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from dnd_server.auth import hash_token

from tests import factories
from tests.support import ServerProcess, bad_fields, error_details, new_id

Metadata = tuple[tuple[str, str], ...]
T = 10.0
MAX_BYTES = 65536
STREAMS = 2
LOC = new_id("loc-limits")
TOKENS = {name: f"secret-{name}-{uuid.uuid4().hex}" for name in ("one", "two", "admin")}


def bearer(name: str) -> Metadata:
    return (("authorization", f"Bearer {TOKENS[name]}"),)


def failure(fn: Callable[..., object], *args: Any, **kwargs: Any) -> grpc.RpcError:
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as error:
        return error
    raise AssertionError("the call succeeded; an error was expected")


class Stream:
    """A WatchChanges stream read in a thread."""

    def __init__(
        self,
        channel: grpc.Channel,
        metadata: Metadata = (),
        request: pb.WatchChangesRequest | None = None,
    ) -> None:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        self.call = stub.WatchChanges(
            request or pb.WatchChangesRequest(location_ids=[LOC]), metadata=metadata, timeout=60
        )
        self.events: list[Any] = []
        self.bookmarks = 0
        self.error: grpc.RpcError | None = None
        self.done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                with self._cond:
                    if message.HasField("event"):
                        self.events.append(message.event)
                    else:
                        self.bookmarks += 1
                    self._cond.notify_all()
        except grpc.RpcError as error:
            self.error = error
        finally:
            with self._cond:
                self.done = True
                self._cond.notify_all()

    def wait(self, predicate: Callable[[Stream], bool], timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self) and not self.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return predicate(self)

    def opened(self) -> bool:
        """Whether the stream is up: it received its first bookmark."""
        return self.wait(lambda s: s.bookmarks > 0)

    def refused(self) -> grpc.RpcError:
        """The error that ended the stream at once."""
        assert self.wait(lambda s: s.done), "the stream was not refused"
        assert self.error is not None
        return self.error

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(10)


def assert_too_many(error: grpc.RpcError) -> None:
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error
    info = error_details(error)["ErrorInfo"]
    assert info.reason == "TOO_MANY_STREAMS"
    assert info.metadata["limit"] == str(STREAMS)
    assert f"already has {STREAMS} open watch streams" in (error.details() or "")


def set_dnd(stub: dnd_pb2_grpc.DndServiceStub, contact: str, metadata: Metadata = ()) -> None:
    stub.SetDnd(factories.enable(LOC, contact), metadata=metadata, timeout=T)


def assert_serving(process: ServerProcess, stub: dnd_pb2_grpc.DndServiceStub) -> None:
    assert process.proc is not None and process.proc.poll() is None
    assert process.health() == "SERVING"
    stub.GetKeywordSettings(pb.GetKeywordSettingsRequest(location_id=LOC), timeout=T)
    logs = "".join(process.raw)
    assert "Traceback" not in logs and "rpc_internal_error" not in logs


# --- an open server with small limits ----------------------------------------------------------


@pytest.fixture(scope="module")
def limited(fresh_database: Any) -> Iterator[ServerProcess]:
    process = ServerProcess(
        fresh_database(),
        {
            "DND_MAX_MESSAGE_BYTES": str(MAX_BYTES),
            "DND_MAX_STREAMS_PER_CALLER": str(STREAMS),
            "DND_WATCH_BOOKMARK_SECONDS": "0.2",
        },
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def lchan(limited: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(limited.addr) as channel:
        yield channel


@pytest.fixture(scope="module")
def lstub(lchan: grpc.Channel) -> dnd_pb2_grpc.DndServiceStub:
    return dnd_pb2_grpc.DndServiceStub(lchan)


def batch(count: int, id_length: int = 20) -> pb.BatchCheckSendRequest:
    return pb.BatchCheckSendRequest(
        location_id=LOC,
        channel=pb.CHANNEL_SMS,
        targets=[
            pb.CheckTarget(contact_id=f"c{i:06d}".ljust(id_length, "x")) for i in range(count)
        ],
    )


def test_request_over_the_limit_is_resource_exhausted(
    limited: ServerProcess, lstub: dnd_pb2_grpc.DndServiceStub
) -> None:
    just_under = batch(1000, id_length=60)
    over = batch(1000, id_length=66)
    assert just_under.ByteSize() < MAX_BYTES < over.ByteSize()
    answer = lstub.BatchCheckSend(just_under, timeout=T)
    assert len(answer.results) == 1000
    error = failure(lstub.BatchCheckSend, over, timeout=T)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert str(MAX_BYTES) in (error.details() or "")
    # A huge text field never reaches validation either.
    request = pb.SetDndRequest(location_id=LOC, contact_id="c", note="n" * 200_000)
    error = failure(lstub.SetDnd, request, timeout=T)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    # The same channel and server go on serving.
    contact = new_id("contact")
    set_dnd(lstub, contact)
    check = lstub.CheckSend(
        pb.CheckSendRequest(location_id=LOC, contact_id=contact, channel=pb.CHANNEL_SMS),
        timeout=T,
    )
    assert not check.allowed
    assert_serving(limited, lstub)


def test_oversized_watch_request_is_resource_exhausted(
    limited: ServerProcess, lchan: grpc.Channel, lstub: dnd_pb2_grpc.DndServiceStub
) -> None:
    request = pb.WatchChangesRequest(
        location_ids=[f"loc-{i:04d}".ljust(100, "x") for i in range(900)]
    )
    assert request.ByteSize() > MAX_BYTES
    stream = Stream(lchan, request=request)
    try:
        error = stream.refused()
    finally:
        stream.close()
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert_serving(limited, lstub)


def test_default_limit_is_one_mebibyte(stub: dnd_pb2_grpc.DndServiceStub) -> None:
    """The session server runs with the defaults: 1 MiB, well under gRPC's own 4 MiB."""
    request = batch(1000, id_length=120)
    assert request.ByteSize() < 1 << 20
    assert len(stub.BatchCheckSend(request, timeout=T).results) == 1000
    huge = pb.SetDndRequest(location_id=LOC, contact_id="c", note="n" * (1100 * 1024))
    error = failure(stub.SetDnd, huge, timeout=T)
    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "1048576" in (error.details() or "")


def test_batch_of_1000_is_answered_in_order(lstub: dnd_pb2_grpc.DndServiceStub) -> None:
    contact = new_id("contact")
    set_dnd(lstub, contact)
    request = batch(1000)
    request.targets[500].contact_id = contact
    answer = lstub.BatchCheckSend(request, timeout=T)
    assert [r.contact_id for r in answer.results] == [t.contact_id for t in request.targets]
    assert [i for i, r in enumerate(answer.results) if not r.allowed] == [500]


@pytest.mark.parametrize("count", [1001, 5000, 0])
def test_batch_size_out_of_range_is_invalid_argument(
    count: int, limited: ServerProcess, lstub: dnd_pb2_grpc.DndServiceStub
) -> None:
    error = failure(lstub.BatchCheckSend, batch(count, id_length=8), timeout=T)
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error) == ["targets"]
    text = error.details() or ""
    assert "1000" in text
    if count:
        assert f"{count} contacts" in text
    assert_serving(limited, lstub)


def test_open_mode_counts_streams_per_client_host(
    limited: ServerProcess, lchan: grpc.Channel, lstub: dnd_pb2_grpc.DndServiceStub
) -> None:
    streams = [Stream(lchan) for _ in range(STREAMS)]
    try:
        assert all(s.opened() for s in streams)
        # Another channel from the same host counts too.
        with grpc.insecure_channel(limited.addr) as other:
            extra = Stream(other)
            try:
                assert_too_many(extra.refused())
            finally:
                extra.close()
        # The open streams are unaffected and carry changes.
        contact = new_id("contact")
        set_dnd(lstub, contact)
        for s in streams:
            assert s.wait(lambda s: any(e.contact_id == contact for e in s.events))
    finally:
        for s in streams:
            s.close()
    assert_serving(limited, lstub)


# --- a server with tokens: streams are counted per token ---------------------------------------


@pytest.fixture(scope="module")
def tokened(fresh_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    entries = [
        {"name": name, "sha256": hash_token(token), "locations": [LOC], "scopes": ["watch"]}
        for name, token in TOKENS.items()
        if name != "admin"
    ]
    admin = {"name": "admin", "sha256": hash_token(TOKENS["admin"]), "locations": "*"}
    entries.append({**admin, "scopes": ["write", "watch"]})
    path: Path = tmp_path_factory.mktemp("limits") / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}), encoding="utf-8")
    process = ServerProcess(
        fresh_database(),
        {
            "DND_TOKENS_FILE": str(path),
            "DND_MAX_STREAMS_PER_CALLER": str(STREAMS),
            "DND_WATCH_BOOKMARK_SECONDS": "0.2",
        },
    ).start()
    with grpc.insecure_channel(process.addr) as channel:
        yield process, channel
    process.stop()


def open_when_allowed(channel: grpc.Channel, metadata: Metadata, timeout: float = 10) -> Stream:
    """A stream opened as soon as the server has let go of a closed one."""
    deadline = time.monotonic() + timeout
    while True:
        stream = Stream(channel, metadata)
        stream.wait(lambda s: s.bookmarks > 0 or s.done)
        if stream.bookmarks:
            return stream
        error = stream.error
        stream.close()
        assert error is not None
        assert_too_many(error)
        assert time.monotonic() < deadline, "the closed stream's slot was never given back"
        time.sleep(0.1)


def test_streams_are_limited_per_token(tokened: Any) -> None:
    _process, channel = tokened
    stub = dnd_pb2_grpc.DndServiceStub(channel)
    mine = [Stream(channel, bearer("one")) for _ in range(STREAMS)]
    others: list[Stream] = []
    try:
        assert all(s.opened() for s in mine), [s.error for s in mine]
        for _ in range(2):
            extra = Stream(channel, bearer("one"))
            assert_too_many(extra.refused())
            extra.close()
        # Another token is counted on its own.
        others = [Stream(channel, bearer("two")) for _ in range(STREAMS)]
        assert all(s.opened() for s in others), [s.error for s in others]
        # Everything open still works.
        contact = new_id("contact")
        set_dnd(stub, contact, bearer("admin"))
        for s in mine + others:
            assert s.wait(lambda s: any(e.contact_id == contact for e in s.events))
        # Closing one gives its slot back (and refused attempts took none).
        mine.pop().close()
        mine.append(open_when_allowed(channel, bearer("one")))
        extra = Stream(channel, bearer("one"))
        assert_too_many(extra.refused())
        extra.close()
    finally:
        for s in mine + others:
            s.close()
    # With every stream closed the token may open its full share again.
    again = [open_when_allowed(channel, bearer("one")) for _ in range(STREAMS)]
    for s in again:
        s.close()


def test_refused_streams_take_no_slot(tokened: Any) -> None:
    _process, channel = tokened
    first = open_when_allowed(channel, bearer("one"))
    try:
        # Streams refused for another reason do not count against the caller.
        for request in (
            pb.WatchChangesRequest(location_ids=["loc-elsewhere"]),
            pb.WatchChangesRequest(after_cursor="not-a-cursor"),
        ):
            for _ in range(STREAMS + 1):
                refused = Stream(channel, bearer("one"), request)
                assert refused.refused().code() in (
                    grpc.StatusCode.PERMISSION_DENIED,
                    grpc.StatusCode.INVALID_ARGUMENT,
                )
                refused.close()
        second = Stream(channel, bearer("one"))
        try:
            assert second.opened(), second.error
        finally:
            second.close()
    finally:
        first.close()
