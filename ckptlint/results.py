r"""The results model: a ``Report`` of ``FileReport``\s, exactly the JSON of docs/CONTRACT.md (schema_version "1").

The engine builds these and the reporters render them; neither depends on the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

from ckptlint._version import __version__
from ckptlint.findings import Finding, Severity
from ckptlint.model import Model, omit_none
from ckptlint.record import field, record

if TYPE_CHECKING:
    from pydantic import GetCoreSchemaHandler
    from pydantic_core import CoreSchema

SCHEMA_VERSION = "1"


@record(kw_only=True)
class ToolInfo(Model):
    name: str = "ckptlint"
    version: str = __version__


@record(kw_only=True)
class ArchInfo(Model):
    name: str
    variant: str | None = None
    source: Literal["flag", "inferred", "declared", "model", "spec"]
    description: str | None = None  # e.g. "big_vision proj.clippo.one_tower" (extension of the contract)
    inferred_from: str | None = (
        None  # evidence for the variant, e.g. "params/img/embedding/kernel [16,16,3,768]"
    )
    declared_by: str | None = None  # source "declared": the config file, e.g. "open_clip_config.json"


@record(kw_only=True)
class ShapeMismatch(Model):
    key: str
    expected: list[int]
    actual: list[int]


@record(kw_only=True)
class DtypeMismatch(Model):
    key: str
    expected: str
    actual: str


@record(kw_only=True)
class Diff(Model):
    """Raw comparison with the expectation, in the expected model's key names."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatch: list[ShapeMismatch] = field(default_factory=list)
    dtype_mismatch: list[DtypeMismatch] = field(default_factory=list)


@record(kw_only=True)
class FileStats(Model):
    """What reading a remote file cost (``--stats``): body bytes received and requests sent, retries included."""

    bytes: int
    requests: int


@record(kw_only=True)
class FileReport(Model):
    path: str
    format: str | None = None
    layout: str = "unknown"
    arch: ArchInfo | None = None
    num_tensors: int = 0
    num_params: int = 0
    num_bytes: int = 0  # extension: bytes of all tensors
    groups: list[str] = field(default_factory=list)  # extension: top-level groups (params, opt, chrono...)
    dtypes: dict[str, int] = field(default_factory=dict)  # extension: parameter count per dtype
    error: str | None = None
    findings: list[Finding] = field(default_factory=list)
    diff: Diff | None = None
    # additive: only with --stats, for remote inputs (absent otherwise, so reports without it are unchanged)
    stats: FileStats | None = None

    @classmethod
    def __get_pydantic_core_schema__(cls, source: Any, handler: GetCoreSchemaHandler) -> CoreSchema:
        return omit_none(handler(source), handler, "stats")  # absent when None, in JSON and in model_dump


@record(kw_only=True)
class Summary(Model):
    files: int = 0
    errors: int = 0
    warnings: int = 0
    infos: int = 0


@record(kw_only=True)
class Report(Model):
    schema_version: Literal["1"] = SCHEMA_VERSION
    tool: ToolInfo = field(default_factory=ToolInfo)
    files: list[FileReport] = field(default_factory=list)
    summary: Summary = field(default_factory=Summary)

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
