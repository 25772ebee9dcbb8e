"""The clearing rules over real gRPC, against a real server on real PostgreSQL.

Every row of the spec's clearing table is tried both ways: a permitted clear removes the
block, logs the change and lets the send through; a refused clear fails with
FAILED_PRECONDITION, explains itself in the error details and changes nothing at all.
"""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests import factories
from tests.support import (
    ALL_SCOPE,
    DISABLE,
    ENABLE,
    IN,
    OUT,
    Database,
    bad_fields,
    channel_scope,
    error_details,
)

R = pb.Reason
USER, WORKFLOW, CONTACT, SYSTEM, SUPPORT = (
    pb.SOURCE_USER,
    pb.SOURCE_WORKFLOW,
    pb.SOURCE_CONTACT,
    pb.SOURCE_SYSTEM,
    pb.SOURCE_SUPPORT,
)
SMS, EMAIL, CALL, WHATSAPP = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, pb.CHANNEL_CALL, pb.CHANNEL_WHATSAPP
EVERY_CHANNEL = [
    pb.CHANNEL_CALL,
    pb.CHANNEL_EMAIL,
    pb.CHANNEL_SMS,
    pb.CHANNEL_WHATSAPP,
    pb.CHANNEL_FACEBOOK,
    pb.CHANNEL_GMB,
    pb.CHANNEL_RCS,
]
PROOF = "signed opt-in form, 2024-03-01"
BLANK = "  \n\t "
ALLOWED, REFUSED = True, False

# Sources (by name) that may clear each reason, as the spec's table says; used to check that
# the refusal's description says what clears the block.
CLEARERS: dict[int, set[str]] = {
    R.REASON_MANUAL: {"USER", "WORKFLOW", "CONTACT", "SUPPORT"},
    R.REASON_SMS_CARRIER_TEMPORARY: {"USER", "WORKFLOW", "CONTACT", "SUPPORT"},
    R.REASON_SMS_OPT_OUT_KEYWORD: {"CONTACT", "SUPPORT"},
    R.REASON_SMS_CARRIER_PERMANENT: {"CONTACT", "SUPPORT"},
    R.REASON_EMAIL_SPAM_COMPLAINT: {"SUPPORT"},
    R.REASON_EMAIL_HARD_BOUNCE: {"USER", "SUPPORT"},
    R.REASON_EMAIL_GENERIC_FAILURE: {"USER", "SUPPORT"},
    R.REASON_EMAIL_SUPPRESS_BOUNCE: {"USER", "SUPPORT"},
    R.REASON_EMAIL_SUPPRESS_UNSUBSCRIBE: {"USER", "SUPPORT"},
    R.REASON_EMAIL_SUPPRESS_COMPLAINT: {"USER", "SUPPORT"},
    R.REASON_EMAIL_UNSUBSCRIBE_LINK: {"USER", "CONTACT", "SUPPORT"},
    R.REASON_MARKETING_OPT_OUT: {"USER", "WORKFLOW", "CONTACT", "SUPPORT"},
    R.REASON_WHATSAPP_MARKETING_OPT_OUT: {"USER", "CONTACT", "SUPPORT"},
    R.REASON_EMAIL_MARKETING_UNSUBSCRIBE: {"USER", "CONTACT", "SUPPORT"},
    R.REASON_KEYWORD_OPT_OUT: {"CONTACT", "SUPPORT"},
}

# (reason, channel, source, evidence, suppression_removal_confirmed, expected)
Row = tuple[int, int, int, str, bool, bool]
ROWS: list[Row] = []

# MANUAL and SMS_CARRIER_TEMPORARY: USER, WORKFLOW, CONTACT, SUPPORT; never SYSTEM.
for _reason, _channel in ((R.REASON_MANUAL, WHATSAPP), (R.REASON_SMS_CARRIER_TEMPORARY, SMS)):
    ROWS += [
        (_reason, _channel, USER, "", False, ALLOWED),
        (_reason, _channel, WORKFLOW, "", False, ALLOWED),
        (_reason, _channel, CONTACT, "", False, ALLOWED),
        (_reason, _channel, SUPPORT, "", False, ALLOWED),
        (_reason, _channel, SYSTEM, "", False, REFUSED),
        (_reason, _channel, SYSTEM, PROOF, True, REFUSED),
    ]

