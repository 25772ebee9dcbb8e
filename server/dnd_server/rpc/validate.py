"""Request validation: each RPC's request checked field by field and turned into what its use
case takes (a command, a query, a watch filter or plain arguments). The problems of a request
are reported together, in one InvalidArgument naming each field (an UpdateKeywordSettings
request's words are checked once its location is valid)."""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

from dnd.v1 import dnd_pb2 as pb

from dnd_server.cursor import decode_cursor, decode_page_token
from dnd_server.domain.addresses import normalize_address
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
from dnd_server.domain.errors import FieldViolation, InvalidArgument
from dnd_server.domain.keywords import KeywordSettings, validate_extra_words
from dnd_server.domain.model import Channel, Direction, Reason, Scope, Source
from dnd_server.domain.provider_events import EmailEvent, delivery_effect
from dnd_server.domain.rules import validate_block_shape
from dnd_server.records import Addresses, ChangeMeta
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
    HistoryQuery,
    InboundMessage,
    ProviderEvent,
    ReadOptions,
    RecordConsentCommand,
    RevokeConsentCommand,
    SetDndCommand,
    email_event_effect,
    sms_failure_effect,
)
from dnd_server.watch import WatchFilter

ID_MAX = 128
KEY_MAX = 128
BODY_MAX = 1600
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
    min_seq: int | None = None
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
    from_address = v.address("from_address", channel, request.from_address, region)
    v.idempotency_key(request.idempotency_key)
    v.raise_if_any()
    assert channel is not None
    return InboundMessage(
        request.location_id, request.contact_id, channel, request.body, from_address
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
    address = v.address("to_address", Channel.SMS, request.to_address, region)
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
    address = v.address("to_address", Channel.EMAIL, request.to_address, region)
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
    )


def delivery_event(request: pb.ReportDeliveryEventRequest, region: str) -> ProviderEvent:
    """A messaging provider's event: its effect from ``DELIVERY_EVENTS`` (None, ignored, for
    an unknown provider or code); a known code reported on another channel than its own is
    INVALID_ARGUMENT."""
    v = Violations()
    contact_key(v, request)
    channel = v.enum("channel", request.channel, CHANNEL_FROM_PB)
    _provider(v, request.provider)
    code = request.code
    if not code.strip():
        v.add(
            "code",
            "required: the provider's error code or event name, e.g. 131050 or "
            "user_preferences:stop_marketing",
        )
    elif code != code.strip():
        v.add("code", "must not start or end with whitespace")
    else:
        v.text("code", code, DELIVERY_CODE_MAX)
    address = v.address("address", channel, request.address, region)
    v.idempotency_key(request.idempotency_key)
    effect = delivery_effect(request.provider, code)
    if effect is not None and channel is not None and channel is not effect.channel:
        v.add(
            "channel",
            f"{request.provider} {code} is a {effect.channel.value} event; report it with "
            f"channel CHANNEL_{effect.channel.value}",
        )
    v.raise_if_any()
    assert channel is not None
    return ProviderEvent(
        location_id=request.location_id,
        contact_id=request.contact_id,
        channel=channel,
        provider=request.provider,
        detail=f"delivery_event:{code}",
        effect=None if effect is None else (effect.reason, effect.source),
        address=address,
        clears=effect is not None and effect.clears,
    )


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
    outs, ins = validate_extra_words(settings.extra_opt_out_words, settings.extra_opt_in_words)
    return KeywordSettings(outs, ins, settings.detect_revocation_phrases)


WATCH_LOCATIONS_MAX = 1000


def watch(request: pb.WatchChangesRequest) -> tuple[WatchFilter, int | None, str]:
    """(filter, after sequence or None for "from now", the cursor text)."""
    v = Violations()
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
    after: int | None = None
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
    return flt, after, request.after_cursor


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
