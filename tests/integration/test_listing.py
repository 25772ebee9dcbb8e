"""ListBlocks, ListSuppressions and ExportSuppressions over real gRPC on real PostgreSQL: the
filters, pages whose tokens are opaque, bound to their request and refused when edited, pages
stable under concurrent writes (no row twice, every row present throughout exactly once), and
the export's stream with its resume tokens.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from tests import factories
from tests.support import bad_fields

TIMEOUT = 30
SMS, EMAIL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL
STOP = pb.REASON_SMS_OPT_OUT_KEYWORD


def seed(stub: Any, loc: str) -> None:
    """Nine contacts: seven with an SMS block (three of them a STOP from their number, which
    suppresses it), two with an EMAIL unsubscribe of their address."""
    items = [factories.enable("", f"c{i}") for i in range(4)]
    items += [
        factories.enable(
            "", f"c{i}", reason=STOP, source=pb.SOURCE_CONTACT, address=f"+1415555010{i}"
        )
        for i in range(4, 7)
    ]
    items += [
        factories.enable(
            "",
            f"e{i}",
            channel=EMAIL,
            reason=pb.REASON_EMAIL_UNSUBSCRIBE_LINK,
            address=f"E{i}@Example.com",
        )
        for i in range(2)
    ]
    answer = stub.BulkSetDnd(pb.BulkSetDndRequest(location_id=loc, items=items), timeout=TIMEOUT)
    assert answer.changed == len(items)


def all_blocks(stub: Any, loc: str, size: int, **flt: Any) -> list[tuple[str, int]]:
    found, token = [], ""
    while True:
        page = stub.ListBlocks(
            pb.ListBlocksRequest(
                location_id=loc,
                filter=pb.SuppressionFilter(**flt),
                page_size=size,
                page_token=token,
            ),
            timeout=TIMEOUT,
        )
        assert len(page.blocks) <= size
        found += [(b.contact_id, b.block.scope.channel) for b in page.blocks]
        token = page.next_page_token
        if not token:
            return found


def test_blocks_are_listed_in_pages_and_filtered(stub: Any, loc: str) -> None:
    seed(stub, loc)
    everything = all_blocks(stub, loc, 2)
    assert everything == [(f"c{i}", SMS) for i in range(7)] + [("e0", EMAIL), ("e1", EMAIL)]
    assert all_blocks(stub, loc, 1000) == everything
    assert all_blocks(stub, loc, 3, channel=EMAIL) == [("e0", EMAIL), ("e1", EMAIL)]
    assert all_blocks(stub, loc, 3, reason=STOP) == [("c4", SMS), ("c5", SMS), ("c6", SMS)]
    assert all_blocks(stub, loc, 3, source=pb.SOURCE_CONTACT) == all_blocks(
        stub, loc, 3, reason=STOP
    )
    assert all_blocks(stub, loc, 3, contact_id="c2") == [("c2", SMS)]
    assert all_blocks(stub, loc, 3, channel=SMS, address="(415) 555-0105") == [("c5", SMS)]
    assert all_blocks(stub, loc, 3, direction=pb.DIRECTION_INBOUND) == []
    later = Timestamp()
    later.FromDatetime(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    assert all_blocks(stub, loc, 3, since=later) == []
    assert all_blocks(stub, loc, 3, until=later) == everything
    # Another location sees none of them.
    assert all_blocks(stub, loc + "-other", 3) == []
    # One contact's blocks, a page each.
    more = [factories.enable("", "c2", channel=EMAIL), factories.enable("", "c2", channel=None)]
    stub.BulkSetDnd(pb.BulkSetDndRequest(location_id=loc, items=more), timeout=TIMEOUT)
    assert all_blocks(stub, loc, 1, contact_id="c2") == [("c2", 0), ("c2", EMAIL), ("c2", SMS)]
    assert all_blocks(stub, loc, 1, contact_id="c2", channel=EMAIL) == [("c2", EMAIL)]


def test_suppressions_are_listed_in_pages_and_filtered(stub: Any, loc: str) -> None:
    seed(stub, loc)
    pages, token = [], ""
    while True:
        page = stub.ListSuppressions(
            pb.ListSuppressionsRequest(location_id=loc, page_size=2, page_token=token),
            timeout=TIMEOUT,
        )
        pages.append([(s.channel, s.address, s.contact_id) for s in page.suppressions])
        token = page.next_page_token
        if not token:
            break
    assert [len(p) for p in pages] == [2, 2, 1]
    # In (channel, address, reason) order.
    assert [row for p in pages for row in p] == [
        (EMAIL, "e0@example.com", "e0"),
        (EMAIL, "e1@example.com", "e1"),
        (SMS, "+14155550104", "c4"),
        (SMS, "+14155550105", "c5"),
        (SMS, "+14155550106", "c6"),
    ]
    email = stub.ListSuppressions(
        pb.ListSuppressionsRequest(
            location_id=loc, filter=pb.SuppressionFilter(channel=EMAIL, address="E1@example.COM")
        ),
        timeout=TIMEOUT,
    )
    assert [s.contact_id for s in email.suppressions] == ["e1"]
    # One address's suppressions, a page each (an email unsubscribe and a bounce).
    bounce = factories.enable(
        "",
        "e9",
        channel=EMAIL,
        reason=pb.REASON_EMAIL_HARD_BOUNCE,
        source=pb.SOURCE_SYSTEM,
        address="e1@example.com",
    )
    stub.BulkSetDnd(pb.BulkSetDndRequest(location_id=loc, items=[bounce]), timeout=TIMEOUT)
    found, token = [], ""
    while True:
        page = stub.ListSuppressions(
            pb.ListSuppressionsRequest(
                location_id=loc,
                filter=pb.SuppressionFilter(channel=EMAIL, address="e1@example.com"),
                page_size=1,
                page_token=token,
            ),
            timeout=TIMEOUT,
        )
        found += [(s.reason, s.contact_id) for s in page.suppressions]
        token = page.next_page_token
        if not token:
            break
    assert found == [(pb.REASON_EMAIL_HARD_BOUNCE, "e9"), (pb.REASON_EMAIL_UNSUBSCRIBE_LINK, "e1")]


def test_page_size_zero_means_the_default(stub: Any, loc: str) -> None:
    items = [factories.enable("", f"d{i:03}") for i in range(101)]
    stub.BulkSetDnd(pb.BulkSetDndRequest(location_id=loc, items=items), timeout=TIMEOUT)
    page = stub.ListBlocks(pb.ListBlocksRequest(location_id=loc), timeout=TIMEOUT)
    assert len(page.blocks) == 100 and page.next_page_token
    rest = stub.ListBlocks(
        pb.ListBlocksRequest(location_id=loc, page_token=page.next_page_token), timeout=TIMEOUT
    )
    assert [b.contact_id for b in rest.blocks] == ["d100"] and not rest.next_page_token


def test_pages_stay_stable_under_concurrent_writes(stub: Any, loc: str) -> None:
    """Between pages, blocks are added before and after the listing's position and one not
    yet listed is cleared: no block is listed twice, and every block present throughout the
    listing is listed once."""
    seed(stub, loc)
    first = stub.ListBlocks(pb.ListBlocksRequest(location_id=loc, page_size=3), timeout=TIMEOUT)
    seen = [b.contact_id for b in first.blocks]
    assert seen == ["c0", "c1", "c2"]
    writes = [
        factories.enable("", "a-before"),
        factories.enable("", "c1", channel=EMAIL),  # a new row of a contact already listed
        factories.enable("", "z-after"),
        factories.disable("", "c3"),
    ]
    answer = stub.BulkSetDnd(pb.BulkSetDndRequest(location_id=loc, items=writes), timeout=TIMEOUT)
    assert answer.changed == 4
    token = first.next_page_token
    while token:
        page = stub.ListBlocks(
            pb.ListBlocksRequest(location_id=loc, page_size=3, page_token=token), timeout=TIMEOUT
        )
        seen += [b.contact_id for b in page.blocks]
        token = page.next_page_token
    present_throughout = ["c0", "c1", "c2", "c4", "c5", "c6", "e0", "e1"]
    assert all(seen.count(c) == 1 for c in present_throughout)
    assert "c3" not in seen
    assert seen.count("z-after") == 1 and "a-before" not in seen
    # c1's new EMAIL block sorts before the position reached: not listed (nor twice).
    assert len(seen) == len(set(seen))


def _refused(call: Any, request: Any) -> list[str]:
    with pytest.raises(grpc.RpcError) as refused:
        call(request, timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return bad_fields(refused.value)


def test_tokens_are_opaque_and_bound_to_their_request(stub: Any, loc: str) -> None:
    seed(stub, loc)
    page = stub.ListBlocks(pb.ListBlocksRequest(location_id=loc, page_size=2), timeout=TIMEOUT)
    token = page.next_page_token
    assert token
    edited = token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:]
    for bad in (edited, token[:-1], "x" + token, "garbage", "", token + "=="):
        if not bad or bad == token:
            continue
        request = pb.ListBlocksRequest(location_id=loc, page_size=2, page_token=bad)
        assert _refused(stub.ListBlocks, request) == ["page_token"]
    # The same token with another filter, another location, another listing.
    for request in (
        pb.ListBlocksRequest(
            location_id=loc, page_size=2, page_token=token, filter=pb.SuppressionFilter(channel=SMS)
        ),
        pb.ListBlocksRequest(location_id=loc + "-other", page_size=2, page_token=token),
    ):
        assert _refused(stub.ListBlocks, request) == ["page_token"]
    request_s = pb.ListSuppressionsRequest(location_id=loc, page_token=token)
    assert _refused(stub.ListSuppressions, request_s) == ["page_token"]
    # A page size of another value is the same request: the token stays valid.
    again = stub.ListBlocks(
        pb.ListBlocksRequest(location_id=loc, page_size=5, page_token=token), timeout=TIMEOUT
    )
    assert [b.contact_id for b in again.blocks] == ["c2", "c3", "c4", "c5", "c6"]


@pytest.mark.parametrize("size", [-1, 1001, 2**31 - 1])
def test_page_size_out_of_range_is_refused(stub: Any, loc: str, size: int) -> None:
    assert _refused(stub.ListBlocks, pb.ListBlocksRequest(location_id=loc, page_size=size)) == [
        "page_size"
    ]
    request = pb.ListSuppressionsRequest(location_id=loc, page_size=size)
    assert _refused(stub.ListSuppressions, request) == ["page_size"]


def test_bad_filters_are_refused(stub: Any, loc: str) -> None:
    later, earlier = Timestamp(seconds=2_000_000_000), Timestamp(seconds=1_000_000_000)
    request = pb.ListBlocksRequest(
        location_id="",
        page_size=0,
        filter=pb.SuppressionFilter(
            channel=99, reason=999, address="not-a-phone", since=later, until=earlier
        ),
    )
    assert sorted(_refused(stub.ListBlocks, request)) == [
        "filter.channel",
        "filter.reason",
        "filter.until",
        "location_id",
    ]
    request = pb.ListBlocksRequest(location_id=loc, filter=pb.SuppressionFilter(address="+1415"))
    assert _refused(stub.ListBlocks, request) == ["filter.address"]


def test_export_streams_everything_and_resumes(stub: Any, loc: str) -> None:
    seed(stub, loc)
    messages = list(
        stub.ExportSuppressions(pb.ExportSuppressionsRequest(location_id=loc), timeout=TIMEOUT)
    )
    blocks = [b.contact_id for m in messages for b in m.blocks]
    suppressions = [s.address for m in messages for s in m.suppressions]
    assert blocks == [c for c, _ in all_blocks(stub, loc, 1000)]
    assert len(suppressions) == 5
    assert all(m.resume_token for m in messages)
    # Restarted after the first message: exactly the rest.
    rest = list(
        stub.ExportSuppressions(
            pb.ExportSuppressionsRequest(location_id=loc, resume_token=messages[0].resume_token),
            timeout=TIMEOUT,
        )
    )
    assert [list(m.suppressions) for m in rest] == [list(m.suppressions) for m in messages[1:]]
    assert not any(m.blocks for m in rest)
    only = list(
        stub.ExportSuppressions(
            pb.ExportSuppressionsRequest(
                location_id=loc,
                suppressions_only=True,
                filter=pb.SuppressionFilter(channel=EMAIL),
            ),
            timeout=TIMEOUT,
        )
    )
    assert [s.address for m in only for s in m.suppressions] == [
        "e0@example.com",
        "e1@example.com",
    ]
    assert not any(m.blocks for m in only)
    # A resume token is bound to its request too.
    with pytest.raises(grpc.RpcError) as refused:
        list(
            stub.ExportSuppressions(
                pb.ExportSuppressionsRequest(
                    location_id=loc,
                    suppressions_only=True,
                    resume_token=messages[0].resume_token,
                ),
                timeout=TIMEOUT,
            )
        )
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(refused.value) == ["resume_token"]
