"""Oracle tests for the declarative arch specs (rules/archs/*.toml): the expected tree equals the real model's.

For every architecture name the real library builds the model (tiny configs, or full size on the meta device) and
the spec's tree -- with the variant inferred from that model's own state_dict, and with the variant given
explicitly -- must equal its ``state_dict()`` keys, shapes, dtypes and order. big_vision has no installable package:
its ground truth is the team's verified run of big_vision's own code (the corpus npz files and
reference/big_vision_layouts.md). The full-size trees in reference/param_trees/ are checked too.
"""

from __future__ import annotations

import json
import math
import os
import sys
import types
from pathlib import Path
from typing import Any

import pytest
import torch
import tvshim  # noqa: F401  (must precede open_clip / timm)

# isort: split
import open_clip
import timm
import transformers
from cli_support import CONTRACT_ARCHS

from ckptlint.archs import list_archs, resolve_expected
from ckptlint.archs.spec import load_arch, variant_names
from ckptlint.checkpoint import Checkpoint, Sidecar, tensor_info
from ckptlint.errors import UsageError
from ckptlint.expected import Expected

Tree = dict[str, tuple[tuple[int, ...], str]]


# ---- helpers ---------------------------------------------------------------------------------------------------
def sd_tree(sd: dict[str, torch.Tensor]) -> Tree:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()}


def exp_tree(e: Expected) -> Tree:
    return {k: (tuple(t.shape), t.dtype) for k, t in e.tensors.items()}


def as_checkpoint(tree: Tree, key_sep: str = ".", sidecars: list[Sidecar] | None = None) -> Checkpoint:
    """A Checkpoint with exactly these keys (what a reader reports for a file holding this state_dict)."""
    tensors = {k: tensor_info(shape, dtype) for k, (shape, dtype) in tree.items()}
    return Checkpoint(
        path="<memory>", format="safetensors", key_sep=key_sep, tensors=tensors, sidecars=sidecars or []
    )


def assert_same_tree(expected: Expected, truth: Tree, ordered: bool = True) -> None:
    got = exp_tree(expected)
    missing, extra = sorted(set(truth) - set(got)), sorted(set(got) - set(truth))
    assert not missing and not extra, f"missing {missing[:5]} unexpected {extra[:5]}"
    wrong = {k: (got[k], truth[k]) for k in truth if got[k] != truth[k]}
    assert not wrong, f"shape/dtype differ (spec, truth): {dict(list(wrong.items())[:5])}"
    if ordered:
        assert list(got) == list(truth), "key order differs from state_dict()"


