"""open_clip hub folders are checked against the model their ``open_clip_config.json`` declares.

Folders are written by open_clip itself (``declared_support``); each broken one is the clean folder with one field
of ``open_clip_config.json`` edited, as a person would. Ground truth: open_clip builds the declared model
(``create_model('local-dir:…')``) and torch loads the folder's weights into it (``load_state_dict(strict=False)``
and its size mismatches); ``create_model_from_pretrained('local-dir:…')`` says whether open_clip loads it at all.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_support import ckptlint
from declared_support import open_clip_folder, open_clip_loads, open_clip_report, same_diff, set_fields
from engine_support import TINY_OPEN_CLIP_CFG

from ckptlint import check
from ckptlint.checkpoint import Checkpoint, Sidecar
from ckptlint.declared import declaration_of, declared_expected
from ckptlint.declared.declaration import Unbuilt
from ckptlint.expected import Expected, Unchecked

CONFIG = "open_clip_config.json"
STRUCTURAL = {"CK100", "CK101", "CK102", "CK103", "CK104", "CK105", "CK108", "CK109", "CK110", "CK112"}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return open_clip_folder(tmp_path_factory.mktemp("oc") / "clean")


def _copy(clean: Path, tmp_path: Path, fields: dict[str, Any]) -> Path:
    folder = tmp_path / "edited"
    folder.mkdir()
    for f in clean.iterdir():
        (folder / f.name).write_bytes(f.read_bytes())
    set_fields(folder / CONFIG, fields)
    return folder


def test_clean_folder_is_checked_against_its_declaration(clean: Path) -> None:
    proc = ckptlint("check", str(clean), "--format", "json")
    assert proc.returncode == 0, proc.stdout
    (f,) = json.loads(proc.stdout)["files"]
    assert f["arch"]["source"] == "declared" and f["arch"]["declared_by"] == CONFIG
    assert (f["arch"]["name"], f["arch"]["variant"]) == (
        "open_clip",
        "custom",
    )  # a config open_clip ships no name for
    assert f["findings"] == []
    assert f["diff"] == {"missing": [], "unexpected": [], "shape_mismatch": [], "dtype_mismatch": []}
    assert open_clip_report(clean) == (set(), set(), {}) and open_clip_loads(clean)
    text = ckptlint("check", str(clean)).stdout
    assert "expected: declared by open_clip_config.json: open_clip (OpenCLIP CLIP / CustomTextCLIP)" in text


# (edited field, value, parameter, the key that shows the weights' value, the value the fix writes back,
#  whether open_clip's create_model_from_pretrained still loads the folder)
BROKEN = [
    ("model_cfg.text_cfg.context_length", 20, "context_length", "positional_embedding [16, 32]", "16", True),
    ("model_cfg.vision_cfg.patch_size", 16, "patch", "visual.conv1.weight [64, 3, 8, 8]", "8", False),
    (
        "model_cfg.vision_cfg.layers",
        3,
        "depth",
        "visual.transformer.resblocks.{0..1}.ln_1.weight",
        "2",
        False,
    ),
    ("model_cfg.vision_cfg.width", 128, "width", "visual.conv1.weight [64, 3, 8, 8]", "64", False),
    ("model_cfg.vision_cfg.image_size", 48, "image_size", "visual.positional_embedding [17, 64]", "32", True),
    (
        "model_cfg.vision_cfg.mlp_ratio",
        4.0,
        "mlp_dim",
        "visual.transformer.resblocks.0.mlp.c_fc.weight",
        "2.0",
        False,
    ),
    ("model_cfg.text_cfg.layers", 1, "text_depth", "transformer.resblocks.{0..1}.ln_1.weight", "2", False),
    ("model_cfg.text_cfg.vocab_size", 120, "vocab_size", "token_embedding.weight [100, 32]", "100", False),
    ("model_cfg.embed_dim", 48, "embed_dim", "visual.proj [64, 32]", "32", False),
]


@pytest.mark.parametrize(
    ("field", "value", "param", "evidence", "back", "loads"), BROKEN, ids=[b[2] for b in BROKEN]
)
def test_broken_declaration_is_one_ck113_naming_the_field(
    clean: Path, tmp_path: Path, field: str, value: Any, param: str, evidence: str, back: str, loads: bool
) -> None:
    folder = _copy(clean, tmp_path, {field: value})
    report = check(str(folder)).files[0]
    assert report.arch is not None and report.arch.source == "declared"
    codes = [f.code for f in report.findings]
    assert codes.count("CK113") == 1 and not STRUCTURAL & set(codes), codes  # one root cause, one finding
    (ck113,) = [f for f in report.findings if f.code == "CK113"]
    assert ck113.severity.value == "error" and ck113.details["field"] == field
    assert f"({field}" in ck113.message and evidence in ck113.message and str(value) in ck113.message
    assert ck113.fix.startswith(
        f"set {field} = {back} in {CONFIG}"
    )  # the value the weights were trained with
    # the raw diff is exactly what torch reports loading the folder's weights into the model open_clip declares
    assert same_diff(report.diff, open_clip_report(folder))
    assert open_clip_loads(folder) is loads


def test_what_open_clip_does_with_a_contradicted_context_length(clean: Path, tmp_path: Path) -> None:
    """It loads — by interpolating the 16 trained positions to 20: the weights it runs are not the published ones."""
    import open_clip

    folder = _copy(clean, tmp_path, {"model_cfg.text_cfg.context_length": 20})
    model, _ = open_clip.create_model_from_pretrained(f"local-dir:{folder}")
    assert tuple(model.positional_embedding.shape) == (20, 32)
    proc = ckptlint("check", str(folder))
    assert proc.returncode == 1
    assert "open_clip'sload_checkpointresizesitautomatically" in "".join(proc.stdout.split())


def test_two_contradictions_are_two_findings(clean: Path, tmp_path: Path) -> None:
    folder = _copy(
        clean, tmp_path, {"model_cfg.text_cfg.context_length": 20, "model_cfg.vision_cfg.layers": 3}
    )
    report = check(str(folder)).files[0]
    assert sorted(f.details["field"] for f in report.findings if f.code == "CK113") == [
        "model_cfg.text_cfg.context_length",
        "model_cfg.vision_cfg.layers",
    ]
    assert same_diff(report.diff, open_clip_report(folder))


def _siglip_folder(folder: Path, name: str) -> Path:
    """A tiny SigLIP-style open_clip model (CustomTextCLIP, logit bias, text projection bias), SigLIP's stats."""
    cfg = copy.deepcopy(TINY_OPEN_CLIP_CFG)
    cfg.update(custom_text=True, init_logit_bias=-10.0)
    cfg["text_cfg"].update(proj_bias=True, no_causal_mask=True, pool_type="last")
    open_clip_folder(folder, cfg, name=name)
    siglip_pp = {"mean": [0.5] * 3, "std": [0.5] * 3, "interpolation": "bicubic", "resize_mode": "squash"}
    set_fields(folder / CONFIG, {"preprocess_cfg": siglip_pp})  # as SigLIP releases publish it
    return folder


