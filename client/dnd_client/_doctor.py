"""``dndctl doctor``: what an operator checks first when a client cannot use the service.

Each check gives a finding: ``ok``, ``warn`` (worth knowing, not a fault) or ``fail`` (a
problem: doctor exits 5). The checks that judge are pure functions of what was observed, so
they are tested without moving a real clock or minting an expiring certificate.
"""

from __future__ import annotations

import datetime as dt
import socket
import ssl
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from dnd.v1 import dnd_pb2 as pb

OK = "ok"
WARN = "warn"
FAIL = "fail"

# What each permission (token scope) lets a caller call.
PERMISSION_RPCS: dict[str, str] = {
    "check": "CheckSend, BatchCheckSend",
    "read": "GetStatus, ListHistory, GetKeywordSettings, GetConsentPolicy",
    "write": "SetDnd and provider events as USER/WORKFLOW/SYSTEM, UpdateKeywordSettings, "
    "UpdateConsentPolicy",
    "contact": "SetDnd as CONTACT, ProcessInboundMessage, unsubscribe events",
    "support": "SetDnd as SUPPORT",
    "watch": "WatchChanges",
    "consent": "RecordConsent, RevokeConsent",
}

# A certificate expiring sooner than this is worth a warning.
CERTIFICATE_WARN_DAYS = 30


@dataclass(frozen=True, slots=True)
class Finding:
    check: str
    status: str
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def skew_finding(skew: float, uncertainty: float, max_skew: float) -> Finding:
    """The server's clock minus the client's (seconds), known to within ``uncertainty``
    (half the round trip): a problem when it certainly exceeds ``max_skew``."""
    text = f"server clock {skew:+.3f}s from this host's (within ±{uncertainty:.3f}s)"
    if abs(skew) - uncertainty > max_skew:
        return Finding("clock", FAIL, f"{text}: more than {max_skew:g}s; check NTP on both")
    return Finding("clock", OK, text)


def version_finding(client: str, server: str) -> Finding:
    text = f"client {client}, server {server}"
    if client != server:
        return Finding("version", WARN, text + ": they differ")
    return Finding("version", OK, text)


def token_findings(info: pb.GetServerInfoResponse, required: Sequence[str]) -> list[Finding]:
    """What the caller's token lets it do, and whether it holds the permissions required."""
    if not info.auth_enabled:
        return [
            Finding(
                "auth",
                WARN,
                "the server requires no token (served open): every caller may call every RPC",
            )
        ]
    held = set(info.permissions)
    locations = ", ".join(info.locations) or "none"
    findings = [Finding("auth", OK, f"authenticated as {info.caller_name!r}")]
    if not held:
        findings.append(Finding("permissions", FAIL, "the token holds no permission (no scopes)"))
    else:
        may = "; ".join(f"{p} ({PERMISSION_RPCS.get(p, '?')})" for p in sorted(held))
        findings.append(Finding("permissions", OK, f"may call: {may}"))
        lacking = [p for p in PERMISSION_RPCS if p not in held]
        if lacking:
            findings.append(
                Finding("not permitted", OK, f"lacks: {', '.join(lacking)} (by its scopes)")
            )
    if not info.locations:
        findings.append(Finding("locations", FAIL, "the token may act on no location"))
    else:
        findings.append(Finding("locations", OK, locations))
    missing = [p for p in required if p not in held]
    if missing:
        needed = "; ".join(f"{p} ({PERMISSION_RPCS.get(p, '?')})" for p in missing)
        findings.append(Finding("required", FAIL, f"the token lacks {needed}"))
    return findings


def certificate_finding(not_after: dt.datetime, now: dt.datetime) -> Finding:
    left = not_after - now
    when = not_after.strftime("%Y-%m-%d %H:%M:%SZ")
    if left <= dt.timedelta(0):
        return Finding("certificate", FAIL, f"the server's certificate expired {when}")
    if left < dt.timedelta(days=CERTIFICATE_WARN_DAYS):
        return Finding("certificate", WARN, f"expires {when}, in {left.days} days")
    return Finding("certificate", OK, f"expires {when}, in {left.days} days")


def certificate_expiry(
    addr: str,
    *,
    ca_file: str | None,
    cert_file: str | None,
    key_file: str | None,
    timeout: float,
) -> dt.datetime:
    """When the certificate the server at ``addr`` presents expires, verified as the client
    verifies it (the CA file or the system's trust store, the host name). Raises OSError
    (ssl.SSLError included) when the handshake fails."""
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["h2"])
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    with (
        socket.create_connection((host, int(port)), timeout=timeout) as raw,
        context.wrap_socket(raw, server_hostname=host) as tls,
    ):
        certificate = tls.getpeercert()
    assert certificate is not None
    seconds = ssl.cert_time_to_seconds(str(certificate["notAfter"]))
    return dt.datetime.fromtimestamp(seconds, dt.UTC)
