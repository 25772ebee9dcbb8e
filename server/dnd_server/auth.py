"""Authorisation by bearer tokens: who the caller is, which locations it may act on, and
which permissions it holds (the token's ``scopes`` in the tokens file). Tokens are stored as
SHA-256 hashes and compared in constant time.

Tokens file (``DND_TOKENS_FILE``), JSON::

    {"tokens": [
      {"name": "campaign-sender", "sha256": "<hex of sha256(token)>",
       "locations": ["loc-1", "loc-2"], "scopes": ["check"]},
      {"name": "compliance-desk", "sha256": "...", "locations": "*",
       "scopes": ["read", "write", "support", "watch"],
       "expires_at": "2027-01-31T00:00:00Z"}
    ]}

``expires_at`` (optional) is an RFC 3339 timestamp with a time zone: from then on the token is
refused (UNAUTHENTICATED, saying it expired). The server reloads the file on SIGHUP and when it
changes (checked every ``DND_TOKENS_RELOAD_SECONDS``): a token removed from it is refused from
the next call on. A new file that cannot be read or is invalid is not used: the tokens loaded
before stay in force and the error is logged (``tokens_reload_failed``).

Permissions, as the tokens file's ``scopes`` name them: ``check`` (CheckSend,
BatchCheckSend), ``read`` (GetStatus, ListHistory, GetKeywordSettings, GetConsentPolicy,
GetBlockExpirySettings), ``write`` (SetDnd and event RPCs as USER / WORKFLOW / SYSTEM,
UpdateKeywordSettings, UpdateConsentPolicy, UpdateBlockExpirySettings), ``contact`` (act as
source CONTACT: inbound keywords, unsubscribe events), ``support`` (act as SUPPORT: the only
way to lift a permanent opt-out or a spam lock), ``watch`` (WatchChanges, limited to the
token's locations), ``consent`` (RecordConsent, RevokeConsent, whatever source they name),
``erase`` (EraseContact: erasing a contact's personal data; no other permission includes it,
so give it only to the token of whoever handles erasure requests).
"""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
import hmac
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from dnd_server.domain.errors import DndError
from dnd_server.domain.model import Source


class Permission(enum.StrEnum):
    """What a token allows (listed under ``scopes`` in the tokens file). Not to be confused
    with a block's scope (``domain.model.Scope``: the channels a block covers)."""

    CHECK = "check"
    READ = "read"
    WRITE = "write"
    CONTACT = "contact"
    SUPPORT = "support"
    WATCH = "watch"
    CONSENT = "consent"
    # EraseContact (GDPR Art. 17): no other permission grants it.
    ERASE = "erase"


# The permission a write needs, by the source it acts as.
SOURCE_PERMISSIONS: dict[Source, Permission] = {
    Source.USER: Permission.WRITE,
    Source.WORKFLOW: Permission.WRITE,
    Source.SYSTEM: Permission.WRITE,
    Source.CONTACT: Permission.CONTACT,
    Source.SUPPORT: Permission.SUPPORT,
}


class Unauthenticated(DndError):
    """No token, or a token this service does not know."""


class PermissionDenied(DndError):
    """The caller may not act on this location or lacks the permission."""


class TokensFileError(ValueError):
    """The tokens file cannot be used."""


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    # None: every location.
    locations: frozenset[str] | None
    permissions: frozenset[Permission]

    def require(self, permission: Permission, locations: Iterable[str]) -> None:
        if permission not in self.permissions:
            raise PermissionDenied(
                f"caller {self.name!r} lacks the {permission.value!r} permission "
                f"(its token has no {permission.value!r} scope)"
            )
        if self.locations is None:
            return
        for location in locations:
            if location not in self.locations:
                raise PermissionDenied(f"caller {self.name!r} may not act on this location")

    def reach(self, named: frozenset[str]) -> frozenset[str]:
        """The locations a request naming ``named`` covers: those, or when it names none,
        every location the caller may act on (empty: every location)."""
        if named or self.locations is None:
            return named
        if not self.locations:
            raise PermissionDenied(f"caller {self.name!r} may act on no location")
        return self.locations


