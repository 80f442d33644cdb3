"""Inference that tolerates the mistakes the rules explain (issue 12, item 4).

``--arch NAME`` without a variant reads the architecture back from the file's shapes. The very mistakes ckptlint
explains -- a projection stored transposed, a tower under the wrong scope, a tensor lost -- must not throw that
reading off: the expectation must be the model the framework would build, so the raw diff equals the framework's
own report (torch ``load_state_dict(strict=False)``; big_vision's key sets and flax's scope error, through the
``bv_replica`` flax re-creation whose trees are checked against big_vision's real files and reference facts) and
the finding is the one that explains it (CK109, CK103 + CK105), never a "different variant" (CK112).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import bv_replica
import numpy as np
import pytest
from cli_support import ckptlint
from engine_support import (
    CORPUS,
    assert_diff_matches_torch,
    hf_clip_tiny,
    open_clip_tiny,
    read_checkpoint,
    save_safetensors,
    save_torch,
    structural,
)
from test_engine_oracle_big_vision import (
    assert_diff_matches_flax,
    expected_from_flax,
    flax_scope_error,
    npz_params,
    save_npz,
)

from ckptlint.api import check_checkpoint
from ckptlint.results import FileReport

BV = CORPUS / "big_vision"


def check_as(path: Path, arch: str) -> FileReport:
    """What `ckptlint check PATH --arch ARCH` reports (the variant read from the file)."""
    return check_checkpoint(read_checkpoint(path), arch=arch)


# ---- torch projections stored transposed ----------------------------------------------------------------------
def test_open_clip_projections_stored_transposed_are_ck109(tmp_path: Path) -> None:
    """visual.proj and text_projection saved as (out, in) by a hand conversion: CK109, and the variant read
    around them -- embed dim 28 on both towers, as torch's model has it."""
    model = open_clip_tiny(vision_cfg={"width": 36, "head_width": 18}, text_cfg={"width": 20}, embed_dim=28)
    sd = dict(model.state_dict())
    assert sd["visual.proj"].shape == (36, 28) and sd["text_projection"].shape == (20, 28)
    for k in ("visual.proj", "text_projection"):
        sd[k] = sd[k].T.contiguous()
    save_torch(sd, tmp_path / "transposed.pt")
    report = check_as(tmp_path / "transposed.pt", "open_clip")
    assert_diff_matches_torch(report, model, sd)  # text_projection: expected [20, 28], as torch
    assert structural(report) == ["CK109"], [(f.code, f.message) for f in report.findings]
    assert set(report.findings[0].details["keys"]) == {"visual.proj", "text_projection"}


def test_hf_visual_projection_stored_transposed_is_ck109(tmp_path: Path) -> None:
    """transformers' visual_projection is an nn.Linear (out, in) = [32, 64]; stored [64, 32] it is CK109."""
    model = hf_clip_tiny()
    sd = dict(model.state_dict())
    sd["visual_projection.weight"] = sd["visual_projection.weight"].T.contiguous()
    ckpt = save_safetensors(sd, tmp_path / "model.safetensors")
    report = check_checkpoint(ckpt, arch="hf-clip")
    assert_diff_matches_torch(report, model, sd)
    assert structural(report) == ["CK109"], [(f.code, f.message) for f in report.findings]


def test_open_clip_mlp_stored_transposed_keeps_the_mlp_width(tmp_path: Path) -> None:
    """Every c_fc weight saved (in, out): mlp width 128 is still read (not 64 from the wrong axis)."""
    model = open_clip_tiny()
    sd = dict(model.state_dict())
    fc = [k for k in sd if k.endswith("mlp.c_fc.weight")]
    for k in fc:
        sd[k] = sd[k].T.contiguous()
    save_torch(sd, tmp_path / "mlp_t.pt")
    report = check_as(tmp_path / "mlp_t.pt", "open_clip")
    assert_diff_matches_torch(report, model, sd)
    assert structural(report) == ["CK109"] and set(report.findings[0].details["keys"]) == set(fc)


