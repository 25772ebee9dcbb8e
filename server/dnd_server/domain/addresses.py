"""Address normalisation: each address has one key, however it is spelled.

Phones become E.164. An email address is trimmed and lower-cased, in Unicode NFC, without the
invisible characters a copy and paste brings along, and out of a ``mailto:`` link or ``<...>``;
its domain is written as people read it (an IDNA ``xn--`` label decoded, fullwidth letters and
ideographic dots mapped as IDNA maps them, the root's trailing dot dropped). An opt-out recorded
under one spelling is found under every other: two keys for one mailbox would let a send through.
"""

from __future__ import annotations

import functools
import re
import unicodedata
import urllib.parse

import phonenumbers

from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Channel

MAX_ADDRESS_LENGTH = 254
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

PHONE_CHANNELS = frozenset({Channel.SMS, Channel.CALL, Channel.WHATSAPP, Channel.RCS})


def normalize_phone(
    raw: str, default_region: str = "US", field: str = "address", wa_id: bool = False
) -> str:
    """E.164 of ``raw``; ``wa_id``: digits that are no number of ``default_region`` may be
    one with its country code but no "+", as WhatsApp writes its users (WhatsApp only: on
    other channels such digits are a mistyped number, refused rather than read as another
    country's)."""
    e164, problem = _e164(raw.strip(), default_region, wa_id)
    if problem:
        raise InvalidArgument.one(field, f"{raw!r} is {problem}")
    return e164


@functools.lru_cache(maxsize=16384)
def _e164(text: str, default_region: str, wa_id: bool = False) -> tuple[str, str]:
    """(E.164 form, "") of a phone number, or ("", what it is not). Cached: parsing costs
    more than the rest of a CheckSend, and the same numbers come back."""
    sip = text[:4].lower() == "sip:" or text[:5].lower() == "sips:"
    if sip or "@" in text:
        # A SIP URI ("sip:+14155550100@ims.example.net;user=phone") or a WhatsApp JID
        # ("14155550100@s.whatsapp.net", "14155550100:12@s.whatsapp.net" from a linked
        # device): the number is the user part. (A tel: URI keeps its ";phone-context=",
        # which phonenumbers reads.)
        text = re.split("[@;]", text, maxsplit=1)[0]
        text = text.split(":", 1)[1] if sip else text.split(":", 1)[0]
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return "", "not a phone number"
    if not phonenumbers.is_possible_number(number):
        # Digits with their country code but no "+", as WhatsApp writes a sender ("wa_id").
        if wa_id and text.isdigit() and not text.startswith("0"):
            international = phonenumbers.parse("+" + text, None)
            if phonenumbers.is_valid_number(international):
                return phonenumbers.format_number(
                    international, phonenumbers.PhoneNumberFormat.E164
                ), ""
        return "", "not a possible phone number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), ""


def normalize_email(raw: str, field: str = "address") -> str:
    key, problem = _email_key(raw)
    if problem:
        raise InvalidArgument.one(field, f"{raw!r} {problem}")
    return key


# Dots IDNA reads as the label separator: ideographic, fullwidth and halfwidth full stops.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
# What IDNA (UTS 46) ignores in a domain beyond the format characters ``visible`` drops:
# variation selectors (an emoji's U+FE0F), the combining grapheme joiner, Mongolian free
# variation selectors, Khmer inherent vowels, Hangul fillers.
_IGNORED = re.compile(
    "[\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef]"
)
# ASCII a domain name never holds (letters, digits, hyphens and dots; underscores in some
# hosts' names): "example.com#x" or "exa mple.com" is no domain.
_NOT_IN_DOMAIN = re.compile(r"[\x00-\x2c/\x3a-\x40\x5b-\x5e`\x7b-\x7f]")
_NOT_EMAIL = "is not an email address"
# What RFC 5322 allows only in quoted local parts and comments, which no sender's address needs:
# a display name ("Pat <pat@example.com>") or a list must be taken apart by the caller.
_SPECIALS = re.compile(r'[<>()\[\],;:\\"]')
# Longest text taken for an email address: a mailto link carries a subject and a body.
MAX_EMAIL_TEXT = 2048


@functools.lru_cache(maxsize=16384)
def _email_key(raw: str) -> tuple[str, str]:
    """(the key of an email address, "") or ("", what is wrong with it). Cached: the same
    addresses come back check after check."""
    text = _seen(raw)
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if text[:7].lower() == "mailto:":
        # A mailto link (as in List-Unsubscribe): its ?subject=... is no part of the address,
        # and its letters may be %-encoded (RFC 6068).
        try:
            text = _seen(urllib.parse.unquote(text[7:].split("?", 1)[0], errors="strict"))
        except UnicodeDecodeError:
            return "", f"{_NOT_EMAIL}: its %-encoding is not UTF-8"
    local, at, domain = text.replace("\uff20", "@").rpartition("@")
    if not at or not local:
        return "", _NOT_EMAIL
    literal = domain.startswith("[") and domain.endswith("]")  # an IP address
    domain_key = domain.lower() if literal else _domain_key(domain)
    if domain_key is None:
        return "", f"{_NOT_EMAIL}: its domain {domain!r} is not a domain name"
    key = f"{_lower(local)}@{domain_key}"
    if not key.isascii():
        key = unicodedata.normalize("NFC", key)
    special = _SPECIALS.search(key.rpartition("@")[0] if literal else key)
    if special:
        return "", f"{_NOT_EMAIL}: {special[0]!r} has no place in one"
    if len(key) > MAX_ADDRESS_LENGTH:
        return "", f"{_NOT_EMAIL}: over {MAX_ADDRESS_LENGTH} characters"
    if _CONTROL.search(key) or not _EMAIL.match(key):
        return "", _NOT_EMAIL
    return key, ""