# SMS_OPT_OUT_KEYWORD, SMS_CARRIER_PERMANENT: CONTACT, or SUPPORT with non-empty evidence.
for _reason in (R.REASON_SMS_OPT_OUT_KEYWORD, R.REASON_SMS_CARRIER_PERMANENT):
    ROWS += [
        (_reason, SMS, CONTACT, "", False, ALLOWED),
        (_reason, SMS, SUPPORT, PROOF, False, ALLOWED),
        (_reason, SMS, SUPPORT, "", False, REFUSED),
        (_reason, SMS, SUPPORT, BLANK, False, REFUSED),
        (_reason, SMS, SUPPORT, "", True, REFUSED),
        (_reason, SMS, USER, PROOF, True, REFUSED),
        (_reason, SMS, WORKFLOW, PROOF, True, REFUSED),
        (_reason, SMS, SYSTEM, PROOF, True, REFUSED),
    ]

# KEYWORD_OPT_OUT (STOP on WhatsApp or RCS): CONTACT, or SUPPORT with non-empty evidence.
for _channel in (WHATSAPP, pb.CHANNEL_RCS):
    ROWS += [
        (R.REASON_KEYWORD_OPT_OUT, _channel, CONTACT, "", False, ALLOWED),
        (R.REASON_KEYWORD_OPT_OUT, _channel, SUPPORT, PROOF, False, ALLOWED),
        (R.REASON_KEYWORD_OPT_OUT, _channel, SUPPORT, BLANK, True, REFUSED),
        (R.REASON_KEYWORD_OPT_OUT, _channel, USER, PROOF, True, REFUSED),
        (R.REASON_KEYWORD_OPT_OUT, _channel, WORKFLOW, PROOF, True, REFUSED),
        (R.REASON_KEYWORD_OPT_OUT, _channel, SYSTEM, PROOF, True, REFUSED),
    ]

# EMAIL_SPAM_COMPLAINT: SUPPORT with non-empty evidence only.
ROWS += [
    (R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL, SUPPORT, PROOF, False, ALLOWED),
    (R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL, SUPPORT, "", False, REFUSED),
    (R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL, SUPPORT, BLANK, True, REFUSED),
    (R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL, USER, PROOF, True, REFUSED),
    (R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL, WORKFLOW, PROOF, True, REFUSED),
    (R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL, CONTACT, PROOF, True, REFUSED),
    (R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL, SYSTEM, PROOF, True, REFUSED),
]

# EMAIL_HARD_BOUNCE, EMAIL_GENERIC_FAILURE, EMAIL_SUPPRESS_*: USER or SUPPORT, only with
# suppression_removal_confirmed; never WORKFLOW.
for _reason in (
    R.REASON_EMAIL_HARD_BOUNCE,
    R.REASON_EMAIL_GENERIC_FAILURE,
    R.REASON_EMAIL_SUPPRESS_BOUNCE,
    R.REASON_EMAIL_SUPPRESS_UNSUBSCRIBE,
    R.REASON_EMAIL_SUPPRESS_COMPLAINT,
):
    ROWS += [
        (_reason, EMAIL, USER, "", True, ALLOWED),
        (_reason, EMAIL, SUPPORT, "", True, ALLOWED),
        (_reason, EMAIL, USER, PROOF, False, REFUSED),
        (_reason, EMAIL, SUPPORT, PROOF, False, REFUSED),
        (_reason, EMAIL, WORKFLOW, PROOF, True, REFUSED),
        (_reason, EMAIL, CONTACT, PROOF, True, REFUSED),
        (_reason, EMAIL, SYSTEM, PROOF, True, REFUSED),
    ]

# EMAIL_UNSUBSCRIBE_LINK: USER, CONTACT, SUPPORT; never WORKFLOW.
ROWS += [
    (R.REASON_EMAIL_UNSUBSCRIBE_LINK, EMAIL, USER, "", False, ALLOWED),
    (R.REASON_EMAIL_UNSUBSCRIBE_LINK, EMAIL, CONTACT, "", False, ALLOWED),
    (R.REASON_EMAIL_UNSUBSCRIBE_LINK, EMAIL, SUPPORT, "", False, ALLOWED),
    (R.REASON_EMAIL_UNSUBSCRIBE_LINK, EMAIL, WORKFLOW, "", False, REFUSED),
    (R.REASON_EMAIL_UNSUBSCRIBE_LINK, EMAIL, WORKFLOW, PROOF, True, REFUSED),
    (R.REASON_EMAIL_UNSUBSCRIBE_LINK, EMAIL, SYSTEM, PROOF, True, REFUSED),
]

# MARKETING_OPT_OUT (marketing only, any channel): USER, WORKFLOW, CONTACT, SUPPORT; never SYSTEM.
ROWS += [
    (R.REASON_MARKETING_OPT_OUT, CALL, USER, "", False, ALLOWED),
    (R.REASON_MARKETING_OPT_OUT, CALL, WORKFLOW, "", False, ALLOWED),
    (R.REASON_MARKETING_OPT_OUT, CALL, CONTACT, "", False, ALLOWED),
    (R.REASON_MARKETING_OPT_OUT, CALL, SUPPORT, "", False, ALLOWED),
    (R.REASON_MARKETING_OPT_OUT, CALL, SYSTEM, PROOF, True, REFUSED),
]

