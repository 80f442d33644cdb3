"""The Python API ``ckptlint.check``: reports per path, unreadable inputs, select/ignore, the mode without
an expectation, and expectations from a dump JSON (``--spec``) or a live model factory (``--model``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from engine_support import CORPUS, open_clip_tiny, save_safetensors

from ckptlint import check
from ckptlint.api import check_checkpoint, expectation_for
from ckptlint.errors import UsageError
from ckptlint.readers import read_checkpoint

OC = CORPUS / "open_clip"


def test_unreadable_inputs_are_reported_not_raised(tmp_path: Path) -> None:
    good = OC / "openclip_tiny.pt"
    truncated = tmp_path / "cut.safetensors"
    truncated.write_bytes((OC / "openclip_tiny_fp16.safetensors").read_bytes()[:100])
    report = check([tmp_path / "nope.pt", truncated, good], arch=None)
    missing, cut, ok = report.files
    for bad in (missing, cut):
        assert bad.error and bad.format is None and [f.code for f in bad.findings] == ["CK001"]
        assert bad.findings[0].message.startswith("unreadable input: ")
    assert ok.error is None and ok.num_tensors == 62
    assert report.summary.files == 3 and report.summary.errors >= 2


def test_select_and_ignore(tmp_path: Path) -> None:
    path = OC / "openclip_tiny_trainer_ckpt.pt"
    assert {f.code for f in check(path).files[0].findings} >= {"CK201", "CK107"}
    assert [f.code for f in check(path, select=["CK2"]).files[0].findings] == ["CK201"]
    assert "CK107" not in [f.code for f in check(path, ignore="CK107").files[0].findings]


def test_at_most_one_expectation() -> None:
    with pytest.raises(UsageError):
        check(OC / "openclip_tiny.pt", arch="open_clip", spec="x.json")


def test_without_expectation_only_rules_that_need_none(tmp_path: Path) -> None:
    """No CK100/CK101/CK102 without an expectation; the rules that need none still speak."""
    sd = dict(open_clip_tiny().state_dict())
    for k in list(sd)[:10]:
        sd[k] = sd[k].half()  # a partial cast: CK106 against the dominant dtype
    ckpt = save_safetensors(sd, tmp_path / "mixed.safetensors")
    f = check_checkpoint(ckpt)
    codes = [x.code for x in f.findings]
    assert "CK106" in codes and not {"CK100", "CK101", "CK102"} & set(codes)
    mixed = next(x for x in f.findings if x.code == "CK106")
    assert mixed.details["dominant"] == "float32" and "10 of 62" in mixed.message

    old = check(CORPUS / "hf" / "hf_clip_tiny_old_position_ids").files[0]
    assert "CK111" in [x.code for x in old.findings]

    fp16 = check(OC / "openclip_tiny_fp16.safetensors").files[0]
    assert "CK106" not in [x.code for x in fp16.findings]  # all float16 is a choice, not drift


def test_spec_from_a_dump_json(tmp_path: Path) -> None:
    """--spec: the dump JSON of a clean reference checkpoint is the expectation."""
    ref = read_checkpoint(OC / "openclip_tiny.pt")
    spec = tmp_path / "ref.json"
    spec.write_text(
        json.dumps(
            {
                "schema_version": "1",
                "path": str(OC / "openclip_tiny.pt"),
                "format": ref.format,
                "layout": "open_clip",
                "tensors": {k: {"shape": list(t.shape), "dtype": t.dtype} for k, t in ref.tensors.items()},
                "groups": [],
                "metadata": {},
                "findings": [],
            }
        )
    )
    clean = check(OC / "openclip_tiny.pt", spec=str(spec)).files[0]
    assert clean.arch is not None and clean.arch.source == "spec"
    assert clean.diff is not None and clean.diff.missing == [] and clean.diff.unexpected == []
    ddp = check(OC / "openclip_tiny_ddp_module_prefix.pt", spec=str(spec)).files[0]
    assert ddp.findings[0].code == "CK103" and ddp.findings[0].details["from"] == "module."


def test_model_factory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--model MODULE:FACTORY: the live model's state_dict keys (built without weights) are the
    expectation."""
    (tmp_path / "tiny_factory.py").write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from engine_support import open_clip_tiny\n"
        "def make():\n"
        "    return open_clip_tiny()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    report = check(OC / "openclip_tiny_compile_orig_mod_prefix.pt", model="tiny_factory:make").files[0]
    assert report.arch is not None and report.arch.source == "model"
    assert report.findings[0].code == "CK103" and report.findings[0].details["from"] == "_orig_mod."
    sys.modules.pop("tiny_factory", None)


def test_expectation_for_matches_check() -> None:
    ckpt = read_checkpoint(OC / "openclip_tiny.pt")
    expected = expectation_for(ckpt, arch="open_clip")
    assert expected is not None and expected.arch == "open_clip"
    assert (
        check_checkpoint(ckpt, expected=expected).diff
        == check(OC / "openclip_tiny.pt", arch="open_clip").files[0].diff
    )


def test_torch_is_not_needed_by_the_engine() -> None:
    """The engine and rules import no framework: check a file in a fresh interpreter and look at
    sys.modules."""
    import subprocess

    code = (
        "import sys; from ckptlint.engine import run; from ckptlint.readers import read_checkpoint;"
        f"r = run(read_checkpoint({str(OC / 'openclip_tiny.pt')!r}), None);"
        "bad = [m for m in ('torch', 'jax', 'flax', 'open_clip', 'timm', 'transformers') if m in "
        "sys.modules];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_safetensors_header_metadata_is_not_training_state(tmp_path: Path) -> None:
    """`step`/`epoch` in a safetensors header's __metadata__ sit beside flat weights: not a trainer dict (CK201),
    in a file and in a folder; the same names as a torch trainer dict's entries are."""
    import torch
    from safetensors.torch import save_file

    weights = {"w": torch.zeros(2, 2)}
    meta = {"step": "500", "epoch": "3", "format": "pt"}
    save_file(weights, tmp_path / "model.safetensors", metadata=meta)
    (tmp_path / "config.json").write_text('{"model_type": "mlp"}')
    for path in (tmp_path / "model.safetensors", tmp_path):
        assert "CK201" not in {f.code for f in check(path).files[0].findings}, path
    torch.save({"model": weights, "step": 500, "epoch": 3}, tmp_path / "trainer.pt")
    assert "CK201" in {f.code for f in check(tmp_path / "trainer.pt").files[0].findings}
