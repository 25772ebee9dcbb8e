"""Quiet hours as a pure function: every boundary of the federal and state windows, the
daylight-saving nights, numbers spanning several zones, Sundays and legal holidays, the
location's narrowing window, and which sends are judged at all."""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

import phonenumbers
import pytest
from dnd_server.domain.consent import Purpose
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Channel, Direction
from dnd_server.domain.quiet_hours import (
    AREA_CODE_STATES,
    FEDERAL,
    NO_SETTINGS,
    PHONE_CHANNELS,
    STATE_RULES,
    US_ZONES,
    QuietHoursSettings,
    ZoneSource,
    hours,
    judged,
    legal_holidays,
    number_facts,
    parse_window_time,
    quiet_hours,
    recipient,
)
from dnd_server.domain.rules import decide_send, with_quiet_hours
from phonenumbers import geocoder

NY, CHI, DEN, LA = "America/New_York", "America/Chicago", "America/Denver", "America/Los_Angeles"
UTC = dt.UTC


def local(zone: str, *parts: int) -> dt.datetime:
    """The instant of a local wall time (fold 0: a repeated hour's first occurrence)."""
    return dt.datetime(*parts, tzinfo=ZoneInfo(zone)).astimezone(UTC)


def utc(*parts: int) -> dt.datetime:
    return dt.datetime(*parts, tzinfo=UTC)


def check(
    at: dt.datetime,
    zones: tuple[str, ...],
    state: str = "",
    purpose: Purpose | None = Purpose.MARKETING,
    channel: Channel = Channel.SMS,
    settings: QuietHoursSettings = NO_SETTINGS,
) -> tuple[dt.datetime | None, str]:
    """(not_before, rule id) of a deferred send, (None, "") of an allowed one."""
    verdict = quiet_hours(at, zones, state, purpose, channel, settings)
    if verdict.allowed:
        assert verdict.not_before is None and verdict.rule is None
        return None, ""
    assert verdict.rule is not None
    return verdict.not_before, verdict.rule.rule_id


# 2026-12-02 is a Wednesday (EST, UTC-5; CST, UTC-6).
BOUNDARIES = [
    # Florida: 08:00-20:00.
    ("FL 07:59:59", local(NY, 2026, 12, 2, 7, 59, 59), (NY,), "FL", utc(2026, 12, 2, 13), "US-FL"),
    ("FL 08:00:00", local(NY, 2026, 12, 2, 8, 0, 0), (NY,), "FL", None, ""),
    ("FL 19:59:59", local(NY, 2026, 12, 2, 19, 59, 59), (NY,), "FL", None, ""),
    ("FL 20:00:00", local(NY, 2026, 12, 2, 20, 0, 0), (NY,), "FL", utc(2026, 12, 3, 13), "US-FL"),
    ("FL 21:30", local(NY, 2026, 12, 2, 21, 30), (NY,), "FL", utc(2026, 12, 3, 13), "US-FL"),
    ("FL 00:30", local(NY, 2026, 12, 3, 0, 30), (NY,), "FL", utc(2026, 12, 3, 13), "US-FL"),
    # Federal only (California): 08:00-21:00.
    ("US 07:59:59", local(LA, 2026, 12, 2, 7, 59, 59), (LA,), "", utc(2026, 12, 2, 16), "US-TCPA"),
    ("US 08:00:00", local(LA, 2026, 12, 2, 8), (LA,), "", None, ""),
    ("US 20:00:00", local(LA, 2026, 12, 2, 20), (LA,), "", None, ""),
    ("US 20:59:59", local(LA, 2026, 12, 2, 20, 59, 59), (LA,), "", None, ""),
    ("US 21:00:00", local(LA, 2026, 12, 2, 21), (LA,), "", utc(2026, 12, 3, 16), "US-TCPA"),
    # Oklahoma and Maryland: 08:00-20:00 like Florida.
    ("OK 20:00", local(CHI, 2026, 12, 2, 20), (CHI,), "OK", utc(2026, 12, 3, 14), "US-OK"),
    ("MD 19:59", local(NY, 2026, 12, 2, 19, 59), (NY,), "MD", None, ""),
    ("MD 20:00", local(NY, 2026, 12, 2, 20), (NY,), "MD", utc(2026, 12, 3, 13), "US-MD"),
    # Connecticut opens at 09:00.
    ("CT 08:30", local(NY, 2026, 12, 2, 8, 30), (NY,), "CT", utc(2026, 12, 2, 14), "US-CT"),
]


