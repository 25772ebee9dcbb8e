"""SMS keyword classification: what an inbound text asks for.

Matching is on the whole message once normalised (``normalize_keyword``), to match what phones
really send:

- Unicode NFKC: fullwidth, mathematical and circled letters and ligatures read as plain letters;
  so do the enclosed letters NFKC leaves alone (``_LETTER_SYMBOLS``): negative circled and
  negative squared letters ("🅢🅣🅞🅟", "🆂🆃🆄🅳🆈"), and parenthesised ones ("⒮⒯⒪⒫", which NFKC
  would make "(s)(t)(o)(p)");
- invisible characters dropped: format characters (zero-width space and joiners, BOM, soft
  hyphen, bidi marks), variation selectors, Hangul fillers, and combining marks NFKC could not
  join to a Latin letter (strike-through, "Zalgo" text);
- quotes, brackets, emoji, symbols and punctuation around the message and around each word
  stripped, a dash between words read as a space, runs of whitespace made one space;
- repeats collapsed: "STOP STOP", "Stop, stop!!!", "opt out opt out" read as one word;
- any case, and accents on Latin letters ignored (``match_key``): "STÖP" is STOP, "arret"
  matches a location's ARRÊT; the word reported keeps its accents;
- Cyrillic and Greek letters that look like Latin ones read as those (``match_key``, after
  Unicode's confusables, cut to the true look-alikes in ``_CYRILLIC_LOOK_ALIKES`` and
  ``_GREEK_LOOK_ALIKES``): "ЅТОР" in Cyrillic letters and "STOР" with a Cyrillic Р are STOP.
  This applies to every word whatever its script, to the message and to the location's words
  alike, so it only ever makes more texts match a configured word: a genuinely Russian word
  compares as its look-alike letters too ("СТОП" as "CTOП"), and a location's СТОП still
  matches "стоп". Normalised text (the words stored and reported) keeps its own letters;
- emoji that are letters too are read twice (``match_keys``): as emoji, stripped as above, and
  as the letters they stand for. They are the regional indicator symbols, which make flags in
  pairs ("🇺🇸STOP🇺🇸" is STOP) and spell words ("🇸🇹🇴🇵" is STOP too), and the negative squared
  A, B, O and P, which are also emoji ("STOP 🅿️" stays STOP, "🆂🆃🅾🅿" is STOP).

So "Stop", ' "STOP" ', "(stop)", "¡STOP!", "STOP 🛑", fullwidth STOP, "opt-out" and "STOP" with
a trailing zero-width space match; "stop by tomorrow", "don't stop", "S T O P" and "stopp" do
not. A message of only emoji or symbols keeps its symbols ("🛑"), so a location's symbol
opt-out word can match it. UNSTOP is an opt-in word, as the carriers treat it.

Revocation phrases (off by default, per location) implement the "any reasonable means"
standard for revoking consent: when enabled, a message containing one of
``REVOCATION_PHRASES`` as whole words is an opt-out too, with the same normalisation (curly
apostrophes read as "'"): "Stop texting me 🛑" and a fullwidth STOP TEXTING ME match. The
invisible characters of a message are tried both ways there, dropped and as a space: phones
put them inside words and between them alike, and a zero-width space dropped between "stop"
and "texting" would otherwise join the two.

An opt-out never reads as an opt-in. Classification is ordered opt-out words (built-in and the
location's, in any reading of the message), revocation phrases, opt-in words, help words. And
an extra opt-in word may not overlap any opt-out wording: it may not be, contain or be
contained in (as whole words, and also with the spaces between words ignored, in any reading)
an opt-out word, a help word, a revocation phrase or one of the location's extra opt-out
words, and it needs a letter or digit. ``validate_extra_words`` refuses such words;
``effective_settings`` drops them from settings stored before this rule, and ``classify``
applies it to whatever settings it is given.
"""

# The look-alike letters in the docstrings and comments are the point of them.
# ruff: noqa: RUF002, RUF003

from __future__ import annotations

import enum
import functools
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TypeVar

from dnd_server.domain.errors import FieldViolation, InvalidArgument

OPT_OUT_WORDS: frozenset[str] = frozenset(
    {
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
    }
)
OPT_IN_WORDS: frozenset[str] = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS: frozenset[str] = frozenset({"HELP", "INFO"})

# Opt-in words that act only when the contact currently has SMS DND.
CONDITIONAL_OPT_IN_WORDS: frozenset[str] = frozenset({"YES"})

# --- built-in words per language ---------------------------------------------------------------
#
# English (always on): the CTIA Messaging Principles and Best Practices and the US carriers'
# standard keywords (STOP, STOPALL, UNSUBSCRIBE, CANCEL, END, QUIT; START, UNSTOP, YES; HELP,
# INFO). French: Canada's wireless carriers (CWTA Canadian Common Short Code guidelines)
# require ARRET and AIDE beside STOP and HELP. Spanish: no carrier mandates Spanish words;
# PARAR, ALTO and CANCELAR (stop, halt, cancel) and AYUDA (help) are those Spanish-language
# programmes in the US accept. STOP, START and HELP are in every language: carriers honour
# them whatever the programme's language, and a word of several languages is answered in the
# location's default language.
#
# Opt-in words are chosen conservatively: an opt-in word must never be one spelling away from
# an opt-out word, so Spanish ALTA ("sign up", one letter from ALTO) is not one. SI and OUI
# (yes) act like YES: only while the contact has DND on the channel or a double opt-in waits
# (a confirmation "reply SI / OUI" of a double opt-in in that language). Locations add their
# own words per language (``LanguageWords``).

