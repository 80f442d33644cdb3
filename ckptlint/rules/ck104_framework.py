"""CK104 — checkpoint is in another framework's layout

What it does
    Recognises when the checkpoint's keys are another framework's names for the model — transformers
    (``vision_model.encoder.layers.N.self_attn.q_proj``), open_clip/OpenAI
    (``visual.transformer.resblocks.N``), timm (``blocks.N.attn.qkv``), big_vision
    (``Transformer/encoderblock_N``) — and names the file or converter to use instead, rather than listing
    every key as missing and unexpected.

Why is this bad?
    Nothing of the model loads. torch's strict load fails with a wall of missing/unexpected keys (34 150
    characters for an HF CLIPModel into open_clip ViT-B-16); ``strict=False``, transformers'
    ``from_pretrained`` and timm's ``pretrained_cfg_overlay`` load nothing and keep the random initialisation
    without raising. The conversion between layouts is not a rename: q/k/v are fused or split, projections
    transposed, class tokens and position embeddings reshaped.

Example
    $ ckptlint check hf_clip_tiny --arch open_clip
    CK104 error    another framework's layout: model.safetensors holds transformers (Hugging Face) keys (77 of 77:
                   text_model.… (36 keys); text_projection.weight; vision_model.… (39 keys);
                   visual_projection.weight) and the model is OpenCLIP (open_clip) / OpenAI CLIP; 61 of its 62
                   keys are missing
                   cause: open_clip has no transformers→open_clip converter: open_clip/convert.py converts only
                   big_vision SigLIP .npz and MobileCLIP, and load_checkpoint passes transformers keys through
                   unchanged
                   fix: `ckptlint convert --to open_clip hf_clip_tiny OUT` (the open_clip-hf table; the target's
                   config files included); or use the open_clip weights file published next to these
                   (open_clip_pytorch_model.bin / open_clip_model.safetensors in the same Hub repo, which
                   open_clip.create_model_and_transforms('hf-hub:' + the Hub repo id) picks), or keep
                   transformers: CLIPModel.from_pretrained('hf_clip_tiny') (CLIPVisionModel for a vision-only
                   folder); ckptlint diff of this file against an open_clip file of the same model shows the full
                   key mapping

Fix
    When a conversion table of the family files converts the checkpoint into the expected architecture, the fix
    is ``ckptlint convert IN OUT --to ARCH`` (``ckptlint convert --list`` shows the pairs), and the finding
    carries it as a ``convert`` edit for ``ckptlint fix``; when the weights cannot tell something the target
    declares (attention heads, the activation), the command names the ``--set`` to add. Otherwise use the weights
    file published for the framework you load with (a Hub repo often has both
    ``model.safetensors`` for transformers and ``open_clip_pytorch_model.bin`` for open_clip), or convert:
    timm's ``checkpoint_filter_fn`` (open_clip/OpenAI → timm), ``open_clip.convert.load_big_vision_weights``
    (big_vision SigLIP → open_clip), timm's ``load_pretrained`` (big_vision .npz → timm), transformers'
    ``convert_clip_original_pytorch_to_hf.py`` (OpenAI/open_clip → transformers). open_clip has no
    transformers → open_clip converter.
"""

from __future__ import annotations

import posixpath

from ckptlint import suggest
from ckptlint.archs import detect, registry
from ckptlint.edits import Convert
from ckptlint.keygroups import collapse
from ckptlint.rules._context import Context
from ckptlint.rules.base import Message, Rule, Stage, rule


class ForeignLayout(Message):
    code = "CK104"
    message = (
        "another framework's layout: {name} holds {src_title} keys ({n_src} of {n_file}: {groups}) and the "
        "model is {dst_title}; {n_missing} of its {n_exp} keys are missing"
    )
    cause = "{note}"
    fix = "{fix_text}"


class HostedForeignLayout(ForeignLayout):
    """The expected framework hosts that layout natively (open_clip loads timm towers): shown after an absent
    tower (CK105, rank 35), which is then the root cause, instead of before it (the rule's rank 33)."""

    rank = 55


