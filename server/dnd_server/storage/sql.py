"""The service's SQL, loaded once from ``queries.sql`` by block name."""

from __future__ import annotations

import re
from importlib import resources

_BLOCK = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)
# Comment lines opening a block: for the readers of queries.sql, not sent to the database.
_LEADING_COMMENTS = re.compile(r"\A(?:[ \t]*--[^\n]*\n\s*)+")


def load_queries(text: str) -> dict[str, str]:
    """Split ``-- name --`` headed blocks into a name → statement dict. Each statement starts
    with its SQL (its opening comment lines dropped): its first word names its trace span."""
    parts = _BLOCK.split(text)
    return {
        name: _LEADING_COMMENTS.sub("", body.strip())
        for name, body in zip(parts[1::2], parts[2::2], strict=True)
    }


QUERIES: dict[str, str] = load_queries(
    resources.files("dnd_server.storage").joinpath("queries.sql").read_text(encoding="utf-8")
)
