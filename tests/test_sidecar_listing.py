"""A folder is listed once per process for all its files (per-file cost flat in the folder's size), yet a file
added or removed between two reads is seen: the listing is kept only while the folder's mtime is unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import ckptlint
from ckptlint.readers import sidecars


def test_listing_is_shared_and_follows_changes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        save_file({"w": np.zeros((2, 2), np.float32)}, str(tmp_path / f"m{i}.safetensors"))
    (tmp_path / "notes.json").write_text(json.dumps({"a": 1}))  # not config-like: never a sidecar
    scans = []
    real = sidecars.os.scandir
    monkeypatch.setattr(sidecars.os, "scandir", lambda p: scans.append(p) or real(p))
    for i in range(3):
        assert ckptlint.dump(tmp_path / f"m{i}.safetensors").sidecars == []
    assert len(scans) == 1
    (tmp_path / "open_clip_config.json").write_text(json.dumps({"model_cfg": {"embed_dim": 8}}))
    found = ckptlint.dump(tmp_path / "m0.safetensors").sidecars
    assert [(s.name, s.kind) for s in found] == [("open_clip_config.json", "open_clip-config")]
    assert len(scans) == 2
    (tmp_path / "open_clip_config.json").unlink()
    assert ckptlint.dump(tmp_path / "m1.safetensors").sidecars == []
