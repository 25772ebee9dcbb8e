"""Security over real gRPC, real server processes and real PostgreSQL.

Bearer tokens (stored as hashes) with scopes and locations on every RPC, tenant isolation of
calls and of watches, unauthenticated callers, health and reflection left open, no secrets in
logs, refusing to serve open off loopback, unusable tokens and TLS files, TLS and mutual TLS with
certificates the test makes with the openssl command. tests/e2e/test_security_processes.py
checks that real processes refuse to start, exiting 2, where these checks refuse.

That tokens are compared in constant time is not observable from a test and is not tested.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from dnd_server.app import StartupError, load_tokens, server_credentials
from dnd_server.auth import Permission, hash_token
from dnd_server.config import Config
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from tests import factories
from tests.support import REPO, Database, ServerProcess, error_details, new_id, wait_until
from tests.support import dnd_server as cli

Metadata = tuple[tuple[str, str], ...]
Stub = dnd_pb2_grpc.DndServiceStub
Call = Callable[[Stub, Metadata, str, str], object]

T = 10.0  # seconds allowed to any one call
LOC_A = new_id("loc-a")
LOC_B = new_id("loc-b")
ALL_SCOPES = [p.value for p in Permission]
OPENSSL = "/usr/bin/openssl"

# Every caller of the module's server: name -> (locations, scopes).
CALLERS: dict[str, tuple[Any, list[str]]] = {
    **{f"only-{p.value}": ([LOC_A], [p.value]) for p in Permission},
    "no-scopes": ([LOC_A], []),
    "tenant-a": ([LOC_A], ALL_SCOPES),
    "tenant-b": ([LOC_B], ALL_SCOPES),
    "admin": ("*", ALL_SCOPES),
    "no-locations": ([], ALL_SCOPES),
    "all-but-erase": ([LOC_A], [p.value for p in Permission if p is not Permission.ERASE]),
}
# The plaintext tokens: only the test knows them, the server's file holds their hashes.
TOKENS = {name: f"secret-{name}-{uuid.uuid4().hex}" for name in [*CALLERS, "cli-made"]}


def bearer(name: str) -> Metadata:
    return (("authorization", f"Bearer {TOKENS[name]}"),)


def failure(fn: Callable[..., object], *args: Any, **kwargs: Any) -> grpc.RpcError:
    try:
        fn(*args, **kwargs)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{getattr(fn, '__name__', fn)} succeeded; an error was expected")


def keyword_for(contact: str) -> str:
    """An extra opt-out word unique to one call of UpdateKeywordSettings."""
    return f"W{contact[-12:].upper()}"


# --- one call per RPC (and per source or event where the scope depends on it) -----------------


def get_status(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.GetStatus(
        pb.GetStatusRequest(location_id=loc, contact_id=contact), metadata=md, timeout=T
    )


def list_history(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.ListHistory(
        pb.ListHistoryRequest(location_id=loc, contact_id=contact), metadata=md, timeout=T
    )


def get_keyword_settings(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.GetKeywordSettings(
        pb.GetKeywordSettingsRequest(location_id=loc), metadata=md, timeout=T
    )


def check_send(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.CheckSend(
        pb.CheckSendRequest(location_id=loc, contact_id=contact, channel=pb.CHANNEL_SMS),
        metadata=md,
        timeout=T,
    )


def batch_check_send(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.BatchCheckSend(
        pb.BatchCheckSendRequest(
            location_id=loc,
            channel=pb.CHANNEL_SMS,
            targets=[pb.CheckTarget(contact_id=contact), pb.CheckTarget(contact_id=contact + "x")],
        ),
        metadata=md,
        timeout=T,
    )


def set_dnd_as(source: int) -> Call:
    def set_dnd(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
        return stub.SetDnd(factories.enable(loc, contact, source=source), metadata=md, timeout=T)

    return set_dnd


def inbound_stop(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.ProcessInboundMessage(
        pb.ProcessInboundMessageRequest(
            location_id=loc, contact_id=contact, channel=pb.CHANNEL_SMS, body="STOP"
        ),
        metadata=md,
        timeout=T,
    )


def sms_failure(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.ReportSmsDeliveryFailure(
        factories.sms_failure(loc, contact), metadata=md, timeout=T
    )


def email_event(event: int) -> Call:
    def report(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
        request = factories.email_event(loc, contact, event)
        return stub.ReportEmailEvent(request, metadata=md, timeout=T)

    return report


def delivery_event(code: str) -> Call:
    def report(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
        request = factories.delivery_event(loc, contact, code)
        return stub.ReportDeliveryEvent(request, metadata=md, timeout=T)

    return report


def update_keyword_settings(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.UpdateKeywordSettings(
        pb.UpdateKeywordSettingsRequest(
            location_id=loc,
            settings=pb.KeywordSettings(extra_opt_out_words=[keyword_for(contact)]),
        ),
        metadata=md,
        timeout=T,
    )


def record_consent_as(source: int) -> Call:
    def record_consent(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
        request = pb.RecordConsentRequest(
            location_id=loc,
            contact_id=contact,
            channel=pb.CHANNEL_SMS,
            purpose=pb.CONSENT_PURPOSE_MARKETING,
            method=pb.CONSENT_METHOD_WEB_FORM,
            source=source,  # type: ignore[arg-type]
        )
        return stub.RecordConsent(request, metadata=md, timeout=T)

    return record_consent


def revoke_consent(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    request = pb.RevokeConsentRequest(
        location_id=loc, contact_id=contact, channel=pb.CHANNEL_SMS, source=pb.SOURCE_USER
    )
    return stub.RevokeConsent(request, metadata=md, timeout=T)


def get_compliance_replies(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.GetComplianceReplies(
        pb.GetComplianceRepliesRequest(location_id=loc), metadata=md, timeout=T
    )


def update_compliance_replies(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    """A brand name unique to one call of UpdateComplianceReplies (the contact's id)."""
    request = pb.UpdateComplianceRepliesRequest(
        location_id=loc, brand_name=contact, support_contact="+14155550100"
    )
    return stub.UpdateComplianceReplies(request, metadata=md, timeout=T)


def get_consent_policy(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.GetConsentPolicy(
        pb.GetConsentPolicyRequest(location_id=loc), metadata=md, timeout=T
    )


def window_for(contact: str) -> int:
    """A double opt-in window unique to one call of UpdateConsentPolicy."""
    return 60 + int(contact[-6:], 16) % 2_000_000


def update_consent_policy(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    policy = pb.ConsentPolicy(double_opt_in_window_seconds=window_for(contact))
    return stub.UpdateConsentPolicy(
        pb.UpdateConsentPolicyRequest(location_id=loc, policy=policy), metadata=md, timeout=T
    )


def get_delivery_mappings(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.GetDeliveryEventMappings(
        pb.GetDeliveryEventMappingsRequest(location_id=loc), metadata=md, timeout=T
    )


def update_delivery_mappings(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    override = pb.DeliveryEventOverride(
        provider="acme", code=contact, channel=pb.CHANNEL_SMS, ignore=True
    )
    return stub.UpdateDeliveryEventMappings(
        pb.UpdateDeliveryEventMappingsRequest(location_id=loc, overrides=[override]),
        metadata=md,
        timeout=T,
    )


def quiet_window_for(contact: str) -> tuple[str, str]:
    """A quiet-hours window unique (enough) to one call of UpdateQuietHoursSettings."""
    number = int(contact[-6:], 16)
    start, end = number % 720, 721 + number // 720 % 719

    def clock(minutes: int) -> str:
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    return clock(start), clock(end)


def get_quiet_hours(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.GetQuietHoursSettings(
        pb.GetQuietHoursSettingsRequest(location_id=loc), metadata=md, timeout=T
    )


def update_quiet_hours(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    start, end = quiet_window_for(contact)
    settings = pb.QuietHoursSettings(window_start=start, window_end=end)
    return stub.UpdateQuietHoursSettings(
        pb.UpdateQuietHoursSettingsRequest(location_id=loc, settings=settings),
        metadata=md,
        timeout=T,
    )


def erase_contact(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.EraseContact(
        pb.EraseContactRequest(location_id=loc, contact_id=contact, reference="GDPR-1"),
        metadata=md,
        timeout=T,
    )


def get_block_expiry(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    return stub.GetBlockExpirySettings(
        pb.GetBlockExpirySettingsRequest(location_id=loc), metadata=md, timeout=T
    )


def update_block_expiry(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    settings = pb.BlockExpirySettings(sms_carrier_temporary_seconds=window_for(contact))
    return stub.UpdateBlockExpirySettings(
        pb.UpdateBlockExpirySettingsRequest(location_id=loc, settings=settings),
        metadata=md,
        timeout=T,
    )


def bulk_set_dnd_as(source: int) -> Call:
    def bulk(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
        items = [factories.enable("", contact, source=source), factories.enable("", contact + "0")]
        return stub.BulkSetDnd(
            pb.BulkSetDndRequest(location_id=loc, items=items), metadata=md, timeout=T
        )

    return bulk


def list_blocks(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    request = pb.ListBlocksRequest(location_id=loc, filter=pb.SuppressionFilter(contact_id=contact))
    return stub.ListBlocks(request, metadata=md, timeout=T)


def list_suppressions(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    request = pb.ListSuppressionsRequest(location_id=loc)
    return stub.ListSuppressions(request, metadata=md, timeout=T)


def export_suppressions(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
    request = pb.ExportSuppressionsRequest(location_id=loc)
    return list(stub.ExportSuppressions(request, metadata=md, timeout=T))


def watch(explicit: bool) -> Call:
    """Open a stream (naming the location, or with an empty filter) and read its first
    message: a bookmark, sent after the bookmark interval."""

    def watch_changes(stub: Stub, md: Metadata, loc: str, contact: str) -> object:
        request = pb.WatchChangesRequest(location_ids=[loc] if explicit else [])
        stream = stub.WatchChanges(request, metadata=md, timeout=T)
        try:
            return next(stream)
        finally:
            stream.cancel()

    return watch_changes


@dataclass(frozen=True)
class Case:
    name: str
    permission: Permission
    call: Call
    # Whether the call acts on the location it is given (an empty watch filter does not).
    targeted: bool = True


CASES = [
    Case("GetStatus", Permission.READ, get_status),
    Case("ListHistory", Permission.READ, list_history),
    Case("GetKeywordSettings", Permission.READ, get_keyword_settings),
    Case("CheckSend", Permission.CHECK, check_send),
    Case("BatchCheckSend", Permission.CHECK, batch_check_send),
    Case("SetDnd/USER", Permission.WRITE, set_dnd_as(pb.SOURCE_USER)),
    Case("SetDnd/WORKFLOW", Permission.WRITE, set_dnd_as(pb.SOURCE_WORKFLOW)),
    Case("SetDnd/SYSTEM", Permission.WRITE, set_dnd_as(pb.SOURCE_SYSTEM)),
    Case("SetDnd/CONTACT", Permission.CONTACT, set_dnd_as(pb.SOURCE_CONTACT)),
    Case("SetDnd/SUPPORT", Permission.SUPPORT, set_dnd_as(pb.SOURCE_SUPPORT)),
    Case("ProcessInboundMessage", Permission.CONTACT, inbound_stop),
    Case("ReportSmsDeliveryFailure", Permission.WRITE, sms_failure),
    Case("ReportEmailEvent/BOUNCE", Permission.WRITE, email_event(pb.EMAIL_EVENT_BOUNCE)),
    Case(
        "ReportEmailEvent/SPAM_COMPLAINT",
        Permission.WRITE,
        email_event(pb.EMAIL_EVENT_SPAM_COMPLAINT),
    ),
    Case(
        "ReportEmailEvent/TEMPORARY_FAILURE",
        Permission.WRITE,
        email_event(pb.EMAIL_EVENT_TEMPORARY_FAILURE),
    ),
    Case(
        "ReportEmailEvent/UNSUBSCRIBE_LINK",
        Permission.CONTACT,
        email_event(pb.EMAIL_EVENT_UNSUBSCRIBE_LINK),
    ),
    Case(
        "ReportEmailEvent/LIST_UNSUBSCRIBE_POST",
        Permission.CONTACT,
        email_event(pb.EMAIL_EVENT_LIST_UNSUBSCRIBE_POST),
    ),
    Case("UpdateKeywordSettings", Permission.WRITE, update_keyword_settings),
    # A provider's error acts as SYSTEM; the contact's own preference as CONTACT.
    Case("ReportDeliveryEvent/131050", Permission.WRITE, delivery_event("131050")),
    Case(
        "ReportDeliveryEvent/stop_marketing",
        Permission.CONTACT,
        delivery_event("user_preferences:stop_marketing"),
    ),
    Case("RecordConsent/USER", Permission.CONSENT, record_consent_as(pb.SOURCE_USER)),
    Case("RecordConsent/CONTACT", Permission.CONSENT, record_consent_as(pb.SOURCE_CONTACT)),
    Case("RevokeConsent", Permission.CONSENT, revoke_consent),
    Case("GetConsentPolicy", Permission.READ, get_consent_policy),
    Case("GetQuietHoursSettings", Permission.READ, get_quiet_hours),
    Case("UpdateQuietHoursSettings", Permission.WRITE, update_quiet_hours),
    Case("GetComplianceReplies", Permission.READ, get_compliance_replies),
    Case("UpdateComplianceReplies", Permission.WRITE, update_compliance_replies),
    Case("UpdateConsentPolicy", Permission.WRITE, update_consent_policy),
    Case("EraseContact", Permission.ERASE, erase_contact),
    Case("GetBlockExpirySettings", Permission.READ, get_block_expiry),
    Case("UpdateBlockExpirySettings", Permission.WRITE, update_block_expiry),
    Case("GetDeliveryEventMappings", Permission.READ, get_delivery_mappings),
    Case("UpdateDeliveryEventMappings", Permission.WRITE, update_delivery_mappings),
    Case("BulkSetDnd/USER", Permission.WRITE, bulk_set_dnd_as(pb.SOURCE_USER)),
    Case("ListBlocks", Permission.READ, list_blocks),
    Case("ListSuppressions", Permission.READ, list_suppressions),
    Case("ExportSuppressions", Permission.READ, export_suppressions),
    Case("WatchChanges", Permission.WATCH, watch(explicit=True)),
    Case("WatchChanges/empty-filter", Permission.WATCH, watch(explicit=False), targeted=False),
]
TARGETED = [c for c in CASES if c.targeted]
# RPCs any authenticated caller may call, whatever its scopes and locations.
OPEN_TO_ANY_CALLER = {"GetServerInfo"}


def case_id(case: Case) -> str:
    return case.name


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokens_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    entries = [
        {
            "name": name,
            "sha256": hash_token(TOKENS[name]),
            "locations": locations,
            "scopes": scopes,
        }
        for name, (locations, scopes) in CALLERS.items()
    ]
    # One hash made by the documented command: `dnd-server hash-token` reading the token.
    made = cli("hash-token", stdin=TOKENS["cli-made"] + "\n")
    assert made.returncode == 0, made.stderr
    entries.append(
        {"name": "cli-made", "sha256": made.stdout.strip(), "locations": "*", "scopes": ["read"]}
    )
    path = tmp_path_factory.mktemp("auth") / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def secured(fresh_database: Any, tokens_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(
        fresh_database(),
        {"DND_TOKENS_FILE": str(tokens_path), "DND_WATCH_BOOKMARK_SECONDS": "0.2"},
    ).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def secured_db(secured: ServerProcess) -> Database:
    return Database(secured.database_url)


@pytest.fixture(scope="module")
def chan(secured: ServerProcess) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(secured.addr) as channel:
        yield channel


@pytest.fixture(scope="module")
def sstub(chan: grpc.Channel) -> Stub:
    return dnd_pb2_grpc.DndServiceStub(chan)


def assert_untouched(db: Database, stub: Stub, loc: str, contacts: list[str]) -> None:
    """The calls made for ``contacts`` on ``loc`` changed nothing."""
    changes = db.fetchval(
        "SELECT count(*) FROM dnd_changes WHERE location_id = $1 AND contact_id = ANY($2::text[])",
        loc,
        contacts,
    )
    assert changes == 0, f"{changes} changes written by refused calls"
    settings = stub.GetKeywordSettings(
        pb.GetKeywordSettingsRequest(location_id=loc), metadata=bearer("admin"), timeout=T
    ).settings
    written = set(settings.extra_opt_out_words) & {keyword_for(c) for c in contacts}
    assert not written, f"keyword settings written by refused calls: {written}"
    consents = db.fetchval(
        "SELECT count(*) FROM dnd_consents WHERE location_id = $1 AND contact_id = ANY($2::text[])",
        loc,
        contacts,
    )
    assert consents == 0, f"{consents} consents written by refused calls"
    policy = stub.GetConsentPolicy(
        pb.GetConsentPolicyRequest(location_id=loc), metadata=bearer("admin"), timeout=T
    ).policy
    assert policy.double_opt_in_window_seconds not in {window_for(c) for c in contacts}
    replies = stub.GetComplianceReplies(
        pb.GetComplianceRepliesRequest(location_id=loc), metadata=bearer("admin"), timeout=T
    )
    assert replies.brand_name not in contacts, "compliance replies written by a refused call"
    quiet = stub.GetQuietHoursSettings(
        pb.GetQuietHoursSettingsRequest(location_id=loc), metadata=bearer("admin"), timeout=T
    ).settings
    assert (quiet.window_start, quiet.window_end) not in {quiet_window_for(c) for c in contacts}


class Stream:
    """A WatchChanges stream opened with metadata, read in a thread."""

    def __init__(
        self, channel: grpc.Channel, request: pb.WatchChangesRequest, metadata: Metadata
    ) -> None:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        self.call = stub.WatchChanges(request, metadata=metadata, timeout=60)
        self.events: list[Any] = []
        self.bookmarks: list[str] = []
        self.error: grpc.RpcError | None = None
        self.done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        try:
            for message in self.call:
                with self._cond:
                    if message.HasField("event"):
                        self.events.append(message.event)
                    else:
                        self.bookmarks.append(message.bookmark.cursor)
                    self._cond.notify_all()
        except grpc.RpcError as error:
            self.error = error
        finally:
            with self._cond:
                self.done = True
                self._cond.notify_all()

    def wait(self, predicate: Callable[[Stream], bool], timeout: float = 15) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate(self) and not self.done:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return predicate(self)

    def saw(self, contact: str) -> bool:
        return any(e.contact_id == contact for e in self.events)

    def close(self) -> None:
        self.call.cancel()
        self._thread.join(10)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --- permissions (token scopes) ---------------------------------------------------------------


def test_cases_cover_every_rpc() -> None:
    methods = set(pb.DESCRIPTOR.services_by_name["DndService"].methods_by_name)
    assert {c.name.split("/")[0] for c in CASES} | OPEN_TO_ANY_CALLER == methods


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_server_info_needs_only_authentication(caller: str, sstub: Stub) -> None:
    info = sstub.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer(caller), timeout=T)
    locations, scopes = CALLERS[caller]
    assert info.caller_name == caller
    assert list(info.permissions) == sorted(scopes)
    assert list(info.locations) == (["*"] if locations == "*" else sorted(locations))
    assert info.auth_enabled and not info.tls_enabled
    assert abs(time.time() - info.server_time.ToSeconds()) < 60
    for label, metadata in BAD_CREDENTIALS.items():
        error = failure(sstub.GetServerInfo, pb.GetServerInfoRequest(), metadata=metadata)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, label


def test_tokens_file_holds_hashes_only(tokens_path: Path) -> None:
    text = tokens_path.read_text(encoding="utf-8")
    assert not any(token in text for token in TOKENS.values())
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_each_rpc_needs_its_permission(case: Case, sstub: Stub, secured_db: Database) -> None:
    refused: list[str] = []
    others = [f"only-{p.value}" for p in Permission if p is not case.permission]
    for caller in [*others, "no-scopes"]:
        contact = new_id("contact")
        error = failure(case.call, sstub, bearer(caller), LOC_A, contact)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, (caller, error)
        assert error_details(error)["ErrorInfo"].reason == "PERMISSION_DENIED"
        assert f"lacks the '{case.permission.value}' permission" in (error.details() or ""), caller
        refused.append(contact)
    assert_untouched(secured_db, sstub, LOC_A, refused)
    # The one permission it needs is enough; so is a token of every one on every location.
    case.call(sstub, bearer(f"only-{case.permission.value}"), LOC_A, new_id("contact"))
    case.call(sstub, bearer("admin"), LOC_A, new_id("contact"))


def test_only_the_erase_permission_erases(sstub: Stub, secured_db: Database) -> None:
    """Neither write nor support (nor every other permission at once but erase) erases, nor
    a token of another location; the contact's data stays until the erase token comes."""
    contact = new_id("contact")
    sstub.SetDnd(
        pb.SetDndRequest(
            location_id=LOC_A,
            contact_id=contact,
            action=pb.DND_ACTION_ENABLE,
            direction=pb.DIRECTION_OUTBOUND,
            scope=pb.Scope(channel=pb.CHANNEL_SMS),
            source=pb.SOURCE_USER,
            note="kept until erased",
        ),
        metadata=bearer("only-write"),
        timeout=T,
    )
    for caller in ("only-write", "only-support", "tenant-b", "all-but-erase"):
        error = failure(erase_contact, sstub, bearer(caller), LOC_A, contact)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, caller
    note = "SELECT note FROM dnd_blocks WHERE location_id = $1 AND contact_id = $2"
    assert secured_db.fetchval(note, LOC_A, contact) == "kept until erased"
    answer = erase_contact(sstub, bearer("only-erase"), LOC_A, contact)
    assert answer.changed  # type: ignore[attr-defined]
    assert secured_db.fetchval(note, LOC_A, contact) == ""


def test_allowed_write_takes_effect(sstub: Stub, secured_db: Database) -> None:
    contact = new_id("contact")
    set_dnd_as(pb.SOURCE_CONTACT)(sstub, bearer("only-contact"), LOC_A, contact)
    check = check_send(sstub, bearer("only-check"), LOC_A, contact)
    assert not check.allowed  # type: ignore[attr-defined]
    assert secured_db.fetchval(
        "SELECT count(*) FROM dnd_changes WHERE location_id = $1 AND contact_id = $2",
        LOC_A,
        contact,
    )


def test_bulk_items_need_the_permission_of_their_source(sstub: Stub, secured_db: Database) -> None:
    """A BulkSetDnd needs write, and an item acting as CONTACT (or SUPPORT) that permission
    too, as its SetDnd would: without it the whole call is refused and nothing is written."""
    refused = []
    for caller, source in (
        ("only-write", pb.SOURCE_CONTACT),
        ("only-contact", pb.SOURCE_CONTACT),
        ("only-write", pb.SOURCE_SUPPORT),
        ("only-support", pb.SOURCE_SUPPORT),
    ):
        contact = new_id("contact")
        error = failure(bulk_set_dnd_as(source), sstub, bearer(caller), LOC_A, contact)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, (caller, error)
        refused += [contact, contact + "0"]
    assert_untouched(secured_db, sstub, LOC_A, refused)
    answer = bulk_set_dnd_as(pb.SOURCE_CONTACT)(sstub, bearer("tenant-a"), LOC_A, new_id("c"))
    assert answer.changed == 2  # type: ignore[attr-defined]


def test_token_hashed_by_the_cli_is_accepted(sstub: Stub) -> None:
    answer = get_status(sstub, bearer("cli-made"), LOC_B, new_id("contact"))
    assert answer.status.version == 0  # type: ignore[attr-defined]
    error = failure(check_send, sstub, bearer("cli-made"), LOC_B, new_id("contact"))
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED


# --- tenant isolation -------------------------------------------------------------------------


@pytest.mark.parametrize("case", TARGETED, ids=case_id)
def test_token_of_location_a_is_denied_on_location_b(
    case: Case, sstub: Stub, secured_db: Database
) -> None:
    contact_b = new_id("contact")
    error = failure(case.call, sstub, bearer("tenant-a"), LOC_B, contact_b)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED, error
    assert "may not act on this location" in (error.details() or "")
    assert_untouched(secured_db, sstub, LOC_B, [contact_b])
    # ... and the other way round; a token listing no location may act on none.
    refused_a = []
    for caller in ("tenant-b", "no-locations"):
        contact = new_id("contact")
        error = failure(case.call, sstub, bearer(caller), LOC_A, contact)
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED, (caller, error)
        refused_a.append(contact)
    assert_untouched(secured_db, sstub, LOC_A, refused_a)
    # The same token and call on its own location is fine.
    case.call(sstub, bearer("tenant-a"), LOC_A, new_id("contact"))


def admin_set(stub: Stub, loc: str, contact: str) -> pb.SetDndResponse:
    answer = set_dnd_as(pb.SOURCE_USER)(stub, bearer("admin"), loc, contact)
    assert isinstance(answer, pb.SetDndResponse)
    return answer


def test_watch_sees_only_the_tokens_locations(chan: grpc.Channel, sstub: Stub) -> None:
    everything = Stream(chan, pb.WatchChangesRequest(), bearer("admin"))
    own = Stream(chan, pb.WatchChangesRequest(), bearer("tenant-a"))
    with everything, own:
        assert everything.wait(lambda s: bool(s.bookmarks)), everything.error
        assert own.wait(lambda s: bool(s.bookmarks)), own.error
        start = everything.bookmarks[-1]
        contact_b, contact_a = new_id("contact-b"), new_id("contact-a")
        # B first: once A's change arrives, B's would have arrived before it.
        admin_set(sstub, LOC_B, contact_b)
        admin_set(sstub, LOC_A, contact_a)
        assert everything.wait(lambda s: s.saw(contact_a) and s.saw(contact_b))
        assert own.wait(lambda s: s.saw(contact_a)), own.error
        assert not own.saw(contact_b)
        assert {e.location_id for e in own.events} == {LOC_A}
    # Resuming from before both changes (catch-up from the log) filters the same way.
    with Stream(chan, pb.WatchChangesRequest(after_cursor=start), bearer("tenant-a")) as resumed:
        assert resumed.wait(lambda s: s.saw(contact_a)), resumed.error
        assert not resumed.saw(contact_b)
        assert {e.location_id for e in resumed.events} == {LOC_A}


@pytest.mark.parametrize("locations", [[LOC_B], [LOC_A, LOC_B]], ids=["B", "A+B"])
def test_watch_naming_another_location_is_denied(sstub: Stub, locations: list[str]) -> None:
    stream = sstub.WatchChanges(
        pb.WatchChangesRequest(location_ids=locations), metadata=bearer("tenant-a"), timeout=T
    )
    error = failure(next, stream)
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error)["ErrorInfo"].reason == "PERMISSION_DENIED"


def test_token_with_no_locations_watches_nothing(chan: grpc.Channel, sstub: Stub) -> None:
    reference = Stream(chan, pb.WatchChangesRequest(location_ids=[LOC_A]), bearer("admin"))
    nowhere = Stream(chan, pb.WatchChangesRequest(), bearer("no-locations"))
    with reference, nowhere:
        assert reference.wait(lambda s: bool(s.bookmarks))
        assert nowhere.wait(lambda s: bool(s.bookmarks) or s.done)
        contact = new_id("contact")
        admin_set(sstub, LOC_A, contact)
        assert reference.wait(lambda s: s.saw(contact))
        # Allowed: refused outright, or a stream that never carries LOC_A's change.
        nowhere.wait(lambda s: s.saw(contact) or len(s.bookmarks) >= 3, timeout=5)
        assert not nowhere.saw(contact)


def test_idempotency_keys_are_per_location(sstub: Stub) -> None:
    """Tenants cannot collide on (or probe) each other's idempotency keys."""
    key = f"key-{uuid.uuid4().hex}"
    for caller, loc in (("tenant-a", LOC_A), ("tenant-b", LOC_B)):
        request = pb.SetDndRequest(
            location_id=loc,
            contact_id="contact-shared-id",
            action=pb.DND_ACTION_ENABLE,
            direction=pb.DIRECTION_OUTBOUND,
            scope=pb.Scope(channel=pb.CHANNEL_CALL),
            source=pb.SOURCE_USER,
            idempotency_key=key,
        )
        answer = sstub.SetDnd(request, metadata=bearer(caller), timeout=T)
        assert answer.changed, caller


# --- unauthenticated --------------------------------------------------------------------------

UNKNOWN = f"secret-unknown-{uuid.uuid4().hex}"
BAD_CREDENTIALS: dict[str, Metadata] = {
    "missing": (),
    "unknown token": (("authorization", f"Bearer {UNKNOWN}"),),
    "the token's hash": (("authorization", f"Bearer {hash_token(TOKENS['admin'])}"),),
    "basic scheme": (("authorization", f"Basic {TOKENS['admin']}"),),
    "no scheme": (("authorization", TOKENS["admin"]),),
    "empty bearer": (("authorization", "Bearer"),),
    "other header": (("x-api-key", TOKENS["admin"]),),
}


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_missing_or_unknown_token_is_unauthenticated(
    case: Case, sstub: Stub, secured_db: Database
) -> None:
    refused = []
    for label, metadata in BAD_CREDENTIALS.items():
        contact = new_id("contact")
        error = failure(case.call, sstub, metadata, LOC_A, contact)
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED, (label, error)
        assert error_details(error)["ErrorInfo"].reason == "UNAUTHENTICATED", label
        refused.append(contact)
    assert_untouched(secured_db, sstub, LOC_A, refused)


def test_authentication_comes_before_validation(sstub: Stub) -> None:
    invalid = pb.GetStatusRequest(location_id="", contact_id="")
    error = failure(sstub.GetStatus, invalid)
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in (error.details() or "")
    error = failure(sstub.GetStatus, invalid, metadata=(("authorization", f"Bearer {UNKNOWN}"),))
    assert error.code() is grpc.StatusCode.UNAUTHENTICATED
    error = failure(sstub.GetStatus, invalid, metadata=bearer("admin"))
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT


def test_bearer_scheme_is_case_insensitive(sstub: Stub) -> None:
    metadata = (("authorization", f"bearer {TOKENS['only-read']}"),)
    answer = get_status(sstub, metadata, LOC_A, new_id("contact"))
    assert answer.status.version == 0  # type: ignore[attr-defined]


# --- open endpoints ---------------------------------------------------------------------------


def test_health_and_reflection_need_no_token(secured: ServerProcess) -> None:
    with grpc.insecure_channel(secured.addr) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "dnd.v1.DndService"):
            request = health_pb2.HealthCheckRequest(service=service)
            answer = health.Check(request, timeout=T)  # type: ignore[attr-defined]
            assert answer.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="dnd.v1.DndService"),
        ]
        answers = list(reflection.ServerReflectionInfo(iter(requests), timeout=T))  # type: ignore[operator]
        services = {s.name for s in answers[0].list_services_response.service}
        assert {"dnd.v1.DndService", "grpc.health.v1.Health"} <= services
        assert answers[1].file_descriptor_response.file_descriptor_proto
        # ... while the service itself does need a token.
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        error = failure(get_status, stub, (), LOC_A, "c")
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED


def test_grpcurl_lists_without_token(secured: ServerProcess) -> None:
    grpcurl = os.path.join(REPO, ".venv", "bin", "grpcurl")
    listed = subprocess.run(
        [grpcurl, "-plaintext", secured.addr, "list"], capture_output=True, text=True, timeout=30
    )
    assert listed.returncode == 0, listed.stderr
    assert "dnd.v1.DndService" in listed.stdout.split()
    body = json.dumps({"location_id": LOC_A, "contact_id": "contact-grpcurl"})
    method = "dnd.v1.DndService/GetStatus"
    refused = subprocess.run(
        [grpcurl, "-plaintext", "-d", body, secured.addr, method],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stderr
    header = f"authorization: Bearer {TOKENS['only-read']}"
    allowed = subprocess.run(
        [grpcurl, "-plaintext", "-H", header, "-d", body, secured.addr, method],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert allowed.returncode == 0, allowed.stderr


# --- logs -------------------------------------------------------------------------------------


def test_tokens_evidence_notes_and_bodies_never_logged(
    secured: ServerProcess, chan: grpc.Channel, sstub: Stub
) -> None:
    loc = new_id("loc-logs")
    tag = uuid.uuid4().hex
    evidence, note, body = f"evidence-{tag}", f"note-{tag}", f"see you at 5, {tag}"

    def set_dnd(metadata: Metadata, **extra: Any) -> pb.SetDndResponse:
        request = pb.SetDndRequest(
            location_id=loc,
            contact_id=new_id("contact"),
            action=pb.DND_ACTION_ENABLE,
            direction=pb.DIRECTION_OUTBOUND,
            scope=pb.Scope(channel=pb.CHANNEL_EMAIL),
            source=pb.SOURCE_USER,
            note=note,
            evidence=evidence,
            **extra,
        )
        return sstub.SetDnd(request, metadata=metadata, timeout=T)

    set_dnd(bearer("admin"))
    codes = {
        "UNAUTHENTICATED": failure(set_dnd, (("authorization", f"Bearer {UNKNOWN}"),)),
        "PERMISSION_DENIED": failure(set_dnd, bearer("tenant-b")),
        "INVALID_ARGUMENT": failure(set_dnd, bearer("admin"), actor_id="bad\x01actor"),
        "basic": failure(set_dnd, (("authorization", f"Basic {TOKENS['tenant-a']}"),)),
    }
    assert codes["INVALID_ARGUMENT"].code() is grpc.StatusCode.INVALID_ARGUMENT
    sstub.ProcessInboundMessage(
        pb.ProcessInboundMessageRequest(
            location_id=loc, contact_id=new_id("contact"), channel=pb.CHANNEL_SMS, body=body
        ),
        metadata=bearer("admin"),
        timeout=T,
    )
    watch_ended = sum(1 for e in secured.collect_logs() if e.get("event") == "watch_ended")
    with Stream(chan, pb.WatchChangesRequest(), bearer("tenant-b")) as good:
        assert good.wait(lambda s: bool(s.bookmarks))
    failure(watch(explicit=False), sstub, (("authorization", f"Bearer {UNKNOWN}"),), loc, "c")

    # Wait for the log lines of every call above, so that the check below sees them.
    def logged() -> bool:
        logs = secured.collect_logs()
        rpcs = [e for e in logs if e.get("event") == "rpc" and e.get("location_id") == loc]
        ended = sum(1 for e in logs if e.get("event") == "watch_ended")
        return len(rpcs) >= 6 and ended >= watch_ended + 2

    wait_until(logged, what="the log lines of the calls above")
    codes_logged = {
        e["code"] for e in secured.logs if e.get("event") == "rpc" and e.get("location_id") == loc
    }
    assert {"OK", "UNAUTHENTICATED", "PERMISSION_DENIED", "INVALID_ARGUMENT"} <= codes_logged
    text = "".join(secured.raw)
    for secret in [*TOKENS.values(), UNKNOWN, evidence, note, body]:
        # Each secret ends in 32 random hex digits: neither half may show, whole or cut.
        random_part = secret[-32:]
        assert all(c in "0123456789abcdef" for c in random_part)
        assert random_part[:16] not in text and random_part[16:] not in text, secret


# --- open mode and startup refusal ------------------------------------------------------------


def startup_error(env: dict[str, str]) -> str:
    """The message of the start-up checks of ``dnd-server serve`` for ``env``, run in process
    (one case of each kind is run end to end too)."""
    config = Config.from_env(env)
    with pytest.raises(StartupError) as raised:
        load_tokens(config)
        server_credentials(config)
    return str(raised.value)


@pytest.mark.parametrize(
    "addr", ["0.0.0.0:50051", "[::]:0", ":0", "10.1.2.3:50051", "dnd.example.com:50051"]
)
def test_open_serving_off_loopback_is_refused(addr: str) -> None:
    message = startup_error({"DND_GRPC_ADDR": addr})
    assert f"refusing to serve on {addr} without authentication" in message
    assert "DND_TOKENS_FILE" in message and "DND_AUTH=disabled" in message


@pytest.mark.parametrize("addr", ["127.0.0.1:0", "127.0.0.2:50051", "localhost:50051", "[::1]:0"])
def test_open_serving_on_loopback_is_allowed(addr: str) -> None:
    assert load_tokens(Config.from_env({"DND_GRPC_ADDR": addr})) is None


def test_open_on_loopback_says_so(server: ServerProcess, stub: Stub) -> None:
    """The session's server runs without a tokens file on 127.0.0.1."""
    warned = [e for e in server.logs if e.get("event") == "auth_disabled_on_loopback"]
    assert warned and warned[0]["level"] == "warning"
    assert "this machine only" in warned[0]["detail"]
    get_keyword_settings(stub, (), "loc-open", "")


PLAIN = "my-plaintext-token-123"


MALFORMED = [
    ("{not json", "cannot read tokens file"),
    (None, "cannot read tokens file"),
    ("[]", 'expected {"tokens": [...]}'),
    ('{"tokens": []}', "at least one token"),
    (json.dumps({"tokens": [{"sha256": PLAIN, "scopes": ["read"]}]}), "64 hex digits"),
    (
        json.dumps({"tokens": [{"sha256": "a" * 64, "scopes": ["admin"]}]}),
        "tokens[0].scopes",
    ),
    (
        json.dumps({"tokens": [{"sha256": "a" * 64, "locations": "all", "scopes": []}]}),
        "tokens[0].locations must be a list",
    ),
]
MALFORMED_IDS = ["not-json", "missing", "list", "empty", "plaintext", "unknown-scope", "bad-locs"]


def write_tokens(folder: Path, content: str | None) -> Path:
    path = folder / "tokens.json"
    if content is not None:
        path.write_text(content, encoding="utf-8")
    return path


@pytest.mark.parametrize(("content", "problem"), MALFORMED, ids=MALFORMED_IDS)
def test_malformed_tokens_file_is_refused(
    content: str | None, problem: str, tmp_path: Path
) -> None:
    path = write_tokens(tmp_path, content)
    message = startup_error({"DND_TOKENS_FILE": str(path)})
    assert problem in message
    assert str(path) in message
    assert PLAIN not in message


# --- TLS --------------------------------------------------------------------------------------


def openssl(folder: Path, *args: str) -> None:
    subprocess.run([OPENSSL, *args], cwd=folder, check=True, capture_output=True, timeout=30)


def make_ca(folder: Path, name: str) -> None:
    openssl(
        folder,
        *("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}"),
        *("-addext", "basicConstraints=critical,CA:TRUE"),
        *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
    )


def make_leaf(folder: Path, name: str, ca: str, extensions: str) -> None:
    (folder / f"{name}.ext").write_text(extensions, encoding="utf-8")
    openssl(
        folder,
        *("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"),
        *("-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}"),
    )
    openssl(
        folder,
        *("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key"),
        *("-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext"),
    )


@dataclass(frozen=True)
class Certs:
    folder: Path

    def path(self, name: str) -> str:
        return str(self.folder / name)

    def read(self, name: str) -> bytes:
        return (self.folder / name).read_bytes()

    def client(self, name: str | None = None, ca: str = "ca") -> grpc.ChannelCredentials:
        if name is None:
            return grpc.ssl_channel_credentials(self.read(f"{ca}.pem"))
        return grpc.ssl_channel_credentials(
            self.read(f"{ca}.pem"), self.read(f"{name}.key"), self.read(f"{name}.pem")
        )


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA, a server certificate for localhost / 127.0.0.1 and a client certificate signed by
    it; another CA and a client certificate of its own."""
    folder = tmp_path_factory.mktemp("certs")
    make_ca(folder, "ca")
    make_ca(folder, "otherca")
    server = "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
    make_leaf(folder, "server", "ca", server + "basicConstraints=CA:FALSE\n")
    client = "extendedKeyUsage=clientAuth\nbasicConstraints=CA:FALSE\n"
    make_leaf(folder, "client", "ca", client)
    make_leaf(folder, "rogue", "otherca", client)
    return Certs(folder)


def tls_health(addr: str, credentials: grpc.ChannelCredentials) -> str:
    with grpc.secure_channel(addr, credentials) as channel:
        try:
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=3)  # type: ignore[attr-defined]
        except grpc.RpcError as error:
            return f"error:{error.code().name}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def start_tls(url: str, env: dict[str, str], credentials: grpc.ChannelCredentials) -> Any:
    process = ServerProcess(url, env).start(wait_serving=False)
    deadline = time.monotonic() + 30
    while (seen := tls_health(process.addr, credentials)) != "SERVING":
        if time.monotonic() > deadline:
            process.stop()
            raise TimeoutError(f"TLS server not SERVING ({seen}):\n{''.join(process.raw)}")
        time.sleep(0.1)
    return process


@pytest.fixture(scope="module")
def tls_server(fresh_database: Any, certs: Certs, tokens_path: Path) -> Iterator[ServerProcess]:
    """TLS with tokens, bound to every interface."""
    env = {
        "DND_GRPC_ADDR": "0.0.0.0:0",
        "DND_TOKENS_FILE": str(tokens_path),
        "DND_TLS_CERT_FILE": certs.path("server.pem"),
        "DND_TLS_KEY_FILE": certs.path("server.key"),
    }
    process = start_tls(fresh_database(), env, certs.client())
    yield process
    process.stop()


@pytest.fixture(scope="module")
def mtls_server(fresh_database: Any, certs: Certs) -> Iterator[ServerProcess]:
    env = {
        "DND_TLS_CERT_FILE": certs.path("server.pem"),
        "DND_TLS_KEY_FILE": certs.path("server.key"),
        "DND_TLS_CLIENT_CA_FILE": certs.path("ca.pem"),
    }
    process = start_tls(fresh_database(), env, certs.client("client"))
    yield process
    process.stop()


def test_tls_with_bearer_token(tls_server: ServerProcess, certs: Certs) -> None:
    assert tls_server.health().startswith("error:")  # plaintext gets nowhere
    for host in ("127.0.0.1", "localhost"):
        credentials = grpc.composite_channel_credentials(
            certs.client(), grpc.access_token_call_credentials(TOKENS["admin"])
        )
        with grpc.secure_channel(f"{host}:{tls_server.port}", credentials) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            contact = new_id("contact")
            answer = stub.SetDnd(
                pb.SetDndRequest(
                    location_id=LOC_A,
                    contact_id=contact,
                    action=pb.DND_ACTION_ENABLE,
                    direction=pb.DIRECTION_OUTBOUND,
                    scope=pb.Scope(channel=pb.CHANNEL_SMS),
                    source=pb.SOURCE_USER,
                ),
                timeout=T,
            )
            assert answer.changed
    with grpc.secure_channel(tls_server.addr, certs.client()) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        info = stub.GetServerInfo(pb.GetServerInfoRequest(), metadata=bearer("admin"), timeout=T)
        assert info.tls_enabled and info.auth_enabled
    # Tokens still apply over TLS.
    with grpc.secure_channel(tls_server.addr, certs.client()) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        error = failure(get_status, stub, (), LOC_A, "c")
        assert error.code() is grpc.StatusCode.UNAUTHENTICATED
        error = failure(get_status, stub, bearer("tenant-a"), LOC_B, "c")
        assert error.code() is grpc.StatusCode.PERMISSION_DENIED


def test_tls_refuses_plaintext_and_untrusted_clients(
    tls_server: ServerProcess, certs: Certs
) -> None:
    with grpc.insecure_channel(tls_server.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        error = failure(get_status, stub, bearer("admin"), LOC_A, "c")
        assert error.code() is grpc.StatusCode.UNAVAILABLE
    # A client trusting another CA does not accept the server's certificate.
    assert tls_health(tls_server.addr, certs.client(ca="otherca")) == "error:UNAVAILABLE"
    assert tls_health(tls_server.addr, certs.client()) == "SERVING"


def test_healthcheck_command_over_tls(tls_server: ServerProcess, certs: Certs) -> None:
    env = {
        "DND_GRPC_ADDR": f"0.0.0.0:{tls_server.port}",
        "DND_TLS_CERT_FILE": certs.path("server.pem"),
        "DND_TLS_KEY_FILE": certs.path("server.key"),
    }
    done = cli("healthcheck", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SERVING"


def test_mutual_tls_requires_a_client_certificate_of_the_ca(
    mtls_server: ServerProcess, certs: Certs
) -> None:
    assert tls_health(mtls_server.addr, certs.client("client")) == "SERVING"
    with grpc.secure_channel(mtls_server.addr, certs.client("client")) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        set_dnd_as(pb.SOURCE_USER)(stub, (), LOC_A, new_id("contact"))
    # No client certificate, or one signed by another CA: the handshake fails.
    assert tls_health(mtls_server.addr, certs.client()) == "error:UNAVAILABLE"
    assert tls_health(mtls_server.addr, certs.client("rogue")) == "error:UNAVAILABLE"
    with grpc.secure_channel(mtls_server.addr, certs.client("rogue")) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        error = failure(get_status, stub, (), LOC_A, "c")
        assert error.code() is grpc.StatusCode.UNAVAILABLE
    assert mtls_server.health().startswith("error:")


def test_healthcheck_command_with_mutual_tls(mtls_server: ServerProcess, certs: Certs) -> None:
    env = {
        "DND_GRPC_ADDR": f"127.0.0.1:{mtls_server.port}",
        "DND_TLS_CERT_FILE": certs.path("server.pem"),
        "DND_TLS_KEY_FILE": certs.path("server.key"),
        "DND_TLS_CLIENT_CA_FILE": certs.path("ca.pem"),
        "DND_HEALTHCHECK_CERT_FILE": certs.path("client.pem"),
        "DND_HEALTHCHECK_KEY_FILE": certs.path("client.key"),
    }
    done = cli("healthcheck", env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SERVING"


@pytest.mark.parametrize(
    ("files", "problem"),
    [
        ({"DND_TLS_CERT_FILE": "server.pem"}, "TLS needs both DND_TLS_CERT_FILE and"),
        ({"DND_TLS_KEY_FILE": "server.key"}, "TLS needs both DND_TLS_CERT_FILE and"),
        ({"DND_TLS_CLIENT_CA_FILE": "ca.pem"}, "DND_TLS_CLIENT_CA_FILE needs DND_TLS_CERT_FILE"),
        (
            {"DND_TLS_CERT_FILE": "missing.pem", "DND_TLS_KEY_FILE": "server.key"},
            "cannot read TLS files",
        ),
    ],
    ids=["cert-only", "key-only", "client-ca-only", "missing-cert"],
)
def test_incomplete_tls_settings_are_refused(
    files: dict[str, str], problem: str, certs: Certs
) -> None:
    env = {name: certs.path(file) for name, file in files.items()}
    assert problem in startup_error(env)
