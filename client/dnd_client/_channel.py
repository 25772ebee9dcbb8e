"""Channel set-up shared by the sync and async clients: credentials, keepalive, retries."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, TypeVar, Unpack

import grpc

from dnd_client._requests import READS, Prepared
from dnd_client._tracing import trace_metadata

SERVICE = "dnd.v1.DndService"

# Reads are idempotent: gRPC retries them on UNAVAILABLE with exponential backoff. Writes are
# retried by the client itself, and only when they carry an idempotency key.
READ_METHODS = READS

_C = TypeVar("_C")


class ChannelOptions(TypedDict, total=False):
    """The options both clients take beside the target address."""

    # Default per-call deadline, seconds.
    timeout: float
    # Bearer token sent with every call.
    token: str | None
    tls: bool
    root_certificates: bytes | None
    client_certificate: bytes | None
    client_key: bytes | None
    keepalive_seconds: float
    # Attempts of a call retried on UNAVAILABLE (reads by gRPC, idempotent writes by the client).
    max_attempts: int


def service_config(max_attempts: int = 5) -> str:
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": SERVICE, "method": m} for m in READ_METHODS],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


@dataclass(frozen=True)
class ChannelSettings:
    target: str
    timeout: float = 5.0
    token: str | None = None
    tls: bool = False
    root_certificates: bytes | None = None
    client_certificate: bytes | None = None
    client_key: bytes | None = None
    keepalive_seconds: float = 30.0
    max_attempts: int = 5

    @classmethod
    def of(cls, target: str, **options: Unpack[ChannelOptions]) -> ChannelSettings:
        return cls(target, **options)

    def open(self, insecure: Callable[..., _C], secure: Callable[..., _C]) -> _C:
        """A channel made by the sync or the aio flavour of grpc's channel functions."""
        credentials = self.credentials()
        if credentials is None:
            return insecure(self.target, options=self.options())
        return secure(self.target, credentials, options=self.options())

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        """A call's metadata: the bearer token, and the caller's trace context (with
        OpenTelemetry installed, see ``_tracing.py``)."""
        return metadata(self.token) + trace_metadata()

    def call(self, prepared: Prepared[Any]) -> dict[str, Any]:
        """The keyword arguments of one call: its deadline and metadata."""
        return {"timeout": prepared.timeout or self.timeout, "metadata": self.metadata}

    def options(self) -> Sequence[tuple[str, object]]:
        return [
            ("grpc.service_config", service_config(self.max_attempts)),
            ("grpc.enable_retries", 1),
            ("grpc.keepalive_time_ms", int(self.keepalive_seconds * 1000)),
            ("grpc.keepalive_timeout_ms", 10_000),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            # Reconnect within seconds of a server coming back, not gRPC's default minutes.
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 5000),
        ]

    def credentials(self) -> grpc.ChannelCredentials | None:
        if not (self.tls or self.root_certificates or self.client_certificate):
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.root_certificates,
            private_key=self.client_key,
            certificate_chain=self.client_certificate,
        )


def metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()
