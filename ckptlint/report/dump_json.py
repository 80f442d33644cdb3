"""``ckptlint dump --format json``: exactly the dump JSON of CONTRACT.md."""

from __future__ import annotations

import json
from typing import Any

from ckptlint.checkpoint import Checkpoint
from ckptlint.findings import Finding

SCHEMA_VERSION = "1"


def dump_dict(ckpt: Checkpoint, layout: str, findings: list[Finding]) -> dict[str, Any]:
    """The contract's dump document as plain data (tensors keep the file's own key order).

    ``findings`` are what the rules make of the reader's facts (``ckptlint.engine.fact_findings``).
    """
    return {
        "schema_version": SCHEMA_VERSION,
        "path": ckpt.path,
        "format": ckpt.format,
        "layout": layout,
        "tensors": {k: {"shape": list(t.shape), "dtype": t.dtype} for k, t in ckpt.tensors.items()},
        "groups": list(ckpt.groups),
        "metadata": ckpt.metadata,
        "findings": [f.model_dump(mode="json") for f in findings],
    }


def render(ckpt: Checkpoint, layout: str, findings: list[Finding]) -> str:
    """Serialise the dump document (non-JSON metadata values are stringified)."""
    return (
        json.dumps(dump_dict(ckpt, layout, findings), default=str) + "\n"
    )  # no indent: the C encoder, 5x faster
