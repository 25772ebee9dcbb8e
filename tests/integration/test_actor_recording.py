"""Every change records who really made it, over real gRPC and real PostgreSQL.

Beside the caller-supplied ``actor_id``, each change carries the authenticated caller: the
token's name on a server with a tokens file, ``anonymous <peer>`` on an open one. It shows in
the change log, ``ListHistory``, ``WatchChanges`` events and the RPC's log line.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from dnd_server.auth import hash_token

from tests import factories
from tests.support import DISABLE, ENABLE, Database, ServerProcess, new_id

T = 10.0
SMS, EMAIL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL
PHONE = "+14155552671"
EMAIL_ADDRESS = "pat@example.com"
PROOF = "signed opt-in form, 2024-03-01"
LOC = new_id("loc-rec")
DESK, BACKEND = "compliance-desk", "crm-backend"
TOKENS = {name: f"secret-{name}-{uuid.uuid4().hex}" for name in (DESK, BACKEND)}
# Open mode: "anonymous" and the client's address as gRPC reports it.
ANONYMOUS = re.compile(r"^anonymous ipv4:127\.0\.0\.1:\d+$")

Metadata = tuple[tuple[str, str], ...]
Stub = dnd_pb2_grpc.DndServiceStub


def bearer(name: str) -> Metadata:
    return (("authorization", f"Bearer {TOKENS[name]}"),)


@pytest.fixture(scope="module")
def secured(fresh_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    scopes = ["read", "write", "contact", "watch"]
    entries = [
        {
            "name": DESK,
            "sha256": hash_token(TOKENS[DESK]),
            "locations": "*",
            "scopes": [*scopes, "support"],
        },
        {
            "name": BACKEND,
            "sha256": hash_token(TOKENS[BACKEND]),
            "locations": [LOC],
            "scopes": scopes,
        },
    ]
    path: Path = tmp_path_factory.mktemp("recording") / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}), encoding="utf-8")
    process = ServerProcess(fresh_database(), {"DND_TOKENS_FILE": str(path)}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def sstub(secured: ServerProcess) -> Iterator[Stub]:
    with grpc.insecure_channel(secured.addr) as channel:
        yield dnd_pb2_grpc.DndServiceStub(channel)


@pytest.fixture(scope="module")
def sdb(secured: ServerProcess) -> Database:
    return Database(secured.database_url)


def set_dnd(
    stub: Stub, md: Metadata, loc: str, contact: str, action: int, **kw: Any
) -> pb.SetDndResponse:
    return stub.SetDnd(factories.set_dnd(loc, contact, action, **kw), metadata=md, timeout=T)


def history(stub: Stub, md: Metadata, loc: str, **kw: Any) -> list[pb.HistoryEntry]:
    request = factories.history(loc, page_size=500, **kw)
    return list(stub.ListHistory(request, metadata=md, timeout=T).entries)


def watch(stub: Stub, md: Metadata, loc: str, after: str, count: int) -> list[pb.ChangeEvent]:
    """The first ``count`` events of ``loc`` after the cursor ``after``."""
    call = stub.WatchChanges(
        pb.WatchChangesRequest(location_ids=[loc], after_cursor=after), metadata=md, timeout=20
    )
    events: list[pb.ChangeEvent] = []
    try:
        for message in call:
            if message.HasField("event"):
                events.append(message.event)
                if len(events) == count:
                    break
    finally:
        call.cancel()
    return events


def rpc_line(server: ServerProcess, method: str, loc: str, code: str = "OK") -> dict[str, Any]:
    """The server's log line of a ``method`` call on ``loc`` that ended with ``code``."""
    return server.wait_log({"event": "rpc", "method": method, "location_id": loc, "code": code})


# --- with tokens ----------------------------------------------------------------------------------


def test_every_write_records_its_authenticated_caller_beside_actor_id(
    sstub: Stub, sdb: Database
) -> None:
    contact = new_id("contact")
    md = bearer(BACKEND)
    # The backend says the change is the desk's: actor_id is what it says, not who it is.
    set_dnd(sstub, md, LOC, contact, ENABLE, actor_id=DESK, note="asked by phone")
    sstub.ProcessInboundMessage(
        pb.ProcessInboundMessageRequest(
            location_id=LOC, contact_id=contact, channel=SMS, body="STOP", from_address=PHONE
        ),
        metadata=md,
        timeout=T,
    )
    sstub.ReportSmsDeliveryFailure(
        pb.ReportSmsDeliveryFailureRequest(
            location_id=LOC, contact_id=contact, provider="twilio", error_code="30004"
        ),
        metadata=md,
        timeout=T,
    )
    sstub.ReportEmailEvent(
        pb.ReportEmailEventRequest(
            location_id=LOC,
            contact_id=contact,
            provider="mailgun",
            event=pb.EMAIL_EVENT_UNSUBSCRIBE_LINK,
            to_address=EMAIL_ADDRESS,
        ),
        metadata=md,
        timeout=T,
    )
    # Support lifts the opt-out (block and number), naming itself "agent-3".
    set_dnd(
        sstub,
        bearer(DESK),
        LOC,
        contact,
        DISABLE,
        source=pb.SOURCE_SUPPORT,
        reason=pb.REASON_SMS_OPT_OUT_KEYWORD,
        evidence=PROOF,
        actor_id="agent-3",
        address=PHONE,
    )
    entries = history(sstub, bearer(DESK), LOC, contact_id=contact)
    recorded = [(e.version, e.actor_id, e.authenticated_caller) for e in entries]
    assert recorded == [
        (8, "agent-3", DESK),
        (7, "agent-3", DESK),
        (6, "mailgun", BACKEND),
        (5, "mailgun", BACKEND),
        (4, "twilio", BACKEND),
        (3, PHONE, BACKEND),
        (2, PHONE, BACKEND),
        (1, DESK, BACKEND),
    ]
    rows = sdb.fetch(
        "SELECT version, actor_id, caller FROM dnd_changes WHERE location_id = $1"
        " AND contact_id = $2 ORDER BY seq DESC",
        LOC,
        contact,
    )
    assert [tuple(r) for r in rows] == recorded
    # The same answer whoever reads it.
    assert history(sstub, md, LOC, contact_id=contact) == entries


