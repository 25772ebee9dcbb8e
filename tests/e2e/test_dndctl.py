"""``dndctl`` run as a real process against a real server: every command (status, set, clear,
check with its exit code 1 and one-line explanation, history, watch --limit, import, consent
record / revoke / show, policy get / set, check --purpose), ``--json`` / ``--output`` output,
``DND_ADDR`` instead of ``--addr``, errors (each exit code: 2 usage, 3 the service refused,
4 unreachable; field violations and refusals printed), version, doctor, completion, and the
import of every list format from files made here: bad lines reported with their line numbers
while the rest is applied, and re-running a file changes nothing."""

from __future__ import annotations

import datetime as dt
import json
import os
import pty
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd_client import (
    Channel,
    ConsentMethod,
    ConsentPurpose,
    ConsentStatus,
    Direction,
    DndAction,
    DndClient,
    EmailEvent,
    Purpose,
    Reason,
    Source,
)

from tests.support import Database, ServerProcess, new_id

DNDCTL = str(Path(sys.executable).with_name("dndctl"))
WHEN = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"
DENIED_SMS = (
    r"denied: outbound SMS is blocked by MANUAL on SMS \(set by USER since "
    r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\); cleared only by USER, WORKFLOW, CONTACT, SUPPORT"
)


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DND_")}
    return {**env, **extra}


def dndctl(
    *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DNDCTL, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or clean_env(),
        cwd=cwd,
    )


@pytest.fixture
def ctl(server: ServerProcess) -> Callable[..., subprocess.CompletedProcess[str]]:
    """dndctl with ``--addr`` of the session server; global flags (``--json``) go first."""

    def run(*args: str, **kwargs: Any) -> subprocess.CompletedProcess[str]:
        return dndctl("--addr", server.addr, *args, **kwargs)

    return run


@pytest.fixture
def client(server: ServerProcess) -> Iterator[DndClient]:
    with DndClient(server.addr) as dnd:
        yield dnd


def test_dndctl_is_installed() -> None:
    assert os.access(DNDCTL, os.X_OK), DNDCTL
    result = dndctl("--help")
    assert result.returncode == 0
    commands = (
        "status",
        "set",
        "clear",
        "check",
        "history",
        "watch",
        "import",
        "consent",
        "policy",
    )
    for command in commands:
        assert command in result.stdout


def test_set_check_status_history_clear(ctl: Any, client: DndClient, loc: str) -> None:
    set_ = ctl("set", loc, "c", "--channel", "SMS", "--actor", "user-7", "--note", "asked by phone")
    assert set_.returncode == 0, set_.stderr
    lines = set_.stdout.splitlines()
    cursor = re.fullmatch(r"changed; cursor (\S+)", lines[0])
    assert cursor, lines
    assert lines[1] == f"{loc}/c  version 1  outbound PARTIAL  inbound OFF"
    assert lines[2].split() == ["SCOPE", "REASON", "SOURCE", "ACTOR", "SINCE", "DETAIL"]
    assert re.fullmatch(rf"SMS\s+MANUAL\s+USER\s+user-7\s+{WHEN}\s+-", lines[3]), lines[3]
    [entry] = client.list_history(loc, "c").entries
    assert (entry.cursor, entry.note, entry.actor_id) == (cursor[1], "asked by phone", "user-7")

    again = ctl("set", loc, "c", "--channel", "SMS")
    assert again.returncode == 0
    assert again.stdout.splitlines()[0].startswith("unchanged (nothing to do); cursor ")

    denied = ctl("check", loc, "c", "--channel", "SMS")
    assert denied.returncode == 1, "a denied send exits 1"
    assert len(denied.stdout.splitlines()) == 1, denied.stdout
    assert re.fullmatch(DENIED_SMS, denied.stdout.strip()), denied.stdout
    assert denied.stderr == ""
    automated = ctl("check", loc, "c", "--channel", "sms", "--automated")
    assert automated.returncode == 1
    allowed = ctl("check", loc, "c", "--channel", "EMAIL")
    assert allowed.returncode == 0
    assert allowed.stdout == "allowed: no active DND covers outbound EMAIL\n"
    inbound = ctl("check", loc, "c", "--channel", "CALL", "--inbound")
    assert (inbound.returncode, inbound.stdout) == (
        0,
        "allowed: no active DND covers inbound CALL\n",
    )

    status = ctl("status", loc, "c")
    assert status.returncode == 0
    assert status.stdout.splitlines()[0] == f"{loc}/c  version 1  outbound PARTIAL  inbound OFF"
    assert re.fullmatch(
        rf"SMS\s+MANUAL\s+USER\s+user-7\s+{WHEN}\s+-", status.stdout.splitlines()[2]
    )

    history = ctl("history", loc, "c")
    assert history.returncode == 0
    head, row = history.stdout.splitlines()
    assert head.split() == [
        "VERSION",
        "TIME",
        "CHANGE",
        "SCOPE",
        "REASON",
        "SOURCE",
        "ACTOR",
        "NOTE",
    ]
    assert re.fullmatch(
        rf"1\s+{WHEN}\s+enabled\s+SMS\s+MANUAL\s+USER\s+user-7\s+asked by phone", row
    )

    clear = ctl("clear", loc, "c", "--channel", "SMS", "--source", "USER")
    assert clear.returncode == 0, clear.stderr
    cleared = clear.stdout.splitlines()
    assert re.fullmatch(r"changed; cursor \S+", cleared[0])
    assert cleared[1:] == [f"{loc}/c  version 2  outbound OFF  inbound OFF", "no DND"]
    assert ctl("check", loc, "c", "--channel", "SMS").returncode == 0

    rows = ctl("history", loc, "c").stdout.splitlines()[1:]
    assert [r.split()[0] for r in rows] == ["2", "1"], "newest first"
    assert rows[0].split()[3:6] == ["cleared", "SMS", "MANUAL"]
    assert ctl("history", loc, "c", "--limit", "1").stdout.count("\n") == 2
    assert ctl("history", loc, "nobody").stdout == "no changes\n"
    assert ctl("status", loc, "nobody").stdout.splitlines()[1] == "no DND"


