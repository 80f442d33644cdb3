"""``ckptlint convert``: open_clip (OpenAI CLIP layout) ⇄ transformers ``CLIPModel``, proven by the models' outputs.

The inputs are written by the libraries themselves (open_clip's ``save_for_hf``, ``CLIPModel.save_pretrained``);
OUT is loaded by the other library's own loader (``CLIPModel.from_pretrained``, ``open_clip.create_model(
'local-dir:OUT')``) and must compute the same image and text embeddings and logits on fixed inputs.
transformers' ``convert_clip_original_pytorch_to_hf.py`` is not shipped in its wheel, so there is no library
converter to compare with here; the round trip back is compared bit for bit instead.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import convert_support as cs
import pytest
import torch
from cli_support import ckptlint, one_error_line

from ckptlint.convert.run import ConvertResult, convert_checkpoint

SQUASH_05 = {
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "interpolation": "bilinear",
    "resize_mode": "squash",
}


def _feat(out: Any) -> torch.Tensor:
    return getattr(out, "pooler_output", out)


@pytest.fixture(scope="session")
def oc_src(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, torch.nn.Module]:
    """A tiny QuickGELU open_clip CLIP with SigLIP-like preprocessing, saved by open_clip as a hub folder."""
    folder = tmp_path_factory.mktemp("oc") / "src"
    model, _ = cs.open_clip_folder(folder, quick_gelu=True, preprocess=SQUASH_05)
    return folder, model


@pytest.fixture(scope="session")
def oc_to_hf(oc_src: tuple[Path, torch.nn.Module], tmp_path_factory: pytest.TempPathFactory) -> ConvertResult:
    out = tmp_path_factory.mktemp("hf") / "out"
    return convert_checkpoint(str(oc_src[0]), str(out), "hf-clip")


def test_open_clip_to_hf_clip_computes_the_same(
    oc_src: tuple[Path, torch.nn.Module], oc_to_hf: ConvertResult
) -> None:
    from transformers import CLIPModel

    _, oc = oc_src
    hf, info = CLIPModel.from_pretrained(oc_to_hf.write.dst, output_loading_info=True)
    assert not any(info.values()), info  # nothing missing, unexpected or mismatched
    hf.eval()
    x, t = cs.image(), cs.tokens(100, 16)
    with torch.no_grad():
        img, txt = oc.encode_image(x), oc.encode_text(t)
        cs.close(img, _feat(hf.get_image_features(pixel_values=x)))
        cs.close(txt, _feat(hf.get_text_features(input_ids=t)))
        cs.close(oc.logit_scale, hf.logit_scale)
        logits = (
            oc.logit_scale.exp()
            * torch.nn.functional.normalize(img, dim=-1)
            @ torch.nn.functional.normalize(txt, dim=-1).T
        )
        cs.close(logits, hf(input_ids=t, pixel_values=x).logits_per_image, atol=1e-4)


def test_open_clip_to_hf_clip_declares_what_weights_cannot_tell(
    oc_src: tuple[Path, torch.nn.Module], oc_to_hf: ConvertResult
) -> None:
    from transformers import CLIPConfig, CLIPImageProcessor

    out = Path(oc_to_hf.write.dst)
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json",
    ]  # fmt: skip
    cfg = CLIPConfig.from_pretrained(out)
    assert (cfg.vision_config.hidden_act, cfg.text_config.hidden_act) == ("quick_gelu", "quick_gelu")
    assert (cfg.vision_config.num_attention_heads, cfg.text_config.num_attention_heads) == (2, 2)
    proc = CLIPImageProcessor.from_pretrained(out)
    assert (list(proc.image_mean), list(proc.image_std), proc.resample) == ([0.5] * 3, [0.5] * 3, 2)
    assert not proc.do_center_crop and dict(proc.size) == {"height": 32, "width": 32}
    assert (out / "tokenizer.json").read_bytes() == (oc_src[0] / "tokenizer.json").read_bytes()
    assert oc_to_hf.plan.sources["act"] == "open_clip_config.json"
    assert cs.errors(out, "hf-clip") == []


def test_hf_clip_to_open_clip_computes_the_same(tmp_path: Path) -> None:
    import open_clip
    from transformers import CLIPImageProcessor, CLIPModel

    src = cs.CORPUS / "hf" / "hf_clip_tiny"  # eos_token_id 99: transformers pools at the eos token
    out = tmp_path / "oc"
    result = convert_checkpoint(str(src), str(out), "open_clip")
    assert result.write.files == ["open_clip_model.safetensors"]
    assert result.after.summary.errors == 0
    hf = CLIPModel.from_pretrained(src).eval()
    oc, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out}")
    oc.eval()
    x, t = cs.image(), cs.tokens(100, 16)
    with torch.no_grad():
        cs.close(oc.encode_image(x), _feat(hf.get_image_features(pixel_values=x)))
        cs.close(oc.encode_text(t), _feat(hf.get_text_features(input_ids=t)))
        cs.close(oc.logit_scale, hf.logit_scale)
    proc = CLIPImageProcessor.from_pretrained(src)
    norm = preprocess.transforms[-1]
    assert (list(norm.mean), list(norm.std)) == (list(proc.image_mean), list(proc.image_std))
    assert (
        json.loads((out / "open_clip_config.json").read_text())["model_cfg"]["text_cfg"]["pool_type"] == "eos"
    )


def test_round_trip_is_bit_exact(
    oc_src: tuple[Path, torch.nn.Module], oc_to_hf: ConvertResult, tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    back = convert_checkpoint(oc_to_hf.write.dst, str(tmp_path / "back"), "open_clip")
    cs.same_tensors(
        load_file(str(tmp_path / "back" / "open_clip_model.safetensors")),
        load_file(str(oc_src[0] / "open_clip_model.safetensors")),
    )
    cfg = json.loads((tmp_path / "back" / "open_clip_config.json").read_text())
    assert cfg["model_cfg"]["quick_gelu"] is True and cfg["preprocess_cfg"]["resize_mode"] == "squash"
    assert back.after.summary.errors == 0


def test_bare_weights_ask_for_what_they_cannot_tell(corpus: Path, tmp_path: Path) -> None:
    """A bare state_dict has no declaration: heads and the activation are asked for, never guessed."""
    import open_clip
    from transformers import CLIPModel

    src = corpus / "open_clip" / "openclip_tiny.pt"
    proc = ckptlint("convert", str(src), str(tmp_path / "hf"), "--to", "hf-clip")
    err = one_error_line(proc)
    assert (
        proc.stdout == ""
        and "heads" in err
        and "act" in err
        and "--set" in err
        and "nothing was written" in err
    )
    assert not (tmp_path / "hf").exists()
    args = ["--set", "heads=2", "--set", "text_heads=2", "--set", "act=gelu"]
    proc = ckptlint("convert", str(src), str(tmp_path / "hf"), "--to", "hf-clip", *args)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "act = gelu  (--set)" in out and "text_act = gelu  (open_clip's library default)" in out
    oc = open_clip.CLIP(**cs.engine_support.TINY_OPEN_CLIP_CFG)  # the corpus file's model: GELU, eps 1e-5
    oc.load_state_dict(torch.load(src, weights_only=True))
    hf = CLIPModel.from_pretrained(tmp_path / "hf").eval()
    x, t = cs.image(), cs.tokens(100, 16)
    with torch.no_grad():
        cs.close(oc.eval().encode_image(x), _feat(hf.get_image_features(pixel_values=x)))
        cs.close(oc.encode_text(t), _feat(hf.get_text_features(input_ids=t)))


def test_single_file_out_and_variant_check(corpus: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file

    src = corpus / "open_clip" / "openclip_tiny.pt"
    result = convert_checkpoint(str(src), str(tmp_path / "m.safetensors"), "hf-clip")
    assert result.write.files == ["m.safetensors"] and not result.declared
    assert any("OUT is one file" in n for n in result.write.notes)
    hf_keys = set(load_file(str(corpus / "hf" / "hf_clip_tiny" / "model.safetensors")))
    assert set(load_file(str(tmp_path / "m.safetensors"))) == hf_keys
    err = one_error_line(
        ckptlint("convert", str(src), str(tmp_path / "x"), "--to", "hf-clip:openai/clip-vit-base-patch16")
    )
    assert "does not fit the weights" in err and "width 768" in err


def test_convert_list_names_every_pair() -> None:
    proc = ckptlint("convert", "--list")
    assert proc.returncode == 0
    out = proc.stdout
    lines = [line.split() for line in out.splitlines()]
    assert ["open_clip", "hf-clip", "open_clip-hf"] in [line[:3] for line in lines]
    assert ["hf-clip", "open_clip", "open_clip-hf", "(back)"] in [line[:4] for line in lines]
    rows = json.loads(ckptlint("convert", "--list", "--format", "json").stdout)
    pairs = {(r["from"], r["to"]): r for r in rows}
    assert (
        pairs["open_clip", "hf-clip"]["table"] == "open_clip-hf"
        and pairs["open_clip", "hf-clip"]["supported"]
    )
    assert pairs["hf-clip", "open_clip"]["reverse"] and pairs["hf-clip", "open_clip"]["supported"]


def test_readme_lists_the_pairs_convert_lists() -> None:
    """README's convert-list block is exactly ``ckptlint convert --list`` (the supported pairs)."""
    import re

    from ckptlint.convert.listing import render

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    block = re.search(r"<!-- convert-list -->\n```\n(.*?)```\n<!-- /convert-list -->", readme, re.S)
    assert block is not None
    assert block.group(1) == render().split("\n\n")[0] + "\n"


