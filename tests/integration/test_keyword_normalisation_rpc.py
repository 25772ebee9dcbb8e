"""Keywords as phones really send them, over real gRPC against a real server on real
PostgreSQL: UpdateKeywordSettings refusing opt-in words that read opt-outs by name, settings
stored before the rule (written straight into dnd_location_settings) never opting a STOPped
contact back in, and ProcessInboundMessage recognising the variants of
tests/unit/test_keyword_normalisation.py.

The look-alike letters in these strings are the point of the tests (hence the file-wide noqa):
Cyrillic and Greek ones, read as the Latin letters they look like, and enclosed letters.
"""

# ruff: noqa: RUF001

from __future__ import annotations

from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_server.domain.keywords import KeywordKind

from tests import factories
from tests.support import Database, ServerProcess, error_details, new_id
from tests.unit.test_keyword_normalisation import (
    EMOJI_LETTER_VARIANTS,
    HELP,
    NONE,
    NOT_KEYWORDS,
    OPT_IN,
    OPT_OUT,
    REVOCATIONS,
    VARIANTS,
    variant_ids,
)

# --- over gRPC: helpers --------------------------------------------------------------------------

TIMEOUT = 10
STOP_BLOCK = ("OUTBOUND", "SMS", "SMS_OPT_OUT_KEYWORD", "CONTACT")
ACTION = {
    OPT_OUT: pb.KEYWORD_ACTION_OPTED_OUT,
    OPT_IN: pb.KEYWORD_ACTION_OPTED_IN,
    HELP: pb.KEYWORD_ACTION_HELP,
    NONE: pb.KEYWORD_ACTION_NONE,
}


def inbound(stub: Any, loc: str, contact: str, body: str) -> pb.ProcessInboundMessageResponse:
    return stub.ProcessInboundMessage(factories.inbound(loc, contact, body), timeout=TIMEOUT)


def update(
    stub: Any, loc: str, outs: list[str], ins: list[str], detect: bool = False
) -> pb.UpdateKeywordSettingsResponse:
    request = factories.keyword_settings(loc, outs, ins, detect)
    return stub.UpdateKeywordSettings(request, timeout=TIMEOUT)


def block_rows(db: Database, loc: str, contact: str) -> list[tuple[Any, ...]]:
    rows = db.fetch(
        "SELECT direction, scope, reason, source FROM dnd_blocks"
        " WHERE location_id = $1 AND contact_id = $2 ORDER BY direction, scope, reason",
        loc,
        contact,
    )
    return [tuple(row) for row in rows]


def stored_row(db: Database, loc: str) -> list[tuple[Any, ...]]:
    rows = db.fetch(
        "SELECT extra_opt_out_words, extra_opt_in_words, detect_revocation_phrases"
        " FROM dnd_location_settings WHERE location_id = $1",
        loc,
    )
    return [tuple(row) for row in rows]


def store_directly(db: Database, loc: str, outs: list[str], ins: list[str], detect: bool) -> None:
    """Settings as written before today's rules: straight into the table, unvalidated."""
    db.execute(
        "INSERT INTO dnd_location_settings (location_id, extra_opt_out_words,"
        " extra_opt_in_words, detect_revocation_phrases) VALUES ($1, $2, $3, $4)",
        loc,
        outs,
        ins,
        detect,
    )


def sms_allowed(stub: Any, loc: str, contact: str) -> bool:
    request = factories.check(loc, contact, direction=factories.OUT)
    return bool(stub.CheckSend(request, timeout=TIMEOUT).allowed)


def logged_after(server: ServerProcess, loc: str) -> list[dict[str, Any]]:
    """The server's log lines up to its answer to a GetKeywordSettings of ``loc`` (waited for:
    the log is read in a thread), made after everything the test did before."""
    server.wait_log({"event": "rpc", "method": "GetKeywordSettings", "location_id": loc})
    return server.logs


# --- over gRPC: UpdateKeywordSettings refuses opt-in words that read opt-outs ------------------


def test_update_refuses_opt_in_words_that_read_opt_outs_naming_each(
    stub: Any, db: Database, loc: str
) -> None:
    update(stub, loc, ["ARRET"], ["COMENZAR"])
    before = stored_row(db, loc)
    offending = ["STOP TEXTING ME", "OPT-OUT", "ST\u200bOP", "ＳＴＯＰ", "Remove me", "help me"]
    with pytest.raises(grpc.RpcError) as caught:
        update(stub, loc, ["ARRET"], [*offending, "COMENZAR", "SUBSCRIBE"], detect=True)
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    details = error_details(error)
    violations = list(details["BadRequest"].field_violations)
    assert len(violations) == len(offending)
    assert {v.field for v in violations} == {"extra_opt_in_words"}
    for raw in offending:
        named = [v for v in violations if repr(raw) in v.description]
        assert len(named) == 1, (raw, [v.description for v in violations])
    assert not any("COMENZAR" in v.description or "SUBSCRIBE" in v.description for v in violations)
    assert details["ErrorInfo"].reason == "INVALID_ARGUMENT"
    assert "extra_opt_in_words" in details["ErrorInfo"].metadata["fields"]
    assert "STOP TEXTING ME" in error.details()
    # Nothing changed.
    assert stored_row(db, loc) == before
    assert list(
        stub.GetKeywordSettings(
            pb.GetKeywordSettingsRequest(location_id=loc)
        ).settings.extra_opt_in_words
    ) == ["COMENZAR"]