@pytest.mark.parametrize(
    ("at", "zones", "state", "not_before", "rule"),
    [case[1:] for case in BOUNDARIES],
    ids=[case[0] for case in BOUNDARIES],
)
def test_window_boundaries(
    at: dt.datetime,
    zones: tuple[str, ...],
    state: str,
    not_before: dt.datetime | None,
    rule: str,
) -> None:
    assert check(at, zones, state) == (not_before, rule)


# US daylight saving 2026: spring forward Sunday 8 March (02:00 -> 03:00), fall back Sunday
# 1 November (02:00 -> 01:00). not_before is the instant of 08:00 local of the right day.
DST = [
    # The evening before spring forward: 08:00 on Sunday is already EDT (UTC-4).
    ("spring evening", local(NY, 2026, 3, 7, 22), utc(2026, 3, 8, 12)),
    ("spring 01:30", local(NY, 2026, 3, 8, 1, 30), utc(2026, 3, 8, 12)),
    ("spring 03:30", local(NY, 2026, 3, 8, 3, 30), utc(2026, 3, 8, 12)),
    # The evening before fall back: 08:00 on Sunday is EST again (UTC-5).
    ("fall evening", local(NY, 2026, 10, 31, 21, 30), utc(2026, 11, 1, 13)),
    # 01:30 happens twice that night: both are before 08:00 EST.
    ("fall 01:30 EDT", utc(2026, 11, 1, 5, 30), utc(2026, 11, 1, 13)),
    ("fall 01:30 EST", utc(2026, 11, 1, 6, 30), utc(2026, 11, 1, 13)),
    ("fall 08:00 EST", utc(2026, 11, 1, 13), None),
    ("fall 07:59 EST", utc(2026, 11, 1, 12, 59), utc(2026, 11, 1, 13)),
    ("fall 20:59 EST", utc(2026, 11, 2, 1, 59), None),
]


@pytest.mark.parametrize(("at", "not_before"), [c[1:] for c in DST], ids=[c[0] for c in DST])
def test_daylight_saving_nights(at: dt.datetime, not_before: dt.datetime | None) -> None:
    found, _ = check(at, (NY,))
    assert found == not_before
    if found is not None:
        wall = found.astimezone(ZoneInfo(NY))
        assert (wall.hour, wall.minute) == (8, 0)


def test_a_number_in_several_zones_must_be_allowed_in_each() -> None:
    # Alaska's 907 spans Anchorage (UTC-9 in December) and Adak (UTC-10); a number is judged
    # in every zone of its area code (Juneau, and Honolulu's for one exchange, too).
    zones, _ = number_facts("+19075551234")
    assert {"America/Anchorage", "America/Adak"} <= set(zones)
    at = local("America/Anchorage", 2026, 12, 2, 8, 30)  # 07:30 in Adak
    assert check(at, zones) == (utc(2026, 12, 2, 18), "US-TCPA")  # 08:00 Adak, 09:00 Anchorage
    assert check(local("America/Anchorage", 2026, 12, 2, 9), zones) == (None, "")
    # The evening ends by the eastern zone: 20:59 Anchorage is 19:59 in Adak, 21:00 is over.
    assert check(local("America/Anchorage", 2026, 12, 2, 20, 59), zones) == (None, "")
    late = check(local("America/Anchorage", 2026, 12, 2, 21), zones)
    assert late == (utc(2026, 12, 3, 18), "US-TCPA")


def test_a_state_split_by_a_zone_line() -> None:
    # South Dakota's 605: Mountain and Central. 20:59 Mountain is 21:59 Central.
    zones, state = number_facts("+16055551234")
    assert set(zones) == {DEN, CHI, "America/North_Dakota/Center"} and state == ""
    assert check(local(DEN, 2026, 12, 2, 19, 59), zones) == (None, "")
    # Deferred to 08:00 Mountain, the later of the two mornings.
    assert check(local(DEN, 2026, 12, 2, 20, 59), zones) == (utc(2026, 12, 3, 15), "US-TCPA")


