"""Channel set-up shared by the sync and async clients: credentials, keepalive, retries."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

SERVICE = "dnd.v1.DndService"

# Reads are idempotent: gRPC retries them on UNAVAILABLE with exponential backoff. Writes are
# retried by the client itself, and only when they carry an idempotency key.
READ_METHODS = ("GetStatus", "CheckSend", "ListHistory", "GetKeywordSettings")


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
    tls: bool = False
    root_certificates: bytes | None = None
    client_certificate: bytes | None = None
    client_key: bytes | None = None
    keepalive_seconds: float = 30.0
    max_attempts: int = 5

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
