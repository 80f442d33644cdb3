"""``--format markdown``: a report fit for a pull-request comment or a model card section.

Per checkpoint: a one-line description, a findings table (root causes, worst first) with the fix, and the
evidence keys folded in a ``<details>`` block; ``--verbose`` adds the raw diff. Tables via tabulate.
"""

from __future__ import annotations

from tabulate import tabulate

from ckptlint.findings import Finding
from ckptlint.keygroups import fold_numbers
from ckptlint.report.humanize import counted, human_bytes, human_count
from ckptlint.results import Diff, FileReport, Report, Summary

_ICON = {"error": "🔴 error", "warning": "🟡 warning", "info": "🔵 info"}
_MAX_KEYS = 20


def cell(text: str) -> str:
    """Make ``text`` safe inside a GitHub table cell (pipes, newlines, HTML brackets)."""
    return (
        text.replace("\\", "\\\\")
        .replace("|", "\\|")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("\r", "")
        .replace("\n", "<br>")
    )


def _code(text: str) -> str:
    tick = "``" if "`" in text else "`"
    pad = " " if tick == "``" else ""
    return f"{tick}{pad}{text}{pad}{tick}"


def _describe(f: FileReport) -> str:
    bits = [f"`{f.format or '?'}`", f"layout `{f.layout}`"]
    if f.groups:
        bits.append("groups " + ", ".join(f"`{g}`" for g in f.groups))
    bits.append(f"{human_count(f.num_params)} params ({f.num_tensors} tensors")
    bits[-1] += f", {human_bytes(f.num_bytes)})" if f.num_bytes else ")"
    if f.dtypes:
        bits.append("/".join(f"`{d}`" for d in sorted(f.dtypes, key=lambda d: -f.dtypes[d])))
    line = " · ".join(bits)
    if f.arch:
        variant = f" variant `{f.arch.variant}`" if f.arch.variant else ""
        evidence = f" (inferred from {_code(f.arch.inferred_from)})" if f.arch.inferred_from else ""
        how = {
            "flag": "given with --arch",
            "inferred": "detected from the keys",
            "declared": f"declared by {f.arch.declared_by}",
            "model": "live model",
            "spec": "spec file",
        }
        line += f"  \nexpected: `{f.arch.name}`{variant} — {how[f.arch.source]}{evidence}"
    return line


def _findings_table(findings: list[Finding]) -> str:
    rows = []
    for fd in sorted(findings, key=lambda x: -x.severity.rank):
        what = cell(fd.message)
        if fd.cause:
            what += "<br>*cause:* " + cell(fd.cause)
        rows.append([f"**{fd.code}**", _ICON[fd.severity.value], what, cell(fd.fix) if fd.fix else ""])
    return tabulate(rows, headers=["code", "severity", "finding", "fix"], tablefmt="github")


def _keys_block(findings: list[Finding], verbose: bool) -> list[str]:
    out: list[str] = []
    for fd in findings:
        if not fd.keys:
            continue
        keys = fd.keys if verbose else fold_numbers(fd.keys)
        shown = keys if verbose else keys[:_MAX_KEYS]
        more = "" if len(shown) == len(keys) else f"\n… and {len(keys) - len(shown)} more"
        out += [
            f"<details><summary>{fd.code}: {len(fd.keys)} key{'s' if len(fd.keys) != 1 else ''}</summary>",
            "",
            "```",
            *shown,
            "```" + more,
            "",
            "</details>",
            "",
        ]
    return out


def _diff_block(diff: Diff) -> list[str]:
    rows: list[list[str]] = []
    rows += [["missing", f"`{k}`", ""] for k in diff.missing]
    rows += [["unexpected", f"`{k}`", ""] for k in diff.unexpected]
    rows += [["shape", f"`{m.key}`", f"expected {m.expected}, got {m.actual}"] for m in diff.shape_mismatch]
    rows += [["dtype", f"`{m.key}`", f"expected {m.expected}, got {m.actual}"] for m in diff.dtype_mismatch]
    if not rows:
        return []
    table = tabulate(rows, headers=["raw diff", "key", "detail"], tablefmt="github")
    return ["<details><summary>raw diff</summary>", "", table, "", "</details>", ""]


def _verdict(report: Report, fail_on: str) -> str:
    s = report.summary
    if any(f.error for f in report.files):
        return "❌ **unreadable input** (exit 2)"
    worst = report.worst()
    threshold = {"info": 0, "warning": 1, "error": 2, "never": 99}[fail_on]
    if worst is not None and worst.rank >= threshold:
        return f"❌ **failed** (`--fail-on {fail_on}`): {_counts(s)}"
    return f"✅ **passed** (`--fail-on {fail_on}`): {_counts(s)}"


def _counts(s: Summary) -> str:
    return f"{counted(s.errors, 'error')}, {counted(s.warnings, 'warning')}, {counted(s.infos, 'info')}"


def render(report: Report, *, verbose: bool = False, fail_on: str = "error") -> str:
    """Markdown: heading, verdict, then one section per checkpoint."""
    s = report.summary
    out = [
        "## ckptlint report",
        "",
        f"{_verdict(report, fail_on)} · {s.files} checkpoint{'s' if s.files != 1 else ''}",
        "",
    ]
    for f in report.files:
        out += [f"### {_code(f.path)}", ""]
        if f.error:
            out += [f"**CK001 unreadable:** {cell(f.error)}", ""]
            continue
        out += [_describe(f), ""]
        if f.findings:
            out += [_findings_table(f.findings), ""]
            out += _keys_block(f.findings, verbose)
        else:
            out += ["No findings.", ""]
        if verbose and f.diff is not None:
            out += _diff_block(f.diff)
    out.append(f"<sub>ckptlint {report.tool.version}</sub>")
    return "\n".join(out) + "\n"