LANGUAGES: tuple[str, ...] = ("en", "es", "fr")
DEFAULT_LANGUAGE = "en"
LANGUAGE_NAMES: Mapping[str, str] = {"en": "English", "es": "Spanish", "fr": "French"}


@dataclass(frozen=True, slots=True)
class BuiltInWords:
    """One language's built-in keywords."""

    opt_out: frozenset[str]
    opt_in: frozenset[str]
    help: frozenset[str]
    # Opt-in words that act only while the contact has DND on the channel (YES).
    conditional_opt_in: frozenset[str] = frozenset()


BUILT_IN_WORDS: Mapping[str, BuiltInWords] = {
    "en": BuiltInWords(OPT_OUT_WORDS, OPT_IN_WORDS, HELP_WORDS, CONDITIONAL_OPT_IN_WORDS),
    "es": BuiltInWords(
        frozenset({"STOP", "PARAR", "ALTO", "CANCELAR"}),
        frozenset({"START", "SI"}),
        frozenset({"HELP", "AYUDA"}),
        frozenset({"SI"}),
    ),
    "fr": BuiltInWords(
        frozenset({"STOP", "ARRET", "ARRÊT"}),
        frozenset({"START", "OUI"}),
        frozenset({"HELP", "AIDE"}),
        frozenset({"OUI"}),
    ),
}
# Every language's words (the trust rules hold against all of them, on or off).
ALL_OPT_OUT_WORDS: frozenset[str] = frozenset(w for b in BUILT_IN_WORDS.values() for w in b.opt_out)
ALL_OPT_IN_WORDS: frozenset[str] = frozenset(w for b in BUILT_IN_WORDS.values() for w in b.opt_in)
ALL_HELP_WORDS: frozenset[str] = frozenset(w for b in BUILT_IN_WORDS.values() for w in b.help)

# Natural-language revocations, matched as whole words anywhere in the message (any case,
# punctuation ignored) when a location turns detection on.
REVOCATION_PHRASES: tuple[str, ...] = (
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
)

MAX_EXTRA_WORDS = 50
MAX_WORD_LENGTH = 32


class KeywordKind(enum.Enum):
    NONE = "NONE"
    OPT_OUT = "OPT_OUT"
    OPT_IN = "OPT_IN"
    HELP = "HELP"


@dataclass(frozen=True, slots=True)
class LanguageWords:
    """A location's extra words of one language (replies to them are in that language)."""

    language: str
    opt_out_words: frozenset[str] = frozenset()
    opt_in_words: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class KeywordSettings:
    """A location's additions to the default keywords (the defaults cannot be removed).

    ``extra_opt_out_words`` and ``extra_opt_in_words`` are of the location's
    ``default_language``; ``language_words`` hold extra words of a named language.
    ``languages``: the languages beyond English whose built-in opt-in and help words act
    (English always does; the opt-out words of every language always act).
    ``share_rcs_sms_opt_outs``: an opt-out (or opt-in) keyword on SMS or RCS acts on both
    channels for the number."""

    extra_opt_out_words: frozenset[str] = frozenset()
    extra_opt_in_words: frozenset[str] = frozenset()
    detect_revocation_phrases: bool = False
    languages: frozenset[str] = frozenset()
    default_language: str = DEFAULT_LANGUAGE
    language_words: tuple[LanguageWords, ...] = ()
    share_rcs_sms_opt_outs: bool = False

    @property
    def active_languages(self) -> tuple[str, ...]:
        """English and the languages turned on, in ``LANGUAGES`` order."""
        return tuple(lang for lang in LANGUAGES if lang == "en" or lang in self.languages)


@dataclass(frozen=True, slots=True)
class Classification:
    kind: KeywordKind
    # The keyword or phrase matched ("" for NONE).
    matched: str = ""
    # The languages the word matched is a word of (``LANGUAGES`` order; empty for NONE).
    languages: tuple[str, ...] = field(default=(), compare=False)
    # A built-in opt-in word that acts only while the contact has DND (YES, SI, OUI).
    only_with_dnd: bool = field(default=False, compare=False)

    @property
    def conditional(self) -> bool:
        """An opt-in that acts only when the contact has DND on the channel (YES)."""
        return self.kind is KeywordKind.OPT_IN and (
            self.only_with_dnd or self.matched in CONDITIONAL_OPT_IN_WORDS
        )

    def reply_language(self, default_language: str) -> str:
        """The language to answer in: the location's default when the word is of it (or of
        no language), else the word's first language."""
        if not self.languages or default_language in self.languages:
            return default_language
        return self.languages[0]


# --- normalisation -----------------------------------------------------------------------------

# Invisible characters that are not format characters (those are dropped by category):
# combining grapheme joiner, Hangul fillers, Khmer inherent vowels, Mongolian variation
# selectors, variation selectors.
_INVISIBLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0xE0100, 0xE01EF),
)

# Apostrophes phones send for "'" (in "don't"), read as "'" by revocation-phrase matching.
_APOSTROPHES = str.maketrans(
    dict.fromkeys("\u2018\u2019\u201b\u02bc\u02b9\u00b4`\u2032\uff07", "'")
)

# What separates the words of a phrase: anything but letters, digits and "'".
_NOT_PHRASE = re.compile(r"[^\w']|_")

_T = TypeVar("_T")


