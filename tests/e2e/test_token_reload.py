"""Tokens revoked, added and expired without a restart, over real gRPC and PostgreSQL.

The server reloads its tokens file on SIGHUP and when the file changes; a removed token is
refused from the next call on; a new file that cannot be read or is invalid leaves the tokens
in force and logs an error; a token past its ``expires_at`` is refused, saying it expired.
The expiry rule itself is tested on the token table with a clock the test moves, in
tests/unit/test_token_expiry.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from dnd_server.auth import hash_token

from tests.support import Database, ServerProcess, error_details, new_id, wait_until

T = 10.0  # seconds allowed to any one call
NAMES = ("keeper", "revoked", "added", "expired", "later")
TOKENS = {name: f"secret-{name}-{uuid.uuid4().hex}" for name in NAMES}
OK = grpc.StatusCode.OK
REFUSED = grpc.StatusCode.UNAUTHENTICATED


def entry(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "sha256": hash_token(TOKENS[name]),
        "locations": "*",
        "scopes": ["read"],
        **extra,
    }


def tokens_json(*entries: dict[str, Any]) -> str:
    return json.dumps({"tokens": list(entries)})


def rfc3339(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def call(stub: dnd_pb2_grpc.DndServiceStub, name: str) -> grpc.RpcError | None:
    """GetStatus with ``name``'s token: None when it is accepted, else the error."""
    request = pb.GetStatusRequest(location_id="loc-reload", contact_id=new_id("contact"))
    try:
        stub.GetStatus(request, metadata=(("authorization", f"Bearer {TOKENS[name]}"),), timeout=T)
    except grpc.RpcError as error:
        return error
    return None


def code(stub: dnd_pb2_grpc.DndServiceStub, name: str) -> grpc.StatusCode:
    error = call(stub, name)
    return OK if error is None else error.code()  # type: ignore[no-any-return]


def wait_log(server: ServerProcess, event: str, after: int, timeout: float = 10) -> dict[str, Any]:
    """The first log entry ``event`` past the ``after`` first lines, waiting for it."""
    return server.wait_log({"event": event}, after, timeout)


def wait_code(
    stub: dnd_pb2_grpc.DndServiceStub, name: str, wanted: grpc.StatusCode, timeout: float = 10
) -> None:
    deadline = time.monotonic() + timeout
    seen = code(stub, name)
    while seen != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = code(stub, name)
    assert seen == wanted, (name, seen)


def replace_file(path: Path, content: str) -> None:
    """Rewrite ``path`` the way deploy tools do: a new file renamed over the old one."""
    temporary = path.with_suffix(".tmp")
    temporary.write_text(content, encoding="utf-8")
    os.replace(temporary, path)


class Secured:
    def __init__(self, server: ServerProcess, path: Path) -> None:
        self.server = server
        self.path = path
        self.channel = grpc.insecure_channel(server.addr)
        self.stub = dnd_pb2_grpc.DndServiceStub(self.channel)

    def mark(self) -> int:
        return len(self.server.collect_logs())


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def secured_server(url: str, folder: Path, reload_seconds: str, **env: str) -> Iterator[Secured]:
    path = folder / "tokens.json"
    path.write_text(tokens_json(entry("keeper"), entry("revoked")), encoding="utf-8")
    server = ServerProcess(
        url,
        {"DND_TOKENS_FILE": str(path), "DND_TOKENS_RELOAD_SECONDS": reload_seconds, **env},
    ).start()
    secured = Secured(server, path)
    try:
        yield secured
    finally:
        secured.channel.close()
        server.stop()


@pytest.fixture
def on_signal(database_url: str, tmp_path: Path) -> Iterator[Secured]:
    """A server that reloads on SIGHUP only (the file is not watched)."""
    yield from secured_server(database_url, tmp_path, "0")


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[Secured]:
    """Two worker processes behind one port, reloading on SIGHUP only."""
    yield from secured_server(
        database_url,
        tmp_path,
        "0",
        DND_WORKERS="2",
        DND_GRPC_ADDR=f"127.0.0.1:{free_port()}",
    )


