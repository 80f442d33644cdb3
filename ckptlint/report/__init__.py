"""Reporters: pure functions of a ``Report``; ``render`` picks one by format name."""

from __future__ import annotations

import importlib

from ckptlint.results import Report

REPORTERS: dict[str, str] = {
    "text": "ckptlint.report.text",
    "json": "ckptlint.report.json_report",
    "sarif": "ckptlint.report.sarif",
    "markdown": "ckptlint.report.markdown",
    "github": "ckptlint.report.github",
}


def render(report: Report, fmt: str, *, verbose: bool = False, fail_on: str = "error") -> str:
    """Render ``report`` in ``fmt``; each reporter module exposes ``render(report, verbose=, fail_on=)``."""
    module = importlib.import_module(REPORTERS[fmt])
    return module.render(report, verbose=verbose, fail_on=fail_on)
