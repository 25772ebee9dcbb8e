"""deploy/monitoring/: the Prometheus alert rules pass ``promtool check rules`` and their unit
tests (``promtool test rules``), each alert has a runbook section in docs/operations.md, the
Grafana dashboard is well formed, and every metric and label the rules and the dashboard name
is served by the ``/metrics`` of a real running server (the watch cut-off counter counting a
real slow subscriber).

promtool comes from Debian's prometheus package: when it is not on PATH the package is fetched
with ``apt-get download`` and only promtool is unpacked (installing the package would start a
Prometheus server), cached under /var/tmp. The promtool tests are skipped, saying why, only
where that cannot be done.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from dnd.v1 import dnd_pb2 as pb
from dnd.v1 import dnd_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from tests.support import ServerProcess, new_id

ROOT = Path(__file__).resolve().parent.parent
MONITORING = ROOT / "deploy" / "monitoring"
RULES = MONITORING / "alerts.rules.yaml"
RULE_TESTS = MONITORING / "alerts.test.yaml"
DASHBOARD = MONITORING / "dashboard.json"
OPERATIONS = ROOT / "docs" / "operations.md"
TOOLS = Path("/var/tmp/dnd-service-tools")
# Labels Prometheus adds to every scraped series (target labels), not the server.
TARGET_LABELS = {"job", "instance", "pod", "namespace"}
SEVERITIES = {"warning", "critical"}
WATCH_BUFFER = 5
ACTIONS = (pb.DND_ACTION_ENABLE, pb.DND_ACTION_DISABLE)


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


@pytest.fixture(scope="module")
def served(fresh_database: Any) -> Iterator[tuple[ServerProcess, int]]:
    process = ServerProcess(
        fresh_database(),
        {"DND_METRICS_ADDR": "127.0.0.1:0", "DND_WATCH_BUFFER_EVENTS": str(WATCH_BUFFER)},
    ).start()
    try:
        port = next(
            int(entry["port"])
            for entry in process.logs
            if entry.get("event") == "metrics_listening"
        )
        yield process, port
    finally:
        process.stop()


def scrape(port: int) -> dict[str, list[dict[str, str]]]:
    """Every sample name in /metrics with the label sets it has."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, list[dict[str, str]]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples.setdefault(sample.name, []).append(dict(sample.labels))
    return samples


def value(port: int, name: str, **labels: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_every_metric_and_label_they_name_is_served(served: tuple[ServerProcess, int]) -> None:
    process, port = served
    with grpc.insecure_channel(process.addr) as channel:
        stub = dnd_pb2_grpc.DndServiceStub(channel)
        stub.CheckSend(
            pb.CheckSendRequest(location_id=new_id("loc"), contact_id="c1", channel=pb.CHANNEL_SMS),
            timeout=10,
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.CheckSend(pb.CheckSendRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    samples = scrape(port)
    for expr in expressions():
        names = metric_names(expr)
        assert names, expr
        missing = names - set(samples)
        assert not missing, f"not in /metrics: {sorted(missing)} (named by: {expr.strip()})"
        served_labels = {label for name in names for labels in samples[name] for label in labels}
        unknown = label_names(expr) - served_labels - TARGET_LABELS
        assert not unknown, f"labels {sorted(unknown)} are on none of {sorted(names)}"
    codes = {labels["code"] for labels in samples["dnd_rpc_requests_total"]}
    assert {"OK", "INVALID_ARGUMENT"} <= codes, "the rules match codes by their names"
    # increase() and rate() of the rules need a counter; the delay is a level.
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        types = {f.name: f.type for f in text_string_to_metric_families(response.read().decode())}
    assert types["dnd_watch_streams_cut_off"] == "counter"
    assert types["dnd_feed_delay_seconds"] == "gauge"


def test_watch_cut_off_is_counted(served: tuple[ServerProcess, int]) -> None:
    """A subscriber that stops reading while changes pile up past DND_WATCH_BUFFER_EVENTS is
    cut off (RESOURCE_EXHAUSTED, SUBSCRIBER_TOO_SLOW): dnd_watch_streams_cut_off_total counts it
    once, and a stream that keeps up is not counted."""
    process, port = served
    before = value(port, "dnd_watch_streams_cut_off_total")
    loc = new_id("loc-cut")
    # A small receive window and no window growth: the server cannot send ahead.
    slow = grpc.insecure_channel(
        process.addr,
        options=[
            ("grpc.http2.lookahead_bytes", 1024),
            ("grpc.http2.bdp_probe", 0),
            ("grpc.max_receive_message_length", 4096),
        ],
    )
    keeping_up = grpc.insecure_channel(process.addr)
    try:
        request = pb.WatchChangesRequest(location_ids=[loc])
        stream = dnd_pb2_grpc.DndServiceStub(slow).WatchChanges(request, timeout=30)
        assert next(stream).HasField("bookmark")  # open; from here on nobody reads it
        other = dnd_pb2_grpc.DndServiceStub(keeping_up).WatchChanges(
            pb.WatchChangesRequest(location_ids=[new_id("loc-quiet")]), timeout=30
        )
        assert next(other).HasField("bookmark")

        async def burst() -> None:
            async with grpc.aio.insecure_channel(process.addr) as channel:
                stub = dnd_pb2_grpc.DndServiceStub(channel)

                async def writer(contact: str) -> None:
                    for n in range(10):
                        await stub.SetDnd(
                            pb.SetDndRequest(
                                location_id=loc,
                                contact_id=contact,
                                action=ACTIONS[n % 2],
                                direction=pb.DIRECTION_OUTBOUND,
                                scope=pb.Scope(all_channels=True),
                                source=pb.SOURCE_USER,
                            ),
                            timeout=30,
                        )

                await asyncio.gather(*(writer(f"c{i}") for i in range(20)))

        asyncio.run(burst())
        with pytest.raises(grpc.RpcError) as cut:
            for _message in stream:
                pass
        assert cut.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, cut.value.details()
        deadline = time.monotonic() + 10
        while value(port, "dnd_watch_streams_cut_off_total") == before:
            assert time.monotonic() < deadline, "the cut-off was not counted"
            time.sleep(0.05)
        assert value(port, "dnd_watch_streams_cut_off_total") == before + 1
        other.cancel()
    finally:
        slow.close()
        keeping_up.close()