def _code_points(categories: frozenset[str]) -> list[int]:
    """Code points of ``categories`` (Unicode planes 0, 1 and 14 hold every one of them)."""
    return [
        code
        for code in (*range(0x20000), *range(0xE0000, 0xE1000))
        if unicodedata.category(chr(code)) in categories
    ]


def _char_class(codes: Iterable[int]) -> re.Pattern[str]:
    ranges: list[list[int]] = []
    for code in sorted(set(codes)):
        if ranges and ranges[-1][1] == code - 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    parts = (
        re.escape(chr(low)) + ("" if low == high else "-" + re.escape(chr(high)))
        for low, high in ranges
    )
    return re.compile(f"[{''.join(parts)}]")


_INVISIBLE = _char_class(
    [
        *_code_points(frozenset({"Cf"})),
        *(code for low, high in _INVISIBLE_RANGES for code in range(low, high + 1)),
    ]
)
# Combining marks of the first plane (a class of those alone is fast to search), and any
# character beyond it (whose marks are looked up one by one).
_COMBINING_BMP = _char_class(
    code for code in _code_points(frozenset({"Mn", "Me"})) if code < 0x10000
)
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")
# Dashes (category Pd) -> a space: "opt-out" is OPT OUT.
_DASHES = dict.fromkeys(_code_points(frozenset({"Pd"})), " ")


def _alphabet(first: int, a: str) -> dict[int, str]:
    """The 26 code points from ``first`` as the letters from ``a``."""
    return {first + i: chr(ord(a) + i) for i in range(26)}


_NEGATIVE_SQUARED = _alphabet(0x1F170, "A")  # NEGATIVE SQUARED LATIN CAPITAL LETTER A..Z
# Letters that are emoji too: negative squared A, B, O and P (blood types, parking) and
# REGIONAL INDICATOR SYMBOL LETTER A..Z, two of which make a flag ("🇺🇸") yet which also spell
# words ("🇸🇹🇴🇵"); a message that has any is read both ways (``_readings``).
_EMOJI_LETTERS: dict[int, str] = {
    **{code: letter for code, letter in _NEGATIVE_SQUARED.items() if letter in "ABOP"},
    **_alphabet(0x1F1E6, "A"),
}
_EMOJI_LETTER = _char_class(_EMOJI_LETTERS)

# Enclosed letters NFKC leaves as symbols (or, parenthesised ones, makes "(s)"), read as the
# letters they enclose before NFKC runs. Each range holds A to Z in order.
_LETTER_SYMBOLS: dict[int, str] = {
    **_alphabet(0x1F150, "A"),  # NEGATIVE CIRCLED LATIN CAPITAL LETTER A..Z
    **{code: letter for code, letter in _NEGATIVE_SQUARED.items() if code not in _EMOJI_LETTERS},
    **_alphabet(0x249C, "a"),  # PARENTHESIZED LATIN SMALL LETTER A..Z
    **_alphabet(0x1F110, "A"),  # PARENTHESIZED LATIN CAPITAL LETTER A..Z
    # Small capitals, the "fancy text" ꜱᴛᴏᴘ: LATIN LETTER SMALL CAPITAL A..Z, which NFKC
    # leaves alone and which have no upper case.
    **{
        ord(unicodedata.lookup(f"LATIN LETTER SMALL CAPITAL {letter}")): letter
        for letter in "ABCDEFGHIJKLMNOPRSTUVWYZ"
    },
    0xA7AF: "Q",  # LATIN LETTER SMALL CAPITAL Q
}
_LETTER_SYMBOL = _char_class(_LETTER_SYMBOLS)

# Cyrillic and Greek capitals read as the Latin capital they look like, by their Unicode
# names ("CYRILLIC CAPITAL LETTER VE" -> B). After Unicode's confusables (UTS #39,
# confusables.txt), cut to the letters that look the same in common fonts: Cyrillic С is C
# (never S), and letters that look like no Latin one, such as Greek Σ or Cyrillic П, are not
# here. Matching compares capitals, so a small letter reads as its capital does: the small
# а е о р с х у ѕ і ј and ο, which look like Latin small letters, and also т, к or ν, whose
# capitals Т, К and Ν look like T, K and N. Cyrillic У is here for у (y). A look-alike with
# an accent ("Ӧ") reads as the Latin letter without it, as Latin letters do.
_CYRILLIC_LOOK_ALIKES: Mapping[str, str] = {
    "A": "A",
    "VE": "B",
    "IE": "E",
    "KA": "K",
    "EM": "M",
    "EN": "H",
    "O": "O",
    "ER": "P",
    "ES": "C",
    "TE": "T",
    "HA": "X",
    "DZE": "S",
    "BYELORUSSIAN-UKRAINIAN I": "I",
    "JE": "J",
    "U": "Y",
}
_GREEK_LOOK_ALIKES: Mapping[str, str] = {
    "ALPHA": "A",
    "BETA": "B",
    "EPSILON": "E",
    "ZETA": "Z",
    "ETA": "H",
    "IOTA": "I",
    "KAPPA": "K",
    "MU": "M",
    "NU": "N",
    "OMICRON": "O",
    "RHO": "P",
    "TAU": "T",
    "UPSILON": "Y",
    "CHI": "X",
}


