"""Request validation: each RPC's request checked field by field and turned into what its use
case takes (a command, a query, a watch filter or plain arguments). The problems of a request
are reported together, in one InvalidArgument naming each field (an UpdateKeywordSettings
request's words are checked once its location is valid)."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Protocol, TypeVar

from dnd.v1 import dnd_pb2 as pb

from dnd_server.cursor import decode_cursor, decode_page_token
from dnd_server.domain.addresses import MAX_ADDRESS_LENGTH, MAX_EMAIL_TEXT, normalize_address
from dnd_server.domain.consent import (
    DEFAULT_DOUBLE_OPT_IN_WINDOW,
    EVIDENCE_LIMITS,
    MARKETING_ONLY_REASONS,
    ChannelPolicy,
    ConsentEvidence,
    ConsentKind,
    ConsentPolicy,
    ConsentRecord,
    Purpose,
    validate_policy,
)
from dnd_server.domain.erasure import named_addresses, validate_reference
from dnd_server.domain.errors import FieldViolation, InvalidArgument
from dnd_server.domain.expiry import BlockExpiry, expiry_of
from dnd_server.domain.keywords import KeywordSettings, LanguageWordsInput, validate_settings
from dnd_server.domain.model import Channel, Direction, Reason, Scope, Source
from dnd_server.domain.provider_events import (
    OVERRIDES_MAX,
    EmailEvent,
    Override,
    OverrideInput,
    normalise_provider,
    valid_provider_name,
    validate_overrides,
)
from dnd_server.domain.quiet_hours import (
    QuietHoursSettings,
    Window,
    is_zone,
    parse_window_time,
)
from dnd_server.domain.replies import ComplianceReplies, ReplyTexts, validate_replies
from dnd_server.domain.rules import validate_block_shape
from dnd_server.lanes import Position
from dnd_server.records import Addresses, BlockKey, ChangeMeta, ListFilter, SuppressionKey
from dnd_server.rpc import page_tokens
from dnd_server.rpc.convert import (
    CHANGE_KIND_FROM_PB,
    CHANNEL_FROM_PB,
    CONSENT_KIND_FROM_PB,
    CONSENT_METHOD_FROM_PB,
    CONSENT_PURPOSE_FROM_PB,
    DIRECTION_FROM_PB,
    IMPLIED_BASIS_FROM_PB,
    PURPOSE_FROM_PB,
    REASON_FROM_PB,
    SOURCE_FROM_PB,
)
from dnd_server.service import (
    Action,
    EraseCommand,
    ExportStart,
    HistoryQuery,
    InboundMessage,
    ProviderEvent,
    ReadOptions,
    RecordConsentCommand,
    RevokeConsentCommand,
    SendTiming,
    SetDndCommand,
    email_event_effect,
    sms_failure_effect,
)
from dnd_server.watch import WatchFilter

ID_MAX = 128
KEY_MAX = 128
# The longest message any channel carries: WhatsApp's 4,096 (SMS stops at 1,600, ten segments).
BODY_MAX = 4096
PROVIDER_MAX = 64
ERROR_CODE_MAX = 32
DELIVERY_CODE_MAX = 64
ADDRESSES_MAX = 20
PAGE_SIZE_DEFAULT = 50
PAGE_SIZE_MAX = 500
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
        elif value != value.strip():
            self.add(field, "must not start or end with whitespace")
        elif (hidden := _invisible(value)) is not None:
            self.add(
                field,
                f"must not contain invisible characters ({hidden}): an id must be what it "
                "looks like",
            )

    def text(self, field: str, value: str, limit: int, multiline: bool = False) -> None:
        if len(value) > limit:
            self.add(field, f"{len(value)} characters; at most {limit} allowed")
        elif _has_control(value, allow_whitespace=multiline):
            allowed = " (tab and newlines are allowed)" if multiline else ""
            self.add(field, f"must not contain control characters{allowed}")

    def address(self, field: str, channel: Channel | None, raw: str, region: str) -> str:
        """The normalised address; "" when none is given, or when it is unusable (with a
        violation) or its channel unknown (the channel's own violation says so)."""
        if not raw:
            return ""
        if channel is None:
            return ""
        try:
            return normalize_address(channel, raw, region, field)
        except InvalidArgument as error:
            self.items.extend(error.violations)
            return ""

    def provider_address(
        self, field: str, channel: Channel | None, raw: str, region: str
    ) -> tuple[str, tuple[FieldViolation, ...]]:
        """An address a provider reported: (its key, ()) or, when it reads as no address,
        ("", why) for the service to judge (an opt-out still acts on the contact). Text no
        request may carry, too long or with control characters, is a violation here."""
        limit = MAX_EMAIL_TEXT if channel is Channel.EMAIL else MAX_ADDRESS_LENGTH
        if len(raw) > limit:
            self.add(field, f"at most {limit} characters")
            return "", ()
        if _CONTROL.search(raw.strip()):
            self.add(field, "must not contain control characters")
            return "", ()
        unread = Violations()
        return unread.address(field, channel, raw, region), tuple(unread.items)

    def idempotency_key(self, value: str) -> None:
        if len(value) > KEY_MAX:
            self.add("idempotency_key", f"{len(value)} characters; at most {KEY_MAX} allowed")
        elif _has_control(value, allow_whitespace=False):
            self.add("idempotency_key", "must not contain control characters")

    def enum(
        self,
        field: str,
        value: int,
        mapping: Mapping[int, _E],
        required: bool = True,
        enum_name: str = "",
    ) -> _E | None:
        """The value of an enum field; ``enum_name`` names its protobuf enum where the
        field's name does not (``_ENUM_OF_FIELD``)."""
        if value in mapping:
            return mapping[value]
        if value == 0:
            if required:
                self.add(field, f"required: one of {_names(mapping, field, enum_name)}")
            return None  # an optional field left unset: the hot path, nothing to build
        self.add(
            field, f"unknown value {value}; expected one of {_names(mapping, field, enum_name)}"
        )
        return None


_ENUM_OF_FIELD = {
    "channels": "Channel",
    "directions": "Direction",
    "sources": "Source",
    "event": "EmailEvent",
    "channel": "Channel",
    "scope.channel": "Channel",
    "direction": "Direction",
    "reason": "Reason",
    "source": "Source",
    "action": "DndAction",
    "send_kind": "SendKind",
    "purpose": "Purpose",
}


def _names(mapping: Mapping[int, object], field: str, enum_name: str = "") -> str:
    enum_name = enum_name or _ENUM_OF_FIELD[field.split("[")[0]]
    values = pb.DESCRIPTOR.enum_types_by_name[enum_name].values_by_number
    return ", ".join(values[v].name for v in mapping)


# Unicode category Cc (control characters) is exactly these two ranges.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_WHITESPACE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def _has_control(value: str, allow_whitespace: bool) -> bool:
    pattern = _CONTROL_BUT_WHITESPACE if allow_whitespace else _CONTROL
    return pattern.search(value) is not None


# Format characters (zero-width spaces and joiners, bidi controls, soft hyphen, BOM, tags...)
# and line / paragraph separators: invisible, they make two different ids look the same.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Zl", "Zp"})


def _invisible(value: str) -> str | None:
    """The first invisible character of ``value`` as ``U+200B ZERO WIDTH SPACE``, or None."""
    if value.isascii():  # the common case: ASCII holds no such character
        return None
    for char in value:
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            return f"U+{ord(char):04X} {unicodedata.name(char, '')}".rstrip()
    return None


class _Keyed(Protocol):
    @property
    def location_id(self) -> str: ...
    @property
    def contact_id(self) -> str: ...


def contact_key(v: Violations, request: _Keyed) -> None:
    v.identifier("location_id", request.location_id)
    v.identifier("contact_id", request.contact_id)


def read_options(v: Violations, min_cursor: str, fully_consistent: bool) -> ReadOptions:
    min_seq: Position | None = None
    if min_cursor:
        try:
            min_seq = decode_cursor(min_cursor, "min_cursor")
        except InvalidArgument as error:
            v.items.extend(error.violations)
    return ReadOptions(min_seq=min_seq, consistent=fully_consistent)


def get_status(
    request: pb.GetStatusRequest, region: str
) -> tuple[str, str, Addresses, ReadOptions]:
    v = Violations()
    contact_key(v, request)
    options = read_options(v, request.min_cursor, request.fully_consistent)
    addresses: list[tuple[Channel, str]] = []
    for field, channel, values in (
        ("phone_numbers", Channel.SMS, request.phone_numbers),
        ("email_addresses", Channel.EMAIL, request.email_addresses),
    ):
        if len(values) > ADDRESSES_MAX:
            v.add(field, f"at most {ADDRESSES_MAX} addresses")
            continue
        for i, raw in enumerate(values):
            address = v.address(f"{field}[{i}]", channel, raw, region)
            if address:
                addresses.append((channel, address))
            elif not raw:
                v.add(f"{field}[{i}]", "must not be empty")
    v.raise_if_any()
    return request.location_id, request.contact_id, sorted(set(addresses)), options


_ACTIONS: dict[int, Action] = {
    pb.DND_ACTION_ENABLE: Action.ENABLE,
    pb.DND_ACTION_DISABLE: Action.DISABLE,
}
_SEND_KINDS: dict[int, str] = {pb.SEND_KIND_MANUAL: "MANUAL", pb.SEND_KIND_AUTOMATED: "AUTOMATED"}


def check_send(
    request: pb.CheckSendRequest, region: str
) -> tuple[str, str, Channel, Direction, str, ReadOptions, Purpose | None]:
    """(location, contact, channel, direction, address, read options, purpose or None)."""
    v = Violations()
    contact_key(v, request)
    options = read_options(v, request.min_cursor, request.fully_consistent)
    channel = v.enum("channel", request.channel, CHANNEL_FROM_PB)
    direction = v.enum("direction", request.direction, DIRECTION_FROM_PB, required=False)
    v.enum("send_kind", request.send_kind, _SEND_KINDS, required=False)
    purpose = v.enum("purpose", request.purpose, PURPOSE_FROM_PB, required=False)
    address = v.address("address", channel, request.address, region)
    v.raise_if_any()
    assert channel is not None
    return (
        request.location_id,
        request.contact_id,
        channel,
        direction or Direction.OUTBOUND,
        address,
        options,
        purpose,
    )


BATCH_MAX = 1000


def batch_check_send(
    request: pb.BatchCheckSendRequest, region: str
) -> tuple[str, Channel, Direction, list[tuple[str, str]], ReadOptions, Purpose | None]:
    """(location, channel, direction, (contact, address) targets, read options, purpose)."""
    v = Violations()
    v.identifier("location_id", request.location_id)
    channel = v.enum("channel", request.channel, CHANNEL_FROM_PB)
    direction = v.enum("direction", request.direction, DIRECTION_FROM_PB, required=False)
    v.enum("send_kind", request.send_kind, _SEND_KINDS, required=False)
    purpose = v.enum("purpose", request.purpose, PURPOSE_FROM_PB, required=False)
    if purpose is Purpose.COMPLIANCE_REPLY:
        v.add(
            "purpose",
            "COMPLIANCE_REPLY is not checked in batches: the one reply after an opt-out is "
            "one contact's answer; ask CheckSend for it",
        )
    options = read_options(v, request.min_cursor, request.fully_consistent)
    targets: list[tuple[str, str]] = []
    if not request.targets:
        v.add("targets", f"required: 1 to {BATCH_MAX} contacts")
    elif len(request.targets) > BATCH_MAX:
        v.add("targets", f"{len(request.targets)} contacts; at most {BATCH_MAX} per request")
    else:
        for i, target in enumerate(request.targets):
            v.identifier(f"targets[{i}].contact_id", target.contact_id)
            address = v.address(f"targets[{i}].address", channel, target.address, region)
            targets.append((target.contact_id, address))
    v.raise_if_any()
    assert channel is not None
    return (
        request.location_id,
        channel,
        direction or Direction.OUTBOUND,
        targets,
        options,
        purpose,
    )


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


def set_dnd(request: pb.SetDndRequest, region: str) -> SetDndCommand:
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
    v.idempotency_key(request.idempotency_key)
    address = ""
    if request.address:
        if direction is Direction.INBOUND or scope is None:
            v.add("address", "an address needs an outbound scope naming one channel")
        else:
            address = v.address("address", scope, request.address, region)
    marketing_only = request.HasField("scope") and request.scope.marketing_only
    if marketing_only:
        reason = _marketing_only(v, action, direction, reason)
    if action is Action.ENABLE:
        reason = reason or Reason.MANUAL
    scope_ok = not any(x.field.startswith("scope") for x in v.items)
    shape_known = direction is not None and scope_ok and reason is not None
    # Checked together with the field problems, so all are reported at once.
    if shape_known and (action is Action.ENABLE or scope is not None):
        assert direction is not None and reason is not None
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
        address=address,
        marketing_only=marketing_only,
    )


