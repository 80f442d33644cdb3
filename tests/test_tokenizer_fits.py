"""CK115 and item 5 of issue 11: metadata rules follow the model's modalities; the tokenizer must fit the embedding.

Tokenizer files are written by the real libraries (``tokenizers`` + ``PreTrainedTokenizerFast.save_pretrained``);
the oracle for "more tokens than rows" is the model itself: the added token's id makes the forward pass raise
``IndexError``. ckptlint reads the files as JSON only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from hf_tiny import TINY, clean

import ckptlint

ROWS = TINY["llama"].kwargs["vocab_size"]


def _tokenizer(n: int, added: int = 0):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(vocab={f"t{i}": i for i in range(n)}, unk_token="t0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="t0", bos_token="t1", eos_token="t1")
    fast.add_tokens([f"<new{i}>" for i in range(added)])
    return fast


def _folder(tmp_path: Path, tokenizer, name: str = "llama") -> Path:
    folder = tmp_path / name
    shutil.copytree(clean("llama"), folder)
    tokenizer.save_pretrained(folder)
    return folder


def _codes(folder: Path, **kw) -> list[str]:
    return [f.code for f in ckptlint.check(str(folder), **kw).files[0].findings]


def test_added_tokens_without_resize_are_an_error_the_model_proves(tmp_path: Path) -> None:
    import transformers

    tok = _tokenizer(ROWS, added=4)
    folder = _folder(tmp_path, tok)
    model = transformers.LlamaForCausalLM.from_pretrained(folder)
    with pytest.raises(IndexError):
        model(tok("t5 <new3>", return_tensors="pt")["input_ids"])
    report = ckptlint.check(str(folder)).files[0]
    (finding,) = [f for f in report.findings if f.code == "CK115"]
    assert finding.severity.value == "error"
    assert finding.details["max_id"] == ROWS + 3 and finding.details["rows"] == ROWS
    assert finding.details["added"] == 4


def test_resized_embeddings_and_padded_tables_say_nothing(tmp_path: Path) -> None:
    import transformers

    tok = _tokenizer(ROWS, added=4)
    model = transformers.LlamaForCausalLM.from_pretrained(clean("llama"))
    model.resize_token_embeddings(len(tok))
    folder = tmp_path / "resized"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    model(tok("t5 <new3>", return_tensors="pt")["input_ids"])  # runs
    assert "CK115" not in _codes(folder)
    padded = _folder(tmp_path, _tokenizer(ROWS - 30), "padded")  # fewer tokens than rows: normal padding
    assert _codes(padded) == []


def test_special_token_id_outside_the_vocabulary(tmp_path: Path) -> None:
    folder = _folder(tmp_path, _tokenizer(ROWS - 30))
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config["eos_token_id"] = ROWS + 10
    path.write_text(json.dumps(config))
    report = ckptlint.check(str(folder)).files[0]
    (finding,) = [f for f in report.findings if f.code == "CK115"]
    assert "eos_token_id" in finding.message and str(ROWS + 10) in finding.message


def test_a_text_model_gets_no_image_preprocessing_finding(tmp_path: Path) -> None:
    """check --model with a Llama factory on a Llama folder: no CK107 (it is no image model)."""
    factory = tmp_path / "factory.py"
    kwargs = TINY["llama"].kwargs
    factory.write_text(
        "import tvshim\nfrom transformers import LlamaConfig, LlamaForCausalLM\n"
        f"def build():\n    return LlamaForCausalLM(LlamaConfig(**{kwargs!r}))\n"
    )
    assert "CK107" not in _codes(clean("llama"), model=f"{factory}:build")
    assert "CK107" not in _codes(clean("llama"))
    assert "CK107" in _codes(clean("vit"))  # an image model without preprocessor_config.json still is
