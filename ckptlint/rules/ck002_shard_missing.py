"""CK002 — sharded checkpoint incomplete

What it does
    Reports what the sharded-checkpoint reader recorded: a shard that the ``*.index.json`` weight map names is
    not there, or a tensor the index lists is in none of the shards, so some tensors of the checkpoint do not
    exist on disk. Those tensors are the root cause of their keys being missing.

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

from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule


class ShardsMissing(Message):
    code = "CK002"
    message = "sharded checkpoint incomplete: {parts}; {n} tensors unavailable"
    cause = "the download or copy of the shards did not finish, or the index belongs to another save"
    fix = "download the missing shard files again (e.g. huggingface-cli download REPO --include '*.safetensors')"
    max_keys = None  # every unavailable tensor: they are what the finding is about


@rule(
    "CK002",
    "error",
    "sharded checkpoint incomplete: a shard named by the index is missing",
    stage=Stage.FACTS,
    order=2,
    rank=1,
)
class ShardMissingRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        facts = ctx.ckpt.shards
        if facts is None or not (facts.lost_tensors or facts.tensors_in_no_shard):
            return []
        unavailable = facts.lost_tensors + facts.tensors_in_no_shard
        root = ctx.view_root
        ctx.consume_missing(k[len(root) :] if root and k.startswith(root) else k for k in unavailable)
        parts = []
        if facts.missing_shards:
            parts.append(
                f"{len(facts.missing_shards)} shard file(s) missing ({', '.join(facts.missing_shards)})"
            )
        if facts.tensors_in_no_shard:
            parts.append(f"{len(facts.tensors_in_no_shard)} indexed tensor(s) in no shard")
        return [
            ShardsMissing(
                keys=unavailable,
                details={
                    "missing_shards": facts.missing_shards,
                    "tensors_in_no_shard": facts.tensors_in_no_shard,
                },
                parts="; ".join(parts),
                n=len(unavailable),
            )
        ]
