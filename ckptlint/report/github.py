"""``--format github``: GitHub Actions workflow commands, one annotation per finding.

``::error file=PATH,title=CODE summary::message`` shows on the pull request's changed files; info findings
become ``::notice``. A plain summary line follows (printed to the job log as is).
"""

from __future__ import annotations

from ckptlint.findings import Severity
from ckptlint.report.humanize import counted
from ckptlint.results import Report

COMMANDS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "notice"}
_TITLE_MAX = 100


def escape_data(text: str) -> str:
    """Escape a workflow-command message (``%``, CR and LF)."""
    return text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(text: str) -> str:
    """Escape a workflow-command property value (also ``:`` and ``,``)."""
    return escape_data(text).replace(":", "%3A").replace(",", "%2C")


def _annotation(command: str, path: str, title: str, message: str) -> str:
    props = f"file={escape_property(path)},line=1,title={escape_property(title)}"
    return f"::{command} {props}::{escape_data(message)}"


def render(report: Report, *, verbose: bool = False, fail_on: str = "error") -> str:
    """Annotations for every finding (and every unreadable file), then ``ckptlint: N findings ...``."""
    lines: list[str] = []
    for f in report.files:
        if f.error and not any(fd.code == "CK001" for fd in f.findings):
            lines.append(_annotation("error", f.path, "CK001 unreadable checkpoint", f.error))
        for fd in sorted(f.findings, key=lambda x: -x.severity.rank):
            body = [fd.message]
            if fd.cause:
                body.append(f"cause: {fd.cause}")
            if fd.fix:
                body.append(f"fix: {fd.fix}")
            if verbose and fd.keys:
                body.append("keys: " + ", ".join(fd.keys))
            title = f"{fd.code} {fd.message}"
            title = title if len(title) <= _TITLE_MAX else title[: _TITLE_MAX - 1] + "…"
            lines.append(_annotation(COMMANDS[fd.severity], f.path, title, "\n".join(body)))
    s = report.summary
    lines.append(
        f"ckptlint: {counted(s.files, 'file')}, {counted(s.errors, 'error')}, "
        f"{counted(s.warnings, 'warning')}, {counted(s.infos, 'info')} (fail-on {fail_on})"
    )
    return "\n".join(lines) + "\n"
