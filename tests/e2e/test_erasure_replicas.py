"""An erasure through one replica reaches the other's cache: the feed brings the erasure
change (which names no address), and the other replica drops the location's cached
suppressions, so it shows the kept (keyed-hash) suppression, never the erased contact."""

from __future__ import annotations

from collections.abc import Callable

import grpc
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests import factories as f
from tests.support import ServerProcess, new_id, wait_until

T = 10
PHONE = "+14155550177"


def test_an_erasure_through_one_replica_reaches_the_others_cache(
    fresh_database: Callable[[], str],
) -> None:
    url = fresh_database()
    a = ServerProcess(url).start()
    b = ServerProcess(url).start()
    try:
        with grpc.insecure_channel(a.addr) as ca, grpc.insecure_channel(b.addr) as cb:
            stub_a, stub_b = dnd_pb2_grpc.DndServiceStub(ca), dnd_pb2_grpc.DndServiceStub(cb)
            loc, contact, other = new_id("loc"), new_id("contact"), new_id("contact")
            stub_a.ProcessInboundMessage(
                f.inbound(loc, contact, "STOP", from_address=PHONE), timeout=T
            )
            # Replica B caches the address's suppression, naming the contact.
            check = f.check(loc, other, address=PHONE)
            wait_until(
                lambda: stub_b.CheckSend(check, timeout=T).denied_by_address,
                what="replica B's feed to bring the opt-out",
            )
            cached = stub_b.CheckSend(check, timeout=T)
            assert cached.denied_by_address[0].contact_id == contact
            erased = stub_a.EraseContact(f.erase(loc, contact), timeout=T)
            # B's cache (no min_cursor: whatever it holds) comes to show the kept suppression.
            after = wait_until(
                lambda: _erased_denial(stub_b.CheckSend(check, timeout=T)),
                what="replica B's cache to drop the erased contact's suppression",
            )
            assert after.denial == pb.DENIAL_ADDRESS_SUPPRESSED
            [kept] = after.denied_by_address
            assert kept.contact_id == "" and contact not in after.explanation
            status = stub_b.GetStatus(
                f.get_status(loc, contact, min_cursor=erased.cursor), timeout=T
            ).status
            assert status.version == erased.status.version
            assert all(b.actor_id == "" and b.evidence == "" for b in status.blocks)
    finally:
        a.stop()
        b.stop()


def _erased_denial(answer: pb.CheckSendResponse) -> pb.CheckSendResponse | None:
    return answer if answer.denied_by_address and answer.denied_by_address[0].erased else None
