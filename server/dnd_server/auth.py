"""Authorisation by bearer tokens: who the caller is, which locations it may act on, and
which scopes it holds. Tokens are stored as SHA-256 hashes and compared in constant time.

Tokens file (``DND_TOKENS_FILE``), JSON::

    {"tokens": [
      {"name": "campaign-sender", "sha256": "<hex of sha256(token)>",
       "locations": ["loc-1", "loc-2"], "scopes": ["check"]},
      {"name": "compliance-desk", "sha256": "...", "locations": "*",
       "scopes": ["read", "write", "support", "watch"]}
    ]}

Scopes: ``check`` (CheckSend, BatchCheckSend), ``read`` (GetStatus, ListHistory,
GetKeywordSettings), ``write`` (SetDnd and event RPCs as USER / WORKFLOW / SYSTEM,
UpdateKeywordSettings), ``contact`` (act as source CONTACT: inbound keywords, unsubscribe
events), ``support`` (act as SUPPORT: the only way to lift a permanent opt-out or a spam
lock), ``watch`` (WatchChanges, limited to the token's locations).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from dnd_server.domain.errors import DndError
from dnd_server.domain.model import Source


class Scope(enum.StrEnum):
    CHECK = "check"
    READ = "read"
    WRITE = "write"
    CONTACT = "contact"
    SUPPORT = "support"
    WATCH = "watch"


# The scope a write needs, by the source it acts as.
SOURCE_SCOPES: dict[Source, Scope] = {
    Source.USER: Scope.WRITE,
    Source.WORKFLOW: Scope.WRITE,
    Source.SYSTEM: Scope.WRITE,
    Source.CONTACT: Scope.CONTACT,
    Source.SUPPORT: Scope.SUPPORT,
}


class Unauthenticated(DndError):
    """No token, or a token this service does not know."""


class PermissionDenied(DndError):
    """The caller may not act on this location or lacks the scope."""


class TokensFileError(ValueError):
    """The tokens file cannot be used."""


@dataclass(frozen=True, slots=True)
class Caller:
    name: str
    # None: every location.
    locations: frozenset[str] | None
    scopes: frozenset[Scope]

    def require(self, scope: Scope, locations: Iterable[str]) -> None:
        if scope not in self.scopes:
            raise PermissionDenied(f"caller {self.name!r} lacks the {scope.value!r} scope")
        if self.locations is None:
            return
        for location in locations:
            if location not in self.locations:
                raise PermissionDenied(f"caller {self.name!r} may not act on this location")


ANONYMOUS = Caller("anonymous", None, frozenset(Scope))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenTable:
    def __init__(self, entries: list[tuple[bytes, Caller]]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    @classmethod
    def load(cls, path: Path) -> TokenTable:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise TokensFileError(f"cannot read tokens file {path}: {error}") from None
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if not isinstance(tokens, list) or not tokens:
            raise TokensFileError(f'{path}: expected {{"tokens": [...]}} with at least one token')
        entries = []
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
                scopes = frozenset(Scope(s) for s in item.get("scopes", []))
            except ValueError:
                raise TokensFileError(
                    f"{where}.scopes: each one of {', '.join(s.value for s in Scope)}"
                ) from None
            caller = Caller(
                name=str(item.get("name") or f"token-{i}"),
                locations=None if locations == "*" else frozenset(locations),
                scopes=scopes,
            )
            entries.append((bytes.fromhex(digest), caller))
        return cls(entries)

    def authenticate(self, token: str) -> Caller | None:
        """The caller holding ``token``; every stored hash is compared, in constant time."""
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for stored, caller in self._entries:
            if hmac.compare_digest(stored, digest):
                found = caller
        return found


def bearer(metadata: Iterable[tuple[str, str | bytes]] | None) -> str | None:
    for key, value in metadata or ():
        if key.lower() == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None
