"""Marketing-only opt-outs over real gRPC on real PostgreSQL, through each entry point:

- SetDnd with scope.marketing_only: ENABLE sets a MARKETING_OPT_OUT block (or another
  marketing-only reason), DISABLE clears only the scope's marketing-only blocks;
- ReportEmailEvent with marketing_stream: an unsubscribe sets EMAIL_MARKETING_UNSUBSCRIBE;
- ReportDeliveryEvent: Meta's error 131050 and user_preferences stop / resume marketing set
  and clear WHATSAPP_MARKETING_OPT_OUT; unknown providers and codes are ignored and counted.

They show in status, history and the change stream with scope.marketing_only set, follow
their own clear rules (never a workflow for Meta's or the email one), need the permission of
the source they act as, and deny MARKETING sends only.
"""

from __future__ import annotations

import hashlib
import json
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from dnd_server.domain.provider_events import KNOWN_PROVIDERS
from prometheus_client.parser import text_string_to_metric_families

from tests import factories
from tests.support import (
    DISABLE,
    IN,
    Database,
    ServerProcess,
    Watcher,
    bad_fields,
    cursor_codec,
    error_details,
)

T = 10.0
R = pb.Reason
SMS, EMAIL, WHATSAPP = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, pb.CHANNEL_WHATSAPP
USER, WORKFLOW, CONTACT, SYSTEM = (
    pb.SOURCE_USER,
    pb.SOURCE_WORKFLOW,
    pb.SOURCE_CONTACT,
    pb.SOURCE_SYSTEM,
)
PHONE = "+14155552671"
MAIL = "pat@example.com"
STOP_MARKETING = "user_preferences:stop_marketing"
RESUME_MARKETING = "user_preferences:resume_marketing"
TOKENS = {name: f"secret-{name}-{uuid.uuid4().hex}" for name in ("writer", "contact", "admin")}
SCOPES = {
    "writer": ["write", "read"],
    "contact": ["contact", "read"],
    "admin": ["check", "read", "write", "contact", "support", "watch"],
}
IGNORED_METRIC = "dnd_provider_events_ignored_total"
Stub = dnd_pb2_grpc.DndServiceStub


def bearer(name: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {TOKENS[name]}"),)


@pytest.fixture(scope="module")
def secured(fresh_database: Any, tmp_path_factory: Any) -> Iterator[tuple[ServerProcess, Stub]]:
    """A server with tokens and metrics, on a database of its own."""
    entries = [
        {
            "name": name,
            "sha256": hashlib.sha256(TOKENS[name].encode()).hexdigest(),
            "locations": "*",
            "scopes": scopes,
        }
        for name, scopes in SCOPES.items()
    ]
    path: Path = tmp_path_factory.mktemp("marketing") / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}), encoding="utf-8")
    process = ServerProcess(
        fresh_database(), {"DND_TOKENS_FILE": str(path), "DND_METRICS_ADDR": "127.0.0.1:0"}
    ).start()
    try:
        with grpc.insecure_channel(process.addr) as channel:
            yield process, dnd_pb2_grpc.DndServiceStub(channel)
    finally:
        process.stop()


def marketing_scope(channel: int | None) -> pb.Scope:
    scope = factories.scope(channel)
    scope.marketing_only = True
    return scope


def enable_marketing(
    stub: Stub, loc: str, contact: str, channel: int | None = SMS, **fields: Any
) -> Any:
    return stub.SetDnd(
        factories.enable(loc, contact, scope=marketing_scope(channel), **fields), timeout=T
    )


def disable_marketing(
    stub: Stub, loc: str, contact: str, channel: int | None = SMS, **fields: Any
) -> Any:
    return stub.SetDnd(
        factories.disable(loc, contact, scope=marketing_scope(channel), **fields), timeout=T
    )


def blocks(stub: Stub, loc: str, contact: str) -> list[tuple[str, int, bool]]:
    """(scope, reason, marketing_only) of each active block."""
    status = stub.GetStatus(factories.get_status(loc, contact), timeout=T).status
    return [
        (
            "ALL" if b.scope.all_channels else pb.Channel.Name(b.scope.channel),
            b.reason,
            b.scope.marketing_only,
        )
        for b in status.blocks
    ]


