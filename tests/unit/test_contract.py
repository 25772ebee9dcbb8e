"""The contract only grows: `make proto-lint` runs `buf breaking` against the released
contract (protos/releases/), and that check really refuses a breaking change."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support import REPO

BUF = ["npx", "--yes", "@bufbuild/buf@1.75.0"]
PROTOS = Path(REPO) / "protos"

pytestmark = pytest.mark.skipif(shutil.which("npx") is None, reason="npx (npm) is not installed")


@pytest.fixture(scope="module")
def buf() -> list[str]:
    """The buf of ``make proto-lint``: the program npx runs, found once (through npx) so that
    each check starts buf itself, not npm (a second instead of a tenth of one)."""
    found = subprocess.run(
        [*BUF[:2], "--package", BUF[2], "--call", "command -v buf"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    shim = Path(found.stdout.strip())
    if found.returncode != 0 or not shim.is_file():
        return BUF
    # The npm package's launcher starts the binary of its platform package, installed beside it.
    modules = shim.resolve().parents[2]
    native = sorted(modules.glob("buf-*/bin/buf"))
    return [str(native[0])] if native else [str(shim)]


def breaking(buf: list[str], folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*buf, "breaking", "--against", str(PROTOS / "releases" / "v1.json")],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_of_protos(tmp_path: Path) -> Path:
    folder = tmp_path / "protos"
    shutil.copytree(PROTOS, folder, ignore=shutil.ignore_patterns("releases"))
    return folder


def test_the_current_contract_does_not_break_the_release(buf: list[str], tmp_path: Path) -> None:
    result = breaking(buf, copy_of_protos(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize(
    ("change", "pattern", "replacement"),
    [
        ("a field renumbered", r"string contact_id = 2;", "string contact_id = 99;"),
        (
            "an RPC removed",
            r"\n  rpc GetStatus\(GetStatusRequest\) returns \(GetStatusResponse\);",
            "",
        ),
        ("an enum value renamed", r"CHANNEL_GMB = 6;", "CHANNEL_GOOGLE = 6;"),
    ],
)
def test_a_breaking_change_is_refused(
    buf: list[str], tmp_path: Path, change: str, pattern: str, replacement: str
) -> None:
    folder = copy_of_protos(tmp_path)
    proto = folder / "dnd" / "v1" / "dnd.proto"
    text, count = re.subn(pattern, replacement, proto.read_text(), count=1)
    assert count == 1, f"the proto no longer has the text this test changes ({change})"
    proto.write_text(text)
    result = breaking(buf, folder)
    assert result.returncode != 0, f"buf breaking accepted {change}"
