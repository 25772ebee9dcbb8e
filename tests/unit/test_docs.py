"""The documentation stays true without a server: every fenced block of every page is an
example something runs or checks (the server ones run in tests/e2e/test_doc_examples.py), the
examples that need no server pass their checks, the README stays short, and the facts the
pages state are the code's: the configuration table against ``Config``, the clear-policy,
keyword and carrier-code tables against the domain, every RPC of the contract shown, every
module in the architecture page, every link leading somewhere."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest
from dnd.v1 import dnd_pb2 as pb

from tests import doc_examples
from tests.doc_examples import REPO, Block, Example

PAGES = doc_examples.pages()
PAGE_IDS = [doc_examples.page_id(p) for p in PAGES]
README = REPO / "README.md"
API = REPO / "docs" / "api.md"
CONFIGURATION = REPO / "docs" / "configuration.md"
ARCHITECTURE = REPO / "docs" / "architecture.md"

# The RPCs the README shows one call of; docs/api.md shows every RPC.
README_RPCS = (
    "SetDnd",
    "CheckSend",
    "BatchCheckSend",
    "GetStatus",
    "ProcessInboundMessage",
    "ReportSmsDeliveryFailure",
    "ReportEmailEvent",
    "ListHistory",
    "UpdateKeywordSettings",
    "WatchChanges",
)


def grpcurl_methods(page: Path) -> set[str]:
    found = set()
    for example in doc_examples.read_page(page).examples:
        if example.kind == "grpcurl":
            found.add(example.commands[0][-1].rpartition("/")[2])
    return found


# ---- every block is run or checked ------------------------------------------------------------


def test_the_pages() -> None:
    assert {"README.md", "CONTRIBUTING.md"} <= set(PAGE_IDS)
    assert {
        f"docs/{name}.md"
        for name in (
            "api",
            "client",
            "configuration",
            "security",
            "operations",
            "scaling",
            "architecture",
            "consent",
            "providers",
        )
    } <= set(PAGE_IDS)


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_every_block_is_run_or_checked(page: Path) -> None:
    read = doc_examples.read_page(page)
    assert not read.unclaimed, "blocks no test runs or checks: " + ", ".join(
        f"{b.where} (```{b.lang})" for b in read.unclaimed
    )
    for example in read.examples:
        if example.kind == "grpcurl":
            assert example.expected is not None, f"{example.block.where}: shows no answer"


def test_a_block_nobody_runs_is_found(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Run it:\n\n```sh\ncurl http://localhost\n```\n\n"
        "```text\noutput of nothing\n```\n\n"
        "```sh\ngrpcurl -plaintext 127.0.0.1:50051 list\n```\n\n"
        "```text\ndnd.v1.DndService\n```\n\n"
        "  ```bash\n  make run\n  ```\n",
        encoding="utf-8",
    )
    read = doc_examples.read_page(page)
    assert [(b.line, b.lang) for b in read.unclaimed] == [(3, "sh"), (7, "text"), (19, "bash")]
    [grpcurl] = read.examples
    assert grpcurl.kind == "grpcurl" and grpcurl.expected is not None
    assert grpcurl.expected.body == "dnd.v1.DndService\n"


def test_expected_output_matching() -> None:
    expected = "changed; cursor <cursor>\nSMS  MANUAL  2026-11-25 12:00:00Z  -"
    assert doc_examples.output_matches(
        expected, "changed; cursor AX9z\nSMS  MANUAL  2027-01-02 03:04:05Z  -\n"
    )
    assert not doc_examples.output_matches(expected, "changed; cursor AX9z\nSMS  STOP  x  -")
    assert not doc_examples.output_matches(expected, "changed; cursor AX9z")
    assert doc_examples.is_subset({"a": {"b": "since <time>"}}, {"a": {"b": "since 1", "c": 2}})
    assert not doc_examples.is_subset({"a": ["x"]}, {"a": ["x", "y"]})
    assert not doc_examples.is_subset({"a": "since 2026-11-25T12:00:00Z"}, {"a": "since then"})


# ---- examples that need no server -------------------------------------------------------------

CHECKS = {
    "make": doc_examples.check_make,
    "tokens": doc_examples.check_tokens,
    "deploy": doc_examples.check_deploy,
}
STATIC = [
    example
    for page in PAGES
    for example in doc_examples.read_page(page).examples
    if example.kind in CHECKS
]


@pytest.mark.parametrize("example", STATIC, ids=[example.block.where for example in STATIC])
def test_static_example(example: Example) -> None:
    CHECKS[example.kind](example)


def test_static_examples_exist() -> None:
    assert {example.kind for example in STATIC} == set(CHECKS)


def synthetic(kind: str, body: str, lang: str = "sh") -> Example:
    block = Block(page=README, line=1, lang=lang, body=body, marker="")
    return Example(kind, block, doc_examples.commands(body) if lang == "sh" else [])


@pytest.mark.parametrize(
    ("kind", "body", "lang"),
    [
        ("make", "make no-such-target\n", "sh"),
        ("deploy", "kubectl apply -k deploy/no-such-folder/\n", "sh"),
        ("deploy", "kubectl create secret generic dnd-database --from-literal=uri=x\n", "sh"),
        ("deploy", "kubectl create secret generic dnd-nothing --from-literal=url=x\n", "sh"),
        ("deploy", "docker build --build-arg NO_SUCH_ARG=1 -t x .\n", "sh"),
        ("deploy", "kubectl delete -k deploy/\n", "sh"),
        (
            "tokens",
            '{"tokens": [{"name": "a", "sha256": "<hash>", "locations": "*", '
            '"scopes": ["everything"]}]}',
            "json",
        ),
    ],
    ids=["make", "kustomize", "secret-key", "secret-name", "build-arg", "unknown", "tokens"],
)
def test_static_checks_can_fail(kind: str, body: str, lang: str) -> None:
    with pytest.raises(Exception):  # noqa: B017 - an assertion, or the loader's own error
        CHECKS[kind](synthetic(kind, body, lang))


# ---- the README -------------------------------------------------------------------------------


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 200, f"README.md has {len(lines)} lines: move details to docs/"


def test_readme_shows_one_call_of_each_main_rpc() -> None:
    shown = grpcurl_methods(README)
    assert set(README_RPCS) <= shown, sorted(set(README_RPCS) - shown)
    kinds = {example.kind for example in doc_examples.read_page(README).examples}
    assert kinds <= {"grpcurl", "make"}, kinds


def test_api_page_calls_every_rpc() -> None:
    rpcs = {method.name for method in pb.DESCRIPTOR.services_by_name["DndService"].methods}
    missing = rpcs - grpcurl_methods(API)
    assert not missing, f"docs/api.md has no grpcurl example of {sorted(missing)}"


# ---- the configuration table ------------------------------------------------------------------


def configuration_table() -> dict[str, str]:
    """Each variable of docs/configuration.md's table, with its default column."""
    found: dict[str, str] = {}
    for line in CONFIGURATION.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`DND_"):
            continue
        for name in re.findall(r"`(DND_[A-Z0-9_]+)`", cells[0]):
            assert name not in found, f"{name} is in the table twice"
            found[name] = cells[1]
    return found


def documented_default(text: str, value: Any) -> bool:
    if text == "(unset)":
        return value == ""
    literal = re.fullmatch(r"`([^`]*)`", text)
    assert literal, f"a default is (unset) or one `value`, not {text!r}"
    shown = literal[1]
    if isinstance(value, bool):
        return shown == str(value).lower()
    if isinstance(value, int | float):
        return float(shown) == float(value)
    return shown == str(value)


def test_configuration_table_is_config() -> None:
    from dnd_server.config import Config

    table = configuration_table()
    defaults = Config()
    for item in dataclasses.fields(Config):
        name = f"DND_{item.name.upper()}"
        assert name in table, f"{name} (Config.{item.name}) is not in docs/configuration.md"
        value = getattr(defaults, item.name)
        assert documented_default(table[name], value), (
            f"{name}: docs/configuration.md says {table[name]}, Config's default is {value!r}"
        )


def test_every_documented_setting_is_read() -> None:
    """A variable of the table that nothing reads any more is a setting that does nothing."""
    sources = [
        path.read_text(encoding="utf-8")
        for folder in ("server", "client", "tests")
        for path in (REPO / folder).rglob("*.py")
        if path.name != "test_docs.py"
    ]
    unread = [
        name for name in configuration_table() if not any(f'"{name}"' in text for text in sources)
    ]
    assert not unread, f"documented but read nowhere: {unread}"


# ---- the domain tables ------------------------------------------------------------------------


def test_clear_policy_table_is_the_domain_s() -> None:
    from dnd_server.domain.model import Reason, Source
    from dnd_server.domain.rules import CLEAR_POLICY

    text = API.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (`[A-Z_*]+`(?:, `[A-Z_*]+`)*) \| (.+?) \|$", text, flags=re.MULTILINE)
    assert rows, "docs/api.md has no clear-policy table"
    seen: dict[Reason, set[Source]] = {}
    for names, who in rows:
        allowed = who.split("never")[0]
        sources = {s for s in Source if re.search(rf"\b{s.name}\b", allowed)}
        for name in re.findall(r"`([A-Z_*]+)`", names):
            pattern = re.escape(name).replace(r"\*", ".*")
            reasons = [r for r in Reason if re.fullmatch(pattern, r.name)]
            assert reasons, f"docs/api.md names no reason {name}"
            for reason in reasons:
                seen[reason] = sources
    assert set(seen) == set(CLEAR_POLICY), sorted(r.name for r in set(CLEAR_POLICY) ^ set(seen))
    for reason, sources in seen.items():
        assert sources == set(CLEAR_POLICY[reason]), (reason, sources, CLEAR_POLICY[reason])


def test_keyword_and_carrier_tables_are_the_domain_s() -> None:
    from dnd_server.domain import keywords, provider_events

    flat = " ".join(API.read_text(encoding="utf-8").split())
    opt_out = re.search(r"Opt-out: (.+?) set a permanent", flat)
    assert opt_out, "docs/api.md lists no opt-out words"
    assert set(re.findall(r"`([^`]+)`", opt_out[1])) == set(keywords.OPT_OUT_WORDS)
    for word in keywords.OPT_IN_WORDS | keywords.HELP_WORDS:
        assert f"`{word}`" in flat, word
    phrases = re.search(r"a message containing one of (.+?) \(whole words", flat)
    assert phrases, "docs/api.md lists no revocation phrases"
    assert re.findall(r"`([^`]+)`", phrases[1]) == list(keywords.REVOCATION_PHRASES)
    carrier = re.search(r"\(`ReportSmsDeliveryFailure`.+?any other code is ignored", flat)
    assert carrier, "docs/api.md has no carrier code table"
    documented: dict[str, str] = {}
    for codes, reason in re.findall(r"((?:`\d+`,? )+)→ `(\w+)`", carrier[0]):
        for code in re.findall(r"`(\d+)`", codes):
            documented[code] = reason
    assert documented == {
        code: reason.name for code, reason in provider_events.SMS_ERROR_CODES.items()
    }


# ---- links ------------------------------------------------------------------------------------


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    found = set()
    for line in page.read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^#+ (.+)$", line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading[1].strip().lower()).replace(" ", "-")
            found.add(slug)
    return found


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_links_lead_somewhere(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.DOTALL)
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.exists(), f"{doc_examples.page_id(page)} links to {target}: no such file"
        if anchor and linked.suffix == ".md":
            assert anchor in anchors(linked), f"{doc_examples.page_id(page)}: no #{anchor}"


# ---- the architecture page --------------------------------------------------------------------


def modules() -> list[str]:
    return sorted(
        str(path.relative_to(REPO))
        for folder in ("server/dnd_server", "client/dnd_client")
        for path in (REPO / folder).rglob("*.py")
    )


def test_architecture_names_every_module() -> None:
    text = ARCHITECTURE.read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:server/dnd_server|client/dnd_client)/[\w/]+\.py)`", text))
    missing = [module for module in modules() if module not in named]
    assert not missing, f"docs/architecture.md does not name {missing}"


@pytest.mark.parametrize("page", PAGES, ids=PAGE_IDS)
def test_named_paths_exist(page: Path) -> None:
    """Every repository path a page names (`server/...`, `tests/...`, ...) is there: a module
    or test moved or removed takes its mentions with it. (Benchmark results are git-ignored:
    their names are quoted, not linked.)"""
    text = page.read_text(encoding="utf-8")
    folders = "server|client|protos|generated|tests|deploy|docs|bench"
    named = set(re.findall(rf"`((?:{folders})/[\w./-]+)`", text))
    gone = sorted(
        path
        for path in named
        if not (REPO / path).exists() and not path.startswith("bench/results/")
    )
    assert not gone, f"{doc_examples.page_id(page)} names what does not exist: {gone}"
