"""The container image, built and run: buildah builds the Dockerfile without a daemon
(``--isolation chroot``), and the image's own entry point serves the test PostgreSQL.

The registry base image cannot be pulled here, so the Dockerfile's ``PYTHON_IMAGE`` is a base
made from Debian packages of the same release (debootstrap: Python 3.11, ``python-is-python3``,
``python3-venv``), carrying this machine's CA certificates and pip settings so that pip inside
the build reaches the package index the way this machine does. The base's root filesystem and
image are cached (under /var/tmp and in buildah's storage), so only the first run pays for it.

buildah and debootstrap are installed with apt-get when missing; the test is skipped, saying
why, only where that cannot be done (not root, no apt-get, no package).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import grpc
import pytest
from dnd_server.auth import hash_token
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.unit.test_deploy import DOCKERFILE, ROOT, global_args, instructions

# The first run makes the base (debootstrap, about a minute); later ones only build and run.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

CACHE = Path("/var/tmp/dnd-service-image")
BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")
# Bumped when the way the base is made changes (the cached root filesystem is then rebuilt).
BASE_RECIPE = "1"
HOST_CA_BUNDLE = Path(os.environ.get("SSL_CERT_FILE") or "/etc/ssl/certs/ca-certificates.crt")
# pip settings that reach an index; those naming this machine's files (find-links, constraint
# files, file:// indexes) mean nothing inside the build.
PIP_NETWORK_SETTINGS = {
    "index-url",
    "extra-index-url",
    "trusted-host",
    "timeout",
    "default-timeout",
    "retries",
    "proxy",
}
IMAGE_USER = "10001:10001"
# The test base is about 160 MB and the server's virtualenv about 110 MB; the embedded
# PostgreSQL (pgserver) alone would add about 50 MB.
MAX_IMAGE_BYTES = 300_000_000
TOKEN = f"image-test-{uuid.uuid4().hex}"
SOCKET_DIR = "/run/dnd-pg"


# ---- tools ------------------------------------------------------------------------------------


def run(*args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(
            f"{' '.join(args)} exited {result.returncode}:\n{result.stdout[-3000:]}"
            f"\n{result.stderr[-3000:]}"
        )
    return result


def apt_install(command: str, package: str) -> str:
    """The path of ``command``, installed from Debian's ``package`` when missing; skips the
    test, saying why, where it cannot be installed."""
    found = shutil.which(command)
    if found:
        return found
    if shutil.which("apt-get") is None:
        pytest.skip(f"{command} is not installed and there is no apt-get to install {package}")
    if os.geteuid() != 0:
        pytest.skip(f"{command} is not installed; installing {package} needs root")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", package]
    attempt = subprocess.run(install, capture_output=True, text=True, timeout=600, env=env)
    if attempt.returncode != 0:  # stale or missing package lists: refresh them once
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600, env=env)
        attempt = subprocess.run(install, capture_output=True, text=True, timeout=600, env=env)
    found = shutil.which(command)
    if attempt.returncode != 0 or found is None:
        pytest.skip(f"{package} cannot be installed with apt-get: {attempt.stderr.strip()[-300:]}")
    return found


@pytest.fixture(scope="module")
def buildah() -> str:
    if os.geteuid() != 0:
        pytest.skip("building and running the image with buildah here needs root (as in CI)")
    return apt_install("buildah", "buildah")


@contextlib.contextmanager
def locked(name: str) -> Iterator[None]:
    """One test run at a time builds the cached base (others wait, then reuse it)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


# ---- the base image ---------------------------------------------------------------------------


def debian_release() -> str:
    """The Debian release of the Dockerfile's default base (python:3.11-slim-RELEASE)."""
    default = global_args(instructions(DOCKERFILE.read_text(encoding="utf-8")))["PYTHON_IMAGE"]
    match = re.fullmatch(r"python:3\.11-slim-([a-z]+)", default)
    assert match, f"cannot tell the Debian release of PYTHON_IMAGE={default}"
    return match.group(1)


