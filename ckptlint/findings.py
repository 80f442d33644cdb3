"""Severities and the Finding model shared by rules, the engine and reporters."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from ckptlint.edits import Edit
from ckptlint.model import Model
from ckptlint.record import field, record


class Severity(StrEnum):
    """How bad a finding is; ordered ``info < warning < error``."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]


@record(kw_only=True)
class Finding(Model):
    """One root cause: a code, what was seen, why it probably happened and how to fix it.

    ``fix`` says it for a person; ``edits`` says it for ``ckptlint fix`` when the fix is mechanical.
    """

    code: str
    severity: Severity
    message: str
    cause: str = ""
    fix: str = ""
    keys: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    edits: list[Edit] = field(default_factory=list)

    def __post_init__(self) -> None:
        # "error" -> Severity.ERROR, as validation did (a ValueError for anything else)
        if type(self.severity) is not Severity:
            self.severity = Severity(self.severity)