SUNDAYS_AND_HOLIDAYS = [
    # 2026-12-06 is a Sunday: Alabama forbids it; the next allowed time is Monday 08:00.
    ("AL Sunday", local(CHI, 2026, 12, 6, 10), "AL", utc(2026, 12, 7, 14), "US-AL"),
    ("AL Saturday 19:59", local(CHI, 2026, 12, 5, 19, 59), "AL", None, ""),
    ("AL Saturday 20:00", local(CHI, 2026, 12, 5, 20), "AL", utc(2026, 12, 7, 14), "US-AL"),
    ("LA Sunday", local(CHI, 2026, 12, 6, 12), "LA", utc(2026, 12, 7, 14), "US-LA"),
    ("MS Sunday", local(CHI, 2026, 12, 6, 12), "MS", utc(2026, 12, 7, 14), "US-MS"),
    # Christmas Day 2026 is a Friday: Saturday 08:00.
    ("AL Christmas", local(CHI, 2026, 12, 25, 10), "AL", utc(2026, 12, 26, 14), "US-AL"),
    ("AL Thanksgiving", local(CHI, 2026, 11, 26, 10), "AL", utc(2026, 11, 27, 14), "US-AL"),
    # Independence Day 2026 is a Saturday, observed Friday 3 July: Friday, Saturday and Sunday
    # are closed in Utah; Monday 08:00 MDT.
    ("UT July 3", local(DEN, 2026, 7, 3, 10), "UT", utc(2026, 7, 6, 14), "US-UT"),
    # Texas: Sunday from noon.
    ("TX Sunday 10:00", local(CHI, 2026, 12, 6, 10), "TX", utc(2026, 12, 6, 18), "US-TX"),
    ("TX Sunday 12:00", local(CHI, 2026, 12, 6, 12), "TX", None, ""),
    ("TX Monday 08:30", local(CHI, 2026, 12, 7, 8, 30), "TX", utc(2026, 12, 7, 15), "US-TX"),
    # Rhode Island: Saturday until 17:00, then Monday 09:00.
    ("RI Saturday 17:30", local(NY, 2026, 12, 5, 17, 30), "RI", utc(2026, 12, 7, 14), "US-RI"),
    # States without a Sunday rule: Sunday is an ordinary day.
    ("FL Sunday", local(NY, 2026, 12, 6, 10), "FL", None, ""),
]


@pytest.mark.parametrize(
    ("at", "state", "not_before", "rule"),
    [c[1:] for c in SUNDAYS_AND_HOLIDAYS],
    ids=[c[0] for c in SUNDAYS_AND_HOLIDAYS],
)
def test_sundays_and_legal_holidays(
    at: dt.datetime, state: str, not_before: dt.datetime | None, rule: str
) -> None:
    zone = NY if state in {"RI", "FL"} else DEN if state == "UT" else CHI
    assert check(at, (zone,), state) == (not_before, rule)


def test_the_closed_day_is_named() -> None:
    verdict = quiet_hours(
        local(CHI, 2026, 12, 25, 10), (CHI,), "AL", Purpose.MARKETING, Channel.SMS
    )
    assert verdict.window == "closed on legal holidays (Christmas Day)"
    sunday = quiet_hours(local(CHI, 2026, 12, 6, 10), (CHI,), "AL", Purpose.MARKETING, Channel.SMS)
    assert sunday.window == "closed on Sundays"


def test_federal_holidays_with_their_observed_days() -> None:
    days = legal_holidays(2026)
    assert days[dt.date(2026, 11, 26)] == "Thanksgiving Day"
    assert days[dt.date(2026, 1, 19)].startswith("Birthday of Martin Luther King")
    assert days[dt.date(2026, 5, 25)] == "Memorial Day"
    assert days[dt.date(2026, 7, 3)] == "Independence Day (observed)"
    assert dt.date(2026, 7, 6) not in days
    # New Year's Day 2028 is a Saturday: observed Friday 31 December 2027.
    assert legal_holidays(2027)[dt.date(2027, 12, 31)] == "New Year's Day (observed)"
    assert len(legal_holidays(2025)) == 11


