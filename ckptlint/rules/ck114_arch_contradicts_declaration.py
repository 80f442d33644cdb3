"""CK114 — the requested architecture contradicts the declared one

What it does
    When ``--arch`` names a model of the same framework as the declaration next to the weights, and that
    declaration describes another model — transformers ``config.json`` declares ``model_type siglip`` and the
    request is ``--arch hf-clip``; ``open_clip_config.json`` declares a SigLIP model (or any other configuration)
    and the request is ``--arch open_clip:ViT-B-16`` — it says so first, and folds the findings that follow from
    the choice (missing, unexpected and resized keys, another variant, towers, preprocessing for the requested
    model) into this one: they stay in its ``details["folded"]`` and in the raw diff, not as root causes of their
    own. (A request in another framework than the declaration is CK104's: the file is in another layout.)

Why is this bad?
    Every difference with the requested model is then a consequence of asking for the wrong model, not a defect of
    the weights; listed one by one they hide the one thing to change — the ``--arch`` (or the declaration, if it is
    the declaration that is wrong).

Example
    $ ckptlint check hf_siglip_tiny --arch hf-clip
    CK114 error    --arch hf-clip asks for transformers CLIPModel, but config.json declares model_type siglip
                   (hf-siglip: transformers SiglipModel) …
                   fix: check it against what it declares: drop --arch (or --arch hf-siglip); to use the
                   weights as hf-clip, convert them and write the matching config

Fix
    Drop ``--arch`` to check the weights against their declaration, or give the declared architecture. If the
    weights really are the requested model, the declaration is wrong: fix the config next to them.
"""

from __future__ import annotations

from ckptlint.declared.requested import Conflict, conflict, shown
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule

# findings that compare the weights with the requested model: consequences of asking for the wrong one
FOLDS = (
    "CK100",
    "CK101",
    "CK102",
    "CK103",
    "CK104",
    "CK105",
    "CK106",
    "CK108",
    "CK109",
    "CK110",
    "CK112",
    "CK113",
)


class OtherModel(Message):
    code = "CK114"
    message = "--arch {requested} asks for {requested_title}, but {file} declares {declared}"
    cause = (
        "{file} is what the library builds the model from; the requested model is another one, so every "
        "difference with it follows from the request"
    )
    fix = (
        "check it against what it declares: drop --arch{declared_flag}; to use the weights as {requested}, "
        "convert them and write the matching config"
    )


class OtherParameters(Message):
    code = "CK114"
    message = "--arch {requested} asks for other parameters than {file} declares ({declared}): {differences}"
    cause = (
        "{file} is what the library builds the model from; the request differs from it, so every difference "
        "with the requested model follows from the request"
    )
    fix = (
        "check it against what it declares: drop --arch (or --arch {arch} without a variant, read from {file}); if "
        "the weights are {requested}, fix {file}"
    )


def _request(ctx: Context) -> str:
    assert ctx.expected is not None
    e = ctx.expected
    return f"{e.arch}:{e.variant}" if e.params.get("variant_given") and e.variant else e.arch


@rule(
    "CK114",
    "error",
    "the requested architecture contradicts the declared one",
    stage=Stage.MODEL,
    order=0,
    rank=5,
)
class ArchContradictsDeclarationRule(Rule):
    needs = "user"

    def check(self, ctx: Context) -> list[Message]:
        assert ctx.expected is not None
        found: Conflict | None = conflict(ctx.ckpt, ctx.expected, _request(ctx))
        if found is None:
            return []
        details = {
            "file": found.file,
            "requested": found.requested,
            "declared": found.declared,
            "declared_arch": found.declared_arch,
            "folds": list(FOLDS),
        }
        if found.differences:
            details["differences"] = found.differences
            return [
                OtherParameters(
                    details=details,
                    requested=found.requested,
                    file=found.file,
                    declared=found.declared,
                    differences=shown(found.differences),
                    arch=ctx.expected.arch,
                )
            ]
        declared_flag = f" (or --arch {found.declared_arch})" if found.declared_arch else ""
        return [
            OtherModel(
                details=details,
                requested=found.requested,
                requested_title=found.requested_title,
                file=found.file,
                declared=found.declared,
                declared_flag=declared_flag,
            )
        ]
