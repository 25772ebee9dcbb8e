"""Ids are what they look like, over real gRPC and PostgreSQL: a location or contact id with
leading or trailing whitespace, a bidi control, a zero-width or other format character, or a
line separator is refused INVALID_ARGUMENT (naming the field and the character) and changes
nothing, wherever an id is taken: request ids, WatchChanges location_ids and BatchCheckSend
targets. Visible text (inner spaces, accents, CJK, emoji) stays a valid id.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests.factories import enable
from tests.support import Database, ServerProcess, Watcher, bad_fields, error_details, new_id

T = 10.0

# Ids that look like another id, by a readable test id. The tuple's second item is the
# character the refusal must name ("" for whitespace at an end).
LOOKALIKES: dict[str, tuple[str, str]] = {
    "leading-space": (" {id}", ""),
    "trailing-space": ("{id} ", ""),
    "trailing-no-break-space": ("{id}\u00a0", ""),
    "leading-ideographic-space": ("\u3000{id}", ""),
    "trailing-em-space": ("{id}\u2003", ""),
    "zero-width-space": ("{id}\u200bx", "U+200B"),
    "zero-width-joiner": ("{id}\u200dx", "U+200D"),
    "zero-width-non-joiner": ("x\u200c{id}", "U+200C"),
    "right-to-left-override": ("\u202e{id}", "U+202E"),
    "left-to-right-isolate": ("{id}\u2066x", "U+2066"),
    "pop-directional-isolate": ("{id}x\u2069", "U+2069"),
    "right-to-left-mark": ("{id}\u200fx", "U+200F"),
    "arabic-letter-mark": ("{id}\u061cx", "U+061C"),
    "byte-order-mark": ("\ufeff{id}", "U+FEFF"),
    "word-joiner": ("{id}\u2060x", "U+2060"),
    "soft-hyphen": ("{id}\u00adx", "U+00AD"),
    "tag-character": ("{id}\U000e0041x", "U+E0041"),
    "line-separator-inside": ("{id}\u2028x", "U+2028"),
    "paragraph-separator-inside": ("{id}\u2029x", "U+2029"),
}


def lookalike(case: str, base: str) -> tuple[str, str]:
    shape, named = LOOKALIKES[case]
    return shape.format(id=base), named


def refused(call: Callable[..., Any], request: Any, field: str, named: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=T)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field in bad_fields(error), (field, bad_fields(error))
    info = error_details(error)["ErrorInfo"]
    assert info.reason == "INVALID_ARGUMENT" and info.domain == "dnd.v1"
    message = error.details() or ""
    expected = named or "must not start or end with whitespace"
    assert expected in message, message


def rows(db: Database, loc: str, contact: str) -> int:
    """Rows anywhere of this location or this contact id."""
    return int(
        db.fetchval(
            "SELECT (SELECT count(*) FROM dnd_contacts WHERE location_id = $1 OR contact_id = $2)"
            " + (SELECT count(*) FROM dnd_changes WHERE location_id = $1 OR contact_id = $2)",
            loc,
            contact,
        )
    )


CASES = list(LOOKALIKES)


@pytest.mark.parametrize("case", CASES)
def test_lookalike_ids_in_writes_are_refused_and_write_nothing(
    stub: Any, db: Database, loc: str, contact: str, case: str
) -> None:
    bad_loc, named = lookalike(case, loc)
    refused(stub.SetDnd, enable(bad_loc, contact), "location_id", named)
    bad_contact, named = lookalike(case, contact)
    refused(stub.SetDnd, enable(loc, bad_contact), "contact_id", named)
    refused(
        stub.ProcessInboundMessage,
        pb.ProcessInboundMessageRequest(
            location_id=loc, contact_id=bad_contact, channel=pb.CHANNEL_SMS, body="STOP"
        ),
        "contact_id",
        named,
    )
    assert rows(db, bad_loc, contact) == 0
    assert rows(db, loc, bad_contact) == 0
    assert db.changes(loc) == 0


@pytest.mark.parametrize("case", CASES)
def test_lookalike_ids_in_reads_are_refused(stub: Any, loc: str, contact: str, case: str) -> None:
    bad_loc, named = lookalike(case, loc)
    bad_contact, _ = lookalike(case, contact)
    refused(
        stub.GetStatus,
        pb.GetStatusRequest(location_id=bad_loc, contact_id=contact),
        "location_id",
        named,
    )
    refused(
        stub.CheckSend,
        pb.CheckSendRequest(location_id=loc, contact_id=bad_contact, channel=pb.CHANNEL_SMS),
        "contact_id",
        named,
    )
    refused(
        stub.ListHistory,
        pb.ListHistoryRequest(location_id=loc, contact_id=bad_contact),
        "contact_id",
        named,
    )
    refused(
        stub.GetKeywordSettings,
        pb.GetKeywordSettingsRequest(location_id=bad_loc),
        "location_id",
        named,
    )


@pytest.mark.parametrize("case", CASES)
def test_lookalike_batch_target_is_refused(stub: Any, loc: str, case: str) -> None:
    bad, named = lookalike(case, "c2")
    request = pb.BatchCheckSendRequest(
        location_id=loc,
        channel=pb.CHANNEL_SMS,
        targets=[pb.CheckTarget(contact_id="c1"), pb.CheckTarget(contact_id=bad)],
    )
    refused(stub.BatchCheckSend, request, "targets[1].contact_id", named)


@pytest.mark.parametrize(
    "case", ["trailing-space", "zero-width-space", "right-to-left-override", "byte-order-mark"]
)
def test_lookalike_watch_location_is_refused(server: ServerProcess, loc: str, case: str) -> None:
    bad, named = lookalike(case, loc)
    request = pb.WatchChangesRequest(location_ids=[loc, bad])
    with Watcher(server.addr, request, timeout=T) as watcher:
        error = watcher.wait_done()
    assert error is not None, "the stream was accepted"
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert bad_fields(error) == ["location_ids[1]"]
    assert (named or "must not start or end with whitespace") in (error.details() or "")


VISIBLE = {
    "inner-space": "{id} 2",
    "accents": "{id}-café-ñ",
    "cjk": "{id}-用户",
    "emoji": "{id}-\U0001f600",
    "hebrew": "{id}-שלום",
}


@pytest.mark.parametrize("shape", list(VISIBLE.values()), ids=list(VISIBLE))
def test_visible_ids_stay_valid(stub: Any, db: Database, shape: str) -> None:
    loc = shape.format(id=new_id("loc"))
    contact = shape.format(id=new_id("contact"))
    answer = stub.SetDnd(enable(loc, contact), timeout=T)
    assert answer.changed
    assert (answer.status.location_id, answer.status.contact_id) == (loc, contact)
    assert db.changes(loc) == 1
    denied = stub.CheckSend(
        pb.CheckSendRequest(location_id=loc, contact_id=contact, channel=pb.CHANNEL_SMS),
        timeout=T,
    )
    assert not denied.allowed
