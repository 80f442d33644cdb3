"""Reader findings through the engine: CK301 (unsafe pickle global), CK002/CK003 (sharded checkpoints)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

from engine_support import check, expected_from_state_dict, hf_clip_tiny

from ckptlint import check as api_check
from ckptlint.readers import read_checkpoint


class _Payload:
    """Would run ``touch CANARY`` if anything unpickled it."""

    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self):
        return (os.system, (f"touch {self.canary}",))


def test_unsafe_pickle_global_is_reported_first_and_never_run(tmp_path: Path) -> None:
    import torch

    canary = tmp_path / "CANARY"
    path = tmp_path / "evil.pt"
    torch.save({"weight": torch.zeros(2, 2), "extra": _Payload(canary)}, path)
    report = api_check(path).files[0]
    assert report.findings and report.findings[0].code == "CK301"
    assert "system" in report.findings[0].message
    assert not canary.exists()
    plain = tmp_path / "evil.pkl"
    plain.write_bytes(pickle.dumps({"x": _Payload(canary)}, protocol=2))
    assert api_check(plain).files[0].findings[0].code == "CK301"
    assert not canary.exists()


def _sharded(tmp_path: Path) -> tuple[Path, object]:
    model = hf_clip_tiny()
    folder = tmp_path / "sharded"
    model.save_pretrained(folder, max_shard_size="200KB")
    shards = sorted(folder.glob("model-*.safetensors"))
    assert len(shards) >= 2
    return folder, model


def test_missing_shard_explains_its_missing_keys(tmp_path: Path) -> None:
    folder, model = _sharded(tmp_path)
    expected = expected_from_state_dict(model.state_dict(), "hf-clip", "hf")
    victim = sorted(folder.glob("model-*.safetensors"))[-1]
    victim.unlink()
    ckpt = read_checkpoint(folder)
    report = check(ckpt, expected)
    assert report.findings[0].code == "CK002"
    assert "CK100" not in [f.code for f in report.findings]  # the lost tensors are CK002's, not leftovers
    assert report.diff is not None and set(report.diff.missing) == set(report.findings[0].keys)


def test_stray_shard_is_a_warning(tmp_path: Path) -> None:
    folder, model = _sharded(tmp_path)
    first = sorted(folder.glob("model-*.safetensors"))[0]
    n = len(list(folder.glob("model-*.safetensors")))
    (folder / f"model-{n + 1:05d}-of-{n + 1:05d}.safetensors").write_bytes(first.read_bytes())
    report = check(read_checkpoint(folder), expected_from_state_dict(model.state_dict(), "hf-clip", "hf"))
    assert [f.code for f in report.findings if f.code != "CK107"] == ["CK003"]
