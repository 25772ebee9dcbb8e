"""BatchCheckSend responses stay small, over real gRPC to server processes on real PostgreSQL.

Denied results are compact unless the caller asks for details (include_details); a repeated
target is answered once (its result points at the first with repeat_of); 1,000 heavy targets
fit in one response either way (details come while they fit in their allowance, the rest come
compact with details_omitted); and a response too large to send is refused by the service
itself, so that the status the client gets is the one the metrics count and the log line
shows.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from dnd_server.config import Config, ConfigError
from prometheus_client.parser import text_string_to_metric_families

from tests import factories
from tests.support import ServerProcess, error_details, new_id

Stub = dnd_pb2_grpc.DndServiceStub
T = 30.0
# The largest texts a block may carry.
EVIDENCE = "e" * 4000
NOTE = "n" * 1000
DETAIL = "d" * 256
ACTOR = "a" * 128
# gRPC clients refuse responses over 4 MiB unless told otherwise.
CLIENT_LIMIT = 4 << 20
# Blocks covering outbound SMS that one contact can hold at once.
SMS_BLOCKS = [
    (pb.Scope(channel=pb.CHANNEL_SMS), pb.REASON_MANUAL),
    (pb.Scope(all_channels=True), pb.REASON_MANUAL),
    (pb.Scope(channel=pb.CHANNEL_SMS), pb.REASON_SMS_OPT_OUT_KEYWORD),
    (pb.Scope(channel=pb.CHANNEL_SMS), pb.REASON_SMS_CARRIER_PERMANENT),
    (pb.Scope(channel=pb.CHANNEL_SMS), pb.REASON_SMS_CARRIER_TEMPORARY),
]


class Served:
    """A server process with a metrics endpoint, and a channel to it."""

    def __init__(self, url: str, **env: str) -> None:
        self.process = ServerProcess(url, {"DND_METRICS_ADDR": "127.0.0.1:0", **env}).start()
        self.channel = grpc.insecure_channel(self.process.addr)
        self.stub = dnd_pb2_grpc.DndServiceStub(self.channel)
        port = next(e["port"] for e in self.process.logs if e.get("event") == "metrics_listening")
        self.metrics_url = f"http://127.0.0.1:{port}/metrics"

    def requests(self, method: str) -> dict[str, float]:
        """dnd_rpc_requests_total of ``method``, by code."""
        with urllib.request.urlopen(self.metrics_url, timeout=5) as response:
            text = response.read().decode()
        counts: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "dnd_rpc_requests_total" and sample.labels["method"] == method:
                    counts[sample.labels["code"]] = sample.value
        return counts

    def close(self) -> None:
        self.channel.close()
        self.process.stop()


@pytest.fixture(scope="module")
def served(fresh_database: Any) -> Iterator[Served]:
    server = Served(fresh_database())
    yield server
    server.close()


@pytest.fixture(scope="module")
def limited(fresh_database: Any) -> Iterator[Served]:
    """A server sending responses of at most 16 KiB."""
    server = Served(fresh_database(), DND_MAX_RESPONSE_BYTES="16384")
    yield server
    server.close()


def block(stub: Stub, loc: str, contact: str, scope: pb.Scope, reason: int) -> None:
    request = factories.enable(
        loc,
        contact,
        scope=scope,
        reason=reason,
        actor_id=ACTOR,
        note=NOTE,
        evidence=EVIDENCE,
        provider_detail=DETAIL,
    )
    stub.SetDnd(request, timeout=T)


def batch(
    loc: str, targets: list[pb.CheckTarget], details: bool = False
) -> pb.BatchCheckSendRequest:
    return pb.BatchCheckSendRequest(
        location_id=loc, channel=pb.CHANNEL_SMS, targets=targets, include_details=details
    )


def test_one_heavy_contact_checked_200_times(served: Served) -> None:
    loc, contact = new_id("loc"), new_id("heavy")
    for scope, reason in SMS_BLOCKS:
        block(served.stub, loc, contact, scope, reason)
    before = served.requests("BatchCheckSend")
    targets = [pb.CheckTarget(contact_id=contact)] * 200

    compact = served.stub.BatchCheckSend(batch(loc, targets), timeout=T)
    assert len(compact.results) == 200
    assert all(r.contact_id == contact and not r.allowed for r in compact.results)
    first = compact.results[0]
    assert {b.reason for b in first.denied_by} == {r for _, r in SMS_BLOCKS}
    assert not first.HasField("repeat_of") and first.explanation.startswith("denied:")
    for repeat in compact.results[1:]:
        assert repeat.HasField("repeat_of") and repeat.repeat_of == 0
        assert list(repeat.denied_by) == [] and repeat.explanation == ""
        assert repeat.version == first.version
    assert b"eeee" not in compact.SerializeToString()
    assert compact.ByteSize() < 16 << 10, compact.ByteSize()

    detailed = served.stub.BatchCheckSend(batch(loc, targets, details=True), timeout=T)
    assert [b.evidence for b in detailed.results[0].denied_by] == [EVIDENCE] * len(SMS_BLOCKS)
    assert all(r.repeat_of == 0 for r in detailed.results[1:])
    assert detailed.ByteSize() < 64 << 10, detailed.ByteSize()

    after = served.requests("BatchCheckSend")
    assert after.get("OK", 0) - before.get("OK", 0) == 2
    assert after.get("RESOURCE_EXHAUSTED", 0) == before.get("RESOURCE_EXHAUSTED", 0)


def test_repeats_are_matched_on_the_normalised_address(served: Served) -> None:
    loc = new_id("loc")
    targets = [
        pb.CheckTarget(contact_id="c", address="+14155552671"),
        pb.CheckTarget(contact_id="c", address="(415) 555-2671"),
        pb.CheckTarget(contact_id="c"),
        pb.CheckTarget(contact_id="d", address="+14155552671"),
        pb.CheckTarget(contact_id="c"),
    ]
    results = served.stub.BatchCheckSend(batch(loc, targets), timeout=T).results
    assert [r.contact_id for r in results] == ["c", "c", "c", "d", "c"]
    assert [r.repeat_of if r.HasField("repeat_of") else None for r in results] == [
        None,
        0,
        None,
        None,
        2,
    ]
    assert all(r.allowed for r in results)


def test_thousand_heavy_targets_fit(served: Served) -> None:
    """125 contacts with 4 heavy blocks each, at 8 numbers each: 1,000 distinct targets whose
    whole blocks would take about 21 MB."""
    loc = new_id("loc")
    contacts = [f"heavy-{i:03d}" for i in range(125)]
    with ThreadPoolExecutor(8) as pool:
        list(
            pool.map(
                lambda job: block(served.stub, loc, job[0], *job[1]),
                [(c, shape) for c in contacts for shape in SMS_BLOCKS[:4]],
            )
        )
    targets = [
        pb.CheckTarget(contact_id=c, address=f"+1415{i:03d}{j:04d}")
        for i, c in enumerate(contacts)
        for j in range(8)
    ]
    assert len(targets) == 1000

    compact = served.stub.BatchCheckSend(batch(loc, targets), timeout=T)
    assert len(compact.results) == 1000
    assert all(not r.allowed and len(r.denied_by) == 4 for r in compact.results)
    assert not any(r.HasField("repeat_of") or r.details_omitted for r in compact.results)
    assert b"eeee" not in compact.SerializeToString()
    assert compact.ByteSize() < 1 << 20, compact.ByteSize()

    detailed = served.stub.BatchCheckSend(batch(loc, targets, details=True), timeout=T)
    assert [r.contact_id for r in detailed.results] == [t.contact_id for t in targets]
    assert detailed.ByteSize() < CLIENT_LIMIT, detailed.ByteSize()
    whole = [not r.details_omitted for r in detailed.results]
    shown = sum(whole)
    assert 0 < shown < 1000
    assert whole == [True] * shown + [False] * (1000 - shown), "details come in request order"
    for result in detailed.results[:shown]:
        assert [b.evidence for b in result.denied_by] == [EVIDENCE] * 4
    for result in detailed.results[shown:]:
        assert len(result.denied_by) == 4 and not any(b.evidence for b in result.denied_by)


def test_response_too_large_is_refused_counted_and_logged(limited: Served) -> None:
    loc = new_id("loc")
    before = limited.requests("BatchCheckSend")
    marker = len(limited.process.raw)
    targets = [pb.CheckTarget(contact_id=f"contact-{i:06d}") for i in range(1000)]
    with pytest.raises(grpc.RpcError) as caught:
        limited.stub.BatchCheckSend(batch(loc, targets), timeout=T)
    error = caught.value
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
    info = error_details(error)["ErrorInfo"]
    assert info.reason == "RESPONSE_TOO_LARGE" and info.metadata["limit"] == "16384"
    assert int(info.metadata["size"]) > 16384
    assert "fewer targets" in (error.details() or "")
    # The server keeps answering what fits.
    small = limited.stub.BatchCheckSend(batch(loc, targets[:10]), timeout=T)
    assert len(small.results) == 10

    refused = {"event": "rpc", "method": "BatchCheckSend", "code": "RESOURCE_EXHAUSTED"}
    limited.process.wait_log(refused)
    lines = [e for e in limited.process.logs if all(e.get(k) == v for k, v in refused.items())]
    assert len(lines) == 1, "one log line with the status the client got"
    after = limited.requests("BatchCheckSend")
    assert after.get("RESOURCE_EXHAUSTED", 0) - before.get("RESOURCE_EXHAUSTED", 0) == 1
    assert after.get("OK", 0) - before.get("OK", 0) == 1  # the small call only
    output = "".join(limited.process.raw[marker:])
    assert "Traceback" not in output and "ExecuteBatchError" not in output


def test_response_limit_setting() -> None:
    assert Config.from_env({}).response_limit == 4 << 20
    assert Config.from_env({"DND_MAX_MESSAGE_BYTES": str(8 << 20)}).response_limit == 8 << 20
    assert Config.from_env({"DND_MAX_RESPONSE_BYTES": "16384"}).response_limit == 16384
    with pytest.raises(ConfigError, match="DND_MAX_RESPONSE_BYTES"):
        Config.from_env({"DND_MAX_RESPONSE_BYTES": "100"})
