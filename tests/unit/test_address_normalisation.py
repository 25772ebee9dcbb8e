"""An address's key is one however it is spelled (domain/addresses.py): the spellings of one
mailbox meet, what is no address is refused, and a key is its own key."""

from __future__ import annotations

import unicodedata

import pytest
from dnd_server.domain.addresses import (
    former_spellings,
    normalize_address,
    normalize_email,
    visible,
)
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Channel
from dnd_server.storage.rekey import new_key
from hypothesis import given
from hypothesis import strategies as st

# Letters beyond ASCII with decompositions, and letters IDNA keeps.
_LETTERS = st.sampled_from([*"abcxyz0189-éüñçøåßıłæœ", "\u00e9", "\u0161", "\u4e2d", "\u0436"])
_LABEL = st.text(_LETTERS, min_size=1, max_size=12).filter(
    lambda s: not s.startswith("-") and not s.endswith("-") and s[2:4] != "--"
)
_LOCAL = st.text(st.sampled_from(list("abcxyz0189._+-éüñ")), min_size=1, max_size=16)
_INVISIBLE = st.sampled_from(["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u200e", "\u00ad"])


IDEOGRAPHIC_DOT = "\u3002"


@st.composite
def mailboxes(draw: st.DrawFn) -> str:
    labels = draw(st.lists(_LABEL, min_size=1, max_size=3))
    return f"{draw(_LOCAL)}@{'.'.join([*labels, draw(st.sampled_from(['com', 'de', 'jp']))])}"


def upper(text: str) -> str:
    """``text`` in capitals where a capital lower-cases back (not ß, whose capital is SS)."""
    return "".join(c.upper() if c.upper().lower() == c else c for c in text)


def a_labels(domain: str) -> str:
    """The domain as IDNA writes it on the wire: each label beyond ASCII as xn--punycode."""
    return ".".join(
        label if label.isascii() else "xn--" + label.encode("punycode").decode("ascii")
        for label in domain.split(".")
    )


@given(mailboxes(), st.data())
def test_every_spelling_of_a_mailbox_has_its_key(address: str, data: st.DataObject) -> None:
    key = normalize_email(address)
    assert normalize_email(key) == key  # a key is its own key
    local, domain = key.rsplit("@", 1)
    raw_local, raw_domain = address.rsplit("@", 1)
    invisible = data.draw(_INVISIBLE)
    at = data.draw(st.integers(0, len(address)))
    spellings = [
        upper(address),
        unicodedata.normalize("NFD", address),
        unicodedata.normalize("NFC", address),
        f"{local}@{a_labels(domain)}",
        f"{local}@{upper(a_labels(domain))}",
        f"{address}.",
        f"<{address}>",
        f"mailto:{address}?subject=unsubscribe",
        f" <MAILTO:{address}> ",
        address[:at] + invisible + address[at:],
        raw_local + "@" + raw_domain.replace(".", IDEOGRAPHIC_DOT),
    ]
    for spelling in spellings:
        assert normalize_email(spelling) == key, spelling


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("Pat@Example.COM", "pat@example.com"),
        ("pat@example.com.", "pat@example.com"),
        ("jose\u0301@bu\u0308cher.de", "jos\u00e9@b\u00fccher.de"),
        ("pat@xn--bcher-kva.de", "pat@b\u00fccher.de"),
        ("pat@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45\uff0ecom", "pat@example.com"),
        ("mailto:pat@example.com?subject=stop&body=x", "pat@example.com"),
        ("\u202epat@example.com", "pat@example.com"),  # a bidi override hides nothing here
        ("pat+news@example.com", "pat+news@example.com"),  # subaddresses are mailboxes
        ("p.a.t@gmail.com", "p.a.t@gmail.com"),  # dots are the provider's business
        ("pat@[192.0.2.1]", "pat@[192.0.2.1]"),  # a domain literal keeps its brackets
        # A mailto link's letters %-encoded (RFC 6068), as encodeURIComponent writes them.
        ("mailto:jos%C3%A9@example.com", "jos\u00e9@example.com"),
        ("mailto:pat%2Bnews@example.com?subject=stop", "pat+news@example.com"),
        ("mailto:pat%40example.com", "pat@example.com"),
        ("mailto:pat@example.com?subject=" + "x" * 600, "pat@example.com"),  # a long link
        # What IDNA ignores or maps in a domain: an emoji's variation selector, sigma's case.
        ("pat@i\u2764\ufe0f.ws", "pat@i\u2764.ws"),
        ("pat@xn--i-7iq.ws", "pat@i\u2764.ws"),
        ("pat@\u0391\u03a3-x.gr", "pat@\u03b1\u03c3-x.gr"),
        ("\u039f\u0394\u039f\u03a3@example.gr", "\u03bf\u03b4\u03bf\u03c3@example.gr"),
        ("pat\uff20example.com", "pat@example.com"),  # a fullwidth at sign
        # A word-final sigma typed small, and the capital: one letter, one key.
        (
            "\u03bf\u03b4\u03c5\u03c3\u03c3\u03b5\u03c5\u03c2@x.gr",
            "\u03bf\u03b4\u03c5\u03c3\u03c3\u03b5\u03c5\u03c3@x.gr",
        ),
        (
            "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3@x.gr",
            "\u03bf\u03b4\u03c5\u03c3\u03c3\u03b5\u03c5\u03c3@x.gr",
        ),
    ],
)
def test_keys(raw: str, key: str) -> None:
    assert normalize_email(raw) == key
    assert normalize_address(Channel.EMAIL, raw) == key


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "pat",
        "pat@",
        "@example.com",
        "pat@example",
        "pat@example..com",
        "pat@.example.com",
        "pat@example.com..",
        "pat@xn--.com",
        "pat@xn--abc-.com",  # an A-label of ASCII only is no IDNA label
        "pat@xn--zz",
        "pat@xn--a\u00e9.com",
        "Pat <pat@example.com>",
        "<pat@example.com",
        "pat@example.com>",
        '"pat"@example.com',
        "pat,kim@example.com",
        "pat@exa:mple.com",
        "pat@example.com; kim@example.com",
        "pat@example.com#x",
        "pat@exa+mple.com",
        "pat@\u2474.com",  # NFKC makes it "(1)": a key must be a key again
        "mailto:%ff@example.com",  # %-encoding that is no UTF-8
        "pat@xn--ab-ra.com",  # an A-label bringing in a C1 control
        "mailto:",
        "<>",
        "\u200b@example.com",
        "pat@exa mple.com",
        "p" * 250 + "@example.com",
    ],
)
def test_what_is_no_email_address_is_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalize_address(Channel.EMAIL, raw)
    [violation] = caught.value.violations
    assert violation.field == "address"