def host_pip_settings() -> str:
    """A pip.conf for the base: this machine's pip configuration (files and PIP_ variables,
    as `pip config list` merges them) that reaches an index, and the base's CA bundle."""
    listed = run(sys.executable, "-m", "pip", "config", "list").stdout
    settings: dict[str, str] = {}
    for line in listed.splitlines():
        key, _, value = line.partition("=")
        name = key.rpartition(".")[2]
        value = value.strip().strip("'\"")
        if name not in PIP_NETWORK_SETTINGS:
            continue
        if name.endswith("index-url"):
            value = " ".join(url for url in value.split() if not url.startswith("file:"))
        if value:
            settings[name] = value
    settings["cert"] = "/etc/ssl/certs/ca-certificates.crt"
    return "[global]\n" + "".join(f"{name} = {value}\n" for name, value in sorted(settings.items()))


def base_rootfs(release: str) -> Path:
    """A tarball of a minimal Debian ``release`` with Python, made once by debootstrap."""
    digest = hashlib.sha256(f"{release} {BASE_PACKAGES} {BASE_RECIPE}".encode()).hexdigest()
    tarball = CACHE / f"rootfs-{release}-{digest[:12]}.tar"
    if tarball.is_file():
        return tarball
    debootstrap = apt_install("debootstrap", "debootstrap")
    work = CACHE / f"rootfs-{uuid.uuid4().hex[:8]}"
    try:
        run(
            debootstrap,
            "--variant=minbase",
            f"--include={','.join(BASE_PACKAGES)}",
            release,
            str(work),
            timeout=900,
        )
        # What a slim image leaves out: package caches and lists, documentation.
        for trimmed in ("var/cache/apt", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            shutil.rmtree(work / trimmed, ignore_errors=True)
        partial = tarball.with_suffix(".partial")
        run("tar", "-C", str(work), "-cf", str(partial), ".", timeout=300)
        partial.rename(tarball)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return tarball


def image_exists(buildah: str, name: str) -> bool:
    return run(buildah, "inspect", "--type", "image", name, check=False).returncode == 0


@pytest.fixture(scope="module")
def base_image(buildah: str, tmp_path_factory: pytest.TempPathFactory) -> str:
    release = debian_release()
    pip_conf = host_pip_settings()
    ca_bundle = HOST_CA_BUNDLE.read_bytes()
    digest = hashlib.sha256(
        f"{release} {BASE_PACKAGES} {BASE_RECIPE} {pip_conf}".encode() + ca_bundle
    ).hexdigest()
    name = f"localhost/dnd-test-base:{release}-{digest[:12]}"
    with locked("base"):
        if image_exists(buildah, name):
            return name
        tarball = base_rootfs(release)
        folder = tmp_path_factory.mktemp("base")
        (folder / "pip.conf").write_text(pip_conf, encoding="utf-8")
        container = run(buildah, "from", "scratch").stdout.strip()
        try:
            run(buildah, "add", container, str(tarball), "/", timeout=300)
            run(buildah, "copy", container, str(HOST_CA_BUNDLE), "/etc/ssl/certs/")
            run(buildah, "copy", container, str(folder / "pip.conf"), "/etc/pip.conf")
            bundle = "/etc/ssl/certs/" + HOST_CA_BUNDLE.name
            run(
                buildah,
                "config",
                "--env",
                f"SSL_CERT_FILE={bundle}",
                "--env",
                f"PIP_CERT={bundle}",
                container,
            )
            run(buildah, "commit", "--rm", container, name, timeout=300)
        except BaseException:
            run(buildah, "rm", container, check=False)
            raise
    return name


# ---- the image --------------------------------------------------------------------------------


def human_bytes(text: str) -> float:
    """buildah's sizes ("318 MB", decimal units) in bytes."""
    number, unit = text.split()
    return float(number) * 1000 ** ["B", "kB", "MB", "GB", "TB"].index(unit)


def report(request: pytest.FixtureRequest, line: str) -> None:
    """A line on pytest's terminal, past the output capture."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        reporter.write_line(f"[image] {line}")


@pytest.fixture(scope="module")
def image(buildah: str, base_image: str, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"localhost/dnd-service:test-{uuid.uuid4().hex[:8]}"
    started = time.monotonic()
    built = run(
        buildah,
        "bud",
        "--isolation",
        "chroot",
        "--pull=never",
        "--format",
        "docker",
        "--build-arg",
        f"PYTHON_IMAGE={base_image}",
        "-f",
        str(DOCKERFILE),
        "-t",
        name,
        str(ROOT),
        timeout=600,
        check=False,
    )
    seconds = time.monotonic() - started
    assert built.returncode == 0, f"build failed:\n{built.stdout[-4000:]}\n{built.stderr[-4000:]}"
    try:
        listed = json.loads(run(buildah, "images", "--json", name).stdout)
        report(request, f"built {name} on {base_image} in {seconds:.1f} s: {listed[0]['size']}")
        yield name
    finally:
        run(buildah, "rmi", "--force", name, check=False)


@pytest.fixture(scope="module")
def container(buildah: str, image: str) -> Iterator[str]:
    name = f"dnd-test-{uuid.uuid4().hex[:8]}"
    run(buildah, "from", "--pull=never", "--name", name, image)
    try:
        yield name
    finally:
        run(buildah, "rm", name, check=False)


def image_config(buildah: str, image: str) -> dict[str, Any]:
    inspected = json.loads(run(buildah, "inspect", "--type", "image", image).stdout)
    config: dict[str, Any] = inspected["Docker"]["config"]
    return config


def in_container(
    buildah: str, container: str, *command: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    flags = [f"--env={key}={value}" for key, value in (env or {}).items()]
    return run(
        buildah,
        "run",
        "--isolation",
        "chroot",
        "--network",
        "host",
        *flags,
        container,
        "--",
        *command,
        timeout=120,
        check=False,
    )


def test_image_config_runs_the_server_as_non_root(buildah: str, image: str) -> None:
    config = image_config(buildah, image)
    assert config["User"] == IMAGE_USER
    assert [*config["Entrypoint"], *config["Cmd"]] == ["dnd-server", "serve"]
    assert config["Healthcheck"]["Test"] == ["CMD", "dnd-server", "healthcheck"]
    assert {"50051/tcp", "9090/tcp"} <= set(config["ExposedPorts"])
    assert config.get("StopSignal") == "SIGTERM"


def test_image_size(buildah: str, image: str, request: pytest.FixtureRequest) -> None:
    listed = json.loads(run(buildah, "images", "--json", image).stdout)
    size = human_bytes(listed[0]["size"])
    report(request, f"image size {size / 1e6:.0f} MB (limit {MAX_IMAGE_BYTES / 1e6:.0f} MB)")
    assert size < MAX_IMAGE_BYTES


def test_image_has_no_embedded_database(buildah: str, container: str) -> None:
    """pgserver is not installed, and without DND_DATABASE_URL the server refuses to start,
    saying what to set: off loopback (the image's 0.0.0.0) and on loopback alike."""
    probe = in_container(buildah, container, "python", "-c", "import pgserver")
    assert probe.returncode != 0
    assert "No module named 'pgserver'" in probe.stderr
    refused = in_container(buildah, container, "dnd-server", "serve", env={"DND_AUTH": "disabled"})
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "set DND_DATABASE_URL" in refused.stderr
    loopback = in_container(
        buildah, container, "dnd-server", "serve", env={"DND_GRPC_ADDR": "127.0.0.1:0"}
    )
    assert loopback.returncode == 2, loopback.stdout + loopback.stderr
    assert "embedded PostgreSQL is not installed" in loopback.stderr
    assert "Traceback" not in refused.stderr + loopback.stderr


# ---- the image serving ------------------------------------------------------------------------


def container_database(url: str) -> tuple[str, list[str]]:
    """The test database's URL as the container reaches it, and the bind mounts it needs: a
    unix-socket URL (the embedded test PostgreSQL) has its socket mounted at SOCKET_DIR; a TCP
    one is reached as is over the host's network."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    host = (query.get("host") or [""])[0]
    if not host.startswith("/"):
        return url, []
    port = (query.get("port") or [str(parts.port or 5432)])[0]
    socket_file = Path(host) / f".s.PGSQL.{port}"
    assert socket_file.exists(), socket_file
    query["host"] = [SOCKET_DIR]
    rewritten = urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
    return rewritten, ["-v", f"{socket_file}:{SOCKET_DIR}/{socket_file.name}"]


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        parent = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def server_pid(runner: subprocess.Popen[str]) -> int:
    """The server's Python process, inside the container, under ``buildah run``."""
    for pid in descendants(runner.pid):
        with contextlib.suppress(OSError):
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            if command[0].endswith(b"python") and b"serve" in command:
                return pid
    raise AssertionError("no server process under buildah run")


def uids(pid: int) -> list[int]:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return [int(uid) for uid in line.split()[1:]]
    raise AssertionError(f"no Uid line for {pid}")


def health(port: int) -> str:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=2
            )
        except grpc.RpcError as error:
            return f"error:{error.code().name}"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)