def _marketing_only(
    v: Violations, action: Action | None, direction: Direction | None, reason: Reason | None
) -> Reason | None:
    """The reason of a marketing-only SetDnd: ENABLE's defaults to MARKETING_OPT_OUT; either
    action's must be a marketing-only one."""
    if direction is Direction.INBOUND:
        v.add(
            "scope.marketing_only",
            "marketing-only opt-outs are outbound; inbound DND cannot be marketing only",
        )
    if reason is not None and reason not in MARKETING_ONLY_REASONS:
        names = ", ".join(sorted(r.value for r in MARKETING_ONLY_REASONS))
        v.add(
            "reason",
            f"{reason.value} is not a marketing-only reason: with scope.marketing_only leave "
            f"the reason unspecified or use one of {names}",
        )
        return None
    if action is Action.ENABLE and reason is None:
        return Reason.MARKETING_OPT_OUT
    return reason


def inbound_message(request: pb.ProcessInboundMessageRequest, region: str) -> InboundMessage:
    v = Violations()
    contact_key(v, request)
    channel = v.enum("channel", request.channel, CHANNEL_FROM_PB)
    if len(request.body) > BODY_MAX:
        v.add("body", f"{len(request.body)} characters; at most {BODY_MAX} allowed")
    elif "\x00" in request.body:
        v.add("body", "must not contain NUL characters")
    # A sender that is no number does not make the message invalid: an opt-out must act
    # whatever the provider wrote there (the service refuses anything else with it).
    from_address, unread_sender = v.provider_address(
        "from_address", channel, request.from_address, region
    )
    v.idempotency_key(request.idempotency_key)
    v.raise_if_any()
    assert channel is not None
    return InboundMessage(
        request.location_id,
        request.contact_id,
        channel,
        request.body,
        from_address,
        unread_sender=unread_sender,
    )


