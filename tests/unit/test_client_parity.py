"""The typed clients keep up with the service: every RPC of dnd.v1.DndService is a method of
both clients, and every field of its request is an argument of that method. Pure: reads the
proto descriptors and the client classes, no server."""

from __future__ import annotations

import inspect
import re

import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_client import AsyncDndClient, Channel, DndClient, Source
from dnd_client import _requests as rq
from dnd_client._rpcs import Methods, Stream, Unary
from google.protobuf.descriptor import Descriptor, FieldDescriptor

SERVICE = pb.DESCRIPTOR.services_by_name["DndService"]

# Client method names that are not the RPC's name in snake case.
METHOD_NAMES = {"WatchChanges": "watch"}

# Request fields the clients take under other names (or as one value of their own type).
ARGUMENTS = {
    ("RecordConsentRequest", "evidence"): {"evidence"},
}


def method_name(rpc: str) -> str:
    return METHOD_NAMES.get(rpc, re.sub(r"(?<!^)(?=[A-Z])", "_", rpc).lower())


def arguments_for(message: Descriptor) -> set[tuple[str, frozenset[str]]]:
    """(field path, argument names that carry it) for every leaf field of ``message``."""
    needed: set[tuple[str, frozenset[str]]] = set()
    for field in message.fields:
        alias = ARGUMENTS.get((message.name, field.name))
        if alias is not None:
            needed.add((field.name, frozenset(alias)))
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not _is_leaf(field):
            for path, names in arguments_for(field.message_type):
                needed.add((f"{field.name}.{path}", names))
        else:
            needed.add((field.name, frozenset({field.name})))
    return needed


def _is_leaf(field: FieldDescriptor) -> bool:
    """Messages passed as one argument: repeated targets, timestamps."""
    return field.is_repeated or field.message_type.name in {"Timestamp"}


RPCS = [m.name for m in SERVICE.methods]


@pytest.mark.parametrize("rpc", RPCS)
def test_every_rpc_is_a_method_of_both_clients(rpc: str) -> None:
    name = method_name(rpc)
    descriptor = Methods.__dict__.get(name)
    assert isinstance(descriptor, Unary | Stream), f"Methods has no {name} for {rpc}"
    assert getattr(DndClient, name) is descriptor
    assert getattr(AsyncDndClient, name) is descriptor
    streaming = SERVICE.methods_by_name[rpc].server_streaming
    assert isinstance(descriptor, Stream) == streaming


@pytest.mark.parametrize("rpc", RPCS)
def test_every_request_field_is_an_argument(rpc: str) -> None:
    descriptor = Methods.__dict__[method_name(rpc)]
    parameters = set(inspect.signature(descriptor.build).parameters)
    request = SERVICE.methods_by_name[rpc].input_type
    missing = [path for path, names in arguments_for(request) if not names & parameters]
    assert not missing, f"{method_name(rpc)} lacks arguments for {request.name} fields {missing}"


def test_every_unary_rpc_is_a_read_or_a_write_of_the_right_kind() -> None:
    reads, replaces = set(rq.READS), set(rq.REPLACES)
    unary = {m.name for m in SERVICE.methods if not m.server_streaming}
    assert reads <= unary and replaces <= unary and not reads & replaces
    for rpc in unary - reads:
        # A write: its builder takes an idempotency key (or is a replace, safe to retry).
        parameters = inspect.signature(Methods.__dict__[method_name(rpc)].build).parameters
        request = SERVICE.methods_by_name[rpc].input_type
        assert ("idempotency_key" in parameters) != (rpc in replaces), rpc
        assert ("idempotency_key" in request.fields_by_name) == ("idempotency_key" in parameters)


@pytest.mark.parametrize("rpc", rq.REPLACES)
def test_a_replace_is_retried_without_a_key(rpc: str) -> None:
    prepared = Methods.__dict__[method_name(rpc)].build("loc")
    assert prepared.method == rpc and prepared.retry


def test_a_keyed_write_is_retried_and_a_keyless_one_is_not() -> None:
    build = Methods.__dict__["revoke_consent"].build
    keyed = build("loc", "c", Channel.SMS, source=Source.USER, idempotency_key="k-1")
    assert keyed.retry and keyed.request.idempotency_key == "k-1"
    assert not build("loc", "c", Channel.SMS, source=Source.USER).retry


def test_no_client_method_names_an_rpc_the_service_lacks() -> None:
    known = {method_name(rpc) for rpc in RPCS}
    defined = {n for n, v in Methods.__dict__.items() if isinstance(v, Unary | Stream)}
    assert defined == known


def test_the_blocking_client_blocks_and_the_async_client_awaits() -> None:
    with DndClient("127.0.0.1:1") as sync:
        assert not inspect.iscoroutinefunction(sync.check_send)
    # Binding a method on the async client gives a callable that returns an awaitable.
    aio = AsyncDndClient.__new__(AsyncDndClient)
    bound = Methods.__dict__["check_send"].__get__(aio, AsyncDndClient)
    assert callable(bound)


def test_parity_check_would_catch_a_missing_field() -> None:
    """The check above is not vacuous: a request field without an argument is reported."""

    def narrower(location_id: str, contact_id: str) -> rq.Prepared[pb.CheckSendResponse]:
        raise AssertionError("not called")

    parameters = set(inspect.signature(narrower).parameters)
    request = SERVICE.methods_by_name["CheckSend"].input_type
    missing = {path for path, names in arguments_for(request) if not names & parameters}
    assert {"channel", "min_cursor", "fully_consistent"} <= missing
