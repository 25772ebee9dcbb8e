"""Keywords as phones really send them, and opt-in words that would read opt-outs: pure
tables (no server, no database). Variants of every kind of keyword that must match (fullwidth,
quoted, bracketed, with emoji, zero-width or combining characters, repeated) and messages that
merely contain a keyword, which must not; revocation phrases with the same normalisation;
opt-in words overlapping opt-out wording, refused by ``validate_extra_words`` and ignored when
found in stored settings. tests/integration/test_keyword_normalisation_rpc.py sends the same
variants over gRPC.

Every expectation is written out here, not read from the server's constants. The look-alike
letters in these strings and comments are the point of the tests (hence the file-wide noqa):
Cyrillic and Greek ones, read as the Latin letters they look like, and enclosed letters.
"""

# ruff: noqa: RUF001, RUF003

from __future__ import annotations

from typing import Any

import pytest
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.keywords import (
    Classification,
    KeywordKind,
    KeywordSettings,
    classify,
    effective_settings,
    match_key,
    match_keys,
    normalize_keyword,
    validate_extra_words,
)

OPT_OUT = KeywordKind.OPT_OUT
OPT_IN = KeywordKind.OPT_IN
HELP = KeywordKind.HELP
NONE = KeywordKind.NONE

REVOCATION_ON = KeywordSettings(detect_revocation_phrases=True)

# --- the variants ----------------------------------------------------------------------------

