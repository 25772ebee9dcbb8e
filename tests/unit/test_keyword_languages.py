"""Keywords per language and on every keyword channel, as pure rules: the built-in sets of
English, Spanish and French, the reply language, a location's words per language and the
trust rules across languages (domain/keywords.py); opt-outs and opt-ins on WhatsApp and RCS,
SMS and RCS sharing opt-outs, the reply due and its mark (domain/plans.py, domain/inbound.py,
the clear policy of KEYWORD_OPT_OUT in domain/rules.py)."""

from __future__ import annotations

import datetime as dt

import pytest
from dnd_server.domain.errors import ClearNotPermitted, InvalidArgument
from dnd_server.domain.inbound import inbound_verdict
from dnd_server.domain.keywords import (
    BUILT_IN_WORDS,
    LANGUAGES,
    KeywordKind,
    KeywordSettings,
    LanguageWords,
    LanguageWordsInput,
    classify,
    effective_settings,
    opt_in_conflicts,
    validate_settings,
)
from dnd_server.domain.model import Block, Channel, ContactState, Direction, Reason, Source, Step
from dnd_server.domain.plans import plan_inbound_message
from dnd_server.domain.replies import ReplyKind
from dnd_server.domain.rules import (
    ClearCredentials,
    decide_send,
    plan_disable,
    summarize,
    validate_block_shape,
)

OPT_OUT, OPT_IN, HELP, NONE = (
    KeywordKind.OPT_OUT,
    KeywordKind.OPT_IN,
    KeywordKind.HELP,
    KeywordKind.NONE,
)
ALL_ON = KeywordSettings(languages=frozenset({"es", "fr"}))
FRENCH = KeywordSettings(languages=frozenset({"fr"}), default_language="fr")
PHONE = "+14155552671"
T0 = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


# --- built-in words per language -------------------------------------------------------------

WORDS = [
    # (message, settings, kind, word, reply language with the settings' default)
    ("STOP", ALL_ON, OPT_OUT, "STOP", "en"),
    ("stop", FRENCH, OPT_OUT, "STOP", "fr"),
    ("Arrêt", ALL_ON, OPT_OUT, "ARRÊT", "fr"),
    ("arret", ALL_ON, OPT_OUT, "ARRET", "fr"),
    ("ARRÊT!", FRENCH, OPT_OUT, "ARRÊT", "fr"),
    ("Parar", ALL_ON, OPT_OUT, "PARAR", "es"),
    ("alto.", ALL_ON, OPT_OUT, "ALTO", "es"),
    ("CANCELAR", ALL_ON, OPT_OUT, "CANCELAR", "es"),
    ("cancel", ALL_ON, OPT_OUT, "CANCEL", "en"),
    ("Aide", ALL_ON, HELP, "AIDE", "fr"),
    ("ayuda", ALL_ON, HELP, "AYUDA", "es"),
    ("HELP", FRENCH, HELP, "HELP", "fr"),
    ("HELP", ALL_ON, HELP, "HELP", "en"),
    ("start", FRENCH, OPT_IN, "START", "fr"),
    ("Sí", ALL_ON, OPT_IN, "SI", "es"),
    ("oui", ALL_ON, OPT_IN, "OUI", "fr"),
]


@pytest.mark.parametrize(("body", "settings", "kind", "word", "language"), WORDS)
def test_built_in_words_per_language(
    body: str, settings: KeywordSettings, kind: KeywordKind, word: str, language: str
) -> None:
    found = classify(body, settings)
    assert (found.kind, found.matched) == (kind, word)
    assert found.reply_language(effective_settings(settings).settings.default_language) == (
        language
    )


def test_every_language_s_opt_out_words_act_in_every_location() -> None:
    # Honouring an opt-out is never wrong: ARRET, PARAR... opt out with no language turned on,
    # and are answered in their language.
    for body, language in (("ARRET", "fr"), ("Arrêt", "fr"), ("PARAR", "es"), ("alto", "es")):
        found = classify(body)
        assert found.kind is OPT_OUT, body
        assert found.reply_language("en") == language, body
    assert classify("STOP").reply_language("en") == "en"


