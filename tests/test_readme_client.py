"""The README's "Use from Python" examples (its ```python blocks, run with this venv's python)
and "dndctl" examples (the ``dndctl`` lines of its ```sh blocks, run with the installed
dndctl), each against a real server on a fresh database, with their output checked."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dnd_client import Channel, DndClient, Reason

from tests.support import REPO, ServerProcess

README = Path(REPO) / "README.md"
README_ADDR = "127.0.0.1:50051"
DNDCTL = str(Path(sys.executable).with_name("dndctl"))
_BLOCK = re.compile(r"^```(\w+)\n(.*?)^```", re.DOTALL | re.MULTILINE)


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.DOTALL | re.MULTILINE)
    assert found, f"README has no section {title!r}"
    return found[1]


def python_examples() -> list[str]:
    return [body for lang, body in _BLOCK.findall(section("Use from Python")) if lang == "python"]


def dndctl_examples() -> list[str]:
    lines = []
    for lang, body in _BLOCK.findall(section("dndctl")):
        if lang == "sh" and body.lstrip().startswith("dndctl"):
            lines += [line.strip() for line in body.splitlines() if line.startswith("dndctl")]
    return lines


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DND_")}


@pytest.fixture(scope="module")
def readme_server(fresh_database: Any) -> Iterator[ServerProcess]:
    process = ServerProcess(fresh_database()).start()
    yield process
    process.stop()


def test_readme_has_the_client_examples() -> None:
    blocks = python_examples()
    assert len(blocks) >= 2
    assert any("DndClient(" in b for b in blocks) and any("AsyncDndClient(" in b for b in blocks)
    assert all(README_ADDR in b for b in blocks)
    commands = [shlex.split(line) for line in dndctl_examples()]
    assert all(README_ADDR in argv for argv in commands)
    used = {argv[3] for argv in commands}
    assert {"set", "check", "status", "history", "clear", "watch", "import"} <= used


def test_python_examples(readme_server: ServerProcess, tmp_path: Path) -> None:
    outputs = []
    for code in python_examples():
        result = subprocess.run(
            [sys.executable, "-c", code.replace(README_ADDR, readme_server.addr)],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=tmp_path,
            env=clean_env(),
        )
        assert result.returncode == 0, (code, result.stdout, result.stderr)
        assert result.stderr == "", result.stderr
        outputs.append(result.stdout.splitlines())
    blocking, following = outputs[:2]

    # The blocking example: the explanation, then each refused block.
    assert blocking[0].startswith("denied: outbound SMS is blocked by SMS_OPT_OUT_KEYWORD")
    refusals = blocking[1:]
    assert refusals and all(r.startswith("still blocked: SMS_OPT_OUT_KEYWORD - ") for r in refusals)
    assert all("START" in r for r in refusals)

    # The async example: every change of loc-py from the start of the log, up to its own.
    with DndClient(readme_server.addr) as dnd:
        expected = [
            f"{contact} {e.version} {e.cursor}"
            for contact in ("contact-1", "contact-2")
            for e in reversed(dnd.list_history("loc-py", contact).entries)
        ]
    assert following == expected
    assert following[-1].startswith("contact-2 1 ")


def test_dndctl_examples(readme_server: ServerProcess, tmp_path: Path) -> None:
    # The files the import examples name, in the directory they run in.
    (tmp_path / "optouts.csv").write_text(
        "Phone Number,Opt Out Date\n+14155550301,2026-01-02\n+14155550302,2026-01-03\n",
        encoding="utf-8",
    )
    (tmp_path / "bounces.csv").write_text(
        "address,code,error,created_at\n"
        "gone@example.com,550,5.1.1 mailbox does not exist,Mon 05 Jan 2026 10:00:00 UTC\n",
        encoding="utf-8",
    )
    documented = re.search(r"`(denied: [^`]+)`", section("dndctl"))
    assert documented, "the README shows a denied check line"
    denied = re.escape(documented[1]).replace(
        re.escape("2026-11-25T12:00:00Z"), r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    )
    seen: dict[str, list[str]] = {}
    for line in dndctl_examples():
        argv = shlex.split(line)
        argv = [DNDCTL] + [readme_server.addr if a == README_ADDR else a for a in argv[1:]]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=60, cwd=tmp_path, env=clean_env()
        )
        command = argv[3]
        wanted = 1 if command == "check" else 0  # the check follows the set: denied
        assert result.returncode == wanted, (line, result.stdout, result.stderr)
        assert result.stderr == "", (line, result.stderr)
        seen.setdefault(command, []).append(result.stdout)

    assert re.fullmatch(r"changed; cursor \S+", seen["set"][0].splitlines()[0])
    [check] = seen["check"]
    assert len(check.splitlines()) == 1
    assert re.fullmatch(denied, check.strip()), (check, documented[1])
    status = seen["status"][0].splitlines()
    assert status[0] == "loc-cli/contact-9  version 1  outbound PARTIAL  inbound OFF"
    assert status[2].split()[:4] == ["SMS", "MANUAL", "USER", "user-7"]
    assert seen["history"][0].rstrip().endswith("asked by phone")
    clear = seen["clear"][0].splitlines()
    assert clear[1:] == ["loc-cli/contact-9  version 2  outbound OFF  inbound OFF", "no DND"]
    watched = seen["watch"][0].splitlines()
    assert len(watched) == 2
    assert "loc-cli/contact-9  v1  enabled SMS MANUAL by USER  cursor=" in watched[0]
    assert "loc-cli/contact-9  v2  cleared SMS MANUAL by USER  cursor=" in watched[1]
    assert seen["import"] == [
        "applied 2, unchanged 0, rejected 0\n",
        "applied 1, unchanged 0, rejected 0\n",
    ]
    with DndClient(readme_server.addr) as dnd:
        assert not dnd.check_send("loc-cli", "x", Channel.SMS, address="+14155550301").allowed
        bounced = dnd.get_status("loc-cli", "gone@example.com")
        assert [b.reason for b in bounced.blocks] == [Reason.EMAIL_HARD_BOUNCE]
