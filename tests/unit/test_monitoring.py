"""deploy/monitoring/: the Prometheus alert rules pass ``promtool check rules`` and their unit
tests (``promtool test rules``), each alert has a runbook section in docs/operations.md and the
Grafana dashboard is well formed. tests/integration/test_monitoring_served.py checks that a
real server serves every metric and label they name.

promtool comes from Debian's prometheus package: when it is not on PATH the package is fetched
with ``apt-get download`` and only promtool is unpacked (installing the package would start a
Prometheus server), cached under /var/tmp. The promtool tests are skipped, saying why, only
where that cannot be done.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "alerts.rules.yaml"
RULE_TESTS = MONITORING / "alerts.test.yaml"
DASHBOARD = MONITORING / "dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
TOOLS = Path("/var/tmp/dnd-service-tools")
# Labels Prometheus adds to every scraped series (target labels), not the server.
TARGET_LABELS = {"job", "instance", "pod", "namespace"}
SEVERITIES = {"warning", "critical"}


# ---- promtool ---------------------------------------------------------------------------------


def fetch_promtool() -> str:
    """promtool from PATH, else from the cached or freshly downloaded prometheus package."""
    found = shutil.which("promtool")
    if found:
        return found
    cached = TOOLS / "usr" / "bin" / "promtool"
    if cached.is_file():
        return str(cached)
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        pytest.skip("promtool is not installed and there is no apt-get to fetch prometheus")
    with tempfile.TemporaryDirectory(prefix="dnd-promtool-") as folder:
        Path(folder).chmod(0o777)  # apt-get download hands the file to its _apt user
        download = ["apt-get", "download", "-q", "prometheus"]
        got = subprocess.run(download, cwd=folder, capture_output=True, text=True, timeout=600)
        if got.returncode != 0:
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, timeout=600)
            got = subprocess.run(download, cwd=folder, capture_output=True, text=True, timeout=600)
        packages = sorted(Path(folder).glob("prometheus_*.deb"))
        if got.returncode != 0 or not packages:
            pytest.skip(f"Debian's prometheus package cannot be fetched: {got.stderr[-300:]}")
        TOOLS.mkdir(parents=True, exist_ok=True)
        unpacked = Path(tempfile.mkdtemp(prefix="promtool-", dir=TOOLS))
        try:
            subprocess.run(["dpkg-deb", "-x", str(packages[-1]), str(unpacked)], check=True)
            (unpacked / "usr" / "bin" / "promtool").parent.mkdir(parents=True, exist_ok=True)
            cached.parent.mkdir(parents=True, exist_ok=True)
            (unpacked / "usr" / "bin" / "promtool").replace(cached)
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)
    return str(cached)


@pytest.fixture(scope="module")
def promtool() -> str:
    return fetch_promtool()


def test_rules_pass_promtool_check(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "rules", str(RULES)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert f"SUCCESS: {len(alerts())} rules found" in output, output


def test_rules_pass_their_unit_tests(promtool: str) -> None:
    """Each alert fires on the situation it is written for, not on a healthy fleet."""
    result = subprocess.run(
        [promtool, "test", "rules", RULE_TESTS.name],
        cwd=MONITORING,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_refuses_a_broken_rule(promtool: str, tmp_path: Path) -> None:
    broken = tmp_path / "broken.rules.yaml"
    broken.write_text(
        RULES.read_text(encoding="utf-8").replace("rate(dnd_rpc_requests_total[5m]))", "rate(", 1),
        encoding="utf-8",
    )
    result = subprocess.run(
        [promtool, "check", "rules", str(broken)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


# ---- the rules and their runbook --------------------------------------------------------------


def alerts() -> list[dict[str, Any]]:
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def anchors(markdown: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation dropped, spaces to dashes."""
    found = set()
    for heading in re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def test_alerts_cover_what_operators_watch() -> None:
    exprs = {rule["alert"]: " ".join(rule["expr"].split()) for rule in alerts()}
    wanted = {
        "error rate by code": (
            r"(?=.*without \(instance, pod, method\) )(?=.*dnd_rpc_requests_total\{code=~)"
        ),
        "UNAVAILABLE spikes": r'code="UNAVAILABLE"',
        "feed lag": r"dnd_feed_delay_seconds",
        "watch cut-offs": r"dnd_watch_streams_cut_off_total",
        "cache hit rate": r"dnd_cache_hits.*dnd_cache_misses",
        "database pool exhaustion": r"dnd_db_pool_idle_connections.*dnd_db_pool_max_connections",
    }
    for topic, pattern in wanted.items():
        assert any(re.search(pattern, expr) for expr in exprs.values()), topic


def test_every_alert_has_a_severity_a_summary_and_a_runbook() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    headings = anchors(text)
    names = [rule["alert"] for rule in alerts()]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in alerts():
        name = rule["alert"]
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"], name
        page, _, anchor = rule["annotations"]["runbook"].partition("#")
        assert page == "docs/operations.md", name
        assert anchor == name.lower() and anchor in headings, f"{name}: no '## {name}' section"
        section = text.split(f"### {name}", 1)[1].split("\n#", 1)[0]
        assert len(section.split()) >= 20, f"{name}: the runbook section says too little"


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    tests = yaml.safe_load(RULE_TESTS.read_text(encoding="utf-8"))["tests"]
    fired = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    silent = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if not case.get("exp_alerts")
    }
    names = {rule["alert"] for rule in alerts()}
    assert names <= fired, f"no test fires {sorted(names - fired)}"
    assert names <= silent, f"no test keeps {sorted(names - silent)} silent"


# ---- the dashboard ----------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def panels() -> list[dict[str, Any]]:
    return [panel for panel in dashboard()["panels"] if panel["type"] != "row"]


def test_dashboard_is_well_formed() -> None:
    board = dashboard()
    assert board["uid"] and board["title"] and board["schemaVersion"] >= 36
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels():
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"] and target["refId"], panel["title"]
            assert "$job" in target["expr"], f"{panel['title']}: filter by the job variable"
    titles = " ".join(panel["title"].lower() for panel in panels())
    for topic in ("calls", "error", "latency", "cache", "feed", "watch", "pool"):
        assert topic in titles, topic


# ---- the metrics they name exist --------------------------------------------------------------

_CALLED = {
    # PromQL functions, aggregations and keywords: never metric names.
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    found = set()
    for match in re.finditer(r"[a-zA-Z_:][a-zA-Z0-9_:]*", text):
        word = match.group()
        if word in _CALLED or text[match.end() :].lstrip().startswith("("):
            continue
        found.add(word)
    return found


def label_names(expr: str) -> set[str]:
    """The labels an expression groups by, matches on or filters with."""
    found = set()
    for group in re.findall(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)", expr):
        found |= {name.strip() for name in group.split(",") if name.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        found |= set(re.findall(r"([a-zA-Z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return found


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, method) (rate(dnd_rpc_duration_seconds_bucket"
        '{job=~"$job", code="OK"}[$__rate_interval]))) / ignoring (code) group_left '
        "sum(dnd_cache_hits) and dnd_feed_listening == 0"
    )
    assert metric_names(expr) == {
        "dnd_rpc_duration_seconds_bucket",
        "dnd_cache_hits",
        "dnd_feed_listening",
    }
    assert label_names(expr) == {"le", "method", "code", "job"}


def expressions() -> list[str]:
    found = [rule["expr"] for rule in alerts()]
    found += [target["expr"] for panel in panels() for target in panel["targets"]]
    for variable in dashboard()["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            found += re.findall(r"label_values\((.+),\s*\w+\)", query["query"])
    return found
