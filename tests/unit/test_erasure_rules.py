"""The erasure rules as pure functions: what is scrubbed, which opt-outs are kept by keyed
hash, the hash itself, the reference kept, and the scrubbing of stored answers."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_server.domain.erasure import (
    KeptSuppression,
    address_digest,
    named_addresses,
    plan_erasure,
    scrubbed,
    validate_reference,
)
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    Channel,
    ContactState,
    Direction,
    Reason,
    Source,
)
from dnd_server.domain.rules import decide_send, explain_address_denial
from dnd_server.rpc.scrub import scrub_answer

KEY = bytes(range(32))
T0 = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
PHONE = "+14155550123"


def stop_block(address: str = PHONE) -> Block:
    return Block(
        Direction.OUTBOUND,
        Channel.SMS,
        Reason.SMS_OPT_OUT_KEYWORD,
        Source.CONTACT,
        actor_id=address,
        evidence="STOP",
        provider_detail="keyword:STOP",
        since=T0,
        address=address,
    )


def state(*blocks: Block) -> ContactState:
    return ContactState("loc", "c-1", blocks, version=len(blocks))


def test_blocks_lose_their_personal_fields_only() -> None:
    block = Block(
        Direction.OUTBOUND,
        Channel.EMAIL,
        Reason.MANUAL,
        Source.USER,
        actor_id="agent-7",
        note="angry",
        evidence="mail",
        provider_detail="x",
        since=T0,
        address="a@b.co",
        replied_at=T0,
    )
    later = T0 + dt.timedelta(minutes=1)
    kept = scrubbed(block, later)
    assert (kept.actor_id, kept.note, kept.evidence, kept.provider_detail, kept.address) == (
        ("",) * 5
    )
    assert kept.key == block.key and kept.since == T0 and kept.source is Source.USER
    assert kept.replied_at == T0
    assert scrubbed(kept, later) == kept


def test_an_unsent_compliance_reply_is_spent_with_the_address() -> None:
    """The one reply after an opt-out goes only to its address: erased with the address, it
    may go nowhere. An opt-out that never had an address keeps its allowance."""
    stop = stop_block()
    assert stop.address and stop.replied_at is None
    later = T0 + dt.timedelta(minutes=1)
    assert scrubbed(stop, later).replied_at == later
    bare = replace(stop, address="")
    assert scrubbed(bare, later).replied_at is None
    [kept] = plan_erasure(state(stop), [], (), later).blocks
    assert kept.replied_at == later and kept.address == ""


def test_keyword_opt_outs_of_whatsapp_and_rcs_keep_their_numbers() -> None:
    for channel in (Channel.WHATSAPP, Channel.RCS):
        block = Block(
            Direction.OUTBOUND,
            channel,
            Reason.KEYWORD_OPT_OUT,
            Source.CONTACT,
            since=T0,
            address=PHONE,
        )
        plan = plan_erasure(state(block), [], [(channel, "+14155550188"), (Channel.SMS, PHONE)], T0)
        assert {(k.channel, k.address) for k in plan.kept} == {
            (channel, PHONE),
            (channel, "+14155550188"),
        }


def test_the_contacts_suppressions_and_opt_out_addresses_are_kept_by_hash() -> None:
    own = AddressSuppression(
        Channel.SMS, PHONE, Reason.SMS_OPT_OUT_KEYWORD, Source.CONTACT, "c-1", since=T0
    )
    manual = Block(Direction.OUTBOUND, Channel.SMS, Reason.MANUAL, Source.USER, address="+1415")
    plan = plan_erasure(state(stop_block(), manual), [own], (), T0)
    assert plan.blocks_scrubbed == 2 and plan.suppressions == (own,)
    # One kept opt-out per (channel, address, reason): the block's address is the same one;
    # a manual block's address is no opt-out of the address.
    assert plan.kept == (
        KeptSuppression(Channel.SMS, PHONE, Reason.SMS_OPT_OUT_KEYWORD, Source.CONTACT, T0),
    )


def test_named_addresses_are_kept_on_the_channels_the_contact_opted_out_of() -> None:
    block = Block(
        Direction.OUTBOUND, Channel.SMS, Reason.SMS_CARRIER_PERMANENT, Source.SYSTEM, since=T0
    )
    named = named_addresses(["+14155550999"], ["lee@example.com"])
    assert (Channel.WHATSAPP, "+14155550999") in named and (
        Channel.EMAIL,
        "lee@example.com",
    ) in named
    plan = plan_erasure(state(block), [], named, T0)
    assert [(k.channel, k.address, k.reason) for k in plan.kept] == [
        (Channel.SMS, "+14155550999", Reason.SMS_CARRIER_PERMANENT)
    ]
    # Without an opt-out nothing is kept, and marketing-only opt-outs keep no address.
    marketing = Block(Direction.OUTBOUND, Channel.SMS, Reason.MARKETING_OPT_OUT, Source.USER)
    assert plan_erasure(state(marketing), [], named, T0).kept == ()
    assert plan_erasure(state(), [], named, T0).kept == ()


def test_the_earliest_opt_out_of_an_address_is_kept() -> None:
    later = AddressSuppression(
        Channel.SMS,
        PHONE,
        Reason.SMS_OPT_OUT_KEYWORD,
        Source.SUPPORT,
        "c-9",
        since=T0 + dt.timedelta(days=1),
    )
    [kept] = plan_erasure(state(stop_block()), [later], (), T0).kept
    assert kept.since == T0 and kept.source is Source.CONTACT


def test_the_hash_is_keyed_and_bound_to_location_and_channel() -> None:
    digest = address_digest(KEY, "loc", Channel.SMS, PHONE)
    assert len(digest) == 32 and PHONE.encode() not in digest
    assert digest == address_digest(KEY, "loc", Channel.SMS, PHONE)
    others = {
        address_digest(bytes(32), "loc", Channel.SMS, PHONE),
        address_digest(KEY, "loc-2", Channel.SMS, PHONE),
        address_digest(KEY, "loc", Channel.WHATSAPP, PHONE),
        address_digest(KEY, "loc", Channel.SMS, "+14155550124"),
        address_digest(KEY, "loc\x1fSMS", Channel.SMS, PHONE[1:]),
    }
    assert digest not in others and len(others) == 5
    with pytest.raises(ValueError):
        address_digest(b"short", "loc", Channel.SMS, PHONE)


@pytest.mark.parametrize(
    "reference",
    [
        "GDPR-2026-0042",
        "ticket 123456789",
        "DSR#77",
        "REQ-4155550123",
        "#4155550123",
        "ZD-2026-12-01 0042",
        "case 2026/12/01",
    ],
)
def test_a_ticket_reference_is_kept(reference: str) -> None:
    validate_reference(reference)


@pytest.mark.parametrize(
    "reference",
    [
        "",
        "   ",
        "x" * 129,
        "for lee@example.com",
        "call +1 (415) 555-0123",
        "call 4155550123",
        "(415) 555-0123",
        "tel 415.555.0123",
        "415 555 0123",
        "0044 20 7946 0958",
        "caller 020 7946 0958",
    ],
)
def test_a_reference_holding_contact_data_is_refused(reference: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_reference(reference)
    assert [v.field for v in caught.value.violations] == ["reference"]


def test_a_kept_suppression_denies_and_names_no_contact() -> None:
    kept = AddressSuppression(
        Channel.SMS, PHONE, Reason.SMS_OPT_OUT_KEYWORD, Source.CONTACT, since=T0, erased=True
    )
    decision = decide_send((), Channel.SMS, Direction.OUTBOUND, [kept], address=PHONE)
    assert not decision.allowed and decision.denied_by_address == (kept,)
    why = explain_address_denial(kept, Channel.SMS)
    assert "erased contact" in why and "via contact" not in why


def test_stored_answers_lose_personal_data_at_any_depth() -> None:
    answer = pb.SetDndResponse(
        status=pb.ContactStatus(
            contact_id="c-1",
            blocks=[pb.Block(note="angry", actor_id="agent-7", reason=pb.REASON_MANUAL)],
            address_suppressions=[pb.AddressSuppression(address=PHONE, contact_id="c-2")],
            consents=[
                pb.Consent(
                    address="a@b.co",
                    evidence=pb.ConsentEvidence(ip_address="203.0.113.9"),
                    consent_source="form",
                )
            ],
        ),
        affected_blocks=[pb.Block(evidence="STOP", provider_detail="keyword:STOP")],
        cursor="abc",
        changed=True,
    )
    scrubbed_answer = pb.SetDndResponse.FromString(
        scrub_answer("SetDnd", answer.SerializeToString())
    )
    text = str(scrubbed_answer)
    for personal in ("angry", "agent-7", PHONE, "a@b.co", "203.0.113.9", "form", "STOP"):
        assert personal not in text
    assert scrubbed_answer.cursor == "abc" and scrubbed_answer.changed
    assert scrubbed_answer.status.blocks[0].reason == pb.REASON_MANUAL
    assert scrubbed_answer.status.address_suppressions[0].contact_id == "c-2"
    again = scrubbed_answer.SerializeToString(deterministic=True)
    assert scrub_answer("SetDnd", again) == again  # nothing left: unchanged
    assert scrub_answer("NoSuchMethod", b"\x01") == b"\x01"
