"""Mapping between protobuf messages and domain types."""

from __future__ import annotations

import datetime as dt
import functools

from dnd.v1 import dnd_pb2 as pb
from google.protobuf.timestamp_pb2 import Timestamp

from dnd_server.domain.keywords import KeywordKind
from dnd_server.domain.model import (
    AddressSuppression,
    Block,
    Channel,
    ContactState,
    Direction,
    Reason,
    Scope,
    Source,
    Summary,
    block_sort_key,
)
from dnd_server.domain.rules import summarize
from dnd_server.storage.store import ChangeRow, HistoryRow

CHANNEL_TO_PB: dict[Channel, pb.Channel.ValueType] = {
    c: pb.Channel.Value(f"CHANNEL_{c.value}") for c in Channel
}
DIRECTION_TO_PB: dict[Direction, pb.Direction.ValueType] = {
    d: pb.Direction.Value(f"DIRECTION_{d.value}") for d in Direction
}
REASON_TO_PB: dict[Reason, pb.Reason.ValueType] = {
    r: pb.Reason.Value(f"REASON_{r.value}") for r in Reason
}
SOURCE_TO_PB: dict[Source, pb.Source.ValueType] = {
    s: pb.Source.Value(f"SOURCE_{s.value}") for s in Source
}
SUMMARY_TO_PB: dict[Summary, pb.DndStatus.ValueType] = {
    s: pb.DndStatus.Value(f"DND_STATUS_{s.value}") for s in Summary
}

KEYWORD_ACTION_TO_PB: dict[KeywordKind, pb.KeywordAction.ValueType] = {
    KeywordKind.NONE: pb.KEYWORD_ACTION_NONE,
    KeywordKind.OPT_OUT: pb.KEYWORD_ACTION_OPTED_OUT,
    KeywordKind.OPT_IN: pb.KEYWORD_ACTION_OPTED_IN,
    KeywordKind.HELP: pb.KEYWORD_ACTION_HELP,
}

CHANNEL_FROM_PB: dict[int, Channel] = {int(v): k for k, v in CHANNEL_TO_PB.items()}
DIRECTION_FROM_PB: dict[int, Direction] = {int(v): k for k, v in DIRECTION_TO_PB.items()}
REASON_FROM_PB: dict[int, Reason] = {int(v): k for k, v in REASON_TO_PB.items()}
SOURCE_FROM_PB: dict[int, Source] = {int(v): k for k, v in SOURCE_TO_PB.items()}


