"""Loading opt-out lists into dnd-service: Twilio opt-out exports, Mailgun bounce /
unsubscribe / complaint exports, plain CSV and JSON lines (the shapes ``dndctl export``
writes). Each row becomes one BulkSetDnd item that is naturally idempotent (adding an active
block changes nothing), so re-running a file changes nothing."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

from dnd.v1 import dnd_pb2 as pb

from dnd_client._requests import DndAction, bulk_item
from dnd_client.aio import AsyncDndClient
from dnd_client.errors import DndError
from dnd_client.exporting import csv_value
from dnd_client.types import Channel, Direction, Reason, Source

FORMATS = (
    "twilio",
    "mailgun-bounces",
    "mailgun-unsubscribes",
    "mailgun-complaints",
    "csv",
    "jsonl",
)
# The most items one BulkSetDnd takes.
BULK_ITEMS_MAX = 10_000

_PHONE_COLUMNS = ("phone_number", "phone number", "phonenumber", "phone", "number", "to", "from")
_EMAIL_COLUMNS = ("address", "email", "email_address", "recipient")


class RowError(ValueError):
    """A line that cannot be imported."""


@dataclass
class Summary:
    applied: int = 0
    unchanged: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.applied + self.unchanged + len(self.rejected)

    def as_dict(self) -> dict[str, object]:
        return {
            "applied": self.applied,
            "unchanged": self.unchanged,
            "rejected": [{"line": n, "error": e} for n, e in self.rejected],
        }


def _rows(text: str, fmt: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row with lower-cased keys) for each data row. A Twilio list may come
    without a header (one number per line); fields beyond the header (an unquoted comma in an
    error text) are joined back into the last column."""
    if fmt == "jsonl":
        yield from _json_rows(text)
        return
    # Blank lines before the header (or the first number) are skipped, the lines still counted.
    body = text.lstrip("\r\n\t ")
    skipped = text[: len(text) - len(body)].count("\n")
    fieldnames = ["phone_number"] if fmt == "twilio" and not _has_header(body) else None
    reader = csv.DictReader(io.StringIO(body), fieldnames=fieldnames)
    if not reader.fieldnames:
        return
    last = (reader.fieldnames[-1] or "").strip().lower()
    for row in reader:
        line = reader.line_num + skipped
        extra = row.pop(None, None)
        cleaned = {(k or "").strip().lower(): csv_value((v or "").strip()) for k, v in row.items()}
        if extra:
            cleaned[last] = ",".join([cleaned.get(last, ""), *extra]).strip()
        if not any(cleaned.values()):
            continue
        yield line, cleaned


def _json_rows(text: str) -> Iterator[tuple[int, dict[str, str]]]:
    """(line number, row with lower-cased keys) of each JSON object line; a line that is not
    one becomes a row that plan_row rejects."""
    for line, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            value = json.loads(raw)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            yield line, {"": "not a JSON object"}
            continue
        yield (
            line,
            {
                str(k).strip().lower(): str(v if v is not None else "").strip()
                for k, v in value.items()
            },
        )


def _pick(row: dict[str, str], names: tuple[str, ...], what: str) -> str:
    for name in names:
        if row.get(name):
            return row[name]
    raise RowError(f"no {what} column ({', '.join(names)}) or it is empty")


@dataclass(frozen=True, slots=True)
class Planned:
    """The write one row asks for: a BulkSetDnd item of ``location_id``."""

    location_id: str
    item: pb.SetDndRequest


# Reasons whose blocks are marketing-only opt-outs (set with scope.marketing_only).
_MARKETING_ONLY = frozenset(
    {
        Reason.MARKETING_OPT_OUT,
        Reason.WHATSAPP_MARKETING_OPT_OUT,
        Reason.EMAIL_MARKETING_UNSUBSCRIBE,
    }
)

_MAILGUN_EFFECTS = {
    # As ReportEmailEvent applies them (the provider's event, by the source it acts as).
    "mailgun-bounces": (Reason.EMAIL_HARD_BOUNCE, Source.SYSTEM),
    "mailgun-unsubscribes": (Reason.EMAIL_UNSUBSCRIBE_LINK, Source.CONTACT),
    "mailgun-complaints": (Reason.EMAIL_SPAM_COMPLAINT, Source.SYSTEM),
}


