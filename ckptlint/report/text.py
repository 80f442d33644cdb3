"""``--format text``: the root cause first, one block per finding, then a one-line summary.

Colour only on a terminal and never with ``NO_COLOR``; ``--verbose`` adds every raw key.
"""

from __future__ import annotations

import os
import sys
import textwrap

from ckptlint.findings import Finding, Severity
from ckptlint.keygroups import fold_numbers
from ckptlint.report.humanize import human_count
from ckptlint.results import Diff, FileReport, Report

_INDENT = " " * 15
_WIDTH = 110
_COLOURS = {Severity.ERROR: "31", Severity.WARNING: "33", Severity.INFO: "36"}
_MAX_KEYS = 6
# how the expectation was chosen, as the header line says it
ARCH_SOURCE = {
    "flag": "",
    "inferred": " — detected from the keys",
    "declared": " — declared",
    "model": " — live model",
    "spec": " — spec file",
}


def use_colour(stream: object = None) -> bool:
    """True when writing to a terminal and ``NO_COLOR`` is unset."""
    stream = stream or sys.stdout
    if os.environ.get("NO_COLOR") or os.environ.get("TERM") == "dumb":
        return False
    return bool(getattr(stream, "isatty", lambda: False)())


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def _wrap(text: str, first: str) -> list[str]:
    return textwrap.wrap(text, _WIDTH, initial_indent=first, subsequent_indent=_INDENT) or [first.rstrip()]


def _header(f: FileReport) -> list[str]:
    bits = [f.format or "?"]
    if f.layout and f.layout != "unknown":
        bits[0] = f"{f.layout} {bits[0]}"
    if f.groups:
        bits.append("+".join(f.groups))
    bits.append(f"{human_count(f.num_params)} params")
    if f.dtypes:
        bits.append("/".join(sorted(f.dtypes, key=lambda d: -f.dtypes[d])))
    lines = [f"{f.path}  " + " · ".join(bits)]
    if f.arch:
        desc = f" ({f.arch.description})" if f.arch.description and f.arch.description != f.arch.name else ""
        variant = f", variant {f.arch.variant}" if f.arch.variant else ""
        how = ARCH_SOURCE[f.arch.source]
        evidence = f" inferred from {f.arch.inferred_from}" if f.arch.inferred_from else ""
        if f.arch.source == "declared" and f.arch.declared_by:  # "declared by config.json: LlamaForCausalLM"
            variant = "" if f.arch.variant == f.arch.name else variant
            lines.append(
                f"expected: declared by {f.arch.declared_by}: {f.arch.name}{desc}{variant}{evidence}"
            )
        else:
            lines.append(f"expected: {f.arch.name}{desc}{how}{variant}{evidence}")
    return lines


def _finding_block(fd: Finding, colour: bool, verbose: bool) -> list[str]:
    plain = f"{fd.code} {fd.severity.value:<8} "
    lines = _wrap(fd.message, plain)  # wrapped on the visible width; the label is painted afterwards
    if colour:
        sev = _paint(f"{fd.severity.value:<8}", _COLOURS[fd.severity], colour)
        lines[0] = f"{fd.code} {sev} " + lines[0][len(plain) :]
    if fd.cause:
        lines += _wrap(f"cause: {fd.cause}", _INDENT)
    if fd.fix:
        lines += _wrap(f"fix: {fd.fix}", _INDENT)
    if fd.keys:
        keys = fold_numbers(fd.keys)
        shown = keys if verbose else keys[:_MAX_KEYS]
        more = "" if len(shown) == len(keys) else f" … (+{len(keys) - len(shown)}, --verbose)"
        lines += _wrap("keys: " + ", ".join(shown) + more, _INDENT)
    return lines


def _diff_block(diff: Diff) -> list[str]:
    lines = ["raw diff:"]
    for label, keys in (("missing", diff.missing), ("unexpected", diff.unexpected)):
        if keys:
            lines.append(f"  {label} ({len(keys)}):")
            lines += [f"    {k}" for k in keys]
    if diff.shape_mismatch:
        lines.append(f"  shape mismatch ({len(diff.shape_mismatch)}):")
        lines += [f"    {m.key}: expected {m.expected}, got {m.actual}" for m in diff.shape_mismatch]
    if diff.dtype_mismatch:
        lines.append(f"  dtype mismatch ({len(diff.dtype_mismatch)}):")
        lines += [f"    {m.key}: expected {m.expected}, got {m.actual}" for m in diff.dtype_mismatch]
    return lines if len(lines) > 1 else []


def _summary(report: Report, fail_on: str) -> str:
    s = report.summary
    n = s.errors + s.warnings + s.infos
    parts = [
        f"{c} {w}{'s' if c != 1 else ''}"
        for c, w in ((s.errors, "error"), (s.warnings, "warning"), (s.infos, "info"))
        if c
    ]
    counts = f"{n} finding{'s' if n != 1 else ''}" + (f" ({', '.join(parts)})" if parts else "")
    if any(f.error for f in report.files):
        return f"{counts}  exit 2 (unreadable input)"
    worst = report.worst()
    threshold = {"info": 0, "warning": 1, "error": 2, "never": 99}[fail_on]
    failing = worst is not None and worst.rank >= threshold
    if failing:
        return f"{counts}  exit 1 (--fail-on {fail_on})"
    if worst is None:
        return f"{counts}  exit 0"
    return f"{counts}  exit 0 (fails only with --fail-on {worst.value})"


def render(
    report: Report, *, verbose: bool = False, fail_on: str = "error", colour: bool | None = None
) -> str:
    """The human report; ``colour`` defaults to whether stdout is a terminal."""
    colour = use_colour() if colour is None else colour
    out: list[str] = []
    for f in report.files:
        if f.error:
            out.append(f"{f.path}  unreadable: {f.error}")
            out.append("")
            continue
        out += _header(f)
        out.append("")
        for fd in sorted(f.findings, key=lambda x: -x.severity.rank):
            out += _finding_block(fd, colour, verbose)
        if not f.findings:
            out.append(
                "no findings: the checkpoint matches" + (" the expectation" if f.arch else " every rule")
            )
        if verbose and f.diff:
            out += _diff_block(f.diff)
        out.append("")
    out.append(_summary(report, fail_on))
    return "\n".join(out) + "\n"