def check(stub: Stub, loc: str, contact: str, channel: int, purpose: int, **fields: Any) -> Any:
    return stub.CheckSend(
        factories.check(loc, contact, channel, purpose=purpose, **fields), timeout=T
    )


def refused(call: Any, code: grpc.StatusCode) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    assert caught.value.code() == code, caught.value.details()
    return caught.value


# --- SetDnd with scope.marketing_only -------------------------------------------------------------


def test_marketing_only_set_dnd_denies_marketing_only(stub: Stub, loc: str, contact: str) -> None:
    answer = enable_marketing(stub, loc, contact, SMS, actor_id="u-1", note="asked on a call")
    assert answer.changed
    (added,) = answer.affected_blocks
    assert (added.reason, added.scope.channel, added.scope.marketing_only) == (
        R.REASON_MARKETING_OPT_OUT,
        SMS,
        True,
    )
    assert blocks(stub, loc, contact) == [("CHANNEL_SMS", R.REASON_MARKETING_OPT_OUT, True)]
    assert enable_marketing(stub, loc, contact, SMS).changed is False  # already active
    denied = check(stub, loc, contact, SMS, pb.PURPOSE_MARKETING)
    assert not denied.allowed and denied.denial == pb.DENIAL_MARKETING_OPT_OUT
    assert denied.denied_by[0].scope.marketing_only
    assert check(stub, loc, contact, SMS, pb.PURPOSE_TRANSACTIONAL).allowed
    assert check(stub, loc, contact, SMS, pb.PURPOSE_INFORMATIONAL).allowed
    assert check(stub, loc, contact, EMAIL, pb.PURPOSE_MARKETING).allowed  # another channel


def test_marketing_only_on_all_channels(stub: Stub, loc: str, contact: str) -> None:
    enable_marketing(stub, loc, contact, None)
    assert blocks(stub, loc, contact) == [("ALL", R.REASON_MARKETING_OPT_OUT, True)]
    for channel in (SMS, EMAIL, WHATSAPP, pb.CHANNEL_CALL):
        assert check(stub, loc, contact, channel, pb.PURPOSE_MARKETING).denial == (
            pb.DENIAL_MARKETING_OPT_OUT
        )
        assert check(stub, loc, contact, channel, pb.PURPOSE_TRANSACTIONAL).allowed


def test_a_marketing_only_reason_of_its_own_channel(stub: Stub, loc: str, contact: str) -> None:
    answer = enable_marketing(
        stub, loc, contact, WHATSAPP, reason=R.REASON_WHATSAPP_MARKETING_OPT_OUT
    )
    assert [b.reason for b in answer.affected_blocks] == [R.REASON_WHATSAPP_MARKETING_OPT_OUT]


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"reason": R.REASON_MANUAL}, ["reason"]),
        ({"reason": R.REASON_SMS_OPT_OUT_KEYWORD}, ["reason"]),
        ({"reason": R.REASON_WHATSAPP_MARKETING_OPT_OUT}, ["reason"]),  # WHATSAPP only
        ({"reason": R.REASON_EMAIL_MARKETING_UNSUBSCRIBE}, ["reason"]),  # EMAIL only
        ({"direction": IN, "scope": pb.Scope(all_channels=True, marketing_only=True)}, None),
    ],
    ids=["manual", "sms-keyword", "whatsapp-on-sms", "email-on-sms", "inbound"],
)
def test_marketing_only_set_dnd_refuses_other_reasons(
    stub: Stub, db: Database, loc: str, contact: str, fields: dict[str, Any], bad: list[str] | None
) -> None:
    request = factories.enable(loc, contact, scope=marketing_scope(SMS))
    for name, value in fields.items():
        if name == "scope":
            request.scope.CopyFrom(value)
        else:
            setattr(request, name, value)
    error = refused(lambda: stub.SetDnd(request, timeout=T), grpc.StatusCode.INVALID_ARGUMENT)
    fields_named = bad_fields(error)
    if bad is None:
        assert "scope.marketing_only" in fields_named
    else:
        assert fields_named == bad, error.details()
        assert "marketing-only" in (error.details() or "") or "exists only on the" in (
            error.details() or ""
        )
    assert (db.blocks(loc), db.changes(loc)) == (0, 0)