# (message, what it is, the keyword reported).
VARIANTS: list[tuple[str, KeywordKind, str]] = [
    # Emoji, before or after.
    ("STOP 🛑", OPT_OUT, "STOP"),
    ("🛑 STOP", OPT_OUT, "STOP"),
    ("stop 🙏", OPT_OUT, "STOP"),
    ("STOP ✋🏽", OPT_OUT, "STOP"),
    ("🙅\u200d♀️ stop", OPT_OUT, "STOP"),
    ("🇺🇸STOP🇺🇸", OPT_OUT, "STOP"),
    ("STOP❗❗", OPT_OUT, "STOP"),
    ("Stop‼️", OPT_OUT, "STOP"),
    ("STOP :)", OPT_OUT, "STOP"),
    ("stop :-(", OPT_OUT, "STOP"),
    # Fullwidth and other compatibility letters (NFKC).
    ("ＳＴＯＰ", OPT_OUT, "STOP"),
    ("ｓｔｏｐ", OPT_OUT, "STOP"),
    ("ｓｔｏｐ。", OPT_OUT, "STOP"),
    ("ＳＴＯＰ！", OPT_OUT, "STOP"),
    ("𝐒𝐓𝐎𝐏", OPT_OUT, "STOP"),
    ("𝕊𝕋𝕆ℙ", OPT_OUT, "STOP"),
    ("𝓢𝓽𝓸𝓹", OPT_OUT, "STOP"),
    ("Ⓢⓣⓞⓟ", OPT_OUT, "STOP"),
    ("🅂🅃🄾🄿", OPT_OUT, "STOP"),
    ("ˢᵗᵒᵖ", OPT_OUT, "STOP"),
    # Mathematical alphanumerics: every style NFKC folds.
    ("𝚂𝚃𝙾𝙿", OPT_OUT, "STOP"),
    ("𝖲𝖳𝖮𝖯", OPT_OUT, "STOP"),
    ("𝘀𝘁𝗼𝗽", OPT_OUT, "STOP"),
    ("𝑺𝑻𝑶𝑷", OPT_OUT, "STOP"),
    ("𝙨𝙩𝙤𝙥", OPT_OUT, "STOP"),
    ("𝔖𝔗𝔒𝔓", OPT_OUT, "STOP"),
    ("𝒮𝒯𝒪𝒫", OPT_OUT, "STOP"),
    # Enclosed letters NFKC leaves alone: negative circled, negative squared, parenthesised.
    ("🅢🅣🅞🅟", OPT_OUT, "STOP"),
    ("🆀🆄🅸🆃", OPT_OUT, "QUIT"),
    ("⒮⒯⒪⒫", OPT_OUT, "STOP"),
    ("(⒮⒯⒪⒫)", OPT_OUT, "STOP"),
    ("🄢🄣🄞🄟", OPT_OUT, "STOP"),
    ("🅠🅤🅘🅣!", OPT_OUT, "QUIT"),
    ("⒪⒫⒯-⒪⒰⒯", OPT_OUT, "OPT OUT"),
    # Cyrillic and Greek look-alikes, all of them or some.
    ("ЅТОР", OPT_OUT, "STOP"),
    ("ѕтор", OPT_OUT, "STOP"),
    ("Ѕтор", OPT_OUT, "STOP"),
    ("STOР", OPT_OUT, "STOP"),
    ("SТОP", OPT_OUT, "STOP"),
    ("SΤΟΡ", OPT_OUT, "STOP"),
    ("stοp", OPT_OUT, "STOP"),
    ("ЅТОР 🛑", OPT_OUT, "STOP"),
    ("\u201cЅТОР\u201d", OPT_OUT, "STOP"),
    ("ЅТОР STOP", OPT_OUT, "STOP"),
    ("ЅТ\u200bОР", OPT_OUT, "STOP"),
    ("ＳТОР", OPT_OUT, "STOP"),
    ("Ѕ\u0336Т\u0336О\u0336Р\u0336", OPT_OUT, "STOP"),
    ("ЅТӦР", OPT_OUT, "STOP"),
    ("STOPАLL", OPT_OUT, "STOPALL"),
    ("QUІТ", OPT_OUT, "QUIT"),
    ("ЕΝD", OPT_OUT, "END"),
    ("САΝСЕL", OPT_OUT, "CANCEL"),
    ("ОРТ-ОUТ", OPT_OUT, "OPT OUT"),
    # Quotes and brackets.
    ('"STOP"', OPT_OUT, "STOP"),
    ("\u201cStop\u201d", OPT_OUT, "STOP"),
    ("'stop'", OPT_OUT, "STOP"),
    ("\u2018STOP\u2019", OPT_OUT, "STOP"),
    ("`stop`", OPT_OUT, "STOP"),
    ("«STOP»", OPT_OUT, "STOP"),
    ("\u201eStop\u201c", OPT_OUT, "STOP"),
    ("(stop)", OPT_OUT, "STOP"),
    ("[STOP]", OPT_OUT, "STOP"),
    ("{stop}", OPT_OUT, "STOP"),
    ("<STOP>", OPT_OUT, "STOP"),
    ("「STOP」", OPT_OUT, "STOP"),
    ("*STOP*", OPT_OUT, "STOP"),
    ("_stop_", OPT_OUT, "STOP"),
    ("#STOP", OPT_OUT, "STOP"),
    ("~stop~", OPT_OUT, "STOP"),
    # Punctuation on both sides, repeated.
    ("¡STOP!", OPT_OUT, "STOP"),
    ("¿Stop?", OPT_OUT, "STOP"),
    ("stop!!!", OPT_OUT, "STOP"),
    ("STOP!!!!!!!!", OPT_OUT, "STOP"),
    ("stop..", OPT_OUT, "STOP"),
    ("STOP…", OPT_OUT, "STOP"),
    ("...stop", OPT_OUT, "STOP"),
    # Zero-width, format and other invisible characters.
    ("STOP\u200b", OPT_OUT, "STOP"),
    ("\u200bSTOP", OPT_OUT, "STOP"),
    ("ST\u200bOP", OPT_OUT, "STOP"),
    ("STOP\u200d", OPT_OUT, "STOP"),
    ("\ufeffSTOP", OPT_OUT, "STOP"),
    ("STOP\u00ad", OPT_OUT, "STOP"),
    ("S\u00adTOP", OPT_OUT, "STOP"),
    ("\u2060STOP\u2060", OPT_OUT, "STOP"),
    ("\u202eSTOP\u202c", OPT_OUT, "STOP"),
    ("\u200eSTOP\u200f", OPT_OUT, "STOP"),
    ("\u2066STOP\u2069", OPT_OUT, "STOP"),
    ("STOP\ufe0f", OPT_OUT, "STOP"),
    ("STOP\u034f", OPT_OUT, "STOP"),
    ("\u3164STOP\u3164", OPT_OUT, "STOP"),
    ("ＳＴＯＰ\u200b", OPT_OUT, "STOP"),
    # Unusual whitespace.
    ("STOP\u00a0", OPT_OUT, "STOP"),
    ("\u3000STOP\u3000", OPT_OUT, "STOP"),
    ("STOP\u2028", OPT_OUT, "STOP"),
    ("\r\n\tstop\r\n", OPT_OUT, "STOP"),
    # Combining marks: strike-through, underline, "Zalgo", accents.
    ("S\u0336T\u0336O\u0336P\u0336", OPT_OUT, "STOP"),
    ("S\u0335T\u0335O\u0335P\u0335", OPT_OUT, "STOP"),
    ("S\u0332T\u0332O\u0332P\u0332", OPT_OUT, "STOP"),
    ("S\u0308T\u0308O\u0308P\u0308", OPT_OUT, "STOP"),
    ("S\u0301\u0302T\u0303\u0304O\u0306\u0307P\u030a\u030b", OPT_OUT, "STOP"),
    ("STÖP", OPT_OUT, "STOP"),
    ("ŚTÓṔ", OPT_OUT, "STOP"),
    # Repeats.
    ("STOP STOP", OPT_OUT, "STOP"),
    ("stop stop stop", OPT_OUT, "STOP"),
    ("Stop, stop!", OPT_OUT, "STOP"),
    ("STOP\nSTOP", OPT_OUT, "STOP"),
    ("STOP 🛑 STOP", OPT_OUT, "STOP"),
    # The other opt-out words.
    ("ＵＮＳＵＢＳＣＲＩＢＥ", OPT_OUT, "UNSUBSCRIBE"),
    ("\u201cCancel\u201d", OPT_OUT, "CANCEL"),
    ("END 🛑", OPT_OUT, "END"),
    ("quit!!!", OPT_OUT, "QUIT"),
    ("STOPALL‼", OPT_OUT, "STOPALL"),
    ("revoke\u200b", OPT_OUT, "REVOKE"),
    ("optout 👋", OPT_OUT, "OPTOUT"),
    ("opt-out", OPT_OUT, "OPT OUT"),
    ("Opt\u2013out", OPT_OUT, "OPT OUT"),
    ("OPT OUT OPT OUT", OPT_OUT, "OPT OUT"),
    ("(opt  out)", OPT_OUT, "OPT OUT"),
    ("Stop all", OPT_OUT, "STOP ALL"),
    ("stop-all!", OPT_OUT, "STOP ALL"),
    # Small capitals ("fancy text"), which NFKC leaves alone.
    ("\ua731\u1d1b\u1d0f\u1d18", OPT_OUT, "STOP"),
    ("\u1d07\u0274\u1d05", OPT_OUT, "END"),
    ("\u1d04\u1d00\u0274\u1d04\u1d07\u029f", OPT_OUT, "CANCEL"),
    ("\u1d1c\u0274\ua731\u1d1c\u0299\ua731\u1d04\u0280\u026a\u0299\u1d07", OPT_OUT, "UNSUBSCRIBE"),
    ("\ua731\u1d1b\u1d00\u0280\u1d1b", OPT_IN, "START"),
    # Opt-in words.
    ("ＳＴＡＲＴ", OPT_IN, "START"),
    ("\u201cStart\u201d", OPT_IN, "START"),
    ("start 👍", OPT_IN, "START"),
    ("S\u200bTART", OPT_IN, "START"),
    ("(unstop)", OPT_IN, "UNSTOP"),
    ("Yes 👍", OPT_IN, "YES"),
    ("YES!!!", OPT_IN, "YES"),
    ("yes yes", OPT_IN, "YES"),
    ("ＹＥＳ", OPT_IN, "YES"),
    ("ЅТАRТ", OPT_IN, "START"),
    ("уеѕ", OPT_IN, "YES"),
    # Help words.
    ("Ｈｅｌｐ", HELP, "HELP"),
    ("help?", HELP, "HELP"),
    ("¿INFO?", HELP, "INFO"),
    ("HELP 🙏", HELP, "HELP"),
    ("info info", HELP, "INFO"),
    ("НЕLР", HELP, "HELP"),
    ("ІΝFО?", HELP, "INFO"),
]

