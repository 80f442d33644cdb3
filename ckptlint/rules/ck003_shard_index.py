"""CK003 — shard index inconsistent

What it does
    Reports what the sharded-checkpoint reader recorded when the ``*.index.json`` and the shards disagree: a
    shard on disk that the index does not name, a tensor the index maps to a shard that does not hold it (or
    does not list at all), or a tensor held by several shards.

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

from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule


class IndexDisagrees(Message):
    code = "CK003"
    message = "shard index disagrees with the shards for {n} tensor(s)"
    cause = "the index was edited or regenerated separately from the shard files"
    fix = "re-save the checkpoint (save_pretrained) so the index and shards are written together"
    max_keys = None


class UnreferencedShards(Message):
    code = "CK003"
    message = "{n} shard file(s) next to the index are not referenced by it: {names}"
    cause = "left over from an earlier save with a different shard count, or from another checkpoint"
    fix = "delete the stale shard files or re-save the checkpoint into an empty folder"


@rule(
    "CK003",
    "warning",
    "shard index inconsistent with the shards (extra shard, wrong mapping)",
    stage=Stage.FACTS,
    order=3,
    rank=2,
)
class ShardIndexRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        facts = ctx.ckpt.shards
        if facts is None:
            return []
        out: list[Message] = []
        if facts.misplaced:
            out.append(
                IndexDisagrees(
                    keys=sorted(facts.misplaced),
                    details={
                        "tensors": {k: facts.misplaced[k].model_dump() for k in sorted(facts.misplaced)}
                    },
                    n=len(facts.misplaced),
                )
            )
        extra = facts.unreferenced_shards
        if extra:
            out.append(
                UnreferencedShards(
                    details={"unreferenced_shards": extra}, n=len(extra), names=", ".join(extra)
                )
            )
        return out
