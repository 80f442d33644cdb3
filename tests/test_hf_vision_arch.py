"""``--arch hf-clip-vision`` (``hf-siglip-vision``) is transformers' ``CLIPVisionModel`` (``SiglipVisionModel``): a
two-tower folder is read as ``from_pretrained`` reads it — the ``vision_model.`` sub-tree taken, the rest
unexpected — with the same verdict and raw diff as ``--arch CLIPVisionModel``. transformers' own loading report
(``output_loading_info``) is the oracle. A copy without the text tower would contradict the folder's config.json
(it declares the two-tower model), so no fix that drops it is offered there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cli_support import ckptlint
from engine_support import CORPUS
from safetensors import safe_open

CASES = [
    ("hf-clip-vision", "CLIPVisionModel", "hf_clip_tiny"),
    ("hf-siglip-vision", "SiglipVisionModel", "hf_siglip_tiny"),
]


def _check(path: Path, *args: str) -> tuple[int, dict[str, Any]]:
    proc = ckptlint("check", str(path), *args, "--format", "json")
    (doc,) = json.loads(proc.stdout)["files"]
    return proc.returncode, doc


def _keys(folder: Path) -> set[str]:
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        return set(f.keys())


@pytest.mark.parametrize(("family", "cls", "name"), CASES, ids=[c[0] for c in CASES])
def test_a_vision_arch_reads_a_two_tower_folder_as_from_pretrained_does(
    tmp_path: Path, family: str, cls: str, name: str
) -> None:
    import transformers

    folder = CORPUS / "hf" / name
    _, info = getattr(transformers, cls).from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["mismatched_keys"] and info["unexpected_keys"]

    reports = {arch: _check(folder, "--arch", arch) for arch in (family, cls)}
    (rc, doc), (rc_cls, doc_cls) = reports[family], reports[cls]
    assert doc["diff"] == doc_cls["diff"]
    assert doc["diff"]["missing"] == [] and doc["diff"]["shape_mismatch"] == []
    assert set(doc["diff"]["unexpected"]) == set(info["unexpected_keys"])
    assert rc == rc_cls == 0
    assert [(f["code"], f["severity"]) for f in doc["findings"]] == [
        (f["code"], f["severity"]) for f in doc_cls["findings"]
    ]
    assert "CK103" not in {f["code"] for f in doc["findings"]}
    (extra,) = [f for f in doc["findings"] if f["code"] == "CK101"]
    assert extra["details"]["tower"] == "text"
    assert extra["edits"] == [] and "ckptlint fix" not in extra["fix"] and "config.json" in extra["fix"]

    # the folder as its config declares it is clean; `fix` for the vision model leaves it whole (no worse)
    assert _check(folder)[0] == 0
    out = tmp_path / "out"
    proc = ckptlint("fix", str(folder), str(out), "--arch", family)
    assert proc.returncode == 0, proc.stderr
    assert _keys(out) == _keys(folder)
    rc_out, doc_out = _check(out)
    assert rc_out == 0 and not [f for f in doc_out["findings"] if f["severity"] == "error"]
