"""CK108 — preprocessing metadata present but wrong for this architecture or pretrained tag

What it does
    Compares the preprocessing recorded with the weights (see CK107 for where it looks) with what the
    architecture family or the named pretrained tag was trained with: SigLIP needs mean = std = 0.5 (and
    open_clip's ``resize_mode='squash'``), CLIPPO ``value_range(-1,1)``; a pretrained tag (timm
    ``pretrained_cfg.tag``, open_clip tags) has its own mean/std/interpolation. Also checks that the recorded
    image size matches the resolution the position embedding was trained for.

Why is this bad?
    Nothing fails: the model runs on wrongly normalised or wrongly sized inputs and loses accuracy. The
    classic case is open_clip: ``create_model_and_transforms('ViT-B-16-SigLIP', pretrained='/local.pt')``
    knows no tag for a local file and uses its ``PreprocessCfg`` default — OpenAI CLIP mean/std,
    ``resize_mode='shortest'`` — and ``save_for_hf`` then writes exactly that into ``open_clip_config.json``.

Example
    $ ckptlint check siglip_clip_processor --arch hf-siglip    # SigLIP weights + CLIPImageProcessor config
    CK108 error    preprocessing wrong for SigLIP: preprocessor_config.json records mean openai (0.481455,
                   0.457827, 0.408211), std openai (0.26863, 0.261303, 0.275777); SigLIP was trained with mean
                   inception (0.5, 0.5, 0.5), std inception (0.5, 0.5, 0.5)
                   fix: use mean=std=(0.5, 0.5, 0.5) and resize_mode='squash' (open_clip:
                   create_model_and_transforms(..., force_preprocess_cfg=dict(mean=(0.5,)*3, std=(0.5,)*3,
                   resize_mode='squash')); rewrite the preprocess_cfg / image_mean / image_std in the sidecar)

Fix
    Correct the sidecar (or pass the right values: open_clip ``force_preprocess_cfg=dict(mean=…, std=…,
    resize_mode=…)``, transformers ``image_mean``/``image_std``), using the values of the family
    or tag the finding names.
"""

from __future__ import annotations

from typing import Any

from ckptlint.archs import detect, registry
from ckptlint.rules._context import Context
from ckptlint.rules._preprocessing import close, gather, named
from ckptlint.rules.base import Message, Rule, Stage, rule


class WrongForFamily(Message):
    code = "CK108"
    message = (
        "preprocessing wrong for {title}: {source} records {recorded}; {title} was trained with {wanted}"
    )
    cause = "{cause}"
    fix = "{fix_text}"


class WrongForTag(Message):
    code = "CK108"
    message = (
        "preprocessing wrong for pretrained tag {tag}: {source} records {recorded}; the tag uses {wanted}"
    )
    cause = "the sidecar was written with another tag's (or a default) preprocessing"
    fix = "use the tag's values: {wanted}"


class WrongSize(Message):
    code = "CK108"
    message = (
        "preprocessing size {size} recorded in {source} does not match the weights: the position "
        "embedding is for {image}×{image} images ({grid}×{grid} patches of {patch})"
    )
    cause = (
        "the sidecar belongs to another resolution of the model (or a library default, e.g. timm "
        "keeps input_size 224 when built with another img_size)"
    )
    fix = (
        "record size {image} in the sidecar, or resample the position embedding to the size you preprocess to"
    )


def family(ctx: Context) -> str | None:
    """The preprocessing family (siglip, clippo) of the checkpoint under check, if any."""
    arch = ctx.expected.arch if ctx.expected is not None else None
    return detect.profile_of(arch, ctx.file_params)


def _fmt(v: Any) -> str:
    if isinstance(v, list):
        return named(v)
    return repr(v)


def _compare(pp: Any, wanted: dict[str, Any]) -> tuple[list[str], list[str], str]:
    """Fields that differ: (recorded texts, wanted texts, sources)."""
    recorded, want, sources = [], [], []
    for name in ("mean", "std", "interpolation", "resize_mode"):
        if name not in wanted or name not in pp.fields:
            continue
        have = pp.fields[name]
        ok = close(have.value, wanted[name]) if name in ("mean", "std") else have.value == wanted[name]
        if not ok:
            recorded.append(f"{name} {_fmt(have.value)}")
            want.append(f"{name} {_fmt(wanted[name])}")
            if have.source not in sources:
                sources.append(have.source)
    return recorded, want, ", ".join(sources)


@rule(
    "CK108",
    "error",
    "preprocessing metadata present but wrong for this architecture or pretrained tag",
    stage=Stage.METADATA,
    order=3,
    rank=105,
)
class PreprocessingWrongRule(Rule):
    needs = "none"

    def check(self, ctx: Context) -> list[Message]:
        pp = gather(ctx.ckpt)
        if not pp.fields:
            return []
        out: list[Message] = []
        tags = registry.tags()
        fam_name = family(ctx)
        if pp.tag in tags:
            recorded, wanted, source = _compare(pp, tags[pp.tag])
            if recorded:
                out.append(
                    WrongForTag(
                        details={"tag": pp.tag},
                        tag=pp.tag,
                        source=source,
                        recorded=", ".join(recorded),
                        wanted=", ".join(wanted),
                    )
                )
        elif fam_name is not None:
            fam = registry.profiles()[fam_name]
            recorded, wanted, source = _compare(pp, fam)
            if recorded:
                out.append(
                    WrongForFamily(
                        details={"family": fam_name, "recorded": {k: v.value for k, v in pp.fields.items()}},
                        title=fam["title"],
                        source=source,
                        recorded=", ".join(recorded),
                        wanted=", ".join(wanted),
                        cause=fam["cause"] + f" (reference: {fam['source']})",
                        fix_text=fam["fix"],
                    )
                )
        size = pp.fields.get("size")
        vision = ctx.file_structure.towers.get("vision", {})
        image = vision.get("image_size")
        if "image_size" in ctx.contradicted:  # CK113 named the declared image size already
            size = None
        declared = ctx.expected.params.get("declared") if ctx.expected is not None else None
        if isinstance(declared, dict) and size is not None and size.source == declared.get("file"):
            size = None  # the declaration's own image size is a model field: CK113 compares it
        if size is not None and image is not None and isinstance(size.value, int) and size.value != image:
            out.append(
                WrongSize(
                    details={"recorded": size.value, "weights": image},
                    size=size.value,
                    source=size.source,
                    image=image,
                    grid=vision["grid"],
                    patch=vision["patch"],
                )
            )
        return out
