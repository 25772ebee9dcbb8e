"""Quiet hours over real gRPC on real PostgreSQL: CheckSend and BatchCheckSend defer a
marketing call or text outside the recipient's allowed local hours (deferred, not_before, the
rule), allow what quiet hours never judge, keep a DND denial a denial, and take the location's
settings (GetQuietHoursSettings / UpdateQuietHoursSettings).

Planned send times (send_at) are fixed instants of 2099, so the answers do not depend on when
the test runs; the checks of "now" pick a zone where it is midday or night right now."""

from __future__ import annotations

import datetime as dt
import subprocess

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests import factories
from tests.doc_examples import DNDCTL, clean_env
from tests.factories import at
from tests.support import ServerProcess, bad_fields

T = 10.0
SMS = pb.CHANNEL_SMS
MARKETING = pb.PURPOSE_MARKETING
FLORIDA = "+13055551234"  # Miami: America/New_York, Florida's 08:00-20:00
CALIFORNIA = "+14155552671"  # San Francisco: America/Los_Angeles, the federal window
# Wednesday 14 January 2099, 21:30 in Miami (EST, UTC-5).
EVENING = "2099-01-15T02:30:00Z"
NEXT_MORNING = "2099-01-15T13:00:00Z"  # Thursday 08:00 in Miami


def check(
    stub: dnd_pb2_grpc.DndServiceStub, loc: str, contact: str, **fields: object
) -> pb.CheckSendResponse:
    fields.setdefault("purpose", MARKETING)
    return stub.CheckSend(factories.check(loc, contact, **fields), timeout=T)  # type: ignore[arg-type]


def test_a_florida_marketing_text_at_21_30_waits_until_8_00_and_a_receipt_does_not(
    stub: dnd_pb2_grpc.DndServiceStub, loc: str, contact: str
) -> None:
    answer = check(stub, loc, contact, address=FLORIDA, send_at=at(EVENING))
    assert not answer.allowed and answer.deferred
    assert answer.denial == pb.DENIAL_UNSPECIFIED and not answer.denied_by
    assert answer.not_before.ToJsonString() == NEXT_MORNING
    rule = answer.deferred_by
    assert (rule.rule_id, rule.jurisdiction, rule.window, rule.time_zone) == (
        "US-FL",
        "Florida",
        "08:00-20:00",
        "America/New_York",
    )
    assert "501.616" in rule.citation and rule.source_url.startswith("http")
    assert list(answer.quiet_hours.time_zones) == ["America/New_York"]
    assert answer.quiet_hours.time_zone_source == pb.TIME_ZONE_SOURCE_NUMBER
    assert answer.quiet_hours.state == "FL"
    assert answer.explanation.startswith("deferred (not allowed now)")

    receipt = check(
        stub, loc, contact, address=FLORIDA, send_at=at(EVENING), purpose=pb.PURPOSE_TRANSACTIONAL
    )
    assert receipt.allowed and not receipt.deferred and not receipt.HasField("not_before")
    assert not receipt.HasField("quiet_hours")
    # At 08:00 the marketing text may go.
    morning = check(stub, loc, contact, address=FLORIDA, send_at=at(NEXT_MORNING))
    assert morning.allowed and not morning.deferred and morning.HasField("quiet_hours")


@pytest.mark.parametrize(
    ("on", "purpose", "judged"),
    [
        (pb.CHANNEL_CALL, MARKETING, True),
        (pb.CHANNEL_WHATSAPP, MARKETING, True),
        (SMS, pb.PURPOSE_UNSPECIFIED, False),
        (SMS, pb.PURPOSE_INFORMATIONAL, False),
        (SMS, pb.PURPOSE_COMPLIANCE_REPLY, False),
        (pb.CHANNEL_EMAIL, MARKETING, False),
        (pb.CHANNEL_FACEBOOK, MARKETING, False),
    ],
)
def test_what_quiet_hours_judge(
    stub: dnd_pb2_grpc.DndServiceStub,
    loc: str,
    contact: str,
    on: int,
    purpose: int,
    judged: bool,
) -> None:
    address = FLORIDA if on in (SMS, pb.CHANNEL_CALL, pb.CHANNEL_WHATSAPP) else ""
    answer = check(
        stub, loc, contact, channel=on, purpose=purpose, address=address, send_at=at(EVENING)
    )
    assert answer.deferred is judged
    assert answer.allowed is not judged
    assert answer.HasField("quiet_hours") is judged