# WHATSAPP_MARKETING_OPT_OUT and EMAIL_MARKETING_UNSUBSCRIBE: the contact's "resume", USER,
# SUPPORT; never WORKFLOW (nor SYSTEM).
for _reason, _channel in (
    (R.REASON_WHATSAPP_MARKETING_OPT_OUT, WHATSAPP),
    (R.REASON_EMAIL_MARKETING_UNSUBSCRIBE, EMAIL),
):
    ROWS += [
        (_reason, _channel, USER, "", False, ALLOWED),
        (_reason, _channel, CONTACT, "", False, ALLOWED),
        (_reason, _channel, SUPPORT, "", False, ALLOWED),
        (_reason, _channel, WORKFLOW, "", False, REFUSED),
        (_reason, _channel, WORKFLOW, PROOF, True, REFUSED),
        (_reason, _channel, SYSTEM, PROOF, True, REFUSED),
    ]


def _row_id(row: Row) -> str:
    reason, channel, source, evidence, confirmed, expected = row
    evidence_name = "proof" if evidence.strip() else ("blank" if evidence else "noevidence")
    return "-".join(
        [
            R.Name(reason).removeprefix("REASON_"),
            pb.Channel.Name(channel).removeprefix("CHANNEL_"),
            pb.Source.Name(source).removeprefix("SOURCE_"),
            evidence_name,
            "confirmed" if confirmed else "unconfirmed",
            "allowed" if expected else "refused",
        ]
    )


def _name(reason: int) -> str:
    return R.Name(reason).removeprefix("REASON_")


# --- helpers -----------------------------------------------------------------------------------


def set_dnd(
    stub: Any,
    loc: str,
    contact: str,
    action: int,
    *,
    direction: int = OUT,
    scope: pb.Scope | None = None,
    reason: int = R.REASON_UNSPECIFIED,
    source: int = USER,
    evidence: str = "",
    confirmed: bool = False,
    actor_id: str = "",
) -> pb.SetDndResponse:
    request = factories.set_dnd(
        loc,
        contact,
        action,
        direction=direction,
        scope=scope,
        reason=reason,
        source=source,
        evidence=evidence,
        suppression_removal_confirmed=confirmed,
        actor_id=actor_id,
    )
    return stub.SetDnd(request, timeout=10)


def scope_of(channel: int | None) -> pb.Scope:
    return ALL_SCOPE if channel is None else channel_scope(channel)


def enable(
    stub: Any,
    loc: str,
    contact: str,
    reason: int,
    channel: int | None,
    source: int = SYSTEM,
) -> pb.SetDndResponse:
    """Add an outbound block on ``channel`` (None: all channels); asserts it was added."""
    answer = set_dnd(
        stub, loc, contact, ENABLE, scope=scope_of(channel), reason=reason, source=source
    )
    assert answer.changed
    return answer


def clear(stub: Any, loc: str, contact: str, channel: int | None, **kw: Any) -> pb.SetDndResponse:
    return set_dnd(stub, loc, contact, DISABLE, scope=scope_of(channel), **kw)


