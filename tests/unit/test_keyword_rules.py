"""Pure unit tests of keyword classification and the provider-event tables: no server, no
database.

Every expectation is written out here from the spec (the issue text and docs/api.md), not read
from the server's own constants, so a word missing from a set or a wrong table entry shows up as
a failing test.
"""

from __future__ import annotations

import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.keywords import (
    HELP_WORDS,
    OPT_IN_WORDS,
    OPT_OUT_WORDS,
    REVOCATION_PHRASES,
    Classification,
    KeywordKind,
    KeywordSettings,
    classify,
    normalize_keyword,
    validate_extra_words,
)
from dnd_server.domain.model import Reason, Source
from dnd_server.domain.provider_events import (
    ADDRESS_SUPPRESSING_REASONS,
    EMAIL_EVENTS,
    SMS_ERROR_CODES,
    EmailEvent,
)
from dnd_server.service import email_event_effect, sms_failure_effect

OPT_OUT = KeywordKind.OPT_OUT
OPT_IN = KeywordKind.OPT_IN
HELP = KeywordKind.HELP
NONE = KeywordKind.NONE

# The spec's words, written out.
SPEC_OPT_OUT = [
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
SPEC_OPT_IN = ["START", "YES", "UNSTOP"]
SPEC_HELP = ["HELP", "INFO"]

# The revocation phrases docs/api.md lists.
SPEC_PHRASES = [
    "stop texting me",
    "stop texting",
    "stop messaging me",
    "stop sending me",
    "stop contacting me",
    "do not text me",
    "dont text me",
    "don't text me",
    "do not message me",
    "do not contact me",
    "don't contact me",
    "remove me from your list",
    "remove me from this list",
    "remove me from your contacts",
    "take me off your list",
    "take me off this list",
    "unsubscribe me",
    "opt me out",
    "no more texts",
    "no more messages",
    "leave me alone",
    "wrong number",
]

REVOCATION_ON = KeywordSettings(detect_revocation_phrases=True)


def spellings(word: str) -> list[str]:
    """Ways a contact may type ``word`` that the spec says still match it."""
    return [
        word,
        word.lower(),
        word.title(),
        f"  {word}. ",
        f"{word.lower()}!",
        f"\n\t{word.capitalize()}?!\n",
        f"{word} …",
        f"{word.lower()}-",
        f"{word}!!!   ",
    ]


# --- the word sets ---------------------------------------------------------------------------


def test_default_word_sets_are_the_specs() -> None:
    assert set(OPT_OUT_WORDS) == set(SPEC_OPT_OUT)
    assert set(OPT_IN_WORDS) == set(SPEC_OPT_IN)
    assert set(HELP_WORDS) == set(SPEC_HELP)
    assert not (OPT_OUT_WORDS & OPT_IN_WORDS)
    assert not (OPT_OUT_WORDS & HELP_WORDS)
    assert not (OPT_IN_WORDS & HELP_WORDS)


def test_revocation_phrases_are_the_readmes() -> None:
    assert list(REVOCATION_PHRASES) == SPEC_PHRASES


# --- normalize_keyword -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Stop", "STOP"),
        (" STOP. ", "STOP"),
        ("stop!", "STOP"),
        ("stop?!.", "STOP"),
        ("STOP . ! ", "STOP"),
        ("Stop…", "STOP"),
        ("\u00a0stop\u00a0", "STOP"),
        ("\r\nStop\r\n", "STOP"),
        ("opt out", "OPT OUT"),
        ("Opt   Out!", "OPT OUT"),
        ("opt\tout", "OPT OUT"),
        ("stop by tomorrow", "STOP BY TOMORROW"),
        ("", ""),
        ("   ", ""),
        ("!!!", ""),
        ("arrêt", "ARRÊT"),
    ],
)
def test_normalize_keyword(raw: str, expected: str) -> None:
    assert normalize_keyword(raw) == expected


# --- classify: the default words --------------------------------------------------------------


@pytest.mark.parametrize("word", SPEC_OPT_OUT)
def test_classify_every_opt_out_word_in_every_spelling(word: str) -> None:
    for body in spellings(word):
        assert classify(body) == Classification(OPT_OUT, word), repr(body)
        assert not classify(body).conditional


