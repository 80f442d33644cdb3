"""docs/CONTRACT.md read as data: the tests pin the code to the page, never to a hand-kept copy of it."""

from __future__ import annotations

import re
from pathlib import Path

CONTRACT_MD = Path(__file__).resolve().parent.parent / "docs" / "CONTRACT.md"


def _table(heading: str, level: int = 2) -> list[list[str]]:
    """The rows (cells stripped of backticks) of the first table under the ``## heading`` that starts so."""
    text = CONTRACT_MD.read_text(encoding="utf-8")
    marks = "#" * level
    start = next(
        m.end() for m in re.finditer(rf"^{marks} (.*)$", text, re.M) if m.group(1).startswith(heading)
    )
    rows: list[list[str]] = []
    for line in text[start:].splitlines():
        if line.startswith("## ") or (level > 2 and line.startswith(marks + " ")):
            break
        if line.startswith("|") and not set(line) <= set("|-: "):
            rows.append([c.strip().strip("`") for c in line.strip("|").split("|")])
    return rows[1:]  # without the header row


def rule_severities() -> dict[str, str]:
    """Every fixed rule code and its default severity."""
    return {row[0]: row[1] for row in _table("Rule codes")}


def arch_names() -> list[str]:
    """The architecture names ``ckptlint archs`` must list."""
    return [row[0] for row in _table("Required architecture names")]


def format_names() -> list[str]:
    """Every ``format`` name a FileReport may carry."""
    names: list[str] = []
    for row in _table("Format names"):
        names += [n.strip().strip("`") for n in row[0].split("/")]
    return names


def edit_kinds() -> dict[str, list[str]]:
    """Every edit kind a finding may carry, with its fields (the first word of each comma-separated cell part)."""
    return {
        row[0]: [re.search(r"[a-z_]+", part).group() for part in row[1].split(",")]  # type: ignore[union-attr]
        for row in _table("Edits", level=3)
    }
