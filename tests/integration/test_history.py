"""ListHistory over real gRPC: every effective change of a contact, newest first, every field,
opaque page tokens that stay stable while other writers add changes."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests.factories import set_dnd
from tests.support import (
    ALL_SCOPE,
    DISABLE,
    ENABLE,
    IN,
    OUT,
    Database,
    ServerProcess,
    bad_fields,
    channel_scope,
    error_details,
    new_id,
    stub_for,
)

TIMEOUT = 10
SMS, EMAIL, CALL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, pb.CHANNEL_CALL
PHONE_RAW, PHONE = "+1 (415) 555-0100", "+14155550100"
EMAIL_RAW, EMAIL_ADDR = "  Bob@Example.COM ", "bob@example.com"


def history(stub: Any, loc: str, contact: str, size: int = 0, token: str = "") -> Any:
    return stub.ListHistory(
        pb.ListHistoryRequest(
            location_id=loc, contact_id=contact, page_size=size, page_token=token
        ),
        timeout=TIMEOUT,
    )


def all_pages(stub: Any, loc: str, contact: str, size: int) -> tuple[list[Any], list[int]]:
    """Every entry, following next_page_token; and the length of each page."""
    entries: list[Any] = []
    sizes: list[int] = []
    token = ""
    for _ in range(1000):
        page = history(stub, loc, contact, size, token)
        entries.extend(page.entries)
        sizes.append(len(page.entries))
        token = page.next_page_token
        if not token:
            return entries, sizes
    raise AssertionError("paging never ended")


def toggle(stub: Any, loc: str, contact: str, n: int) -> None:
    """``n`` effective changes: enable / disable a MANUAL CALL block in turn."""
    for i in range(n):
        action = ENABLE if i % 2 == 0 else DISABLE
        answer = stub.SetDnd(
            set_dnd(loc, contact, action=action, scope=channel_scope(CALL)), timeout=TIMEOUT
        )
        assert answer.changed


def fields_of(entry: pb.HistoryEntry) -> tuple[Any, ...]:
    scope = "ALL" if entry.scope.WhichOneof("kind") == "all_channels" else entry.scope.channel
    return (
        entry.version,
        entry.enabled,
        entry.direction,
        scope,
        entry.reason,
        entry.source,
        entry.actor_id,
        entry.note,
        entry.evidence,
        entry.provider_detail,
        entry.address,
    )


def token_for(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# --- content ---------------------------------------------------------------------------------


def test_every_kind_of_change_is_listed_newest_first_with_every_field(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    started = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=5)
    answers = []

    def write(call: Any, request: Any) -> None:
        answers.append(call(request, timeout=TIMEOUT))

    # v1: a user blocks SMS by hand.
    write(stub.SetDnd, set_dnd(loc, contact, actor_id="user-7", note="asked on the phone"))
    # v2: a workflow blocks every channel.
    write(
        stub.SetDnd,
        set_dnd(loc, contact, scope=ALL_SCOPE, source=pb.SOURCE_WORKFLOW, actor_id="wf-1"),
    )
    # v3: inbound DND by a user.
    write(stub.SetDnd, set_dnd(loc, contact, direction=IN, scope=None, actor_id="user-7"))
    # v4, v5: the contact texts STOP: block + sender suppression.
    write(
        stub.ProcessInboundMessage,
        pb.ProcessInboundMessageRequest(
            location_id=loc, contact_id=contact, channel=SMS, body=" Stop. ", from_address=PHONE_RAW
        ),
    )
    # v6, v7: the carrier reports 30004 for the same number.
    write(
        stub.ReportSmsDeliveryFailure,
        pb.ReportSmsDeliveryFailureRequest(
            location_id=loc,
            contact_id=contact,
            to_address=PHONE_RAW,
            provider="twilio",
            error_code="30004",
        ),
    )
    # v8, v9: a spam complaint with the recipient address.
    write(
        stub.ReportEmailEvent,
        pb.ReportEmailEventRequest(
            location_id=loc,
            contact_id=contact,
            to_address=EMAIL_RAW,
            provider="mailgun",
            event=pb.EMAIL_EVENT_SPAM_COMPLAINT,
            provider_detail="550 spam",
        ),
    )
    # v10, v11: support lifts the complaint and its suppression, with evidence.
    write(
        stub.SetDnd,
        set_dnd(
            loc,
            contact,
            action=DISABLE,
            scope=channel_scope(EMAIL),
            source=pb.SOURCE_SUPPORT,
            actor_id="agent-3",
            note="ticket 42",
            evidence="recipient re-subscribed in writing",
            address=EMAIL_RAW,
        ),
    )
    # v12: the recipient clicks an unsubscribe link (source CONTACT).
    write(
        stub.ReportEmailEvent,
        pb.ReportEmailEventRequest(
            location_id=loc,
            contact_id=contact,
            provider="mailgun",
            event=pb.EMAIL_EVENT_UNSUBSCRIBE_LINK,
        ),
    )
    # v13: a user lifts inbound DND.
    write(stub.SetDnd, set_dnd(loc, contact, action=DISABLE, direction=IN, scope=None))
    # No effective change: duplicate enable, refused clear, ignored events. None is listed.
    assert not stub.SetDnd(set_dnd(loc, contact, actor_id="other"), timeout=TIMEOUT).changed
    with pytest.raises(grpc.RpcError) as refused:
        stub.SetDnd(set_dnd(loc, contact, action=DISABLE), timeout=TIMEOUT)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    ignored = stub.ReportSmsDeliveryFailure(
        pb.ReportSmsDeliveryFailureRequest(
            location_id=loc, contact_id=contact, provider="twilio", error_code="99999"
        ),
        timeout=TIMEOUT,
    )
    assert not ignored.changed
    help_msg = stub.ProcessInboundMessage(
        pb.ProcessInboundMessageRequest(
            location_id=loc, contact_id=contact, channel=SMS, body="HELP"
        ),
        timeout=TIMEOUT,
    )
    assert not help_msg.changed

    U, W, C, SY, SU = (
        pb.SOURCE_USER,
        pb.SOURCE_WORKFLOW,
        pb.SOURCE_CONTACT,
        pb.SOURCE_SYSTEM,
        pb.SOURCE_SUPPORT,
    )
    R = pb.Reason
    MANUAL, OPT_OUT, CARRIER = (
        R.REASON_MANUAL,
        R.REASON_SMS_OPT_OUT_KEYWORD,
        R.REASON_SMS_CARRIER_PERMANENT,
    )
    SPAM, UNSUB = R.REASON_EMAIL_SPAM_COMPLAINT, R.REASON_EMAIL_UNSUBSCRIBE_LINK
    stop, code, proof = "keyword:STOP", "error_code:30004", "recipient re-subscribed in writing"
    spam, unsub = "email_event:SPAM_COMPLAINT 550 spam", "email_event:UNSUBSCRIBE_LINK"
    expected = [
        (1, True, OUT, SMS, MANUAL, U, "user-7", "asked on the phone", "", "", ""),
        (2, True, OUT, "ALL", MANUAL, W, "wf-1", "", "", "", ""),
        (3, True, IN, "ALL", MANUAL, U, "user-7", "", "", "", ""),
        (4, True, OUT, SMS, OPT_OUT, C, PHONE, "", " Stop. ", stop, ""),
        (5, True, OUT, SMS, OPT_OUT, C, PHONE, "", " Stop. ", stop, PHONE),
        (6, True, OUT, SMS, CARRIER, SY, "twilio", "", "", code, ""),
        (7, True, OUT, SMS, CARRIER, SY, "twilio", "", "", code, PHONE),
        (8, True, OUT, EMAIL, SPAM, SY, "mailgun", "", "", spam, ""),
        (9, True, OUT, EMAIL, SPAM, SY, "mailgun", "", "", spam, EMAIL_ADDR),
        (10, False, OUT, EMAIL, SPAM, SU, "agent-3", "ticket 42", proof, "", ""),
        (11, False, OUT, EMAIL, SPAM, SU, "agent-3", "ticket 42", proof, "", EMAIL_ADDR),
        (12, True, OUT, EMAIL, UNSUB, C, "mailgun", "", "", unsub, ""),
        (13, False, IN, "ALL", MANUAL, U, "", "", "", "", ""),
    ]
    page = history(stub, loc, contact)
    assert page.next_page_token == ""
    assert [fields_of(e) for e in page.entries] == expected[::-1]

    # Time: set, within the test, newest first; cursors: distinct, and the cursor of each
    # write's last change is the cursor that write answered with.
    finished = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    times = [e.time.ToDatetime(dt.UTC) for e in page.entries]
    assert all(started <= t <= finished for t in times)
    assert times == sorted(times, reverse=True)
    cursors = [e.cursor for e in page.entries]
    assert all(cursors) and len(set(cursors)) == len(cursors)
    by_version = {e.version: e for e in page.entries}
    for answer in answers:
        assert by_version[answer.status.version].cursor == answer.cursor

    # The database log agrees, row for row.
    rows = db.fetch(
        "SELECT version, enabled, source, evidence, address FROM dnd_changes "
        "WHERE location_id = $1 AND contact_id = $2 ORDER BY seq DESC",
        loc,
        contact,
    )
    assert [r["version"] for r in rows] == [e.version for e in page.entries]
    assert [r["address"] for r in rows] == [e.address for e in page.entries]
    assert [r["evidence"] for r in rows] == [e.evidence for e in page.entries]
    status = stub.GetStatus(pb.GetStatusRequest(location_id=loc, contact_id=contact))
    assert status.status.version == 13


def test_support_clear_of_an_sms_opt_out_carries_its_evidence(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    stub.ProcessInboundMessage(
        pb.ProcessInboundMessageRequest(
            location_id=loc, contact_id=contact, channel=SMS, body="STOP", from_address=PHONE
        ),
        timeout=TIMEOUT,
    )
    evidence = "signed opt-in form #12\nscanned 2024-03-01"
    cleared = stub.SetDnd(
        set_dnd(
            loc,
            contact,
            action=DISABLE,
            source=pb.SOURCE_SUPPORT,
            actor_id="agent-9",
            evidence=evidence,
            address=PHONE,
        ),
        timeout=TIMEOUT,
    )
    assert cleared.changed
    entries = history(stub, loc, contact).entries
    assert [(e.version, e.enabled, e.address) for e in entries] == [
        (4, False, PHONE),
        (3, False, ""),
        (2, True, PHONE),
        (1, True, ""),
    ]
    for entry in entries[:2]:
        assert entry.source == pb.SOURCE_SUPPORT
        assert entry.actor_id == "agent-9"
        assert entry.evidence == evidence
        assert entry.reason == pb.REASON_SMS_OPT_OUT_KEYWORD
    assert (
        db.fetchval(
            "SELECT count(*) FROM dnd_changes WHERE location_id = $1 AND source = 'SUPPORT' "
            "AND evidence = $2",
            loc,
            evidence,
        )
        == 2
    )


def test_stop_then_start_is_listed_with_keywords_and_sender(
    stub: Any, loc: str, contact: str
) -> None:
    for body in ("stop", "Start!"):
        answer = stub.ProcessInboundMessage(
            pb.ProcessInboundMessageRequest(
                location_id=loc, contact_id=contact, channel=SMS, body=body, from_address=PHONE
            ),
            timeout=TIMEOUT,
        )
        assert answer.changed
    every = history(stub, loc, contact).entries
    # Lifting the opt-out records the sender's keyword consents (versions 5 and 6).
    assert [(e.version, e.kind) for e in every[:2]] == [
        (6, pb.CHANGE_KIND_CONSENT),
        (5, pb.CHANGE_KIND_CONSENT),
    ]
    assert all(e.consent.address == PHONE for e in every[:2])
    entries = every[2:]
    R = pb.REASON_SMS_OPT_OUT_KEYWORD
    assert [
        (
            e.version,
            e.enabled,
            e.reason,
            e.source,
            e.actor_id,
            e.evidence,
            e.provider_detail,
            e.address,
        )
        for e in entries
    ] == [
        (4, False, R, pb.SOURCE_CONTACT, PHONE, "Start!", "keyword:START", PHONE),
        (3, False, R, pb.SOURCE_CONTACT, PHONE, "Start!", "keyword:START", ""),
        (2, True, R, pb.SOURCE_CONTACT, PHONE, "stop", "keyword:STOP", PHONE),
        (1, True, R, pb.SOURCE_CONTACT, PHONE, "stop", "keyword:STOP", ""),
    ]
    assert all(e.direction == OUT and e.scope.channel == SMS for e in entries)


def test_contact_never_seen_has_empty_history(stub: Any, loc: str, contact: str) -> None:
    page = history(stub, loc, contact)
    assert list(page.entries) == []
    assert page.next_page_token == ""
    # The same contact id in another location is another contact.
    toggle(stub, loc, contact, 3)
    other = history(stub, new_id("loc"), contact)
    assert list(other.entries) == [] and other.next_page_token == ""
    same_loc_other_contact = history(stub, loc, contact + "-x")
    assert list(same_loc_other_contact.entries) == []
    assert len(history(stub, loc, contact).entries) == 3


# --- paging ----------------------------------------------------------------------------------


def test_pages_cover_every_change_once_newest_first(stub: Any, loc: str, contact: str) -> None:
    toggle(stub, loc, contact, 23)
    entries, sizes = all_pages(stub, loc, contact, 5)
    assert sizes == [5, 5, 5, 5, 3]
    token = history(stub, loc, contact, 5).next_page_token
    assert token and not token.isdigit() and token != "19", "page tokens are opaque"
    assert [e.version for e in entries] == list(range(23, 0, -1))
    full = history(stub, loc, contact, 500)
    assert list(full.entries) == entries
    assert full.next_page_token == ""


def test_exact_multiple_of_page_size_ends_without_token(stub: Any, loc: str, contact: str) -> None:
    toggle(stub, loc, contact, 10)
    entries, sizes = all_pages(stub, loc, contact, 5)
    assert sizes == [5, 5]
    assert [e.version for e in entries] == list(range(10, 0, -1))
    one = history(stub, loc, contact, 10)
    assert len(one.entries) == 10 and one.next_page_token == ""


def test_page_size_zero_means_fifty_and_500_is_allowed(stub: Any, loc: str, contact: str) -> None:
    toggle(stub, loc, contact, 55)
    first = history(stub, loc, contact, 0)
    assert [e.version for e in first.entries] == list(range(55, 5, -1))
    assert first.next_page_token
    rest = history(stub, loc, contact, 0, first.next_page_token)
    assert [e.version for e in rest.entries] == [5, 4, 3, 2, 1]
    assert rest.next_page_token == ""
    big = history(stub, loc, contact, 500)
    assert len(big.entries) == 55 and big.next_page_token == ""
    one = history(stub, loc, contact, 1)
    assert [e.version for e in one.entries] == [55] and one.next_page_token


async def test_paging_is_stable_under_concurrent_writes(
    server: ServerProcess, db: Database, loc: str, contact: str
) -> None:
    existing = 30
    async with grpc.aio.insecure_channel(server.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        for i in range(existing):
            action = ENABLE if i % 2 == 0 else DISABLE
            await stub.SetDnd(
                set_dnd(loc, contact, action=action, scope=channel_scope(CALL)), timeout=TIMEOUT
            )
        stop = asyncio.Event()
        progress = asyncio.Event()
        written = 0

        async def writer(chan: int) -> None:
            nonlocal written
            i = 0
            while not stop.is_set():
                action = ENABLE if i % 2 == 0 else DISABLE
                answer = await stub.SetDnd(
                    set_dnd(loc, contact, action=action, scope=channel_scope(chan)),
                    timeout=TIMEOUT,
                )
                assert answer.changed
                written += 1
                progress.set()
                i += 1

        seen: list[pb.HistoryEntry] = []
        first = await stub.ListHistory(
            pb.ListHistoryRequest(location_id=loc, contact_id=contact, page_size=4),
            timeout=TIMEOUT,
        )
        seen.extend(first.entries)
        token = first.next_page_token
        writers = [asyncio.create_task(writer(c)) for c in (SMS, EMAIL, pb.CHANNEL_GMB)]
        try:
            while token:
                # Let the writers add changes between every two pages.
                before = written
                while written < before + 2:
                    progress.clear()
                    await progress.wait()
                page = await stub.ListHistory(
                    pb.ListHistoryRequest(
                        location_id=loc, contact_id=contact, page_size=4, page_token=token
                    ),
                    timeout=TIMEOUT,
                )
                seen.extend(page.entries)
                token = page.next_page_token
        finally:
            stop.set()
            await asyncio.gather(*writers)
    versions = [e.version for e in seen]
    assert versions == list(range(existing, 0, -1)), "each change exactly once, newest first"
    assert len({e.cursor for e in seen}) == existing
    assert written >= 2 * 7, "writers must have run while paging"
    total = db.changes(loc)
    assert total == existing + written


# --- bad requests ----------------------------------------------------------------------------


def expect_invalid(stub: Any, request: pb.ListHistoryRequest, field: str) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListHistory(request, timeout=TIMEOUT)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    assert field in bad_fields(error)
    assert field in error.details()
    info = error_details(error)["ErrorInfo"]
    assert info.reason == "INVALID_ARGUMENT"
    assert field in info.metadata["fields"].split(",")


@pytest.mark.parametrize("size", [501, 1000, -1, -500, -(2**31)])
def test_page_size_out_of_range_is_refused(stub: Any, loc: str, contact: str, size: int) -> None:
    toggle(stub, loc, contact, 1)
    request = pb.ListHistoryRequest(location_id=loc, contact_id=contact, page_size=size)
    expect_invalid(stub, request, "page_size")


GARBAGE_TOKENS = {
    "word": "garbage",
    "punctuation": "!!!***",
    "base64-of-text": token_for("hello world"),
    "right-prefix-no-number": token_for("dndh1:"),
    "right-prefix-letters": token_for("dndh1:abc"),
    "right-prefix-negative": token_for("dndh1:-5"),
    "other-prefix": token_for("dndh2:5"),
    # The first, plaintext format: forgeable, so no longer accepted.
    "plaintext-format": token_for("dndh1:5"),
    "a-change-cursor": token_for("dnd1:5"),
    "unicode": "ページ",
}


@pytest.mark.parametrize("token", list(GARBAGE_TOKENS.values()), ids=list(GARBAGE_TOKENS))
def test_garbage_page_token_is_refused(stub: Any, loc: str, contact: str, token: str) -> None:
    toggle(stub, loc, contact, 3)
    request = pb.ListHistoryRequest(location_id=loc, contact_id=contact, page_token=token)
    expect_invalid(stub, request, "page_token")


def test_entry_cursor_is_not_a_page_token(stub: Any, loc: str, contact: str) -> None:
    toggle(stub, loc, contact, 3)
    cursor = history(stub, loc, contact).entries[0].cursor
    request = pb.ListHistoryRequest(location_id=loc, contact_id=contact, page_token=cursor)
    expect_invalid(stub, request, "page_token")


@pytest.fixture(scope="module")
def own_server(database_url: str) -> Iterator[ServerProcess]:
    """A server of this module alone: the forged tokens below make the server log an internal
    error, which must not show up in the session server's log other tests inspect."""
    process = ServerProcess(database_url).start()
    yield process
    process.stop()