def test_sharded_transformers_folder_becomes_one_open_clip_file(tmp_path: Path) -> None:
    """A sharded save_pretrained folder (index + shards) converts into open_clip's one weights file."""
    import open_clip

    src = tmp_path / "sharded"
    hf = cs.engine_support.hf_clip_tiny()
    hf.save_pretrained(src, max_shard_size="100KB")
    assert len(list(src.glob("model-*.safetensors"))) > 1
    result = convert_checkpoint(str(src), str(tmp_path / "oc"), "open_clip")
    assert sorted(p.name for p in (tmp_path / "oc").iterdir()) == [
        "open_clip_config.json",
        "open_clip_model.safetensors",
    ]
    assert result.after.summary.errors == 0
    oc = open_clip.create_model(f"local-dir:{tmp_path / 'oc'}").eval()
    x, t = cs.image(), cs.tokens(100, 16)
    with torch.no_grad():
        cs.close(oc.encode_image(x), _feat(hf.get_image_features(pixel_values=x)))
        cs.close(oc.encode_text(t), _feat(hf.get_text_features(input_ids=t)))


def test_what_the_target_cannot_compute_is_refused(tmp_path: Path) -> None:
    """open_clip pooling the last token (its declaration says so): transformers' CLIPTextModel cannot, so nothing
    is written — the weights alone would convert, and compute something else."""
    src = tmp_path / "oc"
    cs.open_clip_folder(src, quick_gelu=False)
    cfg = json.loads((src / "open_clip_config.json").read_text())
    cfg["model_cfg"]["text_cfg"]["pool_type"] = "last"
    (src / "open_clip_config.json").write_text(json.dumps(cfg))
    err = one_error_line(ckptlint("convert", str(src), str(tmp_path / "hf"), "--to", "hf-clip"))
    assert "cannot pool 'last'" in err and "nothing was written" in err
    assert not (tmp_path / "hf").exists()
