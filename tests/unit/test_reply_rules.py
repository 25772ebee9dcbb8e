"""The compliance replies as pure rules: the defaults meet the content rules in every language
and fit one segment, merge fields, the required parts per kind, length warnings, and when a
reply is due (domain/replies.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.keywords import LANGUAGES, KeywordKind
from dnd_server.domain.replies import (
    DEFAULT_TEXTS,
    OPT_OUT_REPLY_INTERVAL,
    ComplianceReplies,
    ReplyKind,
    ReplyTexts,
    every_reply,
    measure,
    merge,
    reply,
    reply_due,
    text_problems,
    validate_replies,
)

BRAND, SUPPORT = "Acme Dental", "+14155550100"
LONG_BRAND = "B" * 64
OUT, IN, HELP = ReplyKind.OPT_OUT_CONFIRMATION, ReplyKind.OPT_IN_CONFIRMATION, ReplyKind.HELP
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


# --- defaults ------------------------------------------------------------------------------------


@pytest.mark.parametrize("language", LANGUAGES)
@pytest.mark.parametrize("kind", list(ReplyKind))
def test_every_default_meets_the_content_rules(language: str, kind: ReplyKind) -> None:
    assert text_problems(DEFAULT_TEXTS[language][kind], language, kind, BRAND, SUPPORT) == []


@pytest.mark.parametrize("language", LANGUAGES)
def test_defaults_fit_one_gsm7_segment_with_a_20_character_brand(language: str) -> None:
    replies = ComplianceReplies("Acme Dental Clinic 1", "+1 (415) 555-0100 x2")
    for kind in ReplyKind:
        sent = reply(replies, language, kind)
        assert sent.measure.encoding == "GSM-7", (language, kind, sent.text)
        assert sent.measure.segments == 1 and not sent.measure.warning, sent.text
        assert "Acme Dental Clinic 1" in sent.text and "{" not in sent.text


def test_defaults_say_what_the_carriers_require() -> None:
    replies = ComplianceReplies(BRAND, SUPPORT)
    en = {kind: reply(replies, "en", kind).text for kind in ReplyKind}
    assert "Reply HELP for help, STOP to cancel" in en[IN]
    assert "Msg & data rates may apply" in en[IN] and "Msg & data rates may apply" in en[HELP]
    assert SUPPORT in en[HELP] and "STOP" in en[HELP]
    assert "unsubscribed" in en[OUT] and SUPPORT not in en[OUT]
    assert "PARAR" in reply(replies, "es", HELP).text
    assert "ARRET" in reply(replies, "fr", HELP).text


def test_every_reply_lists_each_language_and_kind_once() -> None:
    replies = every_reply(ComplianceReplies(BRAND, SUPPORT))
    assert [(r.language, r.kind) for r in replies] == [
        (lang, kind) for lang in LANGUAGES for kind in ReplyKind
    ]
    assert all(r.is_default for r in replies)


# --- merge fields and required parts ---------------------------------------------------------


def test_merge_fills_brand_and_support() -> None:
    assert merge("{brand}: call {support}", BRAND, SUPPORT) == f"{BRAND}: call {SUPPORT}"


PROBLEMS = {
    "unknown-field": ("{brand}: {name}, reply STOP to cancel. Help {support}", HELP, "{name}"),
    "stray-brace": ("{brand}: help {support}} STOP", HELP, "brace"),
    "no-brand": (
        "Help at {support}. Msg & data rates may apply. Reply STOP to cancel.",
        HELP,
        "programme",
    ),
    "help-no-support": (
        "{brand}: Msg & data rates may apply. Reply STOP to cancel.",
        HELP,
        "support",
    ),
    "help-no-stop": ("{brand}: help at {support}. Msg & data rates may apply.", HELP, "opt out"),
    "opt-in-no-rates": ("{brand}: subscribed. Reply STOP to cancel.", IN, "rates"),
    "opt-in-no-stop": ("{brand}: subscribed. Msg & data rates may apply.", IN, "opt out"),
    "opt-out-marketing": ("{brand}: unsubscribed. 20% off your next visit!", OUT, "marketing"),
    "opt-out-sale": ("{brand}: unsubscribed. Big SALE on Friday", OUT, "sale"),
    "opt-out-link": ("{brand}: unsubscribed. See https://acme.example", OUT, "link"),
}


@pytest.mark.parametrize(("template", "kind", "said"), PROBLEMS.values(), ids=PROBLEMS.keys())
def test_a_text_without_a_required_part_is_refused(
    template: str, kind: ReplyKind, said: str
) -> None:
    problems = text_problems(template, "en", kind, BRAND, SUPPORT)
    assert problems and any(said in p for p in problems), problems
    with pytest.raises(InvalidArgument) as refused:
        validate_replies(BRAND, SUPPORT, [ReplyTexts("en", **{_field(kind): template})])
    assert {v.field for v in refused.value.violations} == {f"texts[0].{_field(kind)}"}


def _field(kind: ReplyKind) -> str:
    return {OUT: "opt_out_confirmation", IN: "opt_in_confirmation", HELP: "help"}[kind]


def test_the_brand_or_support_written_out_counts_as_their_fields() -> None:
    text = f"{BRAND}: help at {SUPPORT}. Reply STOP to cancel."
    assert text_problems(text, "en", HELP, BRAND, SUPPORT) == []


def test_a_spanish_text_needs_a_spanish_opt_out_word() -> None:
    text = "{brand}: Ayuda en {support}. Responda CANCEL para cancelar."
    assert any("opt out" in p for p in text_problems(text, "es", HELP, BRAND, SUPPORT))
    ok = "{brand}: Ayuda en {support}. Responda ALTO para cancelar."
    assert text_problems(ok, "es", HELP, BRAND, SUPPORT) == []


def test_marketing_words_of_any_language_are_refused_in_an_opt_out_confirmation() -> None:
    for word in ("gratis", "Soldes", "descuento", "offre"):
        template = f"{{brand}}: Baja confirmada. {word}"
        assert text_problems(template, "es", OUT, BRAND, SUPPORT), word


# --- validation of a whole update ------------------------------------------------------------


def test_validate_keeps_own_texts_and_stores_defaults_as_defaults() -> None:
    own = "{brand}: You will get no more texts from us."
    replies = validate_replies(
        BRAND,
        SUPPORT,
        [
            ReplyTexts("fr"),
            ReplyTexts("en", opt_out_confirmation=own, help=DEFAULT_TEXTS["en"][HELP]),
        ],
    )
    assert replies.texts == (ReplyTexts("en", opt_out_confirmation=own),)
    assert replies.template("en", OUT) == (own, False)
    assert replies.template("en", HELP) == (DEFAULT_TEXTS["en"][HELP], True)
    assert replies.configured


def test_validate_names_every_problem_at_once() -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_replies(
            " ",
            "x" * 101,
            [
                ReplyTexts("de", help="x"),
                ReplyTexts("en", help="{brand} {who}"),
                ReplyTexts("en"),
            ],
        )
    fields = [v.field for v in refused.value.violations]
    assert "brand_name" in fields and "support_contact" in fields
    assert "texts[0].language" in fields and "texts[2].language" in fields
    assert "texts[1].help" in fields


@pytest.mark.parametrize("brand", ["Acme\n", "{brand}", " Acme", "A" * 65])
def test_unusable_brand_names_are_refused(brand: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        validate_replies(brand, SUPPORT, [])
    assert [v.field for v in refused.value.violations] == ["brand_name"]


# --- length --------------------------------------------------------------------------------------


def test_measure_counts_gsm7_ucs2_and_the_extension_table() -> None:
    assert measure("a" * 160) == measure("a" * 160)
    assert (measure("a" * 160).segments, measure("a" * 161).segments) == (1, 2)
    assert measure("€" * 80).length == 160 and measure("€" * 80).segments == 1
    assert measure("€" * 81).segments == 2
    ucs = measure("á" * 70)
    assert (ucs.encoding, ucs.length, ucs.segments, ucs.warning) == ("UCS-2", 70, 1, "")
    over = measure("á" * 71)
    assert over.segments == 2 and "UCS-2" in over.warning and "á" in over.warning
    assert measure("🛑").length == 2


def test_a_long_text_is_accepted_with_a_warning() -> None:
    replies = ComplianceReplies(LONG_BRAND, SUPPORT)
    sent = reply(replies, "fr", IN)
    assert sent.measure.segments == 2 and "2 SMS segments" in sent.measure.warning
    # Accepted: length is a warning, not an error.
    validate_replies(
        LONG_BRAND, SUPPORT, [ReplyTexts("fr", opt_in_confirmation=sent.template + " ")]
    )


# --- when a reply is due ----------------------------------------------------------------------

DUE = [
    # (action, opted out now, lifted now, still blocked, last opt-out reply, expected)
    (KeywordKind.OPT_OUT, True, False, True, None, OUT),
    (KeywordKind.OPT_OUT, False, False, True, None, None),
    (KeywordKind.OPT_OUT, True, False, True, T0 - dt.timedelta(hours=23, minutes=59), None),
    (KeywordKind.OPT_OUT, True, False, True, T0 - OPT_OUT_REPLY_INTERVAL, OUT),
    (KeywordKind.OPT_IN, False, True, False, None, IN),
    (KeywordKind.OPT_IN, False, False, False, None, None),
    (KeywordKind.OPT_IN, False, True, True, None, None),
    (KeywordKind.HELP, False, False, True, T0, HELP),
    (KeywordKind.HELP, False, False, False, None, HELP),
    (KeywordKind.NONE, False, False, False, None, None),
]


@pytest.mark.parametrize(("action", "out", "lifted", "blocked", "last", "expected"), DUE)
def test_reply_due(
    action: KeywordKind,
    out: bool,
    lifted: bool,
    blocked: bool,
    last: dt.datetime | None,
    expected: ReplyKind | None,
) -> None:
    assert reply_due(action, out, lifted, blocked, last, T0) is expected