def refused(stub: Any, loc: str, contact: str, channel: int | None, **kw: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        clear(stub, loc, contact, channel, **kw)
    error = caught.value
    assert error.code() is grpc.StatusCode.FAILED_PRECONDITION, error.details()
    return error


def status(stub: Any, loc: str, contact: str) -> pb.ContactStatus:
    return stub.GetStatus(factories.get_status(loc, contact)).status


def check(
    stub: Any, loc: str, contact: str, channel: int, direction: int = OUT
) -> pb.CheckSendResponse:
    return stub.CheckSend(factories.check(loc, contact, channel, direction=direction))


def snapshot(stub: Any, db: Database, loc: str, contact: str) -> tuple[int, int, bytes]:
    """Everything a refused call must leave alone: log rows, block rows, the status."""
    return (
        db.changes(loc),
        db.blocks(loc),
        status(stub, loc, contact).SerializeToString(deterministic=True),
    )


def change_rows(db: Database, loc: str) -> list[tuple[Any, ...]]:
    rows = db.fetch(
        "SELECT enabled, direction, scope, reason, source, version FROM dnd_changes"
        " WHERE location_id = $1 ORDER BY seq",
        loc,
    )
    return [tuple(row) for row in rows]


def violations(error: grpc.RpcError) -> dict[tuple[str, str], str]:
    """The PreconditionFailure violations as (type, subject) -> description; checks ErrorInfo."""
    details = error_details(error)
    assert details["ErrorInfo"].reason == "CLEAR_NOT_PERMITTED"
    found = {(v.type, v.subject): v.description for v in details["PreconditionFailure"].violations}
    assert len(found) == len(details["PreconditionFailure"].violations), "duplicate violations"
    return found


def keys(blocks: Any) -> set[tuple[int, str, int]]:
    """(direction, scope, reason) of each block, scope as a channel name or ALL."""
    out = set()
    for block in blocks:
        if block.scope.WhichOneof("kind") == "all_channels":
            scope = "ALL"
        else:
            scope = pb.Channel.Name(block.scope.channel).removeprefix("CHANNEL_")
        out.add((block.direction, scope, block.reason))
    return out


# --- the table, row by row ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "on_channel", "source", "evidence", "confirmed", "expected"),
    [pytest.param(*row, id=_row_id(row)) for row in ROWS],
)
def test_clear_policy_table(
    stub: Any,
    loc: str,
    contact: str,
    db: Database,
    reason: int,
    on_channel: int,
    source: int,
    evidence: str,
    confirmed: bool,
    expected: bool,
) -> None:
    enable(stub, loc, contact, reason, on_channel)
    assert not check(stub, loc, contact, on_channel).allowed
    channel_name = pb.Channel.Name(on_channel).removeprefix("CHANNEL_")

    if expected is ALLOWED:
        answer = clear(
            stub, loc, contact, on_channel, source=source, evidence=evidence, confirmed=confirmed
        )
        assert answer.changed
        assert keys(answer.affected_blocks) == {(OUT, channel_name, reason)}
        assert list(answer.status.blocks) == []
        assert answer.status.outbound == pb.DND_STATUS_OFF
        assert answer.status.version == 2
        assert status(stub, loc, contact) == answer.status
        after = check(stub, loc, contact, on_channel)
        assert after.allowed, after.explanation
        assert after.version == 2
        assert db.blocks(loc) == 0
        assert change_rows(db, loc) == [
            (True, "OUTBOUND", channel_name, _name(reason), "SYSTEM", 1),
            (False, "OUTBOUND", channel_name, _name(reason), pb.Source.Name(source)[7:], 2),
        ]
        return

    before = snapshot(stub, db, loc, contact)
    error = refused(
        stub, loc, contact, on_channel, source=source, evidence=evidence, confirmed=confirmed
    )
    found = violations(error)
    assert list(found) == [(_name(reason), f"OUTBOUND/{channel_name}")]
    description = next(iter(found.values())).lower()
    for clearer in CLEARERS[reason]:
        assert clearer.lower() in description, description
    assert snapshot(stub, db, loc, contact) == before
    assert db.blocks(loc) == 1
    assert db.changes(loc) == 1
    assert not check(stub, loc, contact, on_channel).allowed


def test_table_covers_every_reason_and_source_both_ways() -> None:
    reasons = {r for r in R.values() if r != R.REASON_UNSPECIFIED}
    assert set(CLEARERS) == reasons
    for reason in reasons:
        outcomes = {row[5] for row in ROWS if row[0] == reason}
        assert outcomes == {ALLOWED, REFUSED}, R.Name(reason)
        sources = {row[2] for row in ROWS if row[0] == reason}
        assert sources == {USER, WORKFLOW, CONTACT, SYSTEM, SUPPORT}, R.Name(reason)
    for reason, _channel, source, _evidence, _confirmed, expected in ROWS:
        clearer = pb.Source.Name(source).removeprefix("SOURCE_") in CLEARERS[reason]
        assert clearer or expected is REFUSED


# --- scope semantics ---------------------------------------------------------------------------


