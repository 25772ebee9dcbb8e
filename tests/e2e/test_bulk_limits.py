"""BulkSetDnd at its limits, over real gRPC on real PostgreSQL: the largest call (10,000
items, across chunks, several per contact) answered within the response limit, and a server of
a small response limit refusing what it could not answer before writing anything, its details
cut where they would not fit."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests.integration.test_bulk import TIMEOUT, bulk, item
from tests.support import Database, ServerProcess, bad_fields, stub_for

SMS, EMAIL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL


def test_ten_thousand_items_fit_one_call(stub: Any, db: Database, loc: str) -> None:
    """The largest call: 10,000 items across chunks, answered within the response limit;
    the duplicates (same contact twice) apply in order."""
    items = [item(f"m{i % 5000}", channel=SMS if i < 5000 else EMAIL) for i in range(10_000)]
    answer = stub.BulkSetDnd(bulk(loc, items), timeout=120)
    assert answer.changed == 10_000
    assert {r.version for r in answer.results[:5000]} == {1}
    assert {r.version for r in answer.results[5000:]} == {2}
    assert answer.ByteSize() < 200_000
    assert db.changes(loc) == 10_000


# --- the response limit -------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_limit(fresh_database: Any) -> Any:
    """A server whose responses may not exceed 24 KB (DND_MAX_RESPONSE_BYTES)."""
    process = ServerProcess(fresh_database(), {"DND_MAX_RESPONSE_BYTES": "24576"}).start()
    try:
        with grpc.insecure_channel(process.addr) as channel:
            yield stub_for(channel)
    finally:
        process.stop()


def test_answers_fit_the_response_limit(small_limit: Any, loc: str) -> None:
    """More items than the limit can answer are refused before anything is written; within
    it, details stop where they would not fit (every outcome is still answered)."""
    with pytest.raises(grpc.RpcError) as refused:
        small_limit.BulkSetDnd(bulk(loc, [item(f"x{i}") for i in range(2000)]), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == ["items"]
    assert "DND_MAX_RESPONSE_BYTES" in (refused.value.details() or "")
    bad = [item(f"y{i}", scope=pb.Scope(channel=99), note="\x00" * 3) for i in range(400)]
    answer = small_limit.BulkSetDnd(bulk(loc, bad), timeout=TIMEOUT)
    assert answer.invalid == 400 and answer.details_truncated
    assert answer.results[0].violations and not answer.results[-1].violations
    assert answer.ByteSize() <= 24576
    status = small_limit.GetStatus(pb.GetStatusRequest(location_id=loc, contact_id="x0"))
    assert status.status.version == 0


def test_an_export_of_large_rows_goes_in_messages_within_the_limit(
    small_limit: Any, loc: str
) -> None:
    items = [item(f"big{i:02}", note="n" * 1000, evidence="e" * 3000) for i in range(20)]
    assert small_limit.BulkSetDnd(bulk(loc, items), timeout=TIMEOUT).changed == 20
    request = pb.ExportSuppressionsRequest(location_id=loc)
    messages = list(small_limit.ExportSuppressions(request, timeout=TIMEOUT))
    assert len(messages) > 3
    assert all(m.ByteSize() <= 24576 for m in messages)
    contacts = [b.contact_id for m in messages for b in m.blocks]
    assert contacts == [f"big{i:02}" for i in range(20)]
    resumed = pb.ExportSuppressionsRequest(location_id=loc, resume_token=messages[1].resume_token)
    rest = [b.contact_id for m in small_limit.ExportSuppressions(resumed) for b in m.blocks]
    assert rest == [b.contact_id for m in messages[2:] for b in m.blocks]
