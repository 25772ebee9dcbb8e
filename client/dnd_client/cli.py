"""``dndctl``: the operator's command line for dnd-service.

    dndctl status LOC CONTACT             the contact's DND, block by block
    dndctl set LOC CONTACT --channel SMS  enable DND (--all, --inbound; --reason, --source...)
    dndctl clear LOC CONTACT --channel SMS
    dndctl check LOC CONTACT --channel SMS   "why was this contact not messaged?" in one line
                                          (--purpose MARKETING, TRANSACTIONAL...)
    dndctl history LOC CONTACT
    dndctl watch [--location LOC]... [--kind CONSENT]...
    dndctl import FORMAT FILE --location LOC
    dndctl export LOC --format csv --file out.csv   blocks and suppressions, as import reads
    dndctl consent record LOC CONTACT --channel SMS --purpose MARKETING --method WEB_FORM
    dndctl consent revoke LOC CONTACT --channel SMS
    dndctl consent show LOC CONTACT       the contact's consents
    dndctl policy get LOC                 the location's consent policy
    dndctl policy set LOC --require SMS:MARKETING   (replaces it; no --require: off)
    dndctl version                        client and server versions
    dndctl doctor                         connectivity, TLS, token, versions, clock skew
    dndctl completion bash|zsh            a shell completion script

Connection flags (or DND_* environment variables): --addr / DND_ADDR, --tls / DND_TLS,
--ca-file / DND_CA_FILE, --cert-file / DND_CERT_FILE, --key-file / DND_KEY_FILE,
--token / DND_TOKEN, --timeout / DND_TIMEOUT. ``--output json`` (or ``--json``) prints JSON
for scripts; ``--output table`` (the default) is for people. Exit codes: see ``EXIT_CODES``.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import signal
import sys
import threading
from collections.abc import Coroutine, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from dnd.v1 import dnd_pb2 as pb
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from dnd_client import _completion, _doctor
from dnd_client._requests import DndAction
from dnd_client._tracing import continue_trace
from dnd_client.aio import AsyncDndClient
from dnd_client.errors import DeadlineExceeded, DndError, Unavailable
from dnd_client.exporting import EXPORT_FORMATS, Counter, write_export
from dnd_client.importing import FORMATS, Progress, count_rows, run_import
from dnd_client.sync import DndClient
from dnd_client.types import (
    ChangeKind,
    Channel,
    ConsentEvidence,
    ConsentKind,
    ConsentMethod,
    ConsentPurpose,
    Direction,
    ImpliedBasis,
    Purpose,
    Reason,
    SendKind,
    Source,
    name_of,
)

EXIT_OK = 0
# The answer is no: check denied the send, import rejected rows.
EXIT_DENIED = 1
# The command line is wrong: unknown flags, bad values, a file that cannot be read.
EXIT_USAGE = 2
# The service answered the call with an error (invalid argument, permission, version...).
EXIT_FAILED = 3
# The service could not be reached or did not answer in time (UNAVAILABLE, DEADLINE_EXCEEDED).
EXIT_UNAVAILABLE = 4
# doctor found a problem.
EXIT_PROBLEM = 5

EXIT_CODES = f"""exit codes:
  {EXIT_OK}  ok
  {EXIT_DENIED}  the answer is no: check denied the send, import rejected rows
  {EXIT_USAGE}  usage error: unknown flag, bad value, unreadable file
  {EXIT_FAILED}  the service refused or failed the call (printed: its status and details)
  {EXIT_UNAVAILABLE}  the service is unreachable or did not answer in time
  {EXIT_PROBLEM}  doctor found a problem