def _provider(v: Violations, provider: str) -> None:
    if not provider:
        v.add("provider", f"required: the provider's name, 1 to {PROVIDER_MAX} characters")
    else:
        v.text("provider", provider, PROVIDER_MAX)


def sms_failure(request: pb.ReportSmsDeliveryFailureRequest, region: str) -> ProviderEvent:
    v = Violations()
    contact_key(v, request)
    _provider(v, request.provider)
    code = request.error_code.strip()
    if not code:
        v.add("error_code", "required: the provider's error code, e.g. 30004")
    else:
        v.text("error_code", request.error_code, ERROR_CODE_MAX)
    # An address that reads as none does not stop a block (ProviderEvent.unread_address).
    address, unread = v.provider_address("to_address", Channel.SMS, request.to_address, region)
    v.idempotency_key(request.idempotency_key)
    v.raise_if_any()
    return ProviderEvent(
        location_id=request.location_id,
        contact_id=request.contact_id,
        channel=Channel.SMS,
        provider=request.provider,
        detail=f"error_code:{code}",
        effect=sms_failure_effect(code),
        address=address,
        # Resolved in Twilio's numbering, whichever provider it names (and the location's
        # overrides of it).
        code=code,
        table="twilio",
        unread_address=unread,
    )


_EMAIL_EVENTS: dict[int, EmailEvent] = {
    pb.EmailEvent.Value(f"EMAIL_EVENT_{e.value}"): e for e in EmailEvent
}


def email_event(request: pb.ReportEmailEventRequest, region: str) -> ProviderEvent:
    v = Violations()
    contact_key(v, request)
    _provider(v, request.provider)
    event = v.enum("event", request.event, _EMAIL_EVENTS)
    v.text("provider_detail", request.provider_detail, DETAIL_MAX)
    # An address that reads as none does not stop a block (ProviderEvent.unread_address).
    address, unread = v.provider_address("to_address", Channel.EMAIL, request.to_address, region)
    v.idempotency_key(request.idempotency_key)
    v.raise_if_any()
    assert event is not None
    effect = email_event_effect(event, request.marketing_stream)
    detail = f"email_event:{event.value}"
    if effect is not None and effect[0] in MARKETING_ONLY_REASONS:
        detail += " marketing_stream"
    if request.provider_detail:
        detail += f" {request.provider_detail}"
    return ProviderEvent(
        location_id=request.location_id,
        contact_id=request.contact_id,
        channel=Channel.EMAIL,
        provider=request.provider,
        detail=detail,
        effect=effect,
        address=address,
        unread_address=unread,
    )


