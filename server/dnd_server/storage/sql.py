"""The service's SQL, loaded once from ``queries.sql`` by block name."""

from __future__ import annotations

import re
from importlib import resources

_BLOCK = re.compile(r"^-- ([a-z_]+) --$", re.MULTILINE)


def load_queries(text: str) -> dict[str, str]:
    """Split ``-- name --`` headed blocks into a name → statement dict."""
    parts = _BLOCK.split(text)
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


QUERIES: dict[str, str] = load_queries(
    resources.files("dnd_server.storage").joinpath("queries.sql").read_text(encoding="utf-8")
)