def test_set_and_clear_options(ctl: Any, client: DndClient, db: Database, loc: str) -> None:
    everything = ctl(
        "set", loc, "c", "--all", "--source", "WORKFLOW", "--actor", "wf-1", "--evidence", "e-1"
    )
    assert everything.returncode == 0, everything.stderr
    inbound = ctl("set", loc, "c", "--inbound", "--source", "support")
    assert inbound.returncode == 0, inbound.stderr
    stop = ctl(
        "set",
        loc,
        "c",
        "--channel",
        "SMS",
        "--reason",
        "SMS_OPT_OUT_KEYWORD",
        "--source",
        "CONTACT",
        "--address",
        "+1 415 555 0155",
    )
    assert stop.returncode == 0, stop.stderr
    status = client.get_status(loc, "c", phone_numbers=["+14155550155"])
    assert status.outbound == pb.DND_STATUS_ON and status.inbound == pb.DND_STATUS_ON
    by_reason = {(b.direction, b.reason): b for b in status.blocks}
    every = by_reason[(Direction.OUTBOUND, Reason.MANUAL)]
    assert every.scope.all_channels and every.source == Source.WORKFLOW
    assert (every.actor_id, every.evidence) == ("wf-1", "e-1")
    assert by_reason[(Direction.INBOUND, Reason.MANUAL)].source == Source.SUPPORT
    assert [s.address for s in status.address_suppressions] == ["+14155550155"]
    shown = ctl("status", loc, "c", "--phone", "+14155550155").stdout
    assert re.search(r"^SMS \+14155550155\s+SMS_OPT_OUT_KEYWORD\s+CONTACT\s+c\s", shown, re.M)

    stale = ctl("set", loc, "c", "--channel", "EMAIL", "--expected-version", "1")
    assert stale.returncode == 3 and stale.stdout == ""
    assert stale.stderr.startswith("dndctl: ABORTED: ")
    current = ctl("set", loc, "c", "--channel", "EMAIL", "--expected-version", str(status.version))
    assert current.returncode == 0, current.stderr

    changes = db.changes(loc)
    keyed = [ctl("set", loc, "c", "--channel", "CALL", "--idempotency-key", "op-1") for _ in "ab"]
    assert [k.returncode for k in keyed] == [0, 0]
    assert keyed[0].stdout.splitlines()[0] == keyed[1].stdout.splitlines()[0], "replayed"
    assert keyed[1].stdout.startswith("changed; cursor ")
    assert db.changes(loc) == changes + 1

    off = ctl("clear", loc, "c", "--inbound", "--note", "asked again")
    assert off.returncode == 0 and "inbound OFF" in off.stdout
    lifted = ctl(
        *("clear", loc, "c", "--channel", "SMS", "--reason", "SMS_OPT_OUT_KEYWORD"),
        *("--source", "SUPPORT", "--evidence", "signed opt-in form"),
        *("--address", "+14155550155"),
    )
    assert lifted.returncode == 0, lifted.stderr
    after = client.get_status(loc, "c", phone_numbers=["+14155550155"])
    assert Reason.SMS_OPT_OUT_KEYWORD not in {b.reason for b in after.blocks}
    assert not after.address_suppressions and after.inbound == pb.DND_STATUS_OFF

    # A hard bounce is cleared only with --suppression-removed.
    client.report_email_event(
        loc, "b", provider="mailgun", event=EmailEvent.BOUNCE, to_address="b@example.com"
    )
    shown = ctl("status", loc, "b", "--email", "b@example.com").stdout
    assert re.search(r"^EMAIL b@example\.com\s+EMAIL_HARD_BOUNCE\s+SYSTEM\s+b\s", shown, re.M)
    refused = ctl("clear", loc, "b", "--channel", "EMAIL")
    assert refused.returncode == 3
    assert "EMAIL_HARD_BOUNCE" in refused.stderr
    confirmed = ctl("clear", loc, "b", "--channel", "EMAIL", "--suppression-removed")
    assert confirmed.returncode == 0, confirmed.stderr
    assert not client.get_status(loc, "b").blocks


def test_json_output_parses(ctl: Any, loc: str) -> None:
    set_ = ctl("--json", "set", loc, "c", "--channel", "SMS", "--note", "n")
    assert set_.returncode == 0
    answer = json.loads(set_.stdout)
    assert answer["changed"] is True and answer["cursor"]
    assert answer["status"]["version"] == "1"
    assert answer["status"]["blocked_channels"] == ["CHANNEL_SMS"]
    assert answer["affected_blocks"][0]["note"] == "n"

    check = ctl("--json", "check", loc, "c", "--channel", "SMS")
    assert check.returncode == 1
    decision = json.loads(check.stdout)
    assert not decision.get("allowed", False)
    assert decision["denied_by"][0]["reason"] == "REASON_MANUAL"
    assert re.fullmatch(DENIED_SMS, decision["explanation"])
    allowed = json.loads(ctl("--json", "check", loc, "c", "--channel", "EMAIL").stdout)
    assert allowed["allowed"] is True

    status = json.loads(ctl("--json", "status", loc, "c").stdout)
    assert (status["location_id"], status["contact_id"], status["version"]) == (loc, "c", "1")
    assert status["outbound"] == "DND_STATUS_PARTIAL"
    assert status["blocks"][0]["scope"] == {"channel": "CHANNEL_SMS"}

    history = json.loads(ctl("--json", "history", loc, "c").stdout)
    assert [e["cursor"] for e in history["entries"]] == [answer["cursor"]]

    clear = json.loads(ctl("--json", "clear", loc, "c", "--channel", "SMS").stdout)
    assert clear["changed"] is True and clear["status"]["version"] == "2"
    assert clear["affected_blocks"][0]["reason"] == "REASON_MANUAL"


def test_dnd_addr_environment_variable(server: ServerProcess, loc: str) -> None:
    env = clean_env(DND_ADDR=server.addr)
    set_ = dndctl("set", loc, "c", "--channel", "SMS", env=env)
    assert set_.returncode == 0, set_.stderr
    status = dndctl("--json", "status", loc, "c", env=env)
    assert json.loads(status.stdout)["version"] == "1"

    nowhere = clean_env(DND_ADDR="127.0.0.1:1", DND_TIMEOUT="3")
    down = dndctl("status", loc, "c", env=nowhere)
    assert down.returncode == 4 and down.stderr.startswith("dndctl: UNAVAILABLE")
    flagged = dndctl("--addr", "127.0.0.1:1", "--timeout", "2", "status", loc, "c")
    assert flagged.returncode == 4 and flagged.stderr.startswith("dndctl: UNAVAILABLE")
    # --addr wins over the environment.
    assert dndctl("--addr", server.addr, "status", loc, "c", env=nowhere).returncode == 0


def test_errors_exit_3_with_details_usage_errors_2(
    ctl: Any, client: DndClient, db: Database, loc: str
) -> None:
    bad = ctl("set", "", "x" * 200, "--channel", "SMS")
    assert bad.returncode == 3 and bad.stdout == ""
    lines = bad.stderr.splitlines()
    assert lines[0].startswith("dndctl: INVALID_ARGUMENT: ")
    assert lines[1:] == [
        "  location_id: required: 1 to 128 characters",
        "  contact_id: 200 characters; at most 128 allowed",
    ]

    wrong = ctl("set", loc, "c", "--channel", "EMAIL", "--reason", "SMS_OPT_OUT_KEYWORD")
    assert wrong.returncode == 3
    assert (
        "  reason: SMS_OPT_OUT_KEYWORD exists only on the SMS channel" in wrong.stderr.splitlines()
    )

    page = ctl("history", loc, "c", "--limit", "1000")
    assert page.returncode == 3
    assert any(line.startswith("  page_size: ") for line in page.stderr.splitlines())

    client.process_inbound_message(loc, "c", "STOP")
    refused = ctl("clear", loc, "c", "--channel", "SMS")
    assert refused.returncode == 3 and refused.stdout == ""
    refusal = refused.stderr.splitlines()
    assert refusal[0].startswith("dndctl: FAILED_PRECONDITION: ")
    assert refusal[1].startswith(
        "  OUTBOUND/SMS SMS_OPT_OUT_KEYWORD: source USER may never clear SMS_OPT_OUT_KEYWORD"
    )
    assert db.changes(loc) == 1

    unknown = ctl("set", loc, "c", "--channel", "PIGEON")
    assert unknown.returncode == 2
    assert "one of CALL, EMAIL, SMS, WHATSAPP, FACEBOOK, GMB" in unknown.stderr
    both = ctl("set", loc, "c", "--channel", "SMS", "--all")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    assert db.changes(loc) == 1