def delivery_event(request: pb.ReportDeliveryEventRequest, region: str) -> ProviderEvent:
    """A messaging provider's event, still to resolve (``DndService.resolve_event``): the
    provider's name normalised (lower case, aliases resolved), the code as given."""
    v = Violations()
    contact_key(v, request)
    channel = v.enum("channel", request.channel, CHANNEL_FROM_PB)
    provider = _provider_name(v, "provider", request.provider)
    code = _code(v, "code", request.code)
    # An address that reads as none does not stop a block (ProviderEvent.unread_address).
    address, unread = v.provider_address("address", channel, request.address, region)
    v.idempotency_key(request.idempotency_key)
    v.raise_if_any()
    assert channel is not None
    return ProviderEvent(
        location_id=request.location_id,
        contact_id=request.contact_id,
        channel=channel,
        provider=provider,
        detail=f"delivery_event:{code}",
        effect=None,
        address=address,
        code=code,
        unread_address=unread,
    )


def _provider_name(v: Violations, field: str, raw: str) -> str:
    """A provider's name, normalised (``normalise_provider``); refused when empty, too long,
    with control or invisible characters, or with characters a name has not."""
    if not raw.strip():
        v.add(field, f"required: the provider's name, 1 to {PROVIDER_MAX} characters")
        return ""
    if len(raw) > PROVIDER_MAX:
        v.add(field, f"{len(raw)} characters; at most {PROVIDER_MAX} allowed")
        return ""
    name = normalise_provider(raw)
    if _has_control(raw, allow_whitespace=False) or _invisible(raw) is not None:
        v.add(field, "must not contain control or invisible characters")
    elif not valid_provider_name(name):
        v.add(field, "a provider's name is ASCII letters, digits, spaces, '.', '_' and '-'")
    return name


def _code(v: Violations, field: str, code: str) -> str:
    if not code.strip():
        v.add(
            field,
            "required: the provider's error code or event name, e.g. 131050 or "
            "user_preferences:stop_marketing",
        )
    elif code != code.strip():
        v.add(field, "must not start or end with whitespace")
    elif len(code) > DELIVERY_CODE_MAX:
        v.add(field, f"{len(code)} characters; at most {DELIVERY_CODE_MAX} allowed")
    elif _has_control(code, allow_whitespace=False) or _invisible(code) is not None:
        v.add(field, "must not contain control or invisible characters")
    return code


def get_delivery_mappings(request: pb.GetDeliveryEventMappingsRequest) -> tuple[str, str]:
    """(location, provider normalised or "" for every provider)."""
    v = Violations()
    location(v, request.location_id)
    provider = _provider_name(v, "provider", request.provider) if request.provider else ""
    v.raise_if_any()
    return request.location_id, provider


def update_delivery_mappings(
    request: pb.UpdateDeliveryEventMappingsRequest,
) -> tuple[str, tuple[Override, ...]]:
    """(location, its new overrides): each field checked here, what each override may map to
    by the domain (``validate_overrides``), every problem named together."""
    v = Violations()
    location(v, request.location_id)
    if len(request.overrides) > OVERRIDES_MAX:
        v.add("overrides", f"{len(request.overrides)} overrides; at most {OVERRIDES_MAX}")
        v.raise_if_any()
    items: list[OverrideInput] = []
    for i, item in enumerate(request.overrides):
        at = f"overrides[{i}]"
        before = len(v.items)
        provider = _provider_name(v, f"{at}.provider", item.provider)
        code = _code(v, f"{at}.code", item.code)
        channel = v.enum(f"{at}.channel", item.channel, CHANNEL_FROM_PB, enum_name="Channel")
        reason = v.enum(
            f"{at}.reason", item.reason, REASON_FROM_PB, required=False, enum_name="Reason"
        )
        if len(v.items) == before:
            items.append(OverrideInput(provider, code, channel, reason, item.ignore))
    v.raise_if_any()
    return request.location_id, validate_overrides(items)


def list_history(request: pb.ListHistoryRequest, region: str) -> HistoryQuery:
    """A contact's history (contact_id), or an address's (address and channel)."""
    v = Violations()
    v.identifier("location_id", request.location_id)
    by_address = bool(request.address or request.channel)
    channel: Channel | None = None
    address = ""
    if by_address and request.contact_id:
        field = "address" if request.address else "channel"
        v.add(field, "give either contact_id, or address and channel, not both")
        v.identifier("contact_id", request.contact_id)
    elif by_address:
        channel = v.enum("channel", request.channel, CHANNEL_FROM_PB)
        if not request.address:
            v.add("address", "required with channel: the address whose history to list")
        else:
            address = v.address("address", channel, request.address, region)
    else:
        v.identifier("contact_id", request.contact_id)
    size = request.page_size or PAGE_SIZE_DEFAULT
    if not 1 <= size <= PAGE_SIZE_MAX:
        v.add("page_size", f"must be between 1 and {PAGE_SIZE_MAX} (0 means {PAGE_SIZE_DEFAULT})")
    before = 2**63 - 1
    if request.page_token:
        try:
            before = decode_page_token(request.page_token)
        except InvalidArgument as error:
            v.items.extend(error.violations)
    v.raise_if_any()
    return HistoryQuery(request.location_id, request.contact_id, channel, address, before, size)


def location(v: Violations, location_id: str) -> None:
    v.identifier("location_id", location_id)


def get_keyword_settings(request: pb.GetKeywordSettingsRequest) -> str:
    v = Violations()
    location(v, request.location_id)
    v.raise_if_any()
    return request.location_id


def update_keyword_settings(request: pb.UpdateKeywordSettingsRequest) -> KeywordSettings:
    v = Violations()
    location(v, request.location_id)
    v.raise_if_any()
    settings = request.settings
    return validate_settings(
        settings.extra_opt_out_words,
        settings.extra_opt_in_words,
        settings.detect_revocation_phrases,
        settings.languages,
        settings.default_language,
        [
            LanguageWordsInput(w.language, list(w.opt_out_words), list(w.opt_in_words))
            for w in settings.language_words
        ],
        settings.share_rcs_sms_opt_outs,
    )


