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

import phonenumbers

from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Channel

MAX_ADDRESS_LENGTH = 254
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

PHONE_CHANNELS = frozenset({Channel.SMS, Channel.CALL, Channel.WHATSAPP, Channel.RCS})


def normalize_phone(raw: str, default_region: str = "US", field: str = "address") -> str:
    e164, problem = _e164(raw.strip(), default_region)
    if problem:
        raise InvalidArgument.one(field, f"{raw!r} is {problem}")
    return e164


@functools.lru_cache(maxsize=16384)
def _e164(text: str, default_region: str) -> tuple[str, str]:
    """(E.164 form, "") of a phone number, or ("", what it is not). Cached: parsing costs
    more than the rest of a CheckSend, and the same numbers come back."""
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        return "", "not a phone number"
    if not phonenumbers.is_possible_number(number):
        return "", "not a possible phone number"
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164), ""


def normalize_email(raw: str, field: str = "address") -> str:
    key, problem = _email_key(raw)
    if problem:
        raise InvalidArgument.one(field, f"{raw!r} {problem}")
    return key


# Dots IDNA reads as the label separator: ideographic, fullwidth and halfwidth full stops.
_DOTS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_NOT_EMAIL = "is not an email address"
# What RFC 5322 allows only in quoted local parts and comments, which no sender's address needs:
# a display name ("Pat <pat@example.com>") or a list must be taken apart by the caller.
_SPECIALS = re.compile(r'[<>()\[\],;:\\"]')


@functools.lru_cache(maxsize=16384)
def _email_key(raw: str) -> tuple[str, str]:
    """(the key of an email address, "") or ("", what is wrong with it). Cached: the same
    addresses come back check after check."""
    text = raw.strip()
    if not text.isascii():
        text = unicodedata.normalize("NFC", visible(text)).strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if text[:7].lower() == "mailto:":
        # A mailto link (as in List-Unsubscribe): its ?subject=... is no part of the address.
        text = text[7:].split("?", 1)[0].strip()
    local, at, domain = text.rpartition("@")
    if not at or not local:
        return "", _NOT_EMAIL
    literal = domain.startswith("[") and domain.endswith("]")  # an IP address
    special = _SPECIALS.search(local) or (not literal and _SPECIALS.search(domain))
    if special:
        return "", f"{_NOT_EMAIL}: {special[0]!r} has no place in one"
    domain_key = domain.lower() if literal else _domain_key(domain)
    if domain_key is None:
        return "", f"{_NOT_EMAIL}: its domain {domain!r} is not a domain name"
    key = f"{local.lower()}@{domain_key}"
    if not key.isascii():
        key = unicodedata.normalize("NFC", key)
    if len(key) > MAX_ADDRESS_LENGTH or not _EMAIL.match(key):
        return "", _NOT_EMAIL
    return key, ""


def _domain_key(domain: str) -> str | None:
    """A domain as people read it, lower-case, or None when it is no domain name."""
    if not domain.isascii():
        domain = unicodedata.normalize("NFKC", domain).translate(_DOTS)
    domain = domain.lower()
    if domain.endswith("."):
        domain = domain[:-1]  # the root's dot: "example.com." is example.com
    labels = domain.split(".")
    for i, label in enumerate(labels):
        if not label:
            return None
        if label.startswith("xn--"):
            try:
                decoded = label[4:].encode("ascii").decode("punycode")
            except (UnicodeError, IndexError, ValueError):
                return None
            decoded = unicodedata.normalize("NFKC", decoded).lower()
            if not decoded or decoded.isascii() or "." in decoded.translate(_DOTS):
                return None  # an A-label always stands for a label beyond ASCII
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
    if len(raw) > MAX_ADDRESS_LENGTH:
        raise InvalidArgument.one(field, f"at most {MAX_ADDRESS_LENGTH} characters")
    if _CONTROL.search(raw.strip()):  # surrounding whitespace is trimmed, inner is refused
        raise InvalidArgument.one(field, "must not contain control characters")
    if channel is Channel.EMAIL:
        return normalize_email(raw, field)
    if channel in PHONE_CHANNELS:
        return normalize_phone(raw, default_region, field)
    text = visible(raw).strip()
    if not text or any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise InvalidArgument.one(field, f"{raw!r} is not a usable {channel.value} address")
    return text
