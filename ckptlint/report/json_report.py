"""``--format json``: CONTRACT.md's report JSON, schema_version "1"."""

from __future__ import annotations

from ckptlint.report.model import Report


def render(report: Report, *, verbose: bool = False, fail_on: str = "error") -> str:
    """The report as indented JSON (always the full raw diff)."""
    return report.model_dump_json(indent=2) + "\n"
