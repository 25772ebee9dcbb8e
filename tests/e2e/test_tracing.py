"""Traces exported by a real server process (``OTEL_TRACES_EXPORTER=console``: one JSON line per
span on its stdout, read beside its log lines; no collector): the span tree of one ``SetDnd``
made by the typed client inside a span of this process (the server's call span is its child,
through the ``traceparent`` the client sent, and the database statements are the call span's
children, with the location on the call span); a refused call's code; a caller's hand-written
``traceparent`` continued; ``dndctl`` continuing the trace of ``TRACEPARENT``; health probes and
background statements not traced; the client without OpenTelemetry; a server asked to trace
without it refusing to start; tracing off by default, without any trace output."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2_grpc
from dnd_client import Channel, DndClient
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.clients import enable
from tests.factories import enable as enable_request
from tests.support import REPO, ServerProcess, dnd_server, wait_until

TRACED_ENV = {
    "OTEL_TRACES_EXPORTER": "console",
    # Batches leave within 50 ms, so spans are read soon after each call.
    "OTEL_BSP_SCHEDULE_DELAY": "50",
}
SET_DND = "/dnd.v1.DndService/SetDnd"
GET_STATUS = "/dnd.v1.DndService/GetStatus"
WATCH = "/dnd.v1.DndService/WatchChanges"


@pytest.fixture(scope="module")
def traced(fresh_database: Any) -> Iterator[ServerProcess]:
    env = {k: "" for k in os.environ if k.startswith("OTEL_")} | TRACED_ENV
    server = ServerProcess(fresh_database(), env).start()
    yield server
    server.stop()


@pytest.fixture
def caller() -> tuple[Any, InMemorySpanExporter]:
    """A tracer of this process (spans kept in memory), not installed globally."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("tests.caller"), exporter


def spans(server: ServerProcess) -> list[dict[str, Any]]:
    """The spans the server exported so far (its console exporter's lines)."""
    return [e for e in server.collect_logs() if "context" in e and "kind" in e]


def wait_span(server: ServerProcess, name: str, trace_id: str) -> dict[str, Any]:
    def found() -> dict[str, Any] | None:
        return next(
            (
                s
                for s in spans(server)
                if s["name"] == name and s["context"]["trace_id"] == trace_id
            ),
            None,
        )

    span: dict[str, Any] = wait_until(found, timeout=10, what=f"the {name} span of {trace_id}")
    return span


def hex_ids(span_context: Any) -> tuple[str, str]:
    """A span context's trace and span ids as the console exporter writes them."""
    return f"0x{span_context.trace_id:032x}", f"0x{span_context.span_id:016x}"


def test_the_span_tree_of_one_set_dnd(
    traced: ServerProcess, caller: tuple[Any, InMemorySpanExporter], loc: str, contact: str
) -> None:
    tracer, exported = caller
    with DndClient(traced.addr) as client, tracer.start_as_current_span("caller") as span:
        client.set_dnd(loc, contact, **enable(channel=Channel.SMS))
    trace_id, parent_id = hex_ids(span.get_span_context())
    assert [s.name for s in exported.get_finished_spans()] == ["caller"]

    call = wait_span(traced, SET_DND, trace_id)
    assert call["kind"] == "SpanKind.SERVER"
    assert call["parent_id"] == parent_id, "the call span is not the caller's span's child"
    attributes = call["attributes"]
    assert attributes["rpc.service"] == "dnd.v1.DndService"
    assert attributes["rpc.method"] == "SetDnd"
    assert attributes["rpc.grpc.status_code"] == 0
    assert attributes["dnd.location_id"] == loc
    assert call["status"]["status_code"] == "UNSET"
    assert call["resource"]["attributes"]["service.name"] == "dnd-service"

    in_trace = [s for s in spans(traced) if s["context"]["trace_id"] == trace_id]
    statements = [s for s in in_trace if s is not call]
    assert statements, "no database span under the call"
    for statement in statements:
        assert statement["parent_id"] == call["context"]["span_id"], statement
        assert statement["kind"] == "SpanKind.CLIENT"
        assert statement["attributes"]["db.system"] == "postgresql"
        assert statement["attributes"]["db.statement"]
        # Statements are traced with their SQL, never with their parameters.
        assert contact not in json.dumps(statement)
    # The write itself is among them, all within the call's time.
    assert any("INSERT" in s["attributes"]["db.statement"].upper() for s in statements)
    assert all(
        call["start_time"] <= s["start_time"] <= s["end_time"] <= call["end_time"]
        for s in statements
    )


