"""Security checks of real ``dnd-server`` processes: a server that would serve open off
loopback, or with auth enabled and no tokens file, or with unusable tokens or TLS files, exits 2
with one clear message and no traceback (workers too); DND_AUTH=disabled serves open off loopback,
warning; ``dnd-server hash-token`` prints the hash a tokens file holds. The same checks run in
process, and tokens, permissions and TLS over gRPC, in tests/integration/test_security.py."""

from __future__ import annotations

import hashlib
import json
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc

from tests import factories
from tests.integration.test_security import (
    MALFORMED,
    PLAIN,
    Certs,
    make_ca,
    make_leaf,
    write_tokens,
)
from tests.support import REPO, ServerProcess, base_env, new_id
from tests.support import dnd_server as cli


@pytest.fixture(scope="module")
def spare_url(fresh_database: Any) -> str:
    return str(fresh_database())


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    """A CA and a server certificate of it, made with the openssl command."""
    folder = tmp_path_factory.mktemp("certs")
    make_ca(folder, "ca")
    extensions = "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n"
    make_leaf(folder, "server", "ca", extensions)
    return Certs(folder)


def test_hash_token_command() -> None:
    done = cli("hash-token", stdin="s3cr3t-token\n")
    assert done.returncode == 0
    assert done.stdout.strip() == hashlib.sha256(b"s3cr3t-token").hexdigest()
    empty = cli("hash-token", stdin="")
    assert empty.returncode == 2
    assert "standard input" in empty.stderr


def test_refusal_exits_2_with_a_clear_message(spare_url: str) -> None:
    addr = "0.0.0.0:0"
    done = cli("serve", env={"DND_DATABASE_URL": spare_url, "DND_GRPC_ADDR": addr})
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"refusing to serve on {addr} without authentication" in done.stderr
    assert "DND_TOKENS_FILE" in done.stderr and "DND_AUTH=disabled" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert any(e["event"] == "startup_refused" and e["level"] == "error" for e in events)


def test_workers_refuse_to_serve_open_off_loopback(spare_url: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"DND_DATABASE_URL": spare_url, "DND_WORKERS": "2", "DND_GRPC_ADDR": f"0.0.0.0:{port}"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dnd_server", "serve"],
        env={**base_env(), **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO,
    )
    try:
        out, err = proc.communicate(timeout=6)
    except subprocess.TimeoutExpired:
        proc.terminate()  # the supervisor passes it on to its workers
        out, err = proc.communicate(timeout=30)
        pytest.fail(f"still running after 6 s:\n{out[-1500:]}")
    assert proc.returncode == 2, out + err
    assert "refusing to serve" in err


def test_auth_enabled_needs_a_tokens_file(spare_url: str) -> None:
    done = cli("serve", env={"DND_DATABASE_URL": spare_url, "DND_AUTH": "enabled"})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "DND_AUTH=enabled needs DND_TOKENS_FILE" in done.stderr


def test_auth_disabled_serves_open_off_loopback(fresh_database: Any) -> None:
    process = ServerProcess(
        fresh_database(), {"DND_GRPC_ADDR": "0.0.0.0:0", "DND_AUTH": "disabled"}
    ).start()
    try:
        warned = [e for e in process.logs if e.get("event") == "auth_disabled"]
        assert warned and warned[0]["level"] == "warning"
        assert "DND_AUTH=disabled" in warned[0]["detail"]
        with grpc.insecure_channel(process.addr) as channel:
            stub = dnd_pb2_grpc.DndServiceStub(channel)
            request = factories.enable("loc-open", new_id("contact"), source=pb.SOURCE_SUPPORT)
            assert stub.SetDnd(request, timeout=10).changed
    finally:
        assert process.stop() == 0


@pytest.mark.parametrize(
    ("content", "problem"), [MALFORMED[0], MALFORMED[4]], ids=["json", "plain"]
)
def test_malformed_tokens_file_exits_2(
    content: str, problem: str, tmp_path: Path, spare_url: str
) -> None:
    path = write_tokens(tmp_path, content)
    done = cli("serve", env={"DND_DATABASE_URL": spare_url, "DND_TOKENS_FILE": str(path)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert problem in done.stderr
    assert str(path) in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert PLAIN not in done.stdout + done.stderr


# --- TLS files -------------------------------------------------------------------------------


def test_incomplete_tls_settings_exit_2(certs: Certs, spare_url: str) -> None:
    env = {
        "DND_TLS_CERT_FILE": certs.path("missing.pem"),
        "DND_TLS_KEY_FILE": certs.path("server.key"),
    }
    done = cli("serve", env={"DND_DATABASE_URL": spare_url, **env})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "cannot read TLS files" in done.stderr and "missing.pem" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr


def test_unusable_tls_files_stop_startup_clearly(
    certs: Certs, spare_url: str, tmp_path: Path
) -> None:
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("this is not a PEM file\n", encoding="utf-8")
    env = {"DND_TLS_CERT_FILE": str(garbage), "DND_TLS_KEY_FILE": certs.path("server.key")}
    done = cli("serve", env={"DND_DATABASE_URL": spare_url, **env})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "TLS" in done.stderr
    assert "Traceback" not in done.stdout + done.stderr
