"""Reads that share a statement while the database is busy (``storage/coalesce.py``), with a
fetch of its own that the test holds and releases: under the limit a read goes at once; at
the limit the reads of a location wait and then share one statement, never one already sent;
a failed statement fails each of its reads; a statement waiting past its deadline fails."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

import pytest
from dnd_server.domain.errors import Unavailable
from dnd_server.storage.coalesce import ReadCoalescer


class HeldFetch:
    """A fetch whose statements (location, ids, timeout) each wait until released (all at
    once with ``release``, or one by one with ``gates``); each answers every id asked as
    ``location/id``."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, list[str], float | None]] = []
        self.gates: list[asyncio.Event] = []
        self.release = asyncio.Event()
        self.fail: Exception | None = None

    async def __call__(
        self, location_id: str, contact_ids: Sequence[str], timeout: float | None
    ) -> Mapping[str, str]:
        self.sent.append((location_id, list(contact_ids), timeout))
        gate = asyncio.Event()
        self.gates.append(gate)
        release = asyncio.ensure_future(self.release.wait())
        held = asyncio.ensure_future(gate.wait())
        await asyncio.wait({release, held}, return_when=asyncio.FIRST_COMPLETED)
        release.cancel()
        held.cancel()
        if self.fail is not None:
            raise self.fail
        return {c: f"{location_id}/{c}" for c in contact_ids}


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_reads_under_the_limit_go_at_once() -> None:
    fetch = HeldFetch()
    reads = ReadCoalescer(fetch, in_flight=2, timeout=5)
    a = asyncio.create_task(reads.read("L", ["a"]))
    b = asyncio.create_task(reads.read("L", ["b", "c"]))
    await settle()
    assert [(loc, ids) for loc, ids, _ in fetch.sent] == [("L", ["a"]), ("L", ["b", "c"])]
    assert all(timeout is None for _, _, timeout in fetch.sent)  # the store's own deadline
    fetch.release.set()
    assert await a == {"a": "L/a"}
    assert await b == {"b": "L/b", "c": "L/c"}


async def test_reads_beyond_the_limit_share_one_statement_sent_after_them() -> None:
    fetch = HeldFetch()
    reads = ReadCoalescer(fetch, in_flight=1, timeout=5)
    first = asyncio.create_task(reads.read("L", ["a"]))
    await settle()
    waiting = [
        asyncio.create_task(reads.read("L", ["b"])),
        asyncio.create_task(reads.read("L", ["c", "b"])),
        asyncio.create_task(reads.read("M", ["b"])),
    ]
    await settle()
    assert len(fetch.sent) == 1, "the reads beyond the limit wait"
    fetch.release.set()
    assert await first == {"a": "L/a"}
    found = await asyncio.gather(*waiting)
    # One statement per location, each id once, in the order asked; M's after L's.
    assert [(loc, ids) for loc, ids, _ in fetch.sent] == [
        ("L", ["a"]),
        ("L", ["b", "c"]),
        ("M", ["b"]),
    ]
    assert found[0]["b"] == "L/b" and found[1]["c"] == "L/c" and found[2]["b"] == "M/b"
    # Each waited statement carries what is left of its first read's deadline.
    assert all(t is not None and 0 < t <= 5 for _, _, t in fetch.sent[1:])


async def test_a_read_never_joins_a_statement_already_sent() -> None:
    fetch = HeldFetch()
    reads = ReadCoalescer(fetch, in_flight=1, timeout=5)
    first = asyncio.create_task(reads.read("L", ["a"]))
    await settle()
    second = asyncio.create_task(reads.read("L", ["b"]))
    await settle()
    fetch.gates[0].set()  # the first answers: the waiting statement of b is sent, and held
    assert await first == {"a": "L/a"}
    await settle()
    assert [ids for _, ids, _ in fetch.sent] == [["a"], ["b"]]
    late = asyncio.create_task(reads.read("L", ["c"]))
    await settle()
    assert [ids for _, ids, _ in fetch.sent] == [["a"], ["b"]], "c waits for a statement of its own"
    fetch.gates[1].set()
    assert await second == {"b": "L/b"}
    await settle()
    fetch.gates[2].set()
    assert await late == {"c": "L/c"}
    assert [ids for _, ids, _ in fetch.sent] == [["a"], ["b"], ["c"]]


async def test_a_failed_statement_fails_each_of_its_reads_and_a_cancelled_read_alone() -> None:
    fetch = HeldFetch()
    reads = ReadCoalescer(fetch, in_flight=1, timeout=5)
    first = asyncio.create_task(reads.read("L", ["a"]))
    await settle()
    gone = asyncio.create_task(reads.read("L", ["b"]))
    kept = asyncio.create_task(reads.read("L", ["c"]))
    await settle()
    gone.cancel()
    fetch.fail = Unavailable("database unavailable: OSError")
    fetch.release.set()
    for task in (first, kept):
        with pytest.raises(Unavailable):
            await task
    with pytest.raises(asyncio.CancelledError):
        await gone
    # The reader that stayed was still asked for: the shared statement was sent.
    assert [ids for _, ids, _ in fetch.sent] == [["a"], ["b", "c"]]


async def test_a_statement_waiting_past_its_deadline_fails_unavailable() -> None:
    fetch = HeldFetch()
    # No time at all: a statement that has to wait is past its deadline when a slot frees.
    reads = ReadCoalescer(fetch, in_flight=1, timeout=0)
    first = asyncio.create_task(reads.read("L", ["a"]))
    await settle()
    waiting = asyncio.create_task(reads.read("L", ["b"]))
    await settle()
    fetch.release.set()
    assert await first == {"a": "L/a"}
    with pytest.raises(Unavailable):
        await waiting
    assert [ids for _, ids, _ in fetch.sent] == [["a"]], "a statement past its deadline is not sent"
