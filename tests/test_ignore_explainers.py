"""``--ignore``/``--select`` of an explaining rule hides that explanation, never the problem it explained.

Explainers (CK103 prefix, CK109 transposed, …) take the raw-diff entries they account for. When their code is
ignored (or left out of ``--select``), what they took falls back to the catch-alls, worded as the loader words it:
torch's ``load_state_dict(strict=False)`` is the oracle (its size-mismatch error, its missing/unexpected lists),
on files written by open_clip and torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from cli_support import ckptlint
from declared_support import open_clip_folder, open_clip_report
from engine_support import CORPUS, open_clip_tiny, torch_load_report
from safetensors.torch import load_file, save_file


def _check(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = ckptlint("check", str(path), *args, "--format", "json")
    (file,) = json.loads(proc.stdout)["files"]
    return proc.returncode, file


def _codes(file: dict[str, Any]) -> list[str]:
    return [f["code"] for f in file["findings"] if f["code"] != "CK107"]


def _transposed_folder(tmp_path: Path) -> Path:
    """An open_clip hub folder (written by open_clip) whose visual.proj a hand edit stored transposed."""
    folder = open_clip_folder(tmp_path / "hub")
    weights = folder / "open_clip_model.safetensors"
    sd = load_file(weights)
    sd["visual.proj"] = sd["visual.proj"].T.contiguous()
    save_file(sd, weights)
    return folder


def test_ignoring_the_transposed_kernel_rule_leaves_the_size_mismatch_torch_raises(tmp_path: Path) -> None:
    folder = _transposed_folder(tmp_path)
    missing, unexpected, mismatched = open_clip_report(folder)  # open_clip builds it, torch loads the weights
    assert not missing and not unexpected and set(mismatched) == {"visual.proj"}

    rc, plain = _check(folder)
    assert rc == 1 and _codes(plain) == ["CK109"], plain["findings"]
    for args in (["--ignore", "CK109"], ["--select", "CK102"], ["--ignore", "CK109,CK107"]):
        rc, file = _check(folder, *args)
        assert rc == 1, (args, file["findings"])
        assert _codes(file) == ["CK102"], (args, file["findings"])
        (ck102,) = [f for f in file["findings"] if f["code"] == "CK102"]
        assert ck102["keys"] == ["visual.proj"]
        assert file["diff"] == plain["diff"]  # the raw diff never depends on what is shown
        assert {
            m["key"]: (tuple(m["expected"]), tuple(m["actual"])) for m in file["diff"]["shape_mismatch"]
        } == (mismatched)
    rc, file = _check(folder, "--select", "CK109")
    assert rc == 1 and _codes(file) == ["CK109"]
    rc, file = _check(folder, "--ignore", "CK1")  # the user silenced the whole family: that is theirs to do
    assert rc == 0 and _codes(file) == []


def test_ignoring_the_prefix_rule_leaves_torchs_missing_and_unexpected_keys() -> None:
    path = CORPUS / "open_clip" / "openclip_tiny_ddp_module_prefix.pt"
    sd = torch.load(path, weights_only=True)
    missing, unexpected, mismatched = torch_load_report(open_clip_tiny(), sd)
    assert missing and unexpected and not mismatched

    rc, plain = _check(path, "--arch", "open_clip")
    assert rc == 1 and _codes(plain) == ["CK103"], plain["findings"]
    rc, file = _check(path, "--arch", "open_clip", "--ignore", "CK103")
    assert rc == 1, file["findings"]
    assert sorted(_codes(file)) == ["CK100", "CK101"], file["findings"]
    by_code = {f["code"]: f for f in file["findings"]}
    assert by_code["CK100"]["details"]["count"] == len(missing)
    assert by_code["CK101"]["details"]["count"] == len(unexpected)
    # the rename CK103 found is undone with it: no shape clash of a renamed pair is left behind
    assert file["diff"] == plain["diff"]
    assert set(file["diff"]["missing"]) == missing and set(file["diff"]["unexpected"]) == unexpected


def test_an_inferred_model_still_names_the_key_an_ignored_explainer_took(tmp_path: Path) -> None:
    """A bare weights file (nothing declares the model): the inferred model's leftovers are CK004's to say (the
    contract runs no CK100-CK102 errors against a model nobody named), and the key is still named."""
    model = open_clip_tiny()
    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    sd["visual.proj"] = sd["visual.proj"].T.contiguous()
    path = tmp_path / "transposed.safetensors"
    save_file(sd, path)
    rc, file = _check(path, "--ignore", "CK109")
    assert rc == 0 and _codes(file) == ["CK004"], file["findings"]  # info: the model was never named
    assert "visual.proj" in file["findings"][-1]["keys"]
    assert file["findings"][-1]["details"]["shape_mismatch"] == ["visual.proj"]