def _look_alike_table() -> dict[int, str]:
    """``str.translate`` table of the look-alikes, with their accented forms."""
    capitals = {
        unicodedata.lookup(f"{script} CAPITAL LETTER {name}"): latin
        for script, names in (("CYRILLIC", _CYRILLIC_LOOK_ALIKES), ("GREEK", _GREEK_LOOK_ALIKES))
        for name, latin in names.items()
    }
    table = {ord(ch): latin for ch, latin in capitals.items()}
    # Greek and Coptic, Cyrillic, Cyrillic Supplement, Greek Extended.
    for code in (*range(0x0370, 0x0530), *range(0x1F00, 0x2000)):
        parts = unicodedata.normalize("NFD", chr(code))
        base, marks = parts[0], parts[1:]
        if base in capitals and marks and all(unicodedata.combining(m) for m in marks):
            table[code] = capitals[base]
    return table


_LOOK_ALIKES = _look_alike_table()
# Searched before translating: ``str.translate`` is slow on text it leaves as it is.
_LOOK_ALIKE = _char_class(_LOOK_ALIKES)


def _latin(ch: str) -> bool:
    return unicodedata.name(ch, "").startswith("LATIN ")


def _decoration(base: str) -> bool:
    """Whether a combining mark after ``base`` (the last character that is not a mark) is
    decoration: after no letter, or after a Latin letter (NFKC has already joined the real
    accents to their letters); marks of other scripts stay."""
    return not base or not unicodedata.category(base).startswith("L") or _latin(base)


def _fold(text: str) -> str:
    """NFKC (enclosed letters as letters), upper case, invisible characters and decorative
    combining marks dropped."""
    if text.isascii():
        return text.upper()
    text = _INVISIBLE.sub("", text)
    if _LETTER_SYMBOL.search(text):
        text = text.translate(_LETTER_SYMBOLS)
    text = _INVISIBLE.sub(
        "", unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).upper())
    )
    return _without_decoration(text)


def _without_decoration(text: str) -> str:
    """``text`` without its decorative combining marks (``_decoration``)."""
    if not _COMBINING_BMP.search(text) and not any(
        unicodedata.category(ch) in ("Mn", "Me") for ch in _ASTRAL.findall(text)
    ):
        return text
    kept: list[str] = []
    base = ""
    for ch in text:
        category = unicodedata.category(ch)
        if category in ("Mn", "Me") and _decoration(base):
            continue
        if not category.startswith("M"):
            base = ch
        kept.append(ch)
    return "".join(kept)


def _word_char(ch: str) -> bool:
    return unicodedata.category(ch)[0] in "LN"


def _strip_word(token: str) -> str:
    """Drop what is not a letter or digit (or a mark on the last letter) at both ends."""
    start, end = 0, len(token)
    while start < end and not _word_char(token[start]):
        start += 1
    while end > start and not (_word_char(token[end - 1]) or _is_mark(token[end - 1])):
        end -= 1
    return token[start:end]


def _is_mark(ch: str) -> bool:
    return unicodedata.category(ch)[0] == "M"