@pytest.fixture
def watching(database_url: str, tmp_path: Path) -> Iterator[Secured]:
    """A server that also checks the file for changes every 0.1 s."""
    yield from secured_server(database_url, tmp_path, "0.1")


# --- reload over a real server ----------------------------------------------------------------


def test_sighup_reload_refuses_a_removed_token_at_once(on_signal: Secured) -> None:
    stub = on_signal.stub
    assert code(stub, "revoked") == OK
    assert code(stub, "added") == REFUSED
    on_signal.path.write_text(tokens_json(entry("keeper"), entry("added")), encoding="utf-8")
    # The file is not watched here: nothing changes before the signal.
    time.sleep(0.3)
    assert code(stub, "revoked") == OK

    mark = on_signal.mark()
    on_signal.server.signal(signal.SIGHUP)
    reloaded = wait_log(on_signal.server, "tokens_reloaded", mark)
    assert reloaded["trigger"] == "signal" and reloaded["tokens"] == 2
    # Right after the reload: the removed token is refused, the new one accepted.
    error = call(stub, "revoked")
    assert error is not None and error.code() == REFUSED
    assert error_details(error)["ErrorInfo"].reason == "UNAUTHENTICATED"
    assert code(stub, "added") == OK
    assert code(stub, "keeper") == OK
    assert on_signal.server.proc is not None and on_signal.server.proc.poll() is None


def count_logged(server: ServerProcess, after: int, **fields: Any) -> int:
    lines = server.collect_logs()[after:]
    return sum(1 for line in lines if all(line.get(k) == v for k, v in fields.items()))


def test_sighup_to_the_supervisor_reaches_every_worker(workers: Secured) -> None:
    server = workers.server
    wait_until(
        lambda: count_logged(server, 0, event="health_changed", serving=True) >= 2,
        30,
        "the two workers both serving",
    )
    assert code(workers.stub, "revoked") == OK
    workers.path.write_text(tokens_json(entry("keeper")), encoding="utf-8")
    mark = workers.mark()
    workers.server.signal(signal.SIGHUP)

    wait_until(
        lambda: count_logged(server, mark, event="tokens_reloaded") >= 2,
        10,
        "both workers reloading their tokens",
    )
    # Whichever worker a new connection lands on refuses the removed token.
    for _ in range(8):
        with grpc.insecure_channel(
            server.addr, options=[("grpc.use_local_subchannel_pool", 1)]
        ) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            assert code(stub, "revoked") == REFUSED
            assert code(stub, "keeper") == OK
    assert server.proc is not None and server.proc.poll() is None


def test_changed_file_is_reloaded_without_a_signal(watching: Secured) -> None:
    stub = watching.stub
    assert code(stub, "revoked") == OK
    mark = watching.mark()
    replace_file(watching.path, tokens_json(entry("keeper")))  # renamed over the old file
    wait_code(stub, "revoked", REFUSED)
    assert wait_log(watching.server, "tokens_reloaded", mark)["trigger"] == "file_changed"
    assert code(stub, "keeper") == OK

    # Rewritten in place, the same file: the change is seen too.
    watching.path.write_text(tokens_json(entry("keeper"), entry("added")), encoding="utf-8")
    wait_code(stub, "added", OK)
    assert code(stub, "revoked") == REFUSED


BROKEN = [
    ("{not json", "cannot read tokens file"),
    ('{"tokens": []}', "at least one token"),
    (tokens_json(entry("keeper", scopes=["admin"])), "tokens[0].scopes"),
    (tokens_json(entry("keeper", expires_at="next tuesday")), "tokens[0].expires_at"),
    (None, "cannot read tokens file"),  # the file removed
]