def test_a_denial_stays_a_denial(stub: dnd_pb2_grpc.DndServiceStub, loc: str, contact: str) -> None:
    stub.SetDnd(factories.enable(loc, contact, SMS), timeout=T)
    answer = check(stub, loc, contact, address=FLORIDA, send_at=at(EVENING))
    assert not answer.allowed and not answer.deferred
    assert answer.denial == pb.DENIAL_DND_BLOCK
    assert not answer.HasField("not_before") and not answer.HasField("deferred_by")


def _zone_at_local_hour(hour: int) -> tuple[str, dt.datetime]:
    """An Etc/GMT zone where it is now ``hour`` o'clock (and the time now)."""
    now = dt.datetime.now(dt.UTC)
    offset = (hour - now.hour + 12) % 24 - 12  # -12..11
    name = "Etc/GMT" if offset == 0 else f"Etc/GMT{-offset:+d}"
    return name, now


def test_without_send_at_the_check_is_for_now(
    stub: dnd_pb2_grpc.DndServiceStub, loc: str, contact: str
) -> None:
    midday, _ = _zone_at_local_hour(13)
    allowed = check(stub, loc, contact, address=CALIFORNIA, time_zone=midday)
    assert allowed.allowed and not allowed.deferred
    assert list(allowed.quiet_hours.time_zones) == [midday]
    assert allowed.quiet_hours.time_zone_source == pb.TIME_ZONE_SOURCE_REQUEST

    night, now = _zone_at_local_hour(3)
    deferred = check(stub, loc, contact, address=CALIFORNIA, time_zone=night)
    assert deferred.deferred and deferred.deferred_by.rule_id == "US-TCPA"
    wait = deferred.not_before.ToDatetime(tzinfo=dt.UTC) - now
    # 08:00 local today: between 4 and 5 hours away (it is 03:xx there).
    assert dt.timedelta(hours=4) <= wait <= dt.timedelta(hours=5, minutes=1)

    # A send_at a minute ago counts as now; an hour ago is refused.
    recent = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)
    stamp = at(recent.isoformat().replace("+00:00", "Z"))
    assert check(stub, loc, contact, address=CALIFORNIA, time_zone=midday, send_at=stamp).allowed
    old = at((dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat().replace("+00:00", "Z"))
    with pytest.raises(grpc.RpcError) as error:
        check(stub, loc, contact, address=CALIFORNIA, send_at=old)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error.value) == ["send_at"]
    for far in ("9999-12-31T23:59:59Z", "2199-01-01T00:00:00Z"):
        with pytest.raises(grpc.RpcError) as error:
            check(stub, loc, contact, address=CALIFORNIA, send_at=at(far))
        assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error.value) == ["send_at"]


def test_an_unknown_time_zone_is_invalid(
    stub: dnd_pb2_grpc.DndServiceStub, loc: str, contact: str
) -> None:
    for name in ("Mars/Olympus_Mons", "../../etc/passwd", "america/new_york "):
        with pytest.raises(grpc.RpcError) as error:
            check(stub, loc, contact, address=FLORIDA, time_zone=name)
        assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert bad_fields(error.value) == ["time_zone"]
    targets = [
        pb.CheckTarget(contact_id=contact),
        pb.CheckTarget(contact_id=contact, time_zone="X"),
    ]
    with pytest.raises(grpc.RpcError) as error:
        stub.BatchCheckSend(factories.batch_check(loc, targets, purpose=MARKETING), timeout=T)
    assert bad_fields(error.value) == ["targets[1].time_zone"]