@pytest.mark.parametrize(
    "number",
    ["9223372036854775808", "9999999999999999999"],
    ids=["int64-max-plus-one", "nineteen-nines"],
)
def test_forged_page_token_beyond_int64_is_refused(
    own_server: ServerProcess, loc: str, contact: str, number: str
) -> None:
    """A token shaped like ours but holding a number no version can have is garbage too."""
    with grpc.insecure_channel(own_server.addr) as channel:
        stub = stub_for(channel)
        toggle(stub, loc, contact, 3)
        request = pb.ListHistoryRequest(
            location_id=loc, contact_id=contact, page_token=token_for(f"dndh1:{number}")
        )
        expect_invalid(stub, request, "page_token")


@pytest.mark.parametrize("field", ["location_id", "contact_id"])
@pytest.mark.parametrize(
    "value", ["", "x" * 129, "a\x00b", "a\nb"], ids=["empty", "129", "nul", "nl"]
)
def test_bad_identifier_is_refused(
    stub: Any, loc: str, contact: str, field: str, value: str
) -> None:
    ids = {"location_id": loc, "contact_id": contact, field: value}
    expect_invalid(stub, pb.ListHistoryRequest(**ids), field)


def test_every_problem_reported_at_once(stub: Any) -> None:
    request = pb.ListHistoryRequest(
        location_id="", contact_id="c" * 129, page_size=501, page_token="nope"
    )
    with pytest.raises(grpc.RpcError) as caught:
        stub.ListHistory(request, timeout=TIMEOUT)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(bad_fields(caught.value)) == [
        "contact_id",
        "location_id",
        "page_size",
        "page_token",
    ]