def test_unusable_new_file_keeps_the_old_tokens_and_logs_an_error(watching: Secured) -> None:
    stub = watching.stub
    for content, problem in BROKEN:
        mark = watching.mark()
        if content is None:
            watching.path.unlink()
        else:
            replace_file(watching.path, content)
        failed = wait_log(watching.server, "tokens_reload_failed", mark)
        assert failed["level"] == "error"
        assert problem in failed["error"] and str(watching.path) in failed["error"]
        assert failed["trigger"] == "file_changed"
        # The tokens in force before stay: both still accepted, nothing else is.
        assert code(stub, "keeper") == OK, problem
        assert code(stub, "revoked") == OK, problem
        assert code(stub, "added") == REFUSED, problem

    # SIGHUP on a file that is still missing: refused the same way, tokens kept.
    mark = watching.mark()
    watching.server.signal(signal.SIGHUP)
    failed = wait_log(watching.server, "tokens_reload_failed", mark)
    assert failed["trigger"] == "signal"
    assert code(stub, "revoked") == OK

    # A good file again is taken.
    mark = watching.mark()
    replace_file(watching.path, tokens_json(entry("added")))
    wait_log(watching.server, "tokens_reloaded", mark)
    assert code(stub, "added") == OK
    assert code(stub, "keeper") == REFUSED


def test_expired_token_is_refused_saying_so(on_signal: Secured) -> None:
    stub = on_signal.stub
    now = dt.datetime.now(dt.UTC)
    past, future = now - dt.timedelta(minutes=5), now + dt.timedelta(days=1)
    on_signal.path.write_text(
        tokens_json(
            entry("keeper"),
            entry("expired", expires_at=rfc3339(past)),
            entry("later", expires_at=rfc3339(future)),
        ),
        encoding="utf-8",
    )
    mark = on_signal.mark()
    on_signal.server.signal(signal.SIGHUP)
    wait_log(on_signal.server, "tokens_reloaded", mark)

    error = call(stub, "expired")
    assert error is not None and error.code() == REFUSED
    assert "expired" in (error.details() or "")
    assert rfc3339(past).split(".")[0] in (error.details() or "")
    assert error_details(error)["ErrorInfo"].reason == "UNAUTHENTICATED"
    assert TOKENS["expired"] not in (error.details() or "")
    assert code(stub, "later") == OK
    assert code(stub, "keeper") == OK
    # An unknown token is still just unknown.
    error = call(stub, "revoked")
    assert error is not None and "expired" not in (error.details() or "")


# --- streams of revoked tokens --------------------------------------------------------------


@pytest.fixture
def watching_streams(database_url: str, tmp_path: Path) -> Iterator[Secured]:
    """A SIGHUP-reloading server whose tokens may watch, with bookmarks every 0.2 s."""
    path_entries = (
        entry("keeper", scopes=["read", "watch"]),
        entry("revoked", scopes=["read", "watch"]),
    )
    folder = tmp_path
    gen = secured_server(database_url, folder, "0", DND_WATCH_BOOKMARK_SECONDS="0.2")
    secured = next(gen)
    secured.path.write_text(tokens_json(*path_entries), encoding="utf-8")
    mark = secured.mark()
    secured.server.signal(signal.SIGHUP)
    wait_log(secured.server, "tokens_reloaded", mark)
    try:
        yield secured
    finally:
        gen.close()


def open_stream(stub: dnd_pb2_grpc.DndServiceStub, name: str) -> Any:
    request = pb.WatchChangesRequest(location_ids=["loc-reload"])
    metadata = (("authorization", f"Bearer {TOKENS[name]}"),)
    return stub.WatchChanges(request, metadata=metadata, timeout=30)


