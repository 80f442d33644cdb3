"""Variant inference: the parametrisation read back from a checkpoint's shapes, wherever and however it is stored.

Ground truth is the library that built the checkpoint: the constructor arguments of a real model (tiny, or full size
on the meta device), big_vision's variant table (reference/big_vision_layouts.md) and the loaders' own rules (a
wrapper or trainer dict does not change the model; another framework's layout keeps the geometry).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import tvshim  # noqa: F401  (must precede open_clip / timm)

# isort: split
import open_clip
import timm
import transformers

from ckptlint.archs import infer_expected, parse_arch_arg, resolve_expected
from ckptlint.checkpoint import Checkpoint, Sidecar, tensor_info
from ckptlint.errors import UsageError
from ckptlint.expected import Expected

Tree = dict[str, tuple[tuple[int, ...], str]]


def sd_tree(sd: dict[str, torch.Tensor]) -> Tree:
    return {k: (tuple(v.shape), str(v.dtype).removeprefix("torch.")) for k, v in sd.items()}


def exp_tree(e: Expected) -> Tree:
    return {k: (tuple(t.shape), t.dtype) for k, t in e.tensors.items()}


def ck(tree: Tree, key_sep: str = ".", sidecars: list[Sidecar] | None = None) -> Checkpoint:
    tensors = {k: tensor_info(shape, dtype) for k, (shape, dtype) in tree.items()}
    return Checkpoint(
        path="<memory>", format="safetensors", key_sep=key_sep, tensors=tensors, sidecars=sidecars or []
    )


def meta(fn: Any, *args: Any, **kwargs: Any) -> torch.nn.Module:
    with torch.device("meta"):
        return fn(*args, **kwargs)


def pick(e: Expected, *names: str) -> dict[str, Any]:
    return {n: e.params[n] for n in names}


@pytest.fixture(scope="module")
def oc_cfg(corpus: Path) -> dict[str, Any]:
    return json.loads((corpus / "open_clip" / "ckptlint-tiny-ViT.json").read_text())


@pytest.fixture(scope="module")
def oc_tiny(oc_cfg: dict[str, Any]) -> Tree:
    return sd_tree(open_clip.CLIP(**oc_cfg).state_dict())


OC_TINY_GEOMETRY = {
    "width": 64, "depth": 2, "mlp_dim": 128, "patch": 8, "image_size": 32,
    "text_width": 32, "text_depth": 2, "text_mlp_dim": 64, "context_length": 16, "vocab_size": 100, "embed_dim": 32,
}  # fmt: skip


# ---- named variants from full-size models ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name", ["ViT-B-16", "ViT-B-32", "ViT-L-14", "ViT-L-14-336", "ViT-B-16-SigLIP", "ViT-SO400M-14-SigLIP"]
)
def test_open_clip_variant_named_from_shapes(name: str) -> None:
    truth = sd_tree(meta(open_clip.create_model, name, device="meta").state_dict())
    e = resolve_expected("open_clip", ck(truth))
    assert e.variant == name and e.source == "flag"
    assert exp_tree(e) == truth
    assert e.params["inferred_from"].startswith("visual.")


@pytest.mark.parametrize(
    ("name", "variant", "params"),
    [
        (
            "vit_base_patch16_clip_224.openai",
            "vit_base_patch16_clip_224",
            {"num_classes": 512, "pre_norm": True},
        ),
        (
            "vit_large_patch14_clip_336",
            "vit_large_patch14_clip_336",
            {"image_size": 336, "patch": 14, "width": 1024},
        ),
        (
            "vit_so400m_patch14_siglip_224",
            "vit_so400m_patch14_siglip_224",
            {"global_pool": "map", "mlp_dim": 4304},
        ),
    ],
)
def test_timm_variant_named_from_shapes(name: str, variant: str, params: dict[str, Any]) -> None:
    truth = sd_tree(meta(timm.create_model, name).state_dict())
    e = resolve_expected("timm-vit", ck(truth))
    assert (e.variant, pick(e, *params)) == (variant, params)


@pytest.mark.parametrize("variant", ["Ti/16", "S/32", "B/16", "L/14", "So400m/14", "g-opt/16"])
def test_big_vision_size_and_patch_read_back(variant: str) -> None:
    tree = exp_tree(resolve_expected(f"clippo:{variant}", None))
    e = resolve_expected("clippo", ck({f"params/{k}": v for k, v in tree.items()}, "/"))
    assert e.variant == variant and exp_tree(e) == tree
    _, patch = variant.split("/")
    assert e.params["patch"] == int(patch)


def test_big_vision_resolution_is_not_part_of_the_variant_name() -> None:
    tree = exp_tree(resolve_expected("clippo:B/16,image_size=384", None))
    e = resolve_expected("clippo", ck(tree, "/"))
    assert (e.variant, e.params["image_size"]) == ("B/16", 384)
    assert e.params["inferred_from"] == "img/embedding/kernel [16, 16, 3, 768]"


def test_siglip_two_towers_text_variant_and_vocab() -> None:
    tree = exp_tree(resolve_expected("bv-siglip:So400m/14,vocab_size=256000,context_length=16", None))
    e = resolve_expected("bv-siglip", ck(tree, "/"))
    assert e.variant == "So400m/14"
    assert pick(e, "vocab_size", "context_length", "text_width", "embed_dim", "bias") == {
        "vocab_size": 256000, "context_length": 16, "text_width": 1152, "embed_dim": 1152, "bias": True,
    }  # fmt: skip
    tree = exp_tree(
        resolve_expected("bv-siglip:g-opt/16", None)
    )  # SigLIP 2: g-opt image tower, So400m text tower
    assert tree["txt/Embed_0/embedding"][0] == (32000, 1152) and tree["txt/head/kernel"][0] == (1152, 1536)
    assert resolve_expected("bv-siglip", ck(tree, "/")).variant == "g-opt/16"


def test_tiny_models_are_custom_with_their_constructor_parameters(oc_tiny: Tree) -> None:
    e = resolve_expected("open_clip", ck(oc_tiny))
    assert e.variant == "custom" and pick(e, *OC_TINY_GEOMETRY) == OC_TINY_GEOMETRY


# ---- wrappers and nesting: the same model, found under any root -----------------------------------------------
@pytest.mark.parametrize(
    "root", ["", "module.", "_orig_mod.", "module._orig_mod.", "state_dict.module.", "model."]
)
def test_open_clip_under_wrappers(oc_tiny: Tree, root: str) -> None:
    extra = {"optimizer.state.0.exp_avg": ((64,), "float32")} if root.startswith("state_dict") else {}
    e = resolve_expected("open_clip", ck({**{root + k: v for k, v in oc_tiny.items()}, **extra}))
    assert exp_tree(e) == oc_tiny and e.params["root"] == root
    assert pick(e, *OC_TINY_GEOMETRY) == OC_TINY_GEOMETRY


def test_real_wrappers_written_by_torch(oc_cfg: dict[str, Any], oc_tiny: Tree, tmp_path: Path) -> None:
    model = open_clip.CLIP(**oc_cfg)
    for obj, root in [
        (torch.nn.DataParallel(model).state_dict(), "module."),
        (torch.compile(model).state_dict(), "_orig_mod."),
        ({"epoch": 2, "state_dict": torch.nn.DataParallel(model).state_dict()}, "state_dict.module."),
    ]:
        torch.save(obj, tmp_path / "c.pt")
        loaded = torch.load(tmp_path / "c.pt", weights_only=True, map_location="meta")
        flat = loaded.get("state_dict", loaded)
        prefix = "state_dict." if "state_dict" in loaded else ""
        e = resolve_expected("open_clip", ck({prefix + k: v for k, v in sd_tree(flat).items()}))
        assert exp_tree(e) == oc_tiny and e.params["root"] == root


def test_big_vision_nesting(corpus: Path) -> None:
    raw = json.loads((corpus / "big_vision" / "tiny_layouts.json").read_text())["tiny_clippo.npz"]
    tree = {k: (tuple(v[0]), v[2]) for k, v in raw.items()}
    clippo = resolve_expected("clippo", ck(tree, "/"))
    assert clippo.params["root"] == "params/" and clippo.params["found"] == {"vision": "params/img/"}
    # the opt/ momentum mirrors params with the same shapes: the params group is still the one chosen
    assert clippo.params["evidence"]["width"] == "params/img/embedding/kernel"


def test_transformers_4_vision_model_prefix(corpus: Path) -> None:
    model = transformers.CLIPVisionModel.from_pretrained(corpus / "hf" / "hf_clipvision_tiny")
    truth = sd_tree(model.state_dict())
    e = resolve_expected("hf-clip-vision", ck({f"vision_model.{k}": v for k, v in truth.items()}))
    assert exp_tree(e) == truth and e.params["root"] == "vision_model."


# ---- another framework's layout: the geometry carries over ------------------------------------------------------
def test_hf_checkpoint_checked_as_open_clip(corpus: Path) -> None:
    """Seed story: the transformers model's weights loaded into open_clip."""
    model = transformers.CLIPModel.from_pretrained(corpus / "hf" / "hf_clip_tiny")
    e = resolve_expected("open_clip", ck(sd_tree(model.state_dict())))
    geometry = {k: v for k, v in OC_TINY_GEOMETRY.items() if k != "embed_dim"}
    assert e.variant == "custom" and pick(e, *geometry) == geometry
    assert e.params["foreign"] == {"vision": "hf:clip_vision", "text": "hf:clip_text"}
    assert e.params["root"] is None
    assert "hf layout" in e.params["inferred_from"]