def plan_row(fmt: str, row: dict[str, str], location_id: str, actor: str) -> Planned:
    """The write one row asks for; RowError when the row is unusable."""
    if fmt == "twilio":
        phone = _pick(row, _PHONE_COLUMNS, "phone number")
        item = bulk_item(
            phone,
            action=DndAction.ENABLE,
            source=Source.CONTACT,
            channel=Channel.SMS,
            reason=Reason.SMS_OPT_OUT_KEYWORD,
            actor_id=actor,
            note="imported from a Twilio opt-out export",
            provider_detail="import:twilio",
            address=phone,
        )
        return Planned(location_id, item)
    if fmt.startswith("mailgun-"):
        email = _pick(row, _EMAIL_COLUMNS, "email address")
        reason, source = _MAILGUN_EFFECTS[fmt]
        detail = " ".join(x for x in (row.get("code", ""), row.get("error", "")) if x)[:180]
        item = bulk_item(
            email,
            action=DndAction.ENABLE,
            source=source,
            channel=Channel.EMAIL,
            reason=reason,
            actor_id="mailgun",
            provider_detail=detail,
            address=email,
        )
        return Planned(location_id, item)
    if fmt in ("csv", "jsonl"):
        # ``--location`` puts every row into that location (a file exported from one location
        # loads into another); without it each row goes to the location it names.
        location = location_id or row.get("location_id") or row.get("location") or ""
        contact = _pick(row, ("contact_id", "contact"), "contact id")
        direction = _enum(Direction, row.get("direction") or "OUTBOUND", "direction")
        named = _pick(row, ("channel",), "channel") if direction is Direction.OUTBOUND else ""
        every = named.strip().upper() in ("ALL", "ALL_CHANNELS")
        channel = None if every or not named else _enum(Channel, named, "channel")
        reason = _enum(Reason, row.get("reason") or "MANUAL", "reason")
        source = _enum(Source, row.get("source") or "USER", "source")
        address = row.get("address") or None
        if not location:
            raise RowError("no location_id column and no --location given")
        try:
            item = bulk_item(
                contact,
                action=DndAction.ENABLE,
                source=source,
                direction=direction,
                channel=channel,
                all_channels=every,
                marketing_only=reason in _MARKETING_ONLY,
                reason=reason,
                actor_id=row.get("actor_id") or actor,
                note=row.get("note", "")[:1000] or f"imported from {fmt.upper()}",
                evidence=row.get("evidence", ""),
                provider_detail=row.get("provider_detail", ""),
                address=address,
            )
        except ValueError as error:
            raise RowError(str(error)) from None
        return Planned(location, item)
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


_E = TypeVar("_E", Channel, Direction, Reason, Source)


def _enum(cls: type[_E], value: str, what: str) -> _E:
    name = value.strip().upper()
    for prefix in ("CHANNEL_", "DIRECTION_", "REASON_", "SOURCE_"):
        name = name.removeprefix(prefix)
    try:
        return cls[name]
    except KeyError:
        choices = ", ".join(m.name for m in cls)
        raise RowError(f"unknown {what} {value!r}; one of {choices}") from None


class Progress:
    """A one-line progress bar with rate and ETA, drawn only on a terminal."""

    def __init__(self, total: int, stream: TextIO = sys.stderr) -> None:
        self.total = total
        self.stream = stream
        self.enabled = stream.isatty()
        self.started = time.monotonic()
        self._drawn = 0.0

    def update(self, done: int, force: bool = False) -> None:
        now = time.monotonic()
        if not self.enabled or (not force and now - self._drawn < 0.1):
            return
        self._drawn = now
        elapsed = max(now - self.started, 1e-9)
        rate = done / elapsed
        share = done / self.total if self.total else 1.0
        bar = "#" * int(share * 30)
        eta = (self.total - done) / rate if rate > 0 else 0.0
        self.stream.write(
            f"\r[{bar:<30}] {done}/{self.total} {share:4.0%} {rate:7.1f}/s ETA {eta:5.0f}s"
        )
        self.stream.flush()

    def finish(self, done: int) -> None:
        self.update(done, force=True)
        if self.enabled:
            self.stream.write("\n")


