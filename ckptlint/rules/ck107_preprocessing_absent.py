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

from pathlib import PurePath

from ckptlint.archs import detect, registry
from ckptlint.rules._context import Context
from ckptlint.rules._preprocessing import gather, named
from ckptlint.rules.base import Message, Rule, Stage, rule

SIDECARS = (
    "write a sidecar config next to the weights (transformers preprocessor_config.json, open_clip "
    "open_clip_config.json preprocess_cfg, or timm config.json pretrained_cfg; see `ckptlint explain CK107`)"
)
# what to write when only the image side is missing, by the folder's own kind (its loader reads exactly that file)
IMAGE_SIDECAR = {
    "hf-dir": "write preprocessor_config.json next to the weights (image_processor.save_pretrained({dir}) "
    "does; see `ckptlint explain CK107`)",
    "open_clip-dir": "add preprocess_cfg (mean, std, interpolation, resize_mode) to open_clip_config.json (see "
    "`ckptlint explain CK107`)",
}
TOKENIZER = (
    "save the text tower's tokenizer next to the weights: tokenizer.save_pretrained({dir}) writes tokenizer.json "
    "/ tokenizer_config.json (and its vocabulary: vocab.json + merges.txt, or spiece.model)"
)
TOKENIZER_CAUSE = (
    "no tokenizer file (tokenizer.json, tokenizer_config.json, vocab.json/merges.txt, spiece.model) is next to "
    "the weights, so whoever loads the text tower has to guess how its text was tokenized"
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
            takes_text = "text" in towers
        else:
            towers = set(ctx.file_towers)
            takes_text = "text" in towers
            if ctx.expected is not None:  # the towers the expected keys show (markers), not per-key guesses
                model = ctx.exp_towers_present | set(ctx.expected.towers)
                towers |= model
                # a text tower both hold: a vision model needs no tokenizer, whatever else the file holds
                takes_text = takes_text and "text" in model
        if "vision" not in towers:
            return []
        pp = gather(ctx.ckpt)
        missing = [f for f in ("mean", "std", "size", "interpolation") if f not in pp.fields]
        if takes_text and pp.tokenizer is None:
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
            given = [k for k in ("size", "mean", "std", "interpolation") if k in pp.fields] or [
                "other fields"
            ]
            lacking = [m for m in missing if m != "tokenizer"]
            cause = (
                f"{' and '.join(pp.sources)} record{'s' if len(pp.sources) == 1 else ''} the "
                f"{'/'.join(given)} but not the {'/'.join(lacking)}, so whoever loads the weights has to guess "
                "those"
            )
        hint = known_values(ctx)
        image_missing = [m for m in missing if m != "tokenizer"]
        folder = ctx.ckpt.path if ctx.ckpt.format in IMAGE_SIDECAR else str(PurePath(ctx.ckpt.path).parent)
        tokenizer_fix = TOKENIZER.format(dir=repr(folder))
        if image_missing:
            fix_text = IMAGE_SIDECAR.get(ctx.ckpt.format, SIDECARS).format(dir=repr(folder))
            fix_text += f"; {hint}" if hint else ""
            if (
                "tokenizer" in missing and ctx.ckpt.format == "hf-dir"
            ):  # from_pretrained reads them from there
                fix_text += f"; and {tokenizer_fix}"
        else:  # the image side is described: only the tokenizer is missing
            fix_text = tokenizer_fix
            cause = f"{', '.join(pp.sources)} describe{'s' if len(pp.sources) == 1 else ''} the images; {TOKENIZER_CAUSE}"
        details = {
            "missing": missing,
            "found": {k: v.value for k, v in pp.fields.items()},
            "sources": pp.sources,
        }
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