@pytest.mark.parametrize("word", SPEC_OPT_IN)
def test_classify_every_opt_in_word_in_every_spelling(word: str) -> None:
    for body in spellings(word):
        assert classify(body) == Classification(OPT_IN, word), repr(body)
        # YES acts only while the contact has SMS DND; START and UNSTOP always.
        assert classify(body).conditional is (word == "YES")


@pytest.mark.parametrize("word", SPEC_HELP)
def test_classify_every_help_word_in_every_spelling(word: str) -> None:
    for body in spellings(word):
        assert classify(body) == Classification(HELP, word), repr(body)


def test_opt_out_with_inner_whitespace_runs() -> None:
    for body in ("opt  out", "OPT\tOUT", " Opt \n Out. "):
        assert classify(body) == Classification(OPT_OUT, "OPT OUT"), repr(body)


NOT_KEYWORDS = [
    "stop by tomorrow",
    "Please stop",
    "stop stopping",
    "stop it",
    "stopp",
    "S T O P",
    "S.T.O.P",
    "unstoppable",
    "nonstop",
    "opt outt",
    "yes please",
    "Yes!! see you at 5",
    "start over",
    "help me",
    "more info please",
    "the end",
    "cancel my 3pm appointment",
    "quit it",
    "",
    "    ",
    "?",
    "Can you stop texting me",
    "please stop texting me",
    "remove me from your list",
]


@pytest.mark.parametrize("body", NOT_KEYWORDS)
def test_classify_messages_that_are_not_keywords(body: str) -> None:
    assert classify(body) == Classification(NONE, "")
    assert classify(body).matched == ""


# --- classify: a location's extra words -------------------------------------------------------

EXTRA = KeywordSettings(
    extra_opt_out_words=frozenset({"ARRET", "ALTO", "PARAR"}),
    extra_opt_in_words=frozenset({"COMENZAR"}),
)


def test_classify_extra_words_with_the_default_spelling_rules() -> None:
    for word in ("ARRET", "ALTO", "PARAR"):
        for body in spellings(word):
            assert classify(body, EXTRA) == Classification(OPT_OUT, word), repr(body)
    for body in spellings("COMENZAR"):
        assert classify(body, EXTRA) == Classification(OPT_IN, "COMENZAR"), repr(body)
        assert not classify(body, EXTRA).conditional


def test_extra_words_add_to_the_defaults() -> None:
    for word in SPEC_OPT_OUT:
        assert classify(word.lower(), EXTRA).kind is OPT_OUT
    for word in SPEC_OPT_IN:
        assert classify(word.lower(), EXTRA).kind is OPT_IN
    for word in SPEC_HELP:
        assert classify(word.lower(), EXTRA).kind is HELP


def test_extra_words_apply_only_with_the_settings_that_name_them() -> None:
    own = KeywordSettings(
        extra_opt_out_words=frozenset({"BASTA", "FINI"}),
        extra_opt_in_words=frozenset({"COMENZAR"}),
    )
    for body in ("basta", "Fini!", "comenzar"):
        assert classify(body) == Classification(NONE, "")
        assert classify(body, REVOCATION_ON) == Classification(NONE, "")
    assert [classify(body, own).kind for body in ("basta", "Fini!", "comenzar")] == [
        OPT_OUT,
        OPT_OUT,
        OPT_IN,
    ]
    assert classify("alto ahi", EXTRA).kind is NONE


def test_every_language_s_built_in_opt_out_words_need_no_settings() -> None:
    for body in ("arret", "Alto!", "PARAR", "cancelar"):
        assert classify(body).kind is OPT_OUT, body


# --- classify: revocation phrases -------------------------------------------------------------


@pytest.mark.parametrize("phrase", SPEC_PHRASES)
def test_every_revocation_phrase_opts_out_only_when_detection_is_on(phrase: str) -> None:
    for body in (phrase, phrase.upper(), f"Hi. Please {phrase}, thanks!", f"{phrase}!!!"):
        assert classify(body) == Classification(NONE, ""), repr(body)
        found = classify(body, REVOCATION_ON)
        assert found.kind is OPT_OUT, repr(body)
        # The phrase recognised is one of the spec's, and part of the message.
        assert found.matched in SPEC_PHRASES
        assert found.matched in body.lower()


