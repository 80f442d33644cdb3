"""``ckptlint dump --format json`` output read back as a Checkpoint (``check --spec FILE.json``).

The document is CONTRACT.md's dump JSON: ``{"schema_version", "path", "format", "layout", "tensors": {key: {"shape",
"dtype"}}, "groups", "metadata", "findings"}``. Where the dump came from is kept in ``metadata["dump_of"]``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ckptlint.checkpoint import Checkpoint, TensorInfo, guess_key_sep, tensor_info
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.findings import Finding
from ckptlint.readers.jsonfile import load_json

SCHEMA_VERSIONS = ("1",)


def read(path: Path) -> Checkpoint:
    """Read the dump JSON at ``path``."""
    p = str(path)
    doc = load_json(path, "dump JSON")
    return from_document(doc, p)


def from_document(doc: Any, path: str) -> Checkpoint:
    """Build the Checkpoint a dump document describes; raise ``UnreadableCheckpoint`` when it is malformed."""
    if not isinstance(doc, dict):
        raise UnreadableCheckpoint(path, "invalid dump JSON: not an object")
    version = str(doc.get("schema_version"))
    if version not in SCHEMA_VERSIONS:
        raise UnreadableCheckpoint(
            path, f"unsupported dump schema_version {doc.get('schema_version')!r} (supported: 1)"
        )
    raw_tensors = doc.get("tensors")
    if not isinstance(raw_tensors, dict):
        raise UnreadableCheckpoint(path, "invalid dump JSON: 'tensors' is not an object")
    tensors: dict[str, TensorInfo] = {}
    for key, entry in raw_tensors.items():
        shape = entry.get("shape") if isinstance(entry, dict) else None
        dtype = entry.get("dtype") if isinstance(entry, dict) else None
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise UnreadableCheckpoint(
                path, f"invalid dump JSON: tensor {key!r} has no list of non-negative ints as shape"
            )
        if not isinstance(dtype, str) or not dtype:
            raise UnreadableCheckpoint(path, f"invalid dump JSON: tensor {key!r} has no dtype string")
        tensors[key] = tensor_info(shape, dtype)
    groups = doc.get("groups") or []
    metadata = doc.get("metadata") or {}
    if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
        raise UnreadableCheckpoint(path, "invalid dump JSON: 'groups' is not a list of strings")
    if not isinstance(metadata, dict):
        raise UnreadableCheckpoint(path, "invalid dump JSON: 'metadata' is not an object")
    metadata = dict(metadata)
    origin = {k: doc[k] for k in ("path", "format", "layout") if isinstance(doc.get(k), str)}
    if origin:
        metadata["dump_of"] = origin
    return Checkpoint.model_construct(
        path=path,
        format="dump-json",
        key_sep=guess_key_sep(tensors),
        tensors=tensors,
        groups=list(groups),
        metadata=metadata,
        sidecars=[],
        files=[path],
        findings=_findings(doc.get("findings"), path),
    )


def _findings(raw: Any, path: str) -> list[Finding]:
    if raw in (None, []):
        return []
    if not isinstance(raw, list):
        raise UnreadableCheckpoint(path, "invalid dump JSON: 'findings' is not a list")
    findings = []
    for item in raw:
        try:
            findings.append(Finding.model_validate(item))
        except ValueError as exc:  # pydantic.ValidationError is a ValueError
            first = str(exc).splitlines()[0]
            raise UnreadableCheckpoint(path, f"invalid dump JSON: malformed finding ({first})") from None
    return findings
