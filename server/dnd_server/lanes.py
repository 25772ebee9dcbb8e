"""The change log's lanes: which lane a location writes to, positions in the whole log, and
the merge of lanes into one stream.

The log is split into N lanes (fixed when the database is first written, kept in
``dnd_log_layout``); a location's changes all go to lane ``lane_of(location_id, N)``, each
lane with its own head row, so writes of locations in different lanes never wait for each
other. Within a lane sequence numbers commit in order, so reading a lane "after the last
sequence seen" is gapless, and a contact's changes (one location, one lane) come in commit
order.

A position in the whole log is one sequence number per lane (``Position``). Each change
records every lane's committed head as its writing statement saw it (``heads``; its own lane
being its own sequence number): the change's position. A stream merges its lanes by
``merge``: a change comes only after every change its position includes, so a stream's
position right after a change is that change's own position whenever nothing concurrent came
between; then the change's cursor is the same in an answer, a history entry and any stream.
"""

from __future__ import annotations

import functools
import hashlib
import heapq
from collections.abc import Iterable, Iterator, Sequence
from operator import le
from typing import Protocol, TypeVar

# One sequence number per lane.
Position = tuple[int, ...]

DEFAULT_LANES = 16
MAX_LANES = 256


@functools.lru_cache(maxsize=65536)
def lane_of(location_id: str, lanes: int) -> int:
    """A location's lane: the first 32 bits of the MD5 of its id, modulo ``lanes`` (the same
    as the database's ``dnd_lane``). Kept for the most recent locations: every write and
    every answer's cursor asks for it."""
    digest = hashlib.md5(location_id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:4], "big") % lanes


def lanes_of(locations: Iterable[str], lanes: int) -> frozenset[int]:
    """The lanes a set of locations writes to (empty: every lane)."""
    found = frozenset(lane_of(loc, lanes) for loc in locations)
    return found or frozenset(range(lanes))


def uniform(seq: int, lanes: int) -> Position:
    """The position ``seq`` in every lane: a position of the single log of earlier versions
    (every lane continues from its head, its changes keeping their sequence numbers)."""
    return (seq,) * lanes


def join(a: Position, b: Position) -> Position:
    """Lane by lane the later of ``a`` and ``b``. Run for every event a stream sends: most
    often one of them already includes the other, which is answered without a new tuple."""
    if len(a) != len(b):
        raise ValueError(f"positions of {len(a)} and {len(b)} lanes")
    if all(map(le, a, b)):
        return b
    if all(map(le, b, a)):
        return a
    return tuple(map(max, a, b))


def reached(target: Position, position: Position) -> bool:
    """Whether ``position`` includes every change ``target`` does."""
    if len(target) != len(position):
        raise ValueError(f"positions of {len(target)} and {len(position)} lanes")
    return all(map(le, target, position))


def behind(head: Position, position: Position) -> int:
    """How many changes ``position`` lacks of ``head``."""
    return sum(max(0, h - p) for h, p in zip(head, position, strict=True))


class Sequenced(Protocol):
    """A change as the merge sees it: its lane, sequence number and position."""

    @property
    def lane(self) -> int: ...

    @property
    def seq(self) -> int: ...

    @property
    def heads(self) -> Position: ...


_C = TypeVar("_C", bound=Sequenced)


def merge(by_lane: Sequence[Sequence[_C]], complete: Sequence[bool]) -> Iterator[_C]:
    """The changes read from the lanes (``by_lane[lane]``, in sequence order, each lane read
    from the same start position), in one order every stream shares: a change comes after
    every change its position includes. ``complete[lane]`` tells whether everything the lane
    had when read was read; the merge stops before a change whose position includes a change
    of an incomplete lane that was not read (read on, and merge again)."""
    ends = [lane[-1].seq if lane else None for lane in by_lane]
    heap: list[tuple[int, int, int]] = []
    for number, lane in enumerate(by_lane):
        if lane:
            heap.append((sum(lane[0].heads), number, 0))
    heapq.heapify(heap)
    merged = 0
    while heap:
        _, number, at = heapq.heappop(heap)
        change = by_lane[number][at]
        for other, end in enumerate(ends):
            unread = end is None or change.heads[other] > end
            if other != number and not complete[other] and unread:
                if merged:
                    return
                # Nothing could come (a change committed out of its lane's order of
                # positions): the first comes anyway, so the stream goes on.
                yield change
                return
        merged += 1
        yield change
        if at + 1 < len(by_lane[number]):
            nxt = by_lane[number][at + 1]
            heapq.heappush(heap, (sum(nxt.heads), number, at + 1))


# The lane count of this process's log, installed at start once read from the database.
_lanes = DEFAULT_LANES


def install(lanes: int) -> None:
    global _lanes
    if not 1 <= lanes <= MAX_LANES:
        raise ValueError(f"a log has 1 to {MAX_LANES} lanes, got {lanes}")
    _lanes = lanes


def count() -> int:
    """The lane count of the deployment's log."""
    return _lanes


def position_at(lane: int, seq: int, heads: Sequence[int] | None) -> Position:
    """A change's position from the heads its writer saw (None: a change of the single log,
    at ``seq`` in every lane), its own lane at its own number."""
    if heads is None:
        return uniform(seq, _lanes)
    position = list(heads)
    position[lane] = seq
    return tuple(position)


class LogLayoutMismatch(RuntimeError):
    """DND_CHANGE_LANES differs from the lane count of a log that has changes, or that other
    servers (``running``) follow."""

    def __init__(self, wanted: int, found: int, running: int = 0) -> None:
        why = (
            f"{running} other server(s) run on it with {found}"
            if running
            else "the lane count is fixed once the log has a change"
        )
        super().__init__(
            f"DND_CHANGE_LANES is {wanted} but the database's change log has {found} lanes; "
            f"{why}: set DND_CHANGE_LANES={found}"
        )
        self.wanted = wanted
        self.found = found
        self.running = running


def advance(position: Position, change: Sequenced, followed: frozenset[int]) -> Position:
    """A stream's position after ``change``: the change's lane at its number; the other lanes
    it follows (``followed``, read change by change) where they were; the lanes it does not
    follow (their changes never match) at least where the change's position has them."""
    return tuple(
        change.seq
        if lane == change.lane
        else (seq if lane in followed else max(seq, change.heads[lane]))
        for lane, seq in enumerate(position)
    )
