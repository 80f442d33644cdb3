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


def arch_rows() -> list[dict[str, object]]:
    """name, title, description, source, default variant and every named variant of each architecture."""
    from ckptlint.archs.spec import arch_names, load_arch, variant_names

    rows: list[dict[str, object]] = []
    for name in arch_names():
        spec = load_arch(name)
        rows.append(
            {
                "name": spec.name,
                "title": spec.title,
                "description": spec.description,
                "source": spec.source,
                "framework": spec.framework,
                "default_variant": spec.default_variant,
                "variants": variant_names(spec),
            }
        )
    return rows


def _variants_cell(row: dict[str, object], shown: int = 4) -> str:
    names = list(row["variants"])  # type: ignore[call-overload]
    if not names:
        return f"{row['default_variant']} (inferred from shapes)"
    more = f" … (+{len(names) - shown})" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more + ", custom"


def render_archs(fmt: str) -> str:
    """Every architecture name, its variants and where it comes from (text table or JSON list)."""
    rows = arch_rows()
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    from tabulate import tabulate

    table = [[r["name"], _variants_cell(r), r["description"], r["source"]] for r in rows]
    return (
        tabulate(
            table, headers=["name", "variants", "description", "source"], maxcolwidths=[None, 36, 44, 36]
        )
        + "\n"
    )
