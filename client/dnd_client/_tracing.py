"""Trace context on outgoing calls, when OpenTelemetry is installed (the ``tracing`` extra).

Each call carries the caller's current trace context as metadata (W3C ``traceparent`` and
``tracestate``, and ``baggage``: what the configured propagators write), so the server's span
of the call continues the caller's trace. Without OpenTelemetry, or outside any span, calls
carry nothing more. OpenTelemetry is imported at the first call, never at import time.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, MutableMapping

_Inject = Callable[[MutableMapping[str, str]], None]

# The injector, once looked up: False before, None without OpenTelemetry.
_injector: _Inject | bool | None = False

# The variables a process hands its trace context down to a command with (the environment
# as carrier: TRACEPARENT, TRACESTATE, BAGGAGE).
ENVIRONMENT_CARRIER = ("TRACEPARENT", "TRACESTATE", "BAGGAGE")


def _load() -> _Inject | None:
    global _injector
    if _injector is False:
        try:
            from opentelemetry.propagate import inject
        except ImportError:
            _injector = None
        else:
            _injector = inject
    return _injector if callable(_injector) else None


def trace_metadata() -> tuple[tuple[str, str], ...]:
    """The metadata carrying the current trace context (empty when there is none)."""
    inject = _load()
    if inject is None:
        return ()
    carrier: dict[str, str] = {}
    inject(carrier)
    return tuple(carrier.items())


def continue_trace(env: Mapping[str, str] | None = None) -> bool:
    """Make the trace context of the environment (TRACEPARENT, TRACESTATE, BAGGAGE) the
    current one, so the calls that follow continue the trace of the process that started this
    one. False when there is none, or OpenTelemetry is not installed."""
    env = os.environ if env is None else env
    carrier = {name.lower(): env[name] for name in ENVIRONMENT_CARRIER if env.get(name)}
    if not carrier:
        return False
    try:
        from opentelemetry import context, propagate, trace
    except ImportError:
        return False
    found = propagate.extract(carrier)
    if not trace.get_current_span(found).get_span_context().is_valid:
        return False
    context.attach(found)
    return True
