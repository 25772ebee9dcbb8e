"""Request validation: every field checked, every problem reported at once, field by field."""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping
from typing import TypeVar

from dnd.v1 import dnd_pb2 as pb

from dnd_server.domain.errors import FieldViolation, InvalidArgument
from dnd_server.domain.model import Channel, Direction, Reason, Scope
from dnd_server.domain.rules import validate_block_shape
from dnd_server.rpc.convert import (
    CHANNEL_FROM_PB,
    DIRECTION_FROM_PB,
    REASON_FROM_PB,
    SOURCE_FROM_PB,
)
from dnd_server.service import Action, SetDndCommand
from dnd_server.storage.store import ChangeMeta

ID_MAX = 128
ACTOR_MAX = 128
NOTE_MAX = 1000
EVIDENCE_MAX = 4000
DETAIL_MAX = 256

_E = TypeVar("_E")


class Violations:
    """Collects field violations; ``raise_if_any`` turns them into one InvalidArgument."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str) -> None:
        self.items.append(FieldViolation(field, description))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidArgument(self.items)

    def identifier(self, field: str, value: str) -> None:
        if not value:
            self.add(field, f"required: 1 to {ID_MAX} characters")
        elif len(value) > ID_MAX:
            self.add(field, f"{len(value)} characters; at most {ID_MAX} allowed")
        elif _has_control(value, allow_whitespace=False):
            self.add(field, "must not contain control characters")

    def text(self, field: str, value: str, limit: int, multiline: bool = False) -> None:
        if len(value) > limit:
            self.add(field, f"{len(value)} characters; at most {limit} allowed")
        elif _has_control(value, allow_whitespace=multiline):
            allowed = " (tab and newlines are allowed)" if multiline else ""
            self.add(field, f"must not contain control characters{allowed}")

    def enum(
        self, field: str, value: int, mapping: Mapping[int, _E], required: bool = True
    ) -> _E | None:
        if value in mapping:
            return mapping[value]
        if value == 0:
            if required:
                self.add(field, f"required: one of {_names(mapping, field)}")
            return None
        self.add(field, f"unknown value {value}; expected one of {_names(mapping, field)}")
        return None


_ENUM_OF_FIELD = {
    "channel": "Channel",
    "scope.channel": "Channel",
    "direction": "Direction",
    "reason": "Reason",
    "source": "Source",
    "action": "DndAction",
    "send_kind": "SendKind",
}


def _names(mapping: Mapping[int, object], field: str) -> str:
    values = pb.DESCRIPTOR.enum_types_by_name[_ENUM_OF_FIELD[field]].values_by_number
    return ", ".join(values[v].name for v in mapping)


def _has_control(value: str, allow_whitespace: bool) -> bool:
    for ch in value:
        if unicodedata.category(ch) == "Cc" and not (allow_whitespace and ch in "\t\n\r"):
            return True
    return False


def contact_key(
    v: Violations, request: pb.GetStatusRequest | pb.SetDndRequest | pb.CheckSendRequest
) -> None:
    v.identifier("location_id", request.location_id)
    v.identifier("contact_id", request.contact_id)


def get_status(request: pb.GetStatusRequest) -> tuple[str, str]:
    v = Violations()
    contact_key(v, request)
    v.raise_if_any()
    return request.location_id, request.contact_id


_ACTIONS: dict[int, Action] = {
    pb.DND_ACTION_ENABLE: Action.ENABLE,
    pb.DND_ACTION_DISABLE: Action.DISABLE,
}
_SEND_KINDS: dict[int, str] = {pb.SEND_KIND_MANUAL: "MANUAL", pb.SEND_KIND_AUTOMATED: "AUTOMATED"}


def check_send(request: pb.CheckSendRequest) -> tuple[str, str, Channel, Direction]:
    v = Violations()
    contact_key(v, request)
    channel = v.enum("channel", request.channel, CHANNEL_FROM_PB)
    direction = v.enum("direction", request.direction, DIRECTION_FROM_PB, required=False)
    v.enum("send_kind", request.send_kind, _SEND_KINDS, required=False)
    v.raise_if_any()
    assert channel is not None
    return request.location_id, request.contact_id, channel, direction or Direction.OUTBOUND


def _scope(v: Violations, request: pb.SetDndRequest, direction: Direction | None) -> Scope:
    kind = request.scope.WhichOneof("kind") if request.HasField("scope") else None
    if kind == "all_channels" and not request.scope.all_channels:
        v.add("scope.all_channels", "must be true when set; to name one channel set scope.channel")
        return None
    if kind == "channel":
        channel = v.enum("scope.channel", request.scope.channel, CHANNEL_FROM_PB)
        if direction is Direction.INBOUND and channel is not None:
            v.add(
                "scope",
                "inbound DND covers calls and SMS together and cannot name a channel; "
                "leave scope unset or set all_channels",
            )
        return channel
    if kind is None and direction is Direction.OUTBOUND:
        v.add("scope", "required for OUTBOUND: set scope.channel or scope.all_channels")
    return None


def set_dnd(request: pb.SetDndRequest) -> SetDndCommand:
    v = Violations()
    contact_key(v, request)
    action = v.enum("action", request.action, _ACTIONS)
    direction = v.enum("direction", request.direction, DIRECTION_FROM_PB)
    scope = _scope(v, request, direction)
    reason: Reason | None = v.enum("reason", request.reason, REASON_FROM_PB, required=False)
    source = v.enum("source", request.source, SOURCE_FROM_PB)
    v.text("actor_id", request.actor_id, ACTOR_MAX)
    v.text("note", request.note, NOTE_MAX, multiline=True)
    v.text("evidence", request.evidence, EVIDENCE_MAX, multiline=True)
    v.text("provider_detail", request.provider_detail, DETAIL_MAX)
    if request.HasField("expected_version") and request.expected_version < 0:
        v.add("expected_version", "must be >= 0")
    if action is Action.ENABLE:
        reason = reason or Reason.MANUAL
    scope_ok = not any(x.field.startswith("scope") for x in v.items)
    if direction is not None and scope_ok and reason is not None:
        # Checked together with the field problems, so all are reported at once.
        if action is Action.ENABLE or scope is not None:
            try:
                validate_block_shape(direction, scope, reason)
            except InvalidArgument as error:
                v.items.extend(error.violations)
    v.raise_if_any()
    assert action is not None and direction is not None and source is not None
    return SetDndCommand(
        location_id=request.location_id,
        contact_id=request.contact_id,
        action=action,
        direction=direction,
        scope=scope,
        reason=reason,
        meta=ChangeMeta(
            source=source,
            actor_id=request.actor_id,
            note=request.note,
            evidence=request.evidence,
            provider_detail=request.provider_detail,
        ),
        suppression_removal_confirmed=request.suppression_removal_confirmed,
        expected_version=request.expected_version if request.HasField("expected_version") else None,
    )
