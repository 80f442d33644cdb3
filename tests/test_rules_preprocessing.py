"""CK107 / CK108: preprocessing metadata absent, or present and wrong — on sidecars written
by the real libraries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_support import (
    CORPUS,
    TINY_OPEN_CLIP_CFG,
    check,
    expected_from_state_dict,
    hf_clip_tiny,
    read_checkpoint,
    save_safetensors,
)

OPENAI_MEAN = [0.48145466, 0.4578275, 0.40821073]


def _codes(report: Any, code: str) -> list[Any]:
    return [f for f in report.findings if f.code == code]


@pytest.fixture(scope="module")
def siglip_local_dir(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The seed story: an open_clip SigLIP model created from a local .pt, then published with
    save_config_for_hf.

    open_clip knows no pretrained tag for a local file, so it attaches its PreprocessCfg default (OpenAI CLIP
    mean/std, resize_mode 'shortest') and writes exactly that into open_clip_config.json.
    """
    import open_clip
    from open_clip.push_to_hf_hub import save_config_for_hf

    root = tmp_path_factory.mktemp("siglip")
    cfg = json.loads(json.dumps(TINY_OPEN_CLIP_CFG))
    cfg.update(init_logit_bias=-10, custom_text=True)
    cfg["text_cfg"].update(no_causal_mask=True, pool_type="last", proj_bias=True)
    (root / "ckptlint-tiny-SigLIP.json").write_text(json.dumps(cfg))
    open_clip.add_model_config(root / "ckptlint-tiny-SigLIP.json")
    seed = open_clip.create_model("ckptlint-tiny-SigLIP")
    local = root / "siglip_local.pt"
    torch.save(seed.state_dict(), local)

    model, _, _ = open_clip.create_model_and_transforms("ckptlint-tiny-SigLIP", pretrained=str(local))
    assert list(model.visual.preprocess_cfg["mean"]) == OPENAI_MEAN  # the library's own (wrong) default
    out = root / "published"
    out.mkdir()
    save_safetensors(model.state_dict(), out / "open_clip_model.safetensors")
    save_config_for_hf(
        model, out / "open_clip_config.json", model_config=open_clip.get_model_config("ckptlint-tiny-SigLIP")
    )
    expected = expected_from_state_dict(
        model.state_dict(), "open_clip", "open_clip", variant="ckptlint-tiny-SigLIP"
    )
    return out, expected


def test_siglip_with_clip_mean_std_is_wrong(siglip_local_dir: tuple[Path, Any]) -> None:
    folder, expected = siglip_local_dir
    ckpt = read_checkpoint(folder)
    assert any(s.kind == "open_clip-config" for s in ckpt.sidecars)
    for report in (check(ckpt, expected), check(ckpt, None)):
        wrong = _codes(report, "CK108")
        assert len(wrong) == 1, [(f.code, f.message) for f in report.findings]
        f = wrong[0]
        assert "SigLIP" in f.message and "openai" in f.message and "resize_mode 'shortest'" in f.message
        assert "squash" in f.fix and "force_preprocess_cfg" in f.fix
        assert f.details["family"] == "siglip"


def test_local_siglip_weights_without_metadata(siglip_local_dir: tuple[Path, Any], tmp_path: Path) -> None:
    """The bare .pt of the same story: nothing recorded at all (CK107), with the values
    SigLIP needs in the fix."""
    folder, expected = siglip_local_dir
    path = tmp_path / "siglip.safetensors"
    shutil.copy(folder / "open_clip_model.safetensors", path)
    report = check(read_checkpoint(path), expected)
    absent = _codes(report, "CK107")
    assert len(absent) == 1 and not _codes(report, "CK108")
    assert absent[0].details["missing"][:4] == ["mean", "std", "size", "interpolation"]
    assert "for SigLIP: mean=(0.5, 0.5, 0.5)" in absent[0].fix


def _hf_siglip_copy(tmp_path: Path) -> Path:
    folder = tmp_path / "siglip"
    shutil.copytree(CORPUS / "hf" / "hf_siglip_tiny", folder)
    return folder


def test_hf_siglip_without_preprocessor(tmp_path: Path) -> None:
    report = check(read_checkpoint(CORPUS / "hf" / "hf_siglip_tiny"), None)
    absent = _codes(report, "CK107")
    assert absent and absent[0].details["found"] == {"size": 32, "context_length": 16}
    assert {"mean", "std", "interpolation"} <= set(absent[0].details["missing"])


def test_hf_siglip_with_clip_processor(tmp_path: Path) -> None:
    from transformers import CLIPImageProcessor, SiglipImageProcessor

    folder = _hf_siglip_copy(tmp_path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    report = check(read_checkpoint(folder), None)
    wrong = _codes(report, "CK108")
    assert len(wrong) == 1 and "preprocessor_config.json" in wrong[0].message
    assert "mean openai" in wrong[0].message and "mean inception (0.5, 0.5, 0.5)" in wrong[0].message

    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)  # the right one
    report = check(read_checkpoint(folder), None)
    assert not _codes(report, "CK108")
    assert [f.details["missing"] for f in _codes(report, "CK107")] in ([], [["tokenizer"]])


def test_preprocessor_size_differs_from_the_weights(tmp_path: Path) -> None:
    """A processor for 224 px next to weights whose position embedding covers 32 px."""
    from transformers import CLIPImageProcessor

    folder = tmp_path / "clip"
    hf_clip_tiny().save_pretrained(folder)
    CLIPImageProcessor().save_pretrained(folder)  # library defaults: 224
    report = check(read_checkpoint(folder), None)
    wrong = _codes(report, "CK108")
    assert len(wrong) == 1 and wrong[0].details == {"recorded": 224, "weights": 32}

    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(
        folder
    )
    assert not _codes(check(read_checkpoint(folder), None), "CK108")


def test_corpus_hf_clip_is_consistent() -> None:
    report = check(read_checkpoint(CORPUS / "hf" / "hf_clip_tiny"), None)
    assert not _codes(report, "CK108")
    absent = _codes(report, "CK107")
    assert [f.details["missing"] for f in absent] == [["tokenizer"]]


def test_metadata_embedded_in_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in hf_clip_tiny().vision_model.state_dict().items()}
    sd = {f"vision_model.{k}": v for k, v in sd.items()}
    meta = {"image_mean": json.dumps(OPENAI_MEAN), "image_std": "[0.26862954, 0.26130258, 0.27577711]",
            "image_size": "32", "interpolation": "bicubic"}  # fmt: skip
    save_file(sd, str(tmp_path / "m.safetensors"), metadata=meta)
    report = check(read_checkpoint(tmp_path / "m.safetensors"), None)
    assert not _codes(report, "CK107") and not _codes(report, "CK108")


def test_big_vision_npz_never_has_preprocessing() -> None:
    report = check(read_checkpoint(CORPUS / "big_vision" / "tiny_clippo.npz"), None)
    absent = _codes(report, "CK107")
    assert len(absent) == 1 and "never in the .npz" in absent[0].cause
    assert "for CLIPPO: mean=(0.5, 0.5, 0.5)" in absent[0].fix
