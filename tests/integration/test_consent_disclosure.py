"""Consent evidence is shown to callers with the ``read`` scope only: over real gRPC to a server
process with a tokens file, on real PostgreSQL.

RecordConsent and RevokeConsent need the ``consent`` scope (whatever source they name);
GetConsentPolicy needs ``read``, UpdateConsentPolicy ``write``. A caller without ``read`` gets
every answer with the consents' evidence cleared: a consent write's own answer, the status in
another write's answer (an inbound START), a CheckSend allowed by consent. A caller with
``read`` sees it there and in GetStatus and ListHistory; the change stream never carries it.
"""

from __future__ import annotations

import json
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
from tests.support import Database, ServerProcess, error_details, new_id

Metadata = tuple[tuple[str, str], ...]
Stub = dnd_pb2_grpc.DndServiceStub
T = 10.0
LOC = new_id("loc-consent")
PHONE = "+14155552671"
EVIDENCE = pb.ConsentEvidence(
    form_url="https://example.com/join",
    ip_address="198.51.100.4",
    user_agent="Mozilla/5.0",
    disclosure_version="v9",
)
SCOPES = {
    "recorder": ([LOC], ["consent"]),
    "recorder-reader": ([LOC], ["consent", "read"]),
    "checker": ([LOC], ["check"]),
    "reader": ([LOC], ["check", "read"]),
    "gateway": ([LOC], ["contact"]),
    "writer": ([LOC], ["write"]),
    "admin": ("*", ["check", "read", "write", "contact", "support", "watch", "consent"]),
}
TOKENS = {name: f"secret-{name}-{uuid.uuid4().hex}" for name in SCOPES}


def bearer(name: str) -> Metadata:
    return (("authorization", f"Bearer {TOKENS[name]}"),)


