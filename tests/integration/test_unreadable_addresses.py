"""An opt-out whose address cannot be read still acts, over real gRPC and real PostgreSQL.

Providers write addresses their own way, and webhooks seldom retry a refused call: an event
that sets a block (an email unsubscribe, a carrier's permanent failure, a STOP) sets it on the
contact when its address is no address, suppresses nothing, and says so; anything else with
such an address is refused with INVALID_ARGUMENT and changes nothing. A retry with the same
idempotency key answers as the first time, whatever the location's settings became.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests import factories as f
from tests.support import Database, bad_fields, new_id

T = 10
EMAIL, SMS, WHATSAPP = pb.CHANNEL_EMAIL, pb.CHANNEL_SMS, pb.CHANNEL_WHATSAPP
NO_ADDRESS = "the address given is no address"


def suppressions(db: Database, loc: str) -> int:
    count: int = db.fetchval(
        "SELECT count(*) FROM dnd_address_suppressions WHERE location_id = $1", loc
    )
    return count


def allowed(stub: Any, loc: str, contact: str, channel: int) -> bool:
    return bool(stub.CheckSend(f.check(loc, contact, channel), timeout=T).allowed)


@pytest.mark.parametrize(
    "address",
    [
        '"john.doe"@example.com',
        "pat@example..com",
        "(work)pat@example.com",
        "pat@example.com#1",
        "not-an-email",
        "pat@example",
        "a@b@c.com",
        "a" * 243 + "@example.com",
    ],
)
def test_an_email_opt_out_to_an_unreadable_address_blocks_the_contact(
    stub: Any, db: Database, loc: str, address: str
) -> None:
    contact = new_id("contact")
    event = f.email_event(loc, contact, pb.EMAIL_EVENT_UNSUBSCRIBE_LINK, to_address=address)
    answer = stub.ReportEmailEvent(event, timeout=T)
    assert answer.changed and NO_ADDRESS in answer.explanation
    assert address not in answer.explanation
    assert not allowed(stub, loc, contact, EMAIL)
    assert suppressions(db, loc) == 0


def test_a_carrier_failure_to_an_unreadable_number_blocks_the_contact(
    stub: Any, db: Database, loc: str
) -> None:
    contact = new_id("contact")
    answer = stub.ReportSmsDeliveryFailure(
        f.sms_failure(loc, contact, "21610", to_address="55555"), timeout=T
    )
    assert answer.changed and NO_ADDRESS in answer.explanation
    assert not allowed(stub, loc, contact, SMS)
    assert suppressions(db, loc) == 0


def test_an_event_that_sets_nothing_or_lifts_with_an_unreadable_address_is_refused(
    stub: Any, db: Database, loc: str
) -> None:
    contact = new_id("contact")
    refused = [
        lambda: stub.ReportSmsDeliveryFailure(
            f.sms_failure(loc, contact, "99999", to_address="55555"), timeout=T
        ),  # a code that sets no block
        lambda: stub.ReportDeliveryEvent(
            f.delivery_event(loc, contact, "999999", address="not a number"), timeout=T
        ),  # a code no table knows
    ]
    for call in refused:
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert set(bad_fields(caught.value)) <= {"to_address", "address"}
    assert db.changes(loc) == 0
    # The WhatsApp opt-out code acts whatever the address.
    answer = stub.ReportDeliveryEvent(
        f.delivery_event(loc, contact, "131050", address="not a number"), timeout=T
    )
    assert answer.changed and NO_ADDRESS in answer.explanation


def test_a_retried_stop_from_an_unreadable_sender_answers_as_the_first_time(
    stub: Any, db: Database, loc: str
) -> None:
    """The STOP was an opt-out by the location's extra word; the word is gone when the retry
    comes: the retry still replays the stored answer, it is not refused."""
    contact = new_id("contact")
    stub.UpdateKeywordSettings(f.keyword_settings(loc, outs=["BASTA"]), timeout=T)
    request = f.inbound(loc, contact, "basta", from_address="55555", idempotency_key="in-1")
    first = stub.ProcessInboundMessage(request, timeout=T)
    assert first.action == pb.KEYWORD_ACTION_OPTED_OUT
    stub.UpdateKeywordSettings(f.keyword_settings(loc), timeout=T)
    changes = db.changes(loc)
    assert stub.ProcessInboundMessage(request, timeout=T) == first
    assert db.changes(loc) == changes
    # A new message of that word from that sender is now no opt-out: refused.
    with pytest.raises(grpc.RpcError) as caught:
        stub.ProcessInboundMessage(
            f.inbound(loc, contact, "basta", from_address="55555"), timeout=T
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert db.changes(loc) == changes


def test_whatsapp_user_digits_are_a_number_only_on_whatsapp(stub: Any, loc: str) -> None:
    """WhatsApp writes its users as digits with their country code and no "+"; on SMS the
    same digits are no number of the default region and are refused (a mistyped number is
    not read as another country's)."""
    contact = new_id("contact")
    stopped = stub.ProcessInboundMessage(
        f.inbound(loc, contact, "STOP", WHATSAPP, from_address="447911123456"), timeout=T
    )
    assert stopped.changed
    other = stub.CheckSend(
        f.check(loc, new_id("contact"), WHATSAPP, address="+447911123456"), timeout=T
    )
    assert other.denial == pb.DENIAL_ADDRESS_SUPPRESSED
    with pytest.raises(grpc.RpcError) as caught:
        stub.CheckSend(f.check(loc, contact, SMS, address="41555501001"), timeout=T)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