def test_marketing_only_disable_clears_only_marketing_only_blocks(
    stub: Stub, loc: str, contact: str
) -> None:
    stub.SetDnd(factories.enable(loc, contact, SMS), timeout=T)  # MANUAL on SMS
    enable_marketing(stub, loc, contact, SMS)
    enable_marketing(stub, loc, contact, None)
    stub.ReportDeliveryEvent(factories.delivery_event(loc, contact, "131050"), timeout=T)

    one = disable_marketing(stub, loc, contact, SMS)
    assert [(b.reason, b.scope.channel) for b in one.affected_blocks] == [
        (R.REASON_MARKETING_OPT_OUT, SMS)
    ]
    every = disable_marketing(stub, loc, contact, None, source=USER)
    assert sorted(b.reason for b in every.affected_blocks) == [
        R.REASON_MARKETING_OPT_OUT,
        R.REASON_WHATSAPP_MARKETING_OPT_OUT,
    ]
    assert blocks(stub, loc, contact) == [("CHANNEL_SMS", R.REASON_MANUAL, False)]
    assert check(stub, loc, contact, SMS, pb.PURPOSE_MARKETING).denial == pb.DENIAL_DND_BLOCK
    assert disable_marketing(stub, loc, contact, None).changed is False


def test_a_plain_disable_clears_marketing_only_blocks_too(
    stub: Stub, loc: str, contact: str
) -> None:
    stub.SetDnd(factories.enable(loc, contact, SMS), timeout=T)
    enable_marketing(stub, loc, contact, SMS)
    cleared = stub.SetDnd(factories.disable(loc, contact, SMS), timeout=T)
    assert sorted(b.reason for b in cleared.affected_blocks) == [
        R.REASON_MANUAL,
        R.REASON_MARKETING_OPT_OUT,
    ]


