"""The friction a new user met (issue 12, item 5), each case through the real CLI or the real libraries."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cli_support import ckptlint, one_error_line
from engine_support import CORPUS, hf_clip_tiny

from ckptlint.archs import list_archs
from ckptlint.archs.spec import load_arch, variant_names, variant_params

HF = CORPUS / "hf"


# ---- fix takes folders, as check and diff do ---------------------------------------------------------------------
def test_fix_takes_a_sharded_hf_folder(tmp_path: Path) -> None:
    """A CLIPModel saved in three shards, its config.json left out (nothing declares the two-tower model), fixed
    for CLIPVisionModel: OUT is a folder transformers loads (with the vision config) with no missing or unexpected
    key, holding exactly the vision tower. With the config.json, which declares the whole CLIPModel, nothing is
    dropped: a vision-only copy would contradict it."""
    import torch
    from transformers import CLIPVisionModel

    model = hf_clip_tiny()
    src = tmp_path / "clip"
    model.save_pretrained(src, max_shard_size="200KB")
    assert len(list(src.glob("model-*.safetensors"))) > 1
    declared = tmp_path / "declared"
    proc = ckptlint("fix", str(src), str(declared), "--arch", "hf-clip-vision")
    assert proc.returncode == 0, proc.stderr
    assert "fixed: none; still reported: CK101" in proc.stdout
    (src / "config.json").unlink()
    out = tmp_path / "vision"
    proc = ckptlint("fix", str(src), str(out), "--arch", "hf-clip-vision")
    assert proc.returncode == 0, proc.stderr
    assert "fixed: CK101" in proc.stdout
    model.config.vision_config.save_pretrained(out)
    loaded, info = CLIPVisionModel.from_pretrained(out, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    expected = model.vision_model.state_dict()
    got = loaded.state_dict()
    assert set(got) == set(expected) and all(torch.equal(got[k], expected[k]) for k in expected)


# ---- names: a short line, close matches, never another name silently --------------------------------------------
@pytest.mark.parametrize(
    ("arch", "hint"),
    [
        ("open_clip:vit-b-16", "did you mean 'ViT-B-16'?"),
        ("open_clip:ViT-B16", "'ViT-B-16'"),
        ("bv-vit:b/16", "did you mean 'B/16'?"),
        ("Open_Clip", "did you mean 'open_clip'?"),
        ("timm-vit:vit_base_patch16_clip224", "'vit_base_patch16_clip_224'"),
    ],
)
def test_a_misspelt_name_is_suggested_never_taken(arch: str, hint: str) -> None:
    proc = ckptlint("check", str(CORPUS / "open_clip" / "openclip_tiny.pt"), "--arch", arch)
    line = one_error_line(proc)  # exit 2: nothing was checked against another name
    assert proc.stdout == ""
    assert hint in line and len(line) < 400, line


def test_an_unknown_variant_is_one_short_line() -> None:
    line = one_error_line(
        ckptlint("check", str(CORPUS / "open_clip" / "openclip_tiny.pt"), "--arch", "open_clip:NoSuchVariant")
    )
    n = len(variant_names(load_arch("open_clip")))
    assert len(line) < 250, line
    assert f"({n} named variants, e.g. " in line and "`ckptlint archs open_clip` lists them all" in line


# ---- ckptlint archs [NAME] -------------------------------------------------------------------------------------------
def test_archs_lists_every_variant() -> None:
    text = ckptlint("archs").stdout
    flat = " ".join(text.split())
    for arch in list_archs():
        spec = load_arch(arch.name)
        if spec.variants.scheme == "size_patch":
            assert f"SIZE one of {', '.join(spec.sizes)};" in flat
        else:
            assert all(v in flat for v in arch.variants), arch.name
        assert f"parameters: ckptlint archs {arch.name})" in flat


@pytest.mark.parametrize("name", [a.name for a in list_archs()])
def test_archs_name_gives_every_variant_with_its_parameters(name: str) -> None:
    doc = json.loads(ckptlint("archs", name, "--format", "json").stdout)
    spec = load_arch(name)
    assert [v["name"] for v in doc["variants"]] == variant_names(spec)
    assert all(v["params"] == variant_params(spec, v["name"]) for v in doc["variants"])
    text = ckptlint("archs", name).stdout.splitlines()
    rows = [line.split()[0] for line in text if line and not line.startswith((" ", "-"))]
    assert set(variant_names(spec)) <= set(rows)


def test_archs_unknown_name() -> None:
    assert "did you mean 'clippo'?" in one_error_line(ckptlint("archs", "CLIPPO"))


# ---- --spec says what it takes -------------------------------------------------------------------------------------
def test_spec_that_is_not_a_dump(tmp_path: Path) -> None:
    spec = tmp_path / "notdump.json"
    spec.write_text(json.dumps({"hidden_size": 768}))
    line = one_error_line(
        ckptlint("check", str(CORPUS / "open_clip" / "openclip_tiny.pt"), "--spec", str(spec))
    )
    assert "weight_map" not in line.split(";")[-1]
    assert "--spec takes the `ckptlint dump --format json` output of a reference checkpoint" in line
    ref = tmp_path / "ref.json"  # what it does take
    ref.write_text(
        ckptlint("dump", str(CORPUS / "open_clip" / "openclip_tiny.pt"), "--format", "json").stdout
    )
    assert ckptlint(
        "check", str(CORPUS / "open_clip" / "openclip_tiny.pt"), "--spec", str(ref)
    ).returncode in (0, 1)


# ---- CK107 names what is actually missing -------------------------------------------------------------------------
def _ck107(path: Path) -> dict[str, Any] | None:
    report = json.loads(ckptlint("check", str(path), "--format", "json").stdout)["files"][0]
    return next((f for f in report["findings"] if f["code"] == "CK107"), None)


def test_ck107_asks_for_the_tokenizer_not_the_processor_config(tmp_path: Path) -> None:
    """hf_clip_tiny has preprocessor_config.json and no tokenizer: the fix is the tokenizer's files; once a real
    tokenizer is saved next to the weights (transformers' own save_pretrained), CK107 is gone."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path / "hf_clip_tiny"
    shutil.copytree(HF / "hf_clip_tiny", folder)
    ck107 = _ck107(folder)
    assert ck107 is not None and ck107["details"]["missing"] == ["tokenizer"]
    assert "preprocessor_config.json" not in ck107["fix"]
    assert f"tokenizer.save_pretrained({str(folder)!r})" in ck107["fix"] and "tokenizer.json" in ck107["fix"]
    words = Tokenizer(WordLevel({"[UNK]": 0, "a": 1, "photo": 2}, unk_token="[UNK]"))
    words.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=words, unk_token="[UNK]").save_pretrained(folder)
    assert _ck107(folder) is None


# ---- --jobs: threads, never a process per file ------------------------------------------------------------------------------
def test_jobs_on_a_few_files_spawns_no_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import concurrent.futures

    from ckptlint.cli import main

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("a worker pool was started for three files")

    monkeypatch.setattr(concurrent.futures, "ProcessPoolExecutor", refuse)
    files = [str(CORPUS / "open_clip" / n) for n in ("openclip_tiny.pt", "openclip_tiny_customtext.pt")]
    files.append(str(CORPUS / "timm" / "timm_vit_clip_tiny.safetensors"))
    with pytest.raises(SystemExit) as exit_info:
        main(["check", *files, "--jobs", "2", "--isolated", "--format", "json"])
    assert exit_info.value.code in (0, 1)
    assert [f["path"] for f in json.loads(capsys.readouterr().out)["files"]] == files