def test_open_clip_checkpoint_checked_as_hf_and_clippo(oc_tiny: Tree) -> None:
    e = resolve_expected("hf-clip", ck(oc_tiny))
    geometry = {k: v for k, v in OC_TINY_GEOMETRY.items() if k != "embed_dim"}
    assert pick(e, *geometry) == geometry
    e = resolve_expected("clippo", ck(oc_tiny))
    assert pick(e, "width", "depth", "mlp_dim", "patch", "image_size") == {
        "width": 64,
        "depth": 2,
        "mlp_dim": 128,
        "patch": 8,
        "image_size": 32,
    }
    assert e.params["pool"] == "map"  # clippo's own structure, not open_clip's class token


def test_timm_vision_only_export_checked_as_open_clip(reference: Path) -> None:
    """Seed story: timm vit_base_patch16_clip_224.openai is vision-only; as a CLIP it is ViT-B-16 with no text."""
    doc = json.loads((reference / "param_trees" / "timm_vit_base_patch16_clip_224_openai.json").read_text())
    tree = {k: (tuple(v["shape"]), v["dtype"]) for k, v in doc["state_dict"].items()}
    e = resolve_expected("open_clip", ck(tree))
    assert e.variant == "ViT-B-16"
    assert e.params["found"] == {"vision": ""} and e.params["foreign"] == {"vision": "timm:vit"}
    assert "transformer.resblocks.0.attn.in_proj_weight" in e.tensors  # the text tower the file lacks


