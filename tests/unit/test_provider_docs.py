"""docs/providers.md lists the provider code tables exactly as the domain holds them: the part
between its two "generated" lines is rendered from ``provider_events.PROVIDER_TABLES`` and
must be what the page shows (regenerate with ``.venv/bin/python -m tests.unit.test_provider_docs``).
Pure: no server."""

from __future__ import annotations

import sys

from dnd_server.domain.provider_events import PROVIDER_TABLES, CodeEntry, ProviderTable

from tests.doc_examples import REPO

PAGE = REPO / "docs" / "providers.md"
BEGIN = "[//]: # (generated from the tables: begin)"
END = "[//]: # (generated from the tables: end)"


def _does(entry: CodeEntry) -> str:
    if entry.reason is None:
        return "nothing"
    verb = "lifts" if entry.clears else "sets"
    return f"{verb} `{entry.reason.value}` as {entry.source.value}"


def _table(table: ProviderTable) -> list[str]:
    aliases = ", ".join(f"`{a}`" for a in table.aliases)
    lines = [
        f"### {table.title}",
        "",
        f"Provider `{table.provider}`{f' (also {aliases})' if aliases else ''}, "
        f"channel {table.channel.value}, codes from <{table.doc}>.",
        "",
        "| Code | The provider's name | Does | Why / source |",
        "|---|---|---|---|",
    ]
    for entry in table.entries:
        why = entry.note
        if entry.doc:
            why = f"{why}; <{entry.doc}>" if why else f"<{entry.doc}>"
        lines.append(f"| `{entry.code}` | {entry.meaning} | {_does(entry)} | {why} |")
    return lines


def render() -> str:
    lines = [BEGIN, ""]
    for table in PROVIDER_TABLES:
        lines += [*_table(table), ""]
    lines.append(END)
    return "\n".join(lines)


def _shown(text: str) -> str:
    start, end = text.index(BEGIN), text.index(END) + len(END)
    return text[start:end]


def test_the_page_shows_the_tables() -> None:
    shown = _shown(PAGE.read_text(encoding="utf-8"))
    assert shown == render(), (
        "docs/providers.md differs from the tables: regenerate it with "
        ".venv/bin/python -m tests.unit.test_provider_docs"
    )


def test_every_code_is_on_the_page() -> None:
    shown = _shown(PAGE.read_text(encoding="utf-8"))
    for table in PROVIDER_TABLES:
        for entry in table.entries:
            assert f"| `{entry.code}` | {entry.meaning} |" in shown, (table.provider, entry.code)


if __name__ == "__main__":
    text = PAGE.read_text(encoding="utf-8")
    PAGE.write_text(text.replace(_shown(text), render()), encoding="utf-8")
    sys.exit(0)
