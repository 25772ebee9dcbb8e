"""The embedded PostgreSQL (no DND_DATABASE_URL) is supervised: killed with SIGKILL, it is
started again by the server (or, with DND_WORKERS, by the supervisor that started it) on the
same data directory, and the service is SERVING again with its data intact, no operator
involved. Real server processes, the real embedded PostgreSQL, real gRPC."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import time
from pathlib import Path

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests.factories import enable
from tests.support import ServerProcess, new_id, postmaster_pid, process_alive, wait_until

pytestmark = pytest.mark.fault

T = 10.0
# Bound on noticing the death and starting PostgreSQL again (crash recovery included).
RECOVERY_SECONDS = 30.0


def status(stub: dnd_pb2_grpc.DndServiceStub, loc: str, contact: str) -> pb.GetStatusResponse:
    request = pb.GetStatusRequest(location_id=loc, contact_id=contact, fully_consistent=True)
    return stub.GetStatus(request, timeout=T)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.mark.parametrize("workers", [1, 2], ids=["server", "supervisor"])
def test_killed_embedded_postgres_is_restarted(tmp_path: Path, workers: int) -> None:
    data_dir = tmp_path / "data"
    server = ServerProcess(
        "",  # no DND_DATABASE_URL: the embedded PostgreSQL under DND_DATA_DIR
        {
            "DND_DATA_DIR": str(data_dir),
            "DND_DB_TIMEOUT_SECONDS": "1",
            "DND_WORKERS": str(workers),
            "DND_GRPC_ADDR": f"127.0.0.1:{free_port()}",
        },
    )
    loc = new_id("loc")
    try:
        server.start(timeout=90)
        with grpc.insecure_channel(server.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            before = [f"before-{i}" for i in range(5)]
            for contact in before:
                assert stub.SetDnd(enable(loc, contact), timeout=T).changed

            killed = postmaster_pid(str(data_dir))
            os.kill(killed, signal.SIGKILL)
            killed_at = time.monotonic()

            # Noticed (health NOT_SERVING), then restarted and SERVING again by itself.
            def noticed() -> bool:
                return any(
                    e.get("event") == "health_changed" and e.get("serving") is False
                    for e in server.collect_logs()
                )

            wait_until(noticed, RECOVERY_SECONDS, "health never turned NOT_SERVING")

            # With several workers a health check may reach one that has not yet noticed the
            # loss: wait for the new postmaster first, then for SERVING.
            def restarted_postmaster() -> bool:
                try:
                    pid = postmaster_pid(str(data_dir))
                except (OSError, ValueError):
                    return False
                return pid != killed and process_alive(pid)

            wait_until(restarted_postmaster, RECOVERY_SECONDS, "PostgreSQL was not restarted")
            server.wait_health("SERVING", timeout=RECOVERY_SECONDS)
            assert time.monotonic() - killed_at < RECOVERY_SECONDS
            restarted = postmaster_pid(str(data_dir))
            assert restarted != killed and process_alive(restarted)
            events = [e.get("event") for e in server.collect_logs()]
            assert "embedded_postgres_down" in events and "embedded_postgres_restarted" in events

            # Data intact; writes work again (a call may still meet a stale pooled connection
            # once: UNAVAILABLE is retryable, so retry it).
            for contact in before:
                assert status(stub, loc, contact).status.version == 1
            deadline = time.monotonic() + T
            while True:
                try:
                    assert stub.SetDnd(enable(loc, "after"), timeout=T).changed
                    break
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            assert status(stub, loc, "after").status.version == 1
    finally:
        server.stop()
        # The server's exit stops the PostgreSQL it restarted: nothing is left running.
        try:
            pid = postmaster_pid(str(data_dir))
        except OSError:
            pid = None
        if pid is not None:
            wait_until(lambda: not process_alive(pid), 20, "the restarted PostgreSQL outlived")
        shutil.rmtree(data_dir, ignore_errors=True)
