"""Use cases: each joins the pure domain rules to the store. No protobuf here."""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Sequence
from dataclasses import dataclass

from dnd_server.domain.model import Block, Channel, ContactState, Direction, Reason, Scope
from dnd_server.domain.rules import (
    ClearCredentials,
    SendDecision,
    decide_send,
    plan_disable,
    plan_enable,
)
from dnd_server.storage.store import ChangeMeta, Step, Store, WriteResult


class Action(enum.Enum):
    ENABLE = "ENABLE"
    DISABLE = "DISABLE"


@dataclass(frozen=True, slots=True)
class SetDndCommand:
    location_id: str
    contact_id: str
    action: Action
    direction: Direction
    scope: Scope
    # ENABLE: the new block's reason. DISABLE: only clear this reason (None: every reason).
    reason: Reason | None
    meta: ChangeMeta
    suppression_removal_confirmed: bool = False
    expected_version: int | None = None


class DndService:
    def __init__(self, store: Store) -> None:
        self._store = store

    async def get_status(self, location_id: str, contact_id: str) -> tuple[ContactState, int]:
        return await self._store.get_state(location_id, contact_id)

    async def check_send(
        self, location_id: str, contact_id: str, channel: Channel, direction: Direction
    ) -> tuple[SendDecision, ContactState]:
        state, _ = await self._store.get_state(location_id, contact_id)
        return decide_send(state.blocks, channel, direction), state

    async def set_dnd(self, cmd: SetDndCommand) -> WriteResult:
        return await self._store.write(
            cmd.location_id,
            cmd.contact_id,
            lambda state, now: plan_set_dnd(cmd, state, now),
            cmd.meta,
            cmd.expected_version,
        )


def plan_set_dnd(cmd: SetDndCommand, state: ContactState, now: dt.datetime) -> Sequence[Step]:
    """The steps a SetDnd takes on ``state``: pure, raises domain errors."""
    if cmd.action is Action.ENABLE:
        new = Block(
            direction=cmd.direction,
            scope=cmd.scope,
            reason=cmd.reason or Reason.MANUAL,
            source=cmd.meta.source,
            actor_id=cmd.meta.actor_id,
            note=cmd.meta.note,
            evidence=cmd.meta.evidence,
            provider_detail=cmd.meta.provider_detail,
            since=now,
        )
        return [Step(True, block) for block in plan_enable(state.blocks, new)]
    who = ClearCredentials(
        source=cmd.meta.source,
        evidence=cmd.meta.evidence,
        suppression_removal_confirmed=cmd.suppression_removal_confirmed,
    )
    removed = plan_disable(state.blocks, cmd.direction, cmd.scope, cmd.reason, who)
    return [Step(False, block) for block in removed]