def _conversion(ctx: Context) -> tuple[str, list[Convert]]:
    """``ckptlint convert IN OUT --to ARCH`` when a family-file table converts this checkpoint into the expected
    architecture (planned from the headers, as ``convert`` will), and the ``convert`` edit when the command works
    as written; with the ``--set`` the weights cannot tell otherwise; nothing when no table fits."""
    exp = ctx.expected
    if exp is None or exp.source not in ("flag", "inferred") or not exp.arch:
        return "", []
    to = exp.arch + (f":{exp.variant}" if exp.params.get("variant_given") and exp.variant else "")
    # imported here: the planner pulls in the writers, which a check without a framework mismatch never needs
    # (start-up time); no cycle hides here (tests/test_structure.py sees imports inside functions)
    from ckptlint.convert.plan import plan_conversion

    try:
        plan = plan_conversion(ctx.ckpt, to)
    except (
        Exception
    ):  # no table fits (UsageError), or planning failed: the advice alone; a check never fails here
        return "", []
    if plan.problems or not suggest.local(ctx.ckpt):
        return "", []
    command = suggest.command("convert", ctx.ckpt, "--to", to)
    if plan.missing:
        wanted = ", ".join(plan.missing)
        return f"{command} with --set NAME=VALUE for each of {wanted} (the weights cannot tell {wanted})", []
    return (
        f"{suggest.code(command)} (the {plan.direction.conv.name} table; the target's config files included)",
        [Convert(table=plan.direction.conv.name, to=to)],
    )


def _name(ctx: Context) -> str:
    files = [f for f in ctx.ckpt.files if f]
    return posixpath.basename((files[0] if files else ctx.ckpt.path).replace("\\", "/")) or ctx.ckpt.path


@rule(
    "CK104",
    "error",
    "checkpoint is in another framework's layout; names the file or conversion to use",
    stage=Stage.MODEL,
    order=2,
    rank=33,
)
class FrameworkRule(Rule):
    needs = "any"

    def check(self, ctx: Context) -> list[Message]:
        if not ctx.unexpected or not (ctx.missing or ctx.shape):
            return []
        dst = ctx.exp_framework
        src = (
            detect.classify(k for k in ctx.unexpected if ctx.file_key(k) not in ctx.training.state)
            or ctx.file_framework
        )
        if dst is None or src is None or src == dst:
            return []
        candidates = [k for k in ctx.unexpected if ctx.file_key(k) not in ctx.training.state]
        src_keys = [k for k in candidates if detect.is_signature(k, src)]
        if len(src_keys) * 2 < len(candidates):
            return []  # not mostly that framework's names
        n_file = len(candidates)
        n_missing = len(ctx.raw.missing) if ctx.raw is not None else len(ctx.missing)
        unexpected = ctx.consume_unexpected(list(ctx.unexpected))
        missing = ctx.consume_missing(list(ctx.missing))
        ctx.consume_shape(list(ctx.shape))
        conv = registry.advice(src, dst) or {
            "fix": f"load it with {registry.title(src)}, or find the {registry.title(dst)} release of these weights",
            "note": f"no known converter from {registry.title(src)} to {registry.title(dst)}",
        }
        command, edits = _conversion(ctx)
        advice = suggest.fill(conv["fix"], ctx.ckpt, folder=repr(suggest.folder_of(ctx.ckpt)))
        fix_text = f"{command}; or {advice}" if command else advice
        hosted = registry.hosts(dst, src)
        kind = HostedForeignLayout if hosted else ForeignLayout
        msg = kind(
            edits=edits,
            keys=[ctx.file_key(k) for k in unexpected[:10]] + missing[:10],
            details={
                "from": src,
                "to": dst,
                "hosted": hosted,
                "missing": len(missing),
                "unexpected": len(unexpected),
            },
            name=_name(ctx),
            src_title=registry.title(src),
            dst_title=registry.title(dst),
            n_src=len(src_keys),
            n_file=n_file,
            groups="; ".join(collapse(src_keys, ctx.file_sep, max_groups=4)),
            n_missing=n_missing,
            n_exp=len(ctx.exp),
            note=conv["note"],
            fix_text=fix_text,
        )
        return [msg]
