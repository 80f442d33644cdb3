"""Tier (b): a model type no built-in family describes, built by transformers on the meta device (and cached).

GPT-2 and OPT are not generated families: their expectation comes from transformers itself. The raw diff must equal
``from_pretrained``'s loading info; a second run reads the cache and needs neither transformers nor torch; with
neither the cache nor transformers, nothing is compared and the reason says how to get the check.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hf_tiny import oracle

import ckptlint

ROOT = Path(__file__).resolve().parent.parent
LIVE = {
    "gpt2": (
        "GPT2Config",
        "GPT2LMHeadModel",
        dict(n_embd=32, n_layer=2, n_head=4, vocab_size=64, n_positions=32, bos_token_id=1, eos_token_id=1),
        {"n_layer": 3, "vocab_size": 80},
    ),
    "opt": (
        "OPTConfig",
        "OPTForCausalLM",
        dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            ffn_dim=40,
            vocab_size=64,
            max_position_embeddings=32,
            word_embed_proj_dim=32,
            pad_token_id=1,
            bos_token_id=1,
            eos_token_id=1,
        ),
        {"ffn_dim": 48, "num_hidden_layers": 1},
    ),
}


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("CKPTLINT_CACHE_DIR", str(cache))
    return cache


def _save(name: str, folder: Path) -> Path:
    import torch
    import transformers

    config_cls, cls, kwargs, _ = LIVE[name]
    torch.manual_seed(0)
    getattr(transformers, cls)(getattr(transformers, config_cls)(**kwargs)).save_pretrained(folder)
    return folder


def _diff(folder: Path) -> dict[str, set]:
    f = ckptlint.check(str(folder)).files[0]
    assert f.arch is not None and f.arch.source == "declared", [x.message for x in f.findings]
    assert f.diff is not None
    return {
        "missing": set(f.diff.missing),
        "unexpected": set(f.diff.unexpected),
        "mismatched": {(m.key, tuple(m.actual), tuple(m.expected)) for m in f.diff.shape_mismatch},
    }


@pytest.mark.parametrize("name", sorted(LIVE))
def test_tier_b_clean_and_each_broken_field(name: str, tmp_path: Path) -> None:
    from ckptlint.archs.registry import registry

    cls = LIVE[name][1]
    assert cls not in registry().archs  # really tier (b)
    folder = _save(name, tmp_path / name)
    assert (
        _diff(folder) == oracle(folder, cls) == {"missing": set(), "unexpected": set(), "mismatched": set()}
    )
    for field, value in LIVE[name][3].items():
        bad = tmp_path / f"{name}-{field}"
        shutil.copytree(folder, bad)
        config = json.loads((bad / "config.json").read_text())
        config[field] = value
        (bad / "config.json").write_text(json.dumps(config))
        assert _diff(bad) == oracle(bad, cls)
        f = ckptlint.check(str(bad)).files[0]
        ck113 = [x for x in f.findings if x.code == "CK113"]
        assert ck113 and ck113[0].details["field"] == field, [x.message for x in f.findings]
        assert not {x.code for x in f.findings} & {"CK100", "CK101", "CK102"}


_BLOCKED = """
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in ("torch", "transformers", "torchvision"):
            raise ImportError(f"{name} is blocked by the test")
sys.meta_path.insert(0, Block())
import ckptlint
from ckptlint.declared import declared_expected
from ckptlint.readers import read_checkpoint
found = declared_expected(read_checkpoint(sys.argv[1]))
report = ckptlint.check(sys.argv[1]).files[0]
print(json.dumps({"unchecked": getattr(found, "reason", None), "arch": report.arch and report.arch.name,
                  "codes": [f.code for f in report.findings],
                  "loaded": sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))}))