def test_languages_off_leave_their_opt_in_and_help_words_ordinary_messages() -> None:
    for body in ("AYUDA", "AIDE", "SI", "OUI"):
        assert classify(body).kind is NONE, body


def test_a_word_of_several_languages_is_answered_in_the_default_language() -> None:
    stop = classify("STOP", ALL_ON)
    assert stop.languages == ("en", "es", "fr")
    assert [stop.reply_language(d) for d in LANGUAGES] == ["en", "es", "fr"]
    parar = classify("PARAR", ALL_ON)
    assert [parar.reply_language(d) for d in LANGUAGES] == ["es", "es", "es"]


def test_si_and_oui_act_only_while_dnd_is_on_like_yes() -> None:
    for body in ("si", "OUI", "yes"):
        assert classify(body, ALL_ON).conditional, body
    assert not classify("START", ALL_ON).conditional
    # A location's own OUI (language-less) is an ordinary opt-in word, as it was.
    assert not classify("oui", KeywordSettings(extra_opt_in_words=frozenset({"OUI"}))).conditional


def test_no_built_in_opt_in_word_overlaps_opt_out_wording_of_any_language() -> None:
    for words in BUILT_IN_WORDS.values():
        for word in words.opt_in:
            assert opt_in_conflicts(word) == [], word
    assert "ALTA" not in {w for b in BUILT_IN_WORDS.values() for w in b.opt_in}


# --- the location's words per language -------------------------------------------------------


def test_extra_words_per_language_reply_in_their_language() -> None:
    settings = validate_settings(
        ["basta"],
        [],
        languages=["fr"],
        default_language="fr",
        language_words=[
            LanguageWordsInput("es", ["Terminar"], ["Volver"]),
            LanguageWordsInput("en", ["enough"], []),
        ],
    )
    assert settings.language_words == (
        LanguageWords("en", frozenset({"ENOUGH"})),
        LanguageWords("es", frozenset({"TERMINAR"}), frozenset({"VOLVER"})),
    )
    assert classify("basta", settings).reply_language("fr") == "fr"
    assert classify("terminar", settings).reply_language("fr") == "es"
    assert classify("Enough!", settings).reply_language("fr") == "en"
    assert classify("volver", settings).kind is OPT_IN


REFUSED = {
    "opt-in-is-french-opt-out": ({"opt_in": ["arrêt"]}, "extra_opt_in_words"),
    "opt-in-contains-spanish-opt-out": ({"opt_in": ["ALTO YA"]}, "extra_opt_in_words"),
    "opt-in-inside-other-language-extra-opt-out": (
        {
            "language_words": [LanguageWordsInput("es", ["NO MAS MENSAJES"], [])],
            "opt_in": ["MENSAJES"],
        },
        "extra_opt_in_words",
    ),
    "language-opt-in-is-spanish-opt-out": (
        {"language_words": [LanguageWordsInput("fr", [], ["parar"])]},
        "language_words[0].opt_in_words",
    ),
    "opt-out-is-french-help": ({"opt_out": ["aide"]}, "extra_opt_out_words"),
    "opt-out-is-spanish-opt-in": ({"opt_out": ["si"]}, "extra_opt_out_words"),
    "unknown-language": ({"languages": ["de"]}, "languages[0]"),
    "default-not-among-languages": ({"default_language": "es"}, "default_language"),
    "language-words-twice": (
        {"language_words": [LanguageWordsInput("es", ["X1"]), LanguageWordsInput("es", ["X2"])]},
        "language_words[1].language",
    ),
    "language-words-unknown": (
        {"language_words": [LanguageWordsInput("pt", ["CHEGA"])]},
        "language_words[0].language",
    ),
}


