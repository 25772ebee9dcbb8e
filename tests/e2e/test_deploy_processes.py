"""The deployment's promises kept by real server processes: a server others can reach refuses the
embedded development database, liveness answers while the database is down, readiness follows
the change feed, and the maximum connection age moves clients to new connections.
tests/unit/test_deploy.py checks the Dockerfile and the manifests that rely on these."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support import Database, ServerProcess, new_id

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.mark.parametrize(
    ("command", "extra"),
    [("serve", {}), ("migrate", {}), ("serve", {"DND_WORKERS": "2"})],
    ids=["serve", "migrate", "workers"],
)
def test_embedded_database_is_refused_off_loopback(
    tmp_path: Path, command: str, extra: dict[str, str]
) -> None:
    """A server others can reach never runs on the development database: without
    DND_DATABASE_URL it exits at once (code 2) saying what to set, and starts no PostgreSQL."""
    data_dir = tmp_path / "pgdata"
    env = {key: value for key, value in os.environ.items() if not key.startswith("DND_")}
    env.update(
        DND_GRPC_ADDR=f"0.0.0.0:{free_port()}",
        DND_AUTH="disabled",
        DND_DATA_DIR=str(data_dir),
        **extra,
    )
    result = subprocess.run(
        [sys.executable, "-m", "dnd_server", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "set DND_DATABASE_URL" in result.stderr, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not data_dir.exists(), "an embedded PostgreSQL was started"


def health_of(addr: str, service: str) -> str:
    with grpc.insecure_channel(addr) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=2
            )
        except grpc.RpcError as error:
            return f"error:{error.code().name}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def wait_health(addr: str, service: str, wanted: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    seen = health_of(addr, service)
    while seen != wanted and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = health_of(addr, service)
    assert seen == wanted, f"health of {service!r} stayed {seen}, wanted {wanted}"


def healthcheck(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    """`dnd-server healthcheck` as a probe runs it, beside the server on ``port``."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("DND_")}
    env["DND_GRPC_ADDR"] = f"127.0.0.1:{port}"
    return subprocess.run(
        [sys.executable, "-m", "dnd_server", "healthcheck", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_liveness_serves_while_the_database_is_down() -> None:
    """No database: readiness NOT_SERVING (out of the Service), liveness SERVING (no restart)."""
    from dnd_server.app import LIVENESS_SERVICE, SERVICE_NAME

    unreachable = f"postgresql://dnd@127.0.0.1:{free_port()}/dnd"
    process = ServerProcess(unreachable, {"DND_DB_TIMEOUT_SECONDS": "1"}).start(wait_serving=False)
    try:
        wait_health(process.addr, LIVENESS_SERVICE, "SERVING")
        assert health_of(process.addr, "") == "NOT_SERVING"
        assert health_of(process.addr, SERVICE_NAME) == "NOT_SERVING"
        live = healthcheck(process.port, "--service", LIVENESS_SERVICE)
        assert (live.returncode, live.stdout.strip()) == (0, "SERVING"), live.stderr
        ready = healthcheck(process.port)
        assert (ready.returncode, ready.stdout.strip()) == (1, "NOT_SERVING"), ready.stderr
        unknown = healthcheck(process.port, "--service", "no-such-service")
        assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stderr
        assert any(e.get("event") == "database_unreachable" for e in process.collect_logs())
    finally:
        process.stop()


def test_readiness_follows_the_change_feed(fresh_database: Any) -> None:
    """The database answers but the change feed is behind the log head: readiness turns
    NOT_SERVING past DND_READY_MAX_FEED_DELAY_SECONDS, liveness stays SERVING; once the feed
    reads up to the head again readiness comes back."""
    from dnd_server.app import LIVENESS_SERVICE

    url = fresh_database()
    process = ServerProcess(
        url, {"DND_READY_MAX_FEED_DELAY_SECONDS": "0.5", "DND_METRICS_ADDR": "127.0.0.1:0"}
    ).start()
    try:
        metrics_port = next(
            int(e["port"]) for e in process.logs if e.get("event") == "metrics_listening"
        )
        assert healthcheck(process.port).returncode == 0
        # A lane's head moves past every change the feed can read, as when the feed stops
        # following the log while the database still answers.
        Database(url).fetch("UPDATE dnd_log_lanes SET seq = seq + 3 WHERE lane = 0")
        wait_health(process.addr, "", "NOT_SERVING")
        assert health_of(process.addr, LIVENESS_SERVICE) == "SERVING"
        assert healthcheck(process.port).returncode == 1
        assert healthcheck(process.port, "--service", LIVENESS_SERVICE).returncode == 0
        changed = [e for e in process.collect_logs() if e.get("event") == "health_changed"]
        assert changed[-1]["serving"] is False
        assert "change feed" in changed[-1]["reason"]
        assert scraped(metrics_port, "dnd_feed_delay_seconds") > 0.5
        assert scraped(metrics_port, "dnd_feed_lag_changes") == 3
        # A write takes the next sequence number: the feed reads it and is at the head again.
        with grpc.insecure_channel(process.addr) as channel:
            dnd_pb2_grpc.DndServiceStub(channel).SetDnd(
                pb.SetDndRequest(
                    location_id=in_lane_zero(),
                    contact_id="c1",
                    action=pb.DND_ACTION_ENABLE,
                    direction=pb.DIRECTION_OUTBOUND,
                    scope=pb.Scope(all_channels=True),
                    source=pb.SOURCE_USER,
                ),
                timeout=10,
            )
        wait_health(process.addr, "", "SERVING")
        assert scraped(metrics_port, "dnd_feed_delay_seconds") == 0
    finally:
        process.stop()


def in_lane_zero() -> str:
    """A new location whose changes go to the log's lane 0."""
    from dnd_server.lanes import DEFAULT_LANES, lane_of

    while lane_of(loc := new_id("loc-ready"), DEFAULT_LANES) != 0:
        pass
    return loc


def scraped(port: int, name: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} is not in /metrics")


def test_max_connection_age_moves_clients_to_a_new_connection(fresh_database: Any) -> None:
    """DND_MAX_CONNECTION_AGE_SECONDS: the server sends a GOAWAY; a stream still open past the
    grace ends with UNAVAILABLE (resumable), new calls on the channel go over a new connection."""
    process = ServerProcess(
        fresh_database(),
        {"DND_MAX_CONNECTION_AGE_SECONDS": "1", "DND_MAX_CONNECTION_AGE_GRACE_SECONDS": "1"},
    ).start()
    try:
        with grpc.insecure_channel(process.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            started = time.monotonic()
            stream = stub.WatchChanges(pb.WatchChangesRequest(), timeout=30)
            with pytest.raises(grpc.RpcError) as ended:
                for _message in stream:
                    pass
            lasted = time.monotonic() - started
            assert ended.value.code() == grpc.StatusCode.UNAVAILABLE, ended.value.details()
            assert 1.5 <= lasted < 10, lasted
            request = pb.CheckSendRequest(
                location_id=new_id("loc-age"), contact_id="c1", channel=pb.CHANNEL_SMS
            )
            for _ in range(3):
                assert stub.CheckSend(request, timeout=10).allowed
    finally:
        process.stop()