def get_compliance_replies(request: pb.GetComplianceRepliesRequest) -> str:
    v = Violations()
    location(v, request.location_id)
    v.raise_if_any()
    return request.location_id


def update_compliance_replies(request: pb.UpdateComplianceRepliesRequest) -> ComplianceReplies:
    v = Violations()
    location(v, request.location_id)
    v.raise_if_any()
    return validate_replies(
        request.brand_name,
        request.support_contact,
        [
            ReplyTexts(t.language, t.opt_out_confirmation, t.opt_in_confirmation, t.help)
            for t in request.texts
        ],
    )


WATCH_LOCATIONS_MAX = 1000


WATCH_BATCH_MAX = 1000


def watch(request: pb.WatchChangesRequest) -> tuple[WatchFilter, Position | None, str, int]:
    """(filter, after position or None for "from now", the cursor text, events per
    message)."""
    v = Violations()
    if request.max_events_per_message > WATCH_BATCH_MAX:
        v.add(
            "max_events_per_message",
            f"at most {WATCH_BATCH_MAX} events per message (0 or 1: one per message)",
        )
    if len(request.location_ids) > WATCH_LOCATIONS_MAX:
        v.add("location_ids", f"at most {WATCH_LOCATIONS_MAX} locations")
    for i, location_id in enumerate(request.location_ids):
        v.identifier(f"location_ids[{i}]", location_id)
    channels = {
        v.enum(f"channels[{i}]", c, CHANNEL_FROM_PB) for i, c in enumerate(request.channels)
    }
    directions = {
        v.enum(f"directions[{i}]", d, DIRECTION_FROM_PB) for i, d in enumerate(request.directions)
    }
    sources = {v.enum(f"sources[{i}]", x, SOURCE_FROM_PB) for i, x in enumerate(request.sources)}
    kinds = {
        v.enum(f"kinds[{i}]", k, CHANGE_KIND_FROM_PB, enum_name="ChangeKind")
        for i, k in enumerate(request.kinds)
    }
    after: Position | None = None
    if request.after_cursor:
        try:
            after = decode_cursor(request.after_cursor, "after_cursor")
        except InvalidArgument as error:
            v.items.extend(error.violations)
    v.raise_if_any()
    flt = WatchFilter(
        locations=frozenset(request.location_ids),
        channels=frozenset(c for c in channels if c is not None),
        directions=frozenset(d for d in directions if d is not None),
        sources=frozenset(x for x in sources if x is not None),
        kinds=frozenset(k for k in kinds if k is not None),
    )
    return flt, after, request.after_cursor, max(1, request.max_events_per_message)


# --- consent ---------------------------------------------------------------------------------

CONSENT_SOURCE_MAX = 256
# The window is checked by the domain (validate_policy); past this it is no length of time.
_WINDOW_SECONDS_MAX = 10**9


def _timestamp(v: Violations, field: str, message: Any) -> dt.datetime | None:
    """The time of a Timestamp field (None when unset), refused when no real time."""
    if not message.HasField(field):
        return None
    value = getattr(message, field)
    if not _TIMESTAMP_MIN <= value.seconds <= _TIMESTAMP_MAX or not 0 <= value.nanos < 10**9:
        v.add(field, "not a valid time: between 0001-01-01 and 9999-12-31 (RFC 3339)")
        return None
    when: dt.datetime = value.ToDatetime(tzinfo=dt.UTC)
    return when


# The range of google.protobuf.Timestamp: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
_TIMESTAMP_MIN = -62_135_596_800
_TIMESTAMP_MAX = 253_402_300_799


def _evidence(v: Violations, request: pb.RecordConsentRequest) -> ConsentEvidence:
    """The evidence, refused with control characters (lengths are the domain's rule:
    ``ConsentEvidence.violations``)."""
    proof = request.evidence
    values = {name: getattr(proof, name) for name in EVIDENCE_LIMITS}
    for name, value in values.items():
        multiline = name == "disclosure_text"
        if _has_control(value, allow_whitespace=multiline):
            allowed = " (tab and newlines are allowed)" if multiline else ""
            v.add(f"evidence.{name}", f"must not contain control characters{allowed}")
    return ConsentEvidence(**values)


def record_consent(
    request: pb.RecordConsentRequest, region: str, now: dt.datetime
) -> RecordConsentCommand:
    """A RecordConsent, every field checked (the consent's own rules at ``now``:
    ``ConsentRecord.violations``)."""
    v = Violations()
    contact_key(v, request)
    channel = v.enum("channel", request.channel, CHANNEL_FROM_PB)
    purpose = v.enum(
        "purpose", request.purpose, CONSENT_PURPOSE_FROM_PB, enum_name="ConsentPurpose"
    )
    method = v.enum("method", request.method, CONSENT_METHOD_FROM_PB, enum_name="ConsentMethod")
    kind = v.enum(
        "kind", request.kind, CONSENT_KIND_FROM_PB, required=False, enum_name="ConsentKind"
    )
    basis = v.enum(
        "implied_basis",
        request.implied_basis,
        IMPLIED_BASIS_FROM_PB,
        required=False,
        enum_name="ImpliedBasis",
    )
    source = v.enum("source", request.source, SOURCE_FROM_PB)
    address = v.address("address", channel, request.address, region)
    captured_at = _timestamp(v, "captured_at", request)
    expires_at = _timestamp(v, "expires_at", request)
    v.text("actor_id", request.actor_id, ACTOR_MAX)
    evidence = _evidence(v, request)
    if _has_control(request.consent_source, allow_whitespace=False):
        v.add("consent_source", "must not contain control characters")
    if request.HasField("expected_version") and request.expected_version < 0:
        v.add("expected_version", "must be >= 0")
    v.idempotency_key(request.idempotency_key)
    record = None
    if channel is not None and purpose is not None and method is not None and source:
        record = ConsentRecord(
            channel=channel,
            purpose=purpose,
            method=method,
            kind=kind or ConsentKind.EXPRESS,
            source=source,
            address=address,
            actor_id=request.actor_id,
            evidence=evidence,
            implied_basis=basis,
            captured_at=captured_at,
            expires_at=expires_at,
            pending=request.pending,
            consent_source=request.consent_source,
        )
        v.items.extend(record.violations(now))
    v.raise_if_any()
    assert record is not None and source is not None
    return RecordConsentCommand(
        location_id=request.location_id,
        contact_id=request.contact_id,
        record=record,
        meta=ChangeMeta(source=source, actor_id=request.actor_id),
        expected_version=request.expected_version if request.HasField("expected_version") else None,
    )