# Emoji that are letters too spelling a keyword: regional indicator symbols and the negative
# squared A, B, O and P. Read as letters as well as emoji, so ``match_key`` (the first
# reading) is not the word but one of ``match_keys`` is.
EMOJI_LETTER_VARIANTS: list[tuple[str, KeywordKind, str]] = [
    ("🆂🆃🅾🅿", OPT_OUT, "STOP"),
    ("🆂🆃🅾\ufe0f🅿\ufe0f", OPT_OUT, "STOP"),
    ("🆂🆃🅰🆁🆃", OPT_IN, "START"),
    ("🇸🇹🇴🇵", OPT_OUT, "STOP"),
    ("🇸🇹🇴🇵!", OPT_OUT, "STOP"),
    ("🇸🇹🇴🇵 🛑", OPT_OUT, "STOP"),
    ("🇸\u200b🇹\u200b🇴\u200b🇵", OPT_OUT, "STOP"),
    ("🇸🇹🇴🇵 🇸🇹🇴🇵", OPT_OUT, "STOP"),
    ("🇪🇳🇩", OPT_OUT, "END"),
    ("🇶🇺🇮🇹", OPT_OUT, "QUIT"),
    ("🇸🇹🇦🇷🇹", OPT_IN, "START"),
    ("🇾🇪🇸", OPT_IN, "YES"),
    ("🇭🇪🇱🇵", HELP, "HELP"),
]

