"""timm folders are checked against the model their ``config.json`` declares, as ``timm.create_model`` builds it.

Folders are written by ``timm.models.save_for_hf`` (``declared_support``); each broken one is the clean folder with
one field of ``config.json`` edited. Ground truth: timm builds the declared model from the folder
(``create_model('local-dir:…')``) and torch loads the folder's weights into it (``load_state_dict(strict=False)``
and its size mismatches); ``create_model('local-dir:…', pretrained=True)`` says what timm's own loader does.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from cli_support import ckptlint
from declared_support import same_diff, set_fields, timm_folder, timm_loads, timm_report

from ckptlint import check
from ckptlint.archs.spec import load_arch, variant_names
from ckptlint.checkpoint import Checkpoint, Sidecar
from ckptlint.declared import declared_expected
from ckptlint.expected import Expected

STRUCTURAL = {"CK100", "CK101", "CK102", "CK103", "CK104", "CK105", "CK108", "CK109", "CK110", "CK112"}


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return timm_folder(tmp_path_factory.mktemp("timm") / "clean")


def _copy(clean: Path, tmp_path: Path, fields: dict[str, Any]) -> Path:
    folder = tmp_path / "edited"
    shutil.copytree(clean, folder)
    set_fields(folder / "config.json", fields)
    return folder


def test_clean_folder_is_checked_against_its_declaration(clean: Path) -> None:
    proc = ckptlint("check", str(clean), "--format", "json")
    assert proc.returncode == 0, proc.stdout
    (f,) = json.loads(proc.stdout)["files"]
    assert f["arch"]["source"] == "declared" and f["arch"]["declared_by"] == "config.json"
    assert f["arch"]["name"] == "vit_base_patch16_clip_224" and f["arch"]["variant"] == "custom"  # tiny sizes
    assert f["findings"] == []
    assert timm_report(clean) == (set(), set(), {}) and timm_loads(clean)
    text = ckptlint("check", str(clean)).stdout
    assert "expected: declared by config.json: vit_base_patch16_clip_224 (timm VisionTransformer)" in text


# (edited fields, the field named, the key showing the weights' value, the fix's value, timm loads it)
BROKEN = [
    ({"model_args.num_classes": 10}, "model_args.num_classes", "head.weight [32, 64]", "32", True),
    (
        {"model_args.num_classes": 10, "num_classes": 10},
        "model_args.num_classes",
        "head.weight [32, 64]",
        "32",
        False,
    ),
    ({"model_args.img_size": [48, 48]}, "model_args.img_size", "pos_embed [1, 17, 64]", "32", True),
    ({"model_args.depth": 3}, "model_args.depth", "blocks.{0..1}.norm1.weight", "2", False),
    (
        {"model_args.embed_dim": 96},
        "model_args.embed_dim",
        "patch_embed.proj.weight [64, 3, 8, 8]",
        "64",
        False,
    ),
    (
        {"model_args.patch_size": 16},
        "model_args.patch_size",
        "patch_embed.proj.weight [64, 3, 8, 8]",
        "8",
        True,
    ),
]


@pytest.mark.parametrize(("fields", "field", "evidence", "back", "loads"), BROKEN, ids=lambda v: str(v)[:40])
def test_broken_declaration_is_one_ck113_naming_the_field(
    clean: Path, tmp_path: Path, fields: dict[str, Any], field: str, evidence: str, back: str, loads: bool
) -> None:
    folder = _copy(clean, tmp_path, fields)
    report = check(str(folder)).files[0]
    codes = [f.code for f in report.findings]
    assert codes.count("CK113") == 1 and not STRUCTURAL & set(codes), codes
    (ck113,) = report.findings
    assert ck113.details["field"] == field and f"({field})" in ck113.message and evidence in ck113.message
    assert ck113.fix.startswith(f"set {field} = {back} in config.json")
    assert same_diff(report.diff, timm_report(folder))
    assert (
        timm_loads(folder) is loads
    )  # loads = resamples, or drops the head: the weights are not used as saved


def test_timm_drops_the_head_and_the_finding_says_so(clean: Path, tmp_path: Path) -> None:
    import timm

    folder = _copy(clean, tmp_path, {"model_args.num_classes": 10})
    model = timm.create_model(f"local-dir:{folder}", pretrained=True)
    assert tuple(model.head.weight.shape) == (10, 64)  # a new random head: the 32 trained classes are gone
    (ck113,) = check(str(folder)).files[0].findings
    assert "drops head.weight and head.bias" in ck113.cause and "random head" in ck113.cause


def test_a_field_timm_ignores_changes_nothing(clean: Path, tmp_path: Path) -> None:
    """model_args wins over the top-level num_classes: timm builds 32 classes, and so does the expectation."""
    folder = _copy(clean, tmp_path, {"num_classes": 10})
    assert timm_report(folder) == (set(), set(), {}) and timm_loads(folder)
    report = check(str(folder)).files[0]
    assert report.findings == [] and same_diff(report.diff, timm_report(folder))


def test_legacy_config_without_model_args(clean: Path, tmp_path: Path) -> None:
    """Older exports have no model_args: timm builds the named model at its own sizes, which these weights are not."""
    folder = _copy(clean, tmp_path, {"model_args": None})
    assert not timm_loads(folder)
    report = check(str(folder)).files[0]
    assert report.arch is not None and report.arch.name == "vit_base_patch16_clip_224"
    fields = [f.details["field"] for f in report.findings if f.code == "CK113"]
    assert "model_args.embed_dim" in fields and "model_args.depth" in fields
    assert "absent: the timm model's default" in report.findings[0].message
    assert same_diff(report.diff, timm_report(folder))


def test_an_architecture_ckptlint_has_no_tree_for_says_so(tmp_path: Path) -> None:
    folder = timm_folder(tmp_path / "resnet", "resnet18", {"num_classes": 4})
    report = check(str(folder)).files[0]
    assert report.arch is None
    (ck004,) = report.findings
    assert ck004.code == "CK004" and "resnet18" in ck004.message and "config.json" in ck004.message


# ---- every timm-vit model, exported by timm itself, declares exactly the model timm builds ----------------------
ALL = os.environ.get("CKPTLINT_ALL_VARIANTS") == "1"
NAMES = (
    variant_names(load_arch("timm-vit"))
    if ALL
    else [
        "vit_base_patch16_clip_224",
        "vit_base_patch16_siglip_224",  # MAP pool, no class token, no head
        "vit_medium_patch16_gap_256",  # avg pool, layer scale, no qkv bias
        "vit_small_patch14_dinov2",  # layer scale, 518 px
        "eva_large_patch14_196",  # fc_norm
        "vit_base_patch16_radio_v3",  # register tokens, no_embed_class, no final norm
        "beit3_base_patch16_224",  # attention and MLP norms
    ]
)
OVERRIDES = [{}, {"num_classes": 7, "global_pool": "avg"}, {"img_size": 64, "depth": 2}]


@pytest.mark.parametrize("overrides", OVERRIDES, ids=["as-registered", "new-head-avg-pool", "resized"])
@pytest.mark.parametrize("name", NAMES)
def test_declared_tree_equals_the_model_timm_builds(
    name: str, overrides: dict[str, Any], tmp_path: Path
) -> None:
    import timm
    from timm.models._hub import save_config_for_hf  # what save_for_hf / push_to_hub call

    with torch.device("meta"):
        model = timm.create_model(name, pretrained=False, **overrides)
    save_config_for_hf(model, tmp_path / "config.json")
    side = Sidecar(
        name="config.json", kind="timm-config", content=json.loads((tmp_path / "config.json").read_text())
    )
    expected = declared_expected(Checkpoint(path="x", format="hf-dir", sidecars=[side]))
    assert isinstance(expected, Expected)
    assert {k: t.shape for k, t in expected.tensors.items()} == {
        k: tuple(v.shape) for k, v in model.state_dict().items()
    }
    assert expected.declared_name == name
    if not overrides or "depth" in overrides:  # the registered model is that variant; a resized one is not
        assert expected.variant == (name if not overrides else "custom")