def test_an_open_watch_stream_ends_when_its_token_is_revoked(watching_streams: Secured) -> None:
    stub = watching_streams.stub
    revoked, kept = open_stream(stub, "revoked"), open_stream(stub, "keeper")
    # Both streams deliver (bookmarks) while their tokens are in force.
    assert next(revoked).HasField("bookmark") and next(kept).HasField("bookmark")
    watching_streams.path.write_text(
        tokens_json(entry("keeper", scopes=["read", "watch"])), encoding="utf-8"
    )
    started = time.monotonic()
    watching_streams.server.signal(signal.SIGHUP)
    with pytest.raises(grpc.RpcError) as ended:
        for _ in revoked:
            assert time.monotonic() - started < 5, "the revoked token's stream kept running"
    assert ended.value.code() == REFUSED
    # The stream of a token still in force goes on.
    for _ in range(3):
        assert next(kept).HasField("bookmark")
    kept.cancel()


def test_an_open_watch_stream_ends_when_its_token_loses_the_scope(
    watching_streams: Secured,
) -> None:
    stub = watching_streams.stub
    stream = open_stream(stub, "revoked")
    assert next(stream).HasField("bookmark")
    watching_streams.path.write_text(
        tokens_json(entry("keeper", scopes=["read", "watch"]), entry("revoked")),
        encoding="utf-8",
    )
    watching_streams.server.signal(signal.SIGHUP)
    with pytest.raises(grpc.RpcError) as ended:
        for _ in stream:
            pass
    assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_a_stream_of_every_location_ends_when_its_token_is_narrowed(
    watching_streams: Secured,
) -> None:
    """A stream naming no location follows every location its token allows: "*". Narrowed to
    some locations, the token may not go on watching the others: the stream ends."""
    stub = watching_streams.stub
    metadata = (("authorization", f"Bearer {TOKENS['revoked']}"),)
    stream = stub.WatchChanges(pb.WatchChangesRequest(), metadata=metadata, timeout=30)
    assert next(stream).HasField("bookmark")
    narrowed = entry("revoked", scopes=["read", "watch"])
    narrowed["locations"] = ["loc-reload"]
    watching_streams.path.write_text(
        tokens_json(entry("keeper", scopes=["read", "watch"]), narrowed), encoding="utf-8"
    )
    started = time.monotonic()
    watching_streams.server.signal(signal.SIGHUP)
    with pytest.raises(grpc.RpcError) as ended:
        for _ in stream:
            assert time.monotonic() - started < 5, "the narrowed token's stream kept running"
    assert ended.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "every location" in (ended.value.details() or "")
    # A stream naming the location it may still watch goes on.
    named = open_stream(stub, "revoked")
    assert next(named).HasField("bookmark")
    named.cancel()


def test_an_export_under_way_ends_when_its_token_is_revoked(
    watching_streams: Secured, database_url: str
) -> None:
    """An export is a stream: a token revoked while it runs ends it, as a watch's."""
    loc = new_id("loc-export")
    Database(database_url).fetch(
        "INSERT INTO dnd_address_suppressions (location_id, channel, address, reason, source, "
        "contact_id, since) SELECT $1, 'SMS', '+1' || lpad(i::text, 10, '0'), "
        "'SMS_OPT_OUT_KEYWORD', 'CONTACT', 'c-' || i, now() FROM generate_series(1, 8000) AS i",
        loc,
    )
    metadata = (("authorization", f"Bearer {TOKENS['revoked']}"),)
    request = pb.ExportSuppressionsRequest(location_id=loc, suppressions_only=True)
    export = watching_streams.stub.ExportSuppressions(request, metadata=metadata, timeout=30)
    first = next(export)
    assert len(first.suppressions) > 0
    mark = watching_streams.mark()
    watching_streams.path.write_text(
        tokens_json(entry("keeper", scopes=["read", "watch"])), encoding="utf-8"
    )
    watching_streams.server.signal(signal.SIGHUP)
    wait_log(watching_streams.server, "tokens_reloaded", mark)
    rows = len(first.suppressions)
    with pytest.raises(grpc.RpcError) as ended:
        for message in export:
            rows += len(message.suppressions)
    assert ended.value.code() == REFUSED
    assert rows < 8000