# Messages that merely contain a keyword, or are none: not keywords, whatever their spelling.
NOT_KEYWORDS = [
    "stop by at 5",
    "Stop by at 5 🙂",
    "don't stop",
    "Don\u2019t stop 🛑",
    "please don't stop",
    "can't stop laughing",
    "STOP by later 😊",
    "ＳＴＯＰ ＢＹ",
    "stop-by",
    "Stop & Shop",
    "stop it",
    "Stop, please",
    "okay stop",
    "stop stopping",
    "nonstop",
    "unstoppable",
    "stopp",
    "STOPSTOP",
    "stop!stop",
    "S T O P",
    "S.T.O.P",
    "STOP2",
    "STOP'S",
    "opt outt",
    "Opt-outs are annoying",
    "yes please",
    "start over",
    "help me",
    "more info please",
    "the end",
    "end of the day",
    "quit it",
    "cancel my appointment",
    # Look-alikes and enclosed letters change no rule about what merely contains a keyword.
    "ЅТОР ВУ",
    "ѕтор іt",
    "ЅТОРР",
    "Ѕ Т О Р",
    "🅢🅣🅞🅟🅟",
    "⒮⒯⒪⒫ ⒝⒴",
    "🇸🇹🇴🇵 by",
    "nonstop\u200btexting me",
    # Genuine Russian and Greek words stay what they are: "no", "yes" (not YES).
    "нет",
    "ΝΑΙ",
    # Flags: two, and one that spells ST.
    "🇺🇸🇲🇽",
    "🇸🇹",
    "\u200b",
    "🛑",
    "👍",
    "!!!",
    "\u201c\u201d",
    "",
    "   ",
]

# (message, revocation phrase) with detection on; none of them is a keyword with it off.
REVOCATIONS = [
    ("Stop texting me 🛑", "stop texting me"),
    ("ＳＴＯＰ ＴＥＸＴＩＮＧ ＭＥ", "stop texting me"),
    ("STOP TEXTING ME!!!", "stop texting me"),
    ("stop\u00a0texting\u00a0me", "stop texting me"),
    ("Please stop texting me\u200b", "stop texting me"),
    ("S\u0336t\u0336o\u0336p\u0336 texting me", "stop texting me"),
    ("please, stop\u2014texting me", "stop texting me"),
    ("Don\u2019t text me", "don't text me"),
    ("DON\u02bcT TEXT ME", "don't text me"),
    ("don`t text me", "don't text me"),
    ("Remove me from your list 🙏", "remove me from your list"),
    ("\u201cleave me alone\u201d", "leave me alone"),
    ("Wröng number", "wrong number"),
    ("wrong number!!", "wrong number"),
    ("ＵＮＳＵＢＳＣＲＩＢＥ ＭＥ", "unsubscribe me"),
    # An invisible character between the words of a phrase is a space there.
    ("stop\u200btexting me", "stop texting me"),
    ("STOP\u200bTEXTING\u200bME", "stop texting me"),
    ("Stop\u2060texting\u2060me", "stop texting me"),
    ("stop\u00adtexting me", "stop texting me"),
    ("wrong\u200dnumber", "wrong number"),
    # Look-alikes and enclosed letters.
    ("Ѕtop tеxting mе", "stop texting me"),
    ("ΤΑΚΕ ΜΕ OFF YOUR LIST", "take me off your list"),
    ("🅢🅣🅞🅟 🅣🅔🅧🅣🅘🅝🅖 🅜🅔", "stop texting me"),
    ("⒮⒯⒪⒫ ⒯⒠⒳⒯⒤⒩⒢ ⒨⒠", "stop texting me"),
    ("𝘀𝘁𝗼𝗽 𝘁𝗲𝘅𝘁𝗶𝗻𝗴 𝗺𝗲", "stop texting me"),
    ("🇸🇹🇴🇵 texting me", "stop texting me"),
]


def variant_ids(rows: list[Any]) -> list[str]:
    return [ascii(row[0] if isinstance(row, tuple) else row) for row in rows]


# --- pure: normalisation and classification --------------------------------------------------


def test_there_are_enough_variants() -> None:
    assert len(VARIANTS) >= 60
    assert len(NOT_KEYWORDS) >= 30
    bodies = [body for body, _, _ in VARIANTS + EMOJI_LETTER_VARIANTS]
    assert len(set(bodies)) == len(bodies)


@pytest.mark.parametrize(
    "body",
    [
        "START \U0001f1f8\U0001f1f9\U0001f1f4\U0001f1f5",
        "\U0001f1f8\U0001f1f9\U0001f1f4\U0001f1f5 START",
        "YES \U0001f1f8\U0001f1f9\U0001f1f4\U0001f1f5",
        "HELP \U0001f1f8\U0001f1f9\U0001f1f4\U0001f1f5",
        "UNSTOP \U0001f1f6\U0001f1fa\U0001f1ee\U0001f1f9",
        "START\u200b\U0001f1f8\U0001f1f9\U0001f1f4\U0001f1f5",  # joined by a zero-width space
    ],
)
def test_a_reading_that_holds_an_opt_out_word_is_no_opt_in(body: str) -> None:
    """The emoji reading says START; the letters' reading says START STOP: no clear opt-in."""
    assert classify(body) == Classification(KeywordKind.NONE)
    assert classify(body, REVOCATION_ON).kind is not KeywordKind.OPT_IN