def test_stacked_blocks_reason_narrowing_leaves_the_channel_blocked(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    enable(stub, loc, contact, R.REASON_MANUAL, SMS, source=USER)
    enable(stub, loc, contact, R.REASON_SMS_OPT_OUT_KEYWORD, SMS, source=CONTACT)

    answer = clear(stub, loc, contact, SMS, reason=R.REASON_MANUAL, source=USER)
    assert answer.changed
    assert keys(answer.affected_blocks) == {(OUT, "SMS", R.REASON_MANUAL)}
    assert keys(answer.status.blocks) == {(OUT, "SMS", R.REASON_SMS_OPT_OUT_KEYWORD)}
    assert answer.status.outbound == pb.DND_STATUS_PARTIAL
    assert list(answer.status.blocked_channels) == [SMS]
    assert answer.status.version == 3
    denied = check(stub, loc, contact, SMS)
    assert not denied.allowed
    assert [b.reason for b in denied.denied_by] == [R.REASON_SMS_OPT_OUT_KEYWORD]
    assert db.blocks(loc) == 1


def test_stacked_blocks_clearing_the_channel_is_refused_for_the_permanent_block_only(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    enable(stub, loc, contact, R.REASON_MANUAL, SMS, source=USER)
    enable(stub, loc, contact, R.REASON_SMS_OPT_OUT_KEYWORD, SMS, source=CONTACT)
    before = snapshot(stub, db, loc, contact)

    error = refused(stub, loc, contact, SMS, source=USER)
    assert list(violations(error)) == [("SMS_OPT_OUT_KEYWORD", "OUTBOUND/SMS")]
    assert snapshot(stub, db, loc, contact) == before
    assert db.blocks(loc) == 2

    # The contact texting START lifts both.
    answer = clear(stub, loc, contact, SMS, source=CONTACT)
    assert answer.changed
    assert len(answer.affected_blocks) == 2
    assert answer.status.outbound == pb.DND_STATUS_OFF
    assert answer.status.version == 4
    assert check(stub, loc, contact, SMS).allowed


def test_all_scope_clear_removes_the_all_block_and_every_channel_block(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    enable(stub, loc, contact, R.REASON_MANUAL, None, source=USER)
    enable(stub, loc, contact, R.REASON_MANUAL, SMS, source=USER)
    enable(stub, loc, contact, R.REASON_MANUAL, CALL, source=WORKFLOW)
    enable(stub, loc, contact, R.REASON_SMS_CARRIER_TEMPORARY, SMS)
    enable(stub, loc, contact, R.REASON_EMAIL_UNSUBSCRIBE_LINK, EMAIL, source=CONTACT)
    inbound = set_dnd(stub, loc, contact, ENABLE, direction=IN, source=CONTACT)
    assert inbound.changed and inbound.status.version == 6

    answer = clear(stub, loc, contact, None, source=USER)
    assert answer.changed
    assert keys(answer.affected_blocks) == {
        (OUT, "ALL", R.REASON_MANUAL),
        (OUT, "SMS", R.REASON_MANUAL),
        (OUT, "CALL", R.REASON_MANUAL),
        (OUT, "SMS", R.REASON_SMS_CARRIER_TEMPORARY),
        (OUT, "EMAIL", R.REASON_EMAIL_UNSUBSCRIBE_LINK),
    }
    # The inbound block is another direction: untouched.
    assert keys(answer.status.blocks) == {(IN, "ALL", R.REASON_MANUAL)}
    assert answer.status.outbound == pb.DND_STATUS_OFF
    assert answer.status.inbound == pb.DND_STATUS_ON
    assert list(answer.status.blocked_channels) == []
    assert answer.status.version == 11
    for channel in EVERY_CHANNEL:
        assert check(stub, loc, contact, channel).allowed
    assert not check(stub, loc, contact, CALL, IN).allowed
    assert db.blocks(loc) == 1
    rows = change_rows(db, loc)
    assert [row[5] for row in rows] == list(range(1, 12))
    assert all(row[0] is False and row[4] == "USER" for row in rows[6:])


def test_channel_clear_does_not_remove_the_all_block(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    enable(stub, loc, contact, R.REASON_MANUAL, None, source=USER)
    enable(stub, loc, contact, R.REASON_MANUAL, SMS, source=USER)

    answer = clear(stub, loc, contact, SMS, source=USER)
    assert answer.changed
    assert keys(answer.affected_blocks) == {(OUT, "SMS", R.REASON_MANUAL)}
    assert keys(answer.status.blocks) == {(OUT, "ALL", R.REASON_MANUAL)}
    assert answer.status.outbound == pb.DND_STATUS_ON
    denied = check(stub, loc, contact, SMS)
    assert not denied.allowed
    assert keys(denied.denied_by) == {(OUT, "ALL", R.REASON_MANUAL)}

    # Only the ALL block is left: a channel clear finds nothing in its scope.
    again = clear(stub, loc, contact, SMS, source=USER)
    assert not again.changed
    assert list(again.affected_blocks) == []
    assert again.status.version == 3
    assert not check(stub, loc, contact, SMS).allowed
    assert db.changes(loc) == 3


def test_all_scope_reason_narrowing_clears_only_that_reason(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    enable(stub, loc, contact, R.REASON_MANUAL, None, source=USER)
    enable(stub, loc, contact, R.REASON_MANUAL, SMS, source=USER)
    enable(stub, loc, contact, R.REASON_SMS_OPT_OUT_KEYWORD, SMS, source=CONTACT)
    enable(stub, loc, contact, R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL)

    # WORKFLOW could clear neither STOP nor the spam complaint; narrowed, they are out of scope.
    answer = clear(stub, loc, contact, None, reason=R.REASON_MANUAL, source=WORKFLOW)
    assert answer.changed
    assert keys(answer.affected_blocks) == {
        (OUT, "ALL", R.REASON_MANUAL),
        (OUT, "SMS", R.REASON_MANUAL),
    }
    assert keys(answer.status.blocks) == {
        (OUT, "SMS", R.REASON_SMS_OPT_OUT_KEYWORD),
        (OUT, "EMAIL", R.REASON_EMAIL_SPAM_COMPLAINT),
    }
    assert answer.status.outbound == pb.DND_STATUS_PARTIAL
    assert list(answer.status.blocked_channels) == [EMAIL, SMS]
    assert answer.status.version == 6
    assert check(stub, loc, contact, CALL).allowed
    assert not check(stub, loc, contact, SMS).allowed
    assert db.blocks(loc) == 2


def test_mixed_scope_with_refusable_blocks_changes_nothing_and_lists_each(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    enable(stub, loc, contact, R.REASON_MANUAL, None, source=USER)
    enable(stub, loc, contact, R.REASON_MANUAL, SMS, source=USER)
    enable(stub, loc, contact, R.REASON_SMS_OPT_OUT_KEYWORD, SMS, source=CONTACT)
    enable(stub, loc, contact, R.REASON_EMAIL_HARD_BOUNCE, EMAIL)
    before = snapshot(stub, db, loc, contact)

    error = refused(stub, loc, contact, None, source=USER)
    found = violations(error)
    # USER may clear the MANUAL blocks but neither STOP nor (unconfirmed) the hard bounce.
    assert set(found) == {
        ("SMS_OPT_OUT_KEYWORD", "OUTBOUND/SMS"),
        ("EMAIL_HARD_BOUNCE", "OUTBOUND/EMAIL"),
    }
    assert "suppression_removal_confirmed" in found[("EMAIL_HARD_BOUNCE", "OUTBOUND/EMAIL")]
    assert "evidence" in found[("SMS_OPT_OUT_KEYWORD", "OUTBOUND/SMS")]
    assert snapshot(stub, db, loc, contact) == before
    assert db.blocks(loc) == 4
    for channel in EVERY_CHANNEL:
        assert not check(stub, loc, contact, channel).allowed


def test_mixed_scope_with_one_refusable_block_changes_nothing(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    enable(stub, loc, contact, R.REASON_MANUAL, EMAIL, source=USER)
    enable(stub, loc, contact, R.REASON_EMAIL_UNSUBSCRIBE_LINK, EMAIL, source=CONTACT)
    before = snapshot(stub, db, loc, contact)

    error = refused(stub, loc, contact, EMAIL, source=WORKFLOW)
    assert list(violations(error)) == [("EMAIL_UNSUBSCRIBE_LINK", "OUTBOUND/EMAIL")]
    assert snapshot(stub, db, loc, contact) == before
    assert keys(status(stub, loc, contact).blocks) == {
        (OUT, "EMAIL", R.REASON_MANUAL),
        (OUT, "EMAIL", R.REASON_EMAIL_UNSUBSCRIBE_LINK),
    }


def test_system_may_not_clear_an_all_or_inbound_block(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    enable(stub, loc, contact, R.REASON_MANUAL, None, source=USER)
    set_dnd(stub, loc, contact, ENABLE, direction=IN, source=USER)
    before = snapshot(stub, db, loc, contact)

    error = refused(stub, loc, contact, None, source=SYSTEM, evidence=PROOF, confirmed=True)
    assert list(violations(error)) == [("MANUAL", "OUTBOUND/ALL")]
    with pytest.raises(grpc.RpcError) as caught:
        set_dnd(stub, loc, contact, DISABLE, direction=IN, source=SYSTEM)
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert list(violations(caught.value)) == [("MANUAL", "INBOUND/ALL")]
    assert snapshot(stub, db, loc, contact) == before


# --- no-ops and versions -----------------------------------------------------------------------


def test_clearing_nothing_succeeds_unchanged(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    # A contact never seen.
    answer = clear(stub, loc, contact, SMS, source=SYSTEM)
    assert not answer.changed
    assert list(answer.affected_blocks) == []
    assert answer.status.version == 0
    assert answer.status.outbound == pb.DND_STATUS_OFF
    assert db.changes(loc) == 0
    assert db.blocks(loc) == 0

    # Blocks elsewhere, or of another reason, are not in the scope (and so not refused).
    enable(stub, loc, contact, R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL)
    enable(stub, loc, contact, R.REASON_SMS_OPT_OUT_KEYWORD, SMS)
    for kw in (
        {"channel": SMS, "reason": R.REASON_MANUAL, "source": USER},
        {"channel": CALL, "source": SYSTEM},
        {"channel": None, "reason": R.REASON_SMS_CARRIER_TEMPORARY, "source": WORKFLOW},
    ):
        channel = kw.pop("channel")
        answer = clear(stub, loc, contact, channel, **kw)
        assert not answer.changed, kw
        assert list(answer.affected_blocks) == []
        assert answer.status.version == 2
    inbound = set_dnd(stub, loc, contact, DISABLE, direction=IN, source=USER)
    assert not inbound.changed
    assert db.changes(loc) == 2
    assert db.blocks(loc) == 2
    assert status(stub, loc, contact).version == 2


def test_duplicate_enable_changes_nothing(stub: Any, loc: str, contact: str, db: Database) -> None:
    first = set_dnd(
        stub,
        loc,
        contact,
        ENABLE,
        scope=channel_scope(SMS),
        reason=R.REASON_SMS_OPT_OUT_KEYWORD,
        source=CONTACT,
        actor_id="first",
    )
    assert first.changed
    assert first.status.version == 1

    again = set_dnd(
        stub,
        loc,
        contact,
        ENABLE,
        scope=channel_scope(SMS),
        reason=R.REASON_SMS_OPT_OUT_KEYWORD,
        source=SYSTEM,
        actor_id="second",
    )
    assert not again.changed
    assert list(again.affected_blocks) == []
    assert again.status.version == 1
    assert again.status == first.status
    assert [b.actor_id for b in again.status.blocks] == ["first"]
    assert db.changes(loc) == 1
    assert db.blocks(loc) == 1

    # Unspecified reason means MANUAL: a MANUAL enable twice is one block.
    manual = set_dnd(stub, loc, contact, ENABLE, scope=channel_scope(SMS))
    assert manual.changed and manual.status.version == 2
    manual_again = set_dnd(
        stub, loc, contact, ENABLE, scope=channel_scope(SMS), reason=R.REASON_MANUAL
    )
    assert not manual_again.changed and manual_again.status.version == 2
    assert db.changes(loc) == 2


def test_version_grows_by_one_per_block_added_or_removed(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    versions = [enable(stub, loc, contact, R.REASON_MANUAL, c).status.version for c in (1, 2, 3)]
    assert versions == [1, 2, 3]
    answer = clear(stub, loc, contact, None, source=USER)
    assert len(answer.affected_blocks) == 3
    assert answer.status.version == 6
    assert check(stub, loc, contact, SMS).version == 6
    assert status(stub, loc, contact).version == 6
    assert [row[5] for row in change_rows(db, loc)] == [1, 2, 3, 4, 5, 6]
    # A refused clear leaves the version alone.
    enable(stub, loc, contact, R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL)
    refused(stub, loc, contact, EMAIL, source=USER)
    assert status(stub, loc, contact).version == 7


def test_every_channel_blocked_is_on_and_clearing_one_is_partial(
    stub: Any, loc: str, contact: str
) -> None:
    for channel in EVERY_CHANNEL:
        last = enable(stub, loc, contact, R.REASON_MANUAL, channel, source=USER)
    assert last.status.outbound == pb.DND_STATUS_ON
    assert list(last.status.blocked_channels) == EVERY_CHANNEL
    answer = clear(stub, loc, contact, pb.CHANNEL_RCS, source=USER)
    assert answer.status.outbound == pb.DND_STATUS_PARTIAL
    assert list(answer.status.blocked_channels) == EVERY_CHANNEL[:-1]


# --- inbound -----------------------------------------------------------------------------------


@pytest.mark.parametrize("scope", [None, ALL_SCOPE], ids=["unset", "all_channels"])
def test_inbound_enable_and_disable(
    stub: Any, loc: str, contact: str, db: Database, scope: pb.Scope | None
) -> None:
    on = set_dnd(stub, loc, contact, ENABLE, direction=IN, scope=scope, source=CONTACT)
    assert on.changed
    assert keys(on.affected_blocks) == {(IN, "ALL", R.REASON_MANUAL)}
    assert on.status.inbound == pb.DND_STATUS_ON
    assert on.status.outbound == pb.DND_STATUS_OFF
    assert list(on.status.blocked_channels) == []
    for channel in EVERY_CHANNEL:
        inbound = check(stub, loc, contact, channel, IN)
        assert inbound.allowed is (channel not in (CALL, SMS)), pb.Channel.Name(channel)
        assert check(stub, loc, contact, channel, OUT).allowed

    again = set_dnd(stub, loc, contact, ENABLE, direction=IN, scope=scope, source=USER)
    assert not again.changed

    off = set_dnd(stub, loc, contact, DISABLE, direction=IN, scope=scope, source=WORKFLOW)
    assert off.changed
    assert off.status.inbound == pb.DND_STATUS_OFF
    assert off.status.version == 2
    assert check(stub, loc, contact, CALL, IN).allowed
    assert change_rows(db, loc) == [
        (True, "INBOUND", "ALL", "MANUAL", "CONTACT", 1),
        (False, "INBOUND", "ALL", "MANUAL", "WORKFLOW", 2),
    ]


def test_inbound_rejects_a_channel_and_non_manual_reasons(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    for action in (ENABLE, DISABLE):
        with pytest.raises(grpc.RpcError) as caught:
            set_dnd(stub, loc, contact, action, direction=IN, scope=channel_scope(SMS))
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "scope" in bad_fields(caught.value)
    with pytest.raises(grpc.RpcError) as caught:
        set_dnd(stub, loc, contact, ENABLE, direction=IN, reason=R.REASON_SMS_OPT_OUT_KEYWORD)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in bad_fields(caught.value)
    assert db.changes(loc) == 0


FOREIGN_SCOPES = [
    (R.REASON_SMS_OPT_OUT_KEYWORD, EMAIL),
    (R.REASON_SMS_CARRIER_TEMPORARY, CALL),
    (R.REASON_SMS_CARRIER_PERMANENT, None),
    (R.REASON_EMAIL_HARD_BOUNCE, SMS),
    (R.REASON_EMAIL_UNSUBSCRIBE_LINK, None),
    (R.REASON_EMAIL_SPAM_COMPLAINT, WHATSAPP),
]


@pytest.mark.parametrize(
    ("reason", "on_channel"),
    [
        pytest.param(r, c, id=f"{_name(r)}-{'ALL' if c is None else pb.Channel.Name(c)[8:]}")
        for r, c in FOREIGN_SCOPES
    ],
)
def test_reason_on_a_foreign_scope_is_invalid(
    stub: Any, loc: str, contact: str, db: Database, reason: int, on_channel: int | None
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        set_dnd(stub, loc, contact, ENABLE, scope=scope_of(on_channel), reason=reason)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "reason" in bad_fields(caught.value)
    assert db.changes(loc) == 0


# --- the change log ----------------------------------------------------------------------------


def test_change_log_rows_match_each_change(stub: Any, loc: str, contact: str, db: Database) -> None:
    enable(stub, loc, contact, R.REASON_MANUAL, SMS, source=USER)
    enable(stub, loc, contact, R.REASON_SMS_OPT_OUT_KEYWORD, SMS, source=CONTACT)
    enable(stub, loc, contact, R.REASON_EMAIL_SPAM_COMPLAINT, EMAIL, source=SYSTEM)
    clear(stub, loc, contact, SMS, reason=R.REASON_MANUAL, source=WORKFLOW)
    refused(stub, loc, contact, EMAIL, source=USER, evidence=PROOF)
    clear(stub, loc, contact, None, source=SUPPORT, evidence=PROOF)

    rows = change_rows(db, loc)
    assert rows[:4] == [
        (True, "OUTBOUND", "SMS", "MANUAL", "USER", 1),
        (True, "OUTBOUND", "SMS", "SMS_OPT_OUT_KEYWORD", "CONTACT", 2),
        (True, "OUTBOUND", "EMAIL", "EMAIL_SPAM_COMPLAINT", "SYSTEM", 3),
        (False, "OUTBOUND", "SMS", "MANUAL", "WORKFLOW", 4),
    ]
    # One row per block removed by the SUPPORT clear (in either order), each its own version;
    # nothing logged for the refused clear.
    assert len(rows) == 6
    assert [row[5] for row in rows[4:]] == [5, 6]
    assert {row[:5] for row in rows[4:]} == {
        (False, "OUTBOUND", "SMS", "SMS_OPT_OUT_KEYWORD", "SUPPORT"),
        (False, "OUTBOUND", "EMAIL", "EMAIL_SPAM_COMPLAINT", "SUPPORT"),
    }
    summaries = db.fetch(
        "SELECT version, outbound, inbound, blocked_channels FROM dnd_changes"
        " WHERE location_id = $1 ORDER BY seq",
        loc,
    )
    assert [tuple(row) for row in summaries[:4]] == [
        (1, "PARTIAL", "OFF", ["SMS"]),
        (2, "PARTIAL", "OFF", ["SMS"]),
        (3, "PARTIAL", "OFF", ["EMAIL", "SMS"]),
        (4, "PARTIAL", "OFF", ["EMAIL", "SMS"]),
    ]
    assert tuple(summaries[-1])[1:] == ("OFF", "OFF", [])
    assert status(stub, loc, contact).version == 6
