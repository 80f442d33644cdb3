"""CK112 — different variant than requested

What it does
    Reads the structural numbers of both sides from their shapes — patch size, width, depth, heads, MLP width,
    vocabulary, embedding dimension, per tower — and, when they differ, reports one finding naming the
    checkpoint's variant and the requested one, accounting for the shape mismatches and the extra or missing
    blocks that follow from it. (Image size and context length alone are CK110.)

Why is this bad?
    A B/32 checkpoint is not a B/16 one: every patch-embedding, position-embedding and (for another width)
    every layer's shape differs, and another depth leaves blocks missing or unused. torch raises dozens of
    ``size mismatch`` errors; flax loads the arrays and fails at apply time; big_vision's ``merge_params``
    reports the block keys.

Example
    $ ckptlint check tiny_clippo.npz --arch clippo:B/16
    CK112 error    different variant: the checkpoint is vision patch 8, width 32, depth 2, heads 2, mlp 64,
                   embed dim 32 (custom); clippo B/16 expects vision patch 16, width 768, depth 12, heads 12,
                   mlp 3072, embed dim 768
                   fix: check it as the variant it is, `ckptlint check tiny_clippo.npz --arch clippo`, or use
                   the B/16 checkpoint

Fix
    Build the model with the checkpoint's variant (``--arch NAME`` without a variant lets ckptlint infer it
    from the shapes), or find the checkpoint of the variant you meant.
"""

from __future__ import annotations

import re

from ckptlint.archs.detect import VARIANT_FIELDS, describe
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule
from ckptlint.suggest import check_command, code

_NUM = re.compile(r"\d+")


class VariantDiffers(Message):
    code = "CK112"
    message = (
        "different variant: the checkpoint is {file_desc} ({file_variant}); {requested} expects {exp_desc}"
    )
    cause = "the checkpoint was trained as another variant of {arch} than the one requested"
    fix = "check it as the variant it is, {command}, or use the {exp_variant} checkpoint"


def _template(key: str) -> str:
    return _NUM.sub("#", key)


@rule(
    "CK112",
    "error",
    "different variant (patch size, width, depth…) than requested",
    stage=Stage.MODEL,
    order=4,
    rank=70,
)
class VariantRule(Rule):
    needs = "user"

    def check(self, ctx: Context) -> list[Message]:
        if ctx.exp_framework is None or ctx.exp_framework != ctx.file_framework:
            return []
        if not (ctx.shape or ctx.missing or ctx.unexpected):  # DECL-HF: all explained already (CK113)
            return []
        exp_s, file_s = ctx.exp_structure.towers, ctx.file_structure.towers
        diff_exp: list[str] = []
        diff_file: list[str] = []
        fields: dict[str, dict[str, list[int]]] = {}
        exp_keys, file_keys = ctx.exp_structure.keys, ctx.file_structure.keys
        for tower in sorted(set(exp_s) & set(file_s)):
            # a field read from a transposed kernel (CK109) says nothing about the variant
            skip = {
                n
                for n, k in {**exp_keys.get(tower, {}), **file_keys.get(tower, {})}.items()
                if k in ctx.transposed
            }
            e = {k: v for k, v in exp_s[tower].items() if k in VARIANT_FIELDS and k not in skip}
            f = {k: v for k, v in file_s[tower].items() if k in VARIANT_FIELDS and k not in skip}
            changed = [k for k in VARIANT_FIELDS if k in e and k in f and e[k] != f[k]]
            if not changed:
                continue
            shown = [k for k in VARIANT_FIELDS if k in e and k in f]
            diff_exp.append(f"{tower} {describe({k: e[k] for k in shown})}")
            diff_file.append(f"{tower} {describe({k: f[k] for k in shown})}")
            fields[tower] = {k: [e[k], f[k]] for k in changed}
        if not fields:
            return []
        # the consequences: every remaining shape clash, and blocks present on one side only
        file_templates = {_template(k) for k in ctx.view}
        exp_templates = {_template(k) for k in ctx.exp}
        blocks_missing = [k for k in ctx.missing if _template(k) in file_templates]
        blocks_unexpected = [k for k in ctx.unexpected if _template(k) in exp_templates]
        if not ctx.shape and not blocks_missing and not blocks_unexpected:
            return []  # another finding already explains every shape (a transposed kernel, a wrapper...)
        shapes = ctx.consume_shape(list(ctx.shape))
        missing = ctx.consume_missing(blocks_missing)
        unexpected = ctx.consume_unexpected(blocks_unexpected)
        assert ctx.expected is not None
        arch = ctx.expected.arch
        exp_variant = ctx.expected.variant or "requested"
        inferred = ctx.inferred()
        file_variant = (
            inferred.variant
            if inferred is not None and inferred.arch == arch and inferred.variant
            else "custom"
        )
        requested = f"{arch} {ctx.expected.variant}" if ctx.expected.variant else arch
        as_is = (
            f"{arch}:{file_variant}" if file_variant != "custom" else arch
        )  # no variant: read from the shapes
        command = code(check_command(ctx.ckpt, "--arch", as_is))
        return [
            VariantDiffers(
                keys=shapes[:10] + missing[:5] + [ctx.file_key(k) for k in unexpected[:5]],
                details={
                    "fields": fields,
                    "expected_variant": ctx.expected.variant,
                    "checkpoint_variant": file_variant,
                    "shape_mismatches": len(shapes),
                    "missing_blocks": len(missing),
                    "unexpected_blocks": len(unexpected),
                },
                file_desc="; ".join(diff_file),
                file_variant=file_variant,
                requested=requested,
                exp_desc="; ".join(diff_exp),
                arch=arch,
                exp_variant=exp_variant,
                command=command,
            )
        ]