@contextmanager
def background(*argv: str) -> Iterator[subprocess.Popen[str]]:
    """A process with piped output, killed on the way out if it still runs."""
    with subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=clean_env()
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()


def test_watch_with_limit(ctl: Any, client: DndClient, server: ServerProcess, loc: str) -> None:
    marker = client.set_dnd(
        new_id("loc"), "m", action=DndAction.ENABLE, source=Source.USER, channel=Channel.SMS
    ).cursor
    written = [
        client.set_dnd(
            loc, f"c{i}", action=DndAction.ENABLE, source=Source.USER, channel=channel
        ).cursor
        for i, channel in enumerate((Channel.SMS, Channel.EMAIL, Channel.CALL))
    ]
    two = ctl("watch", "--location", loc, "--after", marker, "--limit", "2")
    assert two.returncode == 0, two.stderr
    lines = two.stdout.splitlines()
    assert len(lines) == 2
    assert re.fullmatch(
        rf"{WHEN}  {loc}/c0  v1  enabled SMS MANUAL by USER  cursor={written[0]}", lines[0]
    ), lines[0]
    assert lines[1].endswith(f"  {loc}/c1  v1  enabled EMAIL MANUAL by USER  cursor={written[1]}")

    as_json = ctl("--json", "watch", "--location", loc, "--after", marker, "--limit", "3")
    assert as_json.returncode == 0
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert [e["cursor"] for e in events] == written
    assert events[2]["scope"] == {"channel": "CHANNEL_CALL"} and events[2]["version"] == "1"

    email = ctl("watch", "--location", loc, "--channel", "EMAIL", "--after", marker, "--limit", "1")
    assert email.stdout.strip().endswith(f"cursor={written[1]}")

    # From now: the next change, not the earlier ones.
    live_loc = new_id("loc")
    earlier = client.set_dnd(
        live_loc, "early", action=DndAction.ENABLE, source=Source.USER, channel=Channel.SMS
    ).cursor
    with background(
        DNDCTL, "--addr", server.addr, "watch", "--location", live_loc, "--limit", "1"
    ) as watcher:
        live = []
        deadline = time.monotonic() + 30
        while watcher.poll() is None and time.monotonic() < deadline:
            answer = client.set_dnd(
                live_loc,
                f"c{len(live)}",
                action=DndAction.ENABLE,
                source=Source.USER,
                channel=Channel.SMS,
            )
            live.append(answer.cursor)
            time.sleep(0.3)
        out, err = watcher.communicate(timeout=30)
    assert watcher.returncode == 0, err
    [line] = out.splitlines()
    printed = line.rsplit("cursor=", 1)[1]
    assert printed in live and printed != earlier


def test_watch_stops_quietly_on_ctrl_c(server: ServerProcess, client: DndClient) -> None:
    loc = new_id("loc")
    with background(DNDCTL, "--addr", server.addr, "watch", "--location", loc) as watcher:
        assert watcher.stdout is not None
        lines: queue.Queue[str] = queue.Queue()
        reader = threading.Thread(
            target=lambda: lines.put(watcher.stdout.readline() if watcher.stdout else ""),
            daemon=True,
        )
        reader.start()
        # Write until a change is printed: then the stream is surely open.
        first = ""
        for n in range(100):
            client.set_dnd(
                loc, f"c{n}", action=DndAction.ENABLE, source=Source.USER, channel=Channel.SMS
            )
            with suppress(queue.Empty):
                first = lines.get(timeout=0.3)
                break
        reader.join(5)
        watcher.send_signal(signal.SIGINT)
        out, err = watcher.communicate(timeout=30)
    assert f"{loc}/c" in first and "v1  enabled SMS" in first, first
    assert watcher.returncode == 130
    assert err == "" and "Traceback" not in out


# --- import ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    fmt: str
    text: str  # {loc} and {other} are replaced
    rows: int
    check: Callable[[DndClient, str, str], None]
    with_location: bool = True


def opted_out_phones(*phones: str) -> Callable[[DndClient, str, str], None]:
    def check(dnd: DndClient, loc: str, _other: str) -> None:
        for phone in phones:
            status = dnd.get_status(loc, phone, phone_numbers=[phone])
            [block] = status.blocks
            assert (block.scope.channel, block.reason, block.source) == (
                Channel.SMS,
                Reason.SMS_OPT_OUT_KEYWORD,
                Source.CONTACT,
            )
            assert block.provider_detail == "import:twilio" and block.actor_id == "dndctl-import"
            assert [s.address for s in status.address_suppressions] == [phone]
            # The number is suppressed for every contact of the location.
            assert not dnd.check_send(loc, "someone", Channel.SMS, address=phone).allowed

    return check


def email_blocked(reason: Reason, *addresses: str) -> Callable[[DndClient, str, str], None]:
    def check(dnd: DndClient, loc: str, _other: str) -> None:
        for address in addresses:
            lower = address.lower()
            status = dnd.get_status(loc, address, email_addresses=[lower])
            [block] = status.blocks
            assert (block.scope.channel, block.reason) == (Channel.EMAIL, reason), address
            assert block.actor_id == "mailgun"
            assert [s.address for s in status.address_suppressions] == [lower]
            assert not dnd.check_send(loc, "someone", Channel.EMAIL, address=lower).allowed

    return check


def bounces_check(dnd: DndClient, loc: str, other: str) -> None:
    email_blocked(Reason.EMAIL_HARD_BOUNCE, "Bounce1@Example.com", "bounce2@example.com")(
        dnd, loc, other
    )
    block = dnd.get_status(loc, "Bounce1@Example.com").blocks[0]
    assert "550 5.1.1 mailbox does not exist" in block.provider_detail


def csv_check(dnd: DndClient, loc: str, other: str) -> None:
    def blocks(location: str, contact: str) -> list[tuple[Any, ...]]:
        return [
            (b.scope.channel, b.reason, b.source, b.address)
            for b in dnd.get_status(location, contact).blocks
        ]

    assert blocks(loc, "k1") == [(Channel.SMS, Reason.MANUAL, Source.USER, "")]
    assert blocks(loc, "k2") == [
        (Channel.EMAIL, Reason.EMAIL_UNSUBSCRIBE_LINK, Source.CONTACT, "k2@example.com")
    ]
    assert blocks(loc, "k3") == [(Channel.WHATSAPP, Reason.MANUAL, Source.USER, "")]
    assert blocks(other, "k4") == [(Channel.CALL, Reason.MANUAL, Source.WORKFLOW, "")]
    assert dnd.list_history(loc, "k1").entries[0].note == "imported from CSV"
    assert dnd.list_history(loc, "k3").entries[0].note == "vip list"


