"""CK107 — preprocessing metadata absent

What it does
    For an image model, looks for what its inputs must look like — image size, mean/std, interpolation (and a
    tokenizer for a text tower) — in the sidecar configs next to the weights (transformers
    ``preprocessor_config.json`` and ``config.json``, open_clip ``open_clip_config.json``, timm's
    ``config.json`` ``pretrained_cfg``, tokenizer files) and in the file's embedded metadata (safetensors
    ``__metadata__``, non-tensor entries of a torch dict). Reports what is not recorded anywhere.

Why is this bad?
    Weights are only half a model: fed with the wrong mean/std or size, it runs and quietly performs worse.
    Loaders fill the gap with defaults — open_clip uses OpenAI CLIP mean/std and ``resize_mode='shortest'``
    for any local file, which is wrong for SigLIP (mean = std = 0.5, ``squash``). big_vision keeps
    preprocessing in the training config (``resize(224)|value_range(-1,1)``), never in the ``.npz``.

Example
    $ ckptlint check tiny_clippo.npz --arch clippo
    CK107 warning  preprocessing metadata absent: no mean/std/size/interpolation recorded for an image model
                   cause: big_vision keeps preprocessing in the training config (pp strings such as
                   resize(224)|value_range(-1,1)), never in the .npz
                   fix: write a sidecar config next to the weights (transformers preprocessor_config.json,
                   open_clip open_clip_config.json preprocess_cfg, or timm config.json pretrained_cfg; see
                   `ckptlint explain CK107`); for CLIPPO: mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)

Fix
    Publish the preprocessing with the weights: ``preprocessor_config.json`` (transformers), an
    ``open_clip_config.json`` with ``preprocess_cfg`` (open_clip's ``save_for_hf`` writes one, check its
    values), timm's ``config.json`` with ``pretrained_cfg``, or safetensors metadata. For
    big_vision, ship the config.
"""

from __future__ import annotations

from ckptlint.archs import detect, registry
from ckptlint.rules._context import Context
from ckptlint.rules._preprocessing import gather, named
from ckptlint.rules.base import Message, Rule, Stage, rule

SIDECARS = (
    "write a sidecar config next to the weights (transformers preprocessor_config.json, open_clip "
    "open_clip_config.json preprocess_cfg, or timm config.json pretrained_cfg; see `ckptlint explain CK107`)"
)


class PreprocessingAbsent(Message):
    code = "CK107"
    message = "preprocessing metadata absent: no {missing} recorded for an image model{tokenizer}"
    cause = "{cause}"
    fix = "{fix_text}"


class PreprocessingIncomplete(Message):
    code = "CK107"
    message = "preprocessing metadata incomplete: no {missing} recorded ({found} from {sources}){tokenizer}"
    cause = "{cause}"
    fix = "{fix_text}"


def known_values(ctx: Context) -> str | None:
    """The preprocessing this architecture family is known to need, as text (for the fix)."""
    arch = ctx.expected.arch if ctx.expected is not None else None
    fam = detect.profile_of(arch, ctx.file_params)
    if fam is None:
        return None
    f = registry.profiles()[fam]
    parts = [f"mean={tuple(f['mean'])}", f"std={tuple(f['std'])}"]
    if "resize_mode" in f:
        parts.append(f"resize_mode={f['resize_mode']!r}")
    return f"for {f['title']}: " + ", ".join(parts)


@rule(
    "CK107",
    "warning",
    "preprocessing metadata absent (image size, mean/std, interpolation, tokenizer)",
    stage=Stage.METADATA,
    order=2,
    rank=100,
)
class PreprocessingAbsentRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        declared = ctx.expected.params.get("declared") if ctx.expected is not None else None
        modalities = declared.get("modalities") if isinstance(declared, dict) else None
        if modalities:  # DECL-HF: the declared model says what it takes in (a Llama is no image model)
            towers = {m for m in modalities if m in ("vision", "text")}
        else:
            towers = set(ctx.file_towers)
            if ctx.expected is not None:  # the towers the expected keys show (markers), not per-key guesses
                towers |= ctx.exp_towers_present | set(ctx.expected.towers)
        if "vision" not in towers:
            return []
        pp = gather(ctx.ckpt)
        missing = [f for f in ("mean", "std", "size", "interpolation") if f not in pp.fields]
        if "text" in (towers if modalities else ctx.file_towers) and pp.tokenizer is None:
            missing.append("tokenizer")
        if not missing:
            return []
        framework = ctx.file_framework or ctx.exp_framework
        if registry.preprocessing_note(framework):
            cause = registry.preprocessing_note(framework)
        elif not pp.sources:
            cause = (
                "the file carries only tensors, so whoever loads it has to guess the preprocessing — "
                "open_clip, for one, falls back to OpenAI CLIP mean/std and resize_mode 'shortest' for any "
                "local file"
            )
        else:
            cause = (
                f"{', '.join(pp.sources)} describe{'s' if len(pp.sources) == 1 else ''} the rest, not these"
            )
        hint = known_values(ctx)
        fix_text = SIDECARS + (f"; {hint}" if hint else "")
        details = {
            "missing": missing,
            "found": {k: v.value for k, v in pp.fields.items()},
            "sources": pp.sources,
        }
        image_missing = [m for m in missing if m != "tokenizer"]
        text = "/".join(image_missing) if image_missing else "tokenizer for the text tower"
        tokenizer = (
            " (and no tokenizer for its text tower)" if image_missing and "tokenizer" in missing else ""
        )
        if not pp.fields:
            return [
                PreprocessingAbsent(
                    details=details, missing=text, tokenizer=tokenizer, cause=cause, fix_text=fix_text
                )
            ]
        found = ", ".join(
            f"{k} {named(v.value, short=True) if isinstance(v.value, list) else v.value}"
            for k, v in pp.fields.items()
            if k in ("size", "mean", "std", "interpolation")
        )
        return [
            PreprocessingIncomplete(
                details=details,
                missing=text,
                tokenizer=tokenizer,
                found=found or "other fields",
                sources=", ".join(pp.sources),
                cause=cause,
                fix_text=fix_text,
            )
        ]
