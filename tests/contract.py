"""docs/CONTRACT.md read as data: the tests pin the code to the page, never to a hand-kept copy of it."""

from __future__ import annotations

import re
from pathlib import Path

CONTRACT_MD = Path(__file__).resolve().parent.parent / "docs" / "CONTRACT.md"


def _table(heading: str) -> list[list[str]]:
    """The rows (cells stripped of backticks) of the first table under the ``## heading`` that starts so."""
    text = CONTRACT_MD.read_text(encoding="utf-8")
    start = next(m.end() for m in re.finditer(r"^## (.*)$", text, re.M) if m.group(1).startswith(heading))
    rows: list[list[str]] = []
    for line in text[start:].splitlines():
        if line.startswith("## "):
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