async def run_import(
    client: AsyncDndClient,
    fmt: str,
    text: str,
    location_id: str,
    actor: str = "dndctl-import",
    concurrency: int = 16,
    progress: Progress | None = None,
    attempts: int = 3,
    batch_size: int = 1000,
) -> Summary:
    """Apply every usable row through BulkSetDnd, ``batch_size`` rows a call: a location's
    batches one after another (its rows apply in file order), up to ``concurrency``
    locations at once. Each call has an idempotency key of its own, so the client's retries
    after UNAVAILABLE (``attempts``) finish it without applying a row twice. A bad row, a
    refused or invalid item is recorded with its line number and never stops the others."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    if not 1 <= batch_size <= BULK_ITEMS_MAX:
        raise ValueError(f"--batch-size must be between 1 and {BULK_ITEMS_MAX}")
    summary = Summary()
    by_location: dict[str, list[tuple[int, pb.SetDndRequest]]] = {}
    for line, row in _rows(text, fmt):
        try:
            planned = plan_row(fmt, row, location_id, actor)
        except RowError as error:
            summary.rejected.append((line, str(error)))
            continue
        by_location.setdefault(planned.location_id, []).append((line, planned.item))
    done = len(summary.rejected)
    run = uuid.uuid4().hex[:16]
    slots = asyncio.Semaphore(max(1, concurrency))

    async def load(location: str, rows: list[tuple[int, pb.SetDndRequest]]) -> None:
        nonlocal done
        async with slots:
            for number, at in enumerate(range(0, len(rows), batch_size)):
                batch = rows[at : at + batch_size]
                await _send(client, location, batch, f"import-{run}-{location}-{number}", summary)
                done += len(batch)
                if progress:
                    progress.update(done)

    await asyncio.gather(*(load(loc, rows) for loc, rows in by_location.items()))
    if progress:
        progress.finish(done)
    summary.rejected.sort()
    return summary


async def _send(
    client: AsyncDndClient,
    location: str,
    batch: list[tuple[int, pb.SetDndRequest]],
    key: str,
    summary: Summary,
) -> None:
    try:
        answer = await client.bulk_set_dnd(location, [i for _, i in batch], idempotency_key=key)
    except DndError as error:
        summary.rejected.extend((line, str(error)) for line, _ in batch)
        return
    for (line, _), result in zip(batch, answer.results, strict=True):
        outcome = result.outcome
        if outcome == pb.BULK_ITEM_OUTCOME_CHANGED:
            summary.applied += 1
        elif outcome == pb.BULK_ITEM_OUTCOME_UNCHANGED:
            summary.unchanged += 1
        else:
            summary.rejected.append((line, _item_error(result)))


def _item_error(result: pb.BulkItemResult) -> str:
    """A refused or invalid item's error, as SetDnd's status would read."""
    if result.outcome == pb.BULK_ITEM_OUTCOME_REFUSED:
        found = "; ".join(
            f"{Reason(r.reason).name} on {r.subject}: {r.description}" for r in result.refusals
        )
        return f"FAILED_PRECONDITION: clear refused, nothing was changed: {found}"
    if result.outcome == pb.BULK_ITEM_OUTCOME_VERSION_MISMATCH:
        return f"ABORTED: the contact is at version {result.version}"
    found = "; ".join(
        f"{v.field.partition('].')[2] or v.field}: {v.description}" for v in result.violations
    )
    return f"INVALID_ARGUMENT: invalid request: {found}"


def _has_header(text: str) -> bool:
    """Whether a Twilio list starts with a header: its first field names a column (letters,
    no digits), where a number ("+14155550100", "tel:+14155550100") has digits."""
    first = text.lstrip().split("\n", 1)[0].split(",", 1)[0].strip()
    return any(c.isalpha() for c in first) and not any(c.isdigit() for c in first)


def count_rows(text: str, fmt: str) -> int:
    return sum(1 for _ in _rows(text, fmt))
