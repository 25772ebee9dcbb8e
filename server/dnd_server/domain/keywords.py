"""SMS keyword classification: what an inbound text asks for.

Matching is on the whole message, case-insensitive, ignoring surrounding whitespace, runs of
inner whitespace and trailing punctuation: "Stop", " STOP. ", "stop!" match STOP; "stop by
tomorrow" does not. UNSTOP is an opt-in word, as the carriers treat it.

Revocation phrases (off by default, per location) implement the "any reasonable means"
standard for revoking consent: when enabled, a message containing one of
``REVOCATION_PHRASES`` as whole words is an opt-out too.
"""

from __future__ import annotations

import enum
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from dnd_server.domain.errors import FieldViolation, InvalidArgument

OPT_OUT_WORDS: frozenset[str] = frozenset(
    {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT", "OPT OUT"}
)
OPT_IN_WORDS: frozenset[str] = frozenset({"START", "YES", "UNSTOP"})
HELP_WORDS: frozenset[str] = frozenset({"HELP", "INFO"})

# Opt-in words that act only when the contact currently has SMS DND.
CONDITIONAL_OPT_IN_WORDS: frozenset[str] = frozenset({"YES"})

# Natural-language revocations, matched as whole words anywhere in the message (lower case,
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
class KeywordSettings:
    """A location's additions to the default keywords (the defaults cannot be removed)."""

    extra_opt_out_words: frozenset[str] = frozenset()
    extra_opt_in_words: frozenset[str] = frozenset()
    detect_revocation_phrases: bool = False


@dataclass(frozen=True, slots=True)
class Classification:
    kind: KeywordKind
    # The keyword or phrase matched ("" for NONE).
    matched: str = ""

    @property
    def conditional(self) -> bool:
        """An opt-in that acts only when the contact has SMS DND (YES)."""
        return self.kind is KeywordKind.OPT_IN and self.matched in CONDITIONAL_OPT_IN_WORDS


_SPACES = re.compile(r"\s+")


def normalize_keyword(text: str) -> str:
    """Upper-case, surrounding whitespace and trailing punctuation dropped, inner runs of
    whitespace made one space."""
    text = text.strip()
    while text and (unicodedata.category(text[-1]).startswith("P") or text[-1].isspace()):
        text = text[:-1]
    return _SPACES.sub(" ", text).upper()


def _phrase_text(text: str) -> str:
    kept = "".join(
        ch if ch.isalnum() or ch == "'" else " " for ch in text.lower().replace("\u2019", "'")
    )
    return f" {_SPACES.sub(' ', kept).strip()} "


def classify(body: str, settings: KeywordSettings = KeywordSettings()) -> Classification:
    word = normalize_keyword(body)
    if word in OPT_OUT_WORDS or word in settings.extra_opt_out_words:
        return Classification(KeywordKind.OPT_OUT, word)
    if word in OPT_IN_WORDS or word in settings.extra_opt_in_words:
        return Classification(KeywordKind.OPT_IN, word)
    if word in HELP_WORDS:
        return Classification(KeywordKind.HELP, word)
    if settings.detect_revocation_phrases:
        text = _phrase_text(body)
        for phrase in REVOCATION_PHRASES:
            if f" {phrase} " in text:
                return Classification(KeywordKind.OPT_OUT, phrase)
    return Classification(KeywordKind.NONE)


def validate_extra_words(
    opt_out: Iterable[str], opt_in: Iterable[str]
) -> tuple[frozenset[str], frozenset[str]]:
    """Normalise a location's extra words; raise InvalidArgument for unusable ones."""
    problems: list[FieldViolation] = []

    def clean(field: str, words: Iterable[str]) -> frozenset[str]:
        result = set()
        for raw in words:
            word = normalize_keyword(raw)
            if not word:
                problems.append(FieldViolation(field, f"{raw!r} is empty once normalised"))
            elif len(word) > MAX_WORD_LENGTH:
                problems.append(
                    FieldViolation(field, f"{raw!r} is longer than {MAX_WORD_LENGTH} characters")
                )
            elif any(unicodedata.category(ch) == "Cc" for ch in word):
                problems.append(FieldViolation(field, f"{raw!r} contains control characters"))
            else:
                result.add(word)
        if len(result) > MAX_EXTRA_WORDS:
            problems.append(FieldViolation(field, f"at most {MAX_EXTRA_WORDS} words"))
        return frozenset(result)

    outs = clean("extra_opt_out_words", opt_out)
    ins = clean("extra_opt_in_words", opt_in)
    for word in sorted(outs & (OPT_IN_WORDS | HELP_WORDS | ins)):
        problems.append(
            FieldViolation("extra_opt_out_words", f"{word} is already an opt-in or help word")
        )
    for word in sorted(ins & (OPT_OUT_WORDS | HELP_WORDS)):
        problems.append(
            FieldViolation("extra_opt_in_words", f"{word} is already an opt-out or help word")
        )
    if problems:
        raise InvalidArgument(problems)
    return outs - OPT_OUT_WORDS, ins - OPT_IN_WORDS
