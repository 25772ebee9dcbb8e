"""The clients' export across a server restart: the iterator restarts after the last message
it received, so every row comes exactly once, in order. Each test body runs on both clients."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from dnd_client import AsyncDndClient, DndClient

from tests.clients import KINDS
from tests.e2e.test_client_restarts import SamePortServer
from tests.support import Database, ServerProcess, new_id

pytestmark = pytest.mark.fault

ROWS = 60_000


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


class QuickStop(SamePortServer):
    """A same-port server that gives in-flight calls 0.5 s at shutdown: the export open at
    the stop is cut, not finished."""

    def start(self) -> None:
        assert not self.running
        env = {"DND_GRPC_ADDR": self.addr, "DND_SHUTDOWN_GRACE_SECONDS": "0.5"}
        self.process = ServerProcess(self.url, env).start()


@pytest.fixture(scope="module")
def same_port(fresh_database: Any) -> Iterator[QuickStop]:
    server = QuickStop(fresh_database())
    server.start()
    yield server
    if server.running:
        server.stop()


def load(url: str, loc: str) -> None:
    Database(url).execute(
        """
        INSERT INTO dnd_address_suppressions
            (location_id, channel, address, reason, source, contact_id, since)
        SELECT $1, 'SMS', '+1' || lpad(i::text, 10, '0'), 'SMS_OPT_OUT_KEYWORD', 'CONTACT',
               'c' || i, now()
        FROM generate_series(1, $2) AS i
        """,
        loc,
        ROWS,
    )


async def test_export_restarts_after_its_last_message(kind: str, same_port: Any) -> None:
    loc = new_id("loc")
    load(same_port.url, loc)
    seen: list[str] = []
    first = threading.Event()

    def keep(message: Any) -> None:
        seen.extend(s.address for s in message.suppressions)
        first.set()

    async def restart_after_first() -> None:
        await asyncio.to_thread(first.wait, 30)
        await asyncio.to_thread(same_port.stop)
        await asyncio.to_thread(same_port.start)

    restarting = asyncio.create_task(restart_after_first())
    if kind == "async":
        async with AsyncDndClient(same_port.addr) as dnd:
            async for message in dnd.export_suppressions(loc, suppressions_only=True):
                keep(message)
                if len(seen) == 1000:
                    await restarting  # the rest comes from the restarted server

    else:

        def consume() -> None:
            with DndClient(same_port.addr) as dnd:
                for message in dnd.export_suppressions(loc, suppressions_only=True):
                    keep(message)
                    if len(seen) == 1000:
                        asyncio.run_coroutine_threadsafe(asyncio.sleep(0), loop).result()
                        while not restarting.done():
                            threading.Event().wait(0.05)

        loop = asyncio.get_running_loop()
        await asyncio.to_thread(consume)
    await restarting
    assert seen == [f"+1{i:010d}" for i in range(1, ROWS + 1)]
    # The restarted server served the rest: the client restarted after what it had.
    logs = same_port.process.sync_logs()
    ended = [e for e in logs if e.get("event") == "export_ended"]
    assert ended and ended[-1]["code"] == "OK"
    assert 0 < ended[-1]["events"] < ROWS - 1000
