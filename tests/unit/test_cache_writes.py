"""A write's state goes into the cache only while the feed has not yet applied the write's
change (``ContactCache.fed_past``): after it, the feed may have applied and forgotten a newer
change of the contact, and the write's state would then be stale in the cache."""

from __future__ import annotations

from dnd_server import lanes
from dnd_server.cache import ContactCache

LOCATION = "loc-cache-writes"


def position(seq: int) -> lanes.Position:
    at = [0] * lanes.count()
    at[lanes.lane_of(LOCATION, lanes.count())] = seq
    return tuple(at)


def test_a_write_the_feed_has_not_reached_may_be_stored() -> None:
    cache = ContactCache(10)
    cache.feed_ready(position(99))
    assert not cache.fed_past(LOCATION, 100)


def test_a_write_the_feed_has_applied_is_not_stored() -> None:
    cache = ContactCache(10)
    cache.feed_ready(position(99))
    # The feed moves past the write's change (100) and a newer one (101), and, with no read
    # in flight, forgets both: only the position tells that the write's state may be stale.
    cache.apply([], position(101))
    assert cache.fed_past(LOCATION, 100)
    assert cache.fed_past(LOCATION, 101)
    assert not cache.fed_past(LOCATION, 102)


def test_without_a_feed_position_nothing_written_is_stored() -> None:
    assert ContactCache(10).fed_past(LOCATION, 1)
