"""Concurrent writers on one contact never lose an update; expected_version is honoured."""

from __future__ import annotations

import asyncio
import random

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests.support import (
    ALL_SCOPE,
    DISABLE,
    ENABLE,
    IN,
    OUT,
    Database,
    ServerProcess,
    error_details,
)

SMS_REASONS = [
    pb.REASON_MANUAL,
    pb.REASON_SMS_OPT_OUT_KEYWORD,
    pb.REASON_SMS_CARRIER_PERMANENT,
    pb.REASON_SMS_CARRIER_TEMPORARY,
]
EMAIL_REASONS = [
    pb.REASON_MANUAL,
    pb.REASON_EMAIL_HARD_BOUNCE,
    pb.REASON_EMAIL_GENERIC_FAILURE,
    pb.REASON_EMAIL_SUPPRESS_BOUNCE,
    pb.REASON_EMAIL_SUPPRESS_UNSUBSCRIBE,
    pb.REASON_EMAIL_SUPPRESS_COMPLAINT,
    pb.REASON_EMAIL_SPAM_COMPLAINT,
    pb.REASON_EMAIL_UNSUBSCRIBE_LINK,
]
OTHER_CHANNELS = [pb.CHANNEL_CALL, pb.CHANNEL_WHATSAPP, pb.CHANNEL_FACEBOOK, pb.CHANNEL_GMB]


def every_distinct_block(loc: str, contact: str) -> list[pb.SetDndRequest]:
    """One enable request per distinct (direction, scope, reason) a contact can hold: 18."""
    requests = []

    def add(direction: int, scope: pb.Scope | None, reason: int) -> None:
        requests.append(
            pb.SetDndRequest(
                location_id=loc,
                contact_id=contact,
                action=ENABLE,
                direction=direction,  # type: ignore[arg-type]
                scope=scope,
                reason=reason,  # type: ignore[arg-type]
                source=pb.SOURCE_SYSTEM,
            )
        )

    for reason in SMS_REASONS:
        add(OUT, pb.Scope(channel=pb.CHANNEL_SMS), reason)
    for reason in EMAIL_REASONS:
        add(OUT, pb.Scope(channel=pb.CHANNEL_EMAIL), reason)
    for channel in OTHER_CHANNELS:
        add(OUT, pb.Scope(channel=channel), pb.REASON_MANUAL)
    add(OUT, ALL_SCOPE, pb.REASON_MANUAL)
    add(IN, None, pb.REASON_MANUAL)
    return requests


async def test_concurrent_writers_lose_no_update(
    server: ServerProcess, db: Database, loc: str, contact: str
) -> None:
    enables = every_distinct_block(loc, contact)
    assert len(enables) == 18
    # 18 distinct enables plus 12 duplicates, all at once, in random order: 30 writers.
    calls = enables + random.sample(enables, 12)
    random.shuffle(calls)
    async with grpc.aio.insecure_channel(server.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        answers = await asyncio.gather(*(stub.SetDnd(r, timeout=30) for r in calls))
        assert sum(a.changed for a in answers) == 18
        status = await stub.GetStatus(pb.GetStatusRequest(location_id=loc, contact_id=contact))
        assert status.status.version == 18
        assert len(status.status.blocks) == 18
        assert status.status.outbound == pb.DND_STATUS_ON
        assert status.status.inbound == pb.DND_STATUS_ON

        # Now 18 concurrent clears, one per block, by SUPPORT with evidence and confirmation.
        clears = []
        for enable in enables:
            clear = pb.SetDndRequest()
            clear.CopyFrom(enable)
            clear.action = DISABLE
            clear.source = pb.SOURCE_SUPPORT
            clear.evidence = "signed opt-in form #12"
            clear.suppression_removal_confirmed = True
            clears.append(clear)
        random.shuffle(clears)
        answers = await asyncio.gather(*(stub.SetDnd(r, timeout=30) for r in clears))
        # The ALL-scope MANUAL clear also takes per-channel MANUAL blocks it finds, so count
        # removed blocks, not changed answers: each block is removed exactly once.
        assert sum(len(a.affected_blocks) for a in answers) == 18
        status = await stub.GetStatus(pb.GetStatusRequest(location_id=loc, contact_id=contact))
    assert status.status.version == 36
    assert list(status.status.blocks) == []
    assert status.status.outbound == pb.DND_STATUS_OFF
    versions = [
        r["version"]
        for r in db.fetch(
            "SELECT version FROM dnd_changes WHERE location_id = $1 ORDER BY seq", loc
        )
    ]
    assert versions == list(range(1, 37)), "change log versions must be gapless and in seq order"


async def test_expected_version_admits_exactly_one_of_racing_writers(
    server: ServerProcess, db: Database, loc: str, contact: str
) -> None:
    base = dict(location_id=loc, contact_id=contact, direction=OUT, source=pb.SOURCE_USER)
    channels = [pb.CHANNEL_CALL, pb.CHANNEL_EMAIL, pb.CHANNEL_SMS, pb.CHANNEL_WHATSAPP]
    async with grpc.aio.insecure_channel(server.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)

        async def attempt(i: int) -> grpc.StatusCode:
            request = pb.SetDndRequest(
                **base,  # type: ignore[arg-type]
                action=ENABLE,
                scope=pb.Scope(channel=channels[i % len(channels)]),  # type: ignore[arg-type]
                expected_version=0,
            )
            try:
                await stub.SetDnd(request, timeout=30)
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.ABORTED:
                    info = error_details(error)["ErrorInfo"]
                    assert info.reason == "VERSION_MISMATCH"
                    assert info.metadata["expected"] == "0"
                    assert info.metadata["actual"] == "1"
                return error.code()
            return grpc.StatusCode.OK

        codes = await asyncio.gather(*(attempt(i) for i in range(20)))
    assert codes.count(grpc.StatusCode.OK) == 1
    assert codes.count(grpc.StatusCode.ABORTED) == 19
    assert db.changes(loc) == 1


@pytest.mark.parametrize("expected, ok", [(3, True), (2, False), (4, False)])
def test_expected_version_checked_against_current(stub, loc, contact, expected, ok) -> None:  # type: ignore[no-untyped-def]
    for channel in (pb.CHANNEL_CALL, pb.CHANNEL_SMS, pb.CHANNEL_GMB):
        stub.SetDnd(
            pb.SetDndRequest(
                location_id=loc,
                contact_id=contact,
                action=ENABLE,
                direction=OUT,
                scope=pb.Scope(channel=channel),
                source=pb.SOURCE_USER,
            )
        )
    request = pb.SetDndRequest(
        location_id=loc,
        contact_id=contact,
        action=DISABLE,
        direction=OUT,
        scope=ALL_SCOPE,
        source=pb.SOURCE_USER,
        expected_version=expected,
    )
    if ok:
        assert stub.SetDnd(request).status.version == 6
    else:
        with pytest.raises(grpc.RpcError) as caught:
            stub.SetDnd(request)
        assert caught.value.code() == grpc.StatusCode.ABORTED
        status = stub.GetStatus(pb.GetStatusRequest(location_id=loc, contact_id=contact))
        assert status.status.version == 3
        assert len(status.status.blocks) == 3