"""


def client_version() -> str:
    try:
        return metadata.version("dnd-service")
    except metadata.PackageNotFoundError:
        return "unknown"


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def _enum_arg(cls: Any) -> Any:
    def parse(value: str) -> Any:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            choices = ", ".join(m.name for m in cls)
            raise argparse.ArgumentTypeError(f"{value!r}: one of {choices}") from None

    # The names shell completion offers.
    parse.__dict__["choices"] = [m.name for m in cls]
    return parse


def _time_arg(value: str) -> dt.datetime:
    """An ISO 8601 time with its zone: 2026-03-01T09:30:00Z, 2026-03-01T04:30:00-05:00."""
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{value!r}: not an ISO 8601 time (e.g. 2026-03-01T09:30:00Z)"
        ) from None
    if when.tzinfo is None:
        raise argparse.ArgumentTypeError(
            f"{value!r}: give its timezone (e.g. 2026-03-01T09:30:00Z)"
        )
    return when


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration_arg(value: str) -> int:
    """Seconds, or a number with a unit: 3600, 90m, 24h, 7d."""
    text = value.strip().lower()
    unit = _DURATION_UNITS.get(text[-1:], 0)
    number = text[:-1] if unit else text
    if not number.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: seconds, or a number with s, m, h or d")
    return int(number) * (unit or 1)


def _requirement_arg(value: str) -> tuple[Channel, set[ConsentPurpose]]:
    """CHANNEL or CHANNEL:PURPOSE[,PURPOSE]: the purposes that need consent on it (MARKETING
    when none is named)."""
    channel_text, _, purposes_text = value.partition(":")
    channel = _enum_arg(Channel)(channel_text)
    names = [p for p in purposes_text.split(",") if p.strip()] or ["MARKETING"]
    return channel, {_enum_arg(ConsentPurpose)(name) for name in names}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dndctl",
        description="Operate dnd-service.",
        epilog=EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--addr", default=os.environ.get("DND_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--tls", action="store_true", default=_env_bool("DND_TLS"))
    parser.add_argument("--ca-file", default=os.environ.get("DND_CA_FILE"))
    parser.add_argument("--cert-file", default=os.environ.get("DND_CERT_FILE"))
    parser.add_argument("--key-file", default=os.environ.get("DND_KEY_FILE"))
    parser.add_argument("--token", default=os.environ.get("DND_TOKEN"))
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("DND_TIMEOUT", "10")))
    parser.add_argument(
        "--output", choices=("table", "json"), help="table for people (default), json for scripts"
    )
    parser.add_argument("--json", action="store_true", help="print JSON: --output json")
    commands = parser.add_subparsers(dest="command", required=True)

    status = commands.add_parser("status", help="a contact's DND, block by block")
    _contact(status)
    status.add_argument("--phone", action="append", default=[], help="show its suppressions")
    status.add_argument("--email", action="append", default=[], help="show its suppressions")

    for name, text in (("set", "enable DND"), ("clear", "clear DND")):
        sub = commands.add_parser(name, help=text)
        _contact(sub)
        _scope(sub)
        sub.add_argument("--reason", type=_enum_arg(Reason), help="default MANUAL (set)")
        sub.add_argument(
            "--marketing-only",
            action="store_true",
            help="a marketing-only opt-out (denies MARKETING sends only)",
        )
        sub.add_argument("--source", type=_enum_arg(Source), default=Source.USER)
        sub.add_argument("--actor", default="", help="user / workflow id")
        sub.add_argument("--note", default="")
        sub.add_argument("--evidence", default="")
        sub.add_argument("--address", help="phone or email the change also applies to")
        sub.add_argument("--expected-version", type=int)
        sub.add_argument("--idempotency-key")
        if name == "clear":
            sub.add_argument(
                "--suppression-removed",
                action="store_true",
                help="confirm the address left the provider's suppression list (email bounces)",
            )

    check = commands.add_parser("check", help="may a message be sent? (exit 1 when denied)")
    _contact(check)
    check.add_argument("--channel", type=_enum_arg(Channel), required=True)
    check.add_argument("--inbound", action="store_true")
    check.add_argument("--address")
    check.add_argument("--automated", action="store_true")
    check.add_argument(
        "--purpose",
        type=_enum_arg(Purpose),
        help="MARKETING, INFORMATIONAL, TRANSACTIONAL or COMPLIANCE_REPLY (default: DND only)",
    )
    check.add_argument(
        "--send-at",
        type=_time_arg,
        help="quiet hours: when the message would go, ISO 8601 with zone (default now); "
        "a deferred answer exits 1 and says from when it may go",
    )
    check.add_argument("--time-zone", default="", help="quiet hours: the recipient's IANA zone")

    history = commands.add_parser("history", help="every change, newest first")
    _contact(history)
    history.add_argument("--limit", type=int, default=50)

    watch = commands.add_parser("watch", help="follow changes (Ctrl-C to stop)")
    watch.add_argument("--location", action="append", default=[])
    watch.add_argument("--channel", action="append", default=[], type=_enum_arg(Channel))
    watch.add_argument(
        "--kind",
        action="append",
        default=[],
        type=_enum_arg(ChangeKind),
        help="BLOCK, CONSENT, COMPLIANCE_REPLY or ERASURE (default: every change)",
    )
    watch.add_argument("--after", help="resume after this cursor")
    watch.add_argument("--limit", type=int, help="stop after this many events")

    imp = commands.add_parser("import", help="load an opt-out list")
    imp.add_argument("format", choices=FORMATS)
    imp.add_argument("file", type=Path)
    imp.add_argument(
        "--location",
        default="",
        help="location of the rows (csv, jsonl: every row, instead of its location_id)",
    )
    imp.add_argument("--concurrency", type=int, default=16)
    imp.add_argument("--actor", default="dndctl-import")
    imp.add_argument(
        "--batch-size", type=int, default=1000, help="rows per BulkSetDnd call (1 to 10000)"
    )

    exp = commands.add_parser(
        "export", help="write a location's blocks and suppressions (the shapes import reads)"
    )
    exp.add_argument("location_id")
    exp.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    exp.add_argument("--file", type=Path, help="write here (default: standard output)")
    exp.add_argument("--channel", type=_enum_arg(Channel), help="only this channel")
    exp.add_argument("--reason", type=_enum_arg(Reason), help="only this reason")
    exp.add_argument("--source", type=_enum_arg(Source), help="only this source")
    exp.add_argument("--contact", default="", help="only this contact's")

    consent = commands.add_parser("consent", help="a contact's consents: record, revoke, show")
    consents = consent.add_subparsers(dest="consent_command", required=True)
    record = consents.add_parser("record", help="record a consent (or a pending double opt-in)")
    _contact(record)
    record.add_argument("--channel", type=_enum_arg(Channel), required=True)
    record.add_argument("--purpose", type=_enum_arg(ConsentPurpose), required=True)
    record.add_argument("--method", type=_enum_arg(ConsentMethod), required=True)
    record.add_argument("--address", help="the one phone or email it covers (default: all)")
    record.add_argument("--implied", action="store_true", help="implied, not express, consent")
    record.add_argument("--basis", type=_enum_arg(ImpliedBasis), help="PURCHASE or INQUIRY")
    record.add_argument("--captured-at", type=_time_arg, help="ISO 8601 with zone (default now)")
    record.add_argument("--expires-at", type=_time_arg, help="ISO 8601 with zone")
    record.add_argument("--pending", action="store_true", help="a double opt-in sent, unconfirmed")
    record.add_argument("--consent-source", default="", help="the form, campaign, import...")
    for flag, name in (
        ("--form-url", "form_url"),
        ("--disclosure-text", "disclosure_text"),
        ("--disclosure-version", "disclosure_version"),
        ("--ip", "ip_address"),
        ("--user-agent", "user_agent"),
        ("--recording-ref", "recording_ref"),
    ):
        record.add_argument(flag, dest=name, default="", help="evidence")
    record.add_argument("--expected-version", type=int)
    revoke = consents.add_parser("revoke", help="revoke consents of one channel")
    _contact(revoke)
    revoke.add_argument("--channel", type=_enum_arg(Channel), required=True)
    revoke.add_argument("--purpose", type=_enum_arg(ConsentPurpose), help="default: every one")
    revoke.add_argument("--address", help="only this address's consent (default: all)")
    revoke.add_argument("--note", default="")
    for sub in (record, revoke):
        sub.add_argument("--source", type=_enum_arg(Source), default=Source.USER)
        sub.add_argument("--actor", default="", help="user / workflow / form id")
        sub.add_argument("--idempotency-key")
    show = consents.add_parser("show", help="the contact's consents, every status")
    _contact(show)

    policy = commands.add_parser("policy", help="a location's consent policy: get, set")
    policies = policy.add_subparsers(dest="policy_command", required=True)
    get = policies.add_parser("get", help="the location's consent policy")
    get.add_argument("location_id")
    put = policies.add_parser("set", help="replace the location's consent policy")
    put.add_argument("location_id")
    put.add_argument(
        "--require",
        action="append",
        default=[],
        type=_requirement_arg,
        metavar="CHANNEL[:PURPOSE,...]",
        help="consent needed on CHANNEL for MARKETING (or the purposes named); repeatable",
    )
    put.add_argument(
        "--double-opt-in-window",
        type=_duration_arg,
        default=0,
        metavar="DURATION",
        help="how long a pending double opt-in waits: seconds or 90m, 24h, 7d (default 24h)",
    )

    commands.add_parser("version", help="client and server versions")
    doctor = commands.add_parser(
        "doctor",
        help="check connectivity, TLS, the token, versions and clock skew (exit 5: a problem)",
    )
    doctor.add_argument(
        "--require",
        action="append",
        default=[],
        choices=sorted(_doctor.PERMISSION_RPCS),
        help="a permission the token must hold (a problem if not); repeatable",
    )
    doctor.add_argument(
        "--max-skew",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="the clock skew between this host and the server that is a problem (default 5)",
    )
    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=("bash", "zsh"))
    return parser


def _contact(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("location_id")
    parser.add_argument("contact_id")


def _scope(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--channel", type=_enum_arg(Channel))
    group.add_argument("--all", action="store_true", help="all outbound channels")
    group.add_argument("--inbound", action="store_true", help="inbound calls and SMS")


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _client_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "timeout": args.timeout,
        "token": args.token,
        "tls": args.tls,
        "root_certificates": _read(args.ca_file),
        "client_certificate": _read(args.cert_file),
        "client_key": _read(args.key_file),
    }


def _json(message: Message) -> dict[str, Any]:
    return MessageToDict(message, preserving_proto_field_name=True)


def _when(ts: Any) -> str:
    if not ts.seconds:
        return "-"
    when: dt.datetime = ts.ToDatetime(dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%SZ")


def _scope_name(scope: pb.Scope, direction: int) -> str:
    if direction == pb.DIRECTION_INBOUND:
        return "INBOUND"
    return "ALL" if scope.all_channels else name_of("Channel", scope.channel)


def table(rows: Sequence[Sequence[str]], header: Sequence[str]) -> str:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    head = "  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()
    return "\n".join([head, *lines])


def show_status(status: pb.ContactStatus) -> str:
    summary = (
        f"{status.location_id}/{status.contact_id}  version {status.version}  "
        f"outbound {name_of('DndStatus', status.outbound)}  "
        f"inbound {name_of('DndStatus', status.inbound)}"
    )
    if not status.blocks and not status.address_suppressions:
        return summary + "\nno DND"
    rows = [
        [
            _scope_name(b.scope, b.direction),
            name_of("Reason", b.reason),
            name_of("Source", b.source),
            b.actor_id or "-",
            _when(b.since),
            b.provider_detail or "-",
        ]
        for b in status.blocks
    ]
    rows += [
        [
            f"{name_of('Channel', s.channel)} {s.address}",
            name_of("Reason", s.reason),
            name_of("Source", s.source),
            s.contact_id,
            _when(s.since),
            s.provider_detail or "-",
        ]
        for s in status.address_suppressions
    ]
    header = ["SCOPE", "REASON", "SOURCE", "ACTOR", "SINCE", "DETAIL"]
    return summary + "\n" + table(rows, header)


def show_check(answer: pb.CheckSendResponse) -> str:
    return answer.explanation


def _consent_state(consent: pb.Consent) -> str:
    """What bounds a consent in time: its confirmation window, expiry or revocation."""
    status = consent.status
    if status == pb.CONSENT_STATUS_PENDING:
        return f"confirm by {_when(consent.confirm_by)}"
    if status == pb.CONSENT_STATUS_REVOKED:
        return f"revoked {_when(consent.revoked_at)} by {consent.revoked_by or 'REVOKED'}"
    if consent.HasField("expires_at"):
        verb = "expired" if status == pb.CONSENT_STATUS_EXPIRED else "expires"
        return f"{verb} {_when(consent.expires_at)}"
    if status == pb.CONSENT_STATUS_EXPIRED and consent.HasField("confirm_by"):
        return f"not confirmed by {_when(consent.confirm_by)}"
    return "-"


def show_consents(status: pb.ContactStatus) -> str:
    summary = f"{status.location_id}/{status.contact_id}  version {status.version}"
    if not status.consents:
        return summary + "\nno consents"
    rows = [
        [
            name_of("Channel", c.channel),
            name_of("ConsentPurpose", c.purpose),
            c.address or "*",
            name_of("ConsentStatus", c.status),
            name_of("ConsentMethod", c.method),
            name_of("ConsentKind", c.kind),
            name_of("Source", c.source),
            c.actor_id or "-",
            _when(c.captured_at),
            _consent_state(c),
        ]
        for c in status.consents
    ]
    header = [
        "CHANNEL",
        "PURPOSE",
        "ADDRESS",
        "STATUS",
        "METHOD",
        "KIND",
        "SOURCE",
        "ACTOR",
        "CAPTURED",
        "UNTIL",
    ]
    return summary + "\n" + table(rows, header)


def _consents_json(status: pb.ContactStatus) -> dict[str, Any]:
    return {
        "location_id": status.location_id,
        "contact_id": status.contact_id,
        "version": str(status.version),
        "consents": [_json(c) for c in status.consents],
    }


def show_policy(location_id: str, policy: pb.ConsentPolicy) -> str:
    window = policy.double_opt_in_window_seconds or 86400
    head = f"{location_id}  double opt-in window {_duration(window)}"
    rows = [
        [
            name_of("Channel", c.channel),
            "required" if c.require_marketing else "-",
            "required" if c.require_informational else "-",
        ]
        for c in policy.channels
        if c.require_marketing or c.require_informational
    ]
    if not rows:
        return head + "\nno channel requires consent"
    return head + "\n" + table(rows, ["CHANNEL", "MARKETING", "INFORMATIONAL"])


def _duration(seconds: int) -> str:
    """3600 as 1h, 86400 as 24h, 7 days as 7d."""
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _change(kind: int, enabled: bool) -> str:
    if kind == pb.CHANGE_KIND_CONSENT:
        return "consent"
    if kind == pb.CHANGE_KIND_COMPLIANCE_REPLY:
        return "reply"
    if kind == pb.CHANGE_KIND_ERASURE:
        return "erased"
    return "enabled" if enabled else "cleared"


def _consent_what(consent: pb.Consent) -> tuple[str, str]:
    """A consent change's scope (channel and address) and what it is (purpose, status)."""
    scope = name_of("Channel", consent.channel) + (f" {consent.address}" if consent.address else "")
    what = (
        f"{name_of('ConsentPurpose', consent.purpose)} {name_of('ConsentStatus', consent.status)}"
    )
    return scope, what


