"""The ``check`` scope discloses decisions, not dossiers: over real gRPC to a server process with
a tokens file, on real PostgreSQL.

A token with ``check`` but not ``read`` learns from CheckSend and BatchCheckSend whether a send
is allowed and what denies it (reason, scope, direction, source, since), never who wrote what
about the contact (actor ids, notes, evidence, provider details, the address an event carried)
nor which other contact holds a suppressed address. A token that also holds ``read`` (and an
open server) sees the whole blocks, as GetStatus would show them.
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
from tests.support import OUT, ServerProcess, error_details, new_id

Metadata = tuple[tuple[str, str], ...]
Stub = dnd_pb2_grpc.DndServiceStub
T = 10.0
LOC = new_id("loc-disclosure")
PHONE = "+14155552671"
TOKENS = {name: f"secret-{name}-{uuid.uuid4().hex}" for name in ("checker", "reader", "admin")}
SCOPES = {
    "checker": ([LOC], ["check"]),
    "reader": ([LOC], ["check", "read"]),
    "admin": ("*", ["check", "read", "write", "contact", "support", "watch"]),
}


def bearer(name: str) -> Metadata:
    return (("authorization", f"Bearer {TOKENS[name]}"),)


@pytest.fixture(scope="module")
def secured(fresh_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    entries = [
        {"name": name, "sha256": hash_token(TOKENS[name]), "locations": locs, "scopes": scopes}
        for name, (locs, scopes) in SCOPES.items()
    ]
    path: Path = tmp_path_factory.mktemp("disclosure") / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}), encoding="utf-8")
    process = ServerProcess(fresh_database(), {"DND_TOKENS_FILE": str(path)}).start()
    yield process
    process.stop()


@pytest.fixture(scope="module")
def sstub(secured: ServerProcess) -> Iterator[Stub]:
    with grpc.insecure_channel(secured.addr) as channel:
        yield dnd_pb2_grpc.DndServiceStub(channel)


class Dossier:
    """A contact (the holder) with an SMS opt-out that suppressed PHONE and an all-channels
    block, each written with an actor, a note, evidence and a provider detail; and another
    contact checked at the holder's number."""

    def __init__(self, stub: Stub) -> None:
        tag = uuid.uuid4().hex[:10]
        self.holder = f"holder-{tag}"
        self.other = f"other-{tag}"
        self.secrets = {
            "actor": f"actor-{tag}",
            "note": f"note-{tag}",
            "evidence": f"evidence-{tag}",
            "detail": f"detail-{tag}",
        }
        for scope, reason, address in (
            (pb.Scope(channel=pb.CHANNEL_SMS), pb.REASON_SMS_OPT_OUT_KEYWORD, PHONE),
            (pb.Scope(all_channels=True), pb.REASON_MANUAL, ""),
        ):
            stub.SetDnd(
                pb.SetDndRequest(
                    location_id=LOC,
                    contact_id=self.holder,
                    action=pb.DND_ACTION_ENABLE,
                    direction=OUT,
                    scope=scope,
                    reason=reason,
                    source=pb.SOURCE_USER,
                    actor_id=self.secrets["actor"],
                    note=self.secrets["note"],
                    evidence=self.secrets["evidence"],
                    provider_detail=self.secrets["detail"],
                    address=address,
                ),
                metadata=bearer("admin"),
                timeout=T,
            )

    def hidden(self) -> list[str]:
        """What a check-only caller must never be told (it names PHONE itself when asking)."""
        return [*self.secrets.values(), self.holder]


@pytest.fixture(scope="module")
def dossier(sstub: Stub) -> Dossier:
    return Dossier(sstub)


def check(stub: Stub, who: str, contact: str, address: str = "") -> pb.CheckSendResponse:
    request = factories.check(LOC, contact, address=address)
    return stub.CheckSend(request, metadata=bearer(who), timeout=T)


def batch(stub: Stub, who: str, dossier: Dossier, details: bool = False) -> Any:
    return stub.BatchCheckSend(
        pb.BatchCheckSendRequest(
            location_id=LOC,
            channel=pb.CHANNEL_SMS,
            targets=[
                pb.CheckTarget(contact_id=dossier.holder),
                pb.CheckTarget(contact_id=dossier.other, address=PHONE),
            ],
            include_details=details,
        ),
        metadata=bearer(who),
        timeout=T,
    )


def assert_block_summary(block: pb.Block) -> None:
    """direction, scope, reason, source and since; nothing else."""
    assert block.direction == OUT
    assert block.HasField("scope") and block.reason and block.source == pb.SOURCE_USER
    assert block.HasField("since")
    assert (block.actor_id, block.note, block.evidence, block.provider_detail, block.address) == (
        "",
        "",
        "",
        "",
        "",
    )


def assert_suppression_summary(suppression: pb.AddressSuppression) -> None:
    assert suppression.channel == pb.CHANNEL_SMS
    assert suppression.reason == pb.REASON_SMS_OPT_OUT_KEYWORD
    assert suppression.source == pb.SOURCE_USER and suppression.HasField("since")
    fields = (
        suppression.address,
        suppression.contact_id,
        suppression.actor_id,
        suppression.provider_detail,
    )
    assert fields == ("", "", "", "")


