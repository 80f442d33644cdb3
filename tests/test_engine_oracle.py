"""Oracle tests for the rule engine, torch frameworks (open_clip, transformers, timm).

For each architecture (tiny configs, real libraries) a clean checkpoint passes; then each mistake is made the
way users make it (DataParallel wrapping, torch.compile, saving the transformers model and loading it into
open_clip, a timm vision-only export, another context length or resolution, an fp16 save, a trainer dict…).
The engine must name the right top cause, and its raw diff must equal what ``model.load_state_dict(sd,
strict=False)`` and its size-mismatch errors report for the very same pair.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from engine_support import (
    CORPUS,
    assert_diff_matches_torch,
    check,
    expected_from_state_dict,
    flatten,
    hf_clip_tiny,
    hf_clip_vision_tiny,
    hf_siglip_tiny,
    open_clip_tiny,
    read_checkpoint,
    save_safetensors,
    structural,
    timm_tiny,
    top,
)

# A case makes a checkpoint file the way users do and returns (path written, flat state_dict torch would
# load).
Case = Callable[[torch.nn.Module, Path], tuple[Path, dict[str, torch.Tensor]]]


def _torch_file(obj: Any, path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.save(obj, path)
    return path, flatten(obj)


def _st_file(sd: dict[str, torch.Tensor], path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    save_safetensors(sd, path)
    return path, dict(sd)


def _hf_dir(model: torch.nn.Module, path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    model.save_pretrained(path)
    return path, dict(model.state_dict())


def _trainer_dict(model: torch.nn.Module) -> dict[str, Any]:
    """What a training loop saves: epoch, the DataParallel model's state_dict, the
    optimizer after one step."""
    wrapped = torch.nn.DataParallel(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for p in model.parameters():
        p.grad = torch.full_like(p, 1e-3)
    opt.step()
    return {"epoch": 3, "name": "tiny", "state_dict": wrapped.state_dict(), "optimizer": opt.state_dict()}


def run_case(model: torch.nn.Module, expected: Any, case: Case, tmp_path: Path) -> Any:
    path, sd = case(model, tmp_path)
    report = check(read_checkpoint(path), expected)
    assert_diff_matches_torch(report, model, sd)
    return report


# ---- open_clip ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def oc_model() -> torch.nn.Module:
    return open_clip_tiny()


@pytest.fixture(scope="module")
def oc_expected(oc_model: torch.nn.Module) -> Any:
    return expected_from_state_dict(oc_model.state_dict(), "open_clip", "open_clip")


def _proj_transposed(m: torch.nn.Module, p: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = dict(m.state_dict())
    sd["visual.proj"] = sd["visual.proj"].T.contiguous()
    return _torch_file(sd, p / "t.pt")


def _logit_scale_1d(m: torch.nn.Module, p: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    sd = dict(m.state_dict())
    sd["logit_scale"] = sd["logit_scale"].reshape(1)  # torch loads a 1-element tensor into a 0-dim parameter
    return _torch_file(sd, p / "t.pt")


OPEN_CLIP_CASES: dict[str, tuple[Case, str | None]] = {
    "clean": (lambda m, p: _torch_file(m.state_dict(), p / "m.pt"), None),
    "clean_safetensors": (lambda m, p: _st_file(m.state_dict(), p / "m.safetensors"), None),
    "logit_scale_1d": (_logit_scale_1d, None),
    "ddp": (lambda m, p: _torch_file(torch.nn.DataParallel(m).state_dict(), p / "ddp.pt"), "CK103"),
    "compile": (lambda m, p: _torch_file(torch.compile(m).state_dict(), p / "c.pt"), "CK103"),
    "trainer_dict": (lambda m, p: _torch_file(_trainer_dict(open_clip_tiny()), p / "ckpt.pt"), "CK103"),
    "hf_model_saved": (lambda m, p: _hf_dir(hf_clip_tiny(), p / "hf"), "CK104"),
    "timm_vision_only": (lambda m, p: _st_file(timm_tiny().state_dict(), p / "timm.safetensors"), "CK105"),
    "context_length_8": (
        lambda m, p: _torch_file(open_clip_tiny(text_cfg={"context_length": 8}).state_dict(), p / "c8.pt"),
        "CK110",
    ),
    "resolution_64": (
        lambda m, p: _torch_file(open_clip_tiny(vision_cfg={"image_size": 64}).state_dict(), p / "r64.pt"),
        "CK110",
    ),
    "fp16": (lambda m, p: _st_file(open_clip_tiny().half().state_dict(), p / "fp16.safetensors"), "CK106"),
    "transposed_proj": (_proj_transposed, "CK109"),
    "other_width": (
        lambda m, p: _torch_file(open_clip_tiny(vision_cfg={"width": 96}).state_dict(), p / "w96.pt"),
        "CK112",
    ),
    "custom_text_file": (
        lambda m, p: _torch_file(open_clip_tiny(custom_text=True).state_dict(), p / "ct.pt"),
        "CK103",
    ),
}


@pytest.mark.parametrize("name", list(OPEN_CLIP_CASES))
def test_open_clip(name: str, oc_model: torch.nn.Module, oc_expected: Any, tmp_path: Path) -> None:
    case, want = OPEN_CLIP_CASES[name]
    report = run_case(oc_model, oc_expected, case, tmp_path)
    if want is None:
        assert structural(report) == [], [(f.code, f.message) for f in report.findings]
    else:
        assert top(report) == want, [(f.code, f.message) for f in report.findings]
        assert not {"CK100", "CK101", "CK102"} & set(structural(report)), [f.message for f in report.findings]


def test_open_clip_mistake_details(oc_model: torch.nn.Module, oc_expected: Any, tmp_path: Path) -> None:
    """The findings carry what a user needs: the exact rename, the converter, the resample, the size added."""
    r = run_case(oc_model, oc_expected, OPEN_CLIP_CASES["ddp"][0], tmp_path)
    assert r.findings[0].details["from"] == "module." and r.findings[0].details["to"] == ""
    assert "removeprefix('module.')" in r.findings[0].fix

    r = run_case(oc_model, oc_expected, OPEN_CLIP_CASES["trainer_dict"][0], tmp_path)
    assert r.findings[0].details["from"] == "state_dict.module."
    ck201 = [f for f in r.findings if f.code == "CK201"]
    assert ck201 and "optimizer" in ck201[0].message and "larger than the weights" in ck201[0].message
    assert 2.5 < ck201[0].details["ratio"] < 3.5  # AdamW: two moments per parameter (+ step counters)

    r = run_case(oc_model, oc_expected, OPEN_CLIP_CASES["hf_model_saved"][0], tmp_path)
    assert "open_clip_pytorch_model.bin" in r.findings[0].fix
    assert "no transformers→open_clip converter" in r.findings[0].cause

    r = run_case(oc_model, oc_expected, OPEN_CLIP_CASES["timm_vision_only"][0], tmp_path)
    assert [f.code for f in r.findings[:2]] == ["CK105", "CK104"]
    assert r.findings[0].details["tower"] == "text" and "0.08%" in r.findings[0].cause
    assert "timm_model_name" in r.findings[1].fix

    r = run_case(oc_model, oc_expected, OPEN_CLIP_CASES["context_length_8"][0], tmp_path)
    assert "resize_text_pos_embed" in r.findings[0].fix and "8 positions" in r.findings[0].message

    r = run_case(oc_model, oc_expected, OPEN_CLIP_CASES["resolution_64"][0], tmp_path)
    f = r.findings[0]
    assert "resize_pos_embed" in f.fix and f.details["image_size"] == {"checkpoint": 64, "model": 32}

    r = run_case(oc_model, oc_expected, OPEN_CLIP_CASES["transposed_proj"][0], tmp_path)
    f = r.findings[0]
    assert f.details["keys"] == ["visual.proj"] and "text_projection" in f.details["silent_square"]

    r = run_case(oc_model, oc_expected, OPEN_CLIP_CASES["other_width"][0], tmp_path)
    assert r.findings[0].details["fields"]["vision"]["width"] == [64, 96]


def test_plain_clip_into_custom_text_model(tmp_path: Path) -> None:
    model = open_clip_tiny(custom_text=True)
    expected = expected_from_state_dict(model.state_dict(), "open_clip", "open_clip")
    report = run_case(
        model, expected, lambda m, p: _torch_file(open_clip_tiny().state_dict(), p / "p.pt"), tmp_path
    )
    assert top(report) == "CK103"
    assert (
        report.findings[0].details["to"] == "text."
        and "convert_to_custom_text_state_dict" in report.findings[0].fix
    )


def test_ddp_wrapped_vision_only_file(oc_model: torch.nn.Module, oc_expected: Any, tmp_path: Path) -> None:
    """Two mistakes at once: a DataParallel-wrapped timm export. The absent tower comes
    first, both are named."""
    sd = torch.nn.DataParallel(timm_tiny()).state_dict()
    report = run_case(oc_model, oc_expected, lambda m, p: _torch_file(sd, p / "x.pt"), tmp_path)
    assert top(report) == "CK105"
    assert "CK104" in structural(report)


# ---- transformers ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hf_model() -> torch.nn.Module:
    return hf_clip_tiny()


@pytest.fixture(scope="module")
def hf_expected(hf_model: torch.nn.Module) -> Any:
    return expected_from_state_dict(hf_model.state_dict(), "hf-clip", "hf")


def _old_position_ids(m: torch.nn.Module, p: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    path = CORPUS / "hf" / "hf_clip_tiny_old_position_ids"
    return path, torch.load(path / "pytorch_model.bin", weights_only=True)  # trusted corpus file


HF_CASES: dict[str, tuple[Case, str | None]] = {
    "clean": (lambda m, p: _hf_dir(m, p / "hf"), None),
    "clean_bin": (lambda m, p: _torch_file(m.state_dict(), p / "pytorch_model.bin"), None),
    "ddp": (lambda m, p: _torch_file(torch.nn.DataParallel(m).state_dict(), p / "ddp.bin"), "CK103"),
    "compile": (lambda m, p: _torch_file(torch.compile(m).state_dict(), p / "c.bin"), "CK103"),
    "open_clip_file": (lambda m, p: _torch_file(open_clip_tiny().state_dict(), p / "oc.pt"), "CK104"),
    "old_position_ids": (_old_position_ids, "CK111"),
    "vision_model_only": (lambda m, p: _hf_dir(hf_clip_vision_tiny(), p / "v"), "CK105"),
    "fp16": (lambda m, p: _st_file(hf_clip_tiny().half().state_dict(), p / "h.safetensors"), "CK106"),
}


@pytest.mark.parametrize("name", list(HF_CASES))
def test_hf_clip(name: str, hf_model: torch.nn.Module, hf_expected: Any, tmp_path: Path) -> None:
    case, want = HF_CASES[name]
    report = run_case(hf_model, hf_expected, case, tmp_path)
    if want is None:
        assert structural(report) == [], [(f.code, f.message) for f in report.findings]
    else:
        assert top(report) == want, [(f.code, f.message) for f in report.findings]
        assert not {"CK100", "CK101", "CK102"} & set(structural(report)), [f.message for f in report.findings]


def test_hf_open_clip_conversion_hint(hf_model: torch.nn.Module, hf_expected: Any, tmp_path: Path) -> None:
    report = run_case(hf_model, hf_expected, HF_CASES["open_clip_file"][0], tmp_path)
    assert "convert_clip_original_pytorch_to_hf" in report.findings[0].fix


def test_full_clip_into_vision_model(tmp_path: Path) -> None:
    """transformers 5 names CLIPVisionModel keys without vision_model.; a full CLIPModel
    file has them and more."""
    model = hf_clip_vision_tiny()
    expected = expected_from_state_dict(model.state_dict(), "hf-clip-vision", "hf")
    report = run_case(model, expected, lambda m, p: _hf_dir(hf_clip_tiny(), p / "full"), tmp_path)
    assert top(report) == "CK103"
    assert report.findings[0].details["from"] == "vision_model."
    ck101 = [f for f in report.findings if f.code == "CK101"]
    assert ck101 and ck101[0].details["tower"] == "text"


@pytest.mark.parametrize("name", ["clean", "ddp"])
def test_hf_siglip(name: str, tmp_path: Path) -> None:
    model = hf_siglip_tiny()
    expected = expected_from_state_dict(model.state_dict(), "hf-siglip", "hf")
    case, want = HF_CASES[name]
    report = run_case(model, expected, case, tmp_path)
    assert (structural(report) == []) if want is None else (top(report) == want)


# ---- timm --------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def timm_model() -> torch.nn.Module:
    return timm_tiny()


@pytest.fixture(scope="module")
def timm_expected(timm_model: torch.nn.Module) -> Any:
    return expected_from_state_dict(timm_model.state_dict(), "timm-vit", "timm")


TIMM_CASES: dict[str, tuple[Case, str | None]] = {
    "clean": (lambda m, p: _st_file(m.state_dict(), p / "t.safetensors"), None),
    "corpus_file": (
        lambda m, p: (
            CORPUS / "timm" / "timm_vit_clip_tiny.safetensors",
            _read_safetensors(CORPUS / "timm" / "timm_vit_clip_tiny.safetensors"),
        ),
        None,
    ),
    "ddp": (lambda m, p: _torch_file(torch.nn.DataParallel(m).state_dict(), p / "ddp.pth"), "CK103"),
    "compile": (lambda m, p: _torch_file(torch.compile(m).state_dict(), p / "c.pth"), "CK103"),
    "open_clip_file": (lambda m, p: _torch_file(open_clip_tiny().state_dict(), p / "oc.pt"), "CK104"),
    "hf_vision_file": (lambda m, p: _hf_dir(hf_clip_vision_tiny(), p / "hfv"), "CK104"),
    "resolution_64": (
        lambda m, p: _st_file(timm_tiny(img_size=64).state_dict(), p / "r.safetensors"),
        "CK110",
    ),
    "fp16": (lambda m, p: _st_file(timm_tiny().half().state_dict(), p / "h.safetensors"), "CK106"),
}


def _read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))


@pytest.mark.parametrize("name", list(TIMM_CASES))
def test_timm(name: str, timm_model: torch.nn.Module, timm_expected: Any, tmp_path: Path) -> None:
    case, want = TIMM_CASES[name]
    report = run_case(timm_model, timm_expected, case, tmp_path)
    if want is None:
        assert structural(report) == [], [(f.code, f.message) for f in report.findings]
    else:
        assert top(report) == want, [(f.code, f.message) for f in report.findings]
        assert not {"CK100", "CK101", "CK102"} & set(structural(report)), [f.message for f in report.findings]


def test_timm_conversion_hint(timm_model: torch.nn.Module, timm_expected: Any, tmp_path: Path) -> None:
    report = run_case(timm_model, timm_expected, TIMM_CASES["open_clip_file"][0], tmp_path)
    assert "checkpoint_filter_fn" in report.findings[0].fix
    report = run_case(timm_model, timm_expected, TIMM_CASES["resolution_64"][0], tmp_path)
    assert "resample_abs_pos_embed" in report.findings[0].fix


def test_leftovers_stay_raw_and_collapsed(
    oc_model: torch.nn.Module, oc_expected: Any, tmp_path: Path
) -> None:
    """Keys nobody explains stay CK100/CK101/CK102 — one finding per kind, keys collapsed, raw diff
    complete."""
    sd = dict(oc_model.state_dict())
    for k in [k for k in sd if k.startswith("visual.transformer.resblocks.1.mlp.")]:
        del sd[k]
    sd["extra.head.weight"] = torch.zeros(3, 3)
    sd["ln_final.weight"] = torch.zeros(48)
    report = run_case(oc_model, oc_expected, lambda m, p: _torch_file(sd, p / "x.pt"), tmp_path)
    kinds = structural(report)
    assert kinds.count("CK100") == 1 and kinds.count("CK101") == 1 and kinds.count("CK102") == 1
    ck100 = next(f for f in report.findings if f.code == "CK100")
    assert "visual.transformer.resblocks.1.mlp." in ck100.message and len(ck100.details["key_groups"]) <= 8
    assert len(report.diff.missing) == 4


def test_hf_siglip_vision(tmp_path: Path) -> None:
    """transformers SiglipVisionModel: clean, DataParallel-wrapped, and a full SiglipModel file."""
    from transformers import SiglipVisionModel

    model = SiglipVisionModel(hf_siglip_tiny().config.vision_config).eval()
    expected = expected_from_state_dict(model.state_dict(), "hf-siglip-vision", "hf")
    clean = run_case(model, expected, lambda m, p: _hf_dir(m, p / "v"), tmp_path)
    assert structural(clean) == []
    ddp = run_case(model, expected, HF_CASES["ddp"][0], tmp_path)
    assert top(ddp) == "CK103"
    full = run_case(model, expected, lambda m, p: _hf_dir(hf_siglip_tiny(), p / "full"), tmp_path)
    assert top(full) == "CK103" and full.findings[0].details["from"] == "vision_model."
    assert [f.details.get("tower") for f in full.findings if f.code == "CK101"] == ["text"]