@pytest.fixture(scope="module")
def secured(fresh_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    entries = [
        {"name": name, "sha256": hash_token(TOKENS[name]), "locations": locs, "scopes": scopes}
        for name, (locs, scopes) in SCOPES.items()
    ]
    path: Path = tmp_path_factory.mktemp("consent") / "tokens.json"
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


def record(contact: str, **fields: Any) -> pb.RecordConsentRequest:
    base: dict[str, Any] = {
        "location_id": LOC,
        "contact_id": contact,
        "channel": pb.CHANNEL_SMS,
        "purpose": pb.CONSENT_PURPOSE_MARKETING,
        "method": pb.CONSENT_METHOD_WEB_FORM,
        "source": pb.SOURCE_WORKFLOW,
        "evidence": EVIDENCE,
    }
    base.update(fields)
    return pb.RecordConsentRequest(**base)


def refused(fn: Any, request: Any, caller: str) -> grpc.RpcError:
    try:
        fn(request, metadata=bearer(caller), timeout=T)
    except grpc.RpcError as error:
        return error
    raise AssertionError(f"{caller} was allowed")


def test_recording_and_revoking_consent_need_the_consent_scope(sstub: Stub, sdb: Database) -> None:
    contact = new_id("contact")
    revoke = pb.RevokeConsentRequest(
        location_id=LOC, contact_id=contact, channel=pb.CHANNEL_SMS, source=pb.SOURCE_USER
    )
    for caller in ("checker", "reader", "gateway", "writer"):
        for fn, request in ((sstub.RecordConsent, record(contact)), (sstub.RevokeConsent, revoke)):
            error = refused(fn, request, caller)
            assert error.code() is grpc.StatusCode.PERMISSION_DENIED, caller
            assert "lacks the 'consent' permission" in (error.details() or "")
            assert error_details(error)["ErrorInfo"].reason == "PERMISSION_DENIED"
    # Nor even as source CONTACT with the contact scope.
    error = refused(sstub.RecordConsent, record(contact, source=pb.SOURCE_CONTACT), "gateway")
    assert error.code() is grpc.StatusCode.PERMISSION_DENIED
    assert sdb.fetchval("SELECT count(*) FROM dnd_consents WHERE contact_id = $1", contact) == 0
    assert sdb.fetchval("SELECT count(*) FROM dnd_changes WHERE contact_id = $1", contact) == 0
    # The consent scope alone is enough, for any source but SYSTEM.
    for source in (pb.SOURCE_USER, pb.SOURCE_CONTACT, pb.SOURCE_SUPPORT):
        answer = sstub.RecordConsent(
            record(contact, source=source), metadata=bearer("recorder"), timeout=T
        )
        assert answer.consent.source == source
    assert sstub.RevokeConsent(revoke, metadata=bearer("recorder"), timeout=T).changed


def test_the_policy_is_read_with_read_and_replaced_with_write(sstub: Stub) -> None:
    update = pb.UpdateConsentPolicyRequest(
        location_id=LOC, policy=pb.ConsentPolicy(double_opt_in_window_seconds=7200)
    )
    for caller in ("recorder", "checker", "reader", "gateway"):
        assert refused(sstub.UpdateConsentPolicy, update, caller).code() is (
            grpc.StatusCode.PERMISSION_DENIED
        )
    get = pb.GetConsentPolicyRequest(location_id=LOC)
    for caller in ("recorder", "checker", "gateway", "writer"):
        assert refused(sstub.GetConsentPolicy, get, caller).code() is (
            grpc.StatusCode.PERMISSION_DENIED
        )
    before = sstub.GetConsentPolicy(get, metadata=bearer("reader"), timeout=T).policy
    assert before.double_opt_in_window_seconds == 86400
    sstub.UpdateConsentPolicy(update, metadata=bearer("writer"), timeout=T)
    after = sstub.GetConsentPolicy(get, metadata=bearer("reader"), timeout=T).policy
    assert after.double_opt_in_window_seconds == 7200
    sstub.UpdateConsentPolicy(
        pb.UpdateConsentPolicyRequest(location_id=LOC), metadata=bearer("writer"), timeout=T
    )


def test_evidence_is_shown_only_with_read(sstub: Stub) -> None:
    contact = new_id("contact")
    # The recorder without read: its own answer comes without the evidence.
    blind = sstub.RecordConsent(
        record(contact, idempotency_key=f"k-{contact}"), metadata=bearer("recorder"), timeout=T
    )
    assert not blind.consent.HasField("evidence")
    assert all(not c.HasField("evidence") for c in blind.status.consents)
    # The same answer replayed to a recorder with read shows it (it was kept whole).
    seen = sstub.RecordConsent(
        record(contact, idempotency_key=f"k-{contact}"),
        metadata=bearer("recorder-reader"),
        timeout=T,
    )
    assert seen.consent.evidence == EVIDENCE
    assert seen.cursor == blind.cursor
    status = sstub.GetStatus(
        factories.get_status(LOC, contact), metadata=bearer("reader"), timeout=T
    ).status
    assert [c.evidence for c in status.consents] == [EVIDENCE]
    entry = sstub.ListHistory(
        factories.history(LOC, contact), metadata=bearer("reader"), timeout=T
    ).entries[0]
    assert entry.consent.evidence == EVIDENCE

    # A check allowed by the consent: the consent without its evidence for a check-only caller.
    sstub.UpdateConsentPolicy(
        pb.UpdateConsentPolicyRequest(
            location_id=LOC,
            policy=pb.ConsentPolicy(
                channels=[pb.ChannelConsentPolicy(channel=pb.CHANNEL_SMS, require_marketing=True)]
            ),
        ),
        metadata=bearer("writer"),
        timeout=T,
    )
    try:
        check = factories.check(LOC, contact, purpose=pb.PURPOSE_MARKETING)
        for_checker = sstub.CheckSend(check, metadata=bearer("checker"), timeout=T)
        assert for_checker.allowed and for_checker.consent.method == pb.CONSENT_METHOD_WEB_FORM
        assert not for_checker.consent.HasField("evidence")
        for_reader = sstub.CheckSend(check, metadata=bearer("reader"), timeout=T)
        assert for_reader.consent.evidence == EVIDENCE
    finally:
        sstub.UpdateConsentPolicy(
            pb.UpdateConsentPolicyRequest(location_id=LOC), metadata=bearer("writer"), timeout=T
        )

    # Another write's answer (an inbound STOP through the SMS gateway) shows the status's
    # consents without their evidence too.
    stop = sstub.ProcessInboundMessage(
        factories.inbound(LOC, contact, "STOP", from_address=PHONE),
        metadata=bearer("gateway"),
        timeout=T,
    )
    (revoked,) = stop.status.consents
    assert revoked.status == pb.CONSENT_STATUS_REVOKED and not revoked.HasField("evidence")


SECRETS = ("agent-secret-7", "called about the bill", "the STOP text", "carrier:30007")


def test_write_answers_tell_decisions_not_dossiers_without_read(sstub: Stub) -> None:
    """A write's answer shows the contact's status: to a caller without ``read`` (a gateway
    posting inbound messages, a writer) it is the decision view CheckSend gives, no actor,
    note, evidence, provider detail or address of any block, and no contact holding a
    suppressed address; a caller with ``read`` sees the record whole."""
    holder, probe = new_id("contact"), new_id("contact")
    admin = bearer("admin")
    sstub.SetDnd(
        factories.enable(
            LOC,
            holder,
            reason=pb.REASON_SMS_OPT_OUT_KEYWORD,
            source=pb.SOURCE_CONTACT,
            address=PHONE,
            actor_id=SECRETS[0],
            note=SECRETS[1],
            evidence=SECRETS[2],
            provider_detail=SECRETS[3],
        ),
        metadata=admin,
        timeout=T,
    )
    sstub.SetDnd(
        factories.enable(LOC, holder, pb.CHANNEL_EMAIL, actor_id=SECRETS[0], note=SECRETS[1]),
        metadata=admin,
        timeout=T,
    )
    answers = {
        # Nothing to do: the message is no keyword, and the sender is another contact's.
        "gateway": sstub.ProcessInboundMessage(
            factories.inbound(LOC, holder, "hello there"), metadata=bearer("gateway"), timeout=T
        ),
        "gateway, another contact": sstub.ProcessInboundMessage(
            factories.inbound(LOC, probe, "hello", from_address=PHONE),
            metadata=bearer("gateway"),
            timeout=T,
        ),
        "writer": sstub.SetDnd(
            factories.enable(LOC, probe, address=PHONE),
            metadata=bearer("writer"),
            timeout=T,
        ),
    }
    for who, answer in answers.items():
        text = str(answer)
        # The holding contact is named only in the answer about itself.
        for secret in (*SECRETS, *([holder] if who != "gateway" else [])):
            assert secret not in text, (who, secret, text)
    # The decision stays: what denies, and since when.
    shown = answers["gateway"].status
    assert {b.reason for b in shown.blocks} == {pb.REASON_SMS_OPT_OUT_KEYWORD, pb.REASON_MANUAL}
    assert all(b.HasField("since") for b in shown.blocks)
    [suppression] = answers["writer"].status.address_suppressions
    assert suppression.reason == pb.REASON_SMS_OPT_OUT_KEYWORD and suppression.contact_id == ""
    # With read, the record is whole.
    whole = sstub.ProcessInboundMessage(
        factories.inbound(LOC, holder, "hello again"), metadata=admin, timeout=T
    )
    assert all(secret in str(whole) for secret in SECRETS)
