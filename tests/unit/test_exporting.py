"""``dndctl export``'s rows: the csv / jsonl rows a block or a suppression becomes (as
``dndctl import`` reads them), a suppression a block carries written once, and the provider
lists holding only their channel's and reasons' addresses, each once. Pure: no server."""

from __future__ import annotations

import io
import json

from dnd.v1 import dnd_pb2 as pb
from dnd_client.exporting import write_export
from dnd_client.importing import plan_row


def message() -> pb.ExportSuppressionsResponse:
    stop = pb.Block(
        direction=pb.DIRECTION_OUTBOUND,
        scope=pb.Scope(channel=pb.CHANNEL_SMS),
        reason=pb.REASON_SMS_OPT_OUT_KEYWORD,
        source=pb.SOURCE_CONTACT,
        address="+14155550100",
    )
    every = pb.Block(
        direction=pb.DIRECTION_OUTBOUND,
        scope=pb.Scope(all_channels=True),
        reason=pb.REASON_MANUAL,
        source=pb.SOURCE_USER,
        note="asked",
    )
    return pb.ExportSuppressionsResponse(
        blocks=[
            pb.ListedBlock(contact_id="c1", block=stop),
            pb.ListedBlock(contact_id="c2", block=every),
        ],
        suppressions=[
            pb.AddressSuppression(
                address="+14155550100",
                channel=pb.CHANNEL_SMS,
                reason=pb.REASON_SMS_OPT_OUT_KEYWORD,
                source=pb.SOURCE_CONTACT,
                contact_id="c1",
            ),
            pb.AddressSuppression(
                address="gone@example.com",
                channel=pb.CHANNEL_EMAIL,
                reason=pb.REASON_EMAIL_HARD_BOUNCE,
                source=pb.SOURCE_SYSTEM,
                contact_id="c3",
            ),
            pb.AddressSuppression(
                address="gone@example.com",
                channel=pb.CHANNEL_EMAIL,
                reason=pb.REASON_EMAIL_SUPPRESS_BOUNCE,
                source=pb.SOURCE_SYSTEM,
                contact_id="c3",
            ),
        ],
    )


def test_jsonl_rows_are_what_import_reads() -> None:
    out = io.StringIO()
    assert write_export([message()], "jsonl", "loc-1", out) == 4
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(r["contact_id"], r["channel"], r["reason"]) for r in rows] == [
        ("c1", "SMS", "SMS_OPT_OUT_KEYWORD"),
        ("c2", "ALL", "MANUAL"),
        ("c3", "EMAIL", "EMAIL_HARD_BOUNCE"),
        ("c3", "EMAIL", "EMAIL_SUPPRESS_BOUNCE"),
    ]
    stop = plan_row("jsonl", rows[0], "", "t").item
    assert (stop.address, stop.scope.channel, stop.source) == (
        "+14155550100",
        pb.CHANNEL_SMS,
        pb.SOURCE_CONTACT,
    )
    every = plan_row("jsonl", rows[1], "", "t").item
    assert every.scope.all_channels and every.note == "asked"


def test_provider_lists_hold_their_addresses_once() -> None:
    out = io.StringIO()
    assert write_export([message()], "twilio", "loc-1", out) == 1
    assert out.getvalue().splitlines() == ["phone_number,opt_out_date", "+14155550100,"]
    out = io.StringIO()
    assert write_export([message()], "mailgun-bounces", "loc-1", out) == 1
    assert out.getvalue().splitlines()[1].startswith("gone@example.com,")
    out = io.StringIO()
    assert write_export([message()], "mailgun-complaints", "loc-1", out) == 0