def show_history(answer: pb.ListHistoryResponse) -> str:
    rows = []
    for e in answer.entries:
        scope = _scope_name(e.scope, e.direction) + (f" {e.address}" if e.address else "")
        reason = name_of("Reason", e.reason)
        if e.kind == pb.CHANGE_KIND_CONSENT:
            scope, reason = _consent_what(e.consent)
        rows.append(
            [
                str(e.version),
                _when(e.time),
                _change(e.kind, e.enabled),
                scope,
                reason,
                name_of("Source", e.source),
                e.actor_id or "-",
                e.note or "-",
            ]
        )
    if not rows:
        return "no changes"
    return table(rows, ["VERSION", "TIME", "CHANGE", "SCOPE", "REASON", "SOURCE", "ACTOR", "NOTE"])


def show_event(event: pb.ChangeEvent) -> str:
    change = _change(event.kind, event.enabled)
    scope = _scope_name(event.scope, event.direction)
    if event.address:
        scope += f" {event.address}"
    reason = name_of("Reason", event.reason)
    if event.kind == pb.CHANGE_KIND_CONSENT:
        scope, reason = _consent_what(event.consent)
    return (
        f"{_when(event.time)}  {event.location_id}/{event.contact_id}  v{event.version}  "
        f"{change} {scope} {reason} by {name_of('Source', event.source)}"
        f"  cursor={event.cursor}"
    )