CASES = {
    "twilio-with-header": Case(
        "twilio",
        "Phone Number,Opt Out Date\n+14155550161,2026-01-02\n+14155550162,2026-01-03\n",
        2,
        opted_out_phones("+14155550161", "+14155550162"),
    ),
    "twilio-without-header": Case(
        "twilio",
        "+14155550171\n+14155550172\n\n+14155550173\n",
        3,
        opted_out_phones("+14155550171", "+14155550172", "+14155550173"),
    ),
    "mailgun-bounces": Case(
        "mailgun-bounces",
        "address,code,error,created_at\n"
        "Bounce1@Example.com,550,5.1.1 mailbox does not exist,Mon 05 Jan 2026 10:00:00 UTC\n"
        "bounce2@example.com,554,relay access denied,Mon 05 Jan 2026 11:00:00 UTC\n",
        2,
        bounces_check,
    ),
    "mailgun-unsubscribes": Case(
        "mailgun-unsubscribes",
        "address,tags,created_at\nunsub1@example.com,*,Mon 05 Jan 2026 10:00:00 UTC\n"
        "unsub2@example.com,newsletter,Mon 05 Jan 2026 10:00:00 UTC\n",
        2,
        email_blocked(Reason.EMAIL_UNSUBSCRIBE_LINK, "unsub1@example.com", "unsub2@example.com"),
    ),
    "mailgun-complaints": Case(
        "mailgun-complaints",
        "address,created_at\ncomplainer@example.com,Mon 05 Jan 2026 10:00:00 UTC\n",
        1,
        email_blocked(Reason.EMAIL_SPAM_COMPLAINT, "complainer@example.com"),
    ),
    "csv": Case(
        "csv",
        "location_id,contact_id,channel,reason,source,address,note\n"
        "{loc},k1,SMS,MANUAL,,,\n"
        "{loc},k2,email,EMAIL_UNSUBSCRIBE_LINK,CONTACT,K2@Example.com,\n"
        "{loc},k3,CHANNEL_WHATSAPP,,,,vip list\n"
        "{other},k4,CALL,REASON_MANUAL,workflow,,\n",
        4,
        csv_check,
        with_location=False,
    ),
}


@pytest.mark.parametrize("case", CASES.values(), ids=list(CASES))
def test_import_each_format_then_rerun_changes_nothing(
    case: Case, ctl: Any, client: DndClient, db: Database, tmp_path: Path
) -> None:
    loc, other = new_id("loc"), new_id("loc")
    path = tmp_path / f"{case.fmt}.csv"
    path.write_text(case.text.format(loc=loc, other=other), encoding="utf-8")
    args = ["import", case.fmt, str(path), "--concurrency", "3"]
    if case.with_location:
        args += ["--location", loc]

    first = ctl(*args)
    assert first.returncode == 0, (first.stdout, first.stderr)
    assert first.stdout == f"applied {case.rows}, unchanged 0, rejected 0\n"
    assert first.stderr == "", "no progress bar off a terminal"
    case.check(client, loc, other)
    changes = (db.changes(loc), db.changes(other))
    assert changes[0] >= 1

    again = ctl(*args)
    assert again.returncode == 0
    assert again.stdout == f"applied 0, unchanged {case.rows}, rejected 0\n"
    assert (db.changes(loc), db.changes(other)) == changes
    case.check(client, loc, other)


