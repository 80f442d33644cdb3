"""Errors that end a run with exit code 2 and one line on stderr."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ckptlint.findings import Finding


class CkptlintError(Exception):
    """Base class: anything the CLI turns into ``ckptlint: error: PATH: reason``."""


class UnreadableCheckpoint(CkptlintError):
    """The input is missing, truncated, corrupt or not a checkpoint (rule CK001, exit 2)."""

    def __init__(self, path: str, reason: str, findings: list[Finding] | None = None) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        # what a reader could still tell before it failed, e.g. CK301 for unsafe globals seen before a broken stream
        self.findings: list[Finding] = list(findings or [])


class UsageError(CkptlintError):
    """Bad options or configuration (exit 2)."""