def _collapse(items: Sequence[_T]) -> Sequence[_T]:
    """``items`` repeated k times -> one copy: [STOP, STOP] -> [STOP]."""
    n = len(items)
    for period in range(1, n // 2 + 1):
        if n % period == 0 and all(items[i] == items[i % period] for i in range(period, n)):
            return items[:period]
    return items


def normalize_keyword(text: str) -> str:
    """The form a message or a configured word is matched in (see the module docstring):
    words upper-cased and stripped of what surrounds them, one space between them, repeats
    collapsed; "" when nothing is left. A text of only symbols (emoji) keeps its symbols."""
    folded = _fold(text)
    spaced = folded.translate(_DASHES)
    words = [word for word in (_strip_word(token) for token in spaced.split()) if word]
    if words:
        return " ".join(_collapse(words))
    symbols = [ch for ch in folded if unicodedata.category(ch).startswith("S")]
    return "".join(_collapse(symbols))


_NON_ASCII = re.compile(r"[^\x00-\x7f]")


@functools.lru_cache(maxsize=4096)
def _unaccented(ch: str) -> str:
    return unicodedata.normalize("NFD", ch)[0] if _latin(ch) else ch


def _strip_accents(text: str) -> str:
    """Latin letters without their accents ("Ê" -> "E"); other scripts as they are."""
    if text.isascii():
        return text
    return _NON_ASCII.sub(lambda found: _unaccented(found.group()), text)


def _as_latin(folded: str) -> str:
    """Folded text with Cyrillic and Greek look-alikes as the Latin letters they look like
    (and the decorative marks they carried dropped, as on any Latin letter), and Latin
    letters without their accents."""
    if folded.isascii():
        return folded
    if _LOOK_ALIKE.search(folded):
        folded = _without_decoration(folded.translate(_LOOK_ALIKES))
    return _strip_accents(folded)


def match_key(text: str) -> str:
    """What matching compares: ``normalize_keyword`` with the accents of Latin letters
    dropped, so that combining marks cannot defeat it ("STÖP", Zalgo text) and "arret"
    matches ARRÊT, and with Cyrillic and Greek look-alikes as Latin letters ("ЅТОР" is
    STOP). The word reported stays the normalised one."""
    return _key(normalize_keyword(text))


def _key(word: str) -> str:
    """``match_key`` of a word already normalised."""
    if word.isascii():
        return word
    return " ".join(_collapse(_as_latin(word).split(" ")))


def _readings(text: str) -> tuple[str, ...]:
    """The ways ``text`` is read: as it is (``_EMOJI_LETTERS`` as emoji), then, when it has
    any of them, with them as the letters they stand for ("🇸🇹🇴🇵" is STOP)."""
    if text.isascii() or not _EMOJI_LETTER.search(text):
        return (text,)
    return (text, text.translate(_EMOJI_LETTERS))


def match_keys(text: str) -> tuple[str, ...]:
    """``match_key`` of each reading of ``text`` (``_readings``), the first reading's first,
    without repeats: a message matches a word when one of them is the word's."""
    return tuple(dict.fromkeys(match_key(reading) for reading in _readings(text)))


def _phrase_text(text: str) -> str:
    """Words of ``text`` for phrase matching: folded, as Latin letters (``_as_latin``),
    apostrophes as "'", anything else that is not a letter or digit a space; padded with
    spaces."""
    folded = _as_latin(_fold(text.translate(_APOSTROPHES)))
    return f" {' '.join(_NOT_PHRASE.sub(' ', folded).split())} "


def _phrase_texts(body: str) -> list[str]:
    """``_phrase_text`` of each reading of ``body``, and of each reading with its invisible
    characters as spaces instead of dropped: a zero-width space may stand inside a word
    (between "ST" and "OP") or between two (between "stop" and "texting"), and either way
    the phrase is found."""
    texts: list[str] = []
    for reading in _readings(body):
        texts.append(_phrase_text(reading))
        if not reading.isascii() and _INVISIBLE.search(reading):
            texts.append(_phrase_text(_INVISIBLE.sub(" ", reading)))
    return texts


_PHRASES: tuple[tuple[str, str], ...] = tuple(
    (f" {phrase.upper()} ", phrase) for phrase in REVOCATION_PHRASES
)


def revocation_phrase(body: str) -> str:
    """The first of ``REVOCATION_PHRASES`` ``body`` contains as whole words (in any of
    ``_phrase_texts``), or ""."""
    # One string to search: each text is padded with spaces, and no phrase holds a newline.
    text = "\n".join(_phrase_texts(body))
    for padded, phrase in _PHRASES:
        if padded in text:
            return phrase
    return ""


# --- opt-in words that would read opt-outs -----------------------------------------------------


@functools.lru_cache(maxsize=4096)
def _overlap_form(word: str) -> tuple[str, ...]:
    """The words of ``word`` for overlap checks: normalised, apostrophes dropped ("DON'T" is
    "DONT"), anything but letters, digits and marks a word break."""
    text = match_key(word.translate(_APOSTROPHES)).replace("'", "")
    return tuple("".join(ch if _word_char(ch) or _is_mark(ch) else " " for ch in text).split())


@functools.lru_cache(maxsize=4096)
def _overlap_forms(word: str) -> tuple[tuple[str, ...], ...]:
    """``_overlap_form`` of each reading of ``word`` (``_readings``), the first reading's
    first, without repeats."""
    return tuple(dict.fromkeys(_overlap_form(reading) for reading in _readings(word)))


def _inside(inner: tuple[str, ...], outer: tuple[str, ...]) -> bool:
    """``inner``'s letters, spaces ignored, run in ``outer`` from one word boundary to another:
    STOP is inside STOP TEXTING ME, S TOP inside STOP, OPTOUT inside OPT OUT; SUBSCRIBE is not
    inside UNSUBSCRIBE."""
    needle, haystack = "".join(inner), "".join(outer)
    if not needle:
        return False
    cuts = set(accumulate((len(w) for w in outer), initial=0))
    at = haystack.find(needle)
    while at != -1:
        if at in cuts and at + len(needle) in cuts:
            return True
        at = haystack.find(needle, at + 1)
    return False


def _overlaps(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    return _inside(a, b) or _inside(b, a)


_OPT_OUT_WORDING: tuple[tuple[str, tuple[str, ...]], ...] = (
    *((f"opt-out word {w}", _overlap_form(w)) for w in sorted(ALL_OPT_OUT_WORDS)),
    *((f"help word {w}", _overlap_form(w)) for w in sorted(ALL_HELP_WORDS)),
    *((f'revocation phrase "{p}"', _overlap_form(p)) for p in REVOCATION_PHRASES),
)


def opt_in_conflicts(word: str, extra_opt_out_words: Iterable[str] = ()) -> list[str]:
    """The opt-out wording ``word`` is, contains or is contained in, which bars it from being
    an opt-in word: built-in opt-out and help words, revocation phrases (whether or not
    detection is on), ``extra_opt_out_words``, in any reading of either (``_readings``); a
    word without a letter or digit (as it is read first) is barred too. Empty when it may be
    an opt-in word."""
    forms = _overlap_forms(word)
    if not forms[0]:
        return ["no letter or digit"]
    found = [
        what for what, other in _OPT_OUT_WORDING if any(_overlaps(form, other) for form in forms)
    ]
    for extra in sorted(set(extra_opt_out_words)):
        if any(_overlaps(form, other) for form in forms for other in _overlap_forms(extra)):
            found.append(f"extra opt-out word {extra}")
    return found


# --- settings ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IgnoredWord:
    """A stored word that does not act: ``field`` names its list, ``why`` the reason."""

    field: str
    word: str
    why: str


def _keys(words: Iterable[str]) -> dict[str, str]:
    """Each of ``match_keys`` of ``words`` -> the word; a word's first key before another
    word's other ones."""
    ordered = sorted(words)
    keys = {key: word for word in ordered for key in match_keys(word)[1:]}
    keys.update((match_key(word), word) for word in ordered)
    return keys


# English: the words the location's own (language-less) extra words are checked against.
_OPT_OUT_KEYS = _keys(OPT_OUT_WORDS)
_OPT_IN_KEYS = _keys(OPT_IN_WORDS)
_HELP_KEYS = _keys(HELP_WORDS)
# Every language's opt-in and help words: no extra opt-out word may be one.
_ANY_OPT_IN_OR_HELP_KEYS = frozenset(_keys(ALL_OPT_IN_WORDS)) | frozenset(_keys(ALL_HELP_WORDS))


@dataclass(frozen=True, slots=True)
class MatchedWord:
    """What a message matching a word reports: the word, its languages, and whether it is
    an opt-in word that acts only while the contact has DND."""

    word: str
    languages: tuple[str, ...]
    only_with_dnd: bool = False


@dataclass(frozen=True, slots=True)
class WordTable:
    """One kind's words: by normalised spelling (``exact``) and by ``match_keys``
    (``keyed``)."""

    exact: Mapping[str, MatchedWord]
    keyed: Mapping[str, MatchedWord]


# (words, language, words of them that act only with DND), highest priority last.
_Group = tuple[Iterable[str], str, frozenset[str]]


def _table(groups: Sequence[_Group]) -> WordTable:
    """The words of ``groups`` (later groups win a key they share): each key's languages
    are those of every group with a word of that key."""
    languages: dict[str, set[str]] = {}
    for words, language, _ in groups:
        for word in words:
            for key in match_keys(word):
                languages.setdefault(key, set()).add(language)

    def matched(word: str, key: str, conditional: frozenset[str]) -> MatchedWord:
        langs = tuple(lang for lang in LANGUAGES if lang in languages[key])
        return MatchedWord(word, langs, word in conditional)

    exact: dict[str, MatchedWord] = {}
    keyed: dict[str, MatchedWord] = {}
    for words, _, conditional in groups:
        ordered = sorted(words)
        for word in ordered:
            exact[word] = matched(word, match_key(word), conditional)
            for key in match_keys(word)[1:]:
                keyed[key] = matched(word, key, conditional)
        for word in ordered:
            keyed[match_key(word)] = matched(word, match_key(word), conditional)
    return WordTable(exact, keyed)


@dataclass(frozen=True, slots=True)
class EffectiveSettings:
    """Stored settings as they act: words normalised, unusable ones set aside in ``ignored``;
    ``opt_out``, ``opt_in`` and ``help`` hold every word that acts (built-in words of the
    location's languages first)."""

    settings: KeywordSettings
    ignored: tuple[IgnoredWord, ...]
    opt_out: WordTable
    opt_in: WordTable
    help: WordTable


def _effective_outs(raws: Iterable[str], field_name: str, ignored: list[IgnoredWord]) -> set[str]:
    outs: set[str] = set()
    for raw in sorted(raws):
        word = normalize_keyword(raw)
        if not word:
            ignored.append(IgnoredWord(field_name, raw, "empty once normalised"))
        elif match_key(word) not in _OPT_OUT_KEYS:
            outs.add(word)
    return outs


def _effective_ins(
    raws: Iterable[str], field_name: str, outs: set[str], ignored: list[IgnoredWord]
) -> set[str]:
    ins: set[str] = set()
    for raw in sorted(raws):
        word = normalize_keyword(raw)
        conflicts = opt_in_conflicts(word, outs)
        if conflicts:
            ignored.append(IgnoredWord(field_name, raw, "; ".join(conflicts)))
        elif match_key(word) not in _OPT_IN_KEYS:
            ins.add(word)
    return ins


@functools.lru_cache(maxsize=512)
def effective_settings(stored: KeywordSettings) -> EffectiveSettings:
    """What ``stored`` settings (perhaps written under older rules) do today.

    Every word is normalised again. An extra opt-out word keeps acting whatever it collides
    with (opt-out words are matched first, so it can only turn a message into an opt-out); one
    that normalises to nothing can no longer match and is ignored. An extra opt-in word that
    would read opt-outs (``opt_in_conflicts``: any language's opt-out wording and every extra
    opt-out word of the location) is ignored. Repeats of built-in words go. A language that is
    not one of ``LANGUAGES`` acts as the default language would."""
    ignored: list[IgnoredWord] = []
    default = stored.default_language if stored.default_language in LANGUAGES else "en"
    languages = frozenset(lang for lang in stored.languages if lang in LANGUAGES)
    outs = _effective_outs(stored.extra_opt_out_words, "extra_opt_out_words", ignored)
    per_language_outs: list[tuple[str, set[str]]] = []
    for i, words in enumerate(stored.language_words):
        lang = words.language if words.language in LANGUAGES else default
        found = _effective_outs(words.opt_out_words, f"language_words[{i}].opt_out_words", ignored)
        per_language_outs.append((lang, found))
    every_out = outs.union(*(found for _, found in per_language_outs))
    ins = _effective_ins(stored.extra_opt_in_words, "extra_opt_in_words", every_out, ignored)
    per_language_ins: list[tuple[str, set[str]]] = []
    for i, words in enumerate(stored.language_words):
        lang = words.language if words.language in LANGUAGES else default
        field_name = f"language_words[{i}].opt_in_words"
        per_language_ins.append(
            (lang, _effective_ins(words.opt_in_words, field_name, every_out, ignored))
        )
    settings = KeywordSettings(
        frozenset(outs),
        frozenset(ins),
        stored.detect_revocation_phrases,
        languages,
        default,
        tuple(
            LanguageWords(lw.language, frozenset(o), frozenset(i))
            for lw, (_, o), (_, i) in zip(
                stored.language_words, per_language_outs, per_language_ins, strict=True
            )
        ),
        stored.share_rcs_sms_opt_outs,
    )
    built_in = [BUILT_IN_WORDS[lang] for lang in settings.active_languages]
    none: frozenset[str] = frozenset()
    active = settings.active_languages
    return EffectiveSettings(
        settings,
        tuple(ignored),
        _table(
            [
                # The opt-out words of the languages not turned on act too (first: a
                # location's own spelling of one is the word reported): honouring an opt-out
                # is never wrong, ignoring one is.
                *(
                    (b.opt_out, lang, none)
                    for lang, b in BUILT_IN_WORDS.items()
                    if lang not in active
                ),
                (outs, default, none),
                *((found, lang, none) for lang, found in per_language_outs),
                *((b.opt_out, lang, none) for lang, b in zip(active, built_in, strict=True)),
            ]
        ),
        _table(
            [
                (ins, default, none),
                *((found, lang, none) for lang, found in per_language_ins),
                *(
                    (b.opt_in, lang, b.conditional_opt_in)
                    for lang, b in zip(active, built_in, strict=True)
                ),
            ]
        ),
        _table([(b.help, lang, none) for lang, b in zip(active, built_in, strict=True)]),
    )


# --- classification ------------------------------------------------------------------------------


def _found(kind: KeywordKind, found: MatchedWord) -> Classification:
    return Classification(kind, found.word, found.languages, found.only_with_dnd)


def classify(body: str, settings: KeywordSettings = KeywordSettings()) -> Classification:
    """What ``body`` asks for under ``settings`` (sanitised by ``effective_settings`` first):
    an opt-out word, then a revocation phrase (when detection is on), then an opt-in word,
    then a help word; so a message that reads as an opt-out is never an opt-in. Words of
    every language the location uses are looked for together, kind by kind.

    A word is matched on its ``match_key``; the word reported is the one configured (the
    message's own spelling when it is one of them, as "ARRÊT" and "ARRET" may both be).
    Each kind is looked for in every reading of the message (``_readings``) before the next
    kind, so no reading that is an opt-out can lose to one that is an opt-in. The
    classification names the languages of the word (a revocation phrase is English)."""
    effective = effective_settings(settings)
    readings = [(word, _key(word)) for word in map(normalize_keyword, _readings(body))]
    for word, key in readings:
        if word in effective.opt_out.exact:
            return _found(KeywordKind.OPT_OUT, effective.opt_out.exact[word])
        if key in effective.opt_out.keyed:
            return _found(KeywordKind.OPT_OUT, effective.opt_out.keyed[key])
    if effective.settings.detect_revocation_phrases:
        phrase = revocation_phrase(body)
        if phrase:
            return Classification(KeywordKind.OPT_OUT, phrase, ("en",))
    if len(readings) > 1 and _says_opt_out(body, effective):
        # "START 🇸🇹🇴🇵": one reading is START, the other says STOP as well; the message is
        # no clear opt-in (nor a request for help).
        return Classification(KeywordKind.NONE)
    for word, key in readings:
        if word in effective.opt_in.exact:
            return _found(KeywordKind.OPT_IN, effective.opt_in.exact[word])
        if key in effective.opt_in.keyed:
            return _found(KeywordKind.OPT_IN, effective.opt_in.keyed[key])
    for _, key in readings:
        if key in effective.help.keyed:
            return _found(KeywordKind.HELP, effective.help.keyed[key])
    return Classification(KeywordKind.NONE)


def _says_opt_out(body: str, effective: EffectiveSettings) -> bool:
    """Whether a reading of a message holds an opt-out word among its words, its invisible
    characters read as spaces too ("START\u200b🇸🇹🇴🇵" is START STOP)."""
    for reading in _readings(body):
        for text in {reading, _INVISIBLE.sub(" ", reading)}:
            padded = f" {_key(normalize_keyword(text))} "
            if any(f" {word} " in padded for word in effective.opt_out.keyed):
                return True
    return False


def _describe(raw: str, word: str) -> str:
    return repr(raw) if raw == word else f"{raw!r} ({word})"


def _listed(items: list[str], most: int = 2) -> str:
    shown = ", ".join(items[:most])
    return shown + (f" and {len(items) - most} more" if len(items) > most else "")


def validate_extra_words(
    opt_out: Iterable[str], opt_in: Iterable[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """Normalise a location's extra words; raise InvalidArgument for unusable ones, naming
    each: an opt-out word may not be an opt-in or help word (of any language), an opt-in word
    may not overlap any opt-out wording (``opt_in_conflicts``)."""
    settings = validate_settings(opt_out, opt_in)
    return settings.extra_opt_out_words, settings.extra_opt_in_words


@dataclass(frozen=True, slots=True)
class LanguageWordsInput:
    """Extra words of one language as a request gives them."""

    language: str
    opt_out_words: Sequence[str] = ()
    opt_in_words: Sequence[str] = ()


def validate_settings(
    opt_out: Iterable[str],
    opt_in: Iterable[str],
    detect_revocation_phrases: bool = False,
    languages: Iterable[str] = (),
    default_language: str = "",
    language_words: Sequence[LanguageWordsInput] = (),
    share_rcs_sms_opt_outs: bool = False,
) -> KeywordSettings:
    """A location's keyword settings from a request; raise InvalidArgument naming every
    unusable part: a language not of ``LANGUAGES`` (or a default one the location does not
    use), a language's extra words given twice, an extra opt-out word that is an opt-in or
    help word of any language (or an extra opt-in word of the location), an extra opt-in word
    that overlaps opt-out wording of any language or any of the location's extra opt-out
    words (``opt_in_conflicts``). ``default_language`` "" is English."""
    problems: list[FieldViolation] = []
    supported = ", ".join(LANGUAGES)
    chosen: set[str] = set()
    for i, lang in enumerate(languages):
        if lang not in LANGUAGES:
            problems.append(
                FieldViolation(f"languages[{i}]", f"{lang!r} is not one of {supported}")
            )
        elif lang != "en":
            chosen.add(lang)
    default = default_language or DEFAULT_LANGUAGE
    if default not in LANGUAGES:
        problems.append(
            FieldViolation("default_language", f"{default!r} is not one of {supported}")
        )
    elif default != "en" and default not in chosen:
        problems.append(
            FieldViolation(
                "default_language",
                f"{default!r} is not among languages: add it there to make it the default",
            )
        )
    seen: set[str] = set()
    for i, words in enumerate(language_words):
        if words.language not in LANGUAGES:
            problems.append(
                FieldViolation(
                    f"language_words[{i}].language",
                    f"{words.language!r} is not one of {supported}",
                )
            )
        elif words.language in seen:
            problems.append(
                FieldViolation(
                    f"language_words[{i}].language",
                    f"{words.language!r} is given twice; give each language's words once",
                )
            )
        seen.add(words.language)

    def clean(field_name: str, words: Iterable[str]) -> dict[str, list[str]]:
        """Normalised word -> the raw words that gave it, in order."""
        result: dict[str, list[str]] = {}
        for raw in words:
            word = normalize_keyword(raw)
            if any(unicodedata.category(ch) == "Cc" and not ch.isspace() for ch in raw):
                problems.append(FieldViolation(field_name, f"{raw!r} contains control characters"))
            elif not word:
                problems.append(FieldViolation(field_name, f"{raw!r} is empty once normalised"))
            elif len(word) > MAX_WORD_LENGTH:
                problems.append(
                    FieldViolation(
                        field_name, f"{raw!r} is longer than {MAX_WORD_LENGTH} characters"
                    )
                )
            else:
                result.setdefault(word, []).append(raw)
        if len(result) > MAX_EXTRA_WORDS:
            problems.append(FieldViolation(field_name, f"at most {MAX_EXTRA_WORDS} words"))
        return result

    def refuse(field_name: str, word: str, raws: list[str], why: str) -> None:
        # Each word as given is named (two spellings of one word are two violations).
        for raw in dict.fromkeys(raws):
            problems.append(FieldViolation(field_name, f"{_describe(raw, word)} {why}"))

    out_lists = [("extra_opt_out_words", clean("extra_opt_out_words", opt_out))]
    in_lists = [("extra_opt_in_words", clean("extra_opt_in_words", opt_in))]
    for i, words in enumerate(language_words):
        prefix = f"language_words[{i}]"
        out_lists.append(
            (f"{prefix}.opt_out_words", clean(f"{prefix}.opt_out_words", words.opt_out_words))
        )
        in_lists.append(
            (f"{prefix}.opt_in_words", clean(f"{prefix}.opt_in_words", words.opt_in_words))
        )
    every_out = {word for _, outs in out_lists for word in outs}
    every_in = {word for _, ins in in_lists for word in ins}
    taken = _ANY_OPT_IN_OR_HELP_KEYS | _keys(every_in).keys()
    for field_name, outs in out_lists:
        for word in sorted(outs):
            if any(key in taken for key in match_keys(word)):
                refuse(field_name, word, outs[word], "is already an opt-in or help word")
    for field_name, ins in in_lists:
        for word in sorted(ins):
            if match_key(word) in _OPT_IN_KEYS:
                continue
            if not _overlap_form(word):
                refuse(field_name, word, ins[word], "has no letter or digit")
                continue
            conflicts = opt_in_conflicts(word, every_out)
            if conflicts:
                refuse(
                    field_name,
                    word,
                    ins[word],
                    f"overlaps {_listed(conflicts)}; an opt-in word may not overlap opt-out "
                    "wording",
                )
    if problems:
        raise InvalidArgument(problems)

    def kept_outs(words: Mapping[str, list[str]]) -> frozenset[str]:
        return frozenset(word for word in words if match_key(word) not in _OPT_OUT_KEYS)

    def kept_ins(words: Mapping[str, list[str]]) -> frozenset[str]:
        return frozenset(word for word in words if match_key(word) not in _OPT_IN_KEYS)

    per_language = tuple(
        sorted(
            (
                LanguageWords(
                    words.language, kept_outs(out_lists[i + 1][1]), kept_ins(in_lists[i + 1][1])
                )
                for i, words in enumerate(language_words)
            ),
            key=lambda lw: LANGUAGES.index(lw.language),
        )
    )
    return KeywordSettings(
        kept_outs(out_lists[0][1]),
        kept_ins(in_lists[0][1]),
        detect_revocation_phrases,
        frozenset(chosen),
        default,
        tuple(lw for lw in per_language if lw.opt_out_words or lw.opt_in_words),
        share_rcs_sms_opt_outs,
    )


def _check_built_in_words() -> None:
    """The built-in words keep the trust rules: no opt-in word of any language overlaps the
    opt-out wording of any language, nor is an opt-out word of one an opt-in or help word of
    another."""
    for lang, words in BUILT_IN_WORDS.items():
        for word in words.opt_in:
            conflicts = opt_in_conflicts(word)
            assert not conflicts, (lang, word, conflicts)
        for word in words.opt_out:
            assert normalize_keyword(word) == word, (lang, word)
            assert not any(k in _ANY_OPT_IN_OR_HELP_KEYS for k in match_keys(word)), (lang, word)


_check_built_in_words()
