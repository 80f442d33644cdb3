"""Severities and the Finding model shared by rules, the engine and reporters."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ckptlint.edits import Edit


class Severity(StrEnum):
    """How bad a finding is; ordered ``info < warning < error``."""

    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return {"info": 0, "warning": 1, "error": 2}[self.value]


class Finding(BaseModel):
    """One root cause: a code, what was seen, why it probably happened and how to fix it.

    ``fix`` says it for a person; ``edits`` says it for ``ckptlint fix`` when the fix is mechanical.
    """

    model_config = ConfigDict(defer_build=True)

    code: str
    severity: Severity
    message: str
    cause: str = ""
    fix: str = ""
    keys: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)
    edits: list[Edit] = Field(default_factory=list)