def test_import_reports_bad_lines_and_applies_the_rest(
    ctl: Any, client: DndClient, db: Database, loc: str, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.csv"
    path.write_text(
        "\n".join(
            [
                "location_id,contact_id,channel,reason",  # 1
                f"{loc},ok1,SMS,MANUAL",  # 2
                f"{loc},bad1,PIGEON,MANUAL",  # 3: unknown channel
                f"{loc},,SMS,MANUAL",  # 4: no contact
                "",  # 5: blank, skipped
                f"{loc},ok2,EMAIL,",  # 6
                f"{loc},bad2,EMAIL,SMS_OPT_OUT_KEYWORD",  # 7: refused by the server
                f"{loc},bad3,SMS,SOMETIMES",  # 8: unknown reason
                f"{loc},{'x' * 200},CALL,MANUAL",  # 9: contact id too long
                f"{loc},ok3,CALL,MANUAL",  # 10
            ]
        )
        + "\n",
        encoding="utf-8",
    )
    result = ctl("import", "csv", str(path))
    assert result.returncode == 1, "rejected lines exit 1"
    lines = result.stdout.splitlines()
    assert lines[0] == "applied 3, unchanged 0, rejected 5"
    assert [re.match(r"  line (\d+): ", line)[1] for line in lines[1:]] == [  # type: ignore[index]
        "3",
        "4",
        "7",
        "8",
        "9",
    ]
    assert "unknown channel 'PIGEON'" in lines[1]
    assert "no contact id" in lines[2]
    assert "INVALID_ARGUMENT" in lines[3] and "reason" in lines[3]
    assert "unknown reason 'SOMETIMES'" in lines[4]
    assert "contact_id" in lines[5]
    for contact, channel in (("ok1", Channel.SMS), ("ok2", Channel.EMAIL), ("ok3", Channel.CALL)):
        assert list(client.get_status(loc, contact).blocked_channels) == [channel]
    assert db.changes(loc) == 3

    again = ctl("--json", "import", "csv", str(path))
    assert again.returncode == 1
    summary = json.loads(again.stdout)
    assert (summary["applied"], summary["unchanged"]) == (0, 3)
    assert [r["line"] for r in summary["rejected"]] == [3, 4, 7, 8, 9]
    assert db.changes(loc) == 3


def test_import_of_provider_lists_reports_bad_lines(
    ctl: Any, client: DndClient, loc: str, tmp_path: Path
) -> None:
    path = tmp_path / "bounces.csv"
    path.write_text(
        "address,code,error\ngood@example.com,550,gone\nnot-an-email,550,x\n,550,empty\n",
        encoding="utf-8",
    )
    result = ctl("import", "mailgun-bounces", str(path), "--location", loc)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "applied 1, unchanged 0, rejected 2"
    assert lines[1].startswith("  line 3: INVALID_ARGUMENT") and "not an email" in lines[1]
    assert lines[2].startswith("  line 4: no email address column")
    assert client.get_status(loc, "good@example.com").version >= 1


def test_a_row_with_an_extra_field_does_not_stop_the_rest(
    ctl: Any, client: DndClient, loc: str, tmp_path: Path
) -> None:
    path = tmp_path / "bounces.csv"
    path.write_text(
        "address,code,error\n"
        "first@example.com,550,gone\n"
        "second@example.com,550,No such user, sorry\n"
        "third@example.com,550,gone\n",
        encoding="utf-8",
    )
    result = ctl("import", "mailgun-bounces", str(path), "--location", loc)
    assert "Traceback" not in result.stderr, result.stderr[-2000:]
    summary = re.fullmatch(
        r"applied (\d+), unchanged 0, rejected (\d+)", result.stdout.split("\n")[0]
    )
    assert summary, result.stdout
    applied, rejected = int(summary[1]), int(summary[2])
    assert applied + rejected == 3 and applied >= 2
    assert all(line.startswith("  line 3: ") for line in result.stdout.splitlines()[1:])
    for address in ("first@example.com", "third@example.com"):
        assert client.get_status(loc, address).version >= 1


def test_headerless_twilio_list_reports_the_right_line_numbers(
    ctl: Any, loc: str, tmp_path: Path
) -> None:
    path = tmp_path / "optouts.csv"
    path.write_text("+14155550191\n+1415\n+14155550192\n", encoding="utf-8")
    result = ctl("import", "twilio", str(path), "--location", loc)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert lines[0] == "applied 2, unchanged 0, rejected 1"
    assert lines[1].startswith("  line 2: "), lines[1]


def test_import_needs_a_location_for_provider_lists(ctl: Any, tmp_path: Path) -> None:
    path = tmp_path / "optouts.csv"
    path.write_text("+14155550199\n", encoding="utf-8")
    result = ctl("import", "twilio", str(path))
    assert result.returncode == 2
    assert "import twilio needs --location" in result.stderr


def on_a_terminal(*args: str) -> tuple[subprocess.CompletedProcess[str], str]:
    """dndctl run with its stderr on a pseudo-terminal: the result and what it drew there."""
    controller, terminal = pty.openpty()
    try:
        result = subprocess.run(
            [DNDCTL, *args],
            stdout=subprocess.PIPE,
            stderr=terminal,
            text=True,
            timeout=60,
            env=clean_env(),
        )
        os.close(terminal)
        terminal = -1
        drawn = b""
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # EIO: the terminal's other side is closed and all was read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        if terminal != -1:
            os.close(terminal)
        os.close(controller)
    return result, drawn.decode()


def test_import_progress_bar_on_a_terminal(server: ServerProcess, loc: str, tmp_path: Path) -> None:
    path = tmp_path / "optouts.csv"
    rows = "".join(f"+1415555{n:04d},2026-01-02\n" for n in range(200, 230))
    path.write_text("Phone Number,Date\n" + rows, encoding="utf-8")
    result, bar = on_a_terminal(
        "--addr", server.addr, "import", "twilio", str(path), "--location", loc
    )
    assert result.returncode == 0
    assert result.stdout == "applied 30, unchanged 0, rejected 0\n"
    last = bar.rstrip().split("\r")[-1]
    assert re.fullmatch(r"\[#{30}\] 30/30 100%\s+[\d.]+/s ETA\s+0s", last), bar


def test_progress_total_of_a_headerless_twilio_list(
    server: ServerProcess, loc: str, tmp_path: Path
) -> None:
    path = tmp_path / "optouts.csv"
    path.write_text("".join(f"+1415555{n:04d}\n" for n in range(300, 330)), encoding="utf-8")
    result, bar = on_a_terminal(
        "--addr", server.addr, "import", "twilio", str(path), "--location", loc
    )
    assert result.stdout == "applied 30, unchanged 0, rejected 0\n"
    assert " 30/30 100% " in bar, bar


# --- consent, purpose and the consent policy -----------------------------------------------

CONSENT_HEADER = [
    "CHANNEL",
    "PURPOSE",
    "ADDRESS",
    "STATUS",
    "METHOD",
    "KIND",
    "SOURCE",
    "ACTOR",
    "CAPTURED",
    "UNTIL",
]


def test_policy_get_and_set(ctl: Any, client: DndClient, loc: str) -> None:
    off = ctl("policy", "get", loc)
    assert off.returncode == 0, off.stderr
    assert off.stdout.splitlines() == [
        f"{loc}  double opt-in window 24h",
        "no channel requires consent",
    ]

    on = ctl(
        *("policy", "set", loc, "--require", "sms:MARKETING,informational"),
        *("--require", "EMAIL", "--double-opt-in-window", "2h"),
    )
    assert on.returncode == 0, on.stderr
    lines = on.stdout.splitlines()
    assert lines[0] == f"{loc}  double opt-in window 2h"
    assert lines[1].split() == ["CHANNEL", "MARKETING", "INFORMATIONAL"]
    assert sorted(line.split() for line in lines[2:]) == [
        ["EMAIL", "required", "-"],
        ["SMS", "required", "required"],
    ]
    policy = client.get_consent_policy(loc)
    assert policy.double_opt_in_window_seconds == 7200
    assert {(c.channel, c.require_marketing, c.require_informational) for c in policy.channels} == {
        (Channel.EMAIL, True, False),
        (Channel.SMS, True, True),
    }
    assert ctl("policy", "get", loc).stdout == on.stdout, "get shows what set stored"

    as_json = json.loads(ctl("--json", "policy", "get", loc).stdout)
    assert as_json["double_opt_in_window_seconds"] == "7200"
    assert {c["channel"] for c in as_json["channels"]} == {"CHANNEL_EMAIL", "CHANNEL_SMS"}

    # A replace: naming only SMS drops EMAIL; naming nothing turns the policy off.
    replaced = ctl("policy", "set", loc, "--require", "SMS")
    assert replaced.returncode == 0, replaced.stderr
    assert [line.split() for line in replaced.stdout.splitlines()[2:]] == [["SMS", "required", "-"]]
    cleared = ctl("policy", "set", loc)
    assert cleared.stdout.splitlines()[1:] == ["no channel requires consent"]
    assert not [c for c in client.get_consent_policy(loc).channels if c.require_marketing]


def test_policy_set_refusals_change_nothing(ctl: Any, client: DndClient, loc: str) -> None:
    ctl("policy", "set", loc, "--require", "SMS")
    before = client.get_consent_policy(loc)

    informational_alone = ctl("policy", "set", loc, "--require", "SMS:INFORMATIONAL")
    assert informational_alone.returncode == 3 and informational_alone.stdout == ""
    lines = informational_alone.stderr.splitlines()
    assert lines[0].startswith("dndctl: INVALID_ARGUMENT: "), lines
    assert any("MARKETING" in line for line in lines[1:]), lines

    short = ctl("policy", "set", loc, "--require", "SMS", "--double-opt-in-window", "10s")
    assert short.returncode == 3 and short.stderr.startswith("dndctl: INVALID_ARGUMENT: ")
    assert client.get_consent_policy(loc) == before

    unknown = ctl("policy", "set", loc, "--require", "SMS:SOMETIMES")
    assert unknown.returncode == 2 and "one of MARKETING, INFORMATIONAL" in unknown.stderr
    garbled = ctl("policy", "set", loc, "--double-opt-in-window", "a while")
    assert garbled.returncode == 2 and "seconds, or a number with s, m, h or d" in garbled.stderr
    assert client.get_consent_policy(loc) == before


def test_consent_flow(ctl: Any, client: DndClient, db: Database, loc: str) -> None:
    """Policy on: MARKETING is denied without consent, allowed once it is recorded, denied
    again once revoked; TRANSACTIONAL is never asked for consent."""
    assert ctl("policy", "set", loc, "--require", "SMS").returncode == 0
    denied = ctl("check", loc, "c", "--channel", "SMS", "--purpose", "marketing")
    assert denied.returncode == 1, (denied.stdout, denied.stderr)
    assert denied.stdout.startswith("denied: NO_CONSENT: "), denied.stdout
    assert "RecordConsent" in denied.stdout and len(denied.stdout.splitlines()) == 1
    receipt = ctl("check", loc, "c", "--channel", "SMS", "--purpose", "TRANSACTIONAL")
    assert receipt.returncode == 0, receipt.stdout
    no_purpose = ctl("check", loc, "c", "--channel", "SMS")
    assert no_purpose.returncode == 0, "no purpose: as before purposes existed"

    empty = ctl("consent", "show", loc, "c")
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.splitlines() == [f"{loc}/c  version 0", "no consents"]

    record = ctl(
        *("consent", "record", loc, "c", "--channel", "SMS", "--purpose", "MARKETING"),
        *("--method", "WEB_FORM", "--actor", "form-12", "--consent-source", "spring"),
        *("--form-url", "https://example.com/join", "--disclosure-version", "v3"),
        *("--ip", "203.0.113.9", "--captured-at", "2026-01-05T10:00:00Z"),
    )
    assert record.returncode == 0, record.stderr
    lines = record.stdout.splitlines()
    assert re.fullmatch(r"changed; cursor \S+", lines[0]), lines
    table_at = next(i for i, line in enumerate(lines) if line.startswith(f"{loc}/c  version "))
    assert lines[table_at] == f"{loc}/c  version 1"
    assert lines[table_at + 1].split() == CONSENT_HEADER
    assert lines[table_at + 2].split() == [
        *("SMS", "MARKETING", "*", "ACTIVE", "WEB_FORM", "EXPRESS", "USER", "form-12"),
        *("2026-01-05", "10:00:00Z", "-"),
    ]
    [consent] = client.get_status(loc, "c").consents
    assert (consent.method, consent.purpose, consent.status) == (
        ConsentMethod.WEB_FORM,
        ConsentPurpose.MARKETING,
        ConsentStatus.ACTIVE,
    )
    assert consent.evidence.form_url == "https://example.com/join"
    assert (consent.evidence.ip_address, consent.consent_source) == ("203.0.113.9", "spring")

    allowed = ctl("check", loc, "c", "--channel", "SMS", "--purpose", "MARKETING")
    assert allowed.returncode == 0, allowed.stdout
    assert allowed.stdout.startswith("allowed: ") and "WEB_FORM" in allowed.stdout

    shown = ctl("consent", "show", loc, "c")
    assert shown.stdout.splitlines()[2].split()[:4] == ["SMS", "MARKETING", "*", "ACTIVE"]
    as_json = json.loads(ctl("--json", "consent", "show", loc, "c").stdout)
    assert (as_json["location_id"], as_json["contact_id"], as_json["version"]) == (loc, "c", "1")
    [shown_json] = as_json["consents"]
    assert shown_json["status"] == "CONSENT_STATUS_ACTIVE"
    assert shown_json["evidence"]["disclosure_version"] == "v3"
    assert shown_json["captured_at"] == "2026-01-05T10:00:00Z"

    history = ctl("history", loc, "c").stdout.splitlines()
    assert history[1].split()[:6] == ["1", *history[1].split()[1:3], "consent", "SMS", "MARKETING"]

    changes = db.changes(loc)
    revoke = ctl("consent", "revoke", loc, "c", "--channel", "SMS", "--note", "asked by phone")
    assert revoke.returncode == 0, revoke.stderr
    lines = revoke.stdout.splitlines()
    assert re.fullmatch(r"revoked 1 consent; cursor \S+", lines[0]), lines
    assert lines[1] == f"{loc}/c  version 2"
    row = lines[3].split()
    assert row[:4] == ["SMS", "MARKETING", "*", "REVOKED"] and row[-2:] == ["by", "REVOKED"]
    assert db.changes(loc) == changes + 1
    again = ctl("check", loc, "c", "--channel", "SMS", "--purpose", "MARKETING")
    assert again.returncode == 1 and "revoked" in again.stdout, again.stdout
    nothing = ctl("consent", "revoke", loc, "c", "--channel", "SMS")
    assert nothing.returncode == 0
    assert nothing.stdout.startswith("unchanged (nothing to revoke); cursor ")
    assert db.changes(loc) == changes + 1


def test_consent_record_options_and_errors(
    ctl: Any, client: DndClient, db: Database, loc: str
) -> None:
    implied = ctl(
        *("consent", "record", loc, "c", "--channel", "EMAIL", "--purpose", "INFORMATIONAL"),
        *("--method", "API", "--basis", "PURCHASE", "--captured-at", "2026-01-05T10:00:00+01:00"),
        *("--address", "Pat@Example.com", "--source", "WORKFLOW", "--idempotency-key", "k-1"),
    )
    assert implied.returncode == 0, implied.stderr
    [consent] = client.get_status(loc, "c").consents
    assert consent.address == "pat@example.com" and consent.source == Source.WORKFLOW
    assert consent.kind == pb.CONSENT_KIND_IMPLIED
    assert consent.captured_at.ToJsonString() == "2026-01-05T09:00:00Z"
    assert consent.expires_at.ToJsonString() == "2028-01-05T09:00:00Z", "a purchase: 2 years"
    row = ctl("consent", "show", loc, "c").stdout.splitlines()[2].split()
    assert row[:6] == ["EMAIL", "INFORMATIONAL", "pat@example.com", "ACTIVE", "API", "IMPLIED"]
    assert row[-3:] == ["expires", "2028-01-05", "09:00:00Z"]

    changes = db.changes(loc)
    replay = ctl(
        *("consent", "record", loc, "c", "--channel", "EMAIL", "--purpose", "INFORMATIONAL"),
        *("--method", "API", "--basis", "PURCHASE", "--captured-at", "2026-01-05T10:00:00+01:00"),
        *("--address", "Pat@Example.com", "--source", "WORKFLOW", "--idempotency-key", "k-1"),
    )
    assert replay.returncode == 0 and replay.stdout == implied.stdout, "replayed"
    assert db.changes(loc) == changes

    as_json = ctl(
        *("--json", "consent", "record", loc, "d", "--channel", "SMS"),
        *("--purpose", "MARKETING", "--method", "VERBAL", "--recording-ref", "call-991"),
    )
    answer = json.loads(as_json.stdout)
    assert answer["changed"] is True and answer["cursor"]
    assert answer["consent"]["method"] == "CONSENT_METHOD_VERBAL"
    assert answer["consent"]["evidence"] == {"recording_ref": "call-991"}

    naive = ctl(
        *("consent", "record", loc, "e", "--channel", "SMS", "--purpose", "MARKETING"),
        *("--method", "API", "--captured-at", "2026-01-05T10:00:00"),
    )
    assert naive.returncode == 2 and "give its timezone" in naive.stderr
    no_expiry = ctl(
        *("consent", "record", loc, "e", "--channel", "SMS", "--purpose", "MARKETING"),
        *("--method", "API", "--implied"),
    )
    assert no_expiry.returncode == 3 and no_expiry.stdout == ""
    assert no_expiry.stderr.startswith("dndctl: INVALID_ARGUMENT: "), no_expiry.stderr
    assert len(no_expiry.stderr.splitlines()) >= 2, "the field violation is printed"
    future = ctl(
        *("consent", "record", loc, "e", "--channel", "SMS", "--purpose", "MARKETING"),
        *("--method", "API", "--captured-at", "2999-01-01T00:00:00Z"),
    )
    assert future.returncode == 3 and "captured_at" in future.stderr, future.stderr
    missing = ctl("consent", "record", loc, "e", "--channel", "SMS", "--purpose", "MARKETING")
    assert missing.returncode == 2 and "--method" in missing.stderr
    assert client.get_status(loc, "e").consents == []


def test_double_opt_in_confirmed_by_yes(ctl: Any, client: DndClient, loc: str) -> None:
    pending = ctl(
        *("consent", "record", loc, "c", "--channel", "SMS", "--purpose", "MARKETING"),
        *("--method", "DOUBLE_OPT_IN", "--pending", "--address", "+14155550140"),
    )
    assert pending.returncode == 0, pending.stderr
    row = ctl("consent", "show", loc, "c").stdout.splitlines()[2].split()
    assert row[:5] == ["SMS", "MARKETING", "+14155550140", "PENDING", "DOUBLE_OPT_IN"]
    assert row[-4:-2] == ["confirm", "by"]
    assert ctl("policy", "set", loc, "--require", "SMS").returncode == 0
    # At a planned time quiet hours allow in San Francisco (not the hour of the run), within
    # the double opt-in's window (consent is judged at the planned time).
    at = dt.datetime.now(dt.UTC).replace(hour=18, minute=0, second=0, microsecond=0)
    if at <= dt.datetime.now(dt.UTC) + dt.timedelta(minutes=5):
        at += dt.timedelta(days=1)
    check = ("check", loc, "c", "--channel", "SMS", "--purpose", "MARKETING")
    check += ("--send-at", at.strftime("%Y-%m-%dT%H:%M:%SZ"))
    waiting = ctl(*check, "--address", "+14155550140")
    assert waiting.returncode == 1 and "waiting for the contact's confirmation" in waiting.stdout

    client.process_inbound_message(loc, "c", "YES", from_address="+14155550140")
    row = ctl("consent", "show", loc, "c").stdout.splitlines()[2].split()
    assert row[:5] == ["SMS", "MARKETING", "+14155550140", "ACTIVE", "DOUBLE_OPT_IN"]
    assert ctl(*check, "--address", "+14155550140").returncode == 0
    # The address's consent covers sends to that address only.
    assert ctl(*check).returncode == 1


def test_check_purpose_against_a_marketing_only_opt_out(
    ctl: Any, client: DndClient, loc: str
) -> None:
    set_ = ctl("set", loc, "c", "--all", "--marketing-only", "--source", "CONTACT")
    assert set_.returncode == 0, set_.stderr
    [block] = client.get_status(loc, "c").blocks
    assert block.reason == Reason.MARKETING_OPT_OUT and block.scope.marketing_only
    for purpose, code in (
        ("MARKETING", 1),
        ("INFORMATIONAL", 0),
        ("TRANSACTIONAL", 0),
        ("COMPLIANCE_REPLY", 0),
    ):
        result = ctl("check", loc, "c", "--channel", "EMAIL", "--purpose", purpose)
        assert result.returncode == code, (purpose, result.stdout, result.stderr)
    assert ctl("check", loc, "c", "--channel", "EMAIL").returncode == 1, (
        "unstated: may be marketing"
    )
    decision = json.loads(
        ctl("--json", "check", loc, "c", "--channel", "SMS", "--purpose", "MARKETING").stdout
    )
    assert decision["denial"] == "DENIAL_MARKETING_OPT_OUT"
    assert decision["denied_by"][0]["reason"] == "REASON_MARKETING_OPT_OUT"
    bad = ctl("check", loc, "c", "--channel", "SMS", "--purpose", "SPAM")
    assert bad.returncode == 2 and "one of MARKETING, INFORMATIONAL" in bad.stderr

    clear = ctl("clear", loc, "c", "--all", "--marketing-only", "--source", "USER")
    assert clear.returncode == 0, clear.stderr
    assert not client.get_status(loc, "c").blocks
    assert client.check_send(loc, "c", Channel.EMAIL, purpose=Purpose.MARKETING).allowed


def test_watch_shows_consent_changes(ctl: Any, client: DndClient, loc: str) -> None:
    marker = client.set_dnd(
        new_id("loc"), "m", action=DndAction.ENABLE, source=Source.USER, channel=Channel.SMS
    ).cursor
    blocked = client.set_dnd(
        loc, "c", action=DndAction.ENABLE, source=Source.USER, channel=Channel.EMAIL
    ).cursor
    recorded = client.record_consent(
        loc,
        "c",
        Channel.SMS,
        ConsentPurpose.MARKETING,
        method=ConsentMethod.API,
        source=Source.USER,
    ).cursor
    both = ctl("watch", "--location", loc, "--after", marker, "--limit", "2")
    assert both.returncode == 0, both.stderr
    block_line, consent_line = both.stdout.splitlines()
    assert block_line.endswith(f"v1  enabled EMAIL MANUAL by USER  cursor={blocked}")
    assert re.fullmatch(
        rf"{WHEN}  {loc}/c  v2  consent SMS MARKETING ACTIVE by USER  cursor={recorded}",
        consent_line,
    ), consent_line
    consents = ctl(
        "watch", "--location", loc, "--kind", "consent", "--after", marker, "--limit", "1"
    )
    assert consents.stdout.strip() == consent_line
    blocks = ctl("watch", "--location", loc, "--kind", "BLOCK", "--after", marker, "--limit", "1")
    assert blocks.stdout.strip() == block_line
    bad = ctl("watch", "--kind", "GOSSIP")
    assert bad.returncode == 2 and "one of BLOCK, CONSENT, COMPLIANCE_REPLY" in bad.stderr


# --- operators: output formats, exit codes, version, doctor, completion -----------------------


def test_output_json_and_table(ctl: Any, loc: str) -> None:
    ctl("set", loc, "c", "--channel", "SMS")
    as_json = ctl("--output", "json", "status", loc, "c")
    alias = ctl("--json", "status", loc, "c")
    assert as_json.returncode == alias.returncode == 0
    assert json.loads(as_json.stdout) == json.loads(alias.stdout)
    assert json.loads(as_json.stdout)["version"] == "1"
    as_table = ctl("--output", "table", "status", loc, "c")
    assert as_table.stdout == ctl("status", loc, "c").stdout
    assert as_table.stdout.startswith(f"{loc}/c  version 1")
    both = ctl("--json", "--output", "table", "status", loc, "c")
    assert both.returncode == 2 and "--json is --output json" in both.stderr
    other = ctl("--output", "yaml", "status", loc, "c")
    assert other.returncode == 2 and "invalid choice" in other.stderr


def test_exit_codes_are_documented_and_each_is_given(ctl: Any, loc: str, tmp_path: Path) -> None:
    shown = dndctl("--help").stdout
    for code, meaning in (
        (0, "ok"),
        (1, "the answer is no"),
        (2, "usage error"),
        (3, "the service refused"),
        (4, "unreachable"),
        (5, "doctor found a problem"),
    ):
        assert re.search(rf"^  {code}  .*{meaning}", shown, re.M), (code, shown)
    assert ctl("status", loc, "c").returncode == 0
    ctl("set", loc, "c", "--channel", "SMS")
    assert ctl("check", loc, "c", "--channel", "SMS").returncode == 1
    assert ctl("status", loc).returncode == 2  # a missing argument
    missing = ctl("import", "csv", str(tmp_path / "absent.csv"))
    assert missing.returncode == 2 and "absent.csv" in missing.stderr
    refused = ctl("status", "", "c")
    assert refused.returncode == 3 and refused.stderr.startswith("dndctl: INVALID_ARGUMENT")
    down = dndctl("--addr", "127.0.0.1:1", "--timeout", "2", "status", loc, "c")
    assert down.returncode == 4 and down.stderr.startswith("dndctl: UNAVAILABLE")


def test_version_shows_client_and_server(ctl: Any) -> None:
    from importlib import metadata

    expected = metadata.version("dnd-service")
    shown = ctl("version")
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines() == [f"client  {expected}", f"server  {expected}"]
    as_json = json.loads(ctl("--output", "json", "version").stdout)
    assert as_json == {"client_version": expected, "server_version": expected}
    down = dndctl("--addr", "127.0.0.1:1", "--timeout", "2", "version")
    assert down.returncode == 4
    assert down.stdout == f"client  {expected}\n" and "UNAVAILABLE" in down.stderr


def test_doctor_on_a_healthy_server(ctl: Any) -> None:
    report = ctl("doctor")
    assert report.returncode == 0, (report.stdout, report.stderr)
    assert report.stdout.splitlines()[-1] == "no problem found"
    found = json.loads(ctl("--output", "json", "doctor").stdout)
    assert found["ok"] is True
    checks = {c["check"]: c for c in found["checks"]}
    assert checks["connectivity"]["status"] == "ok"
    assert checks["tls"] == {"check": "tls", "status": "ok", "detail": "off (plaintext)"}
    assert checks["auth"]["status"] == "warn" and "no token" in checks["auth"]["detail"]
    assert checks["version"]["status"] == "ok"
    assert checks["clock"]["status"] == "ok"
    assert "server clock" in checks["clock"]["detail"]


def test_doctor_unreachable_exits_4() -> None:
    report = dndctl("--addr", "127.0.0.1:1", "--timeout", "2", "--json", "doctor")
    assert report.returncode == 4, report.stderr
    found = json.loads(report.stdout)
    assert found["ok"] is False
    assert found["checks"][0]["check"] == "connectivity"
    assert found["checks"][0]["status"] == "fail"
    assert "unreachable: UNAVAILABLE" in found["checks"][0]["detail"]


def test_doctor_reports_clock_skew(server: ServerProcess) -> None:
    """The host's clock a minute ahead of the server's (the server's cannot be moved)."""
    import datetime as dt
    import io

    from dnd_client import cli

    ahead = io.StringIO()
    args = cli.build_parser().parse_args(["--addr", server.addr, "--json", "doctor"])
    args.json = True
    later = lambda: dt.datetime.now(dt.UTC) + dt.timedelta(seconds=60)  # noqa: E731
    assert cli.doctor(args, ahead, clock=later) == 5
    checks = {c["check"]: c for c in json.loads(ahead.getvalue())["checks"]}
    assert checks["clock"]["status"] == "fail"
    assert re.search(r"server clock -(59|60)\.\d+s", checks["clock"]["detail"])
    on_time = io.StringIO()
    assert cli.doctor(args, on_time) == 0


@pytest.fixture(scope="module")
def secured(fresh_database: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from dnd_server.auth import hash_token

    tokens = {
        "checker": (["loc-1"], ["check"]),
        "nobody": (["loc-1"], []),
        "admin": ("*", ["check", "read", "write", "watch"]),
    }
    entries = [
        {"name": n, "sha256": hash_token(f"t-{n}"), "locations": ls, "scopes": ss}
        for n, (ls, ss) in tokens.items()
    ]
    path = tmp_path_factory.mktemp("doctor") / "tokens.json"
    path.write_text(json.dumps({"tokens": entries}), encoding="utf-8")
    process = ServerProcess(fresh_database(), {"DND_TOKENS_FILE": str(path)}).start()
    yield process
    process.stop()


def test_doctor_reports_the_tokens_permissions(secured: ServerProcess) -> None:
    def doctor(token: str, *flags: str) -> tuple[int, dict[str, Any]]:
        run = dndctl("--addr", secured.addr, "--token", token, "--json", "doctor", *flags)
        return run.returncode, {c["check"]: c for c in json.loads(run.stdout)["checks"]}

    code, checks = doctor("t-admin")
    assert code == 0
    assert checks["auth"]["detail"] == "authenticated as 'admin'"
    assert checks["locations"]["detail"] == "*"
    assert "check (CheckSend, BatchCheckSend)" in checks["permissions"]["detail"]
    assert checks["not permitted"]["detail"].startswith("lacks: contact, support, consent")

    code, checks = doctor("t-checker", "--require", "check")
    assert code == 0 and checks["locations"]["detail"] == "loc-1"
    code, checks = doctor("t-checker", "--require", "read", "--require", "check")
    assert code == 5
    assert checks["required"]["status"] == "fail"
    assert checks["required"]["detail"].startswith("the token lacks read (GetStatus")

    code, checks = doctor("t-nobody")
    assert code == 5 and checks["permissions"]["status"] == "fail"

    code, checks = doctor("t-unknown")
    assert code == 5 and checks["connectivity"]["status"] == "fail"
    assert "UNAUTHENTICATED" in checks["connectivity"]["detail"]


def test_bash_completion_script(tmp_path: Path) -> None:
    script = dndctl("completion", "bash")
    assert script.returncode == 0, script.stderr
    text = script.stdout
    assert "_dndctl()" in text and "complete -o default -F _dndctl dndctl" in text
    for command in ("status", "set", "check", "consent", "policy", "doctor", "version"):
        assert command in text
    path = tmp_path / "dndctl.bash"
    path.write_text(text, encoding="utf-8")
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0

    def complete(*words: str) -> set[str]:
        line = " ".join(["dndctl", *words])
        probe = (
            f"source {path}; COMP_WORDS=({line}); COMP_CWORD={len(words)}; _dndctl; "
            'printf "%s\\n" "${COMPREPLY[@]}"'
        )
        done = subprocess.run(["bash", "-c", probe], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return set(done.stdout.split())

    assert {"status", "consent", "doctor", "completion"} <= complete("")
    assert complete("consent", "re") == {"record", "revoke"}
    assert complete("check", "--channel", "") >= {"SMS", "EMAIL", "WHATSAPP"}
    assert complete("--output", "") == {"table", "json"}
    assert complete("doctor", "--req") == {"--require"}
    zsh = dndctl("completion", "zsh")
    assert zsh.returncode == 0 and zsh.stdout.startswith("#compdef dndctl")
    assert dndctl("completion", "fish").returncode == 2
