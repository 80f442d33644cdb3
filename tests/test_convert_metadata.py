"""``ckptlint convert`` writes no metadata the input does not have.

Preprocessing: what the input records (its ``preprocessor_config.json``, ``preprocess_cfg``, ``pretrained_cfg``) is
carried; what it records nowhere is left out of OUT — whose check then reports CK107 for the same fields the input's
did — and the output names the ``--set`` that would declare it, which works as written. Special-token ids: from the
input's tokenizer files when they name them, else never transformers' defaults where those fall outside the
vocabulary (the libraries' own loaders are the judges: transformers warns on an id outside the vocabulary).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import re
import shlex
import shutil
from pathlib import Path
from typing import Any

import convert_support as cs
import pytest
import torch
from cli_support import ckptlint

from ckptlint.api import check_files

IMAGE_FIELDS = {"mean", "std", "interpolation"}


def ck107_missing(path: Path, arch: str) -> set[str] | None:
    """The image fields CK107 finds unrecorded in ``path`` checked as ``arch`` (None: no CK107)."""
    report = check_files([str(path)], arch=arch)
    found = [f for fr in report.files for f in fr.findings if f.code == "CK107"]
    return set(found[0].details["missing"]) - {"tokenizer"} if found else None


def convert(src: Path, out: Path, to: str, *args: str) -> str:
    """``ckptlint convert`` through the CLI; its text output."""
    proc = ckptlint("convert", str(src), str(out), "--to", to, *args)
    assert proc.returncode in (0, 1), proc.stdout + proc.stderr
    return proc.stdout


def suggested(output: str) -> list[str]:
    """The ``--set`` arguments convert's output offers for the preprocessing it did not carry."""
    line = next(ln for ln in output.splitlines() if "preprocessing not carried" in ln)
    match = re.search(r"add: (--set .*)$", line)
    assert match, line
    return shlex.split(match.group(1))