ANONYMOUS = Caller("anonymous", None, frozenset(Permission))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


Clock = Callable[[], dt.datetime]


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass(frozen=True, slots=True)
class TokenEntry:
    digest: bytes
    caller: Caller
    # None: never expires.
    expires_at: dt.datetime | None = None


class TokenTable:
    """The tokens of one tokens file. Immutable: a reload builds a new table and swaps it in."""

    def __init__(self, entries: list[TokenEntry], clock: Clock = utc_now) -> None:
        self._entries = entries
        self._clock = clock

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def load(cls, path: Path, clock: Clock = utc_now) -> TokenTable:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise TokensFileError(f"cannot read tokens file {path}: {error}") from None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not tokens:
            raise TokensFileError(f'{path}: expected {{"tokens": [...]}} with at least one token')
        entries: list[TokenEntry] = []
        for i, item in enumerate(tokens):
            where = f"{path}: tokens[{i}]"
            if not isinstance(item, dict):
                raise TokensFileError(f"{where} must be an object")
            digest = str(item.get("sha256", "")).lower()
            if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
                raise TokensFileError(f"{where}.sha256 must be 64 hex digits (the token's hash)")
            locations = item.get("locations", [])
            if locations != "*" and (
                not isinstance(locations, list) or not all(isinstance(x, str) for x in locations)
            ):
                raise TokensFileError(f'{where}.locations must be a list of ids or "*"')
            try:
                permissions = frozenset(Permission(s) for s in item.get("scopes", []))
            except ValueError:
                raise TokensFileError(
                    f"{where}.scopes: each one of {', '.join(p.value for p in Permission)}"
                ) from None
            caller = Caller(
                name=str(item.get("name") or f"token-{i}"),
                locations=None if locations == "*" else frozenset(locations),
                permissions=permissions,
            )
            expires_at = _timestamp(item.get("expires_at"), f"{where}.expires_at")
            hashed = bytes.fromhex(digest)
            for earlier in entries:
                # One token, two entries: which scopes and locations hold would be the file's
                # order, and the names recorded ambiguous.
                if earlier.digest == hashed:
                    raise TokensFileError(
                        f"{where}.sha256: the same token as {earlier.caller.name!r}; "
                        "each token has one entry"
                    )
                if earlier.caller.name == caller.name:
                    raise TokensFileError(
                        f"{where}.name: {caller.name!r} names another entry too; each name "
                        "is one token's (it is recorded as the caller of its changes)"
                    )
            entries.append(TokenEntry(hashed, caller, expires_at))
        return cls(entries, clock)

    def authenticate(self, token: str) -> Caller | None:
        """The caller holding ``token`` (None: an unknown token); every stored hash is
        compared, in constant time. Raises Unauthenticated when the token has expired."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        if found is None:
            return None
        if found.expires_at is not None and self._clock() >= found.expires_at:
            raise Unauthenticated(
                f"token {found.caller.name!r} expired at "
                f"{found.expires_at.isoformat().replace('+00:00', 'Z')}: ask for a new one"
            )
        return found.caller


def file_signature(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when the file is rewritten or replaced (device, inode, size, mtime);
    None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _timestamp(value: object, where: str) -> dt.datetime | None:
    """An RFC 3339 timestamp with a time zone (``2027-01-31T00:00:00Z``), or None if absent."""
    if value is None:
        return None
    parsed = None
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.strip())
        except ValueError:
            parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise TokensFileError(
            f"{where} must be an RFC 3339 timestamp with a time zone, "
            f"e.g. 2027-01-31T00:00:00Z, got {value!r}"
        )
    return parsed.astimezone(dt.UTC)


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None
