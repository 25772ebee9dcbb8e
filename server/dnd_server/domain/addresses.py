"""Address normalisation: phones to E.164, emails trimmed and lower-cased."""

from __future__ import annotations

import functools
import re

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
    text = raw.strip().lower()
    if len(text) > MAX_ADDRESS_LENGTH or not _EMAIL.match(text):
        raise InvalidArgument.one(field, f"{raw!r} is not an email address")
    return text


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
    text = raw.strip()
    if not text or any(ch.isspace() or ord(ch) < 32 for ch in text):
        raise InvalidArgument.one(field, f"{raw!r} is not a usable {channel.value} address")
    return text