def _set_or_clear(client: DndClient, args: argparse.Namespace) -> pb.SetDndResponse:
    return client.set_dnd(
        args.location_id,
        args.contact_id,
        action=DndAction.ENABLE if args.command == "set" else DndAction.DISABLE,
        source=args.source,
        direction=Direction.INBOUND if args.inbound else Direction.OUTBOUND,
        channel=args.channel,
        all_channels=args.all,
        marketing_only=args.marketing_only,
        reason=args.reason,
        actor_id=args.actor,
        note=args.note,
        evidence=args.evidence,
        suppression_removal_confirmed=getattr(args, "suppression_removed", False),
        expected_version=args.expected_version,
        idempotency_key=args.idempotency_key,
        address=args.address,
    )


def _evidence(args: argparse.Namespace) -> ConsentEvidence | None:
    evidence = ConsentEvidence(
        form_url=args.form_url,
        disclosure_text=args.disclosure_text,
        disclosure_version=args.disclosure_version,
        ip_address=args.ip_address,
        user_agent=args.user_agent,
        recording_ref=args.recording_ref,
    )
    return None if evidence == ConsentEvidence() else evidence


def _record(client: DndClient, args: argparse.Namespace) -> pb.RecordConsentResponse:
    return client.record_consent(
        args.location_id,
        args.contact_id,
        args.channel,
        args.purpose,
        method=args.method,
        source=args.source,
        address=args.address,
        kind=ConsentKind.IMPLIED if args.implied or args.basis else None,
        implied_basis=args.basis,
        captured_at=args.captured_at,
        expires_at=args.expires_at,
        actor_id=args.actor,
        evidence=_evidence(args),
        pending=args.pending,
        consent_source=args.consent_source,
        expected_version=args.expected_version,
        idempotency_key=args.idempotency_key,
    )