def test_a_flag_beside_an_opt_in_leaves_it_an_opt_in() -> None:
    assert classify("\U0001f1fa\U0001f1f8 START") == Classification(OPT_IN, "START")


@pytest.mark.parametrize(("body", "kind", "word"), VARIANTS, ids=variant_ids(VARIANTS))
def test_variant_is_recognised(body: str, kind: KeywordKind, word: str) -> None:
    assert classify(body) == Classification(kind, word)
    # Revocation detection changes nothing for a keyword.
    assert classify(body, REVOCATION_ON) == Classification(kind, word)
    assert match_key(body) == word


@pytest.mark.parametrize(
    ("body", "kind", "word"), EMOJI_LETTER_VARIANTS, ids=variant_ids(EMOJI_LETTER_VARIANTS)
)
def test_emoji_letters_spelling_a_keyword_are_recognised(
    body: str, kind: KeywordKind, word: str
) -> None:
    assert classify(body) == Classification(kind, word)
    assert classify(body, REVOCATION_ON) == Classification(kind, word)
    assert word in match_keys(body)
    # Read first as emoji: the normalised text keeps them.
    assert match_keys(body)[0] == match_key(body) != word


def test_emoji_letters_around_a_keyword_stay_emoji() -> None:
    # Read as letters these would be "USSTOPUS", "STOP US" or "STOP P": the emoji reading
    # matches.
    for body in ("🇺🇸STOP🇺🇸", "STOP 🇺🇸", "🇲🇽 stop", "STOP 🅿\ufe0f", "🅰\ufe0f🅱\ufe0f stop"):
        assert classify(body) == Classification(OPT_OUT, "STOP"), ascii(body)
        assert match_key(body) == "STOP"
    assert match_keys("🇺🇸STOP🇺🇸") == ("STOP", "USSTOPUS")
    # A flag that spells an opt-in word after an opt-out word: still the opt-out.
    assert classify("STOP 🇾🇪🇸") == Classification(OPT_OUT, "STOP")


@pytest.mark.parametrize("body", NOT_KEYWORDS, ids=variant_ids(NOT_KEYWORDS))
def test_message_that_is_not_a_keyword(body: str) -> None:
    assert classify(body) == Classification(NONE, "")
    assert classify(body, REVOCATION_ON) == Classification(NONE, "")


@pytest.mark.parametrize(("body", "phrase"), REVOCATIONS, ids=variant_ids(REVOCATIONS))
def test_revocation_phrase_variant(body: str, phrase: str) -> None:
    assert classify(body) == Classification(NONE, "")
    assert classify(body, REVOCATION_ON) == Classification(OPT_OUT, phrase)


@pytest.mark.parametrize(
    "body",
    [body for body, _, _ in VARIANTS + EMOJI_LETTER_VARIANTS]
    + NOT_KEYWORDS
    + [body for body, _ in REVOCATIONS],
)
def test_normalisation_is_idempotent(body: str) -> None:
    once = normalize_keyword(body)
    assert normalize_keyword(once) == once
    assert match_key(once) == match_key(body)
    assert match_key(match_key(body)) == match_key(body)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("arrêt", "ARRÊT"),
        ("ARRE\u0302T", "ARRÊT"),
        ("  Opt--out!! ", "OPT OUT"),
        ("Ｓｉ", "SI"),
        ("rōkō", "RŌKŌ"),
        ("रोको", "रोको"),
        ("стоп!", "СТОП"),
        ("🛑", "🛑"),
        ("🛑🛑 🛑", "🛑"),
        ("👍🏽👍🏽", "👍🏽"),
        ("?!.", ""),
        ("\u200b\u200d", ""),
        ("S\u0336", "S"),
        # Look-alikes keep their script in the normalised text; enclosed letters are letters.
        ("ѕтор!", "ЅТОР"),
        ("stoР", "STOР"),
        ("ΝΑΙ", "ΝΑΙ"),
        ("🅢🅣🅞🅟", "STOP"),
        ("⒮⒯⒪⒫", "STOP"),
        ("🇸🇹🇴🇵", "🇸🇹🇴🇵"),
    ],
)
def test_normalize_keyword_keeps_real_letters(raw: str, expected: str) -> None:
    assert normalize_keyword(raw) == expected


