"""Quiet hours: the local times a marketing call or text may reach its recipient.

- The federal rule: no telephone solicitation before 8:00 or from 21:00, the called party's
  local time (47 CFR 64.1200(c)(1)); the FCC holds texts to be calls. Applied to every
  recipient in its own local time.
- State rules where stricter (``STATE_RULES``), the state taken from the number's area code
  (``AREA_CODE_STATES``; Florida and Oklahoma law presume a number of their area codes is a
  resident's); some forbid Sundays or legal holidays.
- A location's own window narrows the legal ones, never widens them: every rule must allow
  the send (intersection).

A send quiet hours forbid is *deferred* to ``not_before``: the earliest instant every rule
allows in every candidate time zone of the recipient (a number spanning several zones must be
allowed in each). Pure: no I/O; the phone number data are those of the ``phonenumbers``
package, looked up once per number (cached).
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import phonenumbers
from phonenumbers import timezone as phone_timezones
from phonenumbers import tzdata as phone_tzdata

from dnd_server.domain.consent import Purpose
from dnd_server.domain.errors import InvalidArgument
from dnd_server.domain.model import Channel, Direction

# Calls and texts to a phone number (RCS too, where the channel exists). Email, Facebook and
# Google Business messages do not go to a phone number: the time-of-day rules of the TCPA and
# the state telephone-solicitation acts do not cover them.
PHONE_CHANNEL_NAMES = frozenset({"CALL", "SMS", "WHATSAPP", "RCS"})
PHONE_CHANNELS: frozenset[Channel] = frozenset(c for c in Channel if c.value in PHONE_CHANNEL_NAMES)

# Purposes always judged; INFORMATIONAL only where the location says so. Never TRANSACTIONAL,
# COMPLIANCE_REPLY or a check of no stated purpose (the behaviour before quiet hours).
ALWAYS_JUDGED = frozenset({Purpose.MARKETING})

# How far ahead an allowed time is looked for.
HORIZON_DAYS = 14
# A number listed in more zones than this is not geographic (toll-free, non-geographic): its
# zones say nothing of where the recipient is.
_GEOGRAPHIC_ZONES_MAX = 3
# No zone known at all: the main zones of the United States, all of them (the most restrictive).
US_ZONES: tuple[str, ...] = (
    # Puerto Rico and the US Virgin Islands: Atlantic time, an hour ahead of New York in winter.
    "America/Puerto_Rico",
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
)

_DAY = 86_400
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class Window:
    """Allowed local times of one day: from ``start`` (included) to ``end`` (excluded), in
    seconds after local midnight."""

    start: int
    end: int

    def __str__(self) -> str:
        return f"{clock_text(self.start)}-{clock_text(self.end)}"

    def narrowed(self, other: Window | None) -> Window | None:
        if other is None:
            return None
        start, end = max(self.start, other.start), min(self.end, other.end)
        return Window(start, end) if start < end else None


def hours(start: str, end: str) -> Window:
    """A window from "HH:MM" times (``end`` "24:00" is midnight at the day's end)."""
    return Window(_seconds(start), _seconds(end))


def _seconds(text: str) -> int:
    hh, _, mm = text.partition(":")
    return int(hh) * 3600 + int(mm) * 60


def clock_text(seconds: int) -> str:
    """ "HH:MM" of seconds after midnight (86400: "24:00")."""
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


def parse_window_time(field: str, text: str) -> int:
    """Seconds after midnight of an "HH:MM" time (00:00 to 24:00), or InvalidArgument."""
    hh, sep, mm = text.partition(":")
    if not (sep and len(hh) == 2 and len(mm) == 2 and hh.isdigit() and mm.isdigit()):
        raise InvalidArgument.one(field, f"{text!r} is not a time HH:MM (e.g. 09:00)")
    value = int(hh) * 3600 + int(mm) * 60
    if int(mm) > 59 or value > _DAY:
        raise InvalidArgument.one(field, f"{text!r} is not a time of day (00:00 to 24:00)")
    return value


@dataclass(frozen=True, slots=True, eq=False)
class QuietRule:
    """When one jurisdiction (or the location) allows a call or text: a window per weekday
    (Monday first; None: not that day), and whether legal holidays are closed. Each rule is
    one object (compared and hashed by identity: cheap cache keys)."""

    rule_id: str
    jurisdiction: str
    citation: str
    source_url: str
    days: tuple[Window | None, ...]
    holidays_closed: bool = False

    def window_on(self, day: dt.date) -> Window | None:
        """The day's window (None: the day is closed)."""
        if self.holidays_closed and day in legal_holidays(day.year):
            return None
        return self.days[day.weekday()]

    def day_text(self, day: dt.date) -> str:
        """The day's window as text, or why the day is closed."""
        return _day_text(self, day)

    def _day_text(self, day: dt.date) -> str:
        if self.holidays_closed:
            holiday = legal_holidays(day.year).get(day)
            if holiday is not None:
                return f"closed on legal holidays ({holiday})"
        window = self.days[day.weekday()]
        if window is None:
            return f"closed on {_WEEKDAYS[day.weekday()]}s"
        return str(window)

    def summary(self) -> str:
        """Its windows as the docs table shows them."""
        parts: list[str] = []
        names = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
        i = 0
        while i < 7:
            j = i
            while j + 1 < 7 and self.days[j + 1] == self.days[i]:
                j += 1
            span = names[i] if i == j else f"{names[i]}-{names[j]}"
            shown = "closed" if self.days[i] is None else str(self.days[i])
            parts.append(f"{span} {shown}")
            i = j + 1
        text = "every day " + str(self.days[0]) if len(parts) == 1 else ", ".join(parts)
        if self.holidays_closed:
            text += "; closed on legal holidays"
        return text


@functools.lru_cache(maxsize=16384)
def _day_text(rule: QuietRule, day: dt.date) -> str:
    return rule._day_text(day)


def _week(
    weekdays: Window, saturday: Window | None = None, sunday: Window | None = None
) -> tuple[Window | None, ...]:
    sat = weekdays if saturday is _SAME else saturday
    sun = weekdays if sunday is _SAME else sunday
    return (weekdays,) * 5 + (sat, sun)


_SAME = Window(-1, -1)  # marker: the weekday window


def _daily(window: Window) -> tuple[Window | None, ...]:
    return (window,) * 7


FEDERAL = QuietRule(
    rule_id="US-TCPA",
    jurisdiction="United States (federal)",
    citation="47 CFR 64.1200(c)(1)",
    source_url="https://www.ecfr.gov/current/title-47/chapter-I/subchapter-B/part-64/subpart-L/section-64.1200",
    days=_daily(hours("08:00", "21:00")),
)

# Stricter state rules, by state. Their sources: the statutes cited, and the state-by-state
# tables of https://www.dropcowboy.com/state-compliance and
# https://blog.clickpointsoftware.com/telemarketing-calling-hours-by-state (both 2025); the
# Sunday and holiday restrictions as in https://dnc.com/holiday-alerts.
STATE_RULES: dict[str, QuietRule] = {
    rule.rule_id.removeprefix("US-"): rule
    for rule in (
        QuietRule(
            "US-FL",
            "Florida",
            "Fla. Stat. § 501.616(6)(a) (SB 1120, 2021)",
            "https://www.nolo.com/legal-encyclopedia/florida-restrictions-telemarketers.html",
            _daily(hours("08:00", "20:00")),
        ),
        QuietRule(
            "US-OK",
            "Oklahoma",
            "Okla. Stat. tit. 15, § 775C.4 (Telephone Solicitation Act of 2022)",
            "https://www.nolo.com/legal-encyclopedia/oklahoma-restrictions-on-telemarketers.html",
            _daily(hours("08:00", "20:00")),
        ),
        QuietRule(
            "US-MD",
            "Maryland",
            "Md. Code, Com. Law § 14-4502 (Stop the Spam Calls Act of 2023, SB 90)",
            "https://www.dnc.com/news/maryland-governor-signs-stop-spam-calls-act-2023-law",
            _daily(hours("08:00", "20:00")),
        ),
        QuietRule(
            "US-AL",
            "Alabama",
            "Ala. Admin. Code r. 770-X-5-.16 (no solicitation on Sundays or state holidays)",
            "https://www.dropcowboy.com/state-compliance",
            _week(hours("08:00", "20:00"), _SAME, None),
            holidays_closed=True,
        ),
        QuietRule(
            "US-LA",
            "Louisiana",
            "La. R.S. 45:811; La. Pub. Serv. Comm'n Gen. Order R-29617 § V(A)(2)",
            "https://dnc.com/holiday-alerts?year=2023",
            _week(hours("08:00", "20:00"), _SAME, None),
            holidays_closed=True,
        ),
        QuietRule(
            "US-MS",
            "Mississippi",
            "Miss. Code Ann. § 77-3-725 (no solicitation on Sundays)",
            "https://www.dropcowboy.com/state-compliance",
            _week(hours("08:00", "20:00"), _SAME, None),
            holidays_closed=True,
        ),
        QuietRule(
            "US-UT",
            "Utah",
            "Utah Code § 13-25a-103 (no solicitation on Sundays or legal holidays)",
            "https://www.dnc.com/news/2019-january-restricted-call-dates",
            _week(hours("08:00", "21:00"), _SAME, None),
            holidays_closed=True,
        ),
        QuietRule(
            "US-TX",
            "Texas",
            "Tex. Bus. & Com. Code § 301.051 (Sunday from noon)",
            "https://www.dropcowboy.com/state-compliance",
            _week(hours("09:00", "21:00"), _SAME, hours("12:00", "21:00")),
        ),
        QuietRule(
            "US-WA",
            "Washington",
            "RCW 80.36.390(2)",
            "https://www.dropcowboy.com/state-compliance",
            _daily(hours("08:00", "20:00")),
        ),
        QuietRule(
            "US-CT",
            "Connecticut",
            "Conn. Gen. Stat. § 42-288a",
            "https://www.dropcowboy.com/state-compliance",
            _daily(hours("09:00", "20:00")),
        ),
        QuietRule(
            "US-RI",
            "Rhode Island",
            "R.I. Gen. Laws §§ 5-61-2(9), 5-61-3.6",
            "http://webserver.rilin.state.ri.us/Statutes/TITLE5/5-61/5-61-3.6.HTM",
            _week(hours("09:00", "18:00"), hours("10:00", "17:00"), None),
            holidays_closed=True,
        ),
    )
}

# US area codes of the states with a rule (checked against the phonenumbers geocoding data by
# the tests). A number of another area code has the federal rule only.
AREA_CODE_STATES: dict[str, str] = {
    code: state
    for state, codes in {
        "FL": "239 305 321 324 352 386 407 448 561 645 656 689 727 728 754 772 786 813 850 "
        "863 904 941 954",
        "OK": "405 539 572 580 918",
        "MD": "227 240 301 410 443 667",
        "AL": "205 251 256 334 659 938",
        "LA": "225 318 337 504 985",
        "MS": "228 601 662 769",
        "UT": "385 435 801",
        "TX": "210 214 254 281 325 346 361 409 430 432 469 512 682 713 726 737 806 817 830 "
        "832 903 915 936 940 945 956 972 979",
        "WA": "206 253 360 425 509 564",
        "CT": "203 475 860 959",
        "RI": "401",
    }.items()
    for code in codes.split()
}


@functools.cache
def legal_holidays(year: int) -> dict[dt.date, str]:
    """The US federal legal holidays of ``year`` (5 U.S.C. 6103), with the weekday each is
    observed on when it falls on a weekend: both days count (the stricter reading)."""

    def nth(month: int, weekday: int, n: int) -> dt.date:
        first = dt.date(year, month, 1)
        return first + dt.timedelta(days=(weekday - first.weekday()) % 7 + 7 * (n - 1))

    def last(month: int, weekday: int) -> dt.date:
        end = dt.date(year, month + 1, 1) - dt.timedelta(days=1)
        return end - dt.timedelta(days=(end.weekday() - weekday) % 7)

    fixed = {
        dt.date(year, 1, 1): "New Year's Day",
        dt.date(year, 6, 19): "Juneteenth",
        dt.date(year, 7, 4): "Independence Day",
        dt.date(year, 11, 11): "Veterans Day",
        dt.date(year, 12, 25): "Christmas Day",
    }
    found = {
        nth(1, 0, 3): "Birthday of Martin Luther King, Jr.",
        nth(2, 0, 3): "Washington's Birthday",
        last(5, 0): "Memorial Day",
        nth(9, 0, 1): "Labor Day",
        nth(10, 0, 2): "Columbus Day",
        nth(11, 3, 4): "Thanksgiving Day",
    }
    for day, name in fixed.items():
        found[day] = name
        if day.weekday() == 5:
            found.setdefault(day - dt.timedelta(days=1), f"{name} (observed)")
        elif day.weekday() == 6:
            found.setdefault(day + dt.timedelta(days=1), f"{name} (observed)")
    # New Year's Day on a Saturday is observed on the Friday before, in the year before.
    if dt.date(year + 1, 1, 1).weekday() == 5:
        found.setdefault(dt.date(year, 12, 31), "New Year's Day (observed)")
    return found


# -- the recipient's time zones ----------------------------------------------------------------


class ZoneSource(enum.StrEnum):
    """Where the recipient's time zones came from."""

    REQUEST = "REQUEST"
    NUMBER = "NUMBER"
    LOCATION = "LOCATION"
    # A North American (+1) number whose data tell no zone (toll-free, non-geographic):
    # every zone of ``US_ZONES`` (the send must be allowed in each).
    ASSUMED = "ASSUMED"
    # Nothing tells where the recipient is (no zone asked, no phone number, no location
    # default): quiet hours are not judged.
    UNKNOWN = "UNKNOWN"


@functools.lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The IANA time zone ``name``; raises ValueError when there is none of that name."""
    if not name or len(name) > 64 or name != name.strip():
        raise ValueError(name)
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as error:
        raise ValueError(name) from error


def is_zone(name: str) -> bool:
    try:
        zone(name)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=65536)
def number_facts(e164: str) -> tuple[tuple[str, ...], str]:
    """(time zones, US state with a rule or "") of a phone number in E.164 form; no zones when
    the number's data tell none (unknown, or a non-geographic number spanning many zones)."""
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return (), ""
    named = [
        z
        for z in phone_timezones.time_zones_for_number(number)
        if z != phone_timezones.UNKNOWN_TIMEZONE
    ]
    zones = tuple(z for z in named if is_zone(z))
    missing = len(zones) < len(named)
    if len(zones) > _GEOGRAPHIC_ZONES_MAX:
        zones = ()
    state = ""
    if number.country_code == 1:
        national = str(number.national_number)
        area = national[:3] if len(national) == 10 else ""
        state = AREA_CODE_STATES.get(area, "")
        if missing:
            # A zone this server's zone data lack: judged in every US zone, never in the
            # zones that are left (nor in a location's default zone).
            zones = US_ZONES
        elif zones:
            # Every zone of the area code, and of the one it overlays: the number data place
            # an exchange in one zone, but numbers move, and an overlay's data may know only
            # one of its area's zones (364 overlays 270, which western Kentucky shares with
            # Central time).
            zones = tuple(sorted({*zones, *area_code_zones(area)}))
        elif area:
            # The Pacific territories' area codes are one zone each, whatever the exchange
            # (the number data give the whole plan's zones for some exchanges).
            zones = _TERRITORY_ZONES.get(area, ())
    return zones, state


# Overlay area codes whose number data know fewer zones than the area code they overlay.
_OVERLAYS: dict[str, str] = {
    "364": "270",  # western Kentucky (Central and Eastern)
    "930": "812",  # southern Indiana (Central and Eastern)
    "448": "850",  # the Florida Panhandle (Central and Eastern)
    "458": "541",  # Oregon (Pacific and Mountain)
    "986": "208",  # Idaho (Mountain and Pacific)
    "729": "423",  # eastern Tennessee (Eastern and Central)
    "236": "250",  # British Columbia (Pacific and Mountain)
    "672": "250",
    "778": "250",
    "367": "418",  # eastern Quebec (Eastern and Atlantic)
    "581": "418",
    "879": "709",  # Newfoundland and Labrador (Newfoundland and Atlantic)
}


@functools.cache
def _area_zones() -> dict[str, frozenset[str]]:
    """Each North American area code's zones: those of every exchange the number data place."""
    found: dict[str, set[str]] = {}
    for prefix, names in phone_tzdata.TIMEZONE_DATA.items():
        if prefix.startswith("1") and len(prefix) >= 4:
            found.setdefault(prefix[1:4], set()).update(n for n in names if is_zone(n))
    return {area: frozenset(names) for area, names in found.items()}


def area_code_zones(area: str) -> frozenset[str]:
    """The zones of a North American area code and of the area code it overlays."""
    table = _area_zones()
    zones = table.get(area, frozenset())
    overlaid = _OVERLAYS.get(area)
    return zones | table.get(overlaid, frozenset()) if overlaid else zones


# Area codes of US territories outside the zones of ``US_ZONES``.
_TERRITORY_ZONES: dict[str, tuple[str, ...]] = {
    "684": ("Pacific/Pago_Pago",),
    "671": ("Pacific/Guam",),
    "670": ("Pacific/Saipan",),
}


@dataclass(frozen=True, slots=True)
class QuietHoursSettings:
    """A location's quiet-hours settings (the law applies whatever they say)."""

    # INFORMATIONAL sends are judged too (MARKETING always are).
    informational: bool = False
    # The zone of recipients whose zone neither the request nor the number tells ("": none).
    default_time_zone: str = ""
    # The location's own daily window: narrows the legal ones (None: none).
    window: Window | None = None

    def violations(self) -> list[tuple[str, str]]:
        """(field, problem) of settings that cannot be stored."""
        found = []
        if self.default_time_zone and not is_zone(self.default_time_zone):
            found.append(
                (
                    "default_time_zone",
                    f"{self.default_time_zone!r} is not an IANA time zone (e.g. America/New_York)",
                )
            )
        if self.window is not None and not 0 <= self.window.start < self.window.end <= _DAY:
            found.append(("window_end", "the window must end after it starts (00:00 to 24:00)"))
        return found


NO_SETTINGS = QuietHoursSettings()


@dataclass(frozen=True, slots=True)
class Recipient:
    """Where the recipient is, as far as quiet hours go."""

    zones: tuple[str, ...]
    source: ZoneSource
    # The US state of the number's area code (a key of STATE_RULES), or "".
    state: str = ""


def recipient(
    address: str, requested_zone: str, settings: QuietHoursSettings = NO_SETTINGS
) -> Recipient:
    """The recipient's zones: the request's, else the number's, else the location's default,
    else every US zone for a +1 number, else none (UNKNOWN: not judged). The state is the
    number's area code's, whichever zone is used."""
    return _recipient(address, requested_zone, settings.default_time_zone)


@functools.lru_cache(maxsize=65536)
def _recipient(address: str, requested_zone: str, default_time_zone: str) -> Recipient:
    zones, state = number_facts(address) if address.startswith("+") else ((), "")
    if requested_zone:
        return Recipient((requested_zone,), ZoneSource.REQUEST, state)
    if zones:
        return Recipient(zones, ZoneSource.NUMBER, state)
    if default_time_zone:
        return Recipient((default_time_zone,), ZoneSource.LOCATION, state)
    if address.startswith("+1"):
        return Recipient(US_ZONES, ZoneSource.ASSUMED, state)
    return Recipient((), ZoneSource.UNKNOWN, state)


def judged(
    purpose: Purpose | None,
    channel: Channel,
    direction: Direction,
    settings: QuietHoursSettings | None = None,
) -> bool:
    """Whether quiet hours apply to an outbound ``channel`` send of ``purpose`` (``settings``
    None: the location's are not known yet; INFORMATIONAL then may apply)."""
    # Identity tests and a tuple scan: this runs on every check of a stated purpose.
    if direction is not Direction.OUTBOUND:
        return False
    if purpose is not Purpose.MARKETING and not (
        purpose is Purpose.INFORMATIONAL and (settings is None or settings.informational)
    ):
        return False
    return channel in _PHONE_CHANNELS


_PHONE_CHANNELS = tuple(PHONE_CHANNELS)


# -- the verdict -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QuietVerdict:
    """What quiet hours say of one send: allowed, or deferred to ``not_before`` (None when
    no instant within ``HORIZON_DAYS`` is allowed in every zone) by ``rule``."""

    allowed: bool
    recipient: Recipient
    not_before: dt.datetime | None = None
    rule: QuietRule | None = None
    # The zone the rule deferred the send in, and the rule's window that day there.
    time_zone: str = ""
    window: str = ""
    explanation: str = field(default="", compare=False)


def rules_for(state: str, settings: QuietHoursSettings = NO_SETTINGS) -> tuple[QuietRule, ...]:
    """The rules a recipient of ``state`` is judged by: its state's (if stricter), the
    federal one, then the location's window (each must allow the send)."""
    return _rules(state, settings.window)


@functools.lru_cache(maxsize=4096)
def _rules(state: str, window: Window | None) -> tuple[QuietRule, ...]:
    found = []
    state_rule = STATE_RULES.get(state)
    if state_rule is not None:
        found.append(state_rule)
    found.append(FEDERAL)
    if window is not None:
        found.append(location_rule(window))
    return tuple(found)


@functools.lru_cache(maxsize=16384)
def _day_window(rules: tuple[QuietRule, ...], day: dt.date) -> Window | None:
    """The window every one of ``rules`` allows on ``day`` (None: none)."""
    window: Window | None = Window(0, _DAY)
    for rule in rules:
        assert window is not None
        window = window.narrowed(rule.window_on(day))
        if window is None:
            return None
    return window


@functools.lru_cache(maxsize=1024)
def location_rule(window: Window) -> QuietRule:
    return QuietRule(
        "LOCATION",
        "the location's own window",
        "location setting (narrows the legal windows)",
        "",
        _daily(window),
    )


def quiet_hours(
    send_at: dt.datetime,
    zones: Sequence[str],
    state: str,
    purpose: Purpose | None,
    channel: Channel,
    settings: QuietHoursSettings = NO_SETTINGS,
    source: ZoneSource = ZoneSource.REQUEST,
) -> QuietVerdict:
    """May a ``channel`` send of ``purpose`` reach a recipient in ``zones`` (of US ``state``,
    "" if none) at ``send_at``? Allowed only when every rule allows it in every zone; else
    deferred to the earliest such instant."""
    who = _who(tuple(zones), source, state)
    if not judged(purpose, channel, Direction.OUTBOUND, settings):
        return _allowed(who)
    return judge(send_at, who, purpose, channel, settings)


def judge(
    send_at: dt.datetime,
    who: Recipient,
    purpose: Purpose | None,
    channel: Channel,
    settings: QuietHoursSettings = NO_SETTINGS,
) -> QuietVerdict:
    """``quiet_hours`` of a send quiet hours judge (``judged``), to ``who``."""
    if not who.zones:
        return _allowed(who)
    # Every window starts and ends on a whole minute: the verdict is the same for every
    # instant of send_at's minute (allowed, or deferred to the same later window start), and
    # the checks of one minute share it.
    minute = send_at.replace(second=0, microsecond=0)
    return _judge(who, settings.window, minute, purpose, channel)


@functools.lru_cache(maxsize=16384)
def _judge(
    who: Recipient,
    window: Window | None,
    minute: dt.datetime,
    purpose: Purpose | None,
    channel: Channel,
) -> QuietVerdict:
    """The verdict of a send in ``minute`` (see ``quiet_hours``)."""
    rules = _rules(who.state, window)
    infos = _zone_infos(who.zones)
    at = _earliest(minute, infos, rules)
    if at == minute:
        return _allowed(who)
    rule, zone_name, text = _binding(minute, who.zones, infos, rules)
    why = _explain(minute, at, rule, zone_name, text, purpose, channel)
    return QuietVerdict(False, who, at, rule, zone_name, text, why)


@functools.lru_cache(maxsize=65536)
def _who(zones: tuple[str, ...], source: ZoneSource, state: str) -> Recipient:
    return Recipient(zones, source, state)


@functools.lru_cache(maxsize=65536)
def _allowed(who: Recipient) -> QuietVerdict:
    return QuietVerdict(True, who)


@functools.lru_cache(maxsize=4096)
def _zone_infos(names: tuple[str, ...]) -> tuple[ZoneInfo, ...]:
    return tuple(zone(name) for name in names)


def _earliest(
    send_at: dt.datetime, zones: Sequence[ZoneInfo], rules: tuple[QuietRule, ...]
) -> dt.datetime | None:
    """The earliest instant from ``send_at`` every rule allows in every zone (None: none
    within the horizon)."""
    if len(zones) == 1:  # the common case: the zone's next opening is the answer
        return _next_open(send_at, zones[0], rules)
    at = send_at
    limit = send_at + dt.timedelta(days=HORIZON_DAYS)
    for _ in range(8 * HORIZON_DAYS):
        latest = at
        for info in zones:
            opens = _next_open(at, info, rules)
            if opens is None:
                return None
            latest = max(latest, opens)
        if latest == at:
            return at
        if latest > limit:
            return None
        at = latest
    return None


def _next_open(at: dt.datetime, info: ZoneInfo, rules: tuple[QuietRule, ...]) -> dt.datetime | None:
    """The earliest instant from ``at`` every rule allows in zone ``info``."""
    return _next_open_local(at, at.astimezone(info), info, rules)


def _next_open_local(
    at: dt.datetime, local: dt.datetime, info: ZoneInfo, rules: tuple[QuietRule, ...]
) -> dt.datetime | None:
    """``_next_open`` of ``at``, ``local`` being ``at`` in ``info``."""
    today = local.date()
    window = _day_window(rules, today)
    if window is not None:
        now = local.hour * 3600 + local.minute * 60 + local.second + local.microsecond / 1e6
        if now < window.end:
            return at if now >= window.start else _instant(today, window.start, info)
    return _opening_after(rules, info, today)


@functools.lru_cache(maxsize=16384)
def _opening_after(
    rules: tuple[QuietRule, ...], info: ZoneInfo, day: dt.date
) -> dt.datetime | None:
    """The first window start every rule allows on a day after ``day`` (None: none within
    the horizon)."""
    for offset in range(1, HORIZON_DAYS + 1):
        later = day + dt.timedelta(days=offset)
        window = _day_window(rules, later)
        if window is not None:
            return _instant(later, window.start, info)
    return None


@functools.lru_cache(maxsize=16384)
def _instant(day: dt.date, seconds: int, info: ZoneInfo) -> dt.datetime:
    """The instant of local wall time ``seconds`` after midnight of ``day`` in ``info``. Every
    window starts at 08:00 or later, never in a daylight-saving gap; a time in a repeated
    hour is its first occurrence."""
    wall = dt.datetime.combine(day, dt.time(seconds // 3600, seconds % 3600 // 60), tzinfo=info)
    return wall.astimezone(dt.UTC)


def _binding(
    send_at: dt.datetime,
    names: Sequence[str],
    zones: Sequence[ZoneInfo],
    rules: tuple[QuietRule, ...],
) -> tuple[QuietRule, str, str]:
    """The rule that defers ``send_at`` (of the rules alone, the one that opens latest; a
    state's first, then the federal, then the location's), its zone and that day's window."""
    best: tuple[dt.datetime, int, QuietRule, str, ZoneInfo] | None = None
    for name, info in zip(names, zones, strict=True):
        local = send_at.astimezone(info)
        for rank, rule in enumerate(rules):
            opens = _next_open_local(send_at, local, info, _alone(rule))
            if opens == send_at:
                continue
            key = opens or dt.datetime.max.replace(tzinfo=dt.UTC)
            if best is None or key > best[0] or (key == best[0] and rank < best[1]):
                best = (key, rank, rule, name, info)
    assert best is not None, "deferred, yet every rule allows the send in every zone"
    _, _, rule, name, info = best
    window = rule.day_text(send_at.astimezone(info).date())
    return rule, name, window


@functools.lru_cache(maxsize=1024)
def _alone(rule: QuietRule) -> tuple[QuietRule, ...]:
    return (rule,)


def _explain(
    send_at: dt.datetime,
    not_before: dt.datetime | None,
    rule: QuietRule,
    zone_name: str,
    window: str,
    purpose: Purpose | None,
    channel: Channel,
) -> str:
    """The explanation of a deferral (its parts that repeat across checks cached)."""
    local = send_at.astimezone(zone(zone_name))
    when = f"{_WEEKDAYS[local.weekday()]} {local.hour:02d}:{local.minute:02d}"
    return (
        f"deferred (not allowed now): {_what(purpose, channel)} at {when} {zone_name} local "
        f"is in quiet hours of {_law(rule, window)}; {_later(not_before, zone_name)}"
    )


@functools.lru_cache(maxsize=256)
def _what(purpose: Purpose | None, channel: Channel) -> str:
    return f"{purpose.value if purpose else 'unstated'} {channel.value}"


@functools.lru_cache(maxsize=4096)
def _law(rule: QuietRule, window: str) -> str:
    return f"{rule.jurisdiction} ({rule.citation}): {window} local"


@functools.lru_cache(maxsize=16384)
def _later(not_before: dt.datetime | None, zone_name: str) -> str:
    if not_before is None:
        return f"no time in the next {HORIZON_DAYS} days is allowed in every recipient zone"
    first = not_before.astimezone(zone(zone_name))
    return (
        f"earliest allowed {_iso(not_before)} "
        f"({_WEEKDAYS[first.weekday()]} {first.hour:02d}:{first.minute:02d} {zone_name})"
    )


def _iso(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
