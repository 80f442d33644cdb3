"""The five seed stories (docs/seeds/), end to end from the file alone: ``ckptlint.check(path, arch=…)``.

1. CLIPPO checkpoint loaded as a plain big_vision ViT: ScopeParamNotFoundError for /embedding/kernel.
2. transformers CLIPVisionModel vs open_clip: different layouts, and which conversion exists.
3. An HF-format CLIP file loaded into open_clip: missing positional_embedding/text_projection, unexpected
   text_model.* — use open_clip_pytorch_model.bin.
4. A local SigLIP checkpoint loses its preprocessing (and open_clip falls back to CLIP mean/std).
5. timm's vit_base_patch16_clip_224.openai is vision-only: as a full CLIP the text tower stays random.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from engine_support import CORPUS

import ckptlint
from ckptlint import check
from ckptlint.results import FileReport

BV = CORPUS / "big_vision"
HF = CORPUS / "hf"


def one(path: Path, arch: str | None) -> FileReport:
    report = check(str(path), arch=arch)
    assert len(report.files) == 1 and report.files[0].error is None
    return report.files[0]


def codes(f: FileReport) -> list[str]:
    return [x.code for x in f.findings]


# ---- 1 -----------------------------------------------------------------------------------------------------
def test_story1_clippo_checked_as_plain_vit() -> None:
    f = one(BV / "tiny_clippo.npz", "bv-vit")
    top = f.findings[0]
    assert top.code == "CK103" and top.severity.value == "error"
    assert "every expected key exists under params/img/" in top.message
    assert "CLIPPO one_tower" in top.message
    assert "flax will raise ScopeParamNotFoundError for /embedding/kernel; take params['img']" in top.message
    assert "models.proj.clippo.one_tower" in top.fix and ":img" in top.fix
    assert top.details["from"] == "img/" and top.details["to"] == ""
    assert top.keys[0] == "params/img/embedding/kernel"
    assert not {"CK100", "CK101", "CK102", "CK112"} & set(codes(f))  # everything else is explained
    assert f.diff is not None and len(f.diff.missing) == 54 and len(f.diff.unexpected) == 55


def test_story1_clippo_checked_as_clippo() -> None:
    f = one(BV / "tiny_clippo.npz", "clippo")
    assert codes(f) == ["CK201", "CK107"]
    ck201, ck107 = f.findings
    assert (
        "opt/" in ck201.message and "chrono/" in ck201.message and "larger than the weights" in ck201.message
    )
    assert "ckptlint strip --keep params" in ck201.fix
    assert "mean/std/size" in ck107.message and "never in the .npz" in ck107.cause
    assert f.arch is not None and f.arch.name == "clippo" and f.layout == "big_vision"
    assert f.arch.inferred_from and "params/img/embedding/kernel" in f.arch.inferred_from
    assert f.num_tensors == 282 and f.num_params == sum(
        t.numel
        for k, t in ckptlint.dump(str(BV / "tiny_clippo.npz")).tensors.items()
        if k.startswith("params/")
    )


def test_story1_without_arch_names_the_same_problems() -> None:
    f = one(BV / "tiny_clippo.npz", None)
    assert {"CK201", "CK107"} <= set(codes(f))
    assert not {"CK100", "CK101", "CK102", "CK103"} & set(codes(f))


# ---- 2 -----------------------------------------------------------------------------------------------------
def test_story2_hf_clip_vision_into_open_clip() -> None:
    f = one(HF / "hf_clipvision_tiny", "open_clip")
    top = f.findings[0]
    assert top.code == "CK104"
    assert "transformers" in top.message and "open_clip" in top.message
    assert "no transformers→open_clip converter" in top.cause
    assert "CK105" in codes(f)  # and a CLIPVisionModel has no text tower at all


def test_story2_open_clip_into_hf_clip_vision() -> None:
    f = one(CORPUS / "open_clip" / "openclip_tiny.pt", "hf-clip-vision")
    top = f.findings[0]
    assert top.code == "CK104" and "convert_clip_original_pytorch_to_hf" in top.fix


# ---- 3 -----------------------------------------------------------------------------------------------------
def test_story3_hf_files_into_open_clip() -> None:
    for name in ("hf_clip_tiny", "hf_clip_tiny_bin", "hf_clip_tiny_old_position_ids"):
        f = one(HF / name, "open_clip")
        top = f.findings[0]
        assert top.code == "CK104", name
        assert "open_clip_pytorch_model.bin" in top.fix
        assert not {"CK100", "CK101", "CK102"} & set(codes(f))
    assert f.diff is not None and "text_model.embeddings.position_ids" in f.diff.unexpected


def test_story3_raw_diff_names_what_open_clip_misses() -> None:
    """The seed's error text: positional_embedding and text_projection missing, text_model.* unexpected."""
    f = one(HF / "hf_clip_tiny", "open_clip")
    assert f.diff is not None
    assert {"positional_embedding", "text_projection", "visual.proj"} <= set(f.diff.missing)
    assert all(
        k.startswith(("text_model.", "vision_model.", "visual_projection", "text_projection."))
        for k in f.diff.unexpected
    )


# ---- 4 -----------------------------------------------------------------------------------------------------
def test_story4_local_siglip_without_preprocessing() -> None:
    f = one(HF / "hf_siglip_tiny", "hf-siglip")
    absent = [x for x in f.findings if x.code == "CK107"]
    assert len(absent) == 1 and {"mean", "std"} <= set(absent[0].details["missing"])
    assert "mean=(0.5, 0.5, 0.5)" in absent[0].fix
    assert not {"CK100", "CK101", "CK102", "CK103", "CK104"} & set(codes(f))


def test_story4_siglip_with_clip_mean_std(tmp_path: Path) -> None:
    from transformers import CLIPImageProcessor

    folder = tmp_path / "siglip"
    shutil.copytree(HF / "hf_siglip_tiny", folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    f = one(folder, "hf-siglip")
    wrong = [x for x in f.findings if x.code == "CK108"]
    assert len(wrong) == 1 and f.findings[0].code == "CK108"
    assert "SigLIP" in wrong[0].message and "openai" in wrong[0].message


# ---- 5 -----------------------------------------------------------------------------------------------------
def test_story5_timm_vision_only_as_full_clip() -> None:
    f = one(CORPUS / "timm" / "timm_vit_clip_tiny.safetensors", "open_clip")
    top = f.findings[0]
    assert top.code == "CK105" and top.details["tower"] == "text"
    assert "random" in top.cause and "68.3%" in top.cause and "0.08%" in top.cause
    assert "CK104" in codes(f) and "timm_model_name" in next(x for x in f.findings if x.code == "CK104").fix


def test_story5_timm_file_alone_is_fine() -> None:
    f = one(CORPUS / "timm" / "timm_vit_clip_tiny.safetensors", "timm-vit")
    assert [x.code for x in f.findings if x.severity.value == "error"] == []
