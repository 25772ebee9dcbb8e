"""Consent across replicas: real server processes on one PostgreSQL database.

A consent recorded through one replica reaches another's contact cache through the change
feed, like any change. The consent policy is cached per location for DND_POLICY_CACHE_SECONDS:
the replica that updates it uses the new one at once, another keeps its copy until it is that
old (or is asked fully_consistent, which reads the database and refreshes its copy), and one
with DND_POLICY_CACHE_SECONDS=0 reads it on every check."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests.factories import check
from tests.support import ServerProcess, new_id, wait_until

T = 10


@pytest.fixture(scope="module")
def stubs(fresh_database: Any) -> Iterator[dict[str, Any]]:
    """Replicas on one database: ``long`` keeps policies an hour, ``none`` never, ``default``
    the default 5 s."""
    url = fresh_database()
    settings = {
        "long": {"DND_POLICY_CACHE_SECONDS": "3600"},
        "none": {"DND_POLICY_CACHE_SECONDS": "0"},
        "default": {},
    }
    processes = {name: ServerProcess(url, env).start() for name, env in settings.items()}
    channels = {name: grpc.insecure_channel(p.addr) for name, p in processes.items()}
    try:
        yield {name: dnd_pb2_grpc.DndServiceStub(c) for name, c in channels.items()}
    finally:
        for channel in channels.values():
            channel.close()
        for process in processes.values():
            process.stop()


def marketing(stub: Any, loc: str, contact: str, **fields: Any) -> pb.CheckSendResponse:
    request = check(loc, contact, purpose=pb.PURPOSE_MARKETING, **fields)
    return stub.CheckSend(request, timeout=T)


def require_sms(stub: Any, loc: str) -> None:
    policy = pb.ConsentPolicy(
        channels=[pb.ChannelConsentPolicy(channel=pb.CHANNEL_SMS, require_marketing=True)]
    )
    stub.UpdateConsentPolicy(
        pb.UpdateConsentPolicyRequest(location_id=loc, policy=policy), timeout=T
    )


def test_a_policy_update_reaches_other_replicas_by_their_cache_time(stubs: Any) -> None:
    loc, contact = new_id("loc"), new_id("contact")
    long, none, default = stubs["long"], stubs["none"], stubs["default"]
    assert marketing(long, loc, contact).allowed  # "no policy" is now cached for an hour
    require_sms(default, loc)
    assert marketing(default, loc, contact).denial == pb.DENIAL_NO_CONSENT  # at once here
    assert marketing(none, loc, contact).denial == pb.DENIAL_NO_CONSENT  # never cached
    assert marketing(long, loc, contact).allowed  # its copy is not an hour old yet
    consistent = marketing(long, loc, contact, fully_consistent=True)
    assert consistent.denial == pb.DENIAL_NO_CONSENT
    # The database read refreshed its copy.
    assert marketing(long, loc, contact).denial == pb.DENIAL_NO_CONSENT


def test_a_consent_recorded_through_one_replica_reaches_the_others_cache(stubs: Any) -> None:
    loc, contact = new_id("loc"), new_id("contact")
    long, default = stubs["long"], stubs["default"]
    require_sms(long, loc)
    # The contact's state (no consent) is now in the long replica's contact cache.
    assert marketing(long, loc, contact).denial == pb.DENIAL_NO_CONSENT
    default.RecordConsent(
        pb.RecordConsentRequest(
            location_id=loc,
            contact_id=contact,
            channel=pb.CHANNEL_SMS,
            purpose=pb.CONSENT_PURPOSE_MARKETING,
            method=pb.CONSENT_METHOD_VERBAL,
            source=pb.SOURCE_USER,
            evidence=pb.ConsentEvidence(recording_ref="call-42"),
        ),
        timeout=T,
    )
    wait_until(lambda: marketing(long, loc, contact).allowed, what="the feed to evict it")
    status = long.GetStatus(
        pb.GetStatusRequest(location_id=loc, contact_id=contact), timeout=T
    ).status
    assert [(c.method, c.evidence.recording_ref) for c in status.consents] == [
        (pb.CONSENT_METHOD_VERBAL, "call-42")
    ]