def test_the_issue_example_a_stopped_contact_stays_opted_out(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        update(stub, loc, [], ["STOP TEXTING ME", "OPT-OUT"], detect=True)
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert stored_row(db, loc) == []
    update(stub, loc, [], [], detect=True)
    assert inbound(stub, loc, contact, "STOP").changed
    for body in ("Stop texting me", "STOP TEXTING ME", "OPT-OUT", "opt out"):
        answer = inbound(stub, loc, contact, body)
        assert answer.action == pb.KEYWORD_ACTION_OPTED_OUT, body
        assert not answer.changed and answer.sms_blocked
    assert block_rows(db, loc, contact) == [STOP_BLOCK]
    assert db.changes(loc) == 1
    assert not sms_allowed(stub, loc, contact)


# --- over gRPC: settings stored before the rule --------------------------------------------------

# Opt-in words an older server accepted, each of which read an opt-out as an opt-in there.
STORED_OPT_IN = ["STOP TEXTING ME", "OPT-OUT", "ST\u200bOP", "S TOP", "HELP ME", "ALTO", "\u200b"]
# Messages a contact who texted STOP may send next: none may opt them back in.
AFTER_STOP = [
    "Stop texting me",
    "STOP TEXTING ME!",
    "OPT-OUT",
    "opt-out",
    "ST\u200bOP",
    "s top",
    "help me",
    "alto",
    "\u200b",
    "ＳＴＯＰ",
    "STOP 🛑",
]


@pytest.mark.parametrize("detect", [True, False], ids=["revocation-on", "revocation-off"])
def test_stored_conflicting_words_never_opt_a_stopped_contact_back_in(
    stub: Any, db: Database, server: ServerProcess, loc: str, detect: bool
) -> None:
    store_directly(db, loc, ["ALTO"], [*STORED_OPT_IN, "COMENZAR"], detect)
    contact = new_id("contact")
    stop = inbound(stub, loc, contact, "STOP")
    assert stop.action == pb.KEYWORD_ACTION_OPTED_OUT and stop.changed
    for body in AFTER_STOP:
        answer = inbound(stub, loc, contact, body)
        assert answer.action != pb.KEYWORD_ACTION_OPTED_IN, ascii(body)
        assert not answer.changed, ascii(body)
        assert answer.sms_blocked, ascii(body)
    assert block_rows(db, loc, contact) == [STOP_BLOCK]
    assert db.changes(loc) == 1
    assert not sms_allowed(stub, loc, contact)

    # The location's own words still act: ALTO opts out, COMENZAR back in.
    other = new_id("contact")
    assert inbound(stub, loc, other, "Alto!").action == pb.KEYWORD_ACTION_OPTED_OUT
    back = inbound(stub, loc, contact, "comenzar")
    assert back.action == pb.KEYWORD_ACTION_OPTED_IN and back.changed
    assert block_rows(db, loc, contact) == []

    # Read back: the settings as they act; the row is left as it was.
    read = stub.GetKeywordSettings(pb.GetKeywordSettingsRequest(location_id=loc), timeout=TIMEOUT)
    assert list(read.settings.extra_opt_out_words) == ["ALTO"]
    assert list(read.settings.extra_opt_in_words) == ["COMENZAR"]
    assert read.settings.detect_revocation_phrases is detect
    [row] = stored_row(db, loc)
    assert sorted(row[1]) == sorted([*STORED_OPT_IN, "COMENZAR"])

    # The ignored words are logged once, however often the settings were read.
    lines = logged_after(server, loc)
    ignored = [
        line
        for line in lines
        if line.get("event") == "keyword_words_ignored" and line.get("location_id") == loc
    ]
    assert len(ignored) == 1, ignored
    assert ignored[0]["level"] == "warning"
    words = {(w["field"], w["word"]) for w in ignored[0]["words"]}
    assert words == {("extra_opt_in_words", word) for word in STORED_OPT_IN}


def test_settings_without_conflicts_log_nothing(
    stub: Any, db: Database, server: ServerProcess, loc: str
) -> None:
    store_directly(db, loc, ["ARRET"], ["COMENZAR"], False)
    assert inbound(stub, loc, new_id("contact"), "arret").action == pb.KEYWORD_ACTION_OPTED_OUT
    stub.GetKeywordSettings(pb.GetKeywordSettingsRequest(location_id=loc), timeout=TIMEOUT)
    lines = logged_after(server, loc)
    assert not [
        line
        for line in lines
        if line.get("event") == "keyword_words_ignored" and line.get("location_id") == loc
    ]


# --- over gRPC: ProcessInboundMessage recognises the variants --------------------------------

OPT_OUT_VARIANTS = [v for v in VARIANTS + EMOJI_LETTER_VARIANTS if v[1] is OPT_OUT]
OPT_IN_VARIANTS = [v for v in VARIANTS + EMOJI_LETTER_VARIANTS if v[1] is OPT_IN]
HELP_VARIANTS = [v for v in VARIANTS + EMOJI_LETTER_VARIANTS if v[1] is HELP]


@pytest.mark.parametrize(
    ("body", "kind", "word"), OPT_OUT_VARIANTS, ids=variant_ids(OPT_OUT_VARIANTS)
)
def test_inbound_opt_out_variant(
    stub: Any, db: Database, loc: str, contact: str, body: str, kind: KeywordKind, word: str
) -> None:
    answer = inbound(stub, loc, contact, body)
    assert answer.action == pb.KEYWORD_ACTION_OPTED_OUT
    assert answer.matched_keyword == word
    assert answer.changed and answer.sms_blocked
    assert block_rows(db, loc, contact) == [STOP_BLOCK]
    [block] = answer.status.blocks
    assert block.evidence == body
    assert not sms_allowed(stub, loc, contact)


@pytest.mark.parametrize(
    ("body", "kind", "word"), OPT_IN_VARIANTS, ids=variant_ids(OPT_IN_VARIANTS)
)
def test_inbound_opt_in_variant_after_stop(
    stub: Any, db: Database, loc: str, contact: str, body: str, kind: KeywordKind, word: str
) -> None:
    assert inbound(stub, loc, contact, "STOP").changed
    answer = inbound(stub, loc, contact, body)
    assert answer.action == pb.KEYWORD_ACTION_OPTED_IN
    assert answer.matched_keyword == word
    assert answer.changed and not answer.sms_blocked
    assert block_rows(db, loc, contact) == []
    assert sms_allowed(stub, loc, contact)


@pytest.mark.parametrize(("body", "kind", "word"), HELP_VARIANTS, ids=variant_ids(HELP_VARIANTS))
def test_inbound_help_variant(
    stub: Any, db: Database, loc: str, contact: str, body: str, kind: KeywordKind, word: str
) -> None:
    answer = inbound(stub, loc, contact, body)
    assert answer.action == pb.KEYWORD_ACTION_HELP
    assert answer.matched_keyword == word
    assert not answer.changed
    assert db.changes(loc) == 0


@pytest.mark.parametrize("body", NOT_KEYWORDS, ids=variant_ids(NOT_KEYWORDS))
def test_inbound_non_keyword_changes_nothing(
    stub: Any, db: Database, loc: str, contact: str, body: str
) -> None:
    update(stub, loc, [], [], detect=True)
    answer = inbound(stub, loc, contact, body)
    assert answer.action == pb.KEYWORD_ACTION_NONE
    assert answer.matched_keyword == ""
    assert not answer.changed
    assert db.changes(loc) == 0
    assert db.blocks(loc) == 0
    assert sms_allowed(stub, loc, contact)


@pytest.mark.parametrize(("body", "phrase"), REVOCATIONS, ids=variant_ids(REVOCATIONS))
def test_inbound_revocation_variant(
    stub: Any, db: Database, loc: str, contact: str, body: str, phrase: str
) -> None:
    off = inbound(stub, loc, contact, body)
    assert off.action == pb.KEYWORD_ACTION_NONE and not off.changed
    assert db.changes(loc) == 0
    update(stub, loc, [], [], detect=True)
    answer = inbound(stub, loc, contact, body)
    assert answer.action == pb.KEYWORD_ACTION_OPTED_OUT
    assert answer.matched_keyword == phrase
    assert answer.changed
    assert block_rows(db, loc, contact) == [STOP_BLOCK]


def test_a_locations_accented_word_matches_unaccented_texts(
    stub: Any, db: Database, loc: str
) -> None:
    answer = update(stub, loc, ["Terminé"], ["Sí"])
    assert list(answer.settings.extra_opt_out_words) == ["TERMINÉ"]
    assert list(answer.settings.extra_opt_in_words) == ["SÍ"]
    contact = new_id("contact")
    out = inbound(stub, loc, contact, "termine 🛑")
    assert out.action == pb.KEYWORD_ACTION_OPTED_OUT and out.matched_keyword == "TERMINÉ"
    back = inbound(stub, loc, contact, "ＳＩ")
    assert back.action == pb.KEYWORD_ACTION_OPTED_IN and back.matched_keyword == "SÍ"
    assert block_rows(db, loc, contact) == []


# --- over gRPC: look-alike letters ------------------------------------------------------------


def test_a_cyrillic_look_alike_stop_blocks_sms_and_keeps_its_evidence(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    assert sms_allowed(stub, loc, contact)
    answer = inbound(stub, loc, contact, "ЅТОР")
    assert answer.action == pb.KEYWORD_ACTION_OPTED_OUT
    assert answer.matched_keyword == "STOP"
    assert answer.changed and answer.sms_blocked
    # The evidence is the text as sent, Cyrillic letters and all.
    [block] = answer.status.blocks
    assert block.evidence == "ЅТОР"
    assert block_rows(db, loc, contact) == [STOP_BLOCK]
    assert not sms_allowed(stub, loc, contact)
    # A Cyrillic-lettered START opts back in; a Cyrillic-lettered STOP again opts out.
    back = inbound(stub, loc, contact, "ЅТАRТ")
    assert back.action == pb.KEYWORD_ACTION_OPTED_IN and back.changed
    assert sms_allowed(stub, loc, contact)
    again = inbound(stub, loc, contact, "stoР 🛑")
    assert again.action == pb.KEYWORD_ACTION_OPTED_OUT and again.changed
    assert not sms_allowed(stub, loc, contact)


# Opt-in words that are opt-out wording in look-alike or enclosed letters.
LOOK_ALIKE_OPT_IN = ["ЅТОР", "STOР", "🅢🅣🅞🅟", "S🇹OP", "Ѕtop tеxting mе"]


def test_update_refuses_look_alike_opt_in_words_naming_each(
    stub: Any, db: Database, loc: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        update(stub, loc, [], [*LOOK_ALIKE_OPT_IN, "COMENZAR"], detect=True)
    error = caught.value
    assert error.code() is grpc.StatusCode.INVALID_ARGUMENT, error.details()
    violations = list(error_details(error)["BadRequest"].field_violations)
    assert {v.field for v in violations} == {"extra_opt_in_words"}
    assert len(violations) == len(LOOK_ALIKE_OPT_IN)
    for raw in LOOK_ALIKE_OPT_IN:
        [named] = [v for v in violations if repr(raw) in v.description]
        assert "overlaps" in named.description
    assert stored_row(db, loc) == []
    # An opt-out word that reads as an opt-in word is refused too.
    with pytest.raises(grpc.RpcError) as caught:
        update(stub, loc, ["ЅТАRТ"], [])
    assert caught.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    [violation] = error_details(caught.value)["BadRequest"].field_violations
    assert violation.field == "extra_opt_out_words" and "'ЅТАRТ'" in violation.description
    assert stored_row(db, loc) == []


def test_stored_look_alike_opt_in_words_never_opt_a_stopped_contact_back_in(
    stub: Any, db: Database, loc: str, contact: str
) -> None:
    store_directly(db, loc, [], [*LOOK_ALIKE_OPT_IN, "COMENZAR"], True)
    assert inbound(stub, loc, contact, "STOP").changed
    for body in [*LOOK_ALIKE_OPT_IN, "ѕтор", "ЅТОР!"]:
        answer = inbound(stub, loc, contact, body)
        assert answer.action == pb.KEYWORD_ACTION_OPTED_OUT, ascii(body)
        assert not answer.changed and answer.sms_blocked, ascii(body)
    assert block_rows(db, loc, contact) == [STOP_BLOCK]
    assert not sms_allowed(stub, loc, contact)
    read = stub.GetKeywordSettings(pb.GetKeywordSettingsRequest(location_id=loc), timeout=TIMEOUT)
    assert list(read.settings.extra_opt_in_words) == ["COMENZAR"]
    back = inbound(stub, loc, contact, "comenzar")
    assert back.action == pb.KEYWORD_ACTION_OPTED_IN and back.changed


def test_a_locations_russian_word_is_stored_as_written_and_matches_look_alikes(
    stub: Any, db: Database, loc: str
) -> None:
    answer = update(stub, loc, ["стоп"], [])
    assert list(answer.settings.extra_opt_out_words) == ["СТОП"]
    [row] = stored_row(db, loc)
    assert list(row[0]) == ["СТОП"]
    for body in ("Стоп!", "CTOП"):
        contact = new_id("contact")
        out = inbound(stub, loc, contact, body)
        assert out.action == pb.KEYWORD_ACTION_OPTED_OUT, ascii(body)
        assert out.matched_keyword == "СТОП"
        assert out.status.blocks[0].evidence == body
        assert not sms_allowed(stub, loc, contact)
