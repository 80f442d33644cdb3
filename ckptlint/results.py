r"""The results model: a ``Report`` of ``FileReport``\s, exactly the JSON of docs/CONTRACT.md (schema_version "1").

The engine builds these and the reporters render them; neither depends on the other.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ckptlint._version import __version__
from ckptlint.findings import Finding, Severity

SCHEMA_VERSION = "1"
# schemas are built on first use, not at import (start-up time of the CLI)
_LAZY = ConfigDict(defer_build=True)


class ToolInfo(BaseModel):
    model_config = _LAZY
    name: str = "ckptlint"
    version: str = __version__


class ArchInfo(BaseModel):
    model_config = _LAZY
    name: str
    variant: str | None = None
    source: Literal["flag", "inferred", "declared", "model", "spec"]
    description: str | None = None  # e.g. "big_vision proj.clippo.one_tower" (extension of the contract)
    inferred_from: str | None = (
        None  # evidence for the variant, e.g. "params/img/embedding/kernel [16,16,3,768]"
    )
    declared_by: str | None = (
        None  # source "declared": the config file, e.g. "open_clip_config.json" (contract)
    )


class ShapeMismatch(BaseModel):
    model_config = _LAZY
    key: str
    expected: list[int]
    actual: list[int]


class DtypeMismatch(BaseModel):
    model_config = _LAZY
    key: str
    expected: str
    actual: str


class Diff(BaseModel):
    """Raw comparison with the expectation, in the expected model's key names."""

    model_config = _LAZY

    missing: list[str] = Field(default_factory=list)
    unexpected: list[str] = Field(default_factory=list)
    shape_mismatch: list[ShapeMismatch] = Field(default_factory=list)
    dtype_mismatch: list[DtypeMismatch] = Field(default_factory=list)


class FileReport(BaseModel):
    model_config = _LAZY
    path: str
    format: str | None = None
    layout: str = "unknown"
    arch: ArchInfo | None = None
    num_tensors: int = 0
    num_params: int = 0
    num_bytes: int = 0  # extension: bytes of all tensors
    groups: list[str] = Field(default_factory=list)  # extension: top-level groups (params, opt, chrono...)
    dtypes: dict[str, int] = Field(default_factory=dict)  # extension: parameter count per dtype
    error: str | None = None
    findings: list[Finding] = Field(default_factory=list)
    diff: Diff | None = None


class Summary(BaseModel):
    model_config = _LAZY
    files: int = 0
    errors: int = 0
    warnings: int = 0
    infos: int = 0


class Report(BaseModel):
    model_config = _LAZY
    schema_version: Literal["1"] = SCHEMA_VERSION
    tool: ToolInfo = Field(default_factory=ToolInfo)
    files: list[FileReport] = Field(default_factory=list)
    summary: Summary = Field(default_factory=Summary)

    def summarize(self) -> Report:
        """Recompute ``summary`` from the files' findings."""
        counts = {s: 0 for s in Severity}
        for f in self.files:
            for fd in f.findings:
                counts[fd.severity] += 1
        self.summary = Summary(
            files=len(self.files),
            errors=counts[Severity.ERROR],
            warnings=counts[Severity.WARNING],
            infos=counts[Severity.INFO],
        )
        return self

    def worst(self) -> Severity | None:
        """The highest severity among all findings, or None."""
        sev = [fd.severity for f in self.files for fd in f.findings]
        return max(sev, key=lambda s: s.rank) if sev else None
