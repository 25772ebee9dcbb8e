"""Every server example of the documentation run for real: the grpcurl, dndctl and Python
examples of the README and of each docs/*.md page, in the page's order, against a real server
on a fresh database (one per page), each answer checked against what the page shows after it.

Which block is which example, and the checks of the examples that need no server, are in
tests/doc_examples.py and tests/unit/test_docs.py."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests import doc_examples
from tests.support import ServerProcess

SERVER_PAGES = [page for page in doc_examples.pages() if doc_examples.read_page(page).needs_server]


@pytest.mark.parametrize("page", SERVER_PAGES, ids=[doc_examples.page_id(p) for p in SERVER_PAGES])
def test_page_examples_run(page: Path, fresh_database: Callable[[], str], tmp_path: Path) -> None:
    read = doc_examples.read_page(page)
    assert not read.unclaimed, [b.where for b in read.unclaimed]
    process = ServerProcess(fresh_database()).start()
    try:
        ran = doc_examples.run_page(read, process.addr, tmp_path)
    finally:
        process.stop()
    wanted = {
        kind: sum(1 for e in read.examples if e.kind == kind)
        for kind in ("grpcurl", "dndctl", "python")
    }
    assert ran.counts == {kind: n for kind, n in wanted.items() if n}


def test_the_pages_with_server_examples() -> None:
    """The pages whose examples need a server: a page losing them all would silently stop
    being run here."""
    assert {doc_examples.page_id(p) for p in SERVER_PAGES} == {
        "README.md",
        "docs/api.md",
        "docs/client.md",
        "docs/consent.md",
    }
