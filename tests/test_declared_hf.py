"""A transformers folder is checked against the model its own config.json declares, with transformers as the oracle.

For every model type of ``hf_tiny`` (tiny configs made by transformers here, saved with ``save_pretrained``), the
clean folder and each broken declaration are checked without ``--arch``; the raw diff must equal
``from_pretrained(folder, output_loading_info=True, ignore_mismatched_sizes=True)``'s missing / unexpected /
mismatched keys, a folder transformers refuses must be a CK113 error (never a crash, never CK001), and a broken one
must be a CK113 error naming the config field that was edited.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_support import CORPUS as ROOT_CORPUS
from hf_tiny import TINY, broken, clean, oracle

import ckptlint
from ckptlint.results import FileReport

CLEAN = sorted(TINY)
BROKEN = [(t, e) for t in sorted(TINY) for e in TINY[t].edits]


class _Clean(dict):
    def __missing__(self, name: str) -> Path:
        return clean(name)


@pytest.fixture(scope="session")
def clean_folders() -> dict[str, Path]:
    return _Clean()


def _check(folder: Path) -> FileReport:
    report = ckptlint.check(str(folder))
    assert len(report.files) == 1
    return report.files[0]


def _diff(f: FileReport) -> dict[str, set]:
    d = f.diff
    assert d is not None, [x.code for x in f.findings]
    return {
        "missing": set(d.missing),
        "unexpected": set(d.unexpected),
        "mismatched": {(m.key, tuple(m.actual), tuple(m.expected)) for m in d.shape_mismatch},
    }


def _errors(f: FileReport) -> list[str]:
    return [x.code for x in f.findings if x.severity.value == "error"]


@pytest.mark.parametrize("name", CLEAN)
def test_clean_folder_loads_as_declared(name: str, clean_folders: dict[str, Path]) -> None:
    tiny = TINY[name]
    f = _check(clean_folders[name])
    assert f.arch is not None and f.arch.source == "declared" and f.arch.declared_by == "config.json"
    assert f.arch.name == tiny.cls
    want = oracle(clean_folders[name], tiny.cls)
    assert _diff(f) == want == {"missing": set(), "unexpected": set(), "mismatched": set()}
    assert _errors(f) == [], [(x.code, x.message) for x in f.findings]


@pytest.mark.parametrize(("name", "edit"), BROKEN, ids=[f"{t}-{e}" for t, e in BROKEN])
def test_broken_declaration_is_ck113_and_the_diff_is_transformers(
    name: str, edit: str, clean_folders: dict[str, Path], tmp_path: Path
) -> None:
    tiny = TINY[name]
    folder = broken(tiny, clean_folders[name], edit, tmp_path / f"{name}-{edit}")
    f = _check(folder)
    assert f.error is None
    want = oracle(folder, tiny.cls)
    ck113 = [x for x in f.findings if x.code == "CK113"]
    assert ck113, [(x.code, x.message) for x in f.findings]
    assert all(x.severity.value == "error" for x in ck113)
    if "error" in want:  # transformers refuses the config: so does ckptlint, with the field named
        assert any("refuses" in x.message for x in ck113), [x.message for x in ck113]
        return
    assert _diff(f) == want
    named = " ".join(x.message for x in ck113)
    assert any(field in named for field in TINY[name].edits[edit].fields), named
    # one root cause, one finding: nothing is left for the catch-alls
    assert not {x.code for x in f.findings} & {"CK100", "CK101", "CK102", "CK112", "CK110"}, [
        (x.code, x.message) for x in f.findings
    ]


def test_twelve_model_types_three_broken_declarations_each() -> None:
    assert len(TINY) >= 12
    assert all(len(t.edits) >= 3 for t in TINY.values())


def test_builtin_families_need_neither_torch_nor_transformers(
    clean_folders: dict[str, Path], tmp_path: Path
) -> None:
    """Tier (a) in a process where importing torch or transformers fails: the same verdicts, nothing imported."""
    from test_strip_fix_without_torch import ckptlint_without_torch

    clean = ckptlint_without_torch("check", str(clean_folders["llama"]))
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "declared by config.json: LlamaForCausalLM" in clean.stdout
    folder = broken(TINY["mixtral"], clean_folders["mixtral"], "experts", tmp_path / "mixtral")
    bad = ckptlint_without_torch("check", str(folder), "--format", "json")
    assert bad.returncode == 1, bad.stdout + bad.stderr
    findings = json.loads(bad.stdout)["files"][0]["findings"]
    assert [f["code"] for f in findings] == ["CK113"]
    assert findings[0]["details"]["field"] == "num_local_experts"


def test_a_conversion_transformers_fails_on_is_its_own_finding(
    clean_folders: dict[str, Path], tmp_path: Path
) -> None:
    """Mixtral's experts are stacked and concatenated on load; one w3 expert less makes the concatenation fail.

    transformers records it in its conversion_errors (left out of output_loading_info) and raises after its load
    report; ckptlint says why, and its raw diff has the fused tensor missing (it is never loaded).
    """
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "mixtral"
    shutil.copytree(clean_folders["mixtral"], folder)
    sd = load_file(str(folder / "model.safetensors"))
    del sd["model.layers.1.block_sparse_moe.experts.2.w3.weight"]
    save_file(sd, str(folder / "model.safetensors"), metadata={"format": "pt"})
    want = oracle(folder, "MixtralForCausalLM")
    assert "automatic conversion of the weights" in want["error"]
    f = _check(folder)
    assert _diff(f) == {
        "missing": {"model.layers.1.mlp.experts.gate_up_proj"},
        "unexpected": set(),
        "mismatched": set(),
    }
    (conv,) = [x for x in f.findings if x.code == "CK113" and "cannot convert" in x.message]
    assert conv.keys == ["model.layers.1.mlp.experts.gate_up_proj"]
    assert "Sizes of tensors must match" in conv.message


def test_open_clip_weights_next_to_a_config_json_are_not_what_it_declares(tmp_path: Path) -> None:
    """A hub folder with open_clip weights and transformers' config.json: open_clip loads its own file, which the
    config.json does not describe; so is `check FOLDER/open_clip_pytorch_model.bin`."""
    import shutil

    folder = tmp_path / "hub"
    shutil.copytree(clean("clip"), folder)
    shutil.copy(ROOT_CORPUS / "open_clip" / "openclip_tiny.pt", folder / "open_clip_pytorch_model.bin")
    (folder / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 16}}))
    f = _check(folder)
    assert f.format == "open_clip-dir" and (f.arch is None or f.arch.source != "declared")
    g = _check(folder / "open_clip_pytorch_model.bin")
    assert g.arch is None or g.arch.source != "declared"
    h = _check(folder / "model.safetensors")  # the transformers file itself is what config.json declares
    assert h.arch is not None and h.arch.source == "declared" and h.arch.name == "CLIPModel"