def test_the_look_alike_letters_are_exactly_the_documented_ones() -> None:
    # Cyrillic capitals, the small letters that look like Latin ones, Greek capitals, omicron.
    assert match_key("АВЕКМНОРСТХЅІЈ") == "ABEKMHOPCTXSIJ"
    assert match_key("аеорсхуѕіј") == "AEOPCXYSIJ"
    assert match_key("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧ") == "ABEZHIKMNOPTYX"
    assert match_key("ο") == "O"
    # Matching compares capitals: a small letter reads as its capital.
    assert match_key("твкмн") == "TBKMH"
    # With an accent, as the Latin letter without it.
    assert match_key("ЁӦЇΆΌ") == "EOIAO"
    # Letters that look like no Latin letter stay as they are.
    assert match_key("ДГИЛПЦЧШЩЪЫЬЭЮЯЖЗБФ") == "ДГИЛПЦЧШЩЪЫЬЭЮЯЖЗБФ"
    assert match_key("ΓΔΘΛΞΠΣΦΨΩ") == "ΓΔΘΛΞΠΣΦΨΩ"
    assert classify("ΣTOP") == Classification(NONE, "")
    # Cyrillic С is C, never S.
    assert match_key("СТОР") == "CTOP"
    assert classify("СТОР") == Classification(NONE, "")


def test_enclosed_letters_nfkc_leaves_alone_are_the_letters_they_enclose() -> None:
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    for first in (0x1F150, 0x249C, 0x1F110):
        assert normalize_keyword("".join(chr(first + i) for i in range(26))) == alphabet
    # Negative squared: letters, but A, B, O and P read both as emoji and as letters.
    squared = "".join(chr(0x1F170 + i) for i in range(26))
    # (As emoji, the leading 🅰🅱 are stripped like any emoji around a word.)
    assert match_keys(squared) == (f"CDEFGHIJKLMN{squared[14:16]}QRSTUVWXYZ", alphabet)
    flags = "".join(chr(0x1F1E6 + i) for i in range(26))
    assert match_keys(flags) == (flags, alphabet)


def test_look_alikes_change_neither_the_words_stored_nor_the_word_reported() -> None:
    # Extra words are stored as normalised: in their own letters.
    outs, ins = validate_extra_words(["стоп", "ТАСО"], ["ΝΑΙ"])
    assert outs == frozenset({"СТОП", "ТАСО"}) and ins == frozenset({"ΝΑΙ"})
    settings = KeywordSettings(outs, ins)
    # The word reported is the one configured, whatever letters the text used.
    assert classify("TACO", settings) == Classification(OPT_OUT, "ТАСО")
    assert classify("ТАСО", settings) == Classification(OPT_OUT, "ТАСО")
    assert classify("ναι", settings) == Classification(OPT_IN, "ΝΑΙ")
    assert classify("NAI", settings) == Classification(OPT_IN, "ΝΑΙ")


def test_a_russian_stop_is_a_locations_word_not_a_built_in_one() -> None:
    # The built-in words are the carriers' English ones; other languages are the location's.
    assert classify("стоп") == Classification(NONE, "")
    settings = KeywordSettings(extra_opt_out_words=frozenset({"СТОП"}))
    # Latin C, T and O are the look-alikes of Cyrillic С, Т and О, so "CTOП" is СТОП too.
    for body in ("стоп", "СТОП", "Стоп!", "стоп стоп", "«Стоп»", "CTOП", "ＣＴＯП"):
        assert classify(body, settings) == Classification(OPT_OUT, "СТОП"), ascii(body)
    assert classify("стоп машина", settings) == Classification(NONE, "")


def test_an_invisible_character_between_phrase_words_is_read_as_a_space() -> None:
    # Inside a word it is dropped, between words it is a space: both readings are tried.
    for body, phrase in (
        ("stop\u200btexting me", "stop texting me"),
        ("ST\u200bOP texting me", "stop texting me"),
        ("stop\u200b\u200btexting", "stop texting"),
        ("no\u2060more\u2060texts", "no more texts"),
    ):
        assert classify(body, REVOCATION_ON) == Classification(OPT_OUT, phrase), ascii(body)
    # A space does not make a phrase of words that are not it.
    for body in ("nonstop\u200btexting me", "stop\u200btext\u200bme", "stopt\u200bexting me"):
        assert classify(body, REVOCATION_ON) == Classification(NONE, ""), ascii(body)
    # Whole-message keywords still drop it: "OPT\u200bOUT" is OPTOUT, "STOP\u200bSTOP" no word.
    assert classify("OPT\u200bOUT") == Classification(OPT_OUT, "OPTOUT")
    assert classify("STOP\u200bSTOP") == Classification(NONE, "")


