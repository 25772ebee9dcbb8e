"""SMS keywords over real gRPC, against a real server on real PostgreSQL.

ProcessInboundMessage with every opt-out, opt-in and help word in the spellings a contact may
type, messages that merely contain a keyword, START against other blocks, the conditional YES,
other channels, a location's extra words and revocation phrases, inbound DND and the body limit.
Each test checks the rows written (or not written), not only the flags of the answer.
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
    new_id,
)

R = pb.Reason
SMS, EMAIL, CALL = pb.CHANNEL_SMS, pb.CHANNEL_EMAIL, pb.CHANNEL_CALL
USER, CONTACT, SYSTEM = pb.SOURCE_USER, pb.SOURCE_CONTACT, pb.SOURCE_SYSTEM
OPTED_OUT = pb.KEYWORD_ACTION_OPTED_OUT
OPTED_IN = pb.KEYWORD_ACTION_OPTED_IN
HELP = pb.KEYWORD_ACTION_HELP
NONE = pb.KEYWORD_ACTION_NONE
# Keywords are processed on SMS, WhatsApp and RCS (tests/integration/test_keyword_channels.py).
NON_SMS_CHANNELS = [
    pb.CHANNEL_CALL,
    pb.CHANNEL_EMAIL,
    pb.CHANNEL_FACEBOOK,
    pb.CHANNEL_GMB,
]

# The spec's words, written out.
OPT_OUT_WORDS = [
    "STOP",
    "STOPALL",
    "STOP ALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "REVOKE",
    "OPTOUT",
    "OPT OUT",
]
OPT_IN_WORDS = ["START", "YES", "UNSTOP"]
HELP_WORDS = ["HELP", "INFO"]


def spellings(word: str) -> list[str]:
    """Spellings of ``word`` the spec says match it: case, whitespace, trailing punctuation."""
    return [word.lower(), word.title(), f"  {word}. ", f"{word.lower()}!", f"\n{word}?!\n"]


def cases(words: list[str]) -> list[Any]:
    return [
        pytest.param(word, body, id=f"{word}-{i}")
        for word in words
        for i, body in enumerate(spellings(word))
    ]


# --- helpers -----------------------------------------------------------------------------------


def inbound(
    stub: Any,
    loc: str,
    contact: str,
    body: str,
    *,
    channel: int = SMS,
    from_address: str = "",
) -> pb.ProcessInboundMessageResponse:
    request = factories.inbound(loc, contact, body, channel, from_address=from_address)
    return stub.ProcessInboundMessage(request, timeout=10)


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
) -> pb.SetDndResponse:
    request = factories.set_dnd(
        loc, contact, action, direction=direction, scope=scope, reason=reason, source=source
    )
    answer = stub.SetDnd(request, timeout=10)
    assert answer.changed
    return answer


def update_settings(
    stub: Any,
    loc: str,
    opt_out: list[str] | None = None,
    opt_in: list[str] | None = None,
    revocation: bool = False,
) -> pb.UpdateKeywordSettingsResponse:
    return stub.UpdateKeywordSettings(
        pb.UpdateKeywordSettingsRequest(
            location_id=loc,
            settings=pb.KeywordSettings(
                extra_opt_out_words=opt_out or [],
                extra_opt_in_words=opt_in or [],
                detect_revocation_phrases=revocation,
            ),
        ),
        timeout=10,
    )


def get_settings(stub: Any, loc: str) -> pb.GetKeywordSettingsResponse:
    return stub.GetKeywordSettings(pb.GetKeywordSettingsRequest(location_id=loc), timeout=10)


def status(stub: Any, loc: str, contact: str) -> pb.ContactStatus:
    return stub.GetStatus(factories.get_status(loc, contact)).status


def check(
    stub: Any, loc: str, contact: str, channel: int = SMS, direction: int = OUT
) -> pb.CheckSendResponse:
    return stub.CheckSend(factories.check(loc, contact, channel, direction=direction))


def history(stub: Any, loc: str, contact: str) -> list[pb.HistoryEntry]:
    return list(stub.ListHistory(factories.history(loc, contact)).entries)


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


def block_rows(db: Database, loc: str, contact: str) -> list[tuple[Any, ...]]:
    rows = db.fetch(
        "SELECT direction, scope, reason, source FROM dnd_blocks"
        " WHERE location_id = $1 AND contact_id = $2 ORDER BY direction, scope, reason",
        loc,
        contact,
    )
    return [tuple(row) for row in rows]


def change_rows(db: Database, loc: str, contact: str) -> list[tuple[Any, ...]]:
    rows = db.fetch(
        "SELECT enabled, direction, scope, reason, source, version FROM dnd_changes"
        " WHERE location_id = $1 AND contact_id = $2 ORDER BY seq",
        loc,
        contact,
    )
    return [tuple(row) for row in rows]


STOP_BLOCK = ("OUTBOUND", "SMS", "SMS_OPT_OUT_KEYWORD", "CONTACT")


def assert_untouched(stub: Any, db: Database, loc: str, contact: str) -> None:
    """A contact nothing was ever written for."""
    assert db.changes(loc) == 0
    assert db.blocks(loc) == 0
    current = status(stub, loc, contact)
    assert current.version == 0
    assert list(current.blocks) == []
    assert check(stub, loc, contact).allowed


# --- opt-out words -----------------------------------------------------------------------------


@pytest.mark.parametrize(("word", "body"), cases(OPT_OUT_WORDS))
def test_every_opt_out_word_and_spelling_opts_out_of_sms(
    stub: Any, loc: str, contact: str, db: Database, word: str, body: str
) -> None:
    answer = inbound(stub, loc, contact, body)
    assert answer.action == OPTED_OUT
    assert answer.matched_keyword == word
    assert answer.changed
    assert answer.deliver_to_inbox
    assert answer.sms_blocked
    assert keys(answer.sms_blocked_by) == {(OUT, "SMS", R.REASON_SMS_OPT_OUT_KEYWORD)}
    assert answer.status.version == 1
    assert answer.status.outbound == pb.DND_STATUS_PARTIAL
    assert list(answer.status.blocked_channels) == [SMS]
    [block] = answer.status.blocks
    assert block.reason == R.REASON_SMS_OPT_OUT_KEYWORD
    assert block.source == CONTACT
    # The opt-out message is kept as evidence, the keyword as detail.
    assert block.evidence == body
    assert word in block.provider_detail
    assert answer.cursor

    assert block_rows(db, loc, contact) == [STOP_BLOCK]
    assert change_rows(db, loc, contact) == [
        (True, "OUTBOUND", "SMS", "SMS_OPT_OUT_KEYWORD", "CONTACT", 1)
    ]
    assert status(stub, loc, contact) == answer.status
    denied = check(stub, loc, contact, SMS)
    assert not denied.allowed
    assert keys(denied.denied_by) == {(OUT, "SMS", R.REASON_SMS_OPT_OUT_KEYWORD)}
    # SMS only.
    assert check(stub, loc, contact, EMAIL).allowed
    assert check(stub, loc, contact, CALL).allowed


def test_opt_out_word_with_inner_whitespace_runs(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    answer = inbound(stub, loc, contact, "  Opt   out! ")
    assert answer.action == OPTED_OUT
    assert answer.matched_keyword == "OPT OUT"
    assert block_rows(db, loc, contact) == [STOP_BLOCK]


def test_repeated_stop_changes_nothing(stub: Any, loc: str, contact: str, db: Database) -> None:
    first = inbound(stub, loc, contact, "STOP")
    assert first.changed and first.status.version == 1
    again = inbound(stub, loc, contact, "unsubscribe")
    assert again.action == OPTED_OUT
    assert not again.changed
    assert again.status.version == 1
    assert again.cursor == first.cursor
    assert again.sms_blocked
    assert db.changes(loc) == 1
    assert db.blocks(loc) == 1
    # The first opt-out's evidence stays.
    assert [b.evidence for b in status(stub, loc, contact).blocks] == ["STOP"]


def test_stop_is_permanent_for_a_user_but_not_for_the_contact(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    inbound(stub, loc, contact, "STOP")
    with pytest.raises(grpc.RpcError) as caught:
        stub.SetDnd(
            pb.SetDndRequest(
                location_id=loc,
                contact_id=contact,
                action=DISABLE,
                direction=OUT,
                scope=channel_scope(SMS),
                source=USER,
            )
        )
    assert caught.value.code() is grpc.StatusCode.FAILED_PRECONDITION
    assert db.blocks(loc) == 1
    assert db.changes(loc) == 1
    assert not check(stub, loc, contact).allowed


# --- opt-in words ------------------------------------------------------------------------------


@pytest.mark.parametrize(("word", "body"), cases(OPT_IN_WORDS))
def test_every_opt_in_word_and_spelling_after_stop_opts_back_in(
    stub: Any, loc: str, contact: str, db: Database, word: str, body: str
) -> None:
    stop = inbound(stub, loc, contact, "STOP")
    assert stop.changed

    answer = inbound(stub, loc, contact, body)
    assert answer.action == OPTED_IN
    assert answer.matched_keyword == word
    assert answer.changed
    assert answer.deliver_to_inbox
    assert not answer.sms_blocked
    assert list(answer.sms_blocked_by) == []
    assert list(answer.status.blocks) == []
    assert answer.status.outbound == pb.DND_STATUS_OFF
    # Lifting the opt-out records the contact's SMS keyword consent (both purposes).
    assert answer.status.version == 4
    assert {(c.method, c.consent_source) for c in answer.status.consents} == {
        (pb.CONSENT_METHOD_SMS_KEYWORD, f"keyword:{word}")
    }
    assert answer.cursor and answer.cursor != stop.cursor

    assert db.blocks(loc) == 0
    assert change_rows(db, loc, contact) == [
        (True, "OUTBOUND", "SMS", "SMS_OPT_OUT_KEYWORD", "CONTACT", 1),
        (False, "OUTBOUND", "SMS", "SMS_OPT_OUT_KEYWORD", "CONTACT", 2),
        (True, "OUTBOUND", "SMS", "", "CONTACT", 3),
        (True, "OUTBOUND", "SMS", "", "CONTACT", 4),
    ]
    allowed = check(stub, loc, contact, SMS)
    assert allowed.allowed, allowed.explanation
    assert allowed.version == 4


def test_start_clears_every_sms_block_and_nothing_else(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    sms = channel_scope(SMS)
    set_dnd(stub, loc, contact, ENABLE, scope=sms, source=USER)
    set_dnd(stub, loc, contact, ENABLE, scope=sms, reason=R.REASON_SMS_CARRIER_TEMPORARY)
    set_dnd(stub, loc, contact, ENABLE, scope=sms, reason=R.REASON_SMS_CARRIER_PERMANENT)
    set_dnd(stub, loc, contact, ENABLE, scope=channel_scope(EMAIL), source=USER)
    inbound(stub, loc, contact, "STOP")
    assert len(block_rows(db, loc, contact)) == 5

    answer = inbound(stub, loc, contact, "Start")
    assert answer.action == OPTED_IN
    assert answer.changed
    assert not answer.sms_blocked
    assert keys(answer.status.blocks) == {(OUT, "EMAIL", R.REASON_MANUAL)}
    assert list(answer.status.blocked_channels) == [EMAIL]
    # Four blocks cleared, then the keyword consents (MARKETING, INFORMATIONAL) recorded.
    assert answer.status.version == 11
    assert block_rows(db, loc, contact) == [("OUTBOUND", "EMAIL", "MANUAL", "USER")]
    assert [row[3] for row in change_rows(db, loc, contact)[9:]] == ["", ""]
    cleared = change_rows(db, loc, contact)[5:9]
    assert {row[3] for row in cleared} == {
        "MANUAL",
        "SMS_CARRIER_TEMPORARY",
        "SMS_CARRIER_PERMANENT",
        "SMS_OPT_OUT_KEYWORD",
    }
    assert all(row[:3] == (False, "OUTBOUND", "SMS") and row[4] == "CONTACT" for row in cleared)
    assert [row[5] for row in cleared] == [6, 7, 8, 9]
    assert check(stub, loc, contact, SMS).allowed
    assert not check(stub, loc, contact, EMAIL).allowed


def test_start_does_not_lift_an_all_channels_block_nor_inbound_dnd(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    set_dnd(stub, loc, contact, ENABLE, scope=ALL_SCOPE, source=USER)
    set_dnd(stub, loc, contact, ENABLE, direction=IN, source=USER)
    inbound(stub, loc, contact, "STOP")

    answer = inbound(stub, loc, contact, "START")
    assert answer.action == OPTED_IN
    assert answer.changed
    # SMS is still blocked, and the answer says by what.
    assert answer.sms_blocked
    assert keys(answer.sms_blocked_by) == {(OUT, "ALL", R.REASON_MANUAL)}
    assert "MANUAL" in answer.explanation
    assert keys(answer.status.blocks) == {
        (OUT, "ALL", R.REASON_MANUAL),
        (IN, "ALL", R.REASON_MANUAL),
    }
    assert answer.status.outbound == pb.DND_STATUS_ON
    assert answer.status.inbound == pb.DND_STATUS_ON
    # The SMS opt-out lifted, the keyword consents recorded (SMS stays blocked by MANUAL).
    assert answer.status.version == 6
    assert block_rows(db, loc, contact) == [
        ("INBOUND", "ALL", "MANUAL", "USER"),
        ("OUTBOUND", "ALL", "MANUAL", "USER"),
    ]
    denied = check(stub, loc, contact, SMS)
    assert not denied.allowed
    assert keys(denied.denied_by) == {(OUT, "ALL", R.REASON_MANUAL)}
    assert not check(stub, loc, contact, SMS, IN).allowed


def test_start_with_only_an_all_channels_block_changes_nothing(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    set_dnd(stub, loc, contact, ENABLE, scope=ALL_SCOPE, source=USER)
    answer = inbound(stub, loc, contact, "start")
    assert answer.action == OPTED_IN
    assert not answer.changed
    assert answer.sms_blocked
    assert keys(answer.sms_blocked_by) == {(OUT, "ALL", R.REASON_MANUAL)}
    assert answer.status.version == 1
    assert db.changes(loc) == 1
    assert not check(stub, loc, contact, SMS).allowed


def test_start_without_prior_dnd_changes_nothing(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    answer = inbound(stub, loc, contact, "START")
    assert answer.action == OPTED_IN
    assert answer.matched_keyword == "START"
    assert not answer.changed
    assert not answer.sms_blocked
    assert answer.status.version == 0
    assert_untouched(stub, db, loc, contact)


# --- YES ---------------------------------------------------------------------------------------


def test_yes_without_sms_dnd_is_not_a_keyword(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    answer = inbound(stub, loc, contact, "Yes!")
    assert answer.action == NONE
    assert not answer.changed
    assert answer.deliver_to_inbox
    assert not answer.sms_blocked
    assert answer.status.version == 0
    assert_untouched(stub, db, loc, contact)


def test_yes_with_dnd_on_another_channel_only_is_not_a_keyword(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    set_dnd(stub, loc, contact, ENABLE, scope=channel_scope(EMAIL), source=USER)
    answer = inbound(stub, loc, contact, "yes")
    assert answer.action == NONE
    assert not answer.changed
    assert answer.status.version == 1
    assert db.changes(loc) == 1
    assert block_rows(db, loc, contact) == [("OUTBOUND", "EMAIL", "MANUAL", "USER")]


def test_yes_without_sms_dnd_matches_no_keyword(stub: Any, loc: str, contact: str) -> None:
    answer = inbound(stub, loc, contact, "YES")
    assert answer.action == NONE
    assert answer.matched_keyword == ""


def test_yes_with_sms_dnd_opts_back_in(stub: Any, loc: str, contact: str, db: Database) -> None:
    set_dnd(
        stub, loc, contact, ENABLE, scope=channel_scope(SMS), reason=R.REASON_SMS_CARRIER_TEMPORARY
    )
    inbound(stub, loc, contact, "QUIT")

    answer = inbound(stub, loc, contact, " yes. ")
    assert answer.action == OPTED_IN
    assert answer.matched_keyword == "YES"
    assert answer.changed
    assert not answer.sms_blocked
    # Two blocks lifted, two keyword consents recorded.
    assert answer.status.version == 6
    assert db.blocks(loc) == 0
    assert check(stub, loc, contact, SMS).allowed

    # Now without SMS DND, YES is an ordinary message again.
    again = inbound(stub, loc, contact, "YES")
    assert again.action == NONE
    assert not again.changed
    assert db.changes(loc) == 6


# --- HELP / INFO -------------------------------------------------------------------------------


@pytest.mark.parametrize(("word", "body"), cases(HELP_WORDS))
def test_help_words_change_nothing(
    stub: Any, loc: str, contact: str, db: Database, word: str, body: str
) -> None:
    answer = inbound(stub, loc, contact, body)
    assert answer.action == HELP
    assert answer.matched_keyword == word
    assert not answer.changed
    assert answer.deliver_to_inbox
    assert answer.status.version == 0
    assert_untouched(stub, db, loc, contact)


def test_help_after_stop_keeps_the_opt_out(stub: Any, loc: str, contact: str, db: Database) -> None:
    stop = inbound(stub, loc, contact, "STOP")
    answer = inbound(stub, loc, contact, "HELP")
    assert answer.action == HELP
    assert not answer.changed
    assert answer.sms_blocked
    assert answer.status.version == 1
    # No change: the cursor is the contact's last change.
    assert answer.cursor == stop.cursor
    assert db.changes(loc) == 1
    assert block_rows(db, loc, contact) == [STOP_BLOCK]


# --- messages that are not keywords ------------------------------------------------------------

NOT_KEYWORDS = [
    "stop by tomorrow",
    "Please stop",
    "stop stopping",
    "stopp",
    "unstoppable",
    "start over",
    "yes please",
    "help me",
    "more info please",
    "the end",
    "cancel my 3pm appointment",
    "please stop texting me",
    "Hello, is this the bakery?",
    "",
]


@pytest.mark.parametrize("body", NOT_KEYWORDS)
def test_messages_containing_keywords_are_not_keywords(
    stub: Any, loc: str, contact: str, db: Database, body: str
) -> None:
    answer = inbound(stub, loc, contact, body)
    assert answer.action == NONE
    assert answer.matched_keyword == ""
    assert not answer.changed
    assert answer.deliver_to_inbox
    assert not answer.sms_blocked
    assert answer.status.version == 0
    assert_untouched(stub, db, loc, contact)


def test_a_non_keyword_after_stop_keeps_the_opt_out(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    inbound(stub, loc, contact, "STOP")
    for body in ("start over", "yes please", "I want to start again"):
        answer = inbound(stub, loc, contact, body)
        assert answer.action == NONE, body
        assert not answer.changed
        assert answer.sms_blocked
    assert db.changes(loc) == 1
    assert block_rows(db, loc, contact) == [STOP_BLOCK]


# --- other channels ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "other", NON_SMS_CHANNELS, ids=[pb.Channel.Name(c)[8:] for c in NON_SMS_CHANNELS]
)
def test_keywords_are_not_processed_on_other_channels(
    stub: Any, loc: str, contact: str, db: Database, other: int
) -> None:
    for body in ("STOP", "HELP", "START", "YES"):
        answer = inbound(stub, loc, contact, body, channel=other)
        assert answer.action == NONE, body
        assert answer.matched_keyword == ""
        assert not answer.changed
        assert "not processed" in answer.explanation
        assert answer.status.version == 0
    assert_untouched(stub, db, loc, contact)

    # Nor does START on another channel lift an SMS opt-out.
    inbound(stub, loc, contact, "STOP")
    answer = inbound(stub, loc, contact, "START", channel=other)
    assert answer.action == NONE
    assert not answer.changed
    assert db.changes(loc) == 1
    assert block_rows(db, loc, contact) == [STOP_BLOCK]


def test_an_unspecified_channel_is_invalid(stub: Any, loc: str, contact: str, db: Database) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        inbound(stub, loc, contact, "STOP", channel=pb.CHANNEL_UNSPECIFIED)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "channel" in bad_fields(caught.value)
    assert db.changes(loc) == 0


# --- a location's extra words ------------------------------------------------------------------


def test_extra_words_of_a_location(stub: Any, loc: str, db: Database) -> None:
    updated = update_settings(stub, loc, ["arret", " Alto ", "PARAR!"], ["comenzar"])
    assert list(updated.settings.extra_opt_out_words) == ["ALTO", "ARRET", "PARAR"]
    assert list(updated.settings.extra_opt_in_words) == ["COMENZAR"]
    read = get_settings(stub, loc)
    assert read.settings == updated.settings
    assert set(read.default_opt_out_words) == set(OPT_OUT_WORDS)
    assert set(read.default_opt_in_words) == set(OPT_IN_WORDS)
    assert set(read.help_words) == set(HELP_WORDS)
    for phrase in ("stop texting me", "remove me from your list", "do not text me"):
        assert phrase in read.revocation_phrases
    stored = db.fetch(
        "SELECT extra_opt_out_words, extra_opt_in_words FROM dnd_location_settings"
        " WHERE location_id = $1",
        loc,
    )
    assert [tuple(row) for row in stored] == [(["ALTO", "ARRET", "PARAR"], ["COMENZAR"])]

    for word in ("ARRET", "ALTO", "PARAR"):
        contact = new_id("contact")
        answer = inbound(stub, loc, contact, f" {word.lower()}! ")
        assert answer.action == OPTED_OUT, word
        assert answer.matched_keyword == word
        assert answer.changed
        assert block_rows(db, loc, contact) == [STOP_BLOCK]
        assert not check(stub, loc, contact).allowed

        back = inbound(stub, loc, contact, "Comenzar")
        assert back.action == OPTED_IN
        assert back.matched_keyword == "COMENZAR"
        assert back.changed
        assert block_rows(db, loc, contact) == []
        assert check(stub, loc, contact).allowed

    # The built-in words still apply.
    contact = new_id("contact")
    assert inbound(stub, loc, contact, "STOP").action == OPTED_OUT
    assert inbound(stub, loc, contact, "UNSTOP").action == OPTED_IN
    # Per contact: the opt-out, its lifting, and the two keyword consents the opt-in records.
    assert db.changes(loc) == 16


def test_extra_words_do_not_leak_to_other_locations(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    update_settings(stub, loc, ["BASTA"], ["COMENZAR"], revocation=True)
    other = new_id("loc")
    assert get_settings(stub, other).settings == pb.KeywordSettings()
    for body in ("BASTA", "comenzar", "please stop texting me"):
        answer = inbound(stub, other, contact, body)
        assert answer.action == NONE, body
        assert not answer.changed
    assert db.changes(other) == 0
    assert_untouched(stub, db, other, contact)
    # The same contact id in the configured location does opt out.
    assert inbound(stub, loc, contact, "BASTA").action == OPTED_OUT
    assert db.changes(loc) == 1


def test_updating_settings_replaces_them(stub: Any, loc: str, db: Database) -> None:
    update_settings(stub, loc, ["BASTA"])
    update_settings(stub, loc, ["FINI"])
    assert list(get_settings(stub, loc).settings.extra_opt_out_words) == ["FINI"]
    first, second = new_id("contact"), new_id("contact")
    assert inbound(stub, loc, first, "BASTA").action == NONE
    assert inbound(stub, loc, second, "FINI").action == OPTED_OUT
    assert db.changes(loc) == 1
    assert block_rows(db, loc, first) == []
    assert block_rows(db, loc, second) == [STOP_BLOCK]


def test_default_words_cannot_be_removed(stub: Any, loc: str, db: Database) -> None:
    # Empty settings, and settings naming a default again: the defaults still apply.
    for opt_out in ([], ["stop", "ARRET"]):
        answer = update_settings(stub, loc, opt_out, [])
        assert "STOP" not in answer.settings.extra_opt_out_words
        read = get_settings(stub, loc)
        assert set(read.default_opt_out_words) == set(OPT_OUT_WORDS)
        for word in OPT_OUT_WORDS:
            contact = new_id("contact")
            assert inbound(stub, loc, contact, word).action == OPTED_OUT, word
            assert block_rows(db, loc, contact) == [STOP_BLOCK]

    # A default opt-out word cannot be made an opt-in word (nor a help word an opt-out).
    before = get_settings(stub, loc).settings
    for opt_out, opt_in, field in (
        ([], ["STOP"], "extra_opt_in_words"),
        (["HELP"], [], "extra_opt_out_words"),
        (["start"], [], "extra_opt_out_words"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            update_settings(stub, loc, opt_out, opt_in)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert field in bad_fields(caught.value)
    assert get_settings(stub, loc).settings == before
    contact = new_id("contact")
    assert inbound(stub, loc, contact, "STOP").action == OPTED_OUT
    assert inbound(stub, loc, contact, "HELP").action == HELP


# --- revocation phrases ------------------------------------------------------------------------

PHRASE_MESSAGES = [
    "please stop texting me",
    "Remove me from your list.",
    "Do not text me!",
    "Who is this? Wrong number",
]


@pytest.mark.parametrize("body", PHRASE_MESSAGES)
def test_revocation_phrases_are_ignored_by_default(
    stub: Any, loc: str, contact: str, db: Database, body: str
) -> None:
    assert not get_settings(stub, loc).settings.detect_revocation_phrases
    answer = inbound(stub, loc, contact, body)
    assert answer.action == NONE
    assert not answer.changed
    assert_untouched(stub, db, loc, contact)


@pytest.mark.parametrize("body", PHRASE_MESSAGES)
def test_revocation_phrases_opt_out_when_detection_is_on(
    stub: Any, loc: str, contact: str, db: Database, body: str
) -> None:
    updated = update_settings(stub, loc, revocation=True)
    assert updated.settings.detect_revocation_phrases
    assert get_settings(stub, loc).settings.detect_revocation_phrases

    answer = inbound(stub, loc, contact, body)
    assert answer.action == OPTED_OUT
    assert answer.matched_keyword
    assert answer.matched_keyword.lower() in body.lower()
    assert answer.changed
    assert answer.sms_blocked
    [block] = answer.status.blocks
    assert block.evidence == body
    assert block_rows(db, loc, contact) == [STOP_BLOCK]
    assert change_rows(db, loc, contact) == [
        (True, "OUTBOUND", "SMS", "SMS_OPT_OUT_KEYWORD", "CONTACT", 1)
    ]
    assert not check(stub, loc, contact).allowed


def test_revocation_detection_still_needs_a_phrase(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    update_settings(stub, loc, revocation=True)
    for body in ("stop by tomorrow", "I will stop by the store", "text me later", "yes"):
        answer = inbound(stub, loc, contact, body)
        assert answer.action == NONE, body
    assert_untouched(stub, db, loc, contact)


def test_turning_revocation_detection_off_again(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    update_settings(stub, loc, revocation=True)
    update_settings(stub, loc, revocation=False)
    assert inbound(stub, loc, contact, "please stop texting me").action == NONE
    assert_untouched(stub, db, loc, contact)


# --- inbound DND and delivery ------------------------------------------------------------------


def test_keywords_are_honoured_while_inbound_dnd_is_on(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    set_dnd(stub, loc, contact, ENABLE, direction=IN, source=CONTACT)

    plain = inbound(stub, loc, contact, "hello there")
    assert plain.action == NONE
    assert not plain.deliver_to_inbox
    assert not plain.changed

    helped = inbound(stub, loc, contact, "HELP")
    assert helped.action == HELP
    assert not helped.deliver_to_inbox

    stop = inbound(stub, loc, contact, "STOP")
    assert stop.action == OPTED_OUT
    assert stop.changed
    assert not stop.deliver_to_inbox
    assert stop.status.version == 2
    assert stop.status.inbound == pb.DND_STATUS_ON
    assert block_rows(db, loc, contact) == [("INBOUND", "ALL", "MANUAL", "CONTACT"), STOP_BLOCK]
    assert not check(stub, loc, contact, SMS).allowed

    start = inbound(stub, loc, contact, "START")
    assert start.action == OPTED_IN
    assert start.changed
    assert not start.deliver_to_inbox
    # START lifts the SMS opt-out, never inbound DND (and records the keyword consents).
    assert start.status.inbound == pb.DND_STATUS_ON
    assert start.status.version == 5
    assert block_rows(db, loc, contact) == [("INBOUND", "ALL", "MANUAL", "CONTACT")]
    assert check(stub, loc, contact, SMS).allowed
    assert not check(stub, loc, contact, SMS, IN).allowed


def test_messages_are_delivered_once_inbound_dnd_is_off(stub: Any, loc: str, contact: str) -> None:
    set_dnd(stub, loc, contact, ENABLE, direction=IN, source=USER)
    assert not inbound(stub, loc, contact, "hi").deliver_to_inbox
    set_dnd(stub, loc, contact, DISABLE, direction=IN, source=USER)
    assert inbound(stub, loc, contact, "hi").deliver_to_inbox
    # Outbound DND does not stop delivery to the inbox.
    stop = inbound(stub, loc, contact, "STOP")
    assert stop.deliver_to_inbox
    assert inbound(stub, loc, contact, "are you there?").deliver_to_inbox


# --- the body ----------------------------------------------------------------------------------


def test_body_over_4096_characters_is_invalid(
    stub: Any, loc: str, contact: str, db: Database
) -> None:
    # A keyword padded with whitespace: one character too many is refused, changing nothing.
    with pytest.raises(grpc.RpcError) as caught:
        inbound(stub, loc, contact, "STOP" + " " * 4093)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(caught.value) == ["body"]
    assert_untouched(stub, db, loc, contact)

    with pytest.raises(grpc.RpcError) as caught:
        inbound(stub, loc, contact, "x" * 5000)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert db.changes(loc) == 0

    # Exactly 4096 characters, a WhatsApp message's longest, is fine.
    answer = inbound(stub, loc, contact, "STOP" + " " * 4092)
    assert answer.action == OPTED_OUT
    assert block_rows(db, loc, contact) == [STOP_BLOCK]


# --- the answer's version and cursor, and the history ------------------------------------------


def test_answers_carry_version_cursor_and_history_entries(
    stub: Any, loc: str, contact: str
) -> None:
    stop = inbound(stub, loc, contact, "Stop.")
    start = inbound(stub, loc, contact, "START")
    stop_again = inbound(stub, loc, contact, "end")
    # START records two keyword consents after lifting the opt-out; the second opt-out
    # revokes them after its block.
    assert [a.status.version for a in (stop, start, stop_again)] == [1, 4, 7]
    assert len({stop.cursor, start.cursor, stop_again.cursor}) == 3

    every = history(stub, loc, contact)
    assert [e.version for e in every] == [7, 6, 5, 4, 3, 2, 1]
    assert [e.cursor for e in every if e.version in (7, 4, 1)] == [
        stop_again.cursor,
        start.cursor,
        stop.cursor,
    ]
    consents = [e for e in every if e.kind == pb.CHANGE_KIND_CONSENT]
    assert [(e.version, e.enabled) for e in consents] == [
        (7, False),
        (6, False),
        (4, True),
        (3, True),
    ]
    entries = [e for e in every if e.kind == pb.CHANGE_KIND_BLOCK]
    assert [e.version for e in entries] == [5, 2, 1]
    assert [e.enabled for e in entries] == [True, False, True]
    assert all(e.reason == R.REASON_SMS_OPT_OUT_KEYWORD for e in entries)
    assert all(e.source == CONTACT for e in entries)
    assert [e.evidence for e in entries] == ["end", "START", "Stop."]
    assert "END" in entries[0].provider_detail
    assert "START" in entries[1].provider_detail
    assert "STOP" in entries[2].provider_detail


# --- the sender as providers write it ---------------------------------------------------------


@pytest.mark.parametrize(
    ("on", "sender", "number"),
    [
        (pb.CHANNEL_WHATSAPP, "447911123456", "+447911123456"),  # WhatsApp's wa_id: no "+"
        (pb.CHANNEL_WHATSAPP, "447911123456@s.whatsapp.net", "+447911123456"),  # a JID
        (pb.CHANNEL_RCS, "sip:+14155552671@ims.mnc260.mcc310.3gppnetwork.org", "+14155552671"),
        (SMS, "tel:+1-415-555-2671;phone-context=example.com", "+14155552671"),
    ],
)
def test_a_sender_as_providers_write_it_is_its_number(
    stub: Any, loc: str, contact: str, db: Database, on: int, sender: str, number: str
) -> None:
    answer = inbound(stub, loc, contact, "STOP", channel=on, from_address=sender)
    assert answer.action == OPTED_OUT
    rows = db.fetch("SELECT address FROM dnd_address_suppressions WHERE location_id = $1", loc)
    assert {r["address"] for r in rows} == {number}
    other = stub.CheckSend(factories.check(loc, "someone-else", on, address=number), timeout=10)
    assert not other.allowed and other.denial == pb.DENIAL_ADDRESS_SUPPRESSED


@pytest.mark.parametrize("sender", ["55555", "sip:alice@example.org", "abc", "+1 555"])
def test_a_stop_from_a_sender_that_is_no_number_opts_the_contact_out(
    stub: Any, loc: str, contact: str, db: Database, sender: str
) -> None:
    """The opt-out acts on the contact whatever the provider wrote as the sender (no number is
    suppressed, and the answer says so); anything else from such a sender is refused, and
    changes nothing."""
    for body in ("START", "HELP", "hello"):
        with pytest.raises(grpc.RpcError) as caught:
            inbound(stub, loc, contact, body, from_address=sender)
        assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(caught.value) == ["from_address"]
    assert_untouched(stub, db, loc, contact)
    answer = inbound(stub, loc, contact, "Stop", from_address=sender)
    assert answer.action == OPTED_OUT and answer.changed
    assert "no phone number" in answer.explanation and sender not in answer.explanation
    assert block_rows(db, loc, contact) == [STOP_BLOCK]
    assert (
        db.fetchval("SELECT count(*) FROM dnd_address_suppressions WHERE location_id = $1", loc)
        == 0
    )
    assert not check(stub, loc, contact).allowed
    # The START from it is still refused: only the opt-out acts.
    with pytest.raises(grpc.RpcError):
        inbound(stub, loc, contact, "START", from_address=sender)
    assert block_rows(db, loc, contact) == [STOP_BLOCK]
