"""``--format json``: CONTRACT.md's report JSON, schema_version "1"; ``json_schema()`` describes it.

The schema is generated from the results model, with the registered rule codes (plugins too) spelled out and the
closed set of edit kinds (``ckptlint.edits``) as a ``oneOf`` with a discriminator.
"""

from __future__ import annotations

from typing import Any

from ckptlint.results import SCHEMA_VERSION, Report

SCHEMA_ID = f"https://ckptlint.invalid/schema/report-v{SCHEMA_VERSION}.json"
OPTIONAL = {"FileReport": {"stats"}}  # written only when asked for (``--stats``)


def render(report: Report, *, verbose: bool = False, fail_on: str = "error") -> str:
    """The report as indented JSON (always the full raw diff)."""
    return report.model_dump_json(indent=2) + "\n"


def json_schema() -> dict[str, Any]:
    """JSON Schema (draft 2020-12) of the report, generated from the results models through pydantic (serialisation mode)."""
    schema = Report.model_json_schema(mode="serialization")
    for name, obj in (("Report", schema), *schema.get("$defs", {}).items()):
        if "properties" in obj:  # the reporter always writes every field, null or empty when unknown
            obj["required"] = [p for p in obj["properties"] if p not in OPTIONAL.get(name, ())]
    schema["$defs"]["Finding"]["properties"]["code"] = _code_schema()
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
        "title": f"ckptlint report, schema_version {SCHEMA_VERSION}",
    }


def _code_schema() -> dict[str, Any]:
    """``Finding.code``: every registered rule (plugins too) with its summary, and room for codes added later."""
    from ckptlint.rules import all_rules

    known: list[dict[str, Any]] = [
        {"const": r.code, "description": f"{r.summary} (default severity {r.severity.value})"}
        for r in all_rules()
    ]
    later = {
        "type": "string",
        "description": "a code this ckptlint does not know (a newer version or a plugin)",
    }
    return {
        "title": "Code",
        "description": "rule code; `ckptlint rules` lists them, `ckptlint explain CODE` documents one",
        "type": "string",
        "anyOf": [*known, later],
    }