"""


def _blocked(folder: Path, cache: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CKPTLINT_CACHE_DIR": str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", _BLOCKED, str(folder)], capture_output=True, text=True, env=env, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_run_reads_the_cache_without_transformers(tmp_path: Path, _cache: Path) -> None:
    folder = _save("gpt2", tmp_path / "gpt2")
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "config.json").read_text())
    config["n_layer"] = 3
    (bad / "config.json").write_text(json.dumps(config))
    first = [x.code for x in ckptlint.check(str(bad)).files[0].findings]
    assert "CK113" in first and list(_cache.glob("hf-models/*.json"))
    got = _blocked(bad, _cache)
    assert got["loaded"] == [] and got["arch"] == "GPT2LMHeadModel" and "CK113" in got["codes"]


def test_without_transformers_or_cache_the_run_says_how_to_check(tmp_path: Path, _cache: Path) -> None:
    folder = _save("gpt2", tmp_path / "gpt2")
    got = _blocked(folder, tmp_path / "empty-cache")
    assert got["arch"] is None and got["loaded"] == []
    assert (
        got["unchecked"]
        == "config.json declares model_type gpt2; install ckptlint[hf] to check it against its architecture"
    )


# ---- a module count no model has (bounded: building it would never finish) ----------------------------------------
HUGE = 10**9
LAYERS = {"gpt2": "n_layer", "opt": "num_hidden_layers"}


def _with(folder: Path, to: Path, fields: dict) -> Path:
    shutil.copytree(folder, to)
    config = json.loads((to / "config.json").read_text())
    config.update(fields)
    (to / "config.json").write_text(json.dumps(config))
    return to


@pytest.mark.parametrize("name", sorted(LAYERS))
def test_a_billion_layers_is_one_contradiction_and_bounded(name: str, tmp_path: Path) -> None:
    import transformers

    config_cls, cls = LIVE[name][0], LIVE[name][1]
    field = LAYERS[name]
    folder = _save(name, tmp_path / name)
    bad = _with(folder, tmp_path / "bad", {field: HUGE})
    # transformers accepts the config; from_pretrained would then build a billion blocks (never finishes)
    assert getattr(getattr(transformers, config_cls).from_pretrained(bad), field) == HUGE
    f = ckptlint.check(str(bad)).files[0]
    (finding,) = [x for x in f.findings if x.severity.value == "error"]
    assert finding.code == "CK113" and finding.details["field"] == field
    assert f"declares {field} = {HUGE}, but the weights hold 2" in finding.message
    assert finding.fix.startswith(f"set {field} = 2 in config.json")
    # the raw diff is the first block from_pretrained would report missing: what it reports for 3 blocks
    three = _with(folder, tmp_path / "three", {field: 3})
    assert _diff(bad) == oracle(three, cls)
    # the fix as written
    fixed = _with(folder, tmp_path / "fixed", {field: 2})
    assert oracle(fixed, cls) == {"missing": set(), "unexpected": set(), "mismatched": set()}
    assert [x for x in ckptlint.check(str(fixed)).files[0].findings if x.severity.value == "error"] == []


def test_a_count_the_weights_do_not_tell_is_refused_not_built(tmp_path: Path) -> None:
    """BART numbers encoder and decoder layers apart: which group encoder_layers counts is not told by the keys
    alone, so the config is refused (one CK113 naming the field) instead of built a billion times."""
    import torch
    import transformers

    kwargs = dict(
        d_model=16, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=32, decoder_ffn_dim=32, vocab_size=64, max_position_embeddings=32,
    )  # fmt: skip
    torch.manual_seed(0)
    transformers.BartModel(transformers.BartConfig(**kwargs)).save_pretrained(tmp_path / "bart")
    bad = _with(tmp_path / "bart", tmp_path / "bad", {"encoder_layers": HUGE})
    assert transformers.BartConfig.from_pretrained(bad).encoder_layers == HUGE
    f = ckptlint.check(str(bad)).files[0]
    (finding,) = [x for x in f.findings if x.severity.value == "error"]
    assert finding.code == "CK113"
    assert f"encoder_layers = {HUGE}: more than ckptlint builds (4096)" in finding.message
    assert "encoder_layers" in finding.fix
