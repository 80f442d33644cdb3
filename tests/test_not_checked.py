"""CK004: a checkpoint no model was compared with says so — why, and which rules ran — and never reads as clean.

Files are written by torch / safetensors here: a random MLP (no declaration, no layout ckptlint knows), the same
MLP with a pickle payload, and an open_clip state_dict (a known layout: the architecture is checked).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from cli_support import ckptlint
from engine_support import open_clip_tiny
from safetensors.torch import save_file

from ckptlint import check
from ckptlint.engine import run
from ckptlint.expected import Unchecked
from ckptlint.readers import read_checkpoint


def _mlp() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    mlp = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    return {k: v.contiguous() for k, v in mlp.state_dict().items()}


@pytest.fixture
def mlp(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.safetensors"
    save_file(_mlp(), path)
    return path


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo never",))


def test_unknown_file_gets_ck004_with_the_reason_and_what_ran(mlp: Path) -> None:
    report = check(str(mlp))
    f = report.files[0]
    assert f.arch is None and f.diff is None
    assert [x.code for x in f.findings] == ["CK004"]
    (ck004,) = f.findings
    assert ck004.severity.value == "info"
    assert "no config next to the weights declares a model" in ck004.message
    assert "0.weight" in ck004.message  # the keys it could not place
    assert set(ck004.details["ran"]) == {"format", "security", "metadata"}
    assert "CK301" in ck004.details["ran"]["security"] and "CK107" in ck004.details["ran"]["metadata"]
    assert "--arch NAME" in ck004.fix and "--spec" in ck004.fix


def test_text_report_never_says_everything_matches(mlp: Path) -> None:
    proc = ckptlint("check", str(mlp))
    assert proc.returncode == 0, proc.stderr
    assert "matches every rule" not in proc.stdout
    last = proc.stdout.strip().splitlines()[-1]
    assert last == (
        "1 finding (1 info); architecture not checked for the file: only format, security and metadata rules "
        "ran  exit 0 (fails only with --fail-on info)"
    )
    quiet = ckptlint("check", str(mlp), "--ignore", "CK004")
    assert quiet.returncode == 0
    assert "no findings from the format, security and metadata rules; the architecture was not checked" in (
        quiet.stdout
    )
    assert "matches every rule" not in quiet.stdout


def test_fail_on_info_makes_it_a_gate(mlp: Path) -> None:
    proc = ckptlint("check", str(mlp), "--fail-on", "info", "--format", "json")
    assert proc.returncode == 1
    doc = json.loads(proc.stdout)
    assert doc["summary"]["infos"] == 1
    assert doc["files"][0]["arch"] is None
    assert doc["files"][0]["findings"][0]["code"] == "CK004"


def test_security_findings_still_come_with_ck004(tmp_path: Path) -> None:
    path = tmp_path / "mlp_payload.pt"
    torch.save({**_mlp(), "extra": _Payload()}, path)
    codes = [f.code for f in check(str(path)).files[0].findings]
    assert codes[0] == "CK301" and "CK004" in codes


def test_a_known_layout_is_checked_no_ck004(tmp_path: Path) -> None:
    path = tmp_path / "openclip.pt"
    torch.save(open_clip_tiny().state_dict(), path)
    f = check(str(path)).files[0]
    assert f.arch is not None and "CK004" not in [x.code for x in f.findings]
    assert check(str(path), arch="open_clip").files[0].arch.source == "flag"


def test_an_expectation_builder_says_why(mlp: Path) -> None:
    """The fact channel a declaration builder uses (e.g. a config.json model_type without a built-in spec)."""
    ckpt = read_checkpoint(mlp)
    note = Unchecked(
        reason="config.json declares model_type llama, which no built-in family describes",
        fix="install ckptlint[hf] to check it against its architecture",
        declared_by="config.json",
    )
    (ck004,) = run(ckpt, None, unchecked=note).findings
    assert ck004.message == f"architecture not checked: {note.reason}"
    assert ck004.fix == note.fix and ck004.details["declared_by"] == "config.json"


# Correct checkpoints of models ckptlint has no spec for, whose keys resemble one it has (timm's distilled DeiT,
# Swin and ResNet-hybrid ViT look like timm-vit): the inferred model is not the file's, so what it does not fit is
# "not checked" (CK004 info, naming those keys), never an error against a model nobody named.
LOOKALIKES = {
    "deit_tiny_distilled_patch16_224": {"img_size": 32, "embed_dim": 24, "depth": 1, "num_heads": 2},
    "swin_tiny_patch4_window7_224": {
        "img_size": 56, "embed_dim": 12, "depths": (1, 1), "num_heads": (1, 2), "window_size": 7, "num_classes": 5,
    },
    "vit_tiny_r_s16_p8_224": {"img_size": 64, "embed_dim": 24, "depth": 1, "num_heads": 2},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(LOOKALIKES))
def test_a_lookalike_model_is_not_checked_rather_than_wrong(tmp_path: Path, name: str) -> None:
    import timm
    import tvshim  # noqa: F401  (before timm: torchvision's CUDA wheel)

    model = timm.create_model(name, pretrained=False, **LOOKALIKES[name])
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    model.load_state_dict(state, strict=True)  # the file is exactly what its model loads
    path = tmp_path / f"{name}.safetensors"
    save_file(state, path)
    proc = ckptlint("check", str(path), "--format", "json")
    assert proc.returncode == 0, proc.stdout[-2000:]
    (report,) = json.loads(proc.stdout)["files"]
    assert not [f for f in report["findings"] if f["severity"] == "error"], report["findings"]
    (ck004,) = [f for f in report["findings"] if f["code"] == "CK004"]
    assert ck004["details"]["inferred"].startswith("timm-vit")
    diff = report["diff"]
    d = ck004["details"]
    named = {*d["missing"], *d["unexpected"], *d["shape_mismatch"]}
    assert (
        set(diff["unexpected"]) | {m["key"] for m in diff["shape_mismatch"]} | set(diff["missing"]) <= named
    )
    assert ckptlint("check", str(path), "--fail-on", "info").returncode == 1  # a gate can demand a comparison
