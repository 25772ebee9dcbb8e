"""The replies the carriers require: the opt-out confirmation, the opt-in confirmation and the
answer to HELP, per location and language; when one is due after an inbound message.

Content rules (after the CTIA Messaging Principles and Best Practices, and its Short Code
Monitoring Handbook), checked by ``validate_texts`` on every text a location writes:

- every reply names the programme: the merge field ``{brand}`` (or the brand name itself);
- the opt-in confirmation says how to opt out (an opt-out keyword of its language in capitals,
  e.g. "Reply STOP to cancel") and that message and data rates may apply (``RATES_WORDING``);
- the HELP answer carries the support contact (``{support}`` or the contact itself) and how
  to opt out;
- the opt-out confirmation carries no marketing: none of ``MARKETING_WORDS`` of any language,
  no link.

Merge fields are ``{brand}`` (the location's brand or programme name) and ``{support}`` (its
support contact); any other ``{...}`` and a brace that opens or closes nothing are refused.

Length: a reply should fit one SMS segment once merged: 160 GSM-7 septets (characters of the
extension table count two), or 70 UCS-2 code units when any character is outside GSM-7. A
longer text is accepted with a warning (``measure``).

When a reply is due (``reply_due``): the opt-out confirmation after a message that opted out
now (the channel's opt-out block was added), unless one was already due on the channel in the
last ``OPT_OUT_REPLY_INTERVAL`` (a second STOP within a day gets no second confirmation); the
opt-in confirmation after an opt-in that lifted DND and left the channel unblocked; the HELP
answer always. The last opt-out confirmation per contact and channel is written in the same
transaction as the opt-out, so of concurrent duplicates at most one gets it.
"""

from __future__ import annotations

import datetime as dt
import enum
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from dnd_server.domain.errors import FieldViolation, InvalidArgument
from dnd_server.domain.keywords import BUILT_IN_WORDS, LANGUAGES, KeywordKind, match_key


class ReplyKind(enum.StrEnum):
    OPT_OUT_CONFIRMATION = "OPT_OUT_CONFIRMATION"
    OPT_IN_CONFIRMATION = "OPT_IN_CONFIRMATION"
    HELP = "HELP"


OPT_OUT_REPLY_INTERVAL = dt.timedelta(days=1)

MERGE_FIELDS: tuple[str, ...] = ("brand", "support")
MAX_BRAND_LENGTH = 64
MAX_SUPPORT_LENGTH = 100
MAX_TEXT_LENGTH = 640

# The defaults: one GSM-7 segment with a brand name and a support contact of about 20
# characters each (no character outside GSM-7: Spanish and French are written without the
# accents GSM-7 lacks where a word allows it).
DEFAULT_TEXTS: Mapping[str, Mapping[ReplyKind, str]] = {
    "en": {
        ReplyKind.OPT_OUT_CONFIRMATION: (
            "{brand}: You are unsubscribed and will receive no more messages."
        ),
        ReplyKind.OPT_IN_CONFIRMATION: (
            "{brand}: You are subscribed. Msg frequency varies. Msg & data rates may apply. "
            "Reply HELP for help, STOP to cancel."
        ),
        ReplyKind.HELP: (
            "{brand}: For help contact {support}. Msg & data rates may apply. Reply STOP to cancel."
        ),
    },
    "es": {
        ReplyKind.OPT_OUT_CONFIRMATION: (
            "{brand}: Baja confirmada. No le enviaremos otros mensajes."
        ),
        ReplyKind.OPT_IN_CONFIRMATION: (
            "{brand}: Alta confirmada. Frecuencia variable. Pueden aplicar tarifas de "
            "mensajes y datos. Responda AYUDA o PARAR para cancelar."
        ),
        ReplyKind.HELP: (
            "{brand}: Ayuda en {support}. Pueden aplicar tarifas de mensajes y datos. "
            "Responda PARAR para cancelar."
        ),
    },
    "fr": {
        ReplyKind.OPT_OUT_CONFIRMATION: (
            "{brand}: Désabonnement confirmé. Vous ne recevrez plus de messages."
        ),
        ReplyKind.OPT_IN_CONFIRMATION: (
            "{brand}: Abonnement confirmé. Fréquence variable. Frais de messages et données "
            "possibles. Répondez AIDE ou ARRET pour annuler."
        ),
        ReplyKind.HELP: (
            "{brand}: Aide au {support}. Frais de messages et données possibles. "
            "Répondez ARRET pour annuler."
        ),
    },
}

