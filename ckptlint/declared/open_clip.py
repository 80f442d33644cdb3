"""open_clip's declaration: ``open_clip_config.json``, as ``create_model('local-dir:DIR')`` / ``'hf-hub:REPO'`` reads it.

The loader builds ``CLIP(**model_cfg)`` (``CustomTextCLIP`` with ``custom_text``) from ``model_cfg``; the fields map
to the ``open_clip`` architecture's parameters in ``[archs.open_clip.config]`` (``rules/archs/open_clip.toml``),
with open_clip's ``CLIPVisionCfg`` / ``CLIPTextCfg`` defaults. What the tables cannot say is here: the features
ckptlint has no tree for (ResNet and CoCa towers, transformers text towers, custom attention blocks) and timm
image towers (``vision_cfg.timm_model_name``), whose trunk is timm-vit's model of that name as open_clip's
``TimmModel`` builds it (described from open_clip 3.3 ``timm_model.py`` and timm 1.0 ``vision_transformer.py``).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from ckptlint.archs.spec import load_arch, variant_params
from ckptlint.declared import declaration
from ckptlint.declared.declaration import Declaration, NotBuildable
from ckptlint.record import replace

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint, Sidecar
    from ckptlint.expected import Expected, Unchecked

KIND = "open_clip-config"
FRAMEWORK = "open_clip"
LOADER = "open_clip.create_model_from_pretrained({local_dir})"
DEFAULTS = "open_clip's default"
LIBRARY = "open_clip"
# what the loader does with the keys a contradicted field changes (CK113's cause), and how to repair a refused file
MISMATCH = "load_state_dict raises size mismatch for {keys}"
MISSING = "{n} declared parameters are not in the weights and stay random ({keys})"
UNEXPECTED = "{n} weights are left over (unexpected keys: {keys})"
REPAIR = "repair {file} (open_clip's save_for_hf writes a complete one), or remove it"
_CUSTOM_BLOCK = ("qk_norm", "scaled_cosine_attn", "scale_heads", "scale_attn_inner", "scale_attn", "scale_fc")
_AVG_POOLS = ("avg", "avgmax", "max")
# timm-vit parameters a trunk takes from timm's model (all but the classifier, set by open_clip)
_TRUNK = (
    "width", "depth", "heads", "mlp_dim", "patch", "image_size", "class_token", "reg_tokens", "no_embed_class",
    "pos_embed", "pre_norm", "embed_norm", "qkv_bias", "qk_norm", "proj_bias", "scale_attn_norm",
    "scale_mlp_norm", "ls", "global_pool", "norm", "fc_norm",
)  # fmt: skip


class Refused(Exception):
    """open_clip itself refuses the declaration (the message says why, as its loader would)."""


def document(content: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The document the loader reads (the file itself) and where its fields come from (the same paths)."""
    cfg = content.get("model_cfg")
    if not isinstance(cfg, dict):
        raise Refused("it has no model_cfg (open_clip: \"Local config ... missing 'model_cfg'\")")
    for part in ("vision_cfg", "text_cfg"):
        if not isinstance(cfg.get(part), dict):
            raise Refused(f"model_cfg has no {part} (open_clip's create_model fails with KeyError: '{part}')")
    if "embed_dim" not in cfg:
        raise Refused("model_cfg has no embed_dim (CLIP.__init__() missing 'embed_dim')")
    _supported(cfg)
    return content, {}


def _supported(cfg: dict[str, Any]) -> None:
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    if "multimodal_cfg" in cfg:
        raise NotBuildable("it declares a CoCa model (model_cfg.multimodal_cfg)")
    if isinstance(vision.get("layers"), list):
        raise NotBuildable(
            f"it declares a ResNet image tower (model_cfg.vision_cfg.layers {vision['layers']})"
        )
    if vision.get("attentional_pool"):
        raise NotBuildable("it declares an attentional pooler (model_cfg.vision_cfg.attentional_pool)")
    if text.get("hf_model_name"):
        raise NotBuildable(
            f"it declares a transformers text tower (text_cfg.hf_model_name {text['hf_model_name']})"
        )
    for part, sub in (("vision_cfg", vision), ("text_cfg", text)):
        if sub.get("block_type") == "custom" or any(sub.get(k) for k in _CUSTOM_BLOCK):
            raise NotBuildable(f"it declares custom attention blocks (model_cfg.{part})")


