"""When tracing is on (``DND_TRACING``, else the standard OTEL_* variables), the exporters and
protocols the server refuses, that with tracing off nothing of OpenTelemetry is even imported
(server and client), and that statements reach the database (and name their spans) by their
SQL, not by the comments above them in queries.sql."""

from __future__ import annotations

import subprocess
import sys

import pytest
from dnd_server.config import Config, ConfigError
from dnd_server.storage.sql import QUERIES, load_queries

ENDPOINT = "http://127.0.0.1:4317"


@pytest.mark.parametrize(
    ("env", "on"),
    [
        ({}, False),
        ({"OTEL_TRACES_EXPORTER": "console"}, True),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, True),
        ({"OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": ENDPOINT}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": " "}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT, "DND_TRACING": "false"}, False),
        ({"DND_TRACING": "true"}, True),
        ({"DND_TRACING": "true", "OTEL_SDK_DISABLED": "true"}, True),
        # Another protocol for OTLP matters only when OTLP exports.
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, True),
        ({"DND_TRACING": "true", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, True),
        # Off, nothing of OTEL_* is looked at.
        ({"OTEL_TRACES_EXPORTER": "zipkin", "DND_TRACING": "false"}, False),
    ],
)
def test_when_tracing_is_on(env: dict[str, str], on: bool) -> None:
    assert Config.from_env(env).tracing is on
    assert Config().tracing is False


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DND_TRACING": "sometimes"}, "DND_TRACING must be true or false"),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "'zipkin'"),
        ({"DND_TRACING": "true", "OTEL_TRACES_EXPORTER": "otlp,jaeger"}, "'jaeger'"),
        (
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": ENDPOINT,
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            },
            "OTEL_EXPORTER_OTLP_PROTOCOL must be grpc",
        ),
        (
            # The traces' own setting wins over the general one.
            {
                "DND_TRACING": "true",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
            },
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL must be grpc",
        ),
    ],
)
def test_what_tracing_cannot_use_stops_the_start(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        Config.from_env(env)


def test_the_general_protocol_yields_to_the_traces_one() -> None:
    env = {
        "DND_TRACING": "true",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
    }
    assert Config.from_env(env).tracing


def test_tracing_off_imports_nothing_of_opentelemetry() -> None:
    """The server's whole start-up path and the clients, with tracing off: no interceptor is
    made and no OpenTelemetry module loaded."""
    script = "\n".join(
        [
            "import sys",
            "import dnd_server.cli, dnd_server.supervisor, dnd_client.cli",
            "from dnd_server.app import App, open_tracing",
            "from dnd_server.config import Config",
            "from dnd_client._tracing import continue_trace",
            "assert open_tracing(Config()) is None",
            "assert App(Config(), 'postgresql://unused').tracing is None",
            "assert not continue_trace({})",
            "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))",
            "assert not loaded, loaded",
        ]
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_statements_start_with_their_sql() -> None:
    loaded = load_queries(
        "-- one --\n-- what it is for\n  -- and why\n\nSELECT 1 -- kept\nFROM t\n"
        "-- two --\nUPDATE t SET a = 1\n"
    )
    assert loaded == {"one": "SELECT 1 -- kept\nFROM t", "two": "UPDATE t SET a = 1"}
    openings = {name: q.split()[0].lstrip("(").upper() for name, q in QUERIES.items()}
    assert set(openings.values()) <= {"SELECT", "INSERT", "UPDATE", "DELETE", "WITH"}, openings
