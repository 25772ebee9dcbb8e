"""Writing a location's blocks and suppressions out of dnd-service (``dndctl export``), in the
shapes ``dndctl import`` reads back: ``csv`` and ``jsonl`` (one row per block, plus one per
suppression no exported block carries), ``twilio`` (the SMS suppressions as a Twilio opt-out
list) and the Mailgun lists (the EMAIL suppressions of their reasons)."""

from __future__ import annotations

import csv
import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TextIO

from dnd.v1 import dnd_pb2 as pb

from dnd_client.types import Channel, Direction, Reason, Source

EXPORT_FORMATS = (
    "csv",
    "jsonl",
    "twilio",
    "mailgun-bounces",
    "mailgun-unsubscribes",
    "mailgun-complaints",
)

# The columns of ``csv`` (``jsonl`` has the same keys), as ``dndctl import csv`` reads them.
CSV_COLUMNS = (
    "location_id",
    "contact_id",
    "direction",
    "channel",
    "reason",
    "source",
    "address",
    "actor_id",
    "note",
    "evidence",
    "provider_detail",
    "since",
)

# The EMAIL suppression reasons each Mailgun list holds.
MAILGUN_REASONS: dict[str, frozenset[Reason]] = {
    "mailgun-bounces": frozenset(
        {Reason.EMAIL_HARD_BOUNCE, Reason.EMAIL_SUPPRESS_BOUNCE, Reason.EMAIL_GENERIC_FAILURE}
    ),
    "mailgun-unsubscribes": frozenset(
        {
            Reason.EMAIL_UNSUBSCRIBE_LINK,
            Reason.EMAIL_SUPPRESS_UNSUBSCRIBE,
            Reason.EMAIL_MARKETING_UNSUBSCRIBE,
        }
    ),
    "mailgun-complaints": frozenset({Reason.EMAIL_SPAM_COMPLAINT, Reason.EMAIL_SUPPRESS_COMPLAINT}),
}


def _since(message: pb.Block | pb.AddressSuppression) -> str:
    if not message.HasField("since"):
        return ""
    return str(message.since.ToDatetime().strftime("%Y-%m-%dT%H:%M:%SZ"))


def block_row(location_id: str, listed: pb.ListedBlock) -> dict[str, str]:
    block = listed.block
    channel = "ALL" if not block.scope.HasField("channel") else Channel(block.scope.channel).name
    return {
        "location_id": location_id,
        "contact_id": listed.contact_id,
        "direction": Direction(block.direction).name,
        "channel": channel,
        "reason": Reason(block.reason).name,
        "source": Source(block.source).name,
        "address": block.address,
        "actor_id": block.actor_id,
        "note": block.note,
        "evidence": block.evidence,
        "provider_detail": block.provider_detail,
        "since": _since(block),
    }


def suppression_row(location_id: str, suppression: pb.AddressSuppression) -> dict[str, str]:
    return {
        "location_id": location_id,
        "contact_id": suppression.contact_id,
        "direction": "OUTBOUND",
        "channel": Channel(suppression.channel).name,
        "reason": Reason(suppression.reason).name,
        "source": Source(suppression.source).name,
        "address": suppression.address,
        "actor_id": suppression.actor_id,
        "note": "",
        "evidence": "",
        "provider_detail": suppression.provider_detail,
        "since": _since(suppression),
    }


# A cell a spreadsheet would run as a formula starts with one of these ("+" and "-" unless
# digits alone follow, as in a phone number): ``csv_cell`` quotes it with "'", ``csv_value``
# (the importer's) removes the quote again.
FORMULA_STARTS = "=+-@\t\r"


def csv_cell(value: str) -> str:
    """``value`` safe in a spreadsheet: a leading "'" before a cell that would be a formula
    (and before a value already starting with "'", so the import gives back the value)."""
    if not value:
        return value
    first = value[0]
    if first == "'" or (first in FORMULA_STARTS and not (first in "+-" and value[1:].isdigit())):
        return "'" + value
    return value


