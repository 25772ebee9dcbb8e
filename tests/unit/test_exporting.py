"""``dndctl export``'s rows: the csv / jsonl rows a block or a suppression becomes (as
``dndctl import`` reads them), a suppression a block carries written once, and the provider
lists holding only their channel's and reasons' addresses, each once. Pure: no server."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from dnd.v1 import dnd_pb2 as pb
from dnd_client.exporting import write_export
from dnd_client.importing import _rows as rows_of
from dnd_client.importing import plan_row


def sms_block(**fields: Any) -> pb.Block:
    """An outbound SMS block: a STOP by the contact unless ``fields`` say otherwise."""
    base: dict[str, Any] = {
        "direction": pb.DIRECTION_OUTBOUND,
        "scope": pb.Scope(channel=pb.CHANNEL_SMS),
        "reason": pb.REASON_SMS_OPT_OUT_KEYWORD,
        "source": pb.SOURCE_CONTACT,
    }
    return pb.Block(**{**base, **fields})


def message() -> pb.ExportSuppressionsResponse:
    stop = sms_block(address="+14155550100")
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


def test_csv_cells_a_spreadsheet_would_run_are_quoted_and_read_back() -> None:
    """Notes, actor ids and contact ids come from callers: a cell starting like a formula is
    written with a leading "'" (a phone number is not), and the import reads the value back."""
    values = {
        '=HYPERLINK("http://x","y")': '\'=HYPERLINK("http://x","y")',
        "@SUM(1)": "'@SUM(1)",
        "-2+3": "'-2+3",
        "+cmd": "'+cmd",
        "'=quoted": "''=quoted",
        "+14155550100": "+14155550100",
        "-5": "-5",
        "plain": "plain",
    }
    for value, cell in values.items():
        block = sms_block(
            reason=pb.REASON_MANUAL, source=pb.SOURCE_USER, note=value, actor_id=value
        )
        out = io.StringIO()
        listed = pb.ListedBlock(contact_id=value, block=block)
        write_export([pb.ExportSuppressionsResponse(blocks=[listed])], "csv", "loc-1", out)
        [row] = csv.DictReader(io.StringIO(out.getvalue()))
        assert (row["note"], row["actor_id"], row["contact_id"]) == (cell,) * 3
        [(_, read)] = list(rows_of(out.getvalue(), "csv"))
        item = plan_row("csv", read, "", "t").item
        assert (item.note, item.actor_id, item.contact_id) == (value,) * 3


def test_import_location_wins_over_the_files() -> None:
    """A file exported from one location loads into the one ``--location`` names; without it
    each row goes to its own."""
    row = {"location_id": "loc-a", "contact_id": "c1", "channel": "SMS"}
    assert plan_row("csv", row, "loc-b", "t").location_id == "loc-b"
    assert plan_row("jsonl", row, "loc-b", "t").location_id == "loc-b"
    assert plan_row("csv", row, "", "t").location_id == "loc-a"


def test_blank_lines_before_the_header_are_skipped_and_counted() -> None:
    text = "\n\r\ncontact_id,channel\nc1,SMS\n"
    assert list(rows_of(text, "csv")) == [(4, {"contact_id": "c1", "channel": "SMS"})]
    assert list(rows_of("\n", "csv")) == []
    # A Twilio list without a header, whose numbers carry a scheme, keeps its first number.
    numbers = list(rows_of("tel:+14155550100\n+14155550101\n", "twilio"))
    assert [r["phone_number"] for _, r in numbers] == ["tel:+14155550100", "+14155550101"]
    assert [r for _, r in rows_of("Phone Number\n+14155550101\n", "twilio")] == [
        {"phone number": "+14155550101"}
    ]


def test_evidence_and_provider_detail_travel_with_the_rows() -> None:
    """What proves an opt-out (the STOP text, the provider's detail) is exported and imported
    again, so a list moved to another location keeps its proof."""
    stop = sms_block(evidence="STOP", provider_detail="keyword:STOP")
    for fmt in ("csv", "jsonl"):
        out = io.StringIO()
        listed = pb.ListedBlock(contact_id="c1", block=stop)
        write_export([pb.ExportSuppressionsResponse(blocks=[listed])], fmt, "loc-1", out)
        [(_, row)] = list(rows_of(out.getvalue(), fmt))
        item = plan_row(fmt, row, "loc-2", "t").item
        assert (item.evidence, item.provider_detail) == ("STOP", "keyword:STOP")
