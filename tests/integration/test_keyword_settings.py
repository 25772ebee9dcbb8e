"""Keyword settings over real gRPC: defaults, replacement, normalisation, conflicts with the
built-in words, per-location scope, and their effect on ProcessInboundMessage."""

from __future__ import annotations

from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb

from tests import factories
from tests.support import Database, bad_fields, error_details, new_id

TIMEOUT = 10

# The carrier (CTIA) keywords every location must honour.
CORE_OPT_OUT = {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"}
CORE_OPT_IN = {"START", "UNSTOP"}
CORE_HELP = {"HELP", "INFO"}


def get(stub: Any, loc: str) -> pb.GetKeywordSettingsResponse:
    return stub.GetKeywordSettings(pb.GetKeywordSettingsRequest(location_id=loc), timeout=TIMEOUT)


def update(
    stub: Any,
    loc: str,
    outs: list[str] | None = None,
    ins: list[str] | None = None,
    detect: bool = False,
) -> pb.UpdateKeywordSettingsResponse:
    request = factories.keyword_settings(loc, outs or [], ins or [], detect)
    return stub.UpdateKeywordSettings(request, timeout=TIMEOUT)


def text(stub: Any, loc: str, body: str, contact: str = "") -> pb.ProcessInboundMessageResponse:
    request = factories.inbound(loc, contact or new_id("contact"), body)
    return stub.ProcessInboundMessage(request, timeout=TIMEOUT)


def stored(db: Database, loc: str) -> Any:
    return db.fetch(
        "SELECT extra_opt_out_words, extra_opt_in_words, detect_revocation_phrases "
        "FROM dnd_location_settings WHERE location_id = $1",
        loc,
    )


def expect_invalid(stub: Any, request: Any, *fields: str, call: str = "") -> grpc.RpcError:
    method = getattr(stub, call or type(request).__name__.removesuffix("Request"))
    with pytest.raises(grpc.RpcError) as caught:
        method(request, timeout=TIMEOUT)
    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
    named = bad_fields(error)
    info = error_details(error)["ErrorInfo"]
    assert info.reason == "INVALID_ARGUMENT"
    for field in fields:
        assert field in named, f"{field} not in {named}"
        assert field in error.details()
        assert field in info.metadata["fields"].split(",")
    return error


# --- defaults --------------------------------------------------------------------------------


def test_defaults_of_a_location_never_configured(stub: Any, db: Database, loc: str) -> None:
    answer = get(stub, loc)
    assert list(answer.settings.extra_opt_out_words) == []
    assert list(answer.settings.extra_opt_in_words) == []
    assert answer.settings.detect_revocation_phrases is False
    outs, ins, helps = (
        set(answer.default_opt_out_words),
        set(answer.default_opt_in_words),
        set(answer.help_words),
    )
    assert outs >= CORE_OPT_OUT
    assert ins >= CORE_OPT_IN
    assert helps >= CORE_HELP
    assert not (outs & ins) and not (outs & helps) and not (ins & helps)
    for words in (answer.default_opt_out_words, answer.default_opt_in_words, answer.help_words):
        assert len(set(words)) == len(words)
        assert all(w == w.strip().upper() and w for w in words)
    phrases = list(answer.revocation_phrases)
    assert "stop texting me" in phrases
    assert len(set(phrases)) == len(phrases) >= 5
    # Reading changes nothing.
    assert stored(db, loc) == []


def test_default_words_do_what_they_say(stub: Any, loc: str) -> None:
    answer = get(stub, loc)
    for word in answer.default_opt_out_words:
        reply = text(stub, loc, word.lower())
        assert reply.action == pb.KEYWORD_ACTION_OPTED_OUT, word
        assert reply.matched_keyword == word
        assert reply.changed
    for word in answer.help_words:
        reply = text(stub, loc, f" {word}? ")
        assert reply.action == pb.KEYWORD_ACTION_HELP, word
        assert not reply.changed
    for word in answer.default_opt_in_words:
        contact = new_id("contact")
        text(stub, loc, "STOP", contact)
        reply = text(stub, loc, word.capitalize(), contact)
        assert reply.action == pb.KEYWORD_ACTION_OPTED_IN, word
        assert reply.changed and not reply.sms_blocked


def test_revocation_phrases_are_off_by_default_and_listed_phrases_work_when_on(
    stub: Any, db: Database, loc: str
) -> None:
    phrases = list(get(stub, loc).revocation_phrases)
    off = text(stub, loc, "Please stop texting me, thanks")
    assert off.action == pb.KEYWORD_ACTION_NONE and not off.changed
    assert db.changes(loc) == 0
    answer = update(stub, loc, detect=True)
    assert answer.settings.detect_revocation_phrases is True
    for phrase in phrases:
        reply = text(stub, loc, f"Hi. {phrase.capitalize()}, thanks!")
        assert reply.action == pb.KEYWORD_ACTION_OPTED_OUT, phrase
        assert reply.matched_keyword == phrase
        assert reply.changed
    assert db.changes(loc) == len(phrases)
    # Whole words only.
    assert text(stub, loc, "Nonstop texting mentors").action == pb.KEYWORD_ACTION_NONE


# --- update ----------------------------------------------------------------------------------


def test_update_replaces_settings_and_words_are_normalised(
    stub: Any, db: Database, loc: str
) -> None:
    answer = update(
        stub,
        loc,
        outs=[" arret! ", "Alto.", "parar", "PARAR", "arrêt", "  no   more "],
        ins=["go on!", "Si"],
        detect=True,
    )
    expected_outs = ["ALTO", "ARRET", "ARRÊT", "NO MORE", "PARAR"]
    assert list(answer.settings.extra_opt_out_words) == expected_outs
    assert list(answer.settings.extra_opt_in_words) == ["GO ON", "SI"]
    assert answer.settings.detect_revocation_phrases is True
    read = get(stub, loc)
    assert read.settings == answer.settings
    [row] = stored(db, loc)
    assert sorted(row["extra_opt_out_words"]) == expected_outs
    assert sorted(row["extra_opt_in_words"]) == ["GO ON", "SI"]
    assert row["detect_revocation_phrases"] is True

    # The extra words act on inbound SMS, matched like the built-in ones.
    contact = new_id("contact")
    out = text(stub, loc, "Arrêt !", contact)
    assert out.action == pb.KEYWORD_ACTION_OPTED_OUT and out.matched_keyword == "ARRÊT"
    assert out.changed and out.sms_blocked
    back = text(stub, loc, "go   ON", contact)
    assert back.action == pb.KEYWORD_ACTION_OPTED_IN and back.matched_keyword == "GO ON"
    assert back.changed and not back.sms_blocked
    assert text(stub, loc, "no more.").action == pb.KEYWORD_ACTION_OPTED_OUT

    # A second update replaces everything; an empty one goes back to the defaults.
    replaced = update(stub, loc, outs=["basta"])
    assert list(replaced.settings.extra_opt_out_words) == ["BASTA"]
    assert list(replaced.settings.extra_opt_in_words) == []
    assert replaced.settings.detect_revocation_phrases is False
    assert get(stub, loc).settings == replaced.settings
    assert text(stub, loc, "no more").action == pb.KEYWORD_ACTION_NONE
    assert text(stub, loc, "stop texting me").action == pb.KEYWORD_ACTION_NONE
    assert text(stub, loc, "Basta!").action == pb.KEYWORD_ACTION_OPTED_OUT
    cleared = stub.UpdateKeywordSettings(
        pb.UpdateKeywordSettingsRequest(location_id=loc), timeout=TIMEOUT
    )
    assert cleared.settings == pb.KeywordSettings()
    assert get(stub, loc).settings == pb.KeywordSettings()
    assert text(stub, loc, "BASTA").action == pb.KEYWORD_ACTION_NONE
    assert len(stored(db, loc)) == 1


def test_defaults_still_apply_with_extra_words(stub: Any, loc: str) -> None:
    update(stub, loc, outs=["ALTO"], ins=["SI"])
    assert text(stub, loc, "stop").action == pb.KEYWORD_ACTION_OPTED_OUT
    assert text(stub, loc, "help").action == pb.KEYWORD_ACTION_HELP
    read = get(stub, loc)
    assert set(read.default_opt_out_words) >= CORE_OPT_OUT
    assert "ALTO" not in read.default_opt_out_words


def test_settings_are_per_location(stub: Any, db: Database) -> None:
    loc_a, loc_b = new_id("loc"), new_id("loc")
    update(stub, loc_a, outs=["FINI"], detect=True)
    assert get(stub, loc_b).settings == pb.KeywordSettings()
    assert text(stub, loc_b, "fini").action == pb.KEYWORD_ACTION_NONE
    assert text(stub, loc_b, "please stop texting me").action == pb.KEYWORD_ACTION_NONE
    assert db.changes(loc_b) == 0
    assert text(stub, loc_a, "fini").action == pb.KEYWORD_ACTION_OPTED_OUT
    update(stub, loc_b, outs=["ALTO"])
    assert list(get(stub, loc_a).settings.extra_opt_out_words) == ["FINI"]
    assert get(stub, loc_a).settings.detect_revocation_phrases is True
    assert list(get(stub, loc_b).settings.extra_opt_out_words) == ["ALTO"]


# --- refused updates -------------------------------------------------------------------------

CONFLICTS = {
    "opt-out-is-default-opt-in": ({"outs": ["START"]}, "extra_opt_out_words"),
    "opt-out-is-default-opt-in-lower": ({"outs": ["unstop!"]}, "extra_opt_out_words"),
    "opt-out-is-conditional-opt-in": ({"outs": ["yes"]}, "extra_opt_out_words"),
    "opt-out-is-help": ({"outs": ["HELP"]}, "extra_opt_out_words"),
    "opt-out-is-info": ({"outs": [" info. "]}, "extra_opt_out_words"),
    "opt-in-is-default-opt-out": ({"ins": ["STOP"]}, "extra_opt_in_words"),
    "opt-in-is-default-opt-out-lower": ({"ins": ["cancel."]}, "extra_opt_in_words"),
    "opt-in-is-help": ({"ins": ["Help"]}, "extra_opt_in_words"),
    "word-in-both-lists": ({"outs": ["ALTO"], "ins": ["alto"]}, "extra_opt_out_words"),
    "empty-word": ({"outs": [""]}, "extra_opt_out_words"),
    "punctuation-only": ({"ins": ["?!."]}, "extra_opt_in_words"),
    "too-long": ({"outs": ["W" * 33]}, "extra_opt_out_words"),
    "control-character": ({"outs": ["AR\x01RET"]}, "extra_opt_out_words"),
    "too-many": ({"outs": [f"WORD{i}" for i in range(51)]}, "extra_opt_out_words"),
}


@pytest.mark.parametrize(("kwargs", "field"), list(CONFLICTS.values()), ids=list(CONFLICTS))
def test_unusable_words_are_refused_and_change_nothing(
    stub: Any, db: Database, loc: str, kwargs: dict[str, Any], field: str
) -> None:
    update(stub, loc, outs=["ARRET"], ins=["SI"], detect=True)
    before = stored(db, loc)
    settings = pb.KeywordSettings(
        extra_opt_out_words=kwargs.get("outs", []),
        extra_opt_in_words=kwargs.get("ins", []),
    )
    expect_invalid(stub, pb.UpdateKeywordSettingsRequest(location_id=loc, settings=settings), field)
    assert stored(db, loc) == before
    read = get(stub, loc).settings
    assert list(read.extra_opt_out_words) == ["ARRET"]
    assert read.detect_revocation_phrases is True
    # Refused on a location never configured: no row is created.
    other = new_id("loc")
    expect_invalid(
        stub, pb.UpdateKeywordSettingsRequest(location_id=other, settings=settings), field
    )
    assert stored(db, other) == []


def test_every_conflict_is_reported_at_once(stub: Any, loc: str) -> None:
    settings = pb.KeywordSettings(
        extra_opt_out_words=["START", "HELP"], extra_opt_in_words=["STOP"]
    )
    error = expect_invalid(
        stub,
        pb.UpdateKeywordSettingsRequest(location_id=loc, settings=settings),
        "extra_opt_out_words",
        "extra_opt_in_words",
    )
    for word in ("START", "HELP", "STOP"):
        assert word in error.details()


def test_limits_are_accepted(stub: Any, loc: str) -> None:
    words = [f"WORD{i}" for i in range(50)]
    answer = update(stub, loc, outs=words, ins=["I" * 32])
    assert sorted(answer.settings.extra_opt_out_words) == sorted(words)
    assert list(answer.settings.extra_opt_in_words) == ["I" * 32]


BAD_LOCATIONS = {"empty": "", "129": "x" * 129, "nul": "l\x00c", "newline": "l\nc", "del": "l\x7f"}


@pytest.mark.parametrize("value", list(BAD_LOCATIONS.values()), ids=list(BAD_LOCATIONS))
def test_bad_location_is_refused(stub: Any, db: Database, value: str) -> None:
    count = db.fetchval("SELECT count(*) FROM dnd_location_settings")
    expect_invalid(stub, pb.GetKeywordSettingsRequest(location_id=value), "location_id")
    request = pb.UpdateKeywordSettingsRequest(
        location_id=value, settings=pb.KeywordSettings(extra_opt_out_words=["ALTO"])
    )
    expect_invalid(stub, request, "location_id")
    assert db.fetchval("SELECT count(*) FROM dnd_location_settings") == count


def test_location_of_128_characters_is_accepted(stub: Any, db: Database) -> None:
    loc = new_id("loc").ljust(128, "é")
    assert len(loc) == 128
    update(stub, loc, outs=["ALTO"])
    assert list(get(stub, loc).settings.extra_opt_out_words) == ["ALTO"]
    assert len(stored(db, loc)) == 1