def test_big_vision_vit_checked_as_clippo_and_back(corpus: Path) -> None:
    raw = json.loads((corpus / "big_vision" / "tiny_layouts.json").read_text())
    vit = {k: (tuple(v[0]), v[2]) for k, v in raw["tiny_vit.npz"].items()}
    e = resolve_expected("clippo", ck(vit, "/"))
    assert pick(e, "width", "depth", "heads", "mlp_dim", "patch", "image_size") == {
        "width": 32,
        "depth": 2,
        "heads": 2,
        "mlp_dim": 64,
        "patch": 8,
        "image_size": 32,
    }
    assert e.params["root"] is None and "not where the spec puts it" in e.params["inferred_from"]


# ---- resolution, context length, nearest variant, old layouts ---------------------------------------------------
def test_resolution_and_context_length_changes(oc_cfg: dict[str, Any]) -> None:
    cfg = {
        **oc_cfg,
        "vision_cfg": {**oc_cfg["vision_cfg"], "image_size": 64},
        "text_cfg": {**oc_cfg["text_cfg"], "context_length": 8},
    }
    truth = sd_tree(open_clip.CLIP(**cfg).state_dict())
    e = resolve_expected("open_clip", ck(truth))
    assert exp_tree(e) == truth and pick(e, "image_size", "context_length") == {
        "image_size": 64,
        "context_length": 8,
    }


def test_nearest_variant_when_only_the_resolution_differs() -> None:
    truth = sd_tree(
        meta(open_clip.create_model, "ViT-B-16", device="meta", force_image_size=384).state_dict()
    )
    e = resolve_expected("open_clip", ck(truth))
    assert e.variant == "custom" and exp_tree(e) == truth
    assert e.params["nearest_variant"] == "ViT-B-16" and e.params["variant_diff"] == {
        "image_size": [224, 384]
    }
    asked = resolve_expected("open_clip:ViT-B-16", ck(truth))  # an explicit variant ignores the checkpoint
    assert asked.tensors["visual.positional_embedding"].shape == (197, 768)
    assert e.tensors["visual.positional_embedding"].shape == (577, 768)


def test_old_big_vision_posemb_layouts_still_give_the_resolution() -> None:
    """fix_old_checkpoints inputs (big_vision_layouts.md §4): posemb under Transformer/, 197 rows with the cls row."""
    tree = exp_tree(resolve_expected("bv-vit:B/16,pool=tok", None))
    old = dict(tree)
    old["Transformer/posembed_input/pos_embedding"] = ((1, 197, 768), "float32")
    del old["pos_embedding"]
    e = resolve_expected("bv-vit", ck(old, "/"))
    assert (e.variant, e.params["image_size"], e.params["pool"]) == ("B/16", 224, "tok")
    assert e.tensors["pos_embedding"].shape == (1, 196, 768)


