"""``ckptlint convert --list``: every pair of architectures a table converts, each way, and what the target needs."""

from __future__ import annotations

from ckptlint.archs.registry import declaration
from ckptlint.convert.tables import all_directions


def pairs() -> list[dict[str, object]]:
    """One entry per table and direction: from, to, table, title, and why not when it cannot be used."""
    out: list[dict[str, object]] = []
    for d in all_directions():
        decl = declaration(d.dst)
        out.append(
            {
                "from": d.src,
                "to": d.dst,
                "table": d.conv.name,
                "reverse": d.reverse,
                "title": d.conv.title,
                "declares": [f.name for f in decl.files] if decl else [],
                "supported": d.problem is None,
                "why_not": d.problem,
            }
        )
    return out


def render(fmt: str = "text") -> str:
    """The list as text (a table) or JSON."""
    import json

    rows = pairs()
    if fmt == "json":
        return json.dumps(rows, indent=2) + "\n"
    from tabulate import tabulate

    table = [
        [
            r["from"],
            r["to"],
            f"{r['table']}{' (back)' if r['reverse'] else ''}",
            ", ".join(r["declares"]) or "-",
        ]  # type: ignore[arg-type]
        for r in rows
        if r["supported"]
    ]
    text = tabulate(table, headers=["from", "to", "table", "OUT folder declares"], tablefmt="simple") + "\n"
    missing = [r for r in rows if not r["supported"]]
    if missing:
        text += "\nnot converted:\n"
        text += "".join(f"  {r['from']} → {r['to']}: {r['why_not']}\n" for r in missing)
    return text