def csv_value(cell: str) -> str:
    """A cell as ``csv_cell`` wrote it, without the quote it added."""
    if len(cell) > 1 and cell[0] == "'" and (cell[1] == "'" or cell[1] in FORMULA_STARTS):
        return cell[1:]
    return cell


def _carried(row: dict[str, str]) -> tuple[str, str, str, str]:
    """What of a row an import turns into an address suppression: its key."""
    return (row["contact_id"], row["channel"], row["reason"], row["address"])


class Rows:
    """The rows of an export's messages in one format. Blocks come first (the export's
    order): a suppression an exported block carries (same contact, channel, reason and
    address, which its import sets again) is not written twice. Memory grows with the
    location's blocks that carry an address only for csv/jsonl."""

    def __init__(self, fmt: str, location_id: str) -> None:
        if fmt not in EXPORT_FORMATS:
            raise ValueError(f"unknown format {fmt!r}; one of {', '.join(EXPORT_FORMATS)}")
        self.fmt = fmt
        self.location_id = location_id
        self._carried: set[tuple[str, str, str, str]] = set()
        self._seen_addresses: set[tuple[int, str]] = set()

    def of(self, message: pb.ExportSuppressionsResponse) -> Iterator[dict[str, str]]:
        if self.fmt in ("csv", "jsonl"):
            for listed in message.blocks:
                row = block_row(self.location_id, listed)
                if row["address"]:
                    self._carried.add(_carried(row))
                yield row
            for suppression in message.suppressions:
                row = suppression_row(self.location_id, suppression)
                if _carried(row) not in self._carried:
                    yield row
            return
        for suppression in message.suppressions:
            if self.fmt == "twilio":
                if suppression.channel != pb.CHANNEL_SMS:
                    continue
            elif (
                suppression.channel != pb.CHANNEL_EMAIL
                or Reason(suppression.reason) not in MAILGUN_REASONS[self.fmt]
            ):
                continue
            # A provider list names each address once.
            key = (suppression.channel, suppression.address)
            if key in self._seen_addresses:
                continue
            self._seen_addresses.add(key)
            if self.fmt == "twilio":
                yield {"phone_number": suppression.address, "opt_out_date": _since(suppression)}
            else:
                yield {
                    "address": suppression.address,
                    "code": "",
                    "error": suppression.provider_detail,
                    "created_at": _since(suppression),
                }


def columns(fmt: str) -> tuple[str, ...]:
    if fmt == "twilio":
        return ("phone_number", "opt_out_date")
    if fmt.startswith("mailgun-"):
        return ("address", "code", "error", "created_at")
    return CSV_COLUMNS


class Counter:
    """Rows written and their rate, drawn on one line of a terminal (nothing otherwise)."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < 0.1):
            return
        self._drawn = now
        rate = done / max(now - self.started, 1e-9)
        self.stream.write(f"\rexported {done} rows {rate:9.1f} rows/s")
        self.stream.flush()

    def finish(self, done: int) -> None:
        self.update(done, force=True)
        if self.enabled:
            self.stream.write("\n")


def write_export(
    messages: Iterable[pb.ExportSuppressionsResponse],
    fmt: str,
    location_id: str,
    out: TextIO,
    counter: Counter | None = None,
) -> int:
    """Write every row of ``messages`` to ``out`` in ``fmt``; the number of rows."""
    rows = Rows(fmt, location_id)
    writer = None
    if fmt != "jsonl":
        writer = csv.DictWriter(out, fieldnames=list(columns(fmt)), lineterminator="\n")
        writer.writeheader()
    done = 0
    for message in messages:
        for row in rows.of(message):
            if writer is None:
                out.write(json.dumps(row, separators=(",", ":")) + "\n")
            else:
                writer.writerow({k: csv_cell(v) for k, v in row.items()})
            done += 1
        if counter is not None:
            counter.update(done)
    if counter is not None:
        counter.finish(done)
    return done
