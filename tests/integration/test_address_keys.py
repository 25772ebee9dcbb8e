"""One mailbox, one key: an email opt-out recorded under one spelling holds under every other,
over real gRPC and real PostgreSQL; and migration 14 moves the addresses stored under an older
spelling to their keys, merging those that meet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_server.domain.erasure import address_digest
from dnd_server.domain.model import Channel
from dnd_server.storage.migrations import load_migrations, migrate
from dnd_server.storage.rekey import rekey_addresses

from tests import factories
from tests.support import REPO, Database, ServerProcess, bad_fields, new_id, run_async, stub_for

T = 10.0
EMAIL = pb.CHANNEL_EMAIL
PURPOSE = pb.PURPOSE_MARKETING

# Spellings of one mailbox, the key each has, and what makes them differ.
KEY = "jos\u00e9@b\u00fccher.de"
SPELLINGS = [
    pytest.param("Jos\u00e9@B\u00fccher.DE", id="case"),
    pytest.param("jose\u0301@bu\u0308cher.de", id="NFD"),
    pytest.param("jos\u00e9@xn--bcher-kva.de", id="A-label"),
    pytest.param("jos\u00e9@XN--BCHER-KVA.DE", id="A-label upper-case"),
    pytest.param("jos\u00e9@b\u00fccher.de.", id="root dot"),
    pytest.param("<jos\u00e9@b\u00fccher.de>", id="angle brackets"),
    pytest.param("mailto:jos\u00e9@b\u00fccher.de?subject=unsubscribe", id="mailto link"),
    pytest.param("<MAILTO:jos\u00e9@b\u00fccher.de>", id="List-Unsubscribe"),
    pytest.param("jo\u200bs\u00e9@b\u00fccher.de", id="zero-width space"),
    pytest.param("\ufeffjos\u00e9@b\u00fccher.de\u200e", id="BOM and LRM"),
    pytest.param("jos\u00e9@b\u00fccher\u3002de", id="ideographic dot"),
    pytest.param("jos\u00e9@\uff42\u00fc\uff43\uff48\uff45\uff52.de", id="fullwidth domain"),
]


def unsubscribe(stub: Any, loc: str, contact: str, to: str) -> Any:
    request = factories.email_event(loc, contact, pb.EMAIL_EVENT_UNSUBSCRIBE_LINK, to_address=to)
    return stub.ReportEmailEvent(request, timeout=T)


def check(stub: Any, loc: str, contact: str, address: str) -> pb.CheckSendResponse:
    request = factories.check(loc, contact, EMAIL, address=address, purpose=PURPOSE)
    return stub.CheckSend(request, timeout=T)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_an_opt_out_under_one_spelling_denies_every_other(
    stub: Any, db: Database, loc: str, spelling: str
) -> None:
    """The opt-out is stored under the key; a check of any spelling, by any contact, finds it."""
    contact, other = new_id("contact"), new_id("contact")
    assert check(stub, loc, other, KEY).allowed  # nothing suppresses it yet
    assert unsubscribe(stub, loc, contact, spelling).changed
    [row] = db.fetch("SELECT address FROM dnd_address_suppressions WHERE location_id = $1", loc)
    assert row["address"] == KEY
    for variant in [KEY, *(p.values[0] for p in SPELLINGS)]:
        answer = check(stub, loc, other, str(variant))
        assert not answer.allowed, variant
        assert answer.denial == pb.DENIAL_ADDRESS_SUPPRESSED, variant


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_an_opt_out_under_the_key_denies_a_check_of_any_spelling(
    stub: Any, loc: str, spelling: str
) -> None:
    contact, other = new_id("contact"), new_id("contact")
    assert unsubscribe(stub, loc, contact, KEY).changed
    answer = check(stub, loc, other, spelling)
    assert not answer.allowed and answer.denial == pb.DENIAL_ADDRESS_SUPPRESSED
    # A second unsubscribe under another spelling is the same suppression: nothing changes.
    assert not unsubscribe(stub, loc, contact, spelling).changed


def test_listings_and_history_take_any_spelling(stub: Any, loc: str) -> None:
    contact = new_id("contact")
    unsubscribe(stub, loc, contact, "jose\u0301@XN--BCHER-KVA.DE.")
    listed = stub.ListSuppressions(
        pb.ListSuppressionsRequest(
            location_id=loc,
            filter=pb.SuppressionFilter(channel=EMAIL, address="<mailto:jos\u00e9@b\u00fccher.de>"),
        ),
        timeout=T,
    ).suppressions
    assert [s.address for s in listed] == [KEY]
    entries = stub.ListHistory(
        factories.history(loc, address="jo\u200bs\u00e9@b\u00fccher.de", channel=EMAIL),
        timeout=T,
    ).entries
    assert [e.address for e in entries] == [KEY]


def test_a_consent_for_one_spelling_is_the_consent_of_every_other(stub: Any, loc: str) -> None:
    """The consent policy asks for email marketing consent: one recorded for the NFD, A-label
    spelling allows a send to the key, and a revoke under a third spelling ends it."""
    contact = new_id("contact")
    policy = pb.ConsentPolicy(
        channels=[pb.ChannelConsentPolicy(channel=EMAIL, require_marketing=True)]
    )
    stub.UpdateConsentPolicy(
        pb.UpdateConsentPolicyRequest(location_id=loc, policy=policy), timeout=T
    )
    assert not check(stub, loc, contact, KEY).allowed
    stub.RecordConsent(
        pb.RecordConsentRequest(
            location_id=loc,
            contact_id=contact,
            channel=EMAIL,
            purpose=PURPOSE,
            address="jose\u0301@xn--bcher-kva.de",
            method=pb.CONSENT_METHOD_WEB_FORM,
            source=pb.SOURCE_USER,
            actor_id="user-7",
            evidence=pb.ConsentEvidence(
                form_url="https://example.com/newsletter",
                disclosure_text="Send me the monthly newsletter.",
            ),
        ),
        timeout=T,
    )
    assert check(stub, loc, contact, KEY).allowed
    assert check(stub, loc, contact, "JOS\u00c9@B\u00dcCHER.DE").allowed
    stub.RevokeConsent(
        pb.RevokeConsentRequest(
            location_id=loc,
            contact_id=contact,
            channel=EMAIL,
            purpose=PURPOSE,
            address="<jos\u00e9@b\u00fccher.de>",
            source=pb.SOURCE_CONTACT,
        ),
        timeout=T,
    )
    assert not check(stub, loc, contact, KEY).allowed


@pytest.mark.parametrize(
    "address",
    [
        "pat@example..com",  # an empty label
        "pat@.example.com",
        "pat@xn--.com",  # an A-label that decodes to nothing
        "pat@xn--abc-.com",  # one that decodes to ASCII: no IDNA label
        "mailto:",
        "Pat <pat@example.com>",  # a display name: the caller must take the address out
        "\u200b@example.com",  # nothing left of the local part
    ],
)
def test_what_is_no_email_address_is_refused_and_changes_nothing(
    stub: Any, db: Database, loc: str, address: str
) -> None:
    contact = new_id("contact")
    for call in (
        lambda: stub.SetDnd(factories.enable(loc, contact, EMAIL, address=address), timeout=T),
        lambda: check(stub, loc, contact, address),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            call()
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT, caught.value.details()
        assert bad_fields(caught.value), caught.value.details()
    assert db.changes(loc) == 0 and db.blocks(loc) == 0
    # A provider's unsubscribe to it still blocks the contact (tests/integration/
    # test_unreadable_addresses.py), suppressing no address.
    assert unsubscribe(stub, loc, contact, address).changed
    assert (
        db.fetchval("SELECT count(*) FROM dnd_address_suppressions WHERE location_id = $1", loc)
        == 0
    )


def test_invisible_characters_leave_other_channels_addresses(
    stub: Any, db: Database, loc: str
) -> None:
    """A Facebook id with a zero-width space is the id without it; one that is nothing but
    invisible characters is refused."""
    contact = new_id("contact")
    stub.SetDnd(
        factories.enable(loc, contact, pb.CHANNEL_FACEBOOK, address="\u200b2718281828\u2060"),
        timeout=T,
    )
    [block] = db.fetch("SELECT address FROM dnd_blocks WHERE location_id = $1", loc)
    assert block["address"] == "2718281828"
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetDnd(
            factories.enable(loc, contact, pb.CHANNEL_GMB, address="\u200b\u200d"), timeout=T
        )
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert db.blocks(loc) == 1


# --- migration 14 ---------------------------------------------------------------------------------


NOW = datetime(2026, 11, 1, tzinfo=UTC)
DAY = timedelta(days=1)
UNSUB, SPAM = "EMAIL_UNSUBSCRIBE_LINK", "EMAIL_SPAM_COMPLAINT"


REKEY = next(m for m in load_migrations() if m.name == "address_keys")


async def before_rekey(conn: asyncpg.Connection) -> None:
    """Bring an empty database to the migration before the address keys, as recorded."""
    await conn.execute(
        "CREATE TABLE dnd_schema_migrations (version integer PRIMARY KEY, name text"
        " NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for migration in load_migrations():
        if migration.version < REKEY.version:
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO dnd_schema_migrations VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )


def test_migration_moves_stored_spellings_to_their_keys(empty_database: Any) -> None:
    url = empty_database()
    suppressions = [
        # location, channel, address, reason, contact, since
        ("l", "EMAIL", "jose\u0301@bu\u0308cher.de", UNSUB, "a", NOW),
        ("l", "EMAIL", "mailto:pat@example.com?subject=stop", UNSUB, "a", NOW),
        # Two spellings of one address by two contacts: one shared suppression, the earlier.
        ("l", "EMAIL", "kim@example.com", SPAM, "b", NOW),
        ("l", "EMAIL", "kim@example.com.", SPAM, "c", NOW - 3 * DAY),
        # Two spellings by one contact: its own still.
        ("l", "EMAIL", "lee@xn--bcher-kva.de", UNSUB, "d", NOW),
        ("l", "EMAIL", "lee@b\u00fccher.de", UNSUB, "d", NOW - DAY),
        # Left alone: already keys, a phone, an address the rules refuse, another location's.
        ("l", "EMAIL", "sam@example.com", UNSUB, "e", NOW),
        ("l", "SMS", "+14155550100", "SMS_OPT_OUT_KEYWORD", "e", NOW),
        ("l", "EMAIL", "bad@example..com", UNSUB, "e", NOW),
        ("m", "EMAIL", "kim@example.com", SPAM, "b", NOW),
        ("l", "FACEBOOK", "\u200b2718281828", "USER_REQUEST", "f", NOW),
    ]
    consents = [
        # contact, address, status, updated_at
        ("g", "ann@xn--bcher-kva.de", "REVOKED", NOW),
        ("g", "ann@b\u00fccher.de", "ACTIVE", NOW - DAY),  # the earlier word
        ("h", "<bob@example.com>", "ACTIVE", NOW),
        ("h", "bob@example.com", "REVOKED", NOW - DAY),  # the earlier word
        # As late as each other: the revoke stands, whichever spelling it was under.
        ("j", "cy@xn--bcher-kva.de", "ACTIVE", NOW),
        ("j", "cy@b\u00fccher.de", "REVOKED", NOW),
        ("k", "dee@xn--bcher-kva.de", "REVOKED", NOW),
        ("k", "dee@b\u00fccher.de", "ACTIVE", NOW),
        ("i", "", "ACTIVE", NOW),
    ]

    async def go() -> dict[str, list[tuple[Any, ...]]]:
        conn = await asyncpg.connect(url)
        try:
            await before_rekey(conn)
            await conn.executemany(
                "INSERT INTO dnd_address_suppressions (location_id, channel, address, reason,"
                " source, contact_id, since) VALUES ($1, $2, $3, $4, 'CONTACT', $5, $6)",
                suppressions,
            )
            await conn.execute(
                "INSERT INTO dnd_contacts (location_id, contact_id, version)"
                " SELECT 'l', c, 1 FROM unnest($1::text[]) AS c",
                ["g", "h", "i", "j", "k"],
            )
            for contact, address, status, updated in consents:
                await conn.execute(
                    "INSERT INTO dnd_consents (location_id, contact_id, channel, purpose,"
                    " address, method, kind, status, captured_at, source, updated_at)"
                    " VALUES ('l', $1, 'EMAIL', 'MARKETING', $2, 'WEB_FORM', 'EXPRESS', $3,"
                    " $4, 'USER', $4)",
                    contact,
                    address,
                    status,
                    updated,
                )
            await conn.execute(
                "INSERT INTO dnd_blocks (location_id, contact_id, direction, scope, reason,"
                " source, since, address) VALUES ('l', 'g', 'OUTBOUND', 'EMAIL',"
                " 'EMAIL_UNSUBSCRIBE_LINK', 'CONTACT', $1, 'Ann@XN--BCHER-KVA.DE')",
                NOW,
            )
            await conn.execute("UPDATE dnd_contacts SET state = dnd_contact_state('l', contact_id)")
            await conn.execute(
                "INSERT INTO dnd_changes (lane, seq, location_id, contact_id, direction, scope,"
                " enabled, reason, source, version, outbound, inbound, blocked_channels,"
                " created_at, address) VALUES (0, 1, 'l', 'a', 'OUTBOUND', 'EMAIL', true,"
                " 'EMAIL_UNSUBSCRIBE_LINK', 'CONTACT', 1, 'OFF', 'OFF', '{}', now(), $1)",
                "jose\u0301@bu\u0308cher.de",
            )
            applied = await migrate(conn)
            assert REKEY.version in applied
            # The migration copied the suppressions, keeping the old spellings' rows for the
            # servers of the version before; 'dnd-server rekey' drops them after the update.
            kept = await conn.fetch(
                "SELECT address FROM dnd_address_suppressions s WHERE EXISTS (SELECT 1 FROM"
                " dnd_rekeyed_suppressions r WHERE (r.location_id, r.channel, r.address,"
                " r.reason) = (s.location_id, s.channel, s.address, s.reason)) ORDER BY 1"
            )
            assert [r["address"] for r in kept] == sorted(
                [
                    "jose\u0301@bu\u0308cher.de",
                    "kim@example.com.",
                    "lee@xn--bcher-kva.de",
                    "mailto:pat@example.com?subject=stop",
                    "\u200b2718281828",
                ]
            )
            done = await rekey_addresses(conn)
            assert done.dropped == 5 and not done.moved.get("dnd_address_suppressions")
            result: dict[str, list[tuple[Any, ...]]] = {}
            for name, query in {
                "suppressions": "SELECT location_id, channel, address, reason, contact_id,"
                " since FROM dnd_address_suppressions ORDER BY 1, 2, 3, 4",
                "consents": "SELECT contact_id, address, status FROM dnd_consents ORDER BY 1, 2",
                "blocks": "SELECT contact_id, address FROM dnd_blocks",
                "changes": "SELECT address FROM dnd_changes",
                "state": "SELECT contact_id, state FROM dnd_contacts ORDER BY 1",
            }.items():
                result[name] = [tuple(r) for r in await conn.fetch(query)]
            return result
        finally:
            await conn.close()

    found = run_async(go())
    assert found["suppressions"] == [
        ("l", "EMAIL", "bad@example..com", UNSUB, "e", NOW),
        ("l", "EMAIL", "jos\u00e9@b\u00fccher.de", UNSUB, "a", NOW),
        ("l", "EMAIL", "kim@example.com", SPAM, "", NOW - 3 * DAY),
        ("l", "EMAIL", "lee@b\u00fccher.de", UNSUB, "d", NOW - DAY),
        ("l", "EMAIL", "pat@example.com", UNSUB, "a", NOW),
        ("l", "EMAIL", "sam@example.com", UNSUB, "e", NOW),
        ("l", "FACEBOOK", "2718281828", "USER_REQUEST", "f", NOW),
        ("l", "SMS", "+14155550100", "SMS_OPT_OUT_KEYWORD", "e", NOW),
        ("m", "EMAIL", "kim@example.com", SPAM, "b", NOW),
    ]
    assert found["consents"] == [
        ("g", "ann@b\u00fccher.de", "REVOKED"),
        ("h", "bob@example.com", "ACTIVE"),
        ("i", "", "ACTIVE"),
        ("j", "cy@b\u00fccher.de", "REVOKED"),
        ("k", "dee@b\u00fccher.de", "REVOKED"),
    ]
    assert found["blocks"] == [("g", "ann@b\u00fccher.de")]
    assert found["changes"] == [("jos\u00e9@b\u00fccher.de",)]
    # The contacts' state rows were built again from the moved rows.
    states = {contact: json.loads(state) for contact, state in found["state"]}
    assert [k["address"] for k in states["g"]["consents"]] == ["ann@b\u00fccher.de"]
    assert [b["address"] for b in states["g"]["blocks"]] == ["ann@b\u00fccher.de"]
    assert [k["address"] for k in states["h"]["consents"]] == ["bob@example.com"]


def test_an_address_erased_under_an_older_spelling_stays_suppressed(
    empty_database: Any,
) -> None:
    """Erased suppressions are kept as keyed hashes of the address as it was stored: migration
    14 cannot move them, so a check also looks for the hashes of the key's former spellings
    (its NFD letters, its A-label domain, the root's dot)."""
    url = empty_database()
    erasure_key = bytes(range(32))
    erased = {
        "jose\u0301@example.com": "jos\u00e9@example.com",
        "kim@xn--bcher-kva.de": "kim@b\u00fccher.de",
        "lee@example.com.": "lee@example.com",
        "pat@example.com": "pat@example.com",
    }

    async def setup() -> None:
        conn = await asyncpg.connect(url)
        try:
            await before_rekey(conn)
            await conn.execute("INSERT INTO dnd_erasure_key (key) VALUES ($1)", erasure_key)
            await conn.executemany(
                "INSERT INTO dnd_erased_suppressions (location_id, channel, address_hash,"
                " reason, source, since, erased_at) VALUES ('l', 'EMAIL', $1,"
                " 'EMAIL_UNSUBSCRIBE_LINK', 'CONTACT', $2, $2)",
                [
                    (address_digest(erasure_key, "l", Channel.EMAIL, stored), NOW)
                    for stored in erased
                ],
            )
        finally:
            await conn.close()

    run_async(setup())
    server = ServerProcess(url).start()  # migrates to 14 and on
    try:
        with grpc.insecure_channel(server.addr) as channel:
            stub = stub_for(channel)
            for stored, key in erased.items():
                for spelling in {stored, key}:
                    answer = check(stub, "l", new_id("contact"), spelling)
                    assert not answer.allowed, (stored, spelling)
                    assert answer.denial == pb.DENIAL_ADDRESS_SUPPRESSED
                    [by] = answer.denied_by_address
                    assert by.erased and by.reason == pb.REASON_EMAIL_UNSUBSCRIBE_LINK
            assert check(stub, "l", new_id("contact"), "sam@example.com").allowed
    finally:
        server.stop()


def test_rekey_command_moves_what_servers_of_the_version_before_wrote(
    empty_database: Any,
) -> None:
    """During a rolling update servers of the version before write old spellings after
    migration 14 ran: ``dnd-server rekey`` moves them, and refuses a database not yet there."""
    url = empty_database()
    refused = dnd_server_command(url, "rekey")
    assert refused.returncode == 2 and "migration 14" in refused.stderr, refused.stderr
    assert dnd_server_command(url, "migrate").returncode == 0
    db = Database(url)
    db.execute(
        "INSERT INTO dnd_address_suppressions (location_id, channel, address, reason, source,"
        " contact_id, since) VALUES ('l', 'EMAIL', $1, 'EMAIL_UNSUBSCRIBE_LINK', 'CONTACT',"
        " 'a', now())",
        "<mailto:pat@example.com>",
    )
    done = dnd_server_command(url, "rekey")
    assert done.returncode == 0, done.stderr
    assert "moved 1," in done.stdout and "restart the servers" in done.stdout
    [row] = db.fetch("SELECT address FROM dnd_address_suppressions")
    assert row["address"] == "pat@example.com"
    again = dnd_server_command(url, "rekey")
    assert again.returncode == 0 and "moved 0," in again.stdout
    assert "restart" not in again.stdout


def dnd_server_command(url: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dnd_server", command],
        env={**os.environ, "DND_DATABASE_URL": url},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