# ---- tensors lost ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("lost", ["visual.proj", "visual.conv1.weight", "token_embedding.weight"])
def test_open_clip_with_a_tensor_lost(lost: str, tmp_path: Path) -> None:
    """The tower is still found and its width read from another tensor: torch's missing key, nothing more."""
    model = open_clip_tiny(vision_cfg={"width": 36, "head_width": 18}, text_cfg={"width": 20}, embed_dim=28)
    sd = {k: v for k, v in model.state_dict().items() if k != lost}
    save_torch(sd, tmp_path / "lost.pt")
    report = check_as(tmp_path / "lost.pt", "open_clip")
    assert_diff_matches_torch(report, model, sd)
    assert report.diff is not None and report.diff.missing == [lost] and report.diff.shape_mismatch == []
    assert structural(report) == ["CK100"]


def test_big_vision_vit_without_its_patch_embedding(tmp_path: Path) -> None:
    with np.load(BV / "tiny_vit.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "params/embedding/kernel"}
    path = save_npz(tmp_path / "lost.npz", arrays)
    report = check_as(path, "bv-vit")
    assert report.diff is not None and report.diff.shape_mismatch == []
    assert report.diff.missing == ["embedding/kernel"] and report.diff.unexpected == []


# ---- flax Dense kernels stored in torch's (out, in) layout ----------------------------------------------------
def test_big_vision_dense_kernels_stored_out_in_are_ck109(tmp_path: Path) -> None:
    with np.load(BV / "tiny_vit.npz") as z:
        arrays = {k: (z[k].T if k.endswith("/kernel") and z[k].ndim == 2 else z[k]) for k in z.files}
    path = save_npz(tmp_path / "torch_layout.npz", arrays)
    vit = bv_replica.ViT(**bv_replica.TINY)
    expected = expected_from_flax(vit, bv_replica.image(), arch="bv-vit", towers={"vision": [""]})
    report = check_as(path, "bv-vit")
    assert_diff_matches_flax(report, npz_params(path), expected)  # mlp 64 read through the transposition
    assert structural(report) == ["CK109"], [(f.code, f.message) for f in report.findings]
    (ck109,) = report.findings[:1]
    assert len(ck109.details["keys"]) == 6  # Dense_0 / Dense_1 of both blocks and of the MAP head
    assert ck109.details["silent_square"] == ["head/kernel"]  # 32 × 32: loads silently transposed


# ---- a plain ViT checked as CLIPPO or as SigLIP two towers ----------------------------------------------------
def test_plain_vit_checked_as_clippo_is_only_the_wrong_scope(tmp_path: Path) -> None:
    """The ViT's head (num_classes 32) is CLIPPO's out_dim: no CK112 beside the CK103, and fix claims nothing."""
    one_tower = bv_replica.OneTower(bv_replica.TINY)
    x = bv_replica.image()
    expected = expected_from_flax(one_tower, x, x, arch="clippo", towers={"vision": ["img/"]})
    src = BV / "tiny_vit.npz"
    report = check_as(src, "clippo")
    params = npz_params(src)
    assert_diff_matches_flax(report, params, expected)
    assert structural(report) == ["CK103"], [(f.code, f.message) for f in report.findings]
    f = report.findings[0]
    assert f.details["kind"] == "plain_vit" and f.edits == []
    assert f.details["flax_error"] == flax_scope_error(one_tower, params, x, x) == "/img/embedding/kernel"
    assert "one_tower.load(init, {'img': " in f.fix and str(src) in f.fix
    proc = ckptlint("fix", str(src), str(tmp_path / "out.npz"), "--arch", "clippo")
    assert "fixed: none; still reported: CK103, CK107" in proc.stdout, proc.stdout


def _siglip_default_text() -> dict[str, int]:
    """The text tower bv-siglip falls back to when the file has none: B's (as two_towers' SigLIP B/16)."""
    return {
        "num_classes": 768,
        "width": 768,
        "depth": 12,
        "mlp_dim": 3072,
        "num_heads": 12,
        "vocab_size": 32000,
    }


def test_twotowers_replica_is_big_vision_siglip() -> None:
    """big_vision_layouts.md §7: SigLIP B/16 two_towers has 412 leaves and 203,155,970 parameters."""
    model = bv_replica.TwoTowers(
        img={"num_classes": 0, "patch": 16, "width": 768, "depth": 12, "mlp_dim": 3072, "num_heads": 12},
        txt=_siglip_default_text(),
    )
    tree = bv_replica.param_shapes(model, bv_replica.image(224), bv_replica.tokens(64))
    assert len(tree) == 412
    assert sum(int(np.prod(s)) for s, _ in tree.values()) == 203_155_970


def test_plain_vit_checked_as_siglip_is_wrong_scope_and_no_text_tower() -> None:
    """Not CK103 x2 + CK102 + CK100: the image tower under the wrong scope (two_towers', not one_tower's fix) and
    the text tower absent (CK105)."""
    model = bv_replica.TwoTowers(img=bv_replica.TINY, txt=_siglip_default_text())
    image = bv_replica.image()
    tree = bv_replica.param_shapes(model, image, bv_replica.tokens(64))
    expected = expected_from_flax_tree(tree, "bv-siglip", {"vision": ["img/"], "text": ["txt/"]})
    src = BV / "tiny_vit.npz"
    report = check_as(src, "bv-siglip")
    params = npz_params(src)
    assert_diff_matches_flax(report, params, expected)
    assert sorted(structural(report)) == ["CK103", "CK105"], [(f.code, f.message) for f in report.findings]
    by_code = {f.code: f for f in report.findings}
    ck103, ck105 = by_code["CK103"], by_code["CK105"]
    assert "wrong scope" in ck103.message and "two_towers" in ck103.message
    assert "two_towers.load(init, {'img': " in ck103.fix and "one_tower" not in ck103.fix
    assert ck103.details["flax_error"] == flax_scope_error(model, params, image) == "/img/embedding/kernel"
    assert ck103.details["companions"] == ["t", "b"]
    assert ck105.details["tower"] == "text" and ck105.details["count"] == 198
    assert f"`ckptlint check {src} --arch bv-vit`" in ck105.fix


def expected_from_flax_tree(tree: dict[str, Any], arch: str, towers: dict[str, list[str]]) -> Any:
    from ckptlint.expected import Expected, ExpectedTensor

    return Expected(
        arch=arch,
        variant="tiny",
        source="model",
        framework="big_vision",
        key_sep="/",
        tensors={k: ExpectedTensor(shape=s, dtype=d) for k, (s, d) in tree.items()},
        towers=towers,
    )


def test_big_vision_resized_posemb_keeps_the_variant(tmp_path: Path) -> None:
    """A posemb resampled to 64 px: the variant read is still the file's (CK110 against a 32 px model)."""
    import jax

    with np.load(BV / "tiny_vit.npz") as z:
        arrays = {k: z[k] for k in z.files}
    pe = arrays["params/pos_embedding"]  # (1, 16, 32): 4×4 patches
    arrays["params/pos_embedding"] = np.asarray(
        jax.image.resize(pe.reshape(1, 4, 4, 32), (1, 8, 8, 32), "bilinear")
    ).reshape(1, 64, 32)
    path = save_npz(tmp_path / "resized.npz", arrays)
    report = check_as(path, "bv-vit")
    assert report.arch is not None and report.arch.variant == "custom"
    assert structural(report) == []  # inferred at 64 px: the model the file fits
    assert [
        f.code
        for f in check_checkpoint(read_checkpoint(path), arch="bv-vit:custom,image_size=32").findings
        if f.code != "CK107"
    ] == ["CK110"]


def test_a_class_token_row_is_not_a_resize(tmp_path: Path) -> None:
    """SigLIP's position embedding (16 rows: 4×4, no class token) against CLIP's (17: 4×4 + class token) is the
    same 32 px grid: a shape mismatch, never "position embedding resized"."""
    weights = tmp_path / "model.safetensors"  # the weights alone: a config.json would decide first (CK114)
    shutil.copy(CORPUS / "hf" / "hf_siglip_tiny" / "model.safetensors", weights)
    report = check_as(weights, "hf-clip-vision")
    assert "CK110" not in structural(report)
    (ck102,) = [f for f in report.findings if f.code == "CK102"]
    assert "embeddings.position_embedding.weight" in ck102.keys