def test_custom_text_and_siglip_style_folders_are_clean(tmp_path: Path) -> None:
    folder = _siglip_folder(tmp_path / "siglip", "ckptlint-decl-siglip")
    report = check(str(folder)).files[0]
    assert report.arch is not None and report.arch.source == "declared"
    assert [f.code for f in report.findings] == [] and same_diff(report.diff, open_clip_report(folder))
    assert report.arch is not None and report.arch.variant == "custom"


def test_arch_without_variant_reads_the_declaration_too(clean: Path, tmp_path: Path) -> None:
    folder = _copy(clean, tmp_path, {"model_cfg.text_cfg.context_length": 20})
    report = check(str(folder), arch="open_clip").files[0]
    assert report.arch.source == "flag" and report.arch.inferred_from == "open_clip_config.json"
    assert [f.code for f in report.findings] == ["CK113"]


def test_requested_variant_contradicting_the_declaration_is_ck114(tmp_path: Path) -> None:
    """open_clip_config.json declares a (tiny) SigLIP model; --arch open_clip:ViT-B-16 asks for another."""
    folder = _siglip_folder(tmp_path / "siglip", "ckptlint-decl-siglip2")
    proc = ckptlint("check", str(folder), "--arch", "open_clip:ViT-B-16", "--format", "json")
    assert proc.returncode == 1
    (f,) = json.loads(proc.stdout)["files"]
    first = f["findings"][0]
    assert first["code"] == "CK114" and "--arch open_clip:ViT-B-16" in first["message"]
    assert "SigLIP" in first["message"] and "width 768 (declared 64)" in first["message"]
    assert not STRUCTURAL & {x["code"] for x in f["findings"]}  # folded: no follow-on root causes
    assert first["details"]["folded"] and {x["code"] for x in first["details"]["folded"]} <= STRUCTURAL
    assert f["diff"]["shape_mismatch"] or f["diff"]["missing"]  # the raw diff is kept
    same = check(str(folder), arch="open_clip").files[0]  # no variant: read from the declaration, no CK114
    assert [x.code for x in same.findings] == []


def test_refused_declaration_is_ck113(clean: Path, tmp_path: Path) -> None:
    import open_clip

    folder = _copy(clean, tmp_path, {"model_cfg": None})
    with pytest.raises(ValueError, match="model_cfg"):
        open_clip.create_model_from_pretrained(f"local-dir:{folder}")
    report = check(str(folder)).files[0]
    assert report.findings[0].code == "CK113" and "refuses" in report.findings[0].message
    assert "model_cfg" in report.findings[0].message