def _consent(client: DndClient, args: argparse.Namespace, out: Any) -> int:
    if args.consent_command == "show":
        status = client.get_status(args.location_id, args.contact_id)
        print(json.dumps(_consents_json(status)) if args.json else show_consents(status), file=out)
        return 0
    if args.consent_command == "record":
        recorded = _record(client, args)
        if args.json:
            print(json.dumps(_json(recorded)), file=out)
            return 0
        verb = "changed" if recorded.changed else "unchanged (already recorded)"
        print(f"{verb}; cursor {recorded.cursor}", file=out)
        if recorded.explanation:
            print(recorded.explanation, file=out)
        print(show_consents(recorded.status), file=out)
        return 0
    revoked = client.revoke_consent(
        args.location_id,
        args.contact_id,
        args.channel,
        source=args.source,
        purpose=args.purpose,
        address=args.address,
        actor_id=args.actor,
        note=args.note,
        idempotency_key=args.idempotency_key,
    )
    if args.json:
        print(json.dumps(_json(revoked)), file=out)
        return 0
    count = len(revoked.revoked)
    verb = f"revoked {count} consent{'s' if count != 1 else ''}"
    print(
        f"{verb if revoked.changed else 'unchanged (nothing to revoke)'}; cursor {revoked.cursor}",
        file=out,
    )
    print(show_consents(revoked.status), file=out)
    return 0


