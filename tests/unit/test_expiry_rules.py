"""The expiry of temporary carrier blocks as pure rules: only SMS_CARRIER_TEMPORARY blocks at
least the lifetime old expire, none without a lifetime, and the lifetime's bounds."""

from __future__ import annotations

import datetime as dt

import pytest
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.expiry import LIFETIME_MAX_SECONDS, expired_blocks, expiry_of, plan_expiry
from dnd_server.domain.model import Block, Channel, ContactState, Direction, Reason, Source

T0 = dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def block(reason: Reason, since: dt.datetime | None = T0) -> Block:
    return Block(Direction.OUTBOUND, Channel.SMS, reason, Source.SYSTEM, since=since)


TEMPORARY = block(Reason.SMS_CARRIER_TEMPORARY)
PERMANENT = block(Reason.SMS_CARRIER_PERMANENT)


def test_a_temporary_block_expires_once_its_lifetime_has_passed() -> None:
    blocks = [TEMPORARY, PERMANENT]
    assert expired_blocks(blocks, HOUR, T0 + HOUR - dt.timedelta(microseconds=1)) == []
    assert expired_blocks(blocks, HOUR, T0 + HOUR) == [TEMPORARY]
    assert expired_blocks(blocks, HOUR, T0 + 100 * HOUR) == [TEMPORARY]


def test_nothing_expires_without_a_lifetime_or_a_since() -> None:
    assert expired_blocks([TEMPORARY], None, T0 + 1000 * HOUR) == []
    assert expired_blocks([block(Reason.SMS_CARRIER_TEMPORARY, None)], HOUR, T0 + 2 * HOUR) == []


def test_the_plan_clears_the_expired_blocks() -> None:
    state = ContactState("loc", "c", (TEMPORARY, PERMANENT), version=2)
    [step] = plan_expiry(state, HOUR, T0 + 2 * HOUR)
    assert not step.enabled and step.target == TEMPORARY
    assert plan_expiry(state, HOUR, T0) == []


def test_lifetime_bounds() -> None:
    assert expiry_of(0).sms_carrier_temporary is None
    assert expiry_of(1).sms_carrier_temporary == dt.timedelta(seconds=1)
    assert expiry_of(LIFETIME_MAX_SECONDS).sms_carrier_temporary == dt.timedelta(days=365)
    for seconds in (-1, LIFETIME_MAX_SECONDS + 1):
        with pytest.raises(InvalidArgument) as caught:
            expiry_of(seconds)
        assert caught.value.violations[0].field == "settings.sms_carrier_temporary_seconds"