def test_an_idempotent_retry_by_another_caller_records_nothing_new(
    sstub: Stub, sdb: Database
) -> None:
    contact = new_id("contact")
    key = new_id("key")
    first = set_dnd(sstub, bearer(BACKEND), LOC, contact, ENABLE, idempotency_key=key)
    again = set_dnd(sstub, bearer(DESK), LOC, contact, ENABLE, idempotency_key=key)
    assert again == first
    [entry] = history(sstub, bearer(DESK), LOC, contact_id=contact)
    assert entry.authenticated_caller == BACKEND


def test_watch_events_carry_the_authenticated_caller(sstub: Stub) -> None:
    contact, other = new_id("contact"), new_id("contact")
    start = set_dnd(sstub, bearer(DESK), LOC, new_id("contact"), ENABLE).cursor
    sstub.ProcessInboundMessage(
        pb.ProcessInboundMessageRequest(
            location_id=LOC, contact_id=contact, channel=SMS, body="STOP", from_address=PHONE
        ),
        metadata=bearer(BACKEND),
        timeout=T,
    )
    set_dnd(
        sstub,
        bearer(DESK),
        LOC,
        other,
        DISABLE,
        source=pb.SOURCE_SUPPORT,
        evidence=PROOF,
        address=PHONE,
        actor_id="agent-3",
    )
    events = watch(sstub, bearer(BACKEND), LOC, start, 3)
    assert [(e.contact_id, e.address, e.actor_id, e.authenticated_caller) for e in events] == [
        (contact, "", PHONE, BACKEND),
        (contact, PHONE, PHONE, BACKEND),
        (other, PHONE, "agent-3", DESK),
    ]
    # The clear made through the other contact says whose suppression it was.
    assert [e.suppression_contact_id for e in events] == ["", contact, contact]


def test_the_rpc_log_line_names_the_caller(secured: ServerProcess, sstub: Stub) -> None:
    loc = new_id("loc-rec")  # the desk may act anywhere: a location of this test alone
    set_dnd(sstub, bearer(DESK), loc, new_id("contact"), ENABLE)
    assert rpc_line(secured, "SetDnd", loc)["caller"] == DESK
    history(sstub, bearer(DESK), loc, contact_id="c")
    assert rpc_line(secured, "ListHistory", loc)["caller"] == DESK

    # Refused callers are named too: a known one, and one without a valid token.
    for md in (bearer(BACKEND), (("authorization", "Bearer not-a-token"),)):
        with pytest.raises(grpc.RpcError):
            set_dnd(sstub, md, loc, "c", ENABLE)
    denied = rpc_line(secured, "SetDnd", loc, "PERMISSION_DENIED")
    assert denied["caller"] == BACKEND
    unknown = rpc_line(secured, "SetDnd", loc, "UNAUTHENTICATED")
    assert re.match(r"^unauthenticated ipv4:127\.0\.0\.1:\d+$", unknown["caller"]), unknown
    assert TOKENS[BACKEND] not in "".join(secured.raw)


# --- open mode (no tokens) ------------------------------------------------------------------------


def test_open_mode_records_anonymous_and_the_peer(
    server: ServerProcess, stub: Stub, db: Database, loc: str, contact: str
) -> None:
    start = set_dnd(stub, (), loc, new_id("contact"), ENABLE).cursor
    set_dnd(stub, (), loc, contact, ENABLE, actor_id="user-7")
    [entry] = history(stub, (), loc, contact_id=contact)
    assert entry.actor_id == "user-7"
    caller = entry.authenticated_caller
    assert ANONYMOUS.match(caller), caller
    assert db.fetchval("SELECT caller FROM dnd_changes WHERE contact_id = $1", contact) == caller
    # This test's calls share one connection: the log line and the event name the same peer.
    [event] = watch(stub, (), loc, start, 1)
    assert event.authenticated_caller == caller
    assert rpc_line(server, "ListHistory", loc)["caller"] == caller
    # (The SetDnd lines were written before the ListHistory one.)
    lines = [
        e
        for e in server.collect_logs()
        if e.get("event") == "rpc" and e.get("method") == "SetDnd" and e.get("location_id") == loc
    ]
    assert len(lines) == 2 and all(line["caller"] == caller for line in lines)
