"""``dndctl export`` and ``dndctl import`` (through BulkSetDnd) as real processes against a
real server: each export format read back by import into another location gives the same
suppressions (and, for csv / jsonl, the same blocks); the export's progress line on a
terminal; import batches with per-item failures reported by line."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_client import Channel, DndAction, DndClient, Source

from tests import factories
from tests.e2e.test_dndctl import dndctl, on_a_terminal
from tests.support import ServerProcess, new_id

TIMEOUT = 30
STOP = pb.REASON_SMS_OPT_OUT_KEYWORD


@pytest.fixture
def ctl(server: ServerProcess) -> Any:
    """dndctl with ``--addr`` of the session server."""

    def run(*args: str) -> Any:
        return dndctl("--addr", server.addr, *args)

    return run


@pytest.fixture
def client(server: ServerProcess) -> Any:
    with DndClient(server.addr) as dnd:
        yield dnd


def seed(client: DndClient, loc: str) -> None:
    """Blocks of every kind the formats carry: manual blocks (one on all channels, one
    inbound), STOPs from numbers (SMS suppressions), email bounces and unsubscribes (EMAIL
    suppressions), and a suppression whose block was cleared (it outlives it)."""
    items = [
        factories.enable("", "m1"),
        factories.enable("", "m2", channel=None),
        factories.enable("", "m3", direction=pb.DIRECTION_INBOUND),
        factories.enable("", "m4", channel=pb.CHANNEL_EMAIL, note="asked by phone"),
    ]
    items += [
        factories.enable(
            "", f"s{i}", reason=STOP, source=pb.SOURCE_CONTACT, address=f"+1415555020{i}"
        )
        for i in range(3)
    ]
    items += [
        factories.enable(
            "",
            "b1",
            channel=pb.CHANNEL_EMAIL,
            reason=pb.REASON_EMAIL_HARD_BOUNCE,
            source=pb.SOURCE_SYSTEM,
            address="gone@example.com",
        ),
        factories.enable(
            "",
            "u1",
            channel=pb.CHANNEL_EMAIL,
            reason=pb.REASON_EMAIL_UNSUBSCRIBE_LINK,
            source=pb.SOURCE_CONTACT,
            address="bye@example.com",
        ),
    ]
    answer = client.bulk_set_dnd(loc, items)
    assert answer.changed == len(items)
    # The contact's block cleared without its address: the suppression stays.
    cleared = client.set_dnd(
        loc,
        "b1",
        action=DndAction.DISABLE,
        source=Source.SUPPORT,
        channel=Channel.EMAIL,
        suppression_removal_confirmed=True,
    )
    assert cleared.changed


def suppressions(client: DndClient, loc: str) -> list[tuple[int, str, int]]:
    found, token = [], ""
    while True:
        page = client.list_suppressions(loc, page_size=1000, page_token=token)
        found += [(s.channel, s.address, s.reason) for s in page.suppressions]
        token = page.next_page_token
        if not token:
            return sorted(found)


def blocks(client: DndClient, loc: str) -> list[tuple[str, int, str, int, str]]:
    page = client.list_blocks(loc, page_size=1000)
    return sorted(
        (
            b.contact_id,
            b.block.direction,
            str(b.block.scope),
            b.block.reason,
            b.block.address,
        )
        for b in page.blocks
    )


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_export_then_import_into_another_location_gives_the_same(
    ctl: Any, client: DndClient, loc: str, tmp_path: Path, fmt: str
) -> None:
    seed(client, loc)
    path = tmp_path / f"export.{fmt}"
    result = ctl("export", loc, "--format", fmt, "--file", str(path))
    assert result.returncode == 0, result.stderr
    assert re.fullmatch(r"exported \d+ rows to .*\n", result.stdout)
    text = path.read_text(encoding="utf-8")
    if fmt == "jsonl":
        rows = [json.loads(line) for line in text.splitlines()]
        text = text.replace(f'"location_id":"{loc}"', '"location_id":""')
    else:
        rows = text.splitlines()[1:]
        text = text.replace(f"{loc},", ",")
    # Eight blocks and the bounce suppression that outlived its block.
    assert len(rows) == 9
    path.write_text(text, encoding="utf-8")
    other = new_id("loc-copy")
    imported = ctl("import", fmt, str(path), "--location", other)
    assert imported.stdout == "applied 9, unchanged 0, rejected 0\n", imported.stderr
    assert suppressions(client, other) == suppressions(client, loc)
    # Every block comes back too (plus the one the lone suppression's row sets).
    assert set(blocks(client, loc)) <= set(blocks(client, other))
    assert len(blocks(client, other)) == len(blocks(client, loc)) + 1
    again = ctl("import", fmt, str(path), "--location", other)
    assert again.stdout == "applied 0, unchanged 9, rejected 0\n"


@pytest.mark.parametrize(
    ("fmt", "channel", "reasons"),
    [
        ("twilio", pb.CHANNEL_SMS, {STOP}),
        ("mailgun-bounces", pb.CHANNEL_EMAIL, {pb.REASON_EMAIL_HARD_BOUNCE}),
        ("mailgun-unsubscribes", pb.CHANNEL_EMAIL, {pb.REASON_EMAIL_UNSUBSCRIBE_LINK}),
    ],
)
def test_provider_formats_round_trip_their_suppressions(
    ctl: Any, client: DndClient, loc: str, tmp_path: Path, fmt: str, channel: int, reasons: set[int]
) -> None:
    seed(client, loc)
    path = tmp_path / "list.csv"
    result = ctl("export", loc, "--format", fmt, "--file", str(path))
    assert result.returncode == 0, result.stderr
    other = new_id("loc-copy")
    imported = ctl("import", fmt, str(path), "--location", other)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    wanted = [s for s in suppressions(client, loc) if s[0] == channel and s[2] in reasons]
    assert wanted and suppressions(client, other) == wanted


def test_export_to_standard_output_and_its_progress_on_a_terminal(
    server: ServerProcess, client: DndClient, loc: str
) -> None:
    seed(client, loc)
    result, drawn = on_a_terminal("--addr", server.addr, "export", loc, "--format", "twilio")
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert lines[0] == "phone_number,opt_out_date"
    assert [line.split(",")[0] for line in lines[1:]] == [f"+1415555020{i}" for i in range(3)]
    assert all(re.fullmatch(r"\+\d+,\d{4}-\d\d-\d\dT[\d:]+Z", line) for line in lines[1:])
    last = drawn.rstrip().split("\r")[-1]
    assert re.fullmatch(r"exported 3 rows\s+[\d.]+ rows/s", last), drawn


def test_import_sends_batches_and_reports_refused_items(
    ctl: Any, client: DndClient, loc: str, tmp_path: Path
) -> None:
    path = tmp_path / "many.csv"
    lines = ["contact_id,channel,reason,source"]
    lines += [f"c{i},SMS,MANUAL,USER" for i in range(25)]
    lines += ["c0,SMS,MANUAL,USER", "c1,EMAIL,SMS_OPT_OUT_KEYWORD,USER"]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = ctl("import", "csv", str(path), "--location", loc, "--batch-size", "10")
    assert result.returncode == 1
    out = result.stdout.splitlines()
    assert out[0] == "applied 25, unchanged 1, rejected 1"
    assert out[1].startswith("  line 28: INVALID_ARGUMENT") and "reason" in out[1]
    assert len(blocks(client, loc)) == 25
    bad = ctl("import", "csv", str(path), "--location", loc, "--batch-size", "10001")
    assert bad.returncode == 2
