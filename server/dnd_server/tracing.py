"""Traces (OpenTelemetry, the ``tracing`` extra): off unless ``Config.tracing`` (DND_TRACING, or
the standard OTEL_* variables asking for traces; docs/configuration.md).

When on, each server process records

- one SERVER span per RPC (the gRPC instrumentation's asyncio server interceptor), continuing
  the trace context its caller sent (W3C ``traceparent``, by the OTEL_PROPAGATORS in force),
  with ``rpc.service``, ``rpc.method``, ``rpc.grpc.status_code`` and, from the call boundary,
  ``dnd.location_id``; ``grpc.health.v1.Health`` (probes) is not traced unless
  OTEL_PYTHON_GRPC_EXCLUDED_SERVICES names the services to leave out instead;
- one CLIENT span per database statement of a traced call (the asyncpg instrumentation; SQL
  text only, never its parameters). Statements of background work (the change feed, health and
  maintenance) belong to no call and are not recorded.

Spans go out in batches (OTEL_BSP_*) to the exporters of OTEL_TRACES_EXPORTER: ``otlp`` (the
default: OTLP/gRPC, set by OTEL_EXPORTER_OTLP_*), ``console`` (one JSON line per span on stdout,
beside the log lines) or ``none``. Sampling follows OTEL_TRACES_SAMPLER, the resource
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES (``service.name`` defaults to dnd-service).

When off, nothing of OpenTelemetry is imported and the server has no interceptor.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING

import grpc

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

    from dnd_server.rpc.boundary import Call

SERVICE_NAME = "dnd-service"
# The attribute naming the location of a call (when its request names one).
LOCATION_ATTRIBUTE = "dnd.location_id"
# Left out of tracing unless OTEL_PYTHON_GRPC_EXCLUDED_SERVICES says otherwise.
UNTRACED_SERVICES = ("grpc.health.v1.Health",)

_OK = grpc.StatusCode.OK
# The codes a server span counts as its own failure (the others are the caller's).
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


@dataclass(frozen=True, slots=True)
class Tracing:
    """Tracing in force in this process: the server's interceptors, and the call boundary's
    hook ``annotate(call, code)`` putting the end of each call on its span."""

    provider: TracerProvider
    interceptors: tuple[grpc.aio.ServerInterceptor, ...]
    annotate: Callable[[Call, grpc.StatusCode], None]

    def shutdown(self) -> None:
        """Export what is still buffered (within OTEL_BSP_EXPORT_TIMEOUT) and stop."""
        self.provider.shutdown()


# What tracing imports: the ``tracing`` extra.
_MODULES = (
    "opentelemetry.sdk.trace",
    "opentelemetry.instrumentation.grpc",
    "opentelemetry.instrumentation.asyncpg",
    "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
)


def missing_modules() -> list[str]:
    """The modules tracing needs that cannot be imported here."""
    missing = []
    for name in _MODULES:
        try:
            found = importlib.util.find_spec(name) is not None
        except ImportError:  # a parent package is missing or fails to import
            found = False
        if not found:
            missing.append(name)
    return missing


def start_tracing() -> Tracing:
    """Set up the tracer provider and its exporters by the OTEL_* variables, instrument asyncpg
    and make the server interceptor (``missing_modules`` first: the ``tracing`` extra)."""
    from opentelemetry import trace
    from opentelemetry.instrumentation.asyncpg import AsyncPGInstrumentor
    from opentelemetry.instrumentation.grpc import aio_server_interceptor
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased

    env = os.environ
    resource = Resource.create()
    if str(resource.attributes.get("service.name", "")).startswith("unknown_service"):
        resource = resource.merge(Resource({"service.name": SERVICE_NAME}))
    if "service.version" not in resource.attributes:
        resource = resource.merge(Resource({"service.version": _version()}))
    # Calls: sampled as OTEL_TRACES_SAMPLER says (by default, as the caller's trace is).
    provider = TracerProvider(resource=resource)
    # Statements: recorded inside a sampled call only.
    statements = TracerProvider(
        resource=resource, sampler=ParentBased(ALWAYS_OFF), shutdown_on_exit=False
    )
    for exporter in _exporters(env):
        processor = BatchSpanProcessor(exporter)
        provider.add_span_processor(processor)
        statements.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    AsyncPGInstrumentor().instrument(tracer_provider=statements)
    # Empty counts as unset, as for every OTEL_* variable.
    listed = env.get("OTEL_PYTHON_GRPC_EXCLUDED_SERVICES", "").strip()
    untraced = (
        [s.strip() for s in listed.split(",") if s.strip()] if listed else list(UNTRACED_SERVICES)
    )
    interceptor = aio_server_interceptor(
        tracer_provider=provider, filter_=_traced_calls(untraced) if untraced else None
    )
    return Tracing(provider, (interceptor,), _annotator())


def _traced_calls(untraced: list[str]) -> Callable[[grpc.HandlerCallDetails], bool]:
    """Whether a call is of a traced service: a prefix test (the instrumentation's own
    service filters cost tens of microseconds per call)."""
    prefixes = tuple(f"/{service}/" for service in untraced)

    def traced(details: grpc.HandlerCallDetails) -> bool:
        return not details.method.startswith(prefixes)

    return traced


def _annotator() -> Callable[[Call, grpc.StatusCode], None]:
    from opentelemetry.trace import Status, StatusCode, get_current_span

    def annotate(call: Call, code: grpc.StatusCode) -> None:
        """The end of ``call`` on its span, when recording: its location, and the status it
        was answered with (the interceptor sees the code of calls that return only)."""
        span = get_current_span()
        if not span.is_recording():
            return
        location = call.location_id
        if location:
            span.set_attribute(LOCATION_ATTRIBUTE, location)
        if code is _OK:
            if call.rpc.streaming:  # it said CANCELLED until now
                span.set_attribute("rpc.grpc.status_code", code.value[0])
            return
        span.set_attribute("rpc.grpc.status_code", code.value[0])
        if code in _SERVER_FAULTS:
            status = getattr(call, "status", None)
            details = f": {status.details}" if status is not None and status.details else ""
            span.set_status(Status(StatusCode.ERROR, f"{code.name}{details}"))

    return annotate


def _exporters(env: Mapping[str, str]) -> list[SpanExporter]:
    """OTEL_TRACES_EXPORTER's exporters (checked by ``config._tracing``)."""
    listed = env.get("OTEL_TRACES_EXPORTER", "").strip() or "otlp"
    names = [name.strip().lower() for name in listed.split(",")]
    exporters: list[SpanExporter] = []
    if "otlp" in names:
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporters.append(OTLPSpanExporter())
    if "console" in names:
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        exporters.append(
            ConsoleSpanExporter(out=sys.stdout, formatter=lambda span: span.to_json(None) + "\n")
        )
    return exporters


def _version() -> str:
    try:
        return metadata.version("dnd-service")
    except metadata.PackageNotFoundError:
        return "unknown"