def assert_nothing_hidden(message: Any, dossier: Dossier, *also: str) -> None:
    raw = message.SerializeToString()
    for secret in [*dossier.hidden(), *also]:
        assert secret.encode() not in raw, f"{secret!r} disclosed to a check-only caller"


def test_check_only_caller_gets_block_summaries(sstub: Stub, dossier: Dossier) -> None:
    answer = check(sstub, "checker", dossier.holder)
    assert not answer.allowed
    assert {b.reason for b in answer.denied_by} == {
        pb.REASON_SMS_OPT_OUT_KEYWORD,
        pb.REASON_MANUAL,
    }
    for block in answer.denied_by:
        assert_block_summary(block)
    assert "denied:" in answer.explanation and answer.version >= 2
    assert_nothing_hidden(answer, dossier, PHONE)
    # At its own number the holder's answer also lists the suppression, in summary.
    at_number = check(sstub, "checker", dossier.holder, PHONE)
    assert [s.reason for s in at_number.denied_by_address] == [pb.REASON_SMS_OPT_OUT_KEYWORD]
    assert_suppression_summary(at_number.denied_by_address[0])
    assert_nothing_hidden(at_number, dossier)


def test_check_only_caller_is_not_told_who_holds_an_address(sstub: Stub, dossier: Dossier) -> None:
    answer = check(sstub, "checker", dossier.other, PHONE)
    assert not answer.allowed and list(answer.denied_by) == []
    assert len(answer.denied_by_address) == 1
    assert_suppression_summary(answer.denied_by_address[0])
    assert "SMS_OPT_OUT_KEYWORD" in answer.explanation
    assert dossier.holder not in answer.explanation
    assert PHONE not in answer.explanation
    assert_nothing_hidden(answer, dossier)


def test_reader_sees_whole_blocks(sstub: Stub, dossier: Dossier) -> None:
    answer = check(sstub, "reader", dossier.holder)
    for block in answer.denied_by:
        assert block.actor_id == dossier.secrets["actor"]
        assert block.note == dossier.secrets["note"]
        assert block.evidence == dossier.secrets["evidence"]
        assert block.provider_detail == dossier.secrets["detail"]
    suppressed = check(sstub, "reader", dossier.other, PHONE)
    held = suppressed.denied_by_address[0]
    assert (held.contact_id, held.address) == (dossier.holder, PHONE)
    assert dossier.holder in suppressed.explanation


def test_check_only_batch_is_compact(sstub: Stub, dossier: Dossier) -> None:
    answer = batch(sstub, "checker", dossier)
    holder, other = answer.results
    assert (holder.contact_id, other.contact_id) == (dossier.holder, dossier.other)
    assert not holder.allowed and not other.allowed
    assert len(holder.denied_by) == 2
    for block in holder.denied_by:
        assert_block_summary(block)
    assert_suppression_summary(other.denied_by_address[0])
    assert dossier.holder not in other.explanation
    raw = answer.SerializeToString()
    for secret in dossier.secrets.values():
        assert secret.encode() not in raw
    assert raw.count(dossier.holder.encode()) == 1, "the holder is named only as its own target"


def test_check_only_caller_may_not_ask_for_details(sstub: Stub, dossier: Dossier) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        batch(sstub, "checker", dossier, details=True)
    error = caught.value
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert error_details(error)["ErrorInfo"].reason == "PERMISSION_DENIED"
    assert "'read' permission" in (error.details() or "") and "include_details" in (
        error.details() or ""
    )


def test_reader_batch_details_on_request(sstub: Stub, dossier: Dossier) -> None:
    compact = batch(sstub, "reader", dossier)
    for block in compact.results[0].denied_by:
        assert_block_summary(block)
    detailed = batch(sstub, "reader", dossier, details=True)
    holder, other = detailed.results
    assert {b.evidence for b in holder.denied_by} == {dossier.secrets["evidence"]}
    assert other.denied_by_address[0].contact_id == dossier.holder
    assert not holder.details_omitted and not other.details_omitted


def test_open_server_answers_in_full(stub: Any, loc: str, contact: str) -> None:
    """Without tokens every caller holds every scope, read included."""
    stub.SetDnd(
        pb.SetDndRequest(
            location_id=loc,
            contact_id=contact,
            action=pb.DND_ACTION_ENABLE,
            direction=OUT,
            scope=pb.Scope(channel=pb.CHANNEL_SMS),
            source=pb.SOURCE_USER,
            evidence="open evidence",
        ),
        timeout=T,
    )
    answer = stub.CheckSend(
        pb.CheckSendRequest(location_id=loc, contact_id=contact, channel=pb.CHANNEL_SMS),
        timeout=T,
    )
    assert [b.evidence for b in answer.denied_by] == ["open evidence"]