def _policy(client: DndClient, args: argparse.Namespace, out: Any) -> int:
    if args.policy_command == "get":
        policy = client.get_consent_policy(args.location_id)
    else:
        channels: dict[Channel, set[ConsentPurpose]] = {}
        for channel, purposes in args.require:
            channels.setdefault(channel, set()).update(purposes)
        policy = client.update_consent_policy(
            args.location_id,
            channels=channels,
            double_opt_in_window_seconds=args.double_opt_in_window,
        )
    print(
        json.dumps(_json(policy)) if args.json else show_policy(args.location_id, policy), file=out
    )
    return 0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _unreachable(error: DndError) -> bool:
    return isinstance(error, Unavailable | DeadlineExceeded)


def _version(args: argparse.Namespace, out: Any) -> int:
    client = client_version()
    with DndClient(args.addr, **_client_options(args)) as dnd:
        try:
            info = dnd.get_server_info()
        except DndError:
            if args.json:
                print(json.dumps({"client_version": client}), file=out)
            else:
                print(f"client  {client}", file=out)
            raise
    if args.json:
        versions = {"client_version": client, "server_version": info.server_version}
        print(json.dumps(versions), file=out)
    else:
        print(f"client  {client}\nserver  {info.server_version}", file=out)
    return EXIT_OK


