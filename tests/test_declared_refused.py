"""Declarations the library cannot use as they stand, each shown first with the library itself.

* a config.json (or open_clip_config.json) that is no JSON object: the loader fails on it, so it is CK113 (the
  loader refuses it), never ignored for a model inferred from the keys;
* a block count no model has (``num_hidden_layers: 1000000000``): transformers accepts the config, and
  ``from_pretrained`` would build every block — one CK113 naming the field, both numbers, in bounded time;
* a zero head count: transformers divides by it (in the config class's check, or when it builds the model) — one
  CK113, worded so;
* ``--arch TaskClass`` on the base model's folder: transformers loads it and initialises the head anew — one CK114
  that blames the request, not the config.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hf_tiny import TINY, clean, oracle, save
from hf_tiny import check_folder as _check
from hf_tiny import edited as _edited
from hf_tiny import errors as _errors


# ---- 1. a declaration that is no JSON object ------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "said"),
    [('{"model_type": "clip", \n', "not valid JSON (Expecting property name"), ("[1, 2]\n", "JSON array")],
    ids=["truncated", "array"],
)
def test_unreadable_config_json_is_refused(text: str, said: str, tmp_path: Path) -> None:
    import transformers

    folder = tmp_path / "clip"
    shutil.copytree(clean("clip"), folder)
    (folder / "config.json").write_text(text)
    for load in (transformers.AutoModel.from_pretrained, transformers.CLIPModel.from_pretrained):
        with pytest.raises(
            (OSError, ValueError, TypeError)
        ):  # "is not a valid JSON file", no model_type, no mapping
            load(folder)
    f = _check(folder)
    (finding,) = [x for x in f.findings if x.severity.value == "error"]
    assert finding.code == "CK113", _errors(f)
    assert finding.message.startswith("transformers refuses config.json: ") and said in finding.message
    if "Expecting" in said:
        assert "line 2 column 1" in finding.message  # the JSON error's position
    assert "CK004" not in [x.code for x in f.findings]  # one root cause
    assert "config.save_pretrained" in finding.fix
    # the fix as written: the model config's save_pretrained writes a config.json that loads, and the finding goes
    transformers.CLIPConfig.from_pretrained(clean("clip")).save_pretrained(folder)
    transformers.CLIPModel.from_pretrained(folder)
    assert _errors(_check(folder)) == []


def test_unreadable_open_clip_config_is_refused(tmp_path: Path) -> None:
    import open_clip
    from declared_support import open_clip_folder

    folder = open_clip_folder(tmp_path / "oc")
    good = (folder / "open_clip_config.json").read_text()
    (folder / "open_clip_config.json").write_text(good[: len(good) // 2])
    with pytest.raises(ValueError, match="Could not load valid config"):
        open_clip.create_model(f"local-dir:{folder}", load_weights=False)
    f = _check(folder)
    (finding,) = [x for x in f.findings if x.severity.value == "error"]
    assert finding.code == "CK113"
    assert finding.message.startswith("open_clip refuses open_clip_config.json: it is not valid JSON (")
    assert "CK004" not in [x.code for x in f.findings]


# ---- 2. a block count no model has ----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "field", "cls"),
    [
        ("bert", "num_hidden_layers", "BertForSequenceClassification"),
        ("clip", "vision_config.num_hidden_layers", "CLIPModel"),
    ],
)
def test_a_billion_layers_is_one_contradiction(name: str, field: str, cls: str, tmp_path: Path) -> None:
    import transformers

    folder = _edited(name, tmp_path / name, {field: 10**9})
    config = transformers.AutoConfig.from_pretrained(folder)  # transformers accepts the config as it is
    sub = config.vision_config if "." in field else config
    assert sub.num_hidden_layers == 10**9
    f = _check(folder)
    (finding,) = [x for x in f.findings if x.severity.value == "error"]
    assert finding.code == "CK113", _errors(f)
    assert f"declares {field} = 1000000000, but the weights hold 2" in finding.message
    assert f"set {field} = 2 in config.json" in finding.fix
    # the raw diff holds the first block from_pretrained would miss: exactly what it reports for 3 layers
    kwargs = (
        {"vision_config": {**config.vision_config.to_dict(), "num_hidden_layers": 3}}
        if "." in field
        else {"num_hidden_layers": 3}
    )
    want = oracle_missing(folder, cls, kwargs)
    assert f.diff is not None and set(f.diff.missing) == want and want
    assert not f.diff.unexpected and not f.diff.shape_mismatch


def oracle_missing(folder: Path, cls_name: str, kwargs: dict) -> set[str]:
    import transformers

    config = transformers.AutoConfig.from_pretrained(folder, **kwargs)
    _, info = getattr(transformers, cls_name).from_pretrained(folder, config=config, output_loading_info=True)
    assert not info["unexpected_keys"] and not info["mismatched_keys"]
    return set(info["missing_keys"])


# ---- 3. a zero head count -------------------------------------------------------------------------------------
def test_zero_heads_refused_by_the_config_class_is_one_finding(tmp_path: Path) -> None:
    import transformers

    folder = _edited("llama", tmp_path / "llama", {"num_attention_heads": 0})
    with pytest.raises(ZeroDivisionError):  # LlamaConfig's own check: hidden_size % num_attention_heads
        transformers.AutoConfig.from_pretrained(folder)
    f = _check(folder)
    (finding,) = [x for x in f.findings if x.severity.value == "error"]
    assert finding.code == "CK113", _errors(f)
    assert "refuses config.json: num_attention_heads = 0" in finding.message
    assert (
        "ZeroDivisionError" in finding.message
        and "the weights hold num_attention_heads = 4" in finding.message
    )
    assert finding.fix == "set num_attention_heads = 4 in config.json (what the weights hold)"
    _edited("llama", tmp_path / "fixed", {"num_attention_heads": 4})
    assert _errors(_check(tmp_path / "fixed")) == []


def test_zero_heads_that_break_the_build_is_one_finding(tmp_path: Path) -> None:
    import transformers

    folder = _edited("qwen2", tmp_path / "qwen2", {"num_attention_heads": 0})
    assert transformers.AutoConfig.from_pretrained(folder).num_attention_heads == 0  # the config is accepted
    with pytest.raises(ZeroDivisionError):  # building the attention layers divides by it
        transformers.Qwen2ForCausalLM.from_pretrained(folder)
    f = _check(folder)  # never a usage error (exit 2)
    (finding,) = [x for x in f.findings if x.severity.value == "error"]
    assert finding.code == "CK113", _errors(f)
    assert "num_attention_heads = 0: building the model divides by it" in finding.message


# ---- 4. --arch TaskClass on the base model's folder -----------------------------------------------------------
def test_task_class_on_a_base_model_folder_blames_the_request(tmp_path: Path) -> None:
    folder = save(TINY["bert"], tmp_path / "bert", "BertModel")
    want = oracle(folder, "BertForMaskedLM")  # legal: the head is missing and newly initialised
    assert want["missing"] and all(k.startswith("cls.predictions.") for k in want["missing"])
    f = _check(folder, "BertForMaskedLM")
    assert f.diff is not None and set(f.diff.missing) == want["missing"]
    assert set(f.diff.unexpected) == want["unexpected"]
    (finding,) = [x for x in f.findings if x.severity.value == "error"]
    assert finding.code == "CK114", _errors(f)
    assert finding.message.startswith(
        "--arch BertForMaskedLM asks for a task model, but config.json declares BertModel"
    )
    assert "declares architectures [BertForMaskedLM]" not in " ".join(x.message for x in f.findings)
    assert "drop --arch (or give --arch BertModel)" in finding.fix
    # the fix as written: without --arch, or with the declared class, nothing is wrong
    assert _errors(_check(folder)) == []
    assert _errors(_check(folder, "BertModel")) == []


def test_a_config_declaring_the_task_class_over_base_weights_is_still_the_configs(tmp_path: Path) -> None:
    folder = save(TINY["bert"], tmp_path / "bert", "BertModel")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["BertForMaskedLM"]
    (folder / "config.json").write_text(json.dumps(config))
    for arch in (None, "BertForMaskedLM"):
        (finding,) = [x for x in _check(folder, arch).findings if x.severity.value == "error"]
        assert finding.code == "CK113" and "declares architectures [BertForMaskedLM]" in finding.message