def test_settings_are_read_and_replaced(stub: dnd_pb2_grpc.DndServiceStub, loc: str) -> None:
    read = pb.GetQuietHoursSettingsRequest(location_id=loc)
    assert stub.GetQuietHoursSettings(read, timeout=T).settings == pb.QuietHoursSettings()
    wanted = pb.QuietHoursSettings(
        informational=True,
        default_time_zone="America/Denver",
        window_start="09:00",
        window_end="17:30",
    )
    update = factories.quiet_hours_settings(
        loc,
        informational=True,
        default_time_zone="America/Denver",
        window_start="09:00",
        window_end="17:30",
    )
    assert stub.UpdateQuietHoursSettings(update, timeout=T).settings == wanted
    assert stub.GetQuietHoursSettings(read, timeout=T).settings == wanted


@pytest.mark.parametrize(
    ("fields", "bad"),
    [
        ({"window_start": "09:00"}, ["settings.window_end"]),
        ({"window_start": "9:00", "window_end": "17:00"}, ["settings.window_start"]),
        ({"window_start": "09:00", "window_end": "25:00"}, ["settings.window_end"]),
        ({"window_start": "17:00", "window_end": "09:00"}, ["settings.window_end"]),
        ({"default_time_zone": "Mars/Olympus_Mons"}, ["settings.default_time_zone"]),
    ],
)
def test_bad_settings_change_nothing(
    stub: dnd_pb2_grpc.DndServiceStub, loc: str, fields: dict[str, str], bad: list[str]
) -> None:
    with pytest.raises(grpc.RpcError) as error:
        stub.UpdateQuietHoursSettings(factories.quiet_hours_settings(loc, **fields), timeout=T)
    assert error.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert bad_fields(error.value) == bad
    read = pb.GetQuietHoursSettingsRequest(location_id=loc)
    assert stub.GetQuietHoursSettings(read, timeout=T).settings == pb.QuietHoursSettings()


def test_the_location_narrows_the_window_and_judges_informational_sends(
    stub: dnd_pb2_grpc.DndServiceStub, loc: str, contact: str
) -> None:
    informational = pb.PURPOSE_INFORMATIONAL
    assert check(
        stub, loc, contact, address=FLORIDA, send_at=at(EVENING), purpose=informational
    ).allowed
    stub.UpdateQuietHoursSettings(
        factories.quiet_hours_settings(
            loc, informational=True, window_start="10:00", window_end="16:00"
        ),
        timeout=T,
    )
    reminder = check(
        stub, loc, contact, address=FLORIDA, send_at=at(EVENING), purpose=informational
    )
    assert reminder.deferred and reminder.not_before.ToJsonString() == "2099-01-15T15:00:00Z"
    assert reminder.deferred_by.rule_id == "LOCATION"
    # 09:00 in Miami: Florida allows it, the location's window does not yet.
    nine = check(stub, loc, contact, address=FLORIDA, send_at=at("2099-01-15T14:00:00Z"))
    assert nine.deferred and nine.deferred_by.rule_id == "LOCATION"
    # A window wider than the law never widens it.
    stub.UpdateQuietHoursSettings(
        factories.quiet_hours_settings(loc, window_start="06:00", window_end="23:00"), timeout=T
    )
    late = check(stub, loc, contact, address=FLORIDA, send_at=at(EVENING))
    assert late.deferred and late.deferred_by.rule_id == "US-FL"