def test_accents_do_not_defeat_a_locations_words_and_the_configured_word_is_reported() -> None:
    settings = KeywordSettings(extra_opt_out_words=frozenset({"TERMINÉ"}))
    for body in ("termine", "TERMINÉ", "Terminé !", "TERMINE\u0301", "ＴＥＲＭＩＮＥ"):
        assert classify(body, settings) == Classification(OPT_OUT, "TERMINÉ"), ascii(body)
    both = KeywordSettings(extra_opt_out_words=frozenset({"TERMINÉ", "TERMINE"}))
    assert classify("terminé", both) == Classification(OPT_OUT, "TERMINÉ")
    assert classify("termine", both) == Classification(OPT_OUT, "TERMINE")


def test_a_symbol_opt_out_word_matches_only_the_symbol() -> None:
    outs, ins = validate_extra_words(["🛑"], [])
    assert outs == frozenset({"🛑"}) and ins == frozenset()
    settings = KeywordSettings(extra_opt_out_words=outs)
    assert classify("🛑", settings) == Classification(OPT_OUT, "🛑")
    assert classify(" 🛑🛑 ", settings) == Classification(OPT_OUT, "🛑")
    assert classify("🛑 see you", settings).kind is NONE
    assert classify("👍", settings).kind is NONE


# --- pure: opt-in words that would read opt-outs ----------------------------------------------

# Opt-in words a location may not add: each is, contains or is contained in opt-out wording.
OVERLAPPING_OPT_IN = [
    "STOP TEXTING ME",
    "Stop texting me",
    "stop texting",
    "OPT-OUT",
    "opt out",
    "OPTOUT",
    "ST\u200bOP",
    "ＳＴＯＰ",
    "S TOP",
    "S.T.O.P",
    "STÖP",
    "stop stop",
    "STOP PLEASE",
    "please stop",
    "DON'T TEXT ME",
    "Don\u2019t text me",
    "DONT TEXT",
    "text me",
    "REMOVE ME",
    "wrong number",
    "UNSUBSCRIBE ME",
    "no more",
    "HELP ME",
    "ＨＥＬＰ",
    "INFO",
    "end",
    "leave",
    "me",
    # Look-alikes and enclosed letters of opt-out wording.
    "ЅТОР",
    "ѕтор",
    "STOР",
    "SΤΟΡ",
    "🅢🅣🅞🅟",
    "⒮⒯⒪⒫",
    "S🇹OP",
    "ОРТ ОUТ",
    "Ѕtop tеxting mе",
    "НЕLР",
]

# Opt-in words that overlap nothing: still accepted.
ACCEPTED_OPT_IN = [
    "SUBSCRIBE",
    "OK",
    "COMENZAR",
    "SI",
    "SÍ",
    "OUI",
    "GO ON",
    "RESTART",
    "RESUME",
    "CONTINUE",
    "JA",
    "ΝΑΙ",
    "ДА",
    "СТАРТ",
]


