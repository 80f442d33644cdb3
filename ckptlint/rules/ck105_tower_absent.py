"""CK105 — a whole tower (text or vision) is absent

What it does
    Reports when every key of one of the model's towers is missing and the checkpoint holds no such tower in
    any layout — e.g. a timm ``vit_base_patch16_clip_224.openai`` file (image tower only) checked as a full
    CLIP. The tower's keys (and the joint ``logit_scale``/``logit_bias``) are accounted for by this one
    finding. A CLIPPO checkpoint has no text tower by design: ``--arch clippo`` expects none, and against a
    two-tower architecture the finding says it is CLIPPO.

Why is this bad?
    Nothing fails. ``load_state_dict(strict=False)``, transformers' ``from_pretrained`` and open_clip's timm
    towers all leave the absent tower at its random initialisation and carry on: in the OpenCLIP report this
    rule is modelled on, ViT-B-16 zero-shot ImageNet accuracy fell from 68.3% (openai weights, both towers) to
    0.08% with timm's vision-only ``vit_base_patch16_clip_224.openai`` weights — with no error at all.

Example
    $ ckptlint check timm_vit_clip_tiny.safetensors --arch open_clip
    CK105 error    text tower absent: none of the 149 text-tower keys of open_clip (positional_embedding;
                   text_projection; transformer.… (144 keys); … 3 more) is in the checkpoint, which holds only
                   a vision tower (timm layout)
                   cause: load_state_dict(strict=False), from_pretrained and open_clip's timm towers leave the
                   text tower at its random initialisation without an error; zero-shot classification
                   collapses (OpenCLIP ViT-B-16 on ImageNet: 68.3% top-1 with both towers, 0.08% with timm's
                   vision-only vit_base_patch16_clip_224.openai)
                   fix: use weights with both towers (for timm's vit_*_clip_*.openai tags:
                   open_clip.create_model('ViT-B-16', pretrained='openai') and friends), or check the file as
                   a vision-only model (--arch timm-vit / hf-clip-vision / bv-vit)
    CK104 error    another framework's layout: timm_vit_clip_tiny.safetensors holds timm keys (33 of 33:
                   blocks.… (24 keys); cls_token; head.{bias,weight} (2 keys); … 6 more) and the model is
                   OpenCLIP (open_clip) / OpenAI CLIP; 182 of its 182 keys are missing

    $ ckptlint check tiny_clippo.npz --arch bv-siglip
    CK105 error    text tower absent: this is a CLIPPO one_tower checkpoint (img/ + t, no txt/, no b); CLIPPO
                   has no text tower by design — text is rendered as images and goes through the image tower —
                   but bv-siglip expects one (198 keys: txt/Embed_0/embedding; txt/pos_embedding;
                   txt/Encoder_0/… (194 keys); txt/head/{kernel,bias} (2 keys))
                   fix: check it with --arch clippo and load it with models.proj.clippo.one_tower

Fix
    Use a checkpoint that has both towers (for timm's ``vit_*_clip_*.openai`` tags: open_clip's
    ``pretrained='openai'`` weights of the same model), or load the file into a one-tower model
    (``--arch timm-vit`` / ``hf-clip-vision``). For CLIPPO, use ``--arch clippo``.
"""

from __future__ import annotations

from ckptlint.archs import detect, registry
from ckptlint.keygroups import collapse
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule

ZERO_SHOT = (
    "zero-shot classification collapses (OpenCLIP ViT-B-16 on ImageNet: 68.3% top-1 with both towers, "
    "0.08% with timm's vision-only vit_base_patch16_clip_224.openai)"
)


class TowerAbsent(Message):
    code = "CK105"
    message = (
        "{tower} tower absent: none of the {n} {tower}-tower keys of {arch} ({groups}) is in the checkpoint, "
        "which holds {holds}"
    )
    cause = "{cause}"
    fix = "{fix_text}"


class ClippoHasNoText(Message):
    code = "CK105"
    message = (
        "text tower absent: this is a CLIPPO one_tower checkpoint (img/ + t, no txt/, no b); CLIPPO has no "
        "text tower by design — text is rendered as images and goes through the image tower — but {arch} "
        "expects one ({n} keys: {groups})"
    )
    cause = (
        "CLIPPO (big_vision models/proj/clippo/one_tower.py) applies one ViT named img to images "
        "and to Unifont-rendered text"
    )
    fix = "check it with --arch clippo and load it with models.proj.clippo.one_tower"


@rule("CK105", "error", "a whole tower (text or vision) is absent", stage=Stage.MODEL, order=1, rank=35)
class TowerAbsentRule(Rule):
    needs = "any"

    def check(self, ctx: Context) -> list[Message]:
        out: list[Message] = []
        by_tower: dict[str, list[str]] = {}
        for k in ctx.exp:
            tower = ctx.exp_tower(k)
            if tower in ("vision", "text"):
                by_tower.setdefault(tower, []).append(k)
        if len(by_tower) < 2 and not (ctx.expected is not None and ctx.expected.towers):
            return []  # a one-tower model cannot miss "a tower" — that is just missing keys
        absent = [
            t
            for t, keys in by_tower.items()
            if t not in ctx.file_towers and not any(k in ctx.pairs or k in ctx.shape for k in keys)
        ]
        if not absent or len(absent) == len(by_tower):
            return out  # nothing absent, or nothing present at all (another layout: CK104's business)
        arch = ctx.expected.arch if ctx.expected else "the model"
        for tower in absent:
            keys = by_tower[tower]
            taken = ctx.consume_missing(keys)
            joint = ctx.consume_missing([k for k in ctx.exp if ctx.exp_tower(k) == "joint"])
            groups = "; ".join(collapse(taken, ctx.exp_sep, max_groups=4))
            details = {"tower": tower, "count": len(taken), "joint": joint}
            if tower == "text" and detect.recognise(ctx.file_params, "clippo"):
                out.append(
                    ClippoHasNoText(
                        keys=taken + joint,
                        details=details,
                        arch=arch,
                        n=len(taken),
                        groups=groups,
                    )
                )
                continue
            present = sorted(ctx.file_towers)
            layout = registry.title(ctx.file_framework) if ctx.file_framework else "unknown"
            holds = f"only a {' and '.join(present)} tower ({layout} layout)" if present else "neither tower"
            if ctx.torch_semantics:
                cause = (
                    "load_state_dict(strict=False), from_pretrained and open_clip's timm towers leave "
                    f"the {tower} tower at its random initialisation without an error"
                )
            else:
                cause = f"flax raises ScopeParamNotFoundError for /{taken[0]}"
            if tower == "text" and "vision" in present:
                cause += "; " + ZERO_SHOT
                timm = (
                    " (for timm's vit_*_clip_*.openai tags: "
                    "open_clip.create_model('ViT-B-16', pretrained='openai') and friends)"
                    if ctx.file_framework == "timm"
                    else ""
                )
                fix_text = (
                    f"use weights with both towers{timm}, or check the file as a vision-only model "
                    "(--arch timm-vit / hf-clip-vision / bv-vit)"
                )
            else:
                fix_text = f"use weights that include the {tower} tower, or a model without it"
            out.append(
                TowerAbsent(
                    keys=taken + joint,
                    details=details,
                    tower=tower,
                    n=len(taken),
                    arch=arch,
                    groups=groups,
                    holds=holds,
                    cause=cause,
                    fix_text=fix_text,
                )
            )
        return out
