"""``ckptlint rules`` and ``ckptlint archs`` tables."""

from __future__ import annotations

import json


def render_rules(fmt: str) -> str:
    """Every rule: code, default severity, summary (text table or JSON list)."""
    from ckptlint.rules import all_rules

    rows = [{"code": r.code, "severity": r.severity.value, "summary": r.summary} for r in all_rules()]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    from tabulate import tabulate

    return tabulate([list(r.values()) for r in rows], headers=["code", "severity", "summary"]) + "\n"


def render_archs(fmt: str) -> str:
    """Every architecture name, its variants and where it comes from."""
    from ckptlint.archs import list_archs

    rows = [
        {"name": a.name, "variants": list(a.variants), "description": a.description, "source": a.source}
        for a in list_archs()
    ]
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    from tabulate import tabulate

    table = [[r["name"], ", ".join(r["variants"]), r["description"], r["source"]] for r in rows]
    return (
        tabulate(
            table, headers=["name", "variants", "description", "source"], maxcolwidths=[None, 40, 40, 40]
        )
        + "\n"
    )
