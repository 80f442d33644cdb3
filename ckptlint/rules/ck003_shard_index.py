"""CK003 — shard index inconsistent

What it does
    Passes through what the sharded-checkpoint reader found when the ``*.index.json`` and the shards disagree:
    a shard on disk that the index does not name, a tensor the index maps to a shard that does not hold it,
    or a tensor held by several shards.

Why is this bad?
    Loaders trust the index: an extra shard is silently ignored (its tensors never load), a wrong mapping
    fails at load time, and a duplicated tensor loads whichever copy comes last.

Example
    $ ckptlint check sharded_stray --arch hf-clip    # shard 1 copied as model-00004-of-00004
    CK003 warning  1 shard file(s) next to the index are not referenced by it:
                   model-00004-of-00004.safetensors
                   fix: delete the stale shard files or re-save the checkpoint into an empty folder

Fix
    Regenerate the index from the shards (``save_pretrained`` writes both together), or remove stray shards.
"""

from __future__ import annotations

from ckptlint.findings import Finding
from ckptlint.rules import Rule, rule
from ckptlint.rules._context import Context


@rule("CK003", "warning", "shard index inconsistent with the shards (extra shard, wrong mapping)")
class ShardIndex(Rule):
    """Reader finding, passed through."""

    needs = "none"

    def check(self, ctx: Context) -> list[Finding]:
        return [f for f in ctx.ckpt.findings if f.code == self.code]
