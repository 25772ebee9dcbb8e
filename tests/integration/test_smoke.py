from __future__ import annotations

from dnd.v1 import dnd_pb2 as pb

from tests.support import ENABLE, OUT, Database, channel_scope


def test_enable_then_check(stub, loc, contact, db: Database) -> None:
    answer = stub.SetDnd(
        pb.SetDndRequest(
            location_id=loc,
            contact_id=contact,
            action=ENABLE,
            direction=OUT,
            scope=channel_scope(pb.CHANNEL_SMS),
            source=pb.SOURCE_USER,
        )
    )
    assert answer.changed
    check = stub.CheckSend(
        pb.CheckSendRequest(location_id=loc, contact_id=contact, channel=pb.CHANNEL_SMS)
    )
    assert not check.allowed
    assert db.changes(loc) == 1
