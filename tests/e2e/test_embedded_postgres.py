"""The embedded PostgreSQL default (no DND_DATABASE_URL): a server process starts it under
DND_DATA_DIR and keeps the data across restarts. Real server processes, the real embedded
PostgreSQL, real gRPC; tests/e2e/test_embedded_supervision.py kills it under a running server."""

from __future__ import annotations

import os
import shutil
import tempfile

import grpc
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests.factories import enable
from tests.support import ServerProcess


def test_embedded_postgres_default_keeps_data_across_restarts() -> None:
    data_dir = os.path.join(tempfile.mkdtemp(prefix="dnd-embedded-"), ".dnd-data")
    env = {"DND_DATABASE_URL": "", "DND_DATA_DIR": data_dir}
    first = ServerProcess("", env).start(timeout=90)
    try:
        events = [e.get("event") for e in first.logs]
        assert "embedded_postgres_selected" in events
        with grpc.insecure_channel(first.addr) as channel:
            dnd_pb2_grpc.DndServiceStub(channel).SetDnd(enable("l", "c", None), timeout=10)
    finally:
        assert first.stop() == 0
    second = ServerProcess("", env).start(timeout=90)
    try:
        with grpc.insecure_channel(second.addr) as channel:
            status = dnd_pb2_grpc.DndServiceStub(channel).GetStatus(
                pb.GetStatusRequest(location_id="l", contact_id="c"), timeout=10
            )
        assert status.status.outbound == pb.DND_STATUS_ON
        assert status.status.version == 1
    finally:
        second.stop()
        shutil.rmtree(os.path.dirname(data_dir), ignore_errors=True)