def test_the_location_window_narrows_and_never_widens() -> None:
    narrow = QuietHoursSettings(window=hours("10:00", "16:00"))
    at = local(NY, 2026, 12, 2, 9)
    assert check(at, (NY,), "FL", settings=narrow) == (utc(2026, 12, 2, 15), "LOCATION")
    assert check(local(NY, 2026, 12, 2, 16), (NY,), "FL", settings=narrow) == (
        utc(2026, 12, 3, 15),
        "LOCATION",
    )
    # A window wider than the law is kept, and the law still applies.
    wide = QuietHoursSettings(window=hours("06:00", "23:00"))
    assert check(local(NY, 2026, 12, 2, 7), (NY,), "FL", settings=wide) == (
        utc(2026, 12, 2, 13),
        "US-FL",
    )
    assert check(local(NY, 2026, 12, 2, 20, 30), (NY,), "FL", settings=wide)[1] == "US-FL"
    assert check(local(NY, 2026, 12, 2, 12), (NY,), "FL", settings=wide) == (None, "")


def test_no_instant_allowed_in_every_zone_defers_without_a_time() -> None:
    # 08:00-09:00 in New York never overlaps 08:00-09:00 in Honolulu.
    settings = QuietHoursSettings(window=hours("08:00", "09:00"))
    verdict = quiet_hours(
        local(NY, 2026, 12, 2, 8, 30),
        (NY, "Pacific/Honolulu"),
        "",
        Purpose.MARKETING,
        Channel.SMS,
        settings,
    )
    assert not verdict.allowed and verdict.not_before is None
    assert "no time in the next 14 days" in verdict.explanation


JUDGED = [
    (Purpose.MARKETING, Channel.SMS, False, True),
    (Purpose.MARKETING, Channel.CALL, False, True),
    (Purpose.MARKETING, Channel.WHATSAPP, False, True),
    (Purpose.MARKETING, Channel.EMAIL, False, False),
    (Purpose.MARKETING, Channel.FACEBOOK, False, False),
    (Purpose.MARKETING, Channel.GMB, False, False),
    (Purpose.INFORMATIONAL, Channel.SMS, False, False),
    (Purpose.INFORMATIONAL, Channel.SMS, True, True),
    (Purpose.INFORMATIONAL, Channel.EMAIL, True, False),
    (Purpose.TRANSACTIONAL, Channel.SMS, True, False),
    (Purpose.COMPLIANCE_REPLY, Channel.SMS, True, False),
    (None, Channel.SMS, True, False),
]


@pytest.mark.parametrize(("purpose", "channel", "informational", "expected"), JUDGED)
def test_which_sends_are_judged(
    purpose: Purpose | None, channel: Channel, informational: bool, expected: bool
) -> None:
    settings = QuietHoursSettings(informational=informational)
    assert judged(purpose, channel, Direction.OUTBOUND, settings) is expected
    assert not judged(purpose, channel, Direction.INBOUND, settings)
    at = local(NY, 2026, 12, 2, 21, 30)
    verdict = quiet_hours(at, (NY,), "FL", purpose, channel, settings)
    assert verdict.allowed is not expected


def test_rcs_is_a_phone_channel_once_it_exists() -> None:
    rcs = [c for c in Channel if c.value == "RCS"]
    assert set(rcs) <= PHONE_CHANNELS
    assert {Channel.CALL, Channel.SMS, Channel.WHATSAPP} <= PHONE_CHANNELS
    assert not {Channel.EMAIL, Channel.FACEBOOK, Channel.GMB} & PHONE_CHANNELS


