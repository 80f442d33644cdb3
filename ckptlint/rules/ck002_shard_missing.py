"""CK002 — sharded checkpoint incomplete

What it does
    Passes through what the sharded-checkpoint reader found: a shard that the ``*.index.json`` weight map
    names is not there (or not readable), so some tensors of the checkpoint do not exist on disk.

Why is this bad?
    ``from_pretrained`` and ``safetensors`` loaders fail when they reach the missing shard, or — with
    loaders that tolerate missing keys — leave those parameters at their random initialisation.

Example
    $ ckptlint check sharded --arch hf-clip    # save_pretrained(max_shard_size=…), last shard deleted
    CK002 error    sharded checkpoint incomplete: 1 shard file(s) missing (model-00003-of-00003.safetensors);
                   8 tensors unavailable
                   fix: download the missing shard files again (e.g. huggingface-cli download REPO --include
                   '*.safetensors')

Fix
    Download the missing shard(s) again (``huggingface-cli download REPO FILE``) and keep all
    shards next to the index.
"""

from __future__ import annotations

from ckptlint.findings import Finding
from ckptlint.rules import Rule, rule
from ckptlint.rules._context import Context


@rule("CK002", "error", "sharded checkpoint incomplete: a shard named by the index is missing")
class ShardMissing(Rule):
    """Reader finding, passed through; the tensors it names are the root cause of those keys being missing."""

    needs = "none"

    def check(self, ctx: Context) -> list[Finding]:
        found = [f for f in ctx.ckpt.findings if f.code == self.code]
        root = ctx.view_root
        for f in found:
            ctx.consume_missing(k[len(root) :] if root and k.startswith(root) else k for k in f.keys)
        return found