def finish(decl: Declaration, doc: dict[str, Any]) -> Declaration:
    """The declaration with a timm image tower resolved, and named for reports."""
    cfg = doc["model_cfg"]
    vision = cfg["vision_cfg"]
    params, fields, derived = dict(decl.params), dict(decl.fields), dict(decl.derived)
    given = set(decl.given)
    trunk_name = vision.get("timm_model_name")
    if trunk_name:
        trunk = _timm_trunk(trunk_name, vision, params["embed_dim"])
        params.update(trunk, timm_trunk=True)
        # the trunk's geometry is timm's model of that name: its name is the field behind every part of it
        fields.update(dict.fromkeys(trunk, "model_cfg.vision_cfg.timm_model_name"))
        fields.update(
            trunk_num_classes="model_cfg.vision_cfg.timm_proj",
            timm_proj="model_cfg.vision_cfg.timm_proj",
            timm_proj_bias="model_cfg.vision_cfg.timm_proj_bias",
        )
        derived = {k: v for k, v in derived.items() if k not in trunk}
        given |= set(trunk)
    else:
        params["timm_trunk"] = False
    siglip = params.get("logit_bias")
    kind = "CustomTextCLIP" if params.get("custom_text") else "CLIP"
    what = f"open_clip {kind}" + (" with a SigLIP loss (init_logit_bias)" if siglip else "")
    if trunk_name:
        what += f", timm {trunk_name} image tower"
    opaque = frozenset(_TRUNK) if trunk_name else frozenset()
    return replace(
        decl, params=params, fields=fields, derived=derived, given=frozenset(given), what=what, opaque=opaque
    )


def _timm_trunk(name: str, vision: dict[str, Any], embed_dim: int) -> dict[str, Any]:
    """open_clip ``TimmModel(name, pool, proj, proj_bias)``'s trunk and head, as open_clip parameters."""
    spec = load_arch("timm-vit")
    fixed = variant_params(spec, name)
    if fixed is None:
        raise NotBuildable(f"its image tower is timm {name}, which ckptlint has no tree for")
    base = {**spec.params, **fixed}
    pool = vision.get("timm_pool", "avg")
    proj = vision.get("timm_proj", "linear")  # an explicit null is not 'linear': the trunk's head projects
    if pool in ("abs_attn", "rot_attn", "prr"):
        raise NotBuildable(f"its timm image tower pools with {pool!r} (model_cfg.vision_cfg.timm_pool)")
    out = {k: base[k] for k in _TRUNK}
    if proj in ("linear", "mlp"):
        # timm's default model, then reset_classifier(0, global_pool=pool): drops a MAP pool for another pool
        out["trunk_num_classes"] = 0
        if pool:
            if pool == "map" and base["global_pool"] != "map":
                raise NotBuildable("timm cannot add attention pooling in reset_classifier (timm_pool 'map')")
            out["global_pool"] = pool
    else:
        # timm.create_model(name, num_classes=0 or embed_dim, global_pool=pool): norm placement follows the pool
        out["trunk_num_classes"] = 0 if proj == "none" else embed_dim
        out["global_pool"] = pool
        implicit = base["fc_norm"] == (base["global_pool"] in _AVG_POOLS)
        if implicit and (base["norm"] or base["fc_norm"]):
            out["fc_norm"] = pool in _AVG_POOLS
            out["norm"] = not out["fc_norm"]
    out["timm_proj"] = proj if proj in ("linear", "mlp") else "none"
    out["timm_proj_bias"] = bool(vision.get("timm_proj_bias", False))
    return out


def rename(decl: Declaration, doc: dict[str, Any]) -> Declaration:
    """A QuickGELU model is the ``-quickgelu`` variant of the same shapes (open_clip names it so)."""
    if doc["model_cfg"].get("quick_gelu") and decl.variant == decl.name:
        from ckptlint.archs.spec import load_arch

        quick = f"{decl.name}-quickgelu"
        if quick in load_arch(decl.arch).variants.names:
            return replace(decl, name=quick, variant=quick)
    return decl


# ---- the adapter's interface (ckptlint.declared.lookup) --------------------------------------------------------
def expected(ckpt: Checkpoint, sidecar: Sidecar) -> Expected | Unchecked | None:
    """The model the file declares (read through the architectures' config tables)."""
    return declaration.expected(sys.modules[__name__], sidecar)


def rebuild(ckpt: Checkpoint, info: dict[str, Any], overrides: dict[str, Any]) -> Expected | None:
    """The model of ``info`` (``params["declared"]``) built again from the same file with ``overrides``."""
    return declaration.rebuild(sys.modules[__name__], ckpt, info, overrides)