@pytest.mark.parametrize(("given", "field"), REFUSED.values(), ids=REFUSED.keys())
def test_settings_that_break_the_rules_are_refused(given: dict[str, object], field: str) -> None:
    args = {"opt_out": [], "opt_in": [], **given}
    with pytest.raises(InvalidArgument) as refused:
        validate_settings(args.pop("opt_out"), args.pop("opt_in"), **args)  # type: ignore[arg-type]
    assert field in {v.field for v in refused.value.violations}


def test_stored_words_of_a_language_that_break_the_rules_are_ignored() -> None:
    stored = KeywordSettings(
        language_words=(LanguageWords("es", frozenset(), frozenset({"PARAR YA", "VOLVER"})),)
    )
    effective = effective_settings(stored)
    assert [(i.field, i.word) for i in effective.ignored] == [
        ("language_words[0].opt_in_words", "PARAR YA")
    ]
    assert classify("parar ya", stored).kind is NONE
    assert classify("volver", stored).kind is OPT_IN


# --- WhatsApp and RCS --------------------------------------------------------------------------


def state(*blocks: Block) -> ContactState:
    return ContactState("loc", "c1", blocks, len(blocks))


def blocks_of(steps: list[Step]) -> list[tuple[bool, Channel | None, Reason]]:
    return [
        (s.enabled, s.target.scope, s.target.reason) for s in steps if isinstance(s.target, Block)
    ]


def after(before: ContactState, steps: list[Step]) -> ContactState:
    blocks = list(before.blocks)
    for step in steps:
        if isinstance(step.target, Block):
            if step.enabled:
                blocks.append(step.target)
            else:
                blocks = [b for b in blocks if b.key != step.target.key]
    return ContactState("loc", "c1", tuple(blocks), before.version + len(steps))


CHANNEL_CASES = [
    # (channel, share, body, expected blocks)
    (Channel.WHATSAPP, False, "STOP", [(True, Channel.WHATSAPP, Reason.KEYWORD_OPT_OUT)]),
    (Channel.RCS, False, "stop", [(True, Channel.RCS, Reason.KEYWORD_OPT_OUT)]),
    (
        Channel.RCS,
        True,
        "STOP",
        [
            (True, Channel.SMS, Reason.SMS_OPT_OUT_KEYWORD),
            (True, Channel.RCS, Reason.KEYWORD_OPT_OUT),
        ],
    ),
    (
        Channel.SMS,
        True,
        "STOP",
        [
            (True, Channel.SMS, Reason.SMS_OPT_OUT_KEYWORD),
            (True, Channel.RCS, Reason.KEYWORD_OPT_OUT),
        ],
    ),
    (Channel.SMS, False, "STOP", [(True, Channel.SMS, Reason.SMS_OPT_OUT_KEYWORD)]),
    (Channel.WHATSAPP, True, "STOP", [(True, Channel.WHATSAPP, Reason.KEYWORD_OPT_OUT)]),
    (Channel.EMAIL, False, "STOP", []),
    (Channel.FACEBOOK, True, "STOP", []),
]


@pytest.mark.parametrize(("channel", "share", "body", "expected"), CHANNEL_CASES)
def test_stop_blocks_the_channel_it_came_on(
    channel: Channel, share: bool, body: str, expected: list[tuple[bool, Channel, Reason]]
) -> None:
    outcome = plan_inbound_message(state(), classify(body), body, PHONE, T0, channel, share)
    assert blocks_of(outcome.steps) == expected
    if expected:
        assert outcome.reply is ReplyKind.OPT_OUT_CONFIRMATION
        assert [(m.channel, m.kind, m.at) for m in outcome.marks] == [
            (channel.value, ReplyKind.OPT_OUT_CONFIRMATION, T0)
        ]
        blocked = after(state(), outcome.steps)
        assert not decide_send(blocked.blocks, channel, Direction.OUTBOUND).allowed
    else:
        assert outcome.action is NONE and outcome.reply is None