def timestamp(when: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(when.astimezone(dt.UTC))
    return ts


def scope_to_pb(scope: Scope) -> pb.Scope:
    if scope is None:
        return pb.Scope(all_channels=True)
    return pb.Scope(channel=CHANNEL_TO_PB[scope])


@functools.lru_cache(maxsize=65536)
def block_to_pb(block: Block) -> pb.Block:
    """The message of a block (cached: blocks are immutable; callers copy it into theirs)."""
    return _block_to_pb(block)


def _block_to_pb(block: Block) -> pb.Block:
    message = pb.Block(
        direction=DIRECTION_TO_PB[block.direction],
        scope=scope_to_pb(block.scope),
        reason=REASON_TO_PB[block.reason],
        source=SOURCE_TO_PB[block.source],
        actor_id=block.actor_id,
        note=block.note,
        evidence=block.evidence,
        provider_detail=block.provider_detail,
        address=block.address,
    )
    if block.since is not None:
        message.since.CopyFrom(timestamp(block.since))
    return message


def suppression_to_pb(suppression: AddressSuppression) -> pb.AddressSuppression:
    message = pb.AddressSuppression(
        address=suppression.address,
        channel=CHANNEL_TO_PB[suppression.channel],
        reason=REASON_TO_PB[suppression.reason],
        source=SOURCE_TO_PB[suppression.source],
        actor_id=suppression.actor_id,
        contact_id=suppression.contact_id,
        provider_detail=suppression.provider_detail,
    )
    if suppression.since is not None:
        message.since.CopyFrom(timestamp(suppression.since))
    return message


# The decision view, for callers told decisions rather than dossiers (no read scope) and for
# compact BatchCheckSend results: what denies the send, not who wrote what about the contact.


def block_summary_to_pb(block: Block) -> pb.Block:
    """A block's direction, scope, reason, source and since (no actor, note, evidence,
    provider detail or address)."""
    return _block_summary(block.direction, block.scope, block.reason, block.source, block.since)


@functools.lru_cache(maxsize=65536)
def _block_summary(
    direction: Direction, scope: Scope, reason: Reason, source: Source, since: dt.datetime | None
) -> pb.Block:
    message = pb.Block(
        direction=DIRECTION_TO_PB[direction],
        scope=scope_to_pb(scope),
        reason=REASON_TO_PB[reason],
        source=SOURCE_TO_PB[source],
    )
    if since is not None:
        message.since.CopyFrom(timestamp(since))
    return message


def suppression_summary_to_pb(suppression: AddressSuppression) -> pb.AddressSuppression:
    """A suppression's channel, reason, source and since (no address, holding contact, actor
    or provider detail)."""
    return _suppression_summary(
        suppression.channel, suppression.reason, suppression.source, suppression.since
    )


@functools.lru_cache(maxsize=65536)
def _suppression_summary(
    channel: Channel, reason: Reason, source: Source, since: dt.datetime | None
) -> pb.AddressSuppression:
    message = pb.AddressSuppression(
        channel=CHANNEL_TO_PB[channel], reason=REASON_TO_PB[reason], source=SOURCE_TO_PB[source]
    )
    if since is not None:
        message.since.CopyFrom(timestamp(since))
    return message


def status_to_pb(state: ContactState) -> pb.ContactStatus:
    summary = summarize(state.blocks)
    message = pb.ContactStatus(
        location_id=state.location_id,
        contact_id=state.contact_id,
        outbound=SUMMARY_TO_PB[summary.outbound],
        inbound=SUMMARY_TO_PB[summary.inbound],
        blocked_channels=[CHANNEL_TO_PB[c] for c in summary.blocked_channels],
        blocks=[block_to_pb(b) for b in sorted(state.blocks, key=block_sort_key)],
        version=state.version,
        address_suppressions=[
            suppression_to_pb(s)
            for s in sorted(
                state.suppressions, key=lambda s: (s.channel.value, s.address, s.reason.value)
            )
        ],
    )
    if state.updated_at is not None:
        message.updated_at.CopyFrom(timestamp(state.updated_at))
    return message


def history_to_pb(row: HistoryRow, cursor: str) -> pb.HistoryEntry:
    return pb.HistoryEntry(
        cursor=cursor,
        time=timestamp(row.time),
        version=row.version,
        enabled=row.enabled,
        direction=DIRECTION_TO_PB[row.direction],
        scope=scope_to_pb(row.scope),
        reason=REASON_TO_PB[row.reason],
        source=SOURCE_TO_PB[row.source],
        actor_id=row.actor_id,
        note=row.note,
        evidence=row.evidence,
        provider_detail=row.provider_detail,
        address=row.address,
        contact_id=row.contact_id,
        suppression_contact_id=row.owner_contact_id,
        authenticated_caller=row.caller,
    )


def change_to_pb(row: ChangeRow, cursor: str) -> pb.ChangeEvent:
    return pb.ChangeEvent(
        cursor=cursor,
        location_id=row.location_id,
        contact_id=row.contact_id,
        direction=DIRECTION_TO_PB[row.direction],
        scope=scope_to_pb(row.scope),
        enabled=row.enabled,
        reason=REASON_TO_PB[row.reason],
        source=SOURCE_TO_PB[row.source],
        actor_id=row.actor_id,
        time=timestamp(row.time),
        outbound=SUMMARY_TO_PB[Summary(row.outbound)],
        inbound=SUMMARY_TO_PB[Summary(row.inbound)],
        blocked_channels=[CHANNEL_TO_PB[c] for c in row.blocked_channels],
        version=row.version,
        address=row.address,
        authenticated_caller=row.caller,
        suppression_contact_id=row.owner_contact_id,
    )
