"""Registering the service with request decoding that never raises.

gRPC decodes each request before any handler runs; with the generated registration a body
that is not the method's message makes gRPC log a traceback and answer UNKNOWN with the
exception's text. Here a body that does not decode reaches the handler as ``Undecodable``,
which the call boundary answers INVALID_ARGUMENT, with its one log line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
from dnd.v1 import dnd_pb2 as pb
from google.protobuf.message import Message

from dnd_server.domain.errors import InvalidArgument

SERVICE = pb.DESCRIPTOR.services_by_name["DndService"]


@dataclass(frozen=True, slots=True)
class Undecodable:
    """A request body that is not a serialized message of the method's request type."""

    message_type: str

    def invalid(self) -> InvalidArgument:
        return InvalidArgument.one(
            "request",
            f"the request body is not a serialized {self.message_type} message (protobuf "
            "decoding failed); send that message, as the generated clients do",
        )


def _decoder(cls: type[Message]) -> Callable[[bytes], Message | Undecodable]:
    parse = cls.FromString
    undecodable = Undecodable(cls.DESCRIPTOR.full_name)

    def decode(data: bytes) -> Message | Undecodable:
        try:
            return parse(data)
        except Exception:  # DecodeError, or whatever else a decoder may raise on bytes
            return undecodable

    return decode


def _encoder(cls: type[Message]) -> Callable[[Message | bytes], bytes]:
    """A stream's serializer: a message, or bytes a handler already serialized as one of
    ``cls`` (``ChangeMessages``: one encoding shared by every stream that sends it)."""
    serialize = cls.SerializeToString

    def encode(message: Message | bytes) -> bytes:
        return message if isinstance(message, bytes) else serialize(message)

    return encode


def add_dnd_service(servicer: Any, server: grpc.aio.Server) -> None:
    """Register every DndService method of ``servicer`` (as the generated
    ``add_DndServiceServicer_to_server`` does), decoding requests with ``_decoder``."""
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    for method in SERVICE.methods:
        if method.client_streaming:
            raise TypeError(f"{method.name}: client streaming is not registered here")
        request_cls = getattr(pb, method.input_type.name)
        response_cls = getattr(pb, method.output_type.name)
        make = (
            grpc.unary_stream_rpc_method_handler
            if method.server_streaming
            else grpc.unary_unary_rpc_method_handler
        )
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=_decoder(request_cls),
            response_serializer=(
                _encoder(response_cls)
                if method.server_streaming
                else response_cls.SerializeToString
            ),
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(SERVICE.full_name, handlers)