def test_the_recipient_zone_comes_from_the_request_then_the_number_then_the_location() -> None:
    florida = "+13055551234"
    assert recipient(florida, CHI) == recipient(florida, CHI, QuietHoursSettings())
    assert recipient(florida, CHI).zones == (CHI,)
    assert recipient(florida, CHI).source is ZoneSource.REQUEST
    # The state is the area code's, whichever zone is used.
    assert recipient(florida, CHI).state == "FL"
    assert recipient(florida, "").zones == (NY,)
    assert recipient(florida, "").source is ZoneSource.NUMBER
    default = QuietHoursSettings(default_time_zone=DEN)
    # A toll-free number tells no zone: the location's default, else every US zone.
    assert recipient("+18005551234", "", default).zones == (DEN,)
    assert recipient("+18005551234", "", default).source is ZoneSource.LOCATION
    assert recipient("+18005551234", "").zones == US_ZONES
    assert recipient("+18005551234", "").source is ZoneSource.ASSUMED
    # Nothing tells where the recipient is: no zones, not judged.
    assert recipient("", "") == recipient("", "", QuietHoursSettings())
    assert recipient("", "").zones == () and recipient("", "").source is ZoneSource.UNKNOWN
    assert recipient("", "", default).zones == (DEN,)
    nowhere = quiet_hours(local(NY, 2026, 12, 2, 23), (), "", Purpose.MARKETING, Channel.SMS)
    assert nowhere.allowed
    # The Florida panhandle west of the Apalachicola is Central, east of it Eastern: a number
    # of 850 is judged in both (numbers move), as one of 448, its overlay, is.
    assert number_facts("+18504331234") == ((CHI, NY), "FL")
    assert number_facts("+14485551234") == ((CHI, NY), "FL")


def test_no_zone_known_means_every_us_zone() -> None:
    # 11:00 in New York is 06:00 in Honolulu: not yet.
    at = local(NY, 2026, 12, 2, 11)
    not_before, _ = check(at, US_ZONES)
    assert not_before == local("Pacific/Honolulu", 2026, 12, 2, 8)
    assert check(local("Pacific/Honolulu", 2026, 12, 2, 9), US_ZONES) == (None, "")


def test_area_codes_are_the_phonenumbers_states() -> None:
    """Every area code of the table is of its state by the phonenumbers geocoding data, and
    every state with a rule has area codes."""
    names = {
        "FL": "Florida",
        "OK": "Oklahoma",
        "MD": "Maryland",
        "AL": "Alabama",
        "LA": "Louisiana",
        "MS": "Mississippi",
        "UT": "Utah",
        "TX": "Texas",
        "WA": "Washington",
        "CT": "Connecticut",
        "RI": "Rhode Island",
    }
    assert set(names) == set(STATE_RULES) == set(AREA_CODE_STATES.values())
    for code, state in AREA_CODE_STATES.items():
        seen = set()
        for exchange in (234, 456, 678, 890, 955):
            number = phonenumbers.parse(f"+1{code}{exchange}1234")
            where = geocoder.description_for_number(number, "en")
            if where:
                seen.add(where)
        assert seen, code
        assert all(w.startswith(names[state]) or w.endswith(f", {state}") for w in seen), (
            code,
            state,
            seen,
        )


def test_every_state_rule_is_stricter_than_the_federal_one() -> None:
    federal = FEDERAL.days[0]
    assert federal is not None
    for rule in STATE_RULES.values():
        assert rule.citation and rule.source_url.startswith("http")
        for window in rule.days:
            assert window is None or (federal.start <= window.start and window.end <= federal.end)
        assert rule.holidays_closed or any(w != federal for w in rule.days)


def test_window_times_are_checked() -> None:
    assert parse_window_time("f", "09:30") == 9 * 3600 + 30 * 60
    assert parse_window_time("f", "24:00") == 86_400
    for bad in ("9:30", "25:00", "12:60", "noon", "24:01", ""):
        with pytest.raises(InvalidArgument):
            parse_window_time("f", bad)
    assert QuietHoursSettings(default_time_zone="Mars/Olympus").violations()
    assert not QuietHoursSettings(default_time_zone=NY).violations()


def test_the_florida_text_at_21_30_is_deferred_to_8_00_and_a_receipt_is_not() -> None:
    at = local(NY, 2026, 12, 2, 21, 30)
    allowed = decide_send((), Channel.SMS, Direction.OUTBOUND, purpose=Purpose.MARKETING)
    who = recipient("+13055551234", "")
    verdict = quiet_hours(at, who.zones, who.state, Purpose.MARKETING, Channel.SMS)
    decision = with_quiet_hours(allowed, verdict)
    assert not decision.allowed and decision.deferred and decision.denial is None
    assert verdict.not_before == local(NY, 2026, 12, 3, 8)
    assert verdict.rule is not None and verdict.rule.rule_id == "US-FL"
    assert verdict.time_zone == NY and verdict.window == "08:00-20:00"
    assert "deferred (not allowed now)" in decision.explanation
    assert "Thursday 08:00 America/New_York" in decision.explanation
    receipt = quiet_hours(at, who.zones, who.state, Purpose.TRANSACTIONAL, Channel.SMS)
    assert with_quiet_hours(allowed, receipt).allowed


