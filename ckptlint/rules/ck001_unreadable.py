"""CK001 — unreadable or corrupt input

What it does
    Reports a path that cannot be read as a checkpoint: missing, empty, truncated, a corrupt zip or header,
    or a file that is not a checkpoint at all. ``ckptlint check`` then exits with code 2 and prints one line,
    ``ckptlint: error: PATH: reason``; the JSON report carries the reason in the file's
    ``error`` field and this finding.

Why is this bad?
    A checkpoint that ckptlint cannot parse header-only is one that the framework will also fail to load —
    often much later, after a long download or in the middle of a job — or, for a truncated file, one that
    loads garbage. Nothing else can be checked about it.

Example
    $ ckptlint check truncated.safetensors    # the first 100 bytes of a safetensors file
    ckptlint: error: truncated.safetensors: not a checkpoint (safetensors header length 6152 exceeds file size
        100)
    (exit code 2; with --format json the file entry has "error" set and this CK001 finding)

Fix
    Download or copy the file again and compare its size/hash with the source; make sure the path points at
    the weights (for a sharded checkpoint, at the ``*.index.json`` or its folder).
"""

from __future__ import annotations

from ckptlint.findings import Finding
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule


class Unreadable(Message):
    code = "CK001"
    message = "unreadable input: {reason}"
    cause = "the file is missing, truncated, corrupt or not a checkpoint"
    fix = (
        "download or copy the file again and check its size and hash; point at the weights file or its folder"
    )


def unreadable(path: str, reason: str) -> Finding:
    """The CK001 finding for ``path`` (the API adds it to a FileReport whose ``error`` is ``reason``)."""
    return Unreadable(keys=[], details={"path": path}, reason=reason).finding(UnreadableRule.severity)


@rule("CK001", "error", "unreadable or corrupt input (also exit 2)", stage=Stage.INPUT, order=0, rank=0)
class UnreadableRule(Rule):
    """Produced by the API when reading fails; the engine never sees such a file."""

    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        return []
