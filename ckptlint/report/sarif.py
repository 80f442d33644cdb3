"""``--format sarif``: SARIF 2.1.0 for code scanning (GitHub, Azure DevOps, any SARIF viewer).

One run; ``tool.driver.rules`` holds every rule a result refers to, with the rule's long documentation
(``ckptlint explain CODE``) as help text. Each checkpoint is an artifact; each finding is a result located at
the checkpoint, with its evidence keys, cause, fix and edits in ``properties``. An unreadable input is a CK001 result
and a failed tool-execution notification.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import PurePath
from typing import Any
from urllib.parse import quote

from ckptlint._version import __version__
from ckptlint.findings import Finding, Severity
from ckptlint.results import FileReport, Report

SARIF_VERSION = "2.1.0"
SARIF_SCHEMA_URI = "https://json.schemastore.org/sarif-2.1.0.json"
LEVELS = {Severity.ERROR: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
UNREADABLE_CODE = "CK001"
# GitHub code scanning wants a line region on every result; a checkpoint is binary, so results point at the
# file as a whole with the conventional first line (as container/binary scanners do).
_FILE_REGION = {"startLine": 1}
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")


def artifact_uri(path: str) -> tuple[str, str | None]:
    """``(uri, uriBaseId)``: relative paths resolve against ``%SRCROOT%``; URLs and absolute paths stay absolute."""
    if _URI_SCHEME.match(path):
        return path, None
    posix = PurePath(path).as_posix()
    if PurePath(path).is_absolute():
        return "file://" + quote(posix), None
    if posix.startswith("./"):
        posix = posix[2:]
    return quote(posix), "%SRCROOT%"


def _rule_index() -> dict[str, Any]:
    """code -> rule object from the registry (empty when a code is not registered)."""
    from ckptlint.rules import all_rules

    return {r.code: r for r in all_rules()}


def _explain(code: str) -> str | None:
    from ckptlint.errors import UsageError
    from ckptlint.rules import explain

    try:
        return explain(code)
    except UsageError:  # a code the registry does not know: the finding's own text stands in
        return None


def _descriptor(code: str, rule: Any, fallback: Finding | None) -> dict[str, Any]:
    summary = rule.summary if rule is not None else (fallback.message if fallback else code)
    severity = rule.severity if rule is not None else (fallback.severity if fallback else Severity.ERROR)
    help_text = _explain(code) or summary
    descriptor: dict[str, Any] = {
        "id": code,
        "name": _camel(summary) or code,
        "shortDescription": {"text": summary},
        "fullDescription": {"text": help_text.strip().split("\n\n", 1)[0]},
        "help": {"text": help_text, "markdown": help_markdown(help_text)},
        "defaultConfiguration": {"level": LEVELS[Severity(severity)]},
        "properties": {"tags": ["security" if code == "CK301" else "checkpoint"], "precision": "high"},
    }
    if code == "CK301":  # GitHub ranks security results by this CVSS-like score
        descriptor["properties"]["security-severity"] = "9.8"
    return descriptor


def help_markdown(text: str) -> str:
    """The rule documentation as markdown: section titles in bold, indented bodies dedented, examples fenced."""
    import textwrap

    out: list[str] = []
    section: list[str] = []
    title = ""

    def flush() -> None:
        if not section:
            return
        body = textwrap.dedent("\n".join(section)).strip("\n")
        section.clear()
        if not body.strip():
            return
        if title.lower().startswith("example"):
            out.extend(["```", body, "```", ""])
        else:
            out.extend([body, ""])

    for line in text.strip().splitlines():
        if line and not line[0].isspace():
            flush()
            title = line.strip()
            out.extend([f"**{title}**", ""])
        else:
            section.append(line)
    flush()
    return "\n".join(out).strip() + "\n"


def _camel(text: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", text)[:8]
    return "".join(w[:1].upper() + w[1:] for w in words)


def _message(fd: Finding) -> str:
    parts = [fd.message]
    if fd.cause:
        parts.append(f"Cause: {fd.cause}")
    if fd.fix:
        parts.append(f"Fix: {fd.fix}")
    return "\n".join(parts)


def _fingerprint(path: str, fd: Finding) -> str:
    h = hashlib.sha256()
    for part in (path, fd.code, *sorted(fd.keys)):
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()[:32]


def _location(path: str, index: int) -> dict[str, Any]:
    uri, base = artifact_uri(path)
    loc: dict[str, Any] = {"uri": uri, "index": index}
    if base:
        loc["uriBaseId"] = base
    return {"physicalLocation": {"artifactLocation": loc, "region": dict(_FILE_REGION)}}


def _file_findings(f: FileReport) -> list[Finding]:
    if f.error and not any(fd.code == UNREADABLE_CODE for fd in f.findings):
        unreadable = Finding(
            code=UNREADABLE_CODE,
            severity=Severity.ERROR,
            message=f"unreadable checkpoint: {f.error}",
            fix="replace the file with a complete copy (re-download or re-save it)",
        )
        return [unreadable, *f.findings]
    return list(f.findings)


def sarif_dict(report: Report, *, verbose: bool = False) -> dict[str, Any]:
    """The SARIF log as plain data."""
    registry = _rule_index()
    per_file = [(f, _file_findings(f)) for f in report.files]
    first_seen: dict[str, Finding] = {}
    for _, findings in per_file:
        for fd in findings:
            first_seen.setdefault(fd.code, fd)
    codes = sorted(first_seen)
    rule_pos = {code: i for i, code in enumerate(codes)}

    artifacts: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []
    notifications: list[dict[str, Any]] = []
    for index, (f, findings) in enumerate(per_file):
        uri, base = artifact_uri(f.path)
        location: dict[str, Any] = {"uri": uri}
        if base:
            location["uriBaseId"] = base
        artifact: dict[str, Any] = {"location": location, "roles": ["analysisTarget"]}
        if f.num_bytes:
            artifact["properties"] = {"format": f.format, "layout": f.layout, "tensorBytes": f.num_bytes}
        artifacts.append(artifact)
        if f.error:
            notifications.append(
                {
                    "level": "error",
                    "message": {"text": f"{f.path}: {f.error}"},
                    "locations": [_location(f.path, index)],
                }
            )
        for fd in findings:
            props: dict[str, Any] = {"keys": list(fd.keys)}
            if fd.cause:
                props["cause"] = fd.cause
            if fd.fix:
                props["fix"] = fd.fix
            if fd.details:
                props["details"] = fd.details
            if fd.edits:  # the machine-readable fix (``ckptlint fix`` applies it), as in the JSON report
                props["edits"] = [e.model_dump(mode="json") for e in fd.edits]
            if f.arch is not None:
                props["arch"] = f.arch.model_dump(mode="json", exclude_none=True)
            results.append(
                {
                    "ruleId": fd.code,
                    "ruleIndex": rule_pos[fd.code],
                    "level": LEVELS[fd.severity],
                    "message": {"text": _message(fd)},
                    "locations": [_location(f.path, index)],
                    "partialFingerprints": {"ckptlintFinding/v1": _fingerprint(f.path, fd)},
                    "properties": props,
                }
            )
    run: dict[str, Any] = {
        "tool": {
            "driver": {
                "name": "ckptlint",
                "version": __version__,
                "semanticVersion": __version__,
                "rules": [_descriptor(c, registry.get(c), first_seen[c]) for c in codes],
            }
        },
        "invocations": [
            {
                "executionSuccessful": not notifications,
                "toolExecutionNotifications": notifications,
            }
        ],
        "originalUriBaseIds": {"%SRCROOT%": {"description": {"text": "the directory ckptlint ran in"}}},
        "artifacts": artifacts,
        "results": results,
        "columnKind": "unicodeCodePoints",
        "properties": {"summary": report.summary.model_dump(mode="json")},
    }
    if verbose:
        run["properties"]["diffs"] = {
            f.path: f.diff.model_dump(mode="json") for f in report.files if f.diff is not None
        }
    return {"$schema": SARIF_SCHEMA_URI, "version": SARIF_VERSION, "runs": [run]}


def render(report: Report, *, verbose: bool = False, fail_on: str = "error") -> str:
    """The SARIF log as indented JSON (``fail_on`` does not change it: viewers filter by level)."""
    return json.dumps(sarif_dict(report, verbose=verbose), indent=2, default=str) + "\n"
