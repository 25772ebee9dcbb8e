"""WatchChanges messages encoded once for every stream: the bytes ``ChangeMessages`` joins are
exactly the messages protobuf would build, for one event and for batches whose lengths need
multi-byte varints, and the stream's serializer passes them through unchanged."""

from __future__ import annotations

import datetime as dt

import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_server import cursor
from dnd_server.cursor import CursorCodec, encode_cursor, new_key
from dnd_server.domain.model import ChangeKind, Channel, Direction, Reason, Source
from dnd_server.records import ChangeRow
from dnd_server.rpc.convert import ChangeMessages, change_to_pb
from dnd_server.rpc.decoding import _encoder
from dnd_server.watch import Event

LANES = 4
T0 = dt.datetime(2026, 12, 2, 9, 30, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def codec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cursor, "_codec", CursorCodec(new_key(), LANES))


def event(n: int, address: str = "") -> Event:
    lane = n % LANES
    position = tuple(n + k for k in range(LANES))
    change = ChangeRow(
        seq=position[lane],
        location_id="loc",
        contact_id=f"c{n}",
        direction=Direction.OUTBOUND,
        scope=Channel.SMS,
        enabled=n % 2 == 0,
        reason=Reason.MANUAL,
        source=Source.USER,
        actor_id=f"actor-{n}",
        time=T0 + dt.timedelta(seconds=n),
        outbound="PARTIAL",
        inbound="OFF",
        blocked_channels=(Channel.SMS,),
        version=n,
        address=address,
        kind=ChangeKind.BLOCK,
        lane=lane,
        heads=position,
    )
    return Event(change, position)


def built(events: list[Event]) -> pb.WatchChangesResponse:
    """The message as protobuf builds it."""
    found = [change_to_pb(e.change, encode_cursor(e.position)) for e in events]
    if len(found) == 1:
        return pb.WatchChangesResponse(event=found[0])
    return pb.WatchChangesResponse(events=pb.ChangeEvents(events=found))


@pytest.mark.parametrize("count", [1, 2, 7, 200])
def test_joined_bytes_are_the_message_protobuf_builds(count: int) -> None:
    # Long addresses: events over 127 bytes, batches over 16 KiB (three-byte lengths).
    events = [event(n, address="+1415555" + "0" * (n % 90)) for n in range(1, count + 1)]
    encoded = ChangeMessages().message(events)
    assert isinstance(encoded, bytes)
    assert pb.WatchChangesResponse.FromString(encoded) == built(events)
    assert encoded == built(events).SerializeToString()
    if count == 200:
        assert len(encoded) > 16_384


def test_an_encoding_is_shared_and_an_evicted_one_comes_back_the_same() -> None:
    messages = ChangeMessages(keep=2)
    events = [event(n) for n in range(1, 6)]
    batch = messages.message(events)
    assert messages.message(events) is batch  # built once for every stream
    first = messages.message(events[:1])
    for n in range(10, 20):  # push every kept event out
        messages.message([event(n)])
    assert messages.message(events[:1]) == first
    assert pb.WatchChangesResponse.FromString(first) == built(events[:1])


def test_the_stream_serializer_sends_bytes_as_they_are_and_encodes_messages() -> None:
    encode = _encoder(pb.WatchChangesResponse)
    bookmark = pb.WatchChangesResponse(bookmark=pb.Bookmark(cursor="ZG5kMTow"))
    assert encode(bookmark) == bookmark.SerializeToString()
    encoded = ChangeMessages().message([event(3)])
    assert encode(encoded) is encoded
