"""The change log's lanes as pure functions: a location's lane is stable, and merging lanes
puts every change after every change its position includes, keeps each lane's order and stops
before a change that needs what was not read."""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass

import pytest
from dnd_server.lanes import (
    Position,
    advance,
    behind,
    join,
    lane_of,
    lanes_of,
    merge,
    position_at,
    reached,
    uniform,
)


@dataclass(frozen=True)
class Change:
    lane: int
    seq: int
    heads: Position


def test_a_location_s_lane_is_stable_and_spread() -> None:
    # The same numbers as the database's dnd_lane (md5's first 32 bits, modulo).
    assert [lane_of(f"loc-{i}", 16) for i in range(8)] == [
        lane_of(f"loc-{i}", 16) for i in range(8)
    ]
    counts = [0] * 16
    for i in range(3200):
        counts[lane_of(f"location-{i}", 16)] += 1
    assert min(counts) > 120, counts
    assert all(0 <= lane_of(f"x{i}", 7) < 7 for i in range(100))
    assert lanes_of([], 4) == frozenset(range(4))
    assert lanes_of(["a", "a"], 4) == frozenset({lane_of("a", 4)})


def test_positions() -> None:
    assert uniform(5, 3) == (5, 5, 5)
    assert join((1, 5, 2), (3, 1, 2)) == (3, 5, 2)
    assert join((1, 1, 2), (3, 1, 2)) == (3, 1, 2) == join((3, 1, 2), (1, 1, 2))
    assert join((4, 4), (4, 4)) == (4, 4)
    assert reached((1, 2), (1, 3)) and not reached((2, 2), (1, 3))
    assert reached((1, 3), (1, 3)) and not reached((1, 4), (9, 3))
    for mismatched in (join, reached):
        with pytest.raises(ValueError, match="lanes"):
            mismatched((1, 2), (1, 2, 3))
    assert behind((5, 5), (3, 9)) == 2
    assert position_at(1, 9, [4, 4, 4]) == (4, 9, 4)
    assert position_at(1, 9, None) == uniform(9, 16)
    change = Change(0, 7, (7, 3, 9))
    assert advance((2, 2, 2), change, frozenset({0, 1})) == (7, 2, 9)


def simulate(lanes: int, writes: int, seed: int) -> list[Change]:
    """Writes committing in a random interleaving: each sees the heads committed when it
    starts; a lane's writes commit in their order."""
    rng = random.Random(seed)
    committed = [0] * lanes
    assigned = [0] * lanes
    in_flight: list[Change] = []
    done: list[Change] = []
    while len(done) < writes:
        if in_flight and (rng.random() < 0.5 or len(in_flight) > 6):
            # Commit the oldest in flight of a random lane (lane order holds).
            lane = rng.choice(sorted({c.lane for c in in_flight}))
            first = min((c for c in in_flight if c.lane == lane), key=lambda c: c.seq)
            in_flight.remove(first)
            committed[lane] = first.seq
            done.append(first)
        else:
            lane = rng.randrange(lanes)
            if any(c.lane == lane for c in in_flight):
                continue  # the lane's head is held until that write commits
            assigned[lane] += 1
            heads = list(committed)
            heads[lane] = assigned[lane]
            in_flight.append(Change(lane, assigned[lane], tuple(heads)))
    return done


def test_merge_puts_each_change_after_what_its_position_includes() -> None:
    for seed in range(20):
        changes = simulate(5, 200, seed)
        by_lane = [
            sorted((c for c in changes if c.lane == n), key=lambda c: c.seq) for n in range(5)
        ]
        merged = list(merge(by_lane, [True] * 5))
        assert sorted(merged, key=lambda c: (c.lane, c.seq)) == sorted(
            changes, key=lambda c: (c.lane, c.seq)
        ), "each change once"
        seen = [0] * 5
        for change in merged:
            assert change.seq == seen[change.lane] + 1, "lane order, gapless"
            assert all(change.heads[n] <= seen[n] for n in range(5) if n != change.lane), (
                "after every change its position includes"
            )
            seen[change.lane] = change.seq


def test_sequential_writes_merge_to_their_own_positions() -> None:
    """Writes one after another: the stream's position after each is its own position, so
    its cursor is the same wherever it shows up."""
    heads = [0, 0, 0]
    changes = []
    for lane in [0, 2, 2, 1, 0, 1, 2]:
        heads[lane] += 1
        changes.append(Change(lane, heads[lane], tuple(heads)))
    by_lane = [[c for c in changes if c.lane == n] for n in range(3)]
    position: Position = (0, 0, 0)
    every = frozenset(range(3))
    for change in merge(by_lane, [True] * 3):
        position = advance(position, change, every)
        assert position == change.heads


def test_merge_stops_before_a_change_needing_what_was_not_read() -> None:
    a1 = Change(0, 1, (1, 0))
    b1 = Change(1, 1, (0, 1))
    b2 = Change(1, 2, (3, 2))  # saw lane 0 at 3: lane 0 was read only to 1
    assert list(merge([[a1], [b1, b2]], [False, True])) == [a1, b1]
    assert list(merge([[a1], [b1, b2]], [True, True])) == [a1, b1, b2]
    # Nothing mergeable at all: the first comes anyway, so a stream never stalls.
    assert list(merge([[a1], [b2]], [False, False]))[:1] in ([a1], [b2])


def test_merge_of_nothing() -> None:
    assert list(merge([[], []], [True, True])) == []
    assert list(itertools.islice(merge([[Change(0, 1, (1,))]], [False]), 5)) == [Change(0, 1, (1,))]