def revoke_consent(request: pb.RevokeConsentRequest, region: str) -> RevokeConsentCommand:
    v = Violations()
    contact_key(v, request)
    channel = v.enum("channel", request.channel, CHANNEL_FROM_PB)
    purpose = v.enum(
        "purpose",
        request.purpose,
        CONSENT_PURPOSE_FROM_PB,
        required=False,
        enum_name="ConsentPurpose",
    )
    source = v.enum("source", request.source, SOURCE_FROM_PB)
    if source is Source.SYSTEM:
        v.add(
            "source",
            "SYSTEM may not revoke consent by hand: a provider's opt-out revokes it; revoke as "
            "USER, WORKFLOW, CONTACT or SUPPORT",
        )
    address = v.address("address", channel, request.address, region)
    v.text("actor_id", request.actor_id, ACTOR_MAX)
    v.text("note", request.note, NOTE_MAX, multiline=True)
    v.idempotency_key(request.idempotency_key)
    v.raise_if_any()
    assert channel is not None and source is not None
    return RevokeConsentCommand(
        location_id=request.location_id,
        contact_id=request.contact_id,
        channel=channel,
        purpose=purpose,
        address=address,
        meta=ChangeMeta(source=source, actor_id=request.actor_id, note=request.note),
    )


def get_consent_policy(request: pb.GetConsentPolicyRequest) -> str:
    v = Violations()
    location(v, request.location_id)
    v.raise_if_any()
    return request.location_id


def update_consent_policy(request: pb.UpdateConsentPolicyRequest) -> ConsentPolicy:
    """The new policy: one entry per channel, INFORMATIONAL only with MARKETING, a window of
    1 minute to 30 days (``validate_policy``), each problem named by its field."""
    v = Violations()
    location(v, request.location_id)
    policy = request.policy
    channels: dict[Channel, ChannelPolicy] = {}
    # The domain's names of the fields it checks -> the request's.
    fields = {"double_opt_in_window": "policy.double_opt_in_window_seconds"}
    for i, entry in enumerate(policy.channels):
        field = f"policy.channels[{i}]"
        channel = v.enum(f"{field}.channel", entry.channel, CHANNEL_FROM_PB, enum_name="Channel")
        if channel is None:
            continue
        if channel in channels:
            v.add(f"{field}.channel", f"{channel.value} is listed more than once")
            continue
        channels[channel] = ChannelPolicy(
            marketing=entry.require_marketing, informational=entry.require_informational
        )
        fields[f"channels[{channel.value}].informational"] = f"{field}.require_informational"
    seconds = policy.double_opt_in_window_seconds
    window = DEFAULT_DOUBLE_OPT_IN_WINDOW
    if not 0 <= seconds <= _WINDOW_SECONDS_MAX:
        v.add(
            "policy.double_opt_in_window_seconds",
            "must be between 60 and 2592000 seconds (0 means 86400)",
        )
    elif seconds:
        window = dt.timedelta(seconds=seconds)
    domain = ConsentPolicy(channels=channels, double_opt_in_window=window)
    try:
        validate_policy(domain)
    except InvalidArgument as error:
        v.items.extend(
            FieldViolation(fields.get(x.field, x.field), x.description) for x in error.violations
        )
    v.raise_if_any()
    return domain


# -- bulk writes, listings and the export ------------------------------------------------------

BULK_ITEMS_MAX = 10_000
LIST_PAGE_SIZE_DEFAULT = 100
LIST_PAGE_SIZE_MAX = 1000


def bulk_set_dnd(
    request: pb.BulkSetDndRequest, region: str
) -> tuple[list[SetDndCommand | None], dict[int, list[FieldViolation]]]:
    """The items of a BulkSetDnd as SetDnd commands, in order (None for an invalid item),
    and the problems of each invalid item, their fields as paths from the request
    (``items[3].scope.channel``). The request itself (location, key, item count) must be
    valid, or the whole call is INVALID_ARGUMENT."""
    v = Violations()
    location(v, request.location_id)
    v.idempotency_key(request.idempotency_key)
    count = len(request.items)
    if not 1 <= count <= BULK_ITEMS_MAX:
        v.add(
            "items",
            f"{count} items; a call takes 1 to {BULK_ITEMS_MAX:,} (split larger sets into "
            "several calls, each with its own idempotency key)",
        )
    v.raise_if_any()
    commands: list[SetDndCommand | None] = []
    invalid: dict[int, list[FieldViolation]] = {}
    # The command of each valid item but its contact, by that item's encoding without its
    # contact_id: an item differing from one met only in its contact is validated by its
    # contact_id alone (set_dnd reads the contact_id nowhere else).
    seen: dict[bytes, SetDndCommand] = {}
    for index, item in enumerate(request.items):
        problems: list[FieldViolation] = []
        if item.location_id and item.location_id != request.location_id:
            problems.append(
                FieldViolation(
                    "location_id",
                    "must be empty or the request's location_id: one call writes one location",
                )
            )
        if item.idempotency_key:
            problems.append(
                FieldViolation(
                    "idempotency_key",
                    "must be empty: the call's idempotency_key covers every item",
                )
            )
        command: SetDndCommand | None = None
        if not item.location_id:
            named = pb.SetDndRequest()
            named.CopyFrom(item)
            named.location_id = request.location_id
            item = named
        contact_id = item.contact_id
        key = b""
        if not problems:
            probe = pb.SetDndRequest()
            probe.CopyFrom(item)
            probe.ClearField("contact_id")
            key = probe.SerializeToString(deterministic=True)
            like = seen.get(key)
            if like is not None:
                check = Violations()
                check.identifier("contact_id", contact_id)
                if not check.items:
                    commands.append(replace(like, contact_id=contact_id))
                    continue
        try:
            command = set_dnd(item, region)
        except InvalidArgument as error:
            problems.extend(error.violations)
        else:
            if key and not problems:
                seen.setdefault(key, command)
        if problems:
            invalid[index] = [
                FieldViolation(f"items[{index}].{p.field}", p.description) for p in problems
            ]
            commands.append(None)
        else:
            commands.append(command)
    return commands, invalid