def grpcurl(port: int, method: str, body: dict[str, Any]) -> dict[str, Any]:
    binary = Path(sys.executable).parent / "grpcurl"
    result = run(
        str(binary if binary.is_file() else shutil.which("grpcurl") or "grpcurl"),
        "-plaintext",
        "-H",
        f"authorization: Bearer {TOKEN}",
        "-d",
        json.dumps(body),
        f"127.0.0.1:{port}",
        f"dnd.v1.DndService/{method}",
        timeout=30,
    )
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_image_serves_check_send_from_the_database(
    buildah: str,
    image: str,
    container: str,
    fresh_database: Any,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The image's entry point, as the image configures it (non-root, 0.0.0.0, tokens), with
    DND_DATABASE_URL at the test PostgreSQL: health turns SERVING, grpcurl's SetDnd and
    CheckSend go through the database, and SIGTERM stops it cleanly."""
    url, mounts = container_database(fresh_database())
    tokens = tmp_path / "tokens.json"
    tokens.write_text(
        json.dumps(
            {
                "tokens": [
                    {
                        "name": "image-test",
                        "sha256": hash_token(TOKEN),
                        "locations": "*",
                        "scopes": ["read", "write", "check"],
                    }
                ]
            }
        ),
        encoding="utf-8",
    )
    tokens.chmod(0o644)
    port = free_port()
    config = image_config(buildah, image)
    env = {
        "DND_DATABASE_URL": url,
        # The image's 0.0.0.0 on a port of this test's (buildah's chroot shares the host network).
        "DND_GRPC_ADDR": f"0.0.0.0:{port}",
        "DND_METRICS_ADDR": "127.0.0.1:0",
        "DND_TOKENS_FILE": "/etc/dnd/tokens.json",
        "DND_HEALTH_INTERVAL_SECONDS": "0.2",
    }
    started = time.monotonic()
    runner = subprocess.Popen(
        [
            buildah,
            "run",
            "--isolation",
            "chroot",
            "--network",
            "host",
            *mounts,
            "-v",
            f"{tokens}:/etc/dnd/tokens.json:ro",
            *[f"--env={key}={value}" for key, value in env.items()],
            container,
            "--",
            *config["Entrypoint"],
            *config["Cmd"],
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (seen := health(port)) != "SERVING":
            assert runner.poll() is None, f"the server exited:\n{runner.communicate()[0]}"
            assert time.monotonic() < deadline, f"health stayed {seen}"
            time.sleep(0.2)
        report(request, f"SERVING {time.monotonic() - started:.1f} s after buildah run")
        pid = server_pid(runner)
        assert uids(pid) == [10001] * 4, "the server must run as the image's non-root user"

        loc = f"loc-image-{uuid.uuid4().hex[:8]}"
        check = {"location_id": loc, "contact_id": "c1", "channel": "CHANNEL_SMS"}
        assert grpcurl(port, "CheckSend", check).get("allowed") is True
        grpcurl(
            port,
            "SetDnd",
            {
                "location_id": loc,
                "contact_id": "c1",
                "action": "DND_ACTION_ENABLE",
                "direction": "DIRECTION_OUTBOUND",
                "scope": {"channel": "CHANNEL_SMS"},
                "source": "SOURCE_USER",
            },
        )
        denied = grpcurl(port, "CheckSend", check)
        assert not denied.get("allowed"), denied

        os.kill(pid, signal.SIGTERM)  # what a container runtime sends (STOPSIGNAL)
        output, _ = runner.communicate(timeout=30)
        assert runner.returncode == 0, output
        events = [json.loads(line)["event"] for line in output.splitlines() if line.startswith("{")]
        assert "database_ready" in events and events[-1] == "server_stopped", events
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.communicate()
