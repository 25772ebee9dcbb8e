"""``dndctl``: the operator's command line for dnd-service.

    dndctl status LOC CONTACT             the contact's DND, block by block
    dndctl set LOC CONTACT --channel SMS  enable DND (--all, --inbound; --reason, --source...)
    dndctl clear LOC CONTACT --channel SMS
    dndctl check LOC CONTACT --channel SMS   "why was this contact not messaged?" in one line
    dndctl history LOC CONTACT
    dndctl watch [--location LOC]...
    dndctl import FORMAT FILE --location LOC

Connection flags (or DND_* environment variables): --addr / DND_ADDR, --tls / DND_TLS,
--ca-file / DND_CA_FILE, --cert-file / DND_CERT_FILE, --key-file / DND_KEY_FILE,
--token / DND_TOKEN, --timeout / DND_TIMEOUT. ``--json`` prints JSON for scripts.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dnd.v1 import dnd_pb2 as pb
from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message

from dnd_client._requests import DndAction
from dnd_client.aio import AsyncDndClient
from dnd_client.errors import DndError
from dnd_client.importing import FORMATS, Progress, count_rows, run_import
from dnd_client.sync import DndClient
from dnd_client.types import Channel, Direction, Reason, SendKind, Source, name_of

EXIT_DENIED = 1
EXIT_ERROR = 2


def _env_bool(name: str) -> bool:
    return os.environ.get(name, "").lower() in ("1", "true", "yes", "on")


def _enum_arg(cls: Any) -> Any:
    def parse(value: str) -> Any:
        try:
            return cls[value.strip().upper()]
        except KeyError:
            choices = ", ".join(m.name for m in cls)
            raise argparse.ArgumentTypeError(f"{value!r}: one of {choices}") from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dndctl", description="Operate dnd-service.")
    parser.add_argument("--addr", default=os.environ.get("DND_ADDR", "127.0.0.1:50051"))
    parser.add_argument("--tls", action="store_true", default=_env_bool("DND_TLS"))
    parser.add_argument("--ca-file", default=os.environ.get("DND_CA_FILE"))
    parser.add_argument("--cert-file", default=os.environ.get("DND_CERT_FILE"))
    parser.add_argument("--key-file", default=os.environ.get("DND_KEY_FILE"))
    parser.add_argument("--token", default=os.environ.get("DND_TOKEN"))
    parser.add_argument("--timeout", type=float, default=float(os.environ.get("DND_TIMEOUT", "10")))
    parser.add_argument("--json", action="store_true", help="print JSON")
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

    history = commands.add_parser("history", help="every change, newest first")
    _contact(history)
    history.add_argument("--limit", type=int, default=50)

    watch = commands.add_parser("watch", help="follow changes (Ctrl-C to stop)")
    watch.add_argument("--location", action="append", default=[])
    watch.add_argument("--channel", action="append", default=[], type=_enum_arg(Channel))
    watch.add_argument("--after", help="resume after this cursor")
    watch.add_argument("--limit", type=int, help="stop after this many events")

    imp = commands.add_parser("import", help="load an opt-out list")
    imp.add_argument("format", choices=FORMATS)
    imp.add_argument("file", type=Path)
    imp.add_argument("--location", default="", help="location of the list's rows")
    imp.add_argument("--concurrency", type=int, default=16)
    imp.add_argument("--actor", default="dndctl-import")
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


def show_history(answer: pb.ListHistoryResponse) -> str:
    rows = [
        [
            str(e.version),
            _when(e.time),
            "enabled" if e.enabled else "cleared",
            _scope_name(e.scope, e.direction) + (f" {e.address}" if e.address else ""),
            name_of("Reason", e.reason),
            name_of("Source", e.source),
            e.actor_id or "-",
            e.note or "-",
        ]
        for e in answer.entries
    ]
    if not rows:
        return "no changes"
    return table(rows, ["VERSION", "TIME", "CHANGE", "SCOPE", "REASON", "SOURCE", "ACTOR", "NOTE"])


def show_event(event: pb.ChangeEvent) -> str:
    change = "enabled" if event.enabled else "cleared"
    scope = _scope_name(event.scope, event.direction)
    if event.address:
        scope += f" {event.address}"
    return (
        f"{_when(event.time)}  {event.location_id}/{event.contact_id}  v{event.version}  "
        f"{change} {scope} {name_of('Reason', event.reason)} by {name_of('Source', event.source)}"
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
        reason=args.reason,
        actor_id=args.actor,
        note=args.note,
        evidence=args.evidence,
        suppression_removal_confirmed=getattr(args, "suppression_removed", False),
        expected_version=args.expected_version,
        idempotency_key=args.idempotency_key,
        address=args.address,
    )


def run(args: argparse.Namespace, out: Any) -> int:
    if args.command == "import":
        return asyncio.run(_import(args, out))
    if args.command == "watch":
        return asyncio.run(_watch(args, out))
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
            )
            print(json.dumps(_json(check)) if args.json else show_check(check), file=out)
            return 0 if check.allowed else EXIT_DENIED
        if args.command == "history":
            page = client.list_history(args.location_id, args.contact_id, page_size=args.limit)
            print(json.dumps(_json(page)) if args.json else show_history(page), file=out)
            return 0
    raise AssertionError(args.command)


async def _watch(args: argparse.Namespace, out: Any) -> int:
    seen = 0
    async with AsyncDndClient(args.addr, **_client_options(args)) as client:
        async for event in client.watch(
            location_ids=args.location, channels=args.channel, after_cursor=args.after
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "import" and args.format != "csv" and not args.location:
        parser.error(f"import {args.format} needs --location")
    try:
        return run(args, sys.stdout)
    except DndError as error:
        print(f"dndctl: {error}", file=sys.stderr)
        for violation in error.field_violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        for refusal in error.refusals:
            print(f"  {refusal.subject} {refusal.reason}: {refusal.description}", file=sys.stderr)
        return EXIT_ERROR
    except ValueError as error:
        print(f"dndctl: {error}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