def test_the_docs_rules_table_is_the_domain_s() -> None:
    """docs/quiet-hours.md shows every rule, with its windows and source, and every area code,
    as domain/quiet_hours.py has them."""
    from tests.doc_examples import REPO

    text = (REPO / "docs" / "quiet-hours.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(US-[A-Z]+)` \| (.+?) \| (.+?) \| \[(.+?)\]\((.+?)\) \|$", text, re.M)
    rules = {rule.rule_id: rule for rule in (FEDERAL, *STATE_RULES.values())}
    assert {row[0] for row in rows} == set(rules)
    for rule_id, jurisdiction, windows, citation, url in rows:
        rule = rules[rule_id]
        assert (jurisdiction, windows, citation, url) == (
            rule.jurisdiction,
            rule.summary(),
            rule.citation,
            rule.source_url,
        )
    codes = dict(re.findall(r"^\| `([A-Z]{2})` \| ([\d, ]+) \|$", text, re.M))
    assert {state: set(listed.split(", ")) for state, listed in codes.items()} == {
        state: {c for c, s in AREA_CODE_STATES.items() if s == state} for state in STATE_RULES
    }


def test_a_judged_decision_keeps_every_field_of_the_decision() -> None:
    """with_quiet_hours builds the decision field by field: every field of SendDecision is
    either copied or set by it."""
    import dataclasses

    from dnd_server.domain.rules import SendDecision

    copied = {"denied_by", "denied_by_address", "denial", "claim", "consent"}
    assert {f.name for f in dataclasses.fields(SendDecision)} == copied | {
        "allowed",
        "explanation",
        "quiet",
    }
    base = decide_send((), Channel.SMS, Direction.OUTBOUND, purpose=Purpose.MARKETING)
    verdict = quiet_hours(local(NY, 2026, 12, 2, 12), (NY,), "FL", Purpose.MARKETING, Channel.SMS)
    judged_ = with_quiet_hours(base, verdict)
    assert judged_.allowed and judged_.explanation == base.explanation
    assert all(getattr(judged_, name) == getattr(base, name) for name in copied)


def test_the_pacific_territories_are_judged_in_their_own_zones() -> None:
    """American Samoa, Guam and the Northern Marianas lie outside the zones assumed for a +1
    number: an exchange the number data do not place still gets its territory's zone."""
    assert number_facts("+16842581234")[0] == ("Pacific/Pago_Pago",)
    assert number_facts("+16715551234")[0] == ("Pacific/Guam",)
    assert number_facts("+16705551234")[0] == ("Pacific/Saipan",)
    assert recipient("+16842581234", "").zones == ("Pacific/Pago_Pago",)


@pytest.mark.parametrize(
    ("number", "zones"),
    [
        ("+13645551234", {CHI, NY}),  # 364 overlays 270, western Kentucky's Central time
        ("+19305551234", {CHI, NY}),  # 930 overlays 812: Evansville is Central
        ("+14585551234", {DEN, LA}),  # 458 overlays 541: Malheur County is Mountain
        ("+12705551234", {CHI, NY}),  # an exchange the data place in one zone of two
    ],
)
def test_a_number_is_judged_in_every_zone_of_its_area_code(number: str, zones: set[str]) -> None:
    found, _ = number_facts(number)
    assert set(found) == zones
    # 08:30 in the eastern of the two zones is 07:30 in the western: too early.
    east = NY if NY in zones else DEN
    assert check(local(east, 2025, 1, 15, 8, 30), found)[0] is not None
    assert check(local(east, 2025, 1, 15, 10), found) == (None, "")


def test_numbers_of_no_known_zone_wait_for_atlantic_time_too() -> None:
    """Toll-free: every US zone, Puerto Rico's Atlantic time among them (an hour ahead of New
    York in winter): 20:30 in New York is 21:30 in San Juan."""
    zones = recipient("+18005550100", "").zones
    assert "America/Puerto_Rico" in zones
    assert check(local(NY, 2025, 1, 15, 20, 30), zones)[0] is not None
    assert check(local(NY, 2025, 1, 15, 19, 30), zones) == (None, "")
