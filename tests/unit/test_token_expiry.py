"""Token expiry, on the token table itself with a clock the test moves: a token is refused from
its ``expires_at`` on, saying it expired; an offset names the same instant; ``expires_at`` must
be an RFC 3339 timestamp with a zone. tests/e2e/test_token_reload.py reloads tokens files in
running servers."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from dnd_server.auth import Permission, TokensFileError, TokenTable, Unauthenticated, hash_token

TOKENS = {name: f"secret-{name}-{uuid.uuid4().hex}" for name in ("keeper", "revoked", "later")}


def entry(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "sha256": hash_token(TOKENS[name]),
        "locations": "*",
        "scopes": ["read"],
        **extra,
    }


def tokens_json(*entries: dict[str, Any]) -> str:
    return json.dumps({"tokens": list(entries)})


class Clock:
    def __init__(self, now: dt.datetime) -> None:
        self.now = now

    def __call__(self) -> dt.datetime:
        return self.now


def load(tmp_path: Path, *entries: dict[str, Any], clock: Clock | None = None) -> TokenTable:
    path = tmp_path / "tokens.json"
    path.write_text(tokens_json(*entries), encoding="utf-8")
    return TokenTable.load(path) if clock is None else TokenTable.load(path, clock=clock)


def test_token_expires_when_the_clock_reaches_expires_at(tmp_path: Path) -> None:
    expires = dt.datetime(2027, 1, 31, tzinfo=dt.UTC)
    clock = Clock(expires - dt.timedelta(seconds=1))
    table = load(
        tmp_path, entry("later", expires_at="2027-01-31T00:00:00Z"), entry("keeper"), clock=clock
    )
    caller = table.authenticate(TOKENS["later"])
    assert caller is not None and caller.name == "later" and caller.permissions == {Permission.READ}
    clock.now = expires
    with pytest.raises(Unauthenticated, match=r"'later' expired at 2027-01-31T00:00:00Z"):
        table.authenticate(TOKENS["later"])
    clock.now = expires + dt.timedelta(days=400)
    with pytest.raises(Unauthenticated, match="expired"):
        table.authenticate(TOKENS["later"])
    # Tokens without expires_at never expire; unknown tokens are unknown, not expired.
    keeper = table.authenticate(TOKENS["keeper"])
    assert keeper is not None and keeper.name == "keeper"
    assert table.authenticate(TOKENS["revoked"]) is None


def test_expires_at_with_an_offset_is_the_same_instant(tmp_path: Path) -> None:
    clock = Clock(dt.datetime(2027, 1, 30, 23, 59, 59, tzinfo=dt.UTC))
    table = load(tmp_path, entry("later", expires_at="2027-01-31T01:00:00+01:00"), clock=clock)
    assert table.authenticate(TOKENS["later"]) is not None
    clock.now += dt.timedelta(seconds=1)
    with pytest.raises(Unauthenticated, match="2027-01-31T00:00:00Z"):
        table.authenticate(TOKENS["later"])


@pytest.mark.parametrize(
    "value",
    ["next tuesday", "2027-01-31T00:00:00", "2027-01-31", "", 1798675200, True, ["2027"]],
    ids=["words", "no-zone", "date-only", "empty", "number", "bool", "list"],
)
def test_expires_at_must_be_an_rfc3339_timestamp_with_a_zone(tmp_path: Path, value: Any) -> None:
    with pytest.raises(TokensFileError) as caught:
        load(tmp_path, entry("keeper"), entry("later", expires_at=value))
    message = str(caught.value)
    assert "tokens[1].expires_at" in message
    assert "RFC 3339" in message and "time zone" in message
    assert str(tmp_path) in message


def test_a_token_or_a_name_listed_twice_is_refused(tmp_path: Path) -> None:
    """Two entries of one token would make its scopes and locations the file's order; two
    of one name would record two tokens' changes as one caller."""
    twice = entry("keeper")
    again = {**entry("later"), "sha256": twice["sha256"]}
    with pytest.raises(TokensFileError, match=r"tokens\[1\]\.sha256.*'keeper'"):
        load(tmp_path, twice, again)
    named = {**entry("later"), "name": "keeper"}
    with pytest.raises(TokensFileError, match=r"tokens\[1\]\.name"):
        load(tmp_path, twice, named)
