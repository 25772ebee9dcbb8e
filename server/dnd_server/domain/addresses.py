"""Address normalisation: phones to E.164, emails trimmed and lower-cased."""

from __future__ import annotations

import re

import phonenumbers

from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Channel

MAX_ADDRESS_LENGTH = 254
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")

PHONE_CHANNELS = frozenset({Channel.SMS, Channel.CALL, Channel.WHATSAPP})


def normalize_phone(raw: str, default_region: str = "US", field: str = "address") -> str:
    text = raw.strip()
    if text.startswith("00"):
        text = "+" + text[2:]
    try:
        number = phonenumbers.parse(text, default_region)
    except phonenumbers.NumberParseException:
        raise InvalidArgument.one(field, f"{raw!r} is not a phone number") from None
    if not phonenumbers.is_possible_number(number):
        raise InvalidArgument.one(field, f"{raw!r} is not a possible phone number")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


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
