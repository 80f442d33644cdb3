"""``--format json``: CONTRACT.md's report JSON, schema_version "1"; ``json_schema()`` describes it."""

from __future__ import annotations

from typing import Any

from ckptlint.report.model import SCHEMA_VERSION, Report

SCHEMA_ID = f"https://ckptlint.invalid/schema/report-v{SCHEMA_VERSION}.json"
OPTIONAL = {"FileReport": {"stats"}}  # written only when asked for (``--stats``)


def render(report: Report, *, verbose: bool = False, fail_on: str = "error") -> str:
    """The report as indented JSON (always the full raw diff)."""
    return report.model_dump_json(indent=2) + "\n"


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the report, generated from the pydantic models (serialisation mode)."""
    schema = Report.model_json_schema(mode="serialization")
    for name, obj in (("Report", schema), *schema.get("$defs", {}).items()):
        if "properties" in obj:  # the reporter always writes every field, null or empty when unknown
            obj["required"] = [p for p in obj["properties"] if p not in OPTIONAL.get(name, ())]
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": f"ckptlint report, schema_version {SCHEMA_VERSION}",
    }