def suppression_filter(
    v: Violations, flt: pb.SuppressionFilter, region: str, field: str = "filter"
) -> ListFilter:
    channel = v.enum(
        f"{field}.channel", flt.channel, CHANNEL_FROM_PB, required=False, enum_name="Channel"
    )
    direction = v.enum(
        f"{field}.direction",
        flt.direction,
        DIRECTION_FROM_PB,
        required=False,
        enum_name="Direction",
    )
    reason = v.enum(
        f"{field}.reason", flt.reason, REASON_FROM_PB, required=False, enum_name="Reason"
    )
    source = v.enum(
        f"{field}.source", flt.source, SOURCE_FROM_PB, required=False, enum_name="Source"
    )
    times = Violations()
    since = _timestamp(times, "since", flt)
    until = _timestamp(times, "until", flt)
    v.items.extend(FieldViolation(f"{field}.{x.field}", x.description) for x in times.items)
    if since is not None and until is not None and until <= since:
        v.add(f"{field}.until", "must be after since")
    if flt.contact_id:
        v.identifier(f"{field}.contact_id", flt.contact_id)
    address = ""
    if flt.address:
        if flt.channel == pb.CHANNEL_UNSPECIFIED:
            v.add(f"{field}.address", "needs filter.channel: the channel says how to read it")
        else:
            address = v.address(f"{field}.address", channel, flt.address, region)
    return ListFilter(
        channel=channel,
        direction=direction,
        reason=reason,
        source=source,
        since=since,
        until=until,
        contact_id=flt.contact_id,
        address=address,
    )


def _page_size(v: Violations, size: int) -> int:
    if size == 0:
        return LIST_PAGE_SIZE_DEFAULT
    if not 1 <= size <= LIST_PAGE_SIZE_MAX:
        v.add(
            "page_size",
            f"must be between 1 and {LIST_PAGE_SIZE_MAX} (0 means {LIST_PAGE_SIZE_DEFAULT})",
        )
    return size


def list_blocks(
    request: pb.ListBlocksRequest, region: str
) -> tuple[ListFilter, BlockKey | None, int, str]:
    """(filter, key to list after or None, page size, the binding of its page tokens)."""
    v = Violations()
    location(v, request.location_id)
    flt = suppression_filter(v, request.filter, region)
    size = _page_size(v, request.page_size)
    bound = page_tokens.binding("blocks", request.location_id, request.filter)
    after: BlockKey | None = None
    if request.page_token:
        try:
            a, b, c, d = page_tokens.open_token("page_token", bound, request.page_token, 4)
            after = (a, b, c, d)
        except InvalidArgument as error:
            v.items.extend(error.violations)
    v.raise_if_any()
    return flt, after, size, bound


def list_suppressions(
    request: pb.ListSuppressionsRequest, region: str
) -> tuple[ListFilter, SuppressionKey | None, int, str]:
    v = Violations()
    location(v, request.location_id)
    flt = suppression_filter(v, request.filter, region)
    size = _page_size(v, request.page_size)
    bound = page_tokens.binding("suppressions", request.location_id, request.filter)
    after: SuppressionKey | None = None
    if request.page_token:
        try:
            a, b, c = page_tokens.open_token("page_token", bound, request.page_token, 3)
            after = (a, b, c)
        except InvalidArgument as error:
            v.items.extend(error.violations)
    v.raise_if_any()
    return flt, after, size, bound


def export_suppressions(
    request: pb.ExportSuppressionsRequest, region: str
) -> tuple[ListFilter, ExportStart, str]:
    """(filter, where to start, the binding of its resume tokens)."""
    v = Violations()
    location(v, request.location_id)
    flt = suppression_filter(v, request.filter, region)
    bound = page_tokens.binding(
        "export", request.location_id, request.filter, request.suppressions_only
    )
    start = ExportStart(blocks=not request.suppressions_only)
    if request.resume_token:
        try:
            phase, *key = page_tokens.open_token("resume_token", bound, request.resume_token, 5)
            if phase == "b":
                start = ExportStart(blocks=True, block_after=(key[0], key[1], key[2], key[3]))
            else:
                start = ExportStart(blocks=False, suppression_after=(key[0], key[1], key[2]))
        except InvalidArgument as error:
            v.items.extend(error.violations)
    v.raise_if_any()
    return flt, start, bound


# -- quiet hours -----------------------------------------------------------------------------

# A send_at this far in the past still counts as now (the caller's clock may lag the server's).
SEND_AT_TOLERANCE = dt.timedelta(minutes=5)
# Planned sends are asked about up to this far ahead.
SEND_AT_HORIZON = dt.timedelta(days=36525)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def _time_zone(v: Violations, field: str, name: str) -> str:
    if name and not is_zone(name):
        v.add(field, f"{name[:80]!r} is not an IANA time zone name (e.g. America/New_York)")
        return ""
    return name


