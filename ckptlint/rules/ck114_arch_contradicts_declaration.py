"""CK114 — the requested architecture contradicts the declared one

What it does
    When ``--arch`` names a model of the same framework as the declaration next to the weights, and that
    declaration describes another model — transformers ``config.json`` declares ``model_type siglip`` and the
    request is ``--arch hf-clip``; ``open_clip_config.json`` declares a SigLIP model (or any other configuration)
    and the request is ``--arch open_clip:ViT-B-16`` — it says so first, and folds the findings that follow from
    the choice (missing, unexpected and resized keys, another variant, towers, preprocessing for the requested
    model) into this one: they stay in its ``details["folded"]`` and in the raw diff, not as root causes of their
    own. (A request in another framework than the declaration is CK104's: the file is in another layout.) A
    transformers task class requested on the weights of the base model config.json declares (``--arch
    BertForMaskedLM``, ``architectures: [BertModel]``) is one too: ``from_pretrained`` loads them and initialises
    the head anew, so the missing head follows from the request.

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

from ckptlint import suggest
from ckptlint.declared.requested import Conflict, conflict, requested_head, shown
from ckptlint.keygroups import some
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


class HeadNotInWeights(Message):
    code = "CK114"
    message = (
        "--arch {requested} asks for a task model, but {file} declares {declared} and the weights are that model "
        "only: {head} {verb} not in them"
    )
    cause = (
        "{requested}.from_pretrained({folder}) loads them under {base}. and initialises the head randomly "
        "(transformers warns that these weights are newly initialized: that is how a head is fine-tuned){dropped}; "
        "checked as {requested}, the head is missing"
    )
    fix = (
        "check the weights as what they are: drop --arch (or give --arch {declared}); to use them as {requested}, "
        "fine-tune the head first, or use weights that include it"
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
            return _head(ctx)
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


def _head(ctx: Context) -> list[Message]:
    assert ctx.expected is not None
    head = requested_head(ctx, ctx.expected)
    if head is None:
        return []
    b = head.found
    shown = ", ".join(b.head[:3]) + (f" (+{len(b.head) - 3} more)" if len(b.head) > 3 else "")
    return [
        HeadNotInWeights(
            keys=b.head + [ctx.file_key(k) for k in b.unused],
            details={
                "file": head.file,
                "requested": head.requested,
                "declared": head.declared,
                "declared_arch": head.declared,
                "base_prefix": b.base,
                "head": b.head,
                "unused": [ctx.file_key(k) for k in b.unused],
                "folds": list(FOLDS),
            },
            requested=head.requested,
            file=head.file,
            declared=head.declared,
            head=shown,
            verb="is" if len(b.head) == 1 else "are",
            folder=repr(suggest.folder_of(ctx.ckpt)),
            base=b.base,
            dropped=f", and drops what it has no place for ({some(b.unused)})" if b.unused else "",
        )
    ]
