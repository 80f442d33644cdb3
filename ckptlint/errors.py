"""Errors that end a run with exit code 2 and one line on stderr."""

from __future__ import annotations

from ckptlint.facts import SecurityFacts


class CkptlintError(Exception):
    """Base class: anything the CLI turns into ``ckptlint: error: PATH: reason``."""


class UnreadableCheckpoint(CkptlintError):
    """The input is missing, truncated, corrupt or not a checkpoint, or ckptlint refuses to judge it (CK001, exit 2).

    ``facts`` is what the reader saw before it stopped (e.g. an unsafe global ahead of a broken stream): the
    report shows it next to CK001. ``refused`` is True when the loaders may read the input but ckptlint cannot
    judge it (a bound exceeded, loaders that would read it differently), False when the loaders fail on it too.
    """

    def __init__(
        self, path: str, reason: str, facts: SecurityFacts | None = None, *, refused: bool = False
    ) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason
        self.facts = facts if facts is not None else SecurityFacts()
        self.refused = refused


class UsageError(CkptlintError):
    """Bad options or configuration (exit 2)."""