def test_the_zone_of_a_recipient_without_one(
    stub: dnd_pb2_grpc.DndServiceStub, loc: str, contact: str
) -> None:
    # A toll-free number tells no zone: every main US zone (the most restrictive).
    early = at("2099-01-14T17:00:00Z")  # 07:00 in Honolulu, 12:00 in New York
    assumed = check(stub, loc, contact, address="+18005550100", send_at=early)
    assert assumed.quiet_hours.time_zone_source == pb.TIME_ZONE_SOURCE_ASSUMED
    assert "Pacific/Honolulu" in assumed.quiet_hours.time_zones
    assert assumed.deferred and assumed.deferred_by.time_zone == "Pacific/Honolulu"
    # No address at all: nothing tells where the recipient is; not judged.
    unknown = check(stub, loc, contact, send_at=at(EVENING))
    assert unknown.allowed and not unknown.deferred
    assert unknown.quiet_hours.time_zone_source == pb.TIME_ZONE_SOURCE_UNKNOWN
    assert not unknown.quiet_hours.time_zones
    # The location's default zone judges both.
    stub.UpdateQuietHoursSettings(
        factories.quiet_hours_settings(loc, default_time_zone="America/Denver"), timeout=T
    )
    located = check(stub, loc, contact, address="+18005550100", send_at=early)
    assert located.allowed
    assert list(located.quiet_hours.time_zones) == ["America/Denver"]
    assert located.quiet_hours.time_zone_source == pb.TIME_ZONE_SOURCE_LOCATION
    # 21:30 in Miami is 19:30 in Denver: the federal window still allows it there.
    assert check(stub, loc, contact, send_at=at(EVENING)).allowed
    late = check(stub, loc, contact, send_at=at("2099-01-15T04:30:00Z"))  # 21:30 in Denver
    assert late.deferred and late.quiet_hours.time_zone_source == pb.TIME_ZONE_SOURCE_LOCATION


def test_a_batch_answers_per_target(
    stub: dnd_pb2_grpc.DndServiceStub, loc: str, contact: str
) -> None:
    blocked = f"{contact}-blocked"
    stub.SetDnd(factories.enable(loc, blocked, SMS), timeout=T)
    targets = [
        pb.CheckTarget(contact_id=contact, address=FLORIDA),  # 21:30 Miami: deferred
        pb.CheckTarget(contact_id=contact, address=CALIFORNIA),  # 18:30 San Francisco
        # Its own zone: 16:30 in Honolulu.
        pb.CheckTarget(contact_id=contact, address=FLORIDA, time_zone="Pacific/Honolulu"),
        pb.CheckTarget(contact_id=blocked, address=FLORIDA),  # denied by DND
        pb.CheckTarget(contact_id=contact, address=FLORIDA),  # a repeat of the first
    ]
    answer = stub.BatchCheckSend(
        factories.batch_check(loc, targets, purpose=MARKETING, send_at=at(EVENING)), timeout=T
    )
    first, west, hawaii, denied, repeat = answer.results
    assert first.deferred and not first.allowed
    assert first.not_before.ToJsonString() == NEXT_MORNING
    assert first.deferred_by.rule_id == "US-FL" and first.denial == pb.DENIAL_UNSPECIFIED
    assert west.allowed and not west.deferred
    # The zone is the request's, the state still the number's: Florida's 20:00 in Honolulu.
    assert hawaii.allowed
    assert denied.denial == pb.DENIAL_DND_BLOCK and not denied.deferred
    assert repeat.repeat_of == 0 and repeat.deferred
    assert repeat.not_before.ToJsonString() == NEXT_MORNING
    # A batch-wide zone for targets without their own.
    east = stub.BatchCheckSend(
        factories.batch_check(
            loc,
            [pb.CheckTarget(contact_id=contact, address=CALIFORNIA)],
            purpose=MARKETING,
            send_at=at(EVENING),
            time_zone="America/New_York",
        ),
        timeout=T,
    )
    assert east.results[0].deferred and east.results[0].deferred_by.rule_id == "US-TCPA"


def test_dndctl_check_tells_when_a_deferred_text_may_go(server: ServerProcess, loc: str) -> None:
    argv = [DNDCTL, "--addr", server.addr, "check", loc, "contact-1", "--channel", "SMS"]
    argv += ["--address", FLORIDA, "--purpose", "MARKETING"]
    deferred = subprocess.run(
        [*argv, "--send-at", "2099-01-14T21:30:00-05:00"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert deferred.returncode == 1, deferred.stderr
    assert deferred.stdout.startswith("deferred (not allowed now)")
    assert f"earliest allowed {NEXT_MORNING}" in deferred.stdout
    morning = subprocess.run(
        [*argv, "--send-at", NEXT_MORNING, "--time-zone", "America/New_York"],
        capture_output=True,
        text=True,
        timeout=60,
        env=clean_env(),
    )
    assert morning.returncode == 0, morning.stdout + morning.stderr
