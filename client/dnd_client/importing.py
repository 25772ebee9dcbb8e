"""Loading opt-out lists into dnd-service: Twilio opt-out exports, Mailgun bounce /
unsubscribe / complaint exports, and plain CSV. Each row becomes one write that is naturally
idempotent (adding an active block changes nothing), so re-running a file changes nothing."""

from __future__ import annotations

import asyncio
import csv
import io
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TextIO, TypeVar

from dnd_client._requests import DndAction
from dnd_client.aio import AsyncDndClient
from dnd_client.errors import DndError, Unavailable
from dnd_client.types import Channel, EmailEvent, Reason, Source

FORMATS = ("twilio", "mailgun-bounces", "mailgun-unsubscribes", "mailgun-complaints", "csv")

_PHONE_COLUMNS = ("phone_number", "phone number", "phonenumber", "phone", "number", "to", "from")
_EMAIL_COLUMNS = ("address", "email", "email_address", "recipient")

Write = Callable[[AsyncDndClient], Awaitable[bool]]


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
    fieldnames = ["phone_number"] if fmt == "twilio" and not _has_header(text) else None
    reader = csv.DictReader(io.StringIO(text), fieldnames=fieldnames)
    if reader.fieldnames is None:
        return
    last = (reader.fieldnames[-1] or "").strip().lower()
    for row in reader:
        line = reader.line_num
        extra = row.pop(None, None)
        cleaned = {(k or "").strip().lower(): (v or "").strip() for k, v in row.items()}
        if extra:
            cleaned[last] = ",".join([cleaned.get(last, ""), *extra]).strip()
        if not any(cleaned.values()):
            continue
        yield line, cleaned


def _pick(row: dict[str, str], names: tuple[str, ...], what: str) -> str:
    for name in names:
        if row.get(name):
            return row[name]
    raise RowError(f"no {what} column ({', '.join(names)}) or it is empty")


def plan_row(fmt: str, row: dict[str, str], location_id: str, actor: str) -> Write:
    """The write one row asks for; RowError when the row is unusable."""
    if fmt == "twilio":
        phone = _pick(row, _PHONE_COLUMNS, "phone number")

        async def opt_out(client: AsyncDndClient) -> bool:
            answer = await client.set_dnd(
                location_id,
                phone,
                action=_enable(),
                source=Source.CONTACT,
                channel=Channel.SMS,
                reason=Reason.SMS_OPT_OUT_KEYWORD,
                actor_id=actor,
                note="imported from a Twilio opt-out export",
                provider_detail="import:twilio",
                address=phone,
            )
            return answer.changed

        return opt_out
    if fmt.startswith("mailgun-"):
        email = _pick(row, _EMAIL_COLUMNS, "email address")
        event = {
            "mailgun-bounces": EmailEvent.BOUNCE,
            "mailgun-unsubscribes": EmailEvent.UNSUBSCRIBE_LINK,
            "mailgun-complaints": EmailEvent.SPAM_COMPLAINT,
        }[fmt]
        detail = " ".join(x for x in (row.get("code", ""), row.get("error", "")) if x)[:180]

        async def email_event(client: AsyncDndClient) -> bool:
            answer = await client.report_email_event(
                location_id,
                email,
                provider="mailgun",
                event=event,
                to_address=email,
                provider_detail=detail,
            )
            return answer.changed

        return email_event
    if fmt == "csv":
        location = row.get("location_id") or row.get("location") or location_id
        contact = _pick(row, ("contact_id", "contact"), "contact id")
        channel = _enum(Channel, _pick(row, ("channel",), "channel"), "channel")
        reason = _enum(Reason, row.get("reason") or "MANUAL", "reason")
        source = _enum(Source, row.get("source") or "USER", "source")
        address = row.get("address") or None
        if not location:
            raise RowError("no location_id column and no --location given")

        async def enable(client: AsyncDndClient) -> bool:
            answer = await client.set_dnd(
                location,
                contact,
                action=_enable(),
                source=source,
                channel=channel,
                reason=reason,
                actor_id=actor,
                note=row.get("note", "")[:1000] or "imported from CSV",
                address=address,
            )
            return answer.changed

        return enable
    raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")


def _enable() -> DndAction:
    return DndAction.ENABLE


_E = TypeVar("_E", Channel, Reason, Source)


def _enum(cls: type[_E], value: str, what: str) -> _E:
    name = value.strip().upper()
    for prefix in ("CHANNEL_", "REASON_", "SOURCE_"):
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
) -> Summary:
    """Apply every usable row with at most ``concurrency`` calls in flight; a bad row is
    recorded with its line number and never stops the others."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    summary = Summary()
    queue: asyncio.Queue[tuple[int, dict[str, str]] | None] = asyncio.Queue(concurrency * 2)
    done = 0

    async def worker() -> None:
        nonlocal done
        while (item := await queue.get()) is not None:
            line, row = item
            try:
                write = plan_row(fmt, row, location_id, actor)
                for attempt in range(1, attempts + 1):
                    try:
                        changed = await write(client)
                        break
                    except Unavailable:
                        if attempt == attempts:
                            raise
                        await asyncio.sleep(0.2 * attempt)
                if changed:
                    summary.applied += 1
                else:
                    summary.unchanged += 1
            except (RowError, DndError) as error:
                summary.rejected.append((line, str(error)))
            done += 1
            if progress:
                progress.update(done)

    workers = [asyncio.create_task(worker()) for _ in range(max(1, concurrency))]
    for item in _rows(text, fmt):
        await queue.put(item)
    for _ in workers:
        await queue.put(None)
    await asyncio.gather(*workers)
    if progress:
        progress.finish(done)
    summary.rejected.sort()
    return summary


def _has_header(text: str) -> bool:
    first = text.lstrip().split("\n", 1)[0].strip().lower()
    return any(c.isalpha() for c in first)


def count_rows(text: str, fmt: str) -> int:
    return sum(1 for _ in _rows(text, fmt))