def values(sets: list[str]) -> dict[str, str]:
    """``["--set", "mean=0.5,0.5,0.5", ...]`` -> ``{"mean": "0.5,0.5,0.5", ...}``."""
    assert sets[0::2] == ["--set"] * (len(sets) // 2), sets
    return dict(item.split("=", 1) for item in sets[1::2])


@pytest.fixture(scope="module")
def tiny_trunk() -> str:
    return cs.tiny_siglip_trunk()


@pytest.fixture(scope="module")
def hf_bare(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """transformers' CLIPModel folder (save_pretrained, the corpus) without its preprocessor_config.json."""
    folder = tmp_path_factory.mktemp("hf") / "clip"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(cs.CORPUS / "hf" / "hf_clip_tiny" / name, folder / name)
    return folder


def test_hf_clip_without_preprocessor_to_open_clip_declares_no_openai_defaults(
    hf_bare: Path, tmp_path: Path
) -> None:
    """The open_clip config gets no preprocess_cfg mean/std/interpolation/resize mode: OUT's check reports CK107 for
    what the input's did. The suggested --set, run as written, declares them and open_clip preprocesses with them."""
    import open_clip

    missing_in = ck107_missing(hf_bare, "hf-clip")
    assert missing_in is not None and missing_in >= IMAGE_FIELDS
    out = tmp_path / "oc"
    text = convert(hf_bare, out, "open_clip")
    pcfg = json.loads((out / "open_clip_config.json").read_text()).get("preprocess_cfg", {})
    assert not {"mean", "std", "interpolation", "resize_mode"} & set(pcfg), pcfg
    missing_out = ck107_missing(out, "open_clip")
    assert missing_out is not None and missing_in & IMAGE_FIELDS <= missing_out
    sets = suggested(text)
    assert set(values(sets)) == {"mean", "std", "interpolation", "resize_mode"}
    out2 = tmp_path / "oc2"
    convert(hf_bare, out2, "open_clip", *sets)
    assert not (ck107_missing(out2, "open_clip") or set()) & IMAGE_FIELDS
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{out2}")
    assert list(preprocess.transforms[-1].mean) == [float(x) for x in values(sets)["mean"].split(",")]


def test_big_vision_vit_to_timm_writes_no_preprocessing_unless_set(corpus: Path, tmp_path: Path) -> None:
    """A big_vision npz records no preprocessing: timm's pretrained_cfg gets none (not mean 0.5, bilinear, squash),
    timm falls back to its own defaults and OUT's check says so; the suggested --set gives timm exactly those."""
    import timm
    from timm.data import resolve_data_config

    src = corpus / "big_vision" / "tiny_vit.npz"
    missing_in = ck107_missing(src, "bv-vit")
    assert missing_in is not None and missing_in >= IMAGE_FIELDS
    out = tmp_path / "timm"
    text = convert(src, out, "timm-vit")
    pcfg = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    assert not {"mean", "std", "interpolation", "crop_mode", "crop_pct"} & set(pcfg), pcfg
    assert (ck107_missing(out, "timm-vit") or set()) >= IMAGE_FIELDS
    sets = suggested(text)
    convert(src, tmp_path / "timm2", "timm-vit", *sets)
    assert not (ck107_missing(tmp_path / "timm2", "timm-vit") or set()) & IMAGE_FIELDS
    model = timm.create_model(f"local-dir:{tmp_path / 'timm2'}", pretrained=True)
    data = resolve_data_config(model=model)
    given = values(sets)
    assert list(data["mean"]) == [float(x) for x in given["mean"].split(",")]
    assert data["interpolation"] == given["interpolation"]
    assert data["crop_mode"] == ("squash" if given["resize_mode"] == "squash" else "center")


def test_siglip_npz_gets_siglip_preprocessing_only_when_asked(tmp_path: Path, tiny_trunk: str) -> None:
    """big_vision SigLIP → transformers and open_clip: no preprocessing file and no preprocess_cfg values (the seed
    story: SigLIP given CLIP's mean/std silently is what open_clip then does, and OUT's check says so); the --set the
    output offers (SigLIP's, as its keys suggest) gives SiglipImageProcessor and open_clip mean = std = 0.5, squash."""
    import open_clip
    from transformers import SiglipImageProcessor

    npz = cs.write_siglip_npz(tmp_path / "siglip.npz")
    missing_in = ck107_missing(npz, "bv-siglip")
    assert missing_in is not None and missing_in >= IMAGE_FIELDS
    text = convert(npz, tmp_path / "hf", "hf-siglip")
    assert not (tmp_path / "hf" / "preprocessor_config.json").exists()
    assert (ck107_missing(tmp_path / "hf", "hf-siglip") or set()) >= IMAGE_FIELDS
    sets = suggested(text)
    assert "--set" in sets and "mean=0.5,0.5,0.5" in sets and "resize_mode=squash" in sets
    convert(npz, tmp_path / "hf2", "hf-siglip", *sets)
    proc = SiglipImageProcessor.from_pretrained(tmp_path / "hf2")
    assert list(proc.image_mean) == list(proc.image_std) == [0.5] * 3
    assert dict(proc.size) == {"height": 32, "width": 32}
    assert not (ck107_missing(tmp_path / "hf2", "hf-siglip") or set()) & IMAGE_FIELDS

    trunk = ["--set", f"timm_model_name={tiny_trunk}"]
    convert(npz, tmp_path / "oc", "open_clip", *trunk)
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'oc'}")
    assert (
        list(preprocess.transforms[-1].mean) != [0.5] * 3
    )  # open_clip's OpenAI default: what CK107 warns of
    assert (ck107_missing(tmp_path / "oc", "open_clip") or set()) >= IMAGE_FIELDS
    convert(npz, tmp_path / "oc2", "open_clip", *trunk, *sets)
    _, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{tmp_path / 'oc2'}")
    assert list(preprocess.transforms[-1].mean) == list(preprocess.transforms[-1].std) == [0.5] * 3
    assert not (ck107_missing(tmp_path / "oc2", "open_clip") or set()) & IMAGE_FIELDS


def test_recorded_preprocessing_is_carried(tmp_path: Path) -> None:
    """What the input records is carried and nothing else: an open_clip preprocess_cfg with mean/std but no
    interpolation or resize mode gives a CLIPImageProcessor with that mean/std, and OUT's CK107 still lacks the
    interpolation, as the input's does."""
    src = tmp_path / "oc"
    cs.open_clip_folder(src, quick_gelu=True)
    cfg = json.loads((src / "open_clip_config.json").read_text())
    cfg["preprocess_cfg"] = {"mean": [0.1, 0.2, 0.3], "std": [0.4, 0.5, 0.6]}
    (src / "open_clip_config.json").write_text(json.dumps(cfg))
    assert ck107_missing(src, "open_clip") == {"interpolation"}
    out = tmp_path / "hf"
    text = convert(src, out, "hf-clip")
    assert "preprocessing not carried: the input records no interpolation, resize_mode" in text
    pp = json.loads((out / "preprocessor_config.json").read_text())
    assert (pp["image_mean"], pp["image_std"]) == ([0.1, 0.2, 0.3], [0.4, 0.5, 0.6])
    assert "resample" not in pp
    assert ck107_missing(out, "hf-clip") == {"interpolation"}


# ---- special-token ids ---------------------------------------------------------------------------------------
def _token_warnings(caplog: pytest.LogCaptureFixture, vocab: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if f"between 0 and {vocab - 1}" in r.getMessage()]


def _load(cls: type, folder: Path, caplog: pytest.LogCaptureFixture) -> torch.nn.Module:
    logging.Logger.warning_once.cache_clear()  # type: ignore[attr-defined]  # transformers warns once per message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="transformers"):
        return cls.from_pretrained(folder)


def _no_ck115(out: Path, arch: str) -> None:
    if importlib.util.find_spec("ckptlint.rules.ck115_tokenizer") is None:
        return  # the tokenizer rule is not on this branch yet
    report = check_files([str(out)], arch=arch)
    assert not [f for fr in report.files for f in fr.findings if f.code == "CK115"]


def test_bare_open_clip_to_hf_clip_writes_no_out_of_vocabulary_ids(
    corpus: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """No tokenizer, a 100-token vocabulary: CLIPTextConfig's OpenAI defaults (bos 49406) would fall outside it, so
    they are written null; transformers loads OUT without its out-of-vocabulary warning — which it gives for the
    same config with the field left to its default."""
    from transformers import CLIPModel

    src = corpus / "open_clip" / "openclip_tiny.pt"
    out = tmp_path / "hf"
    convert(src, out, "hf-clip", "--set", "heads=2", "--set", "text_heads=2", "--set", "act=gelu")
    model = _load(CLIPModel, out, caplog)
    assert _token_warnings(caplog, 100) == []
    text_cfg = model.config.text_config
    assert text_cfg.vocab_size == 100 and text_cfg.bos_token_id is None and text_cfg.eos_token_id == 2
    _no_ck115(out, "hf-clip")
    cfg = json.loads((out / "config.json").read_text())  # the control: transformers' default bos is outside
    del cfg["text_config"]["bos_token_id"]
    (out / "config.json").write_text(json.dumps(cfg))
    _load(CLIPModel, out, caplog)
    assert _token_warnings(caplog, 100)


def _tokenized_folder(tmp_path: Path) -> tuple[Path, Any]:
    """An open_clip hub folder whose tokenizer, saved by transformers, names bos w97, eos w99 and pad w0."""
    from transformers import PreTrainedTokenizerFast

    src = tmp_path / "oc"
    cs.open_clip_folder(src, quick_gelu=True)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(src / "tokenizer.json"))
    tok.add_special_tokens({"bos_token": "w97", "eos_token": "w99", "pad_token": "w0"})
    (src / "tokenizer.json").unlink()
    tok.save_pretrained(src)
    return src, tok


def test_ids_come_from_the_inputs_tokenizer(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An open_clip folder whose tokenizer (saved by transformers) names bos/eos/pad: OUT's config gives the ids the
    tokenizer itself resolves them to."""
    from transformers import CLIPModel

    src, tok = _tokenized_folder(tmp_path)
    out = tmp_path / "hf"
    text = convert(src, out, "hf-clip")
    assert "bos_token_id = 97  (tokenizer_config.json" in text
    model = _load(CLIPModel, out, caplog)
    assert _token_warnings(caplog, 100) == []
    text_cfg = model.config.text_config
    assert (text_cfg.bos_token_id, text_cfg.pad_token_id) == (tok.bos_token_id, tok.pad_token_id) == (97, 0)
    assert text_cfg.eos_token_id == 2  # argmax pooling: transformers' legacy flag, not the tokenizer's id
    _no_ck115(out, "hf-clip")


@pytest.mark.parametrize("decoder", [False, True], ids=["legacy-map-wins", "added-tokens-decoder-wins"])
def test_special_tokens_resolve_as_transformers_resolves_them(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, decoder: bool
) -> None:
    """tokenizer_config.json names bos w97, a special_tokens_map.json w42: transformers' tokenizer takes the map's
    unless the config has ``added_tokens_decoder`` (as transformers 4 wrote it); OUT's config gets the id the
    tokenizer resolves, and the same id is the fact CK115 reads (``Checkpoint.tokenizer``)."""
    from transformers import AutoTokenizer, CLIPModel

    from ckptlint.readers import read_checkpoint

    src, _ = _tokenized_folder(tmp_path)
    (src / "special_tokens_map.json").write_text(json.dumps({"bos_token": "w42"}))
    if decoder:
        cfg = json.loads((src / "tokenizer_config.json").read_text())
        entry = {"lstrip": False, "normalized": False, "rstrip": False, "single_word": False, "special": True}
        cfg["added_tokens_decoder"] = {"97": {"content": "w97", **entry}}
        (src / "tokenizer_config.json").write_text(json.dumps(cfg))
    want = AutoTokenizer.from_pretrained(src).bos_token_id
    assert want == (97 if decoder else 42)
    assert read_checkpoint(src).tokenizer.special["bos_token"] == want
    out = tmp_path / "hf"
    convert(src, out, "hf-clip")
    model = _load(CLIPModel, out, caplog)
    assert model.config.text_config.bos_token_id == want


def test_siglip_config_has_no_clip_token_ids(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """SiglipTextConfig defaults to CLIP's ids (bos 49406, eos 49407): a big_vision SigLIP names no tokenizer, so
    they are null, and SiglipModel loads OUT without an out-of-vocabulary warning for its vocabulary."""
    from transformers import SiglipModel

    npz = cs.write_siglip_npz(tmp_path / "siglip.npz")
    out = tmp_path / "hf"
    convert(npz, out, "hf-siglip")
    model = _load(SiglipModel, out, caplog)
    assert _token_warnings(caplog, 100) == []
    text_cfg = model.config.text_config
    assert (text_cfg.bos_token_id, text_cfg.eos_token_id, text_cfg.pad_token_id) == (None, None, None)
    _no_ck115(out, "hf-siglip")