def test_a_refused_call_has_its_code_and_location(traced: ServerProcess, loc: str) -> None:
    """A hand-written W3C traceparent is continued, and a call answered INVALID_ARGUMENT (by
    the boundary's abort, which the interceptor does not see) carries that code."""
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with grpc.insecure_channel(traced.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.SetDnd(
                enable_request(loc, ""),
                metadata=(("traceparent", f"00-{trace_id}-{parent_id}-01"),),
                timeout=5,
            )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    call = wait_span(traced, SET_DND, f"0x{trace_id}")
    assert call["parent_id"] == f"0x{parent_id}"
    assert call["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.INVALID_ARGUMENT.value[0]
    assert call["attributes"]["dnd.location_id"] == loc
    # The caller's mistake, not the server's fault.
    assert call["status"]["status_code"] == "UNSET"
    # Refused before any statement ran.
    assert not [s for s in spans(traced) if s["parent_id"] == call["context"]["span_id"]]


def test_a_watch_stream_is_one_span_in_the_caller_s_trace(
    traced: ServerProcess, caller: tuple[Any, InMemorySpanExporter], loc: str, contact: str
) -> None:
    """A stream runs through the interceptor as before (its events arrive), and its span,
    ended when the client leaves it, carries the caller's trace and the code it ended with."""
    tracer, _ = caller
    with DndClient(traced.addr) as client, tracer.start_as_current_span("watcher") as span:
        first = client.set_dnd(loc, contact, **enable(channel=Channel.SMS))
        second = client.set_dnd(loc, contact, **enable(channel=Channel.EMAIL))
        stream = client.watch(location_ids=[loc], after_cursor=first.cursor)
        event = next(iter(stream))
        stream.close()
    assert event.cursor == second.cursor
    trace_id, parent_id = hex_ids(span.get_span_context())
    watch = wait_span(traced, "/dnd.v1.DndService/WatchChanges", trace_id)
    assert watch["parent_id"] == parent_id
    assert watch["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.CANCELLED.value[0]


def test_a_stream_left_while_the_server_sends_says_cancelled(
    traced: ServerProcess, caller: tuple[Any, InMemorySpanExporter], loc: str
) -> None:
    """The client leaves after one message of a long catch-up, while the server is sending
    the next ones: the interceptor ends the span before the handler hears of it, and the span
    still says CANCELLED (it did say OK). An export that ends by itself says OK."""
    tracer, _ = caller
    with DndClient(traced.addr) as client:
        first = client.set_dnd(loc, "c0", **enable(channel=Channel.SMS))
        for i in range(1, 400):
            client.set_dnd(loc, f"c{i}", **enable(channel=Channel.SMS))
        codes = []
        for _ in range(3):
            with tracer.start_as_current_span("watcher") as span:
                stream = client.watch(location_ids=[loc], after_cursor=first.cursor)
                next(iter(stream))
                stream.close()
            watch = wait_span(traced, WATCH, hex_ids(span.get_span_context())[0])
            codes.append(watch["attributes"]["rpc.grpc.status_code"])
        assert codes == [grpc.StatusCode.CANCELLED.value[0]] * 3
        with tracer.start_as_current_span("exporter") as span:
            assert list(client.export_suppressions(loc))  # ends by itself
        export = wait_span(
            traced, "/dnd.v1.DndService/ExportSuppressions", hex_ids(span.get_span_context())[0]
        )
        assert export["attributes"]["rpc.grpc.status_code"] == grpc.StatusCode.OK.value[0]


def test_dndctl_continues_the_trace_of_its_environment(
    traced: ServerProcess, loc: str, contact: str
) -> None:
    trace_id, parent_id = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DND_")}
    env["TRACEPARENT"] = f"00-{trace_id}-{parent_id}-01"
    done = subprocess.run(
        [
            str(Path(sys.executable).with_name("dndctl")),
            "--addr",
            traced.addr,
            "status",
            loc,
            contact,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    call = wait_span(traced, GET_STATUS, f"0x{trace_id}")
    assert call["parent_id"] == f"0x{parent_id}"
    assert call["attributes"]["dnd.location_id"] == loc


def test_probes_and_background_work_are_not_traced(
    traced: ServerProcess, caller: tuple[Any, InMemorySpanExporter], loc: str, contact: str
) -> None:
    """Health checks (the fixture waited for SERVING with them) make no span, and database
    statements outside any call (the change feed polling every 0.2 s, health pings) none
    either: every statement span has its call."""
    tracer, _ = caller
    with DndClient(traced.addr) as client, tracer.start_as_current_span("caller") as span:
        client.set_dnd(loc, contact, **enable(channel=Channel.SMS))
    # The change feed has since polled and taken the change: its statements ran meanwhile.
    traced.wait_log({"event": "rpc", "method": "SetDnd", "location_id": loc})
    wait_span(traced, SET_DND, hex_ids(span.get_span_context())[0])
    traced.health()
    seen = spans(traced)
    assert not [s for s in seen if "Health" in s["name"]]
    calls = {s["context"]["span_id"] for s in seen if s["kind"] == "SpanKind.SERVER"}
    statements = [s for s in seen if s["kind"] == "SpanKind.CLIENT"]
    assert statements and all(s["parent_id"] in calls for s in statements)
    assert traced.wait_log({"event": "tracing_enabled", "exporters": "console"})


def without_opentelemetry(tmp_path: Path) -> dict[str, str]:
    """An environment in which ``import opentelemetry`` fails, as where it is not installed."""
    fake = tmp_path / "no-otel" / "opentelemetry"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('opentelemetry is not installed')\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DND_", "OTEL_"))}
    env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), str(REPO)])
    return env


def test_the_client_works_without_opentelemetry(
    traced: ServerProcess, tmp_path: Path, loc: str
) -> None:
    """Calls still go out, carrying no trace context: the server's span of the call is then a
    root span."""
    script = (
        "import sys\n"
        "from dnd_client import DndClient\n"
        f"with DndClient({traced.addr!r}) as client:\n"
        f"    client.get_status({loc!r}, 'c-1')\n"
        "assert 'opentelemetry.propagate' not in sys.modules\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        env=without_opentelemetry(tmp_path),
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr

    def call() -> dict[str, Any] | None:
        return next(
            (
                s
                for s in spans(traced)
                if s["name"] == GET_STATUS and s["attributes"].get("dnd.location_id") == loc
            ),
            None,
        )

    span = wait_until(call, what="the GetStatus span")
    assert span["parent_id"] is None


@pytest.mark.parametrize("workers", [1, 2])
def test_tracing_without_opentelemetry_refuses_to_start(
    tmp_path: Path, fresh_database: Any, workers: int
) -> None:
    """A server, or a supervisor before it starts any worker, asked to trace where
    OpenTelemetry is not installed stops at once, naming the extra to install."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    env = without_opentelemetry(tmp_path) | {
        "DND_DATABASE_URL": fresh_database(),
        "DND_GRPC_ADDR": f"127.0.0.1:{port}",
        "DND_WORKERS": str(workers),
        "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
    }
    done = dnd_server("serve", env=env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "OpenTelemetry is not installed" in done.stderr
    assert "dnd-service[server,tracing]" in done.stderr


def test_tracing_is_off_by_default(
    server: ServerProcess, stub: Any, loc: str, contact: str
) -> None:
    """The session's server (no OTEL_* setting) writes no span and says nothing of tracing."""
    if any(
        os.environ.get(k)
        for k in ("DND_TRACING", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT")
    ):
        pytest.skip("this environment turns tracing on")
    stub.SetDnd(enable_request(loc, contact), timeout=5)
    server.wait_log({"event": "rpc", "method": "SetDnd", "location_id": loc})
    assert not spans(server)
    assert not [e for e in server.collect_logs() if e.get("event") == "tracing_enabled"]