def test_a_declaration_ckptlint_cannot_build_says_so(clean: Path, tmp_path: Path) -> None:
    """A ResNet open_clip config next to weights in no known layout: CK004 names the declaration and why."""
    import open_clip
    from safetensors.torch import save_file

    folder = tmp_path / "rn"
    folder.mkdir()
    (folder / CONFIG).write_text(json.dumps({"model_cfg": open_clip.get_model_config("RN50")}))
    save_file({"w": torch.zeros(2, 2)}, folder / "open_clip_model.safetensors")
    (ck004,) = check(str(folder)).files[0].findings
    assert (
        ck004.code == "CK004"
        and "ResNet image tower (model_cfg.vision_cfg.layers [3, 4, 6, 3])" in ck004.message
    )


# ---- every open_clip model config ckptlint can build equals the model open_clip builds from it ---------------
ALL = os.environ.get("CKPTLINT_ALL_VARIANTS") == "1"
COVER = [
    "ViT-B-16",  # the native towers
    "ViT-B-16-quickgelu",  # named as open_clip names it
    "ViT-L-14-CLIPA",  # no ln_pre, text proj 'none'
    "ViT-B-16-plus-240",
    "ViT-B-16-SigLIP",  # timm trunk, MAP pool, no projection, SigLIP loss, custom text
    "ViT-SO400M-16-SigLIP-i18n-256",
    "MobileCLIP2-L-14",  # timm trunk, timm_proj null: the trunk's head projects
    "vit_medium_patch16_gap_256",  # timm trunk with a linear projection (reset_classifier)
]
UNBUILDABLE = {
    "RN50": "ResNet image tower",
    "coca_ViT-B-32": "CoCa",
    "roberta-ViT-B-32": "transformers text tower",
    "convnext_base": "timm convnext_base",
    "EVA02-B-16": "timm eva02_base_patch16_clip_224",
}


def _names() -> list[str]:
    import open_clip

    return [n for n in open_clip.list_models() if n not in UNBUILDABLE] if ALL else COVER


def _declared(cfg: dict[str, Any]) -> Checkpoint:
    side = Sidecar(name=CONFIG, kind="open_clip-config", content={"model_cfg": cfg})
    return Checkpoint(path="x", format="open_clip-dir", sidecars=[side])


@pytest.mark.parametrize("name", _names())
def test_declared_tree_equals_the_model_open_clip_builds(name: str) -> None:
    import open_clip

    ckpt = _declared(open_clip.get_model_config(name))
    expected = declared_expected(ckpt)
    if isinstance(expected, Unchecked):
        assert ALL, (
            expected.reason
        )  # the cover list is buildable; the full sweep may meet unbuildable configs
        return
    assert isinstance(expected, Expected)
    with torch.device("meta"):
        model = open_clip.create_model(name, device="meta")
    truth = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: t.shape for k, t in expected.tensors.items()} == truth
    decl = declaration_of(ckpt)
    assert not isinstance(decl, Unbuilt) and decl is not None
    assert decl.name == name  # the declared config is the named model


@pytest.mark.parametrize(("name", "why"), UNBUILDABLE.items())
def test_declarations_ckptlint_cannot_build_are_named(name: str, why: str) -> None:
    import open_clip

    found = declaration_of(_declared(open_clip.get_model_config(name)))
    assert isinstance(found, Unbuilt) and not found.refused and why in found.reason


def test_timm_trunk_contradiction_names_the_trunk() -> None:
    """A ViT-B-16-SigLIP-256 declaration over ViT-B-16-SigLIP (224 px) weights: the trunk's name is the field.

    The checkpoint is the header of the real model's state_dict (built on the meta device: full size, no data)."""
    import open_clip
    from engine_support import torch_load_report

    from ckptlint.checkpoint import tensor_info
    from ckptlint.engine import run

    with torch.device("meta"):
        weights = open_clip.create_model("ViT-B-16-SigLIP", device="meta").state_dict()
        declared = open_clip.create_model("ViT-B-16-SigLIP-256", device="meta")
    ckpt = _declared(open_clip.get_model_config("ViT-B-16-SigLIP-256"))
    ckpt.tensors = {k: tensor_info(tuple(v.shape), "float32") for k, v in weights.items()}
    report = run(ckpt, declared_expected(ckpt))
    ck113 = report.findings[0]
    assert ck113.code == "CK113" and ck113.details["field"] == "model_cfg.vision_cfg.timm_model_name"
    assert "image size 256" in ck113.message and "visual.trunk.pos_embed [1, 196, 768]" in ck113.message
    assert ck113.fix.startswith("edit model_cfg.vision_cfg.timm_model_name in open_clip_config.json")
    assert same_diff(report.diff, torch_load_report(declared, weights))