@pytest.mark.parametrize(
    "body",
    [
        "please stop texting me",
        "PLEASE STOP TEXTING ME!!!",
        "remove me from your list",
        "Can you remove me from your list? Thanks",
        "Do not text me.",
        "don\u2019t text me",
        "I said: stop   texting\nme",
    ],
)
def test_issue_examples_of_revocation_phrases(body: str) -> None:
    assert classify(body).kind is NONE
    assert classify(body, REVOCATION_ON).kind is OPT_OUT


@pytest.mark.parametrize(
    "body",
    [
        "stop by tomorrow",
        "I will stop by the store",
        "nonstop texting me is fine",
        "do not textme",
        "remove me from yourlist",
        "the list",
        "can you text me tomorrow",
    ],
)
def test_revocation_phrases_match_whole_words_only(body: str) -> None:
    assert classify(body, REVOCATION_ON) == Classification(NONE, "")


def test_keywords_win_over_phrases_when_detection_is_on() -> None:
    assert classify("STOP", REVOCATION_ON) == Classification(OPT_OUT, "STOP")
    assert classify("start", REVOCATION_ON) == Classification(OPT_IN, "START")
    assert classify("help", REVOCATION_ON) == Classification(HELP, "HELP")


# --- validate_extra_words ---------------------------------------------------------------------


def violated_fields(error: InvalidArgument) -> list[str]:
    return [v.field for v in error.violations]


def test_validate_extra_words_normalises() -> None:
    outs, ins = validate_extra_words(["arret", " Alto ", "PARAR!", "arret"], ["comenzar."])
    assert outs == frozenset({"ARRET", "ALTO", "PARAR"})
    assert ins == frozenset({"COMENZAR"})
    assert validate_extra_words([], []) == (frozenset(), frozenset())
    assert validate_extra_words(["opt  me   out"], []) == (frozenset({"OPT ME OUT"}), frozenset())


def test_validate_extra_words_drops_repeated_defaults() -> None:
    # A location may name a default word again: it stays a default, nothing is stored for it.
    outs, ins = validate_extra_words(["stop", "Opt Out", "arret"], ["START", "unstop"])
    assert outs == frozenset({"ARRET"})
    assert ins == frozenset()


def test_validate_extra_words_accepts_the_limits() -> None:
    word = "W" * 32
    assert validate_extra_words([word], []) == (frozenset({word}), frozenset())
    fifty = [f"WORD{i}" for i in range(50)]
    assert validate_extra_words(fifty, []) == (frozenset(fifty), frozenset())
    assert validate_extra_words([], fifty) == (frozenset(), frozenset(fifty))


@pytest.mark.parametrize(
    ("opt_out", "opt_in", "field"),
    [
        ([""], [], "extra_opt_out_words"),
        (["   "], [], "extra_opt_out_words"),
        (["?!"], [], "extra_opt_out_words"),
        ([], [""], "extra_opt_in_words"),
        (["W" * 33], [], "extra_opt_out_words"),
        ([], ["W" * 33], "extra_opt_in_words"),
        (["AR\x00RET"], [], "extra_opt_out_words"),
        ([], ["GO\x07"], "extra_opt_in_words"),
        ([f"WORD{i}" for i in range(51)], [], "extra_opt_out_words"),
        ([], [f"WORD{i}" for i in range(51)], "extra_opt_in_words"),
        # An opt-out word may not be an opt-in or help word, nor the other way round.
        (["start"], [], "extra_opt_out_words"),
        (["Yes"], [], "extra_opt_out_words"),
        (["UNSTOP"], [], "extra_opt_out_words"),
        (["help"], [], "extra_opt_out_words"),
        (["info!"], [], "extra_opt_out_words"),
        ([], ["stop"], "extra_opt_in_words"),
        ([], ["opt out"], "extra_opt_in_words"),
        ([], ["Cancel"], "extra_opt_in_words"),
        ([], ["HELP"], "extra_opt_in_words"),
        ([], ["info"], "extra_opt_in_words"),
        (["VALE"], ["vale"], "extra_opt_out_words"),
    ],
)
def test_validate_extra_words_rejects(opt_out: list[str], opt_in: list[str], field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_extra_words(opt_out, opt_in)
    assert field in violated_fields(caught.value)


def test_validate_extra_words_reports_every_problem_at_once() -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_extra_words(["", "start", "ARRET"], ["stop", "W" * 40])
    fields = violated_fields(caught.value)
    assert fields.count("extra_opt_out_words") == 2
    assert fields.count("extra_opt_in_words") == 2


# --- provider tables --------------------------------------------------------------------------

TEMPORARY = Reason.SMS_CARRIER_TEMPORARY
PERMANENT = Reason.SMS_CARRIER_PERMANENT


def test_sms_error_code_table_is_the_specs() -> None:
    assert SMS_ERROR_CODES == {
        "30003": TEMPORARY,
        "30005": TEMPORARY,
        "30006": TEMPORARY,
        "30004": PERMANENT,
        "21610": PERMANENT,
    }


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("30003", (TEMPORARY, Source.SYSTEM)),
        ("30005", (TEMPORARY, Source.SYSTEM)),
        ("30006", (TEMPORARY, Source.SYSTEM)),
        ("30004", (PERMANENT, Source.SYSTEM)),
        ("21610", (PERMANENT, Source.SYSTEM)),
        ("30007", None),
        ("30008", None),
        ("21211", None),
        ("3000", None),
        ("300040", None),
        ("0", None),
        ("unknown", None),
    ],
)
def test_sms_failure_effect(code: str, expected: tuple[Reason, Source] | None) -> None:
    assert sms_failure_effect(code) == expected