def test_scanned_encoder_layout() -> None:
    tree = exp_tree(resolve_expected("bv-vit:S/16,scan=true", None))
    assert tree["Transformer/encoderblock/MlpBlock_0/Dense_0/kernel"][0] == (12, 384, 1536)
    e = resolve_expected("bv-vit", ck(tree, "/"))
    assert e.variant == "S/16" and e.params["scan"] is True and exp_tree(e) == tree


# ---- fallbacks, overrides, arguments -----------------------------------------------------------------------------
def test_default_variant_when_nothing_matches() -> None:
    unrelated = ck({"model.layers.0.self_attn.q_proj.weight": ((8, 8), "float32")})
    for arch, default in [
        ("clippo", "B/16"),
        ("open_clip", "ViT-B-16"),
        ("timm-vit", "vit_base_patch16_clip_224"),
    ]:
        e = resolve_expected(arch, unrelated)
        assert e.variant == default and e.params["inferred_from"].startswith(f"default variant {default}")
        assert exp_tree(e) == exp_tree(resolve_expected(f"{arch}:{default}", None))
    assert resolve_expected("clippo", None).params["inferred_from"] == "default variant B/16 (no checkpoint)"


def test_explicit_variant_and_overrides() -> None:
    e = resolve_expected("bv-siglip:B/16,vocab_size=256000", None)
    assert e.variant == "B/16" and e.tensors["txt/Embed_0/embedding"].shape == (256000, 768)
    assert resolve_expected("clippo:B/16,width=1024", None).variant == "custom"
    assert resolve_expected("clippo:custom", None).variant == "B/16"  # nothing to read: the default
    assert parse_arch_arg("hf-siglip:google/siglip-base-patch16-224, image_size=384") == (
        "hf-siglip", "google/siglip-base-patch16-224", {"image_size": 384},
    )  # fmt: skip
    assert parse_arch_arg("bv-vit:scan=true") == ("bv-vit", None, {"scan": True})
    with pytest.raises(UsageError):
        parse_arch_arg(":B/16")
    with pytest.raises(UsageError):
        parse_arch_arg("clippo:B/16,L/16")


def test_hf_config_overrides_shapes_and_other_model_types_do_not(corpus: Path) -> None:
    config = json.loads((corpus / "hf" / "hf_siglip_tiny" / "config.json").read_text())
    model = transformers.SiglipModel.from_pretrained(corpus / "hf" / "hf_siglip_tiny")
    truth = sd_tree(model.state_dict())
    e = resolve_expected(
        "hf-siglip", ck(truth, sidecars=[Sidecar(name="config.json", kind="hf-config", content=config)])
    )
    assert exp_tree(e) == truth and e.params["inferred_from"] == "config.json (model_type siglip)"
    # a SigLIP config says nothing about a CLIPModel: the shapes decide
    e = resolve_expected(
        "hf-clip", ck(truth, sidecars=[Sidecar(name="config.json", kind="hf-config", content=config)])
    )
    assert "config.json" not in e.params["inferred_from"] and e.params["width"] == 64


# ---- without --arch ----------------------------------------------------------------------------------------------
INFERRED = {
    "big_vision/tiny_clippo.npz": ("clippo", "custom"),
    "open_clip/openclip_tiny_trainer_ckpt.pt": ("open_clip", "custom"),
    "timm/timm_vit_clip_tiny.safetensors": ("timm-vit", "custom"),
    "hf/hf_siglip_tiny": ("hf-siglip", "custom"),
}


@pytest.mark.parametrize("rel", list(INFERRED))
def test_infer_expected_without_arch(corpus: Path, rel: str) -> None:
    from ckptlint.readers import read_checkpoint

    e = infer_expected(read_checkpoint(corpus / rel))
    assert e is not None and (e.arch, e.variant, e.source) == (*INFERRED[rel], "inferred")


def test_infer_expected_of_full_size_trees(reference: Path) -> None:
    for file, (arch, variant) in {
        "open_clip_ViT-L-14.json": ("open_clip", "ViT-L-14"),
        "hf_CLIPModel_clip-vit-base-patch16.json": ("hf-clip", "openai/clip-vit-base-patch16"),
        "hf_CLIPVisionModel_clip-vit-base-patch16.json": ("hf-clip-vision", "openai/clip-vit-base-patch16"),
        "hf_SiglipModel_base-patch16-224.json": ("hf-siglip", "google/siglip-base-patch16-224"),
        "timm_vit_base_patch16_siglip_224.json": ("timm-vit", "vit_base_patch16_siglip_224"),
    }.items():
        doc = json.loads((reference / "param_trees" / file).read_text())
        e = infer_expected(ck({k: (tuple(v["shape"]), v["dtype"]) for k, v in doc["state_dict"].items()}))
        assert e is not None and (e.arch, e.variant) == (arch, variant), file
    assert infer_expected(ck({"model.embed_tokens.weight": ((10, 4), "float32")})) is None
