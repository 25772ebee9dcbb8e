"""Listing and export tokens: what a token carries comes back only for the request it was
made for; an edited, truncated, re-spelled or made-up token, one of another deployment, or
one of another request is refused. Pure: no server."""

from __future__ import annotations

import base64

import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_server import cursor
from dnd_server.domain.errors import InvalidArgument
from dnd_server.rpc import page_tokens


@pytest.fixture(autouse=True)
def key() -> None:
    cursor.install_key(bytes(range(32)))


def bound(**flt: object) -> str:
    return page_tokens.binding("blocks", "loc-1", pb.SuppressionFilter(**flt))  # type: ignore[arg-type]


def test_a_token_opens_for_its_request() -> None:
    token = page_tokens.seal(bound(), ["c1", "OUTBOUND", "SMS", "MANUAL"])
    assert page_tokens.open_token("page_token", bound(), token, 4) == [
        "c1",
        "OUTBOUND",
        "SMS",
        "MANUAL",
    ]


@pytest.mark.parametrize(
    "edit",
    [
        lambda t: t[:-1],
        lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],
        lambda t: "A" + t[1:] if t[0] != "A" else "B" + t[1:],
        lambda t: t + "==",
        lambda t: t.replace("-", "+").replace("_", "/") if ("-" in t or "_" in t) else t + "+",
        lambda t: "",
        lambda t: "not a token",
        lambda t: base64.urlsafe_b64encode(b'[1,"x",["a","b","c","d"]]' + bytes(16)).decode(),
        lambda t: base64.urlsafe_b64encode(b"\x02" + bytes(40_000)).decode().rstrip("="),
    ],
)
def test_an_edited_or_made_up_token_is_refused(edit: object) -> None:
    token = page_tokens.seal(bound(), ["c1", "OUTBOUND", "SMS", "MANUAL"])
    bad = edit(token)  # type: ignore[operator]
    with pytest.raises(InvalidArgument) as refused:
        page_tokens.open_token("page_token", bound(), bad, 4)
    assert [v.field for v in refused.value.violations] == ["page_token"]


def test_a_token_of_another_request_or_deployment_is_refused() -> None:
    token = page_tokens.seal(bound(), ["c1", "OUTBOUND", "SMS", "MANUAL"])
    for other in (
        bound(channel=pb.CHANNEL_SMS),
        page_tokens.binding("suppressions", "loc-1", pb.SuppressionFilter()),
        page_tokens.binding("blocks", "loc-2", pb.SuppressionFilter()),
    ):
        with pytest.raises(InvalidArgument):
            page_tokens.open_token("page_token", other, token, 4)
    with pytest.raises(InvalidArgument):
        page_tokens.open_token("page_token", bound(), token, 3)
    cursor.install_key(bytes(32))
    with pytest.raises(InvalidArgument):
        page_tokens.open_token("page_token", bound(), token, 4)


def _raw(token: str) -> bytes:
    return base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))


def test_a_token_reveals_neither_contact_nor_address() -> None:
    """Tokens end up in logs: the contact id and address inside are encrypted, and two
    tokens of one key are alike (the same request gets the same token)."""
    key = ["lee@example.com", "OUTBOUND", "SMS", "+14155550123"]
    token = page_tokens.seal(bound(), key)
    raw = _raw(token)
    for secret in (b"lee@example.com", b"example", b"14155550123", b"OUTBOUND", bound().encode()):
        assert secret not in raw
    assert page_tokens.seal(bound(), key) == token
    assert page_tokens.open_token("page_token", bound(), token, 4) == key
    # Under another deployment's key it opens to nothing.
    cursor.install_key(bytes(32))
    with pytest.raises(InvalidArgument):
        page_tokens.open_token("page_token", bound(), token, 4)


def test_a_token_of_the_earlier_version_still_opens() -> None:
    """A listing under way across an upgrade goes on: the earlier readable, tagged tokens
    are still taken (and still refused when edited)."""
    payload = b'[1,"' + bound().encode() + b'",["c1","OUTBOUND","SMS","MANUAL"]]'
    legacy = base64.urlsafe_b64encode(payload + cursor.token_mac(payload)).decode().rstrip("=")
    assert page_tokens.open_token("page_token", bound(), legacy, 4) == [
        "c1",
        "OUTBOUND",
        "SMS",
        "MANUAL",
    ]
    edited = base64.urlsafe_b64encode(
        payload.replace(b"c1", b"c2") + cursor.token_mac(payload)
    ).decode()
    with pytest.raises(InvalidArgument):
        page_tokens.open_token("page_token", bound(), edited.rstrip("="), 4)