@pytest.mark.parametrize("raw", OVERLAPPING_OPT_IN, ids=variant_ids(OVERLAPPING_OPT_IN))
def test_an_overlapping_opt_in_word_is_refused_by_name(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_extra_words([], [raw])
    [violation] = caught.value.violations
    assert violation.field == "extra_opt_in_words"
    assert repr(raw) in violation.description
    assert "overlaps" in violation.description


@pytest.mark.parametrize("raw", OVERLAPPING_OPT_IN, ids=variant_ids(OVERLAPPING_OPT_IN))
def test_an_overlapping_stored_opt_in_word_is_ignored(raw: str) -> None:
    for detect in (False, True):
        stored = KeywordSettings(
            extra_opt_in_words=frozenset({raw, "COMENZAR"}), detect_revocation_phrases=detect
        )
        effective = effective_settings(stored)
        assert effective.settings.extra_opt_in_words == frozenset({"COMENZAR"})
        assert [(i.field, i.word) for i in effective.ignored] == [("extra_opt_in_words", raw)]
        # Texting the word itself, in any spelling, never opts in.
        for body in (raw, raw.lower(), f"{raw}!", f'"{raw}" 🙏'):
            assert classify(body, stored).kind is not OPT_IN, ascii(body)
        assert classify("comenzar", stored) == Classification(OPT_IN, "COMENZAR")


@pytest.mark.parametrize("raw", ACCEPTED_OPT_IN)
def test_an_opt_in_word_overlapping_nothing_is_accepted(raw: str) -> None:
    outs, ins = validate_extra_words(["ARRET"], [raw])
    word = normalize_keyword(raw)
    assert ins == frozenset({word}) and outs == frozenset({"ARRET"})
    settings = KeywordSettings(outs, ins)
    assert classify(raw.lower(), settings) == Classification(OPT_IN, word)
    assert effective_settings(settings).ignored == ()


def test_every_offending_word_is_named_at_once() -> None:
    offending = ["STOP TEXTING ME", "OPT-OUT", "ST\u200bOP", "help me", "alto!", "\u200b", "👍"]
    with pytest.raises(InvalidArgument) as caught:
        validate_extra_words(["ALTO"], [*offending, "COMENZAR", "SUBSCRIBE"])
    violations = caught.value.violations
    opt_in = [v.description for v in violations if v.field == "extra_opt_in_words"]
    assert len(opt_in) == len(offending)
    for raw in offending:
        assert sum(repr(raw) in text for text in opt_in) == 1, raw
    assert not any("COMENZAR" in text or "SUBSCRIBE" in text for text in opt_in)
    # ALTO is both an extra opt-out and an extra opt-in word: both lists say so.
    assert any(v.field == "extra_opt_out_words" and "ALTO" in v.description for v in violations)
    assert any("extra opt-out word ALTO" in text for text in opt_in)


def test_an_opt_in_word_may_not_be_a_look_alike_of_an_extra_opt_out_word() -> None:
    # Cyrillic А, Т and О: the location's opt-out word reads as TACO.
    with pytest.raises(InvalidArgument) as caught:
        validate_extra_words(["ТАСО"], ["taco", "COMENZAR"])
    fields = sorted(v.field for v in caught.value.violations)
    assert fields == ["extra_opt_in_words", "extra_opt_out_words"]
    [opt_in] = [v.description for v in caught.value.violations if v.field == "extra_opt_in_words"]
    assert "'taco'" in opt_in and "extra opt-out word ТАСО" in opt_in
    # Stored so anyway, the opt-in word is ignored and TACO opts out.
    stored = KeywordSettings(frozenset({"ТАСО"}), frozenset({"TACO", "COMENZAR"}))
    assert effective_settings(stored).settings.extra_opt_in_words == frozenset({"COMENZAR"})
    assert classify("taco", stored) == Classification(OPT_OUT, "ТАСО")


def test_an_extra_opt_out_word_may_not_be_an_opt_in_or_help_word_in_any_spelling() -> None:
    for raw in (
        "ＳＴＡＲＴ",
        "STÁRT",
        "st\u200bart",
        "YES!!",
        "(unstop)",
        "Ｈｅｌｐ",
        "INFO 🙏",
        "ЅТАRТ",
        "уеѕ",
        "НЕLР",
        "🅢🅣🅐🅡🅣",
        "🇸🇹🇦🇷🇹",
    ):
        with pytest.raises(InvalidArgument) as caught:
            validate_extra_words([raw], [])
        [violation] = caught.value.violations
        assert violation.field == "extra_opt_out_words", raw
        assert repr(raw) in violation.description


def test_repeats_of_built_in_words_in_any_spelling_are_not_stored() -> None:
    outs, ins = validate_extra_words(
        ["ＳＴＯＰ", "STÖP", "stop stop", "ЅТОР", "🅢🅣🅞🅟", "ARRET"], ["ＳＴＡＲＴ", "Yes", "ЅТАRТ"]
    )
    assert outs == frozenset({"ARRET"})
    assert ins == frozenset()


def test_an_opt_out_reading_wins_whatever_is_stored() -> None:
    # Settings no update accepts today, as they may have been stored before.
    stored = KeywordSettings(
        extra_opt_out_words=frozenset({"ALTO", "ＳＴＡＲＴ", "\u200b"}),
        extra_opt_in_words=frozenset({"ALTO", "STOP TEXTING ME", "OPT-OUT", "\u200b", "SI"}),
        detect_revocation_phrases=True,
    )
    assert classify("alto", stored) == Classification(OPT_OUT, "ALTO")
    assert classify("Stop texting me", stored) == Classification(OPT_OUT, "stop texting me")
    assert classify("opt-out", stored) == Classification(OPT_OUT, "OPT OUT")
    # A stored opt-out word that is an opt-in word reads as an opt-out (never the reverse).
    assert classify("START", stored) == Classification(OPT_OUT, "START")
    # Words that normalise to nothing match nothing: an emoji or an empty text is no keyword.
    for body in ("\u200b", "", "👍", "!!!"):
        assert classify(body, stored) == Classification(NONE, ""), ascii(body)
    assert classify("si", stored) == Classification(OPT_IN, "SI")
    for body, kind, word in VARIANTS:
        if kind is OPT_OUT:
            assert classify(body, stored) == Classification(OPT_OUT, word), ascii(body)
    ignored = {(i.field, i.word) for i in effective_settings(stored).ignored}
    assert ignored == {
        ("extra_opt_out_words", "\u200b"),
        ("extra_opt_in_words", "ALTO"),
        ("extra_opt_in_words", "STOP TEXTING ME"),
        ("extra_opt_in_words", "OPT-OUT"),
        ("extra_opt_in_words", "\u200b"),
    }