def test_marketing_only_disable_refuses_a_dnd_reason(
    stub: Stub, db: Database, loc: str, contact: str
) -> None:
    stub.SetDnd(factories.enable(loc, contact, SMS), timeout=T)
    error = refused(
        lambda: disable_marketing(stub, loc, contact, SMS, reason=R.REASON_MANUAL),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == ["reason"]
    assert db.blocks(loc) == 1


@pytest.mark.parametrize(
    ("reason", "on", "setup"),
    [
        (R.REASON_WHATSAPP_MARKETING_OPT_OUT, WHATSAPP, "meta"),
        (R.REASON_EMAIL_MARKETING_UNSUBSCRIBE, EMAIL, "email"),
    ],
    ids=["whatsapp", "email"],
)
def test_a_workflow_may_never_clear_a_contacts_marketing_opt_out(
    stub: Stub, db: Database, loc: str, contact: str, reason: int, on: int, setup: str
) -> None:
    if setup == "meta":
        stub.ReportDeliveryEvent(factories.delivery_event(loc, contact, STOP_MARKETING), timeout=T)
    else:
        stub.ReportEmailEvent(
            factories.email_event(
                loc, contact, pb.EMAIL_EVENT_UNSUBSCRIBE_LINK, marketing_stream=True
            ),
            timeout=T,
        )
    changes = db.changes(loc)
    for request in (
        factories.disable(loc, contact, scope=marketing_scope(on), source=WORKFLOW),
        factories.disable(loc, contact, on, source=WORKFLOW),
        factories.disable(loc, contact, on, source=WORKFLOW, reason=reason),
        factories.disable(loc, contact, on, source=SYSTEM, reason=reason),
    ):
        error = refused(
            lambda r=request: stub.SetDnd(r, timeout=T), grpc.StatusCode.FAILED_PRECONDITION
        )
        details = error_details(error)
        assert details["ErrorInfo"].reason == "CLEAR_NOT_PERMITTED"
        (violation,) = details["PreconditionFailure"].violations
        assert pb.Reason.Name(reason).removeprefix("REASON_") in violation.subject + (
            violation.description
        )
        assert "WORKFLOW" not in violation.description.split("cleared only by")[-1]
    assert db.changes(loc) == changes
    assert [b[1] for b in blocks(stub, loc, contact)] == [reason]
    # The user may.
    cleared = stub.SetDnd(
        factories.disable(loc, contact, scope=marketing_scope(on), source=USER), timeout=T
    )
    assert [b.reason for b in cleared.affected_blocks] == [reason]


def test_a_workflow_may_clear_a_marketing_only_set_dnd(stub: Stub, loc: str, contact: str) -> None:
    enable_marketing(stub, loc, contact, SMS, source=WORKFLOW)
    cleared = disable_marketing(stub, loc, contact, SMS, source=WORKFLOW)
    assert [b.reason for b in cleared.affected_blocks] == [R.REASON_MARKETING_OPT_OUT]
    enable_marketing(stub, loc, contact, SMS)
    refused(
        lambda: disable_marketing(stub, loc, contact, SMS, source=SYSTEM),
        grpc.StatusCode.FAILED_PRECONDITION,
    )


# --- ReportEmailEvent with marketing_stream ------------------------------------------------------


@pytest.mark.parametrize(
    "event", [pb.EMAIL_EVENT_UNSUBSCRIBE_LINK, pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST]
)
def test_a_marketing_stream_unsubscribe_opts_out_of_marketing_only(
    stub: Stub, loc: str, contact: str, event: int
) -> None:
    answer = stub.ReportEmailEvent(
        factories.email_event(loc, contact, event, to_address=MAIL, marketing_stream=True),
        timeout=T,
    )
    assert answer.outcome == pb.EVENT_OUTCOME_APPLIED
    assert answer.reason == R.REASON_EMAIL_MARKETING_UNSUBSCRIBE
    (block,) = answer.status.blocks
    assert (block.reason, block.source, block.address) == (
        R.REASON_EMAIL_MARKETING_UNSUBSCRIBE,
        CONTACT,
        MAIL,
    )
    assert block.scope.channel == EMAIL and block.scope.marketing_only
    assert "marketing_stream" in block.provider_detail
    # Marketing only: the address is not suppressed, other purposes go through.
    status = stub.GetStatus(factories.get_status(loc, contact, email_addresses=[MAIL]), timeout=T)
    assert list(status.status.address_suppressions) == []
    address = {"address": MAIL}
    assert check(stub, loc, contact, EMAIL, pb.PURPOSE_MARKETING, **address).denial == (
        pb.DENIAL_MARKETING_OPT_OUT
    )
    assert check(stub, loc, contact, EMAIL, pb.PURPOSE_TRANSACTIONAL, **address).allowed
    again = stub.ReportEmailEvent(
        factories.email_event(loc, contact, event, to_address=MAIL, marketing_stream=True),
        timeout=T,
    )
    assert again.outcome == pb.EVENT_OUTCOME_ALREADY_ACTIVE


@pytest.mark.parametrize(
    ("event", "marketing_stream", "reason"),
    [
        (pb.EMAIL_EVENT_UNSUBSCRIBE_LINK, False, R.REASON_EMAIL_UNSUBSCRIBE_LINK),
        (pb.EMAIL_EVENT_BOUNCE, True, R.REASON_EMAIL_HARD_BOUNCE),
        (pb.EMAIL_EVENT_SPAM_COMPLAINT, True, R.REASON_EMAIL_SPAM_COMPLAINT),
        (pb.EMAIL_EVENT_SUPPRESS_UNSUBSCRIBE, True, R.REASON_EMAIL_SUPPRESS_UNSUBSCRIBE),
    ],
)
def test_other_email_events_are_unchanged_by_the_marketing_stream(
    stub: Stub, loc: str, contact: str, event: int, marketing_stream: bool, reason: int
) -> None:
    answer = stub.ReportEmailEvent(
        factories.email_event(
            loc, contact, event, to_address=MAIL, marketing_stream=marketing_stream
        ),
        timeout=T,
    )
    assert answer.reason == reason
    assert not answer.status.blocks[0].scope.marketing_only
    assert check(stub, loc, contact, EMAIL, pb.PURPOSE_TRANSACTIONAL).denial == (
        pb.DENIAL_DND_BLOCK
    )


# --- ReportDeliveryEvent ----------------------------------------------------------------------


def delivery(stub: Stub, loc: str, contact: str, code: str, **fields: Any) -> Any:
    metadata = fields.pop("metadata", None)
    return stub.ReportDeliveryEvent(
        factories.delivery_event(loc, contact, code, **fields), timeout=T, metadata=metadata
    )


def test_meta_error_131050_sets_the_whatsapp_marketing_opt_out(
    stub: Stub, loc: str, contact: str
) -> None:
    answer = delivery(stub, loc, contact, "131050", address="(415) 555-2671")
    assert (answer.outcome, answer.reason, answer.changed) == (
        pb.EVENT_OUTCOME_APPLIED,
        R.REASON_WHATSAPP_MARKETING_OPT_OUT,
        True,
    )
    (block,) = answer.status.blocks
    assert (block.source, block.actor_id, block.address) == (SYSTEM, "meta", PHONE)
    assert block.provider_detail == "delivery_event:131050"
    assert block.scope.channel == WHATSAPP and block.scope.marketing_only
    assert "WHATSAPP_MARKETING_OPT_OUT" in answer.explanation
    again = delivery(stub, loc, contact, "131050")
    assert (again.outcome, again.changed) == (pb.EVENT_OUTCOME_ALREADY_ACTIVE, False)
    assert check(stub, loc, contact, WHATSAPP, pb.PURPOSE_MARKETING).denial == (
        pb.DENIAL_MARKETING_OPT_OUT
    )
    assert check(stub, loc, contact, WHATSAPP, pb.PURPOSE_TRANSACTIONAL).allowed
    assert check(stub, loc, contact, SMS, pb.PURPOSE_MARKETING).allowed


def test_meta_stop_and_resume_marketing(stub: Stub, db: Database, loc: str, contact: str) -> None:
    stopped = delivery(stub, loc, contact, STOP_MARKETING)
    assert stopped.outcome == pb.EVENT_OUTCOME_APPLIED
    assert stopped.status.blocks[0].source == CONTACT
    resumed = delivery(stub, loc, contact, RESUME_MARKETING)
    assert (resumed.outcome, resumed.reason, resumed.changed) == (
        pb.EVENT_OUTCOME_CLEARED,
        R.REASON_WHATSAPP_MARKETING_OPT_OUT,
        True,
    )
    assert list(resumed.status.blocks) == []
    assert "cleared" in resumed.explanation
    assert check(stub, loc, contact, WHATSAPP, pb.PURPOSE_MARKETING).allowed
    changes = db.changes(loc)
    nothing = delivery(stub, loc, contact, RESUME_MARKETING)
    assert (nothing.outcome, nothing.changed) == (pb.EVENT_OUTCOME_IGNORED, False)
    assert "no WHATSAPP_MARKETING_OPT_OUT to clear" in nothing.explanation
    assert db.changes(loc) == changes
    # The contact's "resume" lifts Meta's own opt-out (error 131050) as well.
    delivery(stub, loc, contact, "131050")
    assert delivery(stub, loc, contact, RESUME_MARKETING).outcome == pb.EVENT_OUTCOME_CLEARED


def test_resume_marketing_leaves_other_blocks(stub: Stub, loc: str, contact: str) -> None:
    stub.SetDnd(factories.enable(loc, contact, WHATSAPP), timeout=T)
    enable_marketing(stub, loc, contact, None)
    delivery(stub, loc, contact, STOP_MARKETING)
    delivery(stub, loc, contact, RESUME_MARKETING)
    assert sorted(b[1] for b in blocks(stub, loc, contact)) == [
        R.REASON_MANUAL,
        R.REASON_MARKETING_OPT_OUT,
    ]


@pytest.mark.parametrize(
    ("provider", "code"),
    [("meta", "131026"), ("meta", "user_preferences:unknown"), ("acme", "131050")],
)
def test_unknown_delivery_events_are_ignored(
    stub: Stub, db: Database, loc: str, contact: str, provider: str, code: str
) -> None:
    answer = delivery(stub, loc, contact, code, provider=provider)
    assert (answer.outcome, answer.reason, answer.changed) == (
        pb.EVENT_OUTCOME_IGNORED,
        R.REASON_UNSPECIFIED,
        False,
    )
    assert answer.status.version == 0
    assert (db.blocks(loc), db.changes(loc)) == (0, 0)


def test_delivery_events_are_idempotent(stub: Stub, db: Database, loc: str, contact: str) -> None:
    first = delivery(stub, loc, contact, "131050", idempotency_key="k-1")
    retry = delivery(stub, loc, contact, "131050", idempotency_key="k-1")
    assert retry == first
    assert db.changes(loc) == 1
    error = refused(
        lambda: delivery(stub, loc, contact, STOP_MARKETING, idempotency_key="k-1"),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert bad_fields(error) == ["idempotency_key"]


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"location_id": ""}, "location_id"),
        ({"contact_id": " c"}, "contact_id"),
        ({"channel": pb.CHANNEL_UNSPECIFIED}, "channel"),
        ({"channel": 42}, "channel"),
        ({"channel": SMS}, "channel"),  # 131050 is a WHATSAPP event
        ({"provider": ""}, "provider"),
        ({"provider": "m" * 65}, "provider"),
        ({"provider": "me\x00ta"}, "provider"),
        ({"code": ""}, "code"),
        ({"code": "   "}, "code"),
        ({"code": " 131050"}, "code"),
        ({"code": "c" * 65}, "code"),
        ({"code": "131\n050"}, "code"),
        ({"address": "not a\x00phone"}, "address"),  # (no phone number: blocks the contact)
        ({"idempotency_key": "k" * 129}, "idempotency_key"),
    ],
)
def test_delivery_event_validation(
    stub: Stub, db: Database, loc: str, contact: str, fields: dict[str, Any], bad: str
) -> None:
    request = factories.delivery_event(loc, contact, "131050")
    for name, value in fields.items():
        setattr(request, name, value)
    error = refused(
        lambda: stub.ReportDeliveryEvent(request, timeout=T), grpc.StatusCode.INVALID_ARGUMENT
    )
    assert bad_fields(error) == [bad], error.details()
    assert (db.blocks(loc), db.changes(loc)) == (0, 0)


