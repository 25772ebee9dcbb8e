"""Expiry of temporary carrier blocks, written to read like the rule.

- A location may give its SMS_CARRIER_TEMPORARY blocks a lifetime (off by default).
- Once a block is that old, the service clears it: a change of source SYSTEM, made at the time
  it is cleared, in the log like any other (watchers and every replica's cache see it). This
  is the expiry's own rule, not a clear by the SYSTEM source (which may never clear a block:
  ``CLEAR_POLICY``).
- Until that change is made the block is active and denies sends: a read never treats a block
  as gone by its age, so every replica, its cache and the database agree on what denies.
- The clear is decided again on the contact's locked state: of passes racing on several
  replicas exactly one clears each block; the others find nothing left to clear.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass

from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Block, ContactState, Reason, Step

# The reason whose blocks may expire.
EXPIRING_REASON = Reason.SMS_CARRIER_TEMPORARY
# A lifetime is 1 second to 365 days.
LIFETIME_MAX_SECONDS = 365 * 86400


@dataclass(frozen=True, slots=True)
class BlockExpiry:
    """A location's block lifetimes: None never expires (the default)."""

    sms_carrier_temporary: dt.timedelta | None = None


NO_EXPIRY = BlockExpiry()


def expiry_of(seconds: int) -> BlockExpiry:
    """The settings of a stored or requested lifetime in seconds (0: never); raises
    InvalidArgument naming the field when out of range."""
    if not 0 <= seconds <= LIFETIME_MAX_SECONDS:
        raise InvalidArgument.one(
            "settings.sms_carrier_temporary_seconds",
            f"must be 0 (never) or 1 to {LIFETIME_MAX_SECONDS} seconds, got {seconds}",
        )
    return BlockExpiry(dt.timedelta(seconds=seconds) if seconds else None)


def expired_blocks(
    blocks: Iterable[Block], lifetime: dt.timedelta | None, now: dt.datetime
) -> list[Block]:
    """The temporary carrier blocks at least ``lifetime`` old at ``now`` (none without one)."""
    if lifetime is None:
        return []
    return [
        b
        for b in blocks
        if b.reason is EXPIRING_REASON and b.since is not None and b.since + lifetime <= now
    ]


def plan_expiry(state: ContactState, lifetime: dt.timedelta | None, now: dt.datetime) -> list[Step]:
    """Clear the contact's expired temporary carrier blocks (no step when none is)."""
    return [Step(False, b) for b in expired_blocks(state.blocks, lifetime, now)]