def _send_at(v: Violations, request: Any, now: dt.datetime) -> dt.datetime | None:
    if not request.HasField("send_at"):
        return None
    stamp = request.send_at
    if not _TIMESTAMP_MIN <= stamp.seconds <= _TIMESTAMP_MAX or not 0 <= stamp.nanos < 10**9:
        v.add("send_at", "not a valid time: between 0001-01-01 and 9999-12-31 (RFC 3339)")
        return None
    # Timestamp.ToDatetime costs more than the rest of the check: the same instant, directly.
    send_at = _EPOCH + dt.timedelta(0, stamp.seconds, stamp.nanos // 1000)
    if send_at > now + SEND_AT_HORIZON:
        v.add("send_at", f"{send_at.isoformat()} is more than 100 years ahead")
    elif send_at < now - SEND_AT_TOLERANCE:
        v.add(
            "send_at",
            f"{send_at.isoformat()} is more than {int(SEND_AT_TOLERANCE.total_seconds() // 60)} "
            "minutes in the past; leave it unset to check a send now",
        )
    return send_at


def send_timing(request: pb.CheckSendRequest, now: dt.datetime) -> SendTiming:
    """A CheckSend's planned send time and recipient zone (both optional)."""
    if not request.time_zone and not request.HasField("send_at"):
        return _NOW  # the hot path: nothing to check
    v = Violations()
    zone = _time_zone(v, "time_zone", request.time_zone)
    send_at = _send_at(v, request, now)
    v.raise_if_any()
    return SendTiming(send_at=send_at, time_zone=zone)


_NOW = SendTiming()


def batch_timing(
    request: pb.BatchCheckSendRequest, now: dt.datetime
) -> tuple[SendTiming, list[str] | None]:
    """A BatchCheckSend's planned send time and default zone, and each target's zone ("":
    none of its own; None: no target names one, the common case)."""
    v = Violations()
    zone = _time_zone(v, "time_zone", request.time_zone)
    send_at = _send_at(v, request, now)
    named = [(i, t.time_zone) for i, t in enumerate(request.targets) if t.time_zone]
    zones = None
    if named:
        zones = [""] * len(request.targets)
        for i, name in named:
            zones[i] = _time_zone(v, f"targets[{i}].time_zone", name)
    v.raise_if_any()
    timing = _NOW if not zone and send_at is None else SendTiming(send_at, zone)
    return timing, zones


def get_quiet_hours_settings(request: pb.GetQuietHoursSettingsRequest) -> str:
    v = Violations()
    location(v, request.location_id)
    v.raise_if_any()
    return request.location_id


def update_quiet_hours_settings(
    request: pb.UpdateQuietHoursSettingsRequest,
) -> QuietHoursSettings:
    """The new settings: a real IANA default zone, and a window of two HH:MM times (or
    none) that ends after it starts. A window wider than the law is kept: the law still
    applies (every rule must allow a send)."""
    v = Violations()
    location(v, request.location_id)
    given = request.settings
    zone = _time_zone(v, "settings.default_time_zone", given.default_time_zone)
    window = None
    start_text, end_text = given.window_start, given.window_end
    if bool(start_text) != bool(end_text):
        missing = "settings.window_end" if start_text else "settings.window_start"
        v.add(missing, "a window needs both window_start and window_end (or neither)")
    elif start_text:
        bounds = []
        for name, text in (("window_start", start_text), ("window_end", end_text)):
            try:
                bounds.append(parse_window_time(f"settings.{name}", text))
            except InvalidArgument as error:
                v.items.extend(error.violations)
        if len(bounds) == 2:
            if bounds[0] >= bounds[1]:
                v.add("settings.window_end", f"{end_text} is not after window_start {start_text}")
            else:
                window = Window(bounds[0], bounds[1])
    v.raise_if_any()
    return QuietHoursSettings(
        informational=given.informational, default_time_zone=zone, window=window
    )


# --- erasure and block expiry ----------------------------------------------------------------


def erase_contact(request: pb.EraseContactRequest, region: str) -> EraseCommand:
    """An erasure: the contact, the addresses the caller names (normalised; each phone on
    every phone channel) and the reference kept of it (``validate_reference``)."""
    v = Violations()
    contact_key(v, request)
    phones: list[str] = []
    emails: list[str] = []
    for field, channel, values, found in (
        ("phone_numbers", Channel.SMS, request.phone_numbers, phones),
        ("email_addresses", Channel.EMAIL, request.email_addresses, emails),
    ):
        if len(values) > ADDRESSES_MAX:
            v.add(field, f"at most {ADDRESSES_MAX} addresses")
            continue
        for i, raw in enumerate(values):
            address = v.address(f"{field}[{i}]", channel, raw, region)
            if address:
                found.append(address)
            elif not raw:
                v.add(f"{field}[{i}]", "must not be empty")
    try:
        validate_reference(request.reference)
    except InvalidArgument as error:
        v.items.extend(error.violations)
    if _has_control(request.reference, allow_whitespace=False):
        v.add("reference", "must not contain control characters")
    v.idempotency_key(request.idempotency_key)
    v.raise_if_any()
    return EraseCommand(
        location_id=request.location_id,
        contact_id=request.contact_id,
        addresses=named_addresses(phones, emails),
        meta=ChangeMeta(source=Source.SUPPORT, note=request.reference),
    )


def get_block_expiry_settings(request: pb.GetBlockExpirySettingsRequest) -> str:
    v = Violations()
    location(v, request.location_id)
    v.raise_if_any()
    return request.location_id


def update_block_expiry_settings(request: pb.UpdateBlockExpirySettingsRequest) -> BlockExpiry:
    """The new lifetimes: 0 (never) or 1 s to 365 days (``expiry_of``)."""
    v = Violations()
    location(v, request.location_id)
    expiry = None
    try:
        expiry = expiry_of(request.settings.sms_carrier_temporary_seconds)
    except InvalidArgument as error:
        v.items.extend(error.violations)
    v.raise_if_any()
    assert expiry is not None
    return expiry