def test_a_known_code_on_another_channel_says_which_channel(
    stub: Stub, loc: str, contact: str
) -> None:
    error = refused(
        lambda: delivery(stub, loc, contact, "131050", channel=SMS),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert "CHANNEL_WHATSAPP" in (error.details() or "")


# --- status, history and the change stream -------------------------------------------------------


def test_marketing_opt_outs_in_history_and_the_change_stream(
    stub: Stub, server: ServerProcess, loc: str, contact: str
) -> None:
    with Watcher(server.addr, factories.watch(loc)) as watcher:
        assert watcher.wait_bookmarks(1), watcher.error  # the stream has started
        enable_marketing(stub, loc, contact, None)
        delivery(stub, loc, contact, "131050")
        stub.ReportEmailEvent(
            factories.email_event(
                loc,
                contact,
                pb.EMAIL_EVENT_UNSUBSCRIBE_LINK,
                to_address=MAIL,
                marketing_stream=True,
            ),
            timeout=T,
        )
        last = delivery(stub, loc, contact, RESUME_MARKETING)
        events = watcher.wait_past(last.cursor, cursor_codec(server.database_url))
    seen = [
        (e.reason, e.enabled, e.source, e.scope.marketing_only, e.kind)
        for e in events
        if e.contact_id == contact
    ]
    BLOCK = pb.CHANGE_KIND_BLOCK
    assert seen == [
        (R.REASON_MARKETING_OPT_OUT, True, USER, True, BLOCK),
        (R.REASON_WHATSAPP_MARKETING_OPT_OUT, True, SYSTEM, True, BLOCK),
        (R.REASON_EMAIL_MARKETING_UNSUBSCRIBE, True, CONTACT, True, BLOCK),
        (R.REASON_WHATSAPP_MARKETING_OPT_OUT, False, CONTACT, True, BLOCK),
    ]
    entries = stub.ListHistory(factories.history(loc, contact), timeout=T).entries
    assert [(e.reason, e.enabled, e.scope.marketing_only) for e in reversed(entries)] == [
        (r, enabled, marketing) for r, enabled, _, marketing, _ in seen
    ]
    assert all(e.kind == BLOCK for e in entries)
    assert entries[0].provider_detail == f"delivery_event:{RESUME_MARKETING}"


# --- permissions and the ignored-events metric ----------------------------------------------------


@pytest.mark.parametrize(
    ("code", "token", "allowed"),
    [
        ("131050", "writer", True),  # Meta reports it: SYSTEM, the write permission
        ("131050", "contact", False),
        (STOP_MARKETING, "contact", True),  # the contact's own choice: CONTACT
        (STOP_MARKETING, "writer", False),
        (RESUME_MARKETING, "contact", True),
        (RESUME_MARKETING, "writer", False),
        ("131026", "writer", True),  # ignored: acts as SYSTEM
        ("131026", "contact", False),
    ],
)
def test_delivery_event_permissions(
    secured: tuple[ServerProcess, Stub],
    loc: str,
    contact: str,
    code: str,
    token: str,
    allowed: bool,
) -> None:
    _, sstub = secured
    call = lambda: delivery(sstub, loc, contact, code, metadata=bearer(token))  # noqa: E731
    if allowed:
        call()
    else:
        error = refused(call, grpc.StatusCode.PERMISSION_DENIED)
        assert ("'contact'" if token == "writer" else "'write'") in (error.details() or "")


def test_a_marketing_stream_unsubscribe_needs_the_contact_permission(
    secured: tuple[ServerProcess, Stub], loc: str, contact: str
) -> None:
    _, sstub = secured
    request = factories.email_event(
        loc, contact, pb.EMAIL_EVENT_UNSUBSCRIBE_LINK, marketing_stream=True
    )
    refused(
        lambda: sstub.ReportEmailEvent(request, timeout=T, metadata=bearer("writer")),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    sstub.ReportEmailEvent(request, timeout=T, metadata=bearer("contact"))


def ignored_counts(process: ServerProcess) -> dict[str, float]:
    port = next(int(e["port"]) for e in process.logs if e.get("event") == "metrics_listening")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        sample.labels["provider"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == IGNORED_METRIC
    }


def test_ignored_delivery_events_are_counted_by_provider(
    secured: tuple[ServerProcess, Stub], loc: str, contact: str
) -> None:
    process, sstub = secured
    before = ignored_counts(process)
    admin = bearer("admin")
    delivery(sstub, loc, contact, "139999", metadata=admin)
    delivery(sstub, loc, contact, "139999", provider="Meta", metadata=admin)
    delivery(sstub, loc, contact, "131026", metadata=admin)  # known, changes nothing: not counted
    delivery(sstub, loc, contact, "131050", provider=f"acme-{uuid.uuid4().hex}", metadata=admin)
    delivery(sstub, loc, contact, "131050", metadata=admin)  # known: not counted
    after = ignored_counts(process)
    assert after.get("meta", 0) - before.get("meta", 0) == 2
    assert after.get("other", 0) - before.get("other", 0) == 1
    # Provider names never become labels of their own: the known providers, or "other".
    assert set(after) <= KNOWN_PROVIDERS | {"other"}


@pytest.mark.parametrize(
    ("provider", "code", "overridden"),
    [
        ("sendgrid", "unsubscribe", False),  # built-in: the recipient's own unsubscribe
        ("postmark", "Unsubscribe", False),
        ("acme-mail", "optout-1", True),  # the location's override of an unknown code
    ],
)
def test_a_contact_s_own_unsubscribe_needs_the_contact_permission(
    secured: tuple[ServerProcess, Stub],
    loc: str,
    contact: str,
    provider: str,
    code: str,
    overridden: bool,
) -> None:
    _, sstub = secured
    if overridden:
        sstub.UpdateDeliveryEventMappings(
            factories.update_mappings(
                loc, factories.override(provider, code, EMAIL, R.REASON_EMAIL_UNSUBSCRIBE_LINK)
            ),
            timeout=T,
            metadata=bearer("admin"),
        )
    fields = {"provider": provider, "channel": EMAIL}
    error = refused(
        lambda: delivery(sstub, loc, contact, code, metadata=bearer("writer"), **fields),
        grpc.StatusCode.PERMISSION_DENIED,
    )
    assert "'contact'" in (error.details() or "")
    answer = delivery(sstub, loc, contact, code, metadata=bearer("contact"), **fields)
    assert answer.reason == R.REASON_EMAIL_UNSUBSCRIBE_LINK
    assert answer.mapping.source == CONTACT
    assert answer.mapping.origin == (
        pb.MAPPING_ORIGIN_LOCATION if overridden else pb.MAPPING_ORIGIN_BUILT_IN
    )


def test_a_refused_clear_never_disables_anything(
    stub: Stub, db: Database, loc: str, contact: str
) -> None:
    """A WORKFLOW clearing the whole scope that holds Meta's opt-out and a MANUAL block is
    refused as a whole: the MANUAL block stays too."""
    stub.SetDnd(factories.enable(loc, contact, WHATSAPP), timeout=T)
    delivery(stub, loc, contact, "131050")
    refused(
        lambda: stub.SetDnd(
            factories.set_dnd(loc, contact, DISABLE, WHATSAPP, source=WORKFLOW), timeout=T
        ),
        grpc.StatusCode.FAILED_PRECONDITION,
    )
    assert db.blocks(loc) == 2


# --- marketing-only opt-outs revoke the marketing consent ----------------------------------------


def record_consents(stub: Stub, loc: str, contact: str, channel: int) -> None:
    for purpose in (pb.CONSENT_PURPOSE_MARKETING, pb.CONSENT_PURPOSE_INFORMATIONAL):
        stub.RecordConsent(
            pb.RecordConsentRequest(
                location_id=loc,
                contact_id=contact,
                channel=channel,  # type: ignore[arg-type]
                purpose=purpose,
                method=pb.CONSENT_METHOD_WEB_FORM,
                source=USER,
            ),
            timeout=T,
        )


def consent_states(stub: Stub, loc: str, contact: str) -> dict[int, tuple[int, str]]:
    status = stub.GetStatus(factories.get_status(loc, contact), timeout=T).status
    return {c.purpose: (c.status, c.revoked_by) for c in status.consents}


@pytest.mark.parametrize("entry", ["set_dnd", "131050", "stop_marketing", "email"])
def test_a_marketing_only_opt_out_revokes_the_marketing_consent_only(
    stub: Stub, loc: str, contact: str, entry: str
) -> None:
    channel = EMAIL if entry == "email" else WHATSAPP
    record_consents(stub, loc, contact, channel)
    if entry == "set_dnd":
        enable_marketing(stub, loc, contact, WHATSAPP)
        reason = "MARKETING_OPT_OUT"
    elif entry == "email":
        stub.ReportEmailEvent(
            factories.email_event(
                loc, contact, pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST, marketing_stream=True
            ),
            timeout=T,
        )
        reason = "EMAIL_MARKETING_UNSUBSCRIBE"
    else:
        delivery(stub, loc, contact, "131050" if entry == "131050" else STOP_MARKETING)
        reason = "WHATSAPP_MARKETING_OPT_OUT"
    assert consent_states(stub, loc, contact) == {
        pb.CONSENT_PURPOSE_MARKETING: (pb.CONSENT_STATUS_REVOKED, reason),
        pb.CONSENT_PURPOSE_INFORMATIONAL: (pb.CONSENT_STATUS_ACTIVE, ""),
    }
    kinds = [e.kind for e in stub.ListHistory(factories.history(loc, contact), timeout=T).entries]
    assert kinds[:2] == [pb.CHANGE_KIND_CONSENT, pb.CHANGE_KIND_BLOCK]  # one change, two rows