def doctor(args: argparse.Namespace, out: Any, clock: Any = _now) -> int:
    """Run the checks of ``dndctl doctor`` and print their findings. ``clock`` is this
    host's clock (the skew is measured against it)."""
    findings: list[_doctor.Finding] = []
    info: pb.GetServerInfoResponse | None = None
    code = EXIT_OK
    with DndClient(args.addr, **_client_options(args)) as dnd:
        sent = clock()
        try:
            info = dnd.get_server_info()
        except DndError as error:
            unreachable = _unreachable(error)
            code = EXIT_UNAVAILABLE if unreachable else EXIT_PROBLEM
            what = "unreachable" if unreachable else "answers"
            findings.append(_doctor.Finding("connectivity", _doctor.FAIL, f"{what}: {error}"))
        received = clock()
    tls = bool(args.tls or args.ca_file or args.cert_file)
    if info is not None:
        rtt = (received - sent).total_seconds()
        findings.append(
            _doctor.Finding("connectivity", _doctor.OK, f"{args.addr} answered in {rtt:.3f}s")
        )
        findings.append(
            _doctor.Finding(
                "tls", _doctor.OK if tls == info.tls_enabled else _doctor.WARN, _tls_text(tls, info)
            )
        )
    elif not tls:
        findings.append(_doctor.Finding("tls", _doctor.OK, "off (plaintext)"))
    if tls:
        findings.append(_certificate(args))
    if info is not None:
        findings += _doctor.token_findings(info, args.require)
        findings.append(_doctor.version_finding(client_version(), info.server_version))
        server_time = info.server_time.ToDatetime(dt.UTC)
        midpoint = sent + (received - sent) / 2
        findings.append(
            _doctor.skew_finding(
                (server_time - midpoint).total_seconds(),
                (received - sent).total_seconds() / 2,
                args.max_skew,
            )
        )
    failed = any(f.status == _doctor.FAIL for f in findings)
    if code == EXIT_OK and failed:
        code = EXIT_PROBLEM
    if args.json:
        checks = [f.as_dict() for f in findings]
        print(json.dumps({"ok": not failed, "checks": checks}), file=out)
    else:
        rows = [[f.check, f.status.upper(), f.detail] for f in findings]
        print(table(rows, ["CHECK", "STATUS", "DETAIL"]), file=out)
        print("problems found" if failed else "no problem found", file=out)
    return code


def _tls_text(tls: bool, info: pb.GetServerInfoResponse) -> str:
    if tls == info.tls_enabled:
        return "on" if tls else "off (plaintext)"
    return f"this client {'uses' if tls else 'does not use'} TLS, the server says it " + (
        "serves TLS" if info.tls_enabled else "does not (a proxy terminates it?)"
    )


def _certificate(args: argparse.Namespace) -> _doctor.Finding:
    try:
        expiry = _doctor.certificate_expiry(
            args.addr,
            ca_file=args.ca_file,
            cert_file=args.cert_file,
            key_file=args.key_file,
            timeout=args.timeout,
        )
    except (OSError, ValueError) as error:
        return _doctor.Finding("certificate", _doctor.FAIL, f"TLS handshake failed: {error}")
    return _doctor.certificate_finding(expiry, _now())


# After Ctrl-C, the seconds a command has to close its calls before the process just exits.
_INTERRUPT_GRACE = 5.0


def _until_interrupted(command: Coroutine[Any, Any, int]) -> int:
    """Run ``command`` until it ends or Ctrl-C cancels it (exit code 130). Ctrl-C is taken by
    the event loop (delivered even while it waits on sockets); should closing the calls then
    hang, the process exits anyway after ``_INTERRUPT_GRACE`` seconds."""

    async def interruptible() -> int:
        task = asyncio.current_task()
        assert task is not None
        interrupted = False

        def on_interrupt() -> None:
            nonlocal interrupted
            if interrupted:
                os._exit(130)  # a second Ctrl-C: now
            interrupted = True
            watchdog = threading.Timer(_INTERRUPT_GRACE, os._exit, args=(130,))
            watchdog.daemon = True
            watchdog.start()
            task.cancel()

        asyncio.get_running_loop().add_signal_handler(signal.SIGINT, on_interrupt)
        try:
            return await command
        except asyncio.CancelledError:
            if interrupted:
                return 130
            raise

    return asyncio.run(interruptible())