def test_start_on_whatsapp_lifts_the_whatsapp_opt_out_only() -> None:
    stopped = plan_inbound_message(state(), classify("STOP"), "STOP", PHONE, T0, Channel.WHATSAPP)
    sms = plan_inbound_message(state(), classify("STOP"), "STOP", PHONE, T0, Channel.SMS)
    both = after(after(state(), stopped.steps), sms.steps)
    back = plan_inbound_message(both, classify("START"), "START", PHONE, T0, Channel.WHATSAPP)
    assert blocks_of(back.steps) == [(False, Channel.WHATSAPP, Reason.KEYWORD_OPT_OUT)]
    assert back.reply is ReplyKind.OPT_IN_CONFIRMATION
    # Keyword consents are SMS's alone.
    assert all(isinstance(s.target, Block) for s in back.steps)
    left = after(both, back.steps)
    assert decide_send(left.blocks, Channel.WHATSAPP, Direction.OUTBOUND).allowed
    assert not decide_send(left.blocks, Channel.SMS, Direction.OUTBOUND).allowed


def test_with_sharing_start_on_sms_lifts_rcs_too() -> None:
    stopped = plan_inbound_message(state(), classify("STOP"), "STOP", PHONE, T0, Channel.RCS, True)
    blocked = after(state(), stopped.steps)
    back = plan_inbound_message(blocked, classify("START"), "START", PHONE, T0, Channel.SMS, True)
    assert sorted(blocks_of(back.steps)) == sorted(
        [
            (False, Channel.SMS, Reason.SMS_OPT_OUT_KEYWORD),
            (False, Channel.RCS, Reason.KEYWORD_OPT_OUT),
        ]
    )
    # Without sharing START on SMS leaves the RCS opt-out.
    alone = plan_inbound_message(blocked, classify("START"), "START", PHONE, T0, Channel.SMS)
    assert blocks_of(alone.steps) == [(False, Channel.SMS, Reason.SMS_OPT_OUT_KEYWORD)]


def test_yes_on_whatsapp_acts_only_with_whatsapp_dnd() -> None:
    yes = classify("YES")
    assert plan_inbound_message(state(), yes, "YES", PHONE, T0, Channel.WHATSAPP).action is NONE
    stopped = plan_inbound_message(state(), classify("STOP"), "STOP", PHONE, T0, Channel.WHATSAPP)
    back = plan_inbound_message(
        after(state(), stopped.steps), yes, "YES", PHONE, T0, Channel.WHATSAPP
    )
    assert back.action is OPT_IN and back.steps


def test_a_second_stop_gets_no_second_confirmation() -> None:
    first = plan_inbound_message(state(), classify("STOP"), "STOP", PHONE, T0, Channel.SMS)
    stopped = after(state(), first.steps)
    again = plan_inbound_message(stopped, classify("STOP"), "STOP", PHONE, T0, Channel.SMS)
    assert blocks_of(again.steps) == [] and again.reply is None and again.marks == ()
    # STOP, START, STOP within a day: the new opt-out gets no second confirmation either.
    lifted = after(
        stopped,
        plan_inbound_message(stopped, classify("START"), "START", PHONE, T0, Channel.SMS).steps,
    )
    later = T0 + dt.timedelta(hours=2)
    third = plan_inbound_message(
        lifted, classify("STOP"), "STOP", PHONE, later, Channel.SMS, last_opt_out_reply=T0
    )
    assert third.steps and third.reply is None and third.marks == ()
    next_day = T0 + dt.timedelta(days=1)
    fourth = plan_inbound_message(
        lifted, classify("STOP"), "STOP", PHONE, next_day, Channel.SMS, last_opt_out_reply=T0
    )
    assert fourth.reply is ReplyKind.OPT_OUT_CONFIRMATION