def _seen(text: str) -> str:
    """``text`` trimmed, as it shows: without invisible characters, in NFC."""
    text = text.strip()
    if text.isascii():
        return text
    return unicodedata.normalize("NFC", visible(text)).strip()


_SIGMA, _FINAL_SIGMA = "\u03c3", "\u03c2"


def _lower(text: str) -> str:
    """Lower-case letter by letter, the final sigma (U+03C2) as the sigma (U+03C3): the
    capital sigma is one letter wherever it stands, and a word ends in the final form when
    typed in small letters but in the capital when typed in capitals (``str.lower`` writes
    the final form at a word's end): every spelling of one mailbox has one key."""
    if text.isascii():
        return text.lower()
    return "".join(ch.lower() for ch in text).replace(_FINAL_SIGMA, _SIGMA)


def _domain_key(domain: str) -> str | None:
    """A domain as people read it, lower-case, or None when it is no domain name."""
    if not domain.isascii():
        domain = _IGNORED.sub("", unicodedata.normalize("NFKC", domain).translate(_DOTS))
    domain = _lower(domain)
    if domain.endswith("."):
        domain = domain[:-1]  # the root's dot: "example.com." is example.com
    if _NOT_IN_DOMAIN.search(domain):
        return None
    labels = domain.split(".")
    for i, label in enumerate(labels):
        if not label:
            return None
        if label.startswith("xn--"):
            try:
                decoded = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, IndexError, ValueError):
                return None
            decoded = _lower(_IGNORED.sub("", visible(unicodedata.normalize("NFKC", decoded))))
            if not decoded or decoded.isascii() or "." in decoded.translate(_DOTS):
                return None  # an A-label always stands for a label beyond ASCII
            if _NOT_IN_DOMAIN.search(decoded):
                return None
            labels[i] = decoded
    return ".".join(labels)


def visible(text: str) -> str:
    """``text`` without Unicode format characters (zero-width spaces and joiners, bidi
    controls, the soft hyphen, the byte-order mark): they show nothing and are part of no
    address."""
    if text.isascii():
        return text
    return "".join(ch for ch in text if unicodedata.category(ch) != "Cf")


def normalize_address(
    channel: Channel, raw: str, default_region: str = "US", field: str = "address"
) -> str:
    """The canonical form of ``raw`` as an address on ``channel``."""
    limit = MAX_EMAIL_TEXT if channel is Channel.EMAIL else MAX_ADDRESS_LENGTH
    if len(raw) > limit:
        raise InvalidArgument.one(field, f"at most {limit} characters")
    if _CONTROL.search(raw.strip()):  # surrounding whitespace is trimmed, inner is refused
        raise InvalidArgument.one(field, "must not contain control characters")
    if channel is Channel.EMAIL:
        return normalize_email(raw, field)
    if channel in PHONE_CHANNELS:
        return normalize_phone(raw, default_region, field, wa_id=channel is Channel.WHATSAPP)
    text = visible(raw).strip()
    if not text or any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise InvalidArgument.one(field, f"{raw!r} is not a usable {channel.value} address")
    return text


def former_spellings(channel: Channel, key: str) -> tuple[str, ...]:
    """Spellings an email address may have been stored under before its key was what
    ``normalize_email`` gives (migration 14), most likely first and ``key`` among them. Rows
    stored then were moved to their keys, but an erased address is kept only as the keyed hash
    of what was stored: a check looks for these too. The spelling as it was then is lost, so
    these are the usual ones: its letters decomposed (NFD), its domain in A-labels, the root's
    dot, a word-final sigma in its final form."""
    if channel is not Channel.EMAIL:
        return (key,)
    local, _, domain = key.rpartition("@")
    spellings = [key, key + "."]
    if not key.isascii():
        ascii_domain = ".".join(
            label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
            for label in domain.split(".")
        )
        nfd_local = unicodedata.normalize("NFD", local)
        # Lower-cased as str.lower does: a sigma ending a word as the final sigma.
        spellings.append(re.sub(r"(?<=\w)\u03c3(?!\w)", _FINAL_SIGMA, key))
        spellings += [
            unicodedata.normalize("NFD", key),
            f"{local}@{ascii_domain}",
            f"{nfd_local}@{ascii_domain}",
            f"{nfd_local}@{unicodedata.normalize('NFD', domain)}",
        ]
    return tuple(dict.fromkeys(spellings))
