"""Counts over a stream of FileReports (the JSONL summary and the exit code) without keeping the reports."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ckptlint.results import FileReport, Summary

_RANK = {"info": 0, "warning": 1, "error": 2}


@dataclass
class Tally:
    files: int = 0
    errors: int = 0
    warnings: int = 0
    infos: int = 0
    unreadable: int = 0
    first_unreadable: tuple[str, str] | None = None  # (path, reason) of the first file with ``error``
    worst: int = -1  # rank of the worst severity seen, -1 for none
    _first_order: int | None = None

    def add(self, report: FileReport, order: int | None = None) -> None:
        """Count one FileReport; ``order`` (its input's position) picks which unreadable input is "first"."""
        self.add_json(
            {
                "path": report.path,
                "error": report.error,
                "findings": [{"severity": f.severity.value} for f in report.findings],
            },
            order,
        )

    def add_json(self, doc: dict[str, Any], order: int | None = None) -> None:
        """Count one FileReport given as its JSON object (a line of a JSONL report)."""
        self.files += 1
        for finding in doc.get("findings") or ():
            sev = finding.get("severity") if isinstance(finding, dict) else None
            if sev in _RANK:
                self.errors += sev == "error"
                self.warnings += sev == "warning"
                self.infos += sev == "info"
                self.worst = max(self.worst, _RANK[sev])
        if doc.get("error"):
            self.unreadable += 1
            order = self.files if order is None else order
            if self._first_order is None or order < self._first_order:
                self._first_order = order
                self.first_unreadable = (str(doc.get("path")), str(doc["error"]))

    def summary(self) -> Summary:
        from ckptlint.results import Summary

        return Summary(files=self.files, errors=self.errors, warnings=self.warnings, infos=self.infos)

    def exit_code(self, fail_on: str) -> int:
        """CONTRACT: 2 when an input was unreadable, 1 when a finding is at/above ``fail_on``, else 0."""
        if self.unreadable:
            return 2
        if fail_on == "never":
            return 0
        return 1 if self.worst >= _RANK[fail_on] else 0

    def table(self) -> str:
        """A few lines for a person (stderr): files, findings by severity, unreadable inputs."""
        rows = [
            ("files", self.files),
            ("errors", self.errors),
            ("warnings", self.warnings),
            ("infos", self.infos),
            ("unreadable", self.unreadable),
        ]
        width = max(len(name) for name, _ in rows)
        return "".join(f"{name:<{width}}  {value:>8}\n" for name, value in rows)