def meta_build(fn: Any, *args: Any, **kwargs: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return fn(*args, **kwargs)


def tiny_timm_entrypoint(name: str, **vit_kwargs: Any) -> str:
    """Register a tiny timm VisionTransformer under ``name`` (used as an open_clip timm trunk)."""
    from timm.models import register_model
    from timm.models.vision_transformer import VisionTransformer

    if name not in timm.list_models(name):

        def make(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
            factory_only = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")
            return VisionTransformer(
                **{**vit_kwargs, **{k: v for k, v in kwargs.items() if k not in factory_only}}
            )

        make.__name__ = name
        register_model(make)
    return name


def overrides(params: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in params.items())


# ---- the contract ----------------------------------------------------------------------------------------------
def test_every_contract_name_is_listed_with_source_and_variants() -> None:
    listed = {a.name: a for a in list_archs()}
    assert set(CONTRACT_ARCHS) <= set(listed)
    for name in CONTRACT_ARCHS:
        a = listed[name]
        assert a.description and a.source and a.variants, name
        assert a.default_variant in a.variants, name
    assert {"B/16", "L/14", "So400m/14", "Ti/16"} <= set(listed["clippo"].variants)
    assert {"ViT-B-16", "ViT-L-14", "ViT-B-16-SigLIP"} <= set(listed["open_clip"].variants)
    assert {"vit_base_patch16_clip_224", "vit_base_patch16_siglip_224"} <= set(listed["timm-vit"].variants)


def test_unknown_names_variants_and_parameters_are_usage_errors() -> None:
    with pytest.raises(UsageError, match=r"known: .*clippo"):
        resolve_expected("clipo", None)
    with pytest.raises(UsageError, match=r"unknown variant 'B/17x'.*B/16"):
        resolve_expected("clippo:B/17x", None)
    with pytest.raises(UsageError, match=r"unknown variant 'ViT-Q-16'.*ViT-B-16"):
        resolve_expected("open_clip:ViT-Q-16", None)
    with pytest.raises(UsageError, match="unknown parameter"):
        resolve_expected("clippo:B/16,colour=red", None)
    with pytest.raises(UsageError, match="repeat count"):
        resolve_expected("clippo:B/16,depth=100000000", None)


# ---- big_vision: ground truth from the team's verified run of big_vision's code --------------------------------
@pytest.fixture(scope="module")
def bv_layouts(corpus: Path) -> dict[str, Tree]:
    raw = json.loads((corpus / "big_vision" / "tiny_layouts.json").read_text())
    return {name: {k: (tuple(v[0]), v[2]) for k, v in tree.items()} for name, tree in raw.items()}


def params_group(tree: Tree, root: str = "params/") -> Tree:
    return {k[len(root) :]: v for k, v in tree.items() if k.startswith(root)}


def test_bv_tree_of_the_tiny_npz_matches_big_vision_npz(corpus: Path, bv_layouts: dict[str, Tree]) -> None:
    """The layout file was made from the npz files by big_vision's own utils; check it against the files."""
    import numpy as np

    with np.load(corpus / "big_vision" / "tiny_clippo.npz", allow_pickle=False) as z:  # trusted corpus file
        shapes = {k: tuple(z[k].shape) for k in z.files}
    assert shapes == {k: v[0] for k, v in bv_layouts["tiny_clippo.npz"].items()}


TINY_BV = {"width": 32, "depth": 2, "heads": 2, "mlp_dim": 64, "patch": 8, "image_size": 32}


def test_clippo_tiny_inferred_and_explicit(bv_layouts: dict[str, Tree]) -> None:
    truth = params_group(bv_layouts["tiny_clippo.npz"])
    inferred = resolve_expected("clippo", as_checkpoint(bv_layouts["tiny_clippo.npz"], "/"))
    assert_same_tree(inferred, truth, ordered=False)
    assert inferred.variant == "custom" and inferred.framework == "big_vision" and inferred.key_sep == "/"
    assert {k: inferred.params[k] for k in TINY_BV} == TINY_BV
    assert inferred.params["out_dim"] == 32 and inferred.params["pool"] == "map"
    assert inferred.params["root"] == "params/"
    assert inferred.towers == {"vision": ["img/"]}
    explicit = resolve_expected(f"clippo:B/16,{overrides(TINY_BV)},out_dim=32", None)
    assert_same_tree(explicit, truth, ordered=False)


@pytest.mark.parametrize("name", ["tiny_vit.npz", "tiny_vit_bare.npz"])
def test_bv_vit_tiny_inferred_and_explicit(bv_layouts: dict[str, Tree], name: str) -> None:
    tree = bv_layouts[name]
    truth = params_group(tree) if name == "tiny_vit.npz" else tree
    inferred = resolve_expected("bv-vit", as_checkpoint(tree, "/"))
    assert_same_tree(inferred, truth, ordered=False)
    assert inferred.params["pool"] == "map" and inferred.params["num_classes"] == 32
    explicit = resolve_expected(f"bv-vit:B/16,{overrides(TINY_BV)},pool=map,num_classes=32", None)
    assert_same_tree(explicit, truth, ordered=False)


def test_bv_vit_finds_the_vit_inside_a_clippo_checkpoint(bv_layouts: dict[str, Tree]) -> None:
    """big_vision_layouts.md §3: plain vit's tree is CLIPPO's img/ subtree (what `clippo.npz:img` loads)."""
    e = resolve_expected("bv-vit", as_checkpoint(bv_layouts["tiny_clippo.npz"], "/"))
    assert_same_tree(e, params_group(bv_layouts["tiny_vit.npz"]), ordered=False)
    assert e.params["root"] == "params/img/"


CLIPPO_B16 = {  # big_vision_layouts.md §2 (jax.eval_shape of one_tower.Model(**train_clippo.get_config().model))
    "img/embedding/kernel": (16, 16, 3, 768),
    "img/embedding/bias": (768,),
    "img/pos_embedding": (1, 196, 768),
    "img/Transformer/encoderblock_11/MultiHeadDotProductAttention_0/query/kernel": (768, 12, 64),
    "img/Transformer/encoderblock_0/MultiHeadDotProductAttention_0/key/bias": (12, 64),
    "img/Transformer/encoderblock_5/MultiHeadDotProductAttention_0/out/kernel": (12, 64, 768),
    "img/Transformer/encoderblock_0/MlpBlock_0/Dense_0/kernel": (768, 3072),
    "img/Transformer/encoderblock_0/MlpBlock_0/Dense_1/kernel": (3072, 768),
    "img/Transformer/encoder_norm/scale": (768,),
    "img/MAPHead_0/probe": (1, 1, 768),
    "img/MAPHead_0/MultiHeadDotProductAttention_0/value/kernel": (768, 12, 64),
    "img/MAPHead_0/LayerNorm_0/bias": (768,),
    "img/MAPHead_0/MlpBlock_0/Dense_1/bias": (768,),
    "img/head/kernel": (768, 768),
    "img/head/bias": (768,),
    "t": (1,),
}


def test_clippo_b16_full_tree_facts() -> None:
    e = resolve_expected("clippo:B/16", None)
    assert len(e.tensors) == 215
    assert sum(math.prod(t.shape) for t in e.tensors.values()) == 93_474_817
    assert {t.dtype for t in e.tensors.values()} == {"float32"}
    for key, shape in CLIPPO_B16.items():
        assert e.tensors[key].shape == shape, key
    assert not any(k.startswith("txt/") or k in ("b", "img/cls") or "pre_logits" in k for k in e.tensors)
    assert e.preprocessing["image_size"] == 224 and e.preprocessing["value_range"] == [-1, 1]
    # §2: other resolutions change only pos_embedding; §3: plain vit with the same config is img/* minus t
    e384 = resolve_expected("clippo:B/16,image_size=384", None)
    assert {k for k in e.tensors if e.tensors[k] != e384.tensors[k]} == {"img/pos_embedding"}
    assert e384.tensors["img/pos_embedding"].shape == (1, 576, 768)
    vit = resolve_expected("bv-vit:B/16,pool=map,num_classes=768", None)
    assert len(vit.tensors) == 214
    assert exp_tree(vit) == {k[4:]: v for k, v in exp_tree(e).items() if k.startswith("img/")}


def test_bv_siglip_b16_full_tree_facts() -> None:
    """big_vision_layouts.md §7: SigLIP B/16 two_towers tree (412 leaves, 203,155,970 parameters)."""
    e = resolve_expected("bv-siglip:B/16", None)
    count = {
        p: sum(math.prod(t.shape) for k, t in e.tensors.items() if k.startswith(p)) for p in ("img/", "txt/")
    }
    assert len(e.tensors) == 412
    assert sum(math.prod(t.shape) for t in e.tensors.values()) == 203_155_970
    assert count == {"img/": 92_884_224, "txt/": 110_271_744}
    assert e.tensors["txt/Embed_0/embedding"].shape == (32000, 768)
    assert e.tensors["txt/pos_embedding"].shape == (1, 64, 768)
    assert e.tensors["txt/head/kernel"].shape == (768, 768)
    assert e.tensors["b"].shape == e.tensors["t"].shape == (1,)
    assert "img/head/kernel" not in e.tensors and "txt/Encoder_0/encoder_norm/scale" in e.tensors
    assert e.towers == {"vision": ["img/"], "text": ["txt/"]}
    again = resolve_expected("bv-siglip", as_checkpoint(exp_tree(e), "/"))
    assert again.variant == "B/16" and exp_tree(again) == exp_tree(e)


# ---- open_clip -------------------------------------------------------------------------------------------------
def oc_cfg(corpus: Path) -> dict[str, Any]:
    return json.loads((corpus / "open_clip" / "ckptlint-tiny-ViT.json").read_text())


def oc_tiny_cases(corpus: Path) -> dict[str, tuple[type, dict[str, Any], dict[str, Any]]]:
    """name -> (model class, constructor kwargs, the spec parameters those kwargs mean)."""
    cfg = oc_cfg(corpus)
    base = {
        "width": 64, "depth": 2, "heads": 2, "mlp_dim": 128, "patch": 8, "image_size": 32, "embed_dim": 32,
        "text_width": 32, "text_depth": 2, "text_heads": 2, "text_mlp_dim": 64, "context_length": 16,
        "vocab_size": 100,
    }  # fmt: skip
    siglip_text = {**cfg["text_cfg"], "no_causal_mask": True, "proj_bias": True, "pool_type": "last"}
    trunk = tiny_timm_entrypoint(
        "ckptlint_tiny_siglip_trunk", img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2, mlp_ratio=2.0,
        class_token=False, global_pool="map", num_classes=0,
    )  # fmt: skip
    timm_vis = {"timm_model_name": trunk, "timm_pool": "map", "timm_proj": "none", "image_size": 32}
    return {
        "clip": (open_clip.CLIP, cfg, base),
        "custom_text": (open_clip.CustomTextCLIP, cfg, {**base, "custom_text": True}),
        "layer_scale_no_ln_pre": (
            open_clip.CLIP,
            {**cfg, "vision_cfg": {**cfg["vision_cfg"], "ls_init_value": 1e-4, "no_ln_pre": True},
             "text_cfg": {**cfg["text_cfg"], "ls_init_value": 1e-4}},
            {**base, "ls": True, "ln_pre": False, "text_ls": True},
        ),
        "siglip_like": (
            open_clip.CustomTextCLIP,
            {**cfg, "text_cfg": siglip_text, "init_logit_bias": -10.0, "vision_cfg": timm_vis},
            {**base, "custom_text": True, "text_proj_bias": True, "logit_bias": True, "timm_trunk": True,
             "class_token": False, "global_pool": "map", "trunk_num_classes": 0},
        ),
        "embed_cls_nonscalar_scale": (
            open_clip.CustomTextCLIP,
            {**cfg, "text_cfg": {**cfg["text_cfg"], "embed_cls": True, "proj_type": "none"},
             "nonscalar_logit_scale": True},
            {**base, "custom_text": True, "embed_cls": True, "text_proj": "none", "nonscalar_logit_scale": True},
        ),
    }  # fmt: skip


@pytest.mark.parametrize(
    "case", ["clip", "custom_text", "layer_scale_no_ln_pre", "siglip_like", "embed_cls_nonscalar_scale"]
)
def test_open_clip_tiny_inferred_and_explicit(corpus: Path, case: str) -> None:
    cls, kwargs, params = oc_tiny_cases(corpus)[case]
    truth = sd_tree(cls(**kwargs).state_dict())
    inferred = resolve_expected("open_clip", as_checkpoint(truth))
    assert_same_tree(inferred, truth)
    assert inferred.variant == "custom"
    shown = {k: v for k, v in params.items() if k not in ("heads", "text_heads")}  # not in a packed in_proj
    assert {k: inferred.params[k] for k in shown} == shown
    explicit = resolve_expected(f"open_clip:ViT-B-16,{overrides(params)}", None)
    assert explicit.variant == "custom"
    assert_same_tree(explicit, truth)


def test_open_clip_tiny_towers(corpus: Path) -> None:
    cls, kwargs, _ = oc_tiny_cases(corpus)["clip"]
    e = resolve_expected("open_clip", as_checkpoint(sd_tree(cls(**kwargs).state_dict())))
    assert e.towers["vision"] == ["visual."]
    assert set(e.towers["text"]) == {
        "positional_embedding",
        "text_projection",
        "token_embedding.",
        "transformer.",
        "ln_final.",
    }
    cls, kwargs, _ = oc_tiny_cases(corpus)["custom_text"]
    e = resolve_expected("open_clip", as_checkpoint(sd_tree(cls(**kwargs).state_dict())))
    assert e.towers == {"vision": ["visual."], "text": ["text."]}


def test_open_clip_corpus_file_matches_the_model_it_came_from(corpus: Path) -> None:
    sd = torch.load(corpus / "open_clip" / "openclip_tiny.pt", weights_only=True, map_location="meta")
    cls, kwargs, _ = oc_tiny_cases(corpus)["clip"]
    e = resolve_expected("open_clip", as_checkpoint(sd_tree(sd)))
    assert_same_tree(e, sd_tree(cls(**kwargs).state_dict()))


# ---- transformers ----------------------------------------------------------------------------------------------
def hf_models(corpus: Path) -> dict[str, tuple[str, torch.nn.Module, dict[str, Any]]]:
    clip_cfg = transformers.CLIPConfig.from_pretrained(corpus / "hf" / "hf_clip_tiny")
    sig_cfg = transformers.SiglipConfig.from_pretrained(corpus / "hf" / "hf_siglip_tiny")
    vis = {"width": 64, "depth": 2, "heads": 2, "mlp_dim": 128, "patch": 8, "image_size": 32}
    txt = {
        "text_width": 32,
        "text_depth": 2,
        "text_heads": 2,
        "text_mlp_dim": 64,
        "context_length": 16,
        "vocab_size": 100,
    }
    no_head = transformers.SiglipVisionConfig(**{**sig_cfg.vision_config.to_dict(), "vision_use_head": False})
    return {
        "hf-clip": ("hf-clip", transformers.CLIPModel(clip_cfg), {**vis, **txt, "embed_dim": 32}),
        "hf-clip-vision": ("hf-clip-vision", transformers.CLIPVisionModel(clip_cfg.vision_config), vis),
        "hf-siglip": ("hf-siglip", transformers.SiglipModel(sig_cfg), {**vis, **txt, "embed_dim": 32, "use_head": True}),
        "hf-siglip-vision": ("hf-siglip-vision", transformers.SiglipVisionModel(sig_cfg.vision_config), {**vis, "use_head": True}),
        "hf-siglip-vision-nohead": ("hf-siglip-vision", transformers.SiglipVisionModel(no_head), {**vis, "use_head": False}),
    }  # fmt: skip


@pytest.fixture(scope="module")
def hf_tiny(corpus: Path) -> dict[str, tuple[str, torch.nn.Module, dict[str, Any]]]:
    return hf_models(corpus)


@pytest.mark.parametrize(
    "case", ["hf-clip", "hf-clip-vision", "hf-siglip", "hf-siglip-vision", "hf-siglip-vision-nohead"]
)
def test_hf_tiny_inferred_from_shapes_and_explicit(hf_tiny: dict[str, Any], case: str) -> None:
    arch, model, params = hf_tiny[case]
    truth = sd_tree(model.state_dict())
    assert not any("position_ids" in k for k in truth)  # transformers 5.x: non-persistent buffers
    inferred = resolve_expected(arch, as_checkpoint(truth))
    assert_same_tree(inferred, truth)
    shown = {k: v for k, v in params.items() if k not in ("heads", "text_heads")}  # not in q_proj's shape
    assert {k: inferred.params[k] for k in shown} == shown
    default = load_arch(arch).default_variant
    assert_same_tree(resolve_expected(f"{arch}:{default},{overrides(params)}", None), truth)


@pytest.mark.parametrize("case", ["hf-clip", "hf-clip-vision", "hf-siglip", "hf-siglip-vision"])
def test_hf_saved_directory_config_decides(hf_tiny: dict[str, Any], case: str, tmp_path: Path) -> None:
    """A save_pretrained folder: config.json is what from_pretrained builds the model from."""
    arch, model, _ = hf_tiny[case]
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    from safetensors import safe_open

    with safe_open(tmp_path / "model.safetensors", "pt") as f:
        keys = list(f.keys())
    truth = sd_tree(model.state_dict())
    assert set(keys) == set(truth)
    # drop the last encoder layer from the file: the expectation still follows config.json
    kept = {k: v for k, v in truth.items() if ".layers.1." not in k}
    ck = as_checkpoint(kept, sidecars=[Sidecar(name="config.json", kind="hf-config", content=config)])
    e = resolve_expected(arch, ck)
    assert_same_tree(e, truth)
    assert e.params["inferred_from"].startswith("config.json")
    reloaded = type(model).from_pretrained(tmp_path)
    assert sd_tree(reloaded.state_dict()) == truth


# ---- timm ------------------------------------------------------------------------------------------------------
TIMM_TINY = {
    "clip": ("vit_base_patch16_clip_224", {"num_classes": 16}, {"pre_norm": True, "num_classes": 16}),
    "siglip": ("vit_base_patch16_siglip_224", {}, {"class_token": False, "global_pool": "map", "num_classes": 0}),
    "avg_fc_norm_regs": (
        "vit_base_patch16_224",
        {"global_pool": "avg", "reg_tokens": 2, "no_embed_class": True, "num_classes": 10},
        {"global_pool": "avg", "fc_norm": True, "norm": False, "reg_tokens": 2, "no_embed_class": True, "num_classes": 10},
    ),
    "layer_scale_qk_norm": (
        "vit_base_patch16_224",
        {"init_values": 1e-5, "qk_norm": True, "qkv_bias": False, "num_classes": 0},
        {"ls": True, "qk_norm": True, "qkv_bias": False, "num_classes": 0},
    ),
}  # fmt: skip
TIMM_GEOM = {"img_size": 32, "patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}
TIMM_PARAMS = {"width": 64, "depth": 2, "heads": 2, "mlp_dim": 256, "patch": 8, "image_size": 32}


@pytest.mark.parametrize("case", list(TIMM_TINY))
def test_timm_tiny_inferred_and_explicit(case: str) -> None:
    name, kwargs, params = TIMM_TINY[case]
    model = timm.create_model(name, **TIMM_GEOM, **kwargs)
    truth = sd_tree(model.state_dict())
    inferred = resolve_expected("timm-vit", as_checkpoint(truth))
    assert_same_tree(inferred, truth)
    geometry = {k: v for k, v in TIMM_PARAMS.items() if k != "heads"}  # a packed qkv does not show heads...
    if params.get("qk_norm"):
        geometry["heads"] = 2  # ...but q_norm's width (head_dim) does
    assert {k: inferred.params[k] for k in {**geometry, **params}} == {**geometry, **params}
    explicit = resolve_expected(f"timm-vit:{name},{overrides({**TIMM_PARAMS, **params})}", None)
    assert_same_tree(explicit, truth)


def test_timm_corpus_file_matches_a_tiny_clip_vit(corpus: Path) -> None:
    from safetensors import safe_open

    with safe_open(corpus / "timm" / "timm_vit_clip_tiny.safetensors", "pt") as f:
        tree = {k: (tuple(f.get_slice(k).get_shape()), "float32") for k in f.keys()}  # noqa: SIM118 (not a dict)
    e = resolve_expected("timm-vit", as_checkpoint(tree))
    assert_same_tree(e, tree, ordered=False)  # safetensors stores keys sorted
    assert e.params["pre_norm"] is True and e.params["class_token"] is True


# ---- full-size named variants, built by the libraries on the meta device --------------------------------------
def _feature_cover(arch: str, must: list[str]) -> list[str]:
    """Named variants that together show every non-default parameter value of the arch's table (+ ``must``)."""
    spec = load_arch(arch)
    chosen = list(must)
    seen: set[tuple[str, Any]] = set()
    for name in variant_names(spec):
        entry = spec.variants.names[name].params
        new = {(k, json.dumps(v)) for k, v in entry.items() if spec.params.get(k) != v}
        new = {
            item
            for item in new
            if item[0] not in ("width", "depth", "heads", "mlp_dim", "image_size", "embed_dim")
        }
        if new - seen:
            seen |= new
            if name not in chosen:
                chosen.append(name)
    return chosen


ALL_VARIANTS = os.environ.get("CKPTLINT_ALL_VARIANTS") == "1"  # every table entry (slow: ~1 min)
OC_VARIANTS = (
    variant_names(load_arch("open_clip"))
    if ALL_VARIANTS
    else _feature_cover("open_clip", ["ViT-B-16", "ViT-L-14", "ViT-B-16-SigLIP", "ViT-H-14"])
)
TIMM_VARIANTS = (
    variant_names(load_arch("timm-vit"))
    if ALL_VARIANTS
    else _feature_cover(
        "timm-vit", ["vit_base_patch16_clip_224", "vit_base_patch16_siglip_224", "vit_large_patch14_clip_336"]
    )
)


@pytest.mark.parametrize("variant", OC_VARIANTS)
def test_open_clip_named_variant_equals_open_clip_model(variant: str) -> None:
    model = meta_build(open_clip.create_model, variant, device="meta")
    truth = sd_tree(model.state_dict())
    assert_same_tree(resolve_expected(f"open_clip:{variant}", None), truth)
    inferred = resolve_expected("open_clip", as_checkpoint(truth))
    assert_same_tree(inferred, truth)
    assert (
        inferred.variant == variant
        or exp_tree(resolve_expected(f"open_clip:{inferred.variant}", None)) == truth
    )


@pytest.mark.parametrize("variant", TIMM_VARIANTS)
def test_timm_named_variant_equals_timm_model(variant: str) -> None:
    model = meta_build(timm.create_model, variant)
    truth = sd_tree(model.state_dict())
    assert_same_tree(resolve_expected(f"timm-vit:{variant}", None), truth)
    inferred = resolve_expected("timm-vit", as_checkpoint(truth))
    assert_same_tree(inferred, truth)
    assert (
        inferred.variant == variant
        or exp_tree(
            resolve_expected(
                f"timm-vit:{inferred.variant},num_classes={inferred.params['num_classes']}", None
            )
        )
        == truth
    )


def test_timm_pretrained_tag_sets_num_classes() -> None:
    model = meta_build(timm.create_model, "vit_base_patch16_clip_224.openai")
    truth = sd_tree(model.state_dict())
    assert truth["head.weight"][0] == (512, 768)
    assert_same_tree(resolve_expected("timm-vit:vit_base_patch16_clip_224.openai", None), truth)


@pytest.mark.parametrize(
    ("arch", "variant", "build"),
    [
        ("hf-clip", "openai/clip-vit-base-patch32", lambda: transformers.CLIPModel(transformers.CLIPConfig())),
        ("hf-clip-vision", "openai/clip-vit-base-patch32", lambda: transformers.CLIPVisionModel(transformers.CLIPVisionConfig())),
        ("hf-siglip", "google/siglip-base-patch16-224", lambda: transformers.SiglipModel(transformers.SiglipConfig())),
        ("hf-siglip-vision", "google/siglip-base-patch16-224", lambda: transformers.SiglipVisionModel(transformers.SiglipVisionConfig())),
    ],
)  # fmt: skip
def test_hf_default_config_models_are_named_variants(arch: str, variant: str, build: Any) -> None:
    """transformers' config-class defaults are CLIP ViT-B/32 and SigLIP base-patch16-224."""
    truth = sd_tree(meta_build(build).state_dict())
    assert_same_tree(resolve_expected(f"{arch}:{variant}", None), truth)
    assert resolve_expected(arch, as_checkpoint(truth)).variant == variant


# ---- reference/param_trees/*.json (full-size trees dumped from the real libraries) ----------------------------
PARAM_TREES = {
    "open_clip_ViT-B-16.json": "open_clip:ViT-B-16",
    "open_clip_ViT-B-16-quickgelu.json": "open_clip:ViT-B-16-quickgelu",
    "open_clip_ViT-L-14.json": "open_clip:ViT-L-14",
    "open_clip_ViT-B-16-SigLIP.json": "open_clip:ViT-B-16-SigLIP",
    "hf_CLIPModel_clip-vit-base-patch16.json": "hf-clip:openai/clip-vit-base-patch16",
    "hf_CLIPVisionModel_clip-vit-base-patch16.json": "hf-clip-vision:openai/clip-vit-base-patch16",
    "hf_SiglipModel_base-patch16-224.json": "hf-siglip:google/siglip-base-patch16-224",
    "timm_vit_base_patch16_clip_224_openai.json": "timm-vit:vit_base_patch16_clip_224.openai",
    "timm_vit_base_patch16_siglip_224.json": "timm-vit:vit_base_patch16_siglip_224",
}


@pytest.mark.parametrize("file", list(PARAM_TREES))
def test_reference_param_trees(reference: Path, file: str) -> None:
    doc = json.loads((reference / "param_trees" / file).read_text())
    truth = {k: (tuple(v["shape"]), v["dtype"]) for k, v in doc["state_dict"].items()}
    assert len(truth) == doc["num_keys"]
    arch = PARAM_TREES[file]
    e = resolve_expected(arch, None)
    assert_same_tree(e, truth)
    assert sum(math.prod(t.shape) for t in e.tensors.values()) == doc["num_params"]
    for buffer, info in doc["buffers"].items():  # non-persistent buffers are never expected
        assert info["persistent_in_state_dict"] is False and buffer not in e.tensors
    name, variant = arch.split(":", 1)
    inferred = resolve_expected(name, as_checkpoint(truth))
    assert_same_tree(inferred, truth)
    expected_variant = {
        "ViT-B-16-quickgelu": "ViT-B-16",
        "vit_base_patch16_clip_224.openai": "vit_base_patch16_clip_224",
    }
    assert inferred.variant == expected_variant.get(variant, variant)


# ---- --model MODULE:FACTORY (live definitions) -----------------------------------------------------------------
LIVE_MODULE = """
import torch
from torch import nn
import open_clip

BUILT = []
TINY = {tiny}


class Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(10, 4)
        self.head = nn.Linear(4, 10, bias=False)
        self.head.weight = self.emb.weight  # tied: state_dict() lists both names
        self.register_buffer("kept", torch.zeros(3), persistent=True)
        self.register_buffer("scratch", torch.zeros(5), persistent=False)


def make_clip():
    model = open_clip.CLIP(**TINY)
    BUILT.append(model)
    return model


def make_tied():
    return Tied()


def make_state_dict():
    return {{"a.weight": torch.zeros(2, 3, dtype=torch.float16)}}


def make_nothing():
    return 42


def broken():
    raise RuntimeError("no GPU here")
"""


@pytest.fixture
def live_module(tmp_path: Path, corpus: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    name = f"ckptlint_live_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(LIVE_MODULE.format(tiny=json.dumps(oc_cfg(corpus))))
    monkeypatch.chdir(tmp_path)
    return name


def test_live_torch_model_is_built_on_meta_and_matches_state_dict(live_module: str, corpus: Path) -> None:
    import importlib

    from ckptlint.archs.live import expected_from_factory

    e = expected_from_factory(f"{live_module}:make_clip")
    built = importlib.import_module(live_module).BUILT
    assert built and {p.device.type for p in built[-1].parameters()} == {"meta"}  # no weights allocated
    cls, kwargs, _ = oc_tiny_cases(corpus)["clip"]
    truth = sd_tree(cls(**kwargs).state_dict())
    assert_same_tree(e, truth)
    assert "attn_mask" not in e.tensors  # non-persistent buffer
    assert e.source == "model" and e.framework == "open_clip" and e.key_sep == "."
    assert e.towers["vision"] == ["visual."]


def test_live_torch_semantics_tied_weights_and_buffers(live_module: str) -> None:
    from ckptlint.archs.live import expected_from_factory

    e = expected_from_factory(f"{live_module}:make_tied")
    import importlib

    truth = sd_tree(importlib.import_module(live_module).Tied().state_dict())
    assert set(truth) == {"emb.weight", "head.weight", "kept"}
    assert_same_tree(e, truth)
    e = expected_from_factory(f"{live_module}:make_state_dict")
    assert exp_tree(e) == {"a.weight": ((2, 3), "float16")}


def test_live_model_from_a_py_file(live_module: str, tmp_path: Path) -> None:
    from ckptlint.archs.live import expected_from_factory

    e = expected_from_factory(f"{tmp_path / (live_module + '.py')}:make_tied")
    assert set(e.tensors) == {"emb.weight", "head.weight", "kept"}


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        ("make_nothing", "returned int"),
        ("broken", "calling the factory failed: RuntimeError: no GPU here"),
        ("missing", "has no callable 'missing'"),
    ],
)
def test_live_model_errors_are_one_line_usage_errors(live_module: str, factory: str, message: str) -> None:
    from ckptlint.archs.live import expected_from_factory

    with pytest.raises(UsageError, match=message) as info:
        expected_from_factory(f"{live_module}:{factory}")
    assert "\n" not in str(info.value)
    with pytest.raises(UsageError, match="cannot import"):
        expected_from_factory("ckptlint_no_such_module_here:make")
    with pytest.raises(UsageError, match="MODULE:FACTORY"):
        expected_from_factory("just_a_module")


def test_live_flax_module_with_inputs_uses_eval_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    from flax.traverse_util import flatten_dict

    from ckptlint.archs.live import expected_from_factory

    class Tower(nn.Module):
        @nn.compact
        def __call__(self, x: Any) -> Any:
            x = nn.Dense(8, name="embedding")(x)
            x = nn.LayerNorm()(x)
            return nn.Dense(2, name="head", param_dtype=jnp.bfloat16)(x)

    name = f"ckptlint_flax_{tmp_path.name.replace('-', '_')}"
    module = types.ModuleType(name)
    module.make = lambda: (Tower(), jnp.zeros((1, 3)))  # type: ignore[attr-defined]
    module.bare = lambda: Tower()  # type: ignore[attr-defined]
    module.tree = lambda: jax.eval_shape(Tower().init, jax.random.PRNGKey(1), jnp.zeros((1, 3)))  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, name, module)
    truth = jax.eval_shape(Tower().init, jax.random.PRNGKey(0), jnp.zeros((1, 3)))["params"]
    flat = {k: (tuple(v.shape), str(v.dtype)) for k, v in flatten_dict(truth, sep="/").items()}
    for factory in ("make", "tree"):
        e = expected_from_factory(f"{name}:{factory}")
        assert exp_tree(e) == flat
        assert e.key_sep == "/" and e.source == "model"
    assert flat["head/kernel"] == ((8, 2), "bfloat16") and "LayerNorm_0/scale" in flat
    with pytest.raises(UsageError, match="example_inputs"):
        expected_from_factory(f"{name}:bare")


# ---- --spec FILE (a reference dump or checkpoint) --------------------------------------------------------------
def test_spec_from_a_dump_json_of_a_wrapped_trainer_checkpoint(corpus: Path, tmp_path: Path) -> None:
    from ckptlint.archs.spec_file import expected_from_spec

    cls, kwargs, _ = oc_tiny_cases(corpus)["clip"]
    model = cls(**kwargs)
    truth = sd_tree(model.state_dict())
    wrapped = torch.nn.DataParallel(model).state_dict()
    doc = {
        "schema_version": "1",
        "path": "trainer.pt",
        "format": "torch-zip",
        "layout": "open_clip",
        "tensors": {
            f"state_dict.{k}": {"shape": list(v.shape), "dtype": "float32"} for k, v in wrapped.items()
        },
        "groups": ["state_dict", "epoch"],
        "metadata": {"epoch": 3},
        "findings": [],
    }
    (tmp_path / "ref.json").write_text(json.dumps(doc))
    e = expected_from_spec(str(tmp_path / "ref.json"))
    assert_same_tree(e, truth)
    assert e.source == "spec" and e.framework == "open_clip"
    assert e.params["root_stripped"] == "state_dict.module."


def test_spec_from_a_big_vision_checkpoint_is_relative_to_params(
    corpus: Path, bv_layouts: dict[str, Tree]
) -> None:
    from ckptlint.archs.spec_file import expected_from_spec

    e = expected_from_spec(str(corpus / "big_vision" / "tiny_clippo.npz"))
    assert exp_tree(e) == params_group(bv_layouts["tiny_clippo.npz"])  # opt/ and chrono/ are not the model
    assert e.key_sep == "/" and e.params["arch"] == "clippo"


# ---- the Hub variant tables agree with the open_clip configs of the same released models ------------------------
HUB_TO_OPEN_CLIP = {
    "openai/clip-vit-base-patch16": "ViT-B-16",
    "openai/clip-vit-base-patch32": "ViT-B-32",
    "openai/clip-vit-large-patch14": "ViT-L-14",
    "openai/clip-vit-large-patch14-336": "ViT-L-14-336",
    "laion/CLIP-ViT-H-14-laion2B-s32B-b79K": "ViT-H-14",
    "laion/CLIP-ViT-bigG-14-laion2B-39B-b160k": "ViT-bigG-14",
    "google/siglip-base-patch16-224": "ViT-B-16-SigLIP",
    "google/siglip-base-patch16-256": "ViT-B-16-SigLIP-256",
    "google/siglip-base-patch16-384": "ViT-B-16-SigLIP-384",
    "google/siglip-base-patch16-512": "ViT-B-16-SigLIP-512",
    "google/siglip-base-patch16-256-multilingual": "ViT-B-16-SigLIP-i18n-256",
    "google/siglip-large-patch16-256": "ViT-L-16-SigLIP-256",
    "google/siglip-large-patch16-384": "ViT-L-16-SigLIP-384",
    "google/siglip-so400m-patch14-224": "ViT-SO400M-14-SigLIP",
    "google/siglip-so400m-patch14-384": "ViT-SO400M-14-SigLIP-384",
    "google/siglip-so400m-patch16-256-i18n": "ViT-SO400M-16-SigLIP-i18n-256",
    "google/siglip2-base-patch16-224": "ViT-B-16-SigLIP2",
    "google/siglip2-base-patch16-384": "ViT-B-16-SigLIP2-384",
    "google/siglip2-large-patch16-512": "ViT-L-16-SigLIP2-512",
    "google/siglip2-so400m-patch14-224": "ViT-SO400M-14-SigLIP2",
    "google/siglip2-so400m-patch16-256": "ViT-SO400M-16-SigLIP2-256",
    "google/siglip2-giant-opt-patch16-384": "ViT-gopt-16-SigLIP2-384",
}
SHARED = ("width", "depth", "mlp_dim", "patch", "image_size", "text_width", "text_depth", "text_mlp_dim", "context_length", "vocab_size", "embed_dim")  # fmt: skip


@pytest.mark.parametrize("hub", list(HUB_TO_OPEN_CLIP))
def test_hub_variants_match_open_clip_configs(hub: str) -> None:
    arch = "hf-siglip" if hub.startswith("google/") else "hf-clip"
    ours = resolve_expected(f"{arch}:{hub}", None).params
    theirs = resolve_expected(f"open_clip:{HUB_TO_OPEN_CLIP[hub]}", None).params
    if theirs["text_proj"] == "none":  # open_clip's i18n So400m/16 drops the text projection; HF keeps a head
        ours = {**ours, "embed_dim": None}
        theirs = {**theirs, "embed_dim": None}
    assert {k: ours[k] for k in SHARED} == {k: theirs[k] for k in SHARED}
    for vision_arch in ("hf-clip-vision", "hf-siglip-vision"):
        if hub in variant_names(load_arch(vision_arch)):
            vision = resolve_expected(f"{vision_arch}:{hub}", None).params
            assert {k: vision[k] for k in SHARED[:5]} == {k: theirs[k] for k in SHARED[:5]}


BV_SIZE_TO_TIMM = {  # big_vision decode_variant sizes = the timm ports of the same Google checkpoints
    "Ti/16": "vit_tiny_patch16_224",
    "S/16": "vit_small_patch16_224",
    "M/16": "vit_medium_patch16_gap_256",
    "B/16": "vit_base_patch16_224",
    "L/16": "vit_large_patch16_224",
    "H/14": "vit_huge_patch14_224",
    "g/14": "vit_giant_patch14_224",
    "G/14": "vit_gigantic_patch14_224",
    "So400m/14": "vit_so400m_patch14_siglip_224",
    "g-opt/16": "vit_giantopt_patch16_siglip_256",
}


@pytest.mark.parametrize("variant", list(BV_SIZE_TO_TIMM))
def test_big_vision_sizes_match_timm(variant: str) -> None:
    ours = resolve_expected(f"bv-vit:{variant}", None).params
    theirs = resolve_expected(f"timm-vit:{BV_SIZE_TO_TIMM[variant]}", None).params
    keys = ("width", "depth", "heads", "mlp_dim", "patch")
    assert {k: ours[k] for k in keys} == {k: theirs[k] for k in keys}