# How each language says that message and data rates may apply (any one, any case).
RATES_WORDING: Mapping[str, tuple[str, ...]] = {
    "en": ("rates may apply", "rates apply"),
    "es": ("tarifas", "cargos"),
    "fr": ("frais", "tarifs"),
}

# Words that make an opt-out confirmation marketing (whole words, any case, accents ignored),
# of every language: an opt-out confirmation in any language may hold none of them.
MARKETING_WORDS: frozenset[str] = frozenset(
    {
        # English
        "sale", "offer", "offers", "discount", "deal", "deals", "free", "promo", "promotion",
        "coupon", "buy", "shop", "save", "win", "off",
        # Spanish
        "oferta", "ofertas", "descuento", "gratis", "promocion", "cupon", "compra", "compre",
        "rebaja", "rebajas",
        # French
        "offre", "offres", "rabais", "gratuit", "gratuite", "achetez",
        "solde", "soldes", "reduction",
    }
)  # fmt: skip
_LINK = re.compile(r"https?://|www\.", re.IGNORECASE)

_FIELD = re.compile(r"\{([^{}]*)\}")
_BRAND_PREFIX = re.compile(r"^\{brand\}:\s*")

# GSM 03.38: the basic character set and its extension table (two septets each).
_GSM_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENSION = frozenset("^{}\\[~]|€\f")
GSM7_SEGMENT = 160
GSM7_MULTIPART = 153
UCS2_SEGMENT = 70
UCS2_MULTIPART = 67


@dataclass(frozen=True, slots=True)
class ReplyTexts:
    """A location's own texts of one language (None: the language's default)."""

    language: str
    opt_out_confirmation: str | None = None
    opt_in_confirmation: str | None = None
    help: str | None = None

    def get(self, kind: ReplyKind) -> str | None:
        if kind is ReplyKind.OPT_OUT_CONFIRMATION:
            return self.opt_out_confirmation
        if kind is ReplyKind.OPT_IN_CONFIRMATION:
            return self.opt_in_confirmation
        return self.help


@dataclass(frozen=True, slots=True)
class ComplianceReplies:
    """A location's reply settings; ``configured`` once it set its brand and support."""

    brand_name: str = ""
    support_contact: str = ""
    texts: tuple[ReplyTexts, ...] = ()

    @property
    def configured(self) -> bool:
        return bool(self.brand_name and self.support_contact)

    def answers(self, kind: ReplyKind | None) -> bool:
        """Whether a reply of ``kind`` is sent. The opt-out confirmation always is (without a
        brand name it just names none: confirming an opt-out matters more than the brand);
        the HELP answer and the opt-in confirmation need the brand and support contact."""
        if kind is None:
            return False
        return self.configured or kind is ReplyKind.OPT_OUT_CONFIRMATION

    def template(self, language: str, kind: ReplyKind) -> tuple[str, bool]:
        """The template of ``kind`` in ``language`` and whether it is the default."""
        for texts in self.texts:
            if texts.language == language:
                own = texts.get(kind)
                if own:
                    return own, False
        return DEFAULT_TEXTS[language][kind], True


NOT_CONFIGURED = ComplianceReplies()


@dataclass(frozen=True, slots=True)
class Measure:
    encoding: str
    length: int
    segments: int
    warning: str