def test_help_always_answers_and_changes_nothing() -> None:
    stopped = after(
        state(), plan_inbound_message(state(), classify("STOP"), "STOP", PHONE, T0).steps
    )
    for st in (state(), stopped):
        outcome = plan_inbound_message(st, classify("HELP"), "HELP", PHONE, T0, Channel.WHATSAPP)
        assert (outcome.action, outcome.steps, outcome.reply) == (HELP, [], ReplyKind.HELP)


def test_an_opt_in_that_leaves_the_channel_blocked_gets_no_confirmation() -> None:
    everything = Block(Direction.OUTBOUND, None, Reason.MANUAL, Source.USER)
    sms_stop = Block(Direction.OUTBOUND, Channel.SMS, Reason.SMS_OPT_OUT_KEYWORD, Source.CONTACT)
    outcome = plan_inbound_message(
        state(everything, sms_stop), classify("START"), "START", PHONE, T0
    )
    assert outcome.steps and outcome.reply is None


def test_the_verdict_names_the_channels_the_keyword_acted_on() -> None:
    outcome = plan_inbound_message(state(), classify("STOP"), "STOP", PHONE, T0, Channel.RCS, True)
    verdict = inbound_verdict(
        Channel.RCS,
        classify("STOP"),
        OPT_OUT,
        after(state(), outcome.steps),
        (Channel.SMS, Channel.RCS),
    )
    assert verdict.explanation == "opted out of SMS and RCS (STOP)"
    assert verdict.sms_blocked
    whatsapp = inbound_verdict(
        Channel.WHATSAPP, classify("STOP"), OPT_OUT, state(), (Channel.WHATSAPP,)
    )
    assert whatsapp.explanation == "opted out of WHATSAPP (STOP)"


# --- the clear policy of KEYWORD_OPT_OUT and RCS everywhere ------------------------------------


def test_keyword_opt_out_exists_on_whatsapp_and_rcs_only() -> None:
    for channel in (Channel.WHATSAPP, Channel.RCS):
        validate_block_shape(Direction.OUTBOUND, channel, Reason.KEYWORD_OPT_OUT)
    for channel in (Channel.SMS, Channel.EMAIL, None):
        with pytest.raises(InvalidArgument):
            validate_block_shape(Direction.OUTBOUND, channel, Reason.KEYWORD_OPT_OUT)


@pytest.mark.parametrize(
    ("source", "evidence", "allowed"),
    [
        (Source.CONTACT, "", True),
        (Source.SUPPORT, "signed form", True),
        (Source.SUPPORT, "", False),
        (Source.USER, "signed form", False),
        (Source.WORKFLOW, "signed form", False),
        (Source.SYSTEM, "signed form", False),
    ],
)
def test_only_the_contact_or_support_with_proof_clears_a_keyword_opt_out(
    source: Source, evidence: str, allowed: bool
) -> None:
    block = Block(Direction.OUTBOUND, Channel.WHATSAPP, Reason.KEYWORD_OPT_OUT, Source.CONTACT)
    who = ClearCredentials(source=source, evidence=evidence)
    if allowed:
        assert plan_disable([block], Direction.OUTBOUND, Channel.WHATSAPP, None, who) == [block]
    else:
        with pytest.raises(ClearNotPermitted) as refused:
            plan_disable([block], Direction.OUTBOUND, Channel.WHATSAPP, None, who)
        assert "sending START" in refused.value.refusals[0].what_clears_it


def test_an_all_channels_block_covers_rcs_and_summaries_list_it() -> None:
    everything = Block(Direction.OUTBOUND, None, Reason.MANUAL, Source.USER)
    assert not decide_send([everything], Channel.RCS, Direction.OUTBOUND).allowed
    assert Channel.RCS in summarize([everything]).blocked_channels
    rcs = Block(Direction.OUTBOUND, Channel.RCS, Reason.MANUAL, Source.USER)
    assert summarize([rcs]).blocked_channels == (Channel.RCS,)
    assert decide_send([rcs], Channel.SMS, Direction.OUTBOUND).allowed
