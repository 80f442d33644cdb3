"""The family cache (``ckptlint.archs.cache``): the same results as without it, stale or broken caches ignored,
and a planted pickle never runs (shown first to run under ``pickle.loads``)."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from ckptlint.archs import cache

ROOT = Path(__file__).resolve().parent.parent


def _cli(cache_dir: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CKPTLINT_CACHE_DIR": cache_dir, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "ckptlint", *args], capture_output=True, text=True, env=env)


def test_reports_are_identical_with_a_warm_cache_and_without(corpus: Path, tmp_path: Path) -> None:
    inputs = [
        corpus / "hf" / "hf_clip_tiny",
        corpus / "big_vision" / "tiny_clippo.npz",
        corpus / "open_clip" / "openclip_tiny_ddp_module_prefix.pt",
        corpus / "timm" / "timm_vit_clip_tiny.safetensors",
    ]
    args = ["check", *map(str, inputs), "--format", "json"]
    off = _cli("", *args)
    warm_dir = str(tmp_path / "c")
    cold = _cli(warm_dir, *args)
    assert (tmp_path / "c" / cache.FILE_NAME).is_file()
    warm = _cli(warm_dir, *args)
    assert off.returncode == cold.returncode == warm.returncode
    assert off.stdout == cold.stdout == warm.stdout and '"findings"' in off.stdout
    arch = ["archs", "bv-siglip"]
    assert _cli("", *arch).stdout == _cli(warm_dir, *arch).stdout != ""


def test_a_changed_file_makes_the_cache_stale(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path / "c"))
    family = tmp_path / "fam.toml"
    family.write_text("[family]\nname = 'x'\n")
    key = cache.cache_key([family], [], ("v",))
    cache.store(key, ["a table"])
    assert cache.load(key) == ["a table"]
    family.write_text("[family]\nname = 'y'\n")
    os.utime(family, ns=(1, 1))
    assert cache.cache_key([family], [], ("v",)) != key
    assert cache.load(cache.cache_key([family], [], ("v",))) is None
    assert cache.load(cache.cache_key([family], [], ("other version",))) is None


def test_corrupt_or_unwritable_cache_is_no_cache(corpus: Path, tmp_path: Path) -> None:
    target = ["check", str(corpus / "timm" / "timm_vit_clip_tiny.safetensors"), "--format", "json"]
    expected = _cli("", *target)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / cache.FILE_NAME).write_bytes(b"\x80\x05not a pickle at all")
    assert _cli(str(bad), *target).stdout == expected.stdout
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    unwritable = _cli(str(blocker / "sub"), *target)
    assert unwritable.stdout == expected.stdout and unwritable.stderr == ""


class _Payload:
    def __init__(self, canary: Path) -> None:
        self.canary = canary

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.canary),))


def test_a_planted_pickle_never_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shown = tmp_path / "ran-under-pickle"
    pickle.loads(pickle.dumps(_Payload(shown)))  # the real loader runs it
    assert shown.is_dir()
    monkeypatch.setenv(cache.ENV_DIR, str(tmp_path / "c"))
    (tmp_path / "c").mkdir()
    canary = tmp_path / "ran-from-cache"
    key = cache.cache_key([], [], ("v",))
    for blob in (
        pickle.dumps(key) + pickle.dumps(_Payload(canary)),  # the value
        pickle.dumps(_Payload(canary)),  # before the key is even compared
    ):
        (tmp_path / "c" / cache.FILE_NAME).write_bytes(blob)
        assert cache.load(key) is None
        assert not canary.exists()