def test_invisible_characters_are_dropped_from_ids_and_refused_alone() -> None:
    assert normalize_address(Channel.FACEBOOK, "\u200b2718281828\u2060") == "2718281828"
    assert normalize_address(Channel.GMB, " locations/12\u200d3 ") == "locations/123"
    with pytest.raises(InvalidArgument):
        normalize_address(Channel.GMB, "\u200b\u200d")
    assert visible("plain") == "plain"
    assert visible("a\u00adb\ufeffc") == "abc"


@pytest.mark.parametrize(
    ("raw", "number"),
    [
        ("sip:+14155550100@ims.mnc260.mcc310.3gppnetwork.org", "+14155550100"),
        ("sips:+14155550100@ims.example.net;transport=tls", "+14155550100"),
        ("+14155550100@s.whatsapp.net", "+14155550100"),
        ("447911123456@s.whatsapp.net", "+447911123456"),
        ("447911123456", "+447911123456"),  # WhatsApp's wa_id: the country code, no "+"
        ("4155550100", "+14155550100"),  # a number of the default region stays one
        ("tel:+1-415-555-0100;phone-context=example.com", "+14155550100"),
        ("tel:5550100;phone-context=+1-415", "+14155550100"),  # RFC 3966's local number
        ("14155550100:12@s.whatsapp.net", "+14155550100"),  # a linked device's JID
    ],
)
def test_phone_numbers_as_providers_write_them(raw: str, number: str) -> None:
    assert normalize_address(Channel.WHATSAPP, raw) == number


def test_digits_are_read_as_an_international_number_on_whatsapp_only() -> None:
    """WhatsApp's wa_id has the country code without "+"; on SMS the same digits are no
    number of the default region (a US number with a digit too many is no Swiss number)."""
    assert normalize_address(Channel.WHATSAPP, "41555501001") == "+41555501001"
    for channel in (Channel.SMS, Channel.CALL, Channel.RCS):
        with pytest.raises(InvalidArgument):
            normalize_address(channel, "41555501001")


@pytest.mark.parametrize("raw", ["55555", "sip:alice@example.org", "0447911123456x", "@"])
def test_what_is_no_phone_number_is_refused(raw: str) -> None:
    with pytest.raises(InvalidArgument):
        normalize_address(Channel.SMS, raw)


def test_phone_numbers_keep_their_e164_keys() -> None:
    for raw in (
        "+1 415 555 0100",
        "\uff0b\uff11\uff14\uff11\uff15\uff15\uff15\uff15\uff10\uff11\uff10\uff10",
        "+1415\u200b5550100",
    ):
        assert normalize_address(Channel.SMS, raw) == "+14155550100"


@pytest.mark.parametrize(
    ("channel", "stored", "key"),
    [
        ("EMAIL", "jose\u0301@example.com", "jos\u00e9@example.com"),
        ("EMAIL", "pat@example.com", None),  # already its key
        ("ALL", "pat@xn--bcher-kva.de", "pat@b\u00fccher.de"),  # an all-channel block's email
        ("ALL", "+14155550100", None),
        ("SMS", "+14155550100", None),
        ("FACEBOOK", "\u200b123", "123"),
    ],
)
def test_the_migration_moves_what_the_rules_key_otherwise(
    channel: str, stored: str, key: str | None
) -> None:
    assert new_key(channel, stored) == key


def test_the_migration_leaves_what_the_rules_refuse_to_its_caller() -> None:
    with pytest.raises(InvalidArgument):
        new_key("EMAIL", "pat@example..com")


def test_former_spellings_are_those_stored_before_the_keys() -> None:
    """What an erased address's hash may have been taken of before migration 14: the check
    looks for each (the key first)."""
    key = "jos\u00e9@b\u00fccher.de"
    spellings = former_spellings(Channel.EMAIL, key)
    assert spellings[0] == key
    assert {
        "jos\u00e9@b\u00fccher.de.",
        "jose\u0301@bu\u0308cher.de",
        "jos\u00e9@xn--bcher-kva.de",
        "jose\u0301@xn--bcher-kva.de",
    } <= set(spellings)
    assert all(normalize_email(s) == key for s in spellings)
    assert former_spellings(Channel.EMAIL, "pat@example.com") == (
        "pat@example.com",
        "pat@example.com.",
    )
    assert former_spellings(Channel.SMS, "+14155550100") == ("+14155550100",)
    # str.lower wrote a word-final sigma in its final form.
    greek = "\u03bf\u03b4\u03bf\u03c3@x.gr"
    assert "\u03bf\u03b4\u03bf\u03c2@x.gr" in former_spellings(Channel.EMAIL, greek)