def measure(text: str) -> Measure:
    """The SMS encoding ``text`` needs, its length in that encoding's units and its segments,
    with a warning when it takes more than one."""
    if all(ch in _GSM_BASIC or ch in _GSM_EXTENSION for ch in text):
        encoding, single, multi = "GSM-7", GSM7_SEGMENT, GSM7_MULTIPART
        length = sum(2 if ch in _GSM_EXTENSION else 1 for ch in text)
    else:
        encoding, single, multi = "UCS-2", UCS2_SEGMENT, UCS2_MULTIPART
        length = len(text.encode("utf-16-le")) // 2
    segments = 1 if length <= single else -(-length // multi)
    warning = ""
    if segments > 1:
        outside = sorted({ch for ch in text if ch not in _GSM_BASIC and ch not in _GSM_EXTENSION})
        why = f" (characters outside GSM-7: {''.join(outside)!r})" if encoding == "UCS-2" else ""
        warning = (
            f"{length} {encoding} units{why}: {segments} SMS segments; one segment holds {single}"
        )
    return Measure(encoding, length, segments, warning)


def merge(template: str, brand_name: str, support_contact: str) -> str:
    """``template`` with its merge fields filled (validated templates only)."""
    values = {"brand": brand_name, "support": support_contact}
    if not brand_name:  # a default text of a location without a brand: "{brand}: " goes
        template = _BRAND_PREFIX.sub("", template)
    return _FIELD.sub(lambda found: values.get(found.group(1), found.group()), template)


def _words(text: str) -> list[str]:
    return match_key(text).split()


def _has_words(text: str, phrase: str) -> bool:
    needle = " ".join(_words(phrase))
    return f" {needle} " in f" {' '.join(_words(text))} "


def text_problems(
    template: str, language: str, kind: ReplyKind, brand_name: str, support_contact: str
) -> list[str]:
    """What makes ``template`` unusable as the ``kind`` reply in ``language`` (empty: it is
    usable); see the module docstring."""
    problems: list[str] = []
    fields = _FIELD.findall(template)
    unknown = sorted({f for f in fields if f not in MERGE_FIELDS})
    if unknown:
        known = ", ".join("{" + f + "}" for f in MERGE_FIELDS)
        named = ", ".join("{" + f + "}" for f in unknown)
        problems.append(f"unknown merge field {named}; the merge fields are {known}")
    if "{" in _FIELD.sub("", template) or "}" in _FIELD.sub("", template):
        problems.append("has a brace that opens or closes no merge field")
    if len(template) > MAX_TEXT_LENGTH:
        problems.append(f"{len(template)} characters; at most {MAX_TEXT_LENGTH} allowed")
    merged = merge(template, brand_name, support_contact)
    if "brand" not in fields and not (brand_name and _has_words(merged, brand_name)):
        problems.append("must name the programme: {brand} or the brand name")
    words = set(_words(merged))
    opt_out_keys = {match_key(w) for w in BUILT_IN_WORDS[language].opt_out}
    # The keyword as an instruction: in capitals ("Reply STOP"), not "para cancelar".
    capitals = {match_key(t) for t in re.findall(r"\w+", merged) if t.isupper()}
    if kind in (ReplyKind.OPT_IN_CONFIRMATION, ReplyKind.HELP) and not capitals & opt_out_keys:
        examples = " or ".join(sorted(BUILT_IN_WORDS[language].opt_out - {"ARRÊT"})[:2])
        problems.append(f"must say how to opt out (an opt-out keyword such as {examples})")
    if kind is ReplyKind.OPT_IN_CONFIRMATION and not any(
        _has_words(merged, phrase) for phrase in RATES_WORDING[language]
    ):
        said = " or ".join(repr(p) for p in RATES_WORDING[language])
        problems.append(f"must say that message and data rates may apply ({said})")
    if (
        kind is ReplyKind.HELP
        and "support" not in fields
        and not (support_contact and support_contact.casefold() in merged.casefold())
    ):
        problems.append("must carry the support contact: {support} or the contact itself")
    if kind is ReplyKind.OPT_OUT_CONFIRMATION:
        marketing = sorted(w.lower() for w in words if w.lower() in MARKETING_WORDS)
        if marketing:
            problems.append(
                f"must carry no marketing: {', '.join(dict.fromkeys(marketing))} reads as marketing"
            )
        if _LINK.search(merged):
            problems.append("must carry no marketing: no link")
    return problems


_TEXT_FIELDS: Mapping[ReplyKind, str] = {
    ReplyKind.OPT_OUT_CONFIRMATION: "opt_out_confirmation",
    ReplyKind.OPT_IN_CONFIRMATION: "opt_in_confirmation",
    ReplyKind.HELP: "help",
}


def _identity_problems(field: str, value: str, limit: int, what: str) -> list[FieldViolation]:
    if not value.strip():
        return [FieldViolation(field, f"required: {what}, 1 to {limit} characters")]
    if len(value) > limit:
        return [FieldViolation(field, f"{len(value)} characters; at most {limit} allowed")]
    if any(ord(ch) < 32 or 0x7F <= ord(ch) < 0xA0 for ch in value):
        return [FieldViolation(field, "must not contain control characters")]
    if value != value.strip():
        return [FieldViolation(field, "must not start or end with whitespace")]
    if "{" in value or "}" in value:
        return [FieldViolation(field, "must not contain braces")]
    return []


def validate_replies(
    brand_name: str, support_contact: str, texts: Sequence[ReplyTexts]
) -> ComplianceReplies:
    """A location's reply settings from a request; raise InvalidArgument naming every problem
    (each text's field as ``texts[i].opt_in_confirmation``). Texts equal to the default, or
    empty, are stored as the default."""
    problems = [
        *_identity_problems("brand_name", brand_name, MAX_BRAND_LENGTH, "the brand name"),
        *_identity_problems(
            "support_contact", support_contact, MAX_SUPPORT_LENGTH, "the support contact"
        ),
    ]
    seen: set[str] = set()
    kept: list[ReplyTexts] = []
    for i, entry in enumerate(texts):
        if entry.language not in LANGUAGES:
            problems.append(
                FieldViolation(
                    f"texts[{i}].language",
                    f"{entry.language!r} is not one of {', '.join(LANGUAGES)}",
                )
            )
            continue
        if entry.language in seen:
            problems.append(
                FieldViolation(
                    f"texts[{i}].language",
                    f"{entry.language!r} is given twice; give each language's texts once",
                )
            )
            continue
        seen.add(entry.language)
        own: dict[str, str | None] = {}
        for kind, name in _TEXT_FIELDS.items():
            template = entry.get(kind) or ""
            if not template or template == DEFAULT_TEXTS[entry.language][kind]:
                own[name] = None
                continue
            for problem in text_problems(
                template, entry.language, kind, brand_name, support_contact
            ):
                problems.append(FieldViolation(f"texts[{i}].{name}", problem))
            own[name] = template
        if any(own.values()):
            kept.append(ReplyTexts(entry.language, **own))
    if problems:
        raise InvalidArgument(problems)
    kept.sort(key=lambda t: LANGUAGES.index(t.language))
    return ComplianceReplies(brand_name, support_contact, tuple(kept))


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply as the location sends it."""

    language: str
    kind: ReplyKind
    template: str
    text: str
    is_default: bool
    measure: Measure


def reply(replies: ComplianceReplies, language: str, kind: ReplyKind) -> Reply:
    template, is_default = replies.template(language, kind)
    text = merge(template, replies.brand_name, replies.support_contact)
    return Reply(language, kind, template, text, is_default, measure(text))


def every_reply(replies: ComplianceReplies) -> list[Reply]:
    """Each reply of each language, in ``LANGUAGES`` then ``ReplyKind`` order."""
    return [reply(replies, language, kind) for language in LANGUAGES for kind in ReplyKind]


@dataclass(frozen=True, slots=True)
class ReplyMark:
    """The last opt-out confirmation due to a contact on a channel (kept in the write that
    made it due)."""

    channel: str
    kind: ReplyKind
    at: dt.datetime


def reply_due(
    action: KeywordKind,
    opted_out_now: bool,
    lifted_now: bool,
    still_blocked: bool,
    last_opt_out_reply: dt.datetime | None,
    now: dt.datetime,
) -> ReplyKind | None:
    """The reply due after an inbound message that did ``action`` (see the module docstring):
    ``opted_out_now`` when it added the channel's opt-out block, ``lifted_now`` when it lifted
    DND, ``still_blocked`` when the channel stays blocked after it, ``last_opt_out_reply``
    the last opt-out confirmation due on the channel."""
    if action is KeywordKind.HELP:
        return ReplyKind.HELP
    if action is KeywordKind.OPT_OUT:
        if not opted_out_now:
            return None
        if last_opt_out_reply is not None and now - last_opt_out_reply < OPT_OUT_REPLY_INTERVAL:
            return None
        return ReplyKind.OPT_OUT_CONFIRMATION
    if action is KeywordKind.OPT_IN and lifted_now and not still_blocked:
        return ReplyKind.OPT_IN_CONFIRMATION
    return None