SPEC_EMAIL: dict[str, tuple[Reason, Source] | None] = {
    "BOUNCE": (Reason.EMAIL_HARD_BOUNCE, Source.SYSTEM),
    "GENERIC_FAILURE": (Reason.EMAIL_GENERIC_FAILURE, Source.SYSTEM),
    "SUPPRESS_BOUNCE": (Reason.EMAIL_SUPPRESS_BOUNCE, Source.SYSTEM),
    "SUPPRESS_UNSUBSCRIBE": (Reason.EMAIL_SUPPRESS_UNSUBSCRIBE, Source.SYSTEM),
    "SUPPRESS_COMPLAINT": (Reason.EMAIL_SUPPRESS_COMPLAINT, Source.SYSTEM),
    "SPAM_COMPLAINT": (Reason.EMAIL_SPAM_COMPLAINT, Source.SYSTEM),
    "UNSUBSCRIBE_LINK": (Reason.EMAIL_UNSUBSCRIBE_LINK, Source.CONTACT),
    "LIST_UNSUBSCRIBE_POST": (Reason.EMAIL_UNSUBSCRIBE_LINK, Source.CONTACT),
    "TEMPORARY_FAILURE": None,
}


def test_email_events_match_the_contract_enum() -> None:
    contract = {
        value.name.removeprefix("EMAIL_EVENT_")
        for value in pb.EmailEvent.DESCRIPTOR.values
        if value.number != pb.EMAIL_EVENT_UNSPECIFIED
    }
    assert {e.value for e in EmailEvent} == contract == set(SPEC_EMAIL)


def test_email_event_table_is_the_specs() -> None:
    table = {event.value: (effect.reason, effect.source) for event, effect in EMAIL_EVENTS.items()}
    assert table == {name: effect for name, effect in SPEC_EMAIL.items() if effect is not None}


@pytest.mark.parametrize("name", list(SPEC_EMAIL))
def test_email_event_effect(name: str) -> None:
    assert email_event_effect(EmailEvent(name)) == SPEC_EMAIL[name]


def test_address_suppressing_reasons_are_opt_outs_and_permanent_failures() -> None:
    suppressing = set(ADDRESS_SUPPRESSING_REASONS)
    assert suppressing == {
        Reason.SMS_OPT_OUT_KEYWORD,
        Reason.SMS_CARRIER_PERMANENT,
        Reason.EMAIL_HARD_BOUNCE,
        Reason.EMAIL_GENERIC_FAILURE,
        Reason.EMAIL_SUPPRESS_BOUNCE,
        Reason.EMAIL_SUPPRESS_UNSUBSCRIBE,
        Reason.EMAIL_SUPPRESS_COMPLAINT,
        Reason.EMAIL_SPAM_COMPLAINT,
        Reason.EMAIL_UNSUBSCRIBE_LINK,
    }
    # Neither temporary failures nor manual blocks suppress an address.
    assert Reason.SMS_CARRIER_TEMPORARY not in ADDRESS_SUPPRESSING_REASONS
    assert Reason.MANUAL not in ADDRESS_SUPPRESSING_REASONS