def run(args: argparse.Namespace, out: Any) -> int:
    if args.command == "completion":
        parser = build_parser()
        script = _completion.bash(parser) if args.shell == "bash" else _completion.zsh(parser)
        print(script, end="", file=out)
        return EXIT_OK
    if args.command == "version":
        return _version(args, out)
    if args.command == "doctor":
        return doctor(args, out)
    if args.command == "import":
        return _until_interrupted(_import(args, out))
    if args.command == "export":
        return _export(args, out)
    if args.command == "watch":
        return _until_interrupted(_watch(args, out))
    with DndClient(args.addr, **_client_options(args)) as client:
        if args.command == "status":
            status = client.get_status(
                args.location_id,
                args.contact_id,
                phone_numbers=args.phone,
                email_addresses=args.email,
            )
            print(json.dumps(_json(status)) if args.json else show_status(status), file=out)
            return 0
        if args.command in ("set", "clear"):
            answer = _set_or_clear(client, args)
            if args.json:
                print(json.dumps(_json(answer)), file=out)
            else:
                verb = "changed" if answer.changed else "unchanged (nothing to do)"
                print(f"{verb}; cursor {answer.cursor}", file=out)
                print(show_status(answer.status), file=out)
            return 0
        if args.command == "check":
            check = client.check_send(
                args.location_id,
                args.contact_id,
                args.channel,
                direction=Direction.INBOUND if args.inbound else Direction.OUTBOUND,
                send_kind=SendKind.AUTOMATED if args.automated else SendKind.MANUAL,
                address=args.address,
                purpose=args.purpose,
                time_zone=args.time_zone,
                send_at=args.send_at,
            )
            print(json.dumps(_json(check)) if args.json else show_check(check), file=out)
            return 0 if check.allowed else EXIT_DENIED
        if args.command == "history":
            page = client.list_history(args.location_id, args.contact_id, page_size=args.limit)
            print(json.dumps(_json(page)) if args.json else show_history(page), file=out)
            return 0
        if args.command == "consent":
            return _consent(client, args, out)
        if args.command == "policy":
            return _policy(client, args, out)
    raise AssertionError(args.command)


async def _watch(args: argparse.Namespace, out: Any) -> int:
    seen = 0
    async with AsyncDndClient(args.addr, **_client_options(args)) as client:
        async for event in client.watch(
            location_ids=args.location,
            channels=args.channel,
            kinds=args.kind,
            after_cursor=args.after,
        ):
            assert isinstance(event, pb.ChangeEvent)
            print(json.dumps(_json(event)) if args.json else show_event(event), file=out)
            out.flush()
            seen += 1
            if args.limit and seen >= args.limit:
                break
    return 0


async def _import(args: argparse.Namespace, out: Any) -> int:
    text = args.file.read_text(encoding="utf-8-sig")
    progress = Progress(count_rows(text, args.format))
    async with AsyncDndClient(args.addr, **_client_options(args)) as client:
        summary = await run_import(
            client,
            args.format,
            text,
            args.location,
            actor=args.actor,
            concurrency=args.concurrency,
            progress=progress,
            batch_size=args.batch_size,
        )
    if args.json:
        print(json.dumps(summary.as_dict()), file=out)
    else:
        print(
            f"applied {summary.applied}, unchanged {summary.unchanged}, "
            f"rejected {len(summary.rejected)}",
            file=out,
        )
        for line, error in summary.rejected:
            print(f"  line {line}: {error}", file=out)
    return 0 if not summary.rejected else EXIT_DENIED


def _export(args: argparse.Namespace, out: Any) -> int:
    """Write the export to ``--file`` (or ``out``); with a file the rows count goes to
    ``out``, and a progress line (rows and rate) to a terminal's stderr."""
    fmt = args.format
    only = fmt in ("twilio",) or fmt.startswith("mailgun-")
    channel = args.channel
    if fmt == "twilio":
        channel = Channel.SMS
    elif fmt.startswith("mailgun-"):
        channel = Channel.EMAIL
    with DndClient(args.addr, **_client_options(args)) as client:
        messages = client.export_suppressions(
            args.location_id,
            channel=channel,
            reason=args.reason,
            source=args.source,
            contact_id=args.contact,
            suppressions_only=only,
        )
        counter = Counter()
        if args.file is None:
            write_export(messages, fmt, args.location_id, out, counter)
            return EXIT_OK
        with args.file.open("w", encoding="utf-8", newline="") as target:
            done = write_export(messages, fmt, args.location_id, target, counter)
    if args.json:
        print(json.dumps({"rows": done, "file": str(args.file)}), file=out)
    else:
        print(f"exported {done} rows to {args.file}", file=out)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "import" and args.format not in ("csv", "jsonl") and not args.location:
        parser.error(f"import {args.format} needs --location")
    if args.json and args.output == "table":
        parser.error("--json is --output json: not with --output table")
    args.json = args.json or args.output == "json"
    # Calls continue the trace of the process that started this one (TRACEPARENT).
    continue_trace()
    try:
        return run(args, sys.stdout)
    except DndError as error:
        print(f"dndctl: {error}", file=sys.stderr)
        for violation in error.field_violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        for refusal in error.refusals:
            print(f"  {refusal.subject} {refusal.reason}: {refusal.description}", file=sys.stderr)
        return EXIT_UNAVAILABLE if _unreachable(error) else EXIT_FAILED
    except (ValueError, OSError) as error:
        print(f"dndctl: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
