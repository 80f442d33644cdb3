"""Every technique of issue 9, live: a payload shown to run under its real loader, then shown non-clean in ckptlint.

For each sample of tests/technique_samples.py:
- positive control: a copy aimed at a canary is loaded by the real loader in a subprocess (pickle.load,
  torch.load(weights_only=False), np.load(allow_pickle=True), joblib.load, transformers with
  trust_remote_code=True); the canary appears (or, for native-code abuse, the loader dies by a signal);
- ckptlint (Python API, then the CLI in one process for all samples) reports it: CK301 (or CK302 for shipped
  model code), or refuses it (CK001, exit 2) — never clean — and its own canary never appears.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import technique_samples as ts
from cli_support import ckptlint

from ckptlint.api import check_files as check

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")]), "HF_HUB_OFFLINE": "1"}
IDS = [f"{t}:{s.name}" for t, s in ts.ALL]

FIRE = r"""
import io, json, os, pickle, sys, time
path, loader = json.loads(sys.argv[1])
try:
    if loader == "pickle":
        with open(path, "rb") as fh:
            while True:
                try:
                    pickle.load(fh)
                except EOFError:
                    break
    elif loader == "pickle_bytes":
        pickle.load(io.BytesIO(open(path, "rb").read()))
    elif loader in ("torch", "torch_crash"):
        import torch
        torch.load(path, weights_only=False)
    elif loader.startswith("torch:"):
        import torch
        torch.load(os.path.join(path, loader[6:]), weights_only=False)
    elif loader == "numpy":
        import numpy as np
        loaded = np.load(path, allow_pickle=True)
        if hasattr(loaded, "files"):
            for key in loaded.files:
                try:
                    loaded[key]
                except Exception as exc:
                    print(key, type(exc).__name__, exc, file=sys.stderr)
    elif loader == "joblib":
        import joblib
        joblib.load(path)
    elif loader == "remote_code":
        from transformers import AutoModel
        AutoModel.from_pretrained(path, trust_remote_code=True)
except BaseException as exc:  # the payload ran (or not) before the loader gave up
    print(path, type(exc).__name__, str(exc)[:300], file=sys.stderr)
time.sleep(0.5)  # a payload that spawns a shell finishes asynchronously
"""


def _canary_dir(root: Path, name: str) -> Path:
    out = root / name
    out.mkdir(parents=True, exist_ok=True)
    return out


@pytest.mark.parametrize(("technique", "sample"), ts.ALL, ids=IDS)
def test_payload_runs_under_its_loader(technique: str, sample: ts.Sample, tmp_path: Path) -> None:
    canaries = _canary_dir(tmp_path, "canaries")
    target = str(canaries / f"fired_{sample.name}")
    path = ts.write(tmp_path / "samples", sample, target)
    env = {**ENV, "HF_HOME": str(tmp_path / "hf"), "HF_MODULES_CACHE": str(tmp_path / "hf_modules")}
    result = subprocess.run(
        [sys.executable, "-c", FIRE, json.dumps([str(path), sample.loader])],
        capture_output=True, text=True, env=env, cwd=canaries, timeout=300,
    )  # fmt: skip
    if sample.loader == "torch_crash":
        assert result.returncode == -signal.SIGSEGV or result.returncode < 0, (
            result.returncode,
            result.stderr[-500:],
        )
    else:
        assert Path(target).exists(), f"{sample.name} did not fire: {result.stderr[-800:]}"


def non_clean(file: dict | object, expect: str) -> list[str]:
    """The codes that make a FileReport non-clean for this technique (empty when it is clean)."""
    findings = file["findings"] if isinstance(file, dict) else file.findings  # type: ignore[attr-defined]
    error = file["error"] if isinstance(file, dict) else file.error  # type: ignore[attr-defined]
    codes = [f["code"] if isinstance(f, dict) else f.code for f in findings]
    wanted = {"CK302"} if expect == "CK302" else {"CK301", "CK001"}
    return sorted({c for c in codes if c in wanted} | ({"CK001"} if error and expect != "CK302" else set()))


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], Path]:
    root = tmp_path_factory.mktemp("techniques")
    canaries = _canary_dir(root, "canaries")
    paths = {s.name: ts.write(root / "samples", s, str(canaries / f"ckptlint_{s.name}")) for _, s in ts.ALL}
    return paths, canaries


@pytest.mark.parametrize(("technique", "sample"), ts.ALL, ids=IDS)
def test_ckptlint_flags_it_without_running_it(
    technique: str, sample: ts.Sample, written: tuple[dict[str, Path], Path]
) -> None:
    paths, canaries = written
    (file,) = check(str(paths[sample.name])).files
    expect = "CK302" if sample.loader == "remote_code" else "CK301"
    assert non_clean(file, expect), f"{sample.name}: clean ({[f.code for f in file.findings]}, {file.error})"
    if technique == "folders" and expect == "CK301":  # the inner file is named
        assert any(f.details.get("file") for f in file.findings if f.code == "CK301"), file.findings
    assert list(canaries.iterdir()) == []


def test_cli_flags_every_technique_in_one_run(written: tuple[dict[str, Path], Path]) -> None:
    paths, canaries = written
    names = [s.name for _, s in ts.ALL]
    result = ckptlint("check", "--format", "json", *(str(paths[n]) for n in names))
    assert result.returncode in (1, 2) and "Traceback" not in result.stderr
    files = json.loads(result.stdout)["files"]
    for (_, sample), file in zip(ts.ALL, files, strict=True):
        expect = "CK302" if sample.loader == "remote_code" else "CK301"
        assert non_clean(file, expect), (sample.name, file["findings"], file["error"])
    assert list(canaries.iterdir()) == []


def test_a_refusal_still_reports_the_globals_seen_before_it(tmp_path: Path) -> None:
    """Exit 2 (CK001, one line on stderr), and the JSON and SARIF reports on stdout carry the CK301 of the global
    the stream imported before the point ckptlint refuses (here a text number no pickler writes)."""
    from cli_support import one_error_line

    path = tmp_path / "refused.pkl"
    path.write_bytes(b"\x80\x02" + ts.touch_payload(str(tmp_path / "never")) + b"I0x1\n0N.")
    json_run = ckptlint("check", "--format", "json", str(path))
    one_error_line(json_run)
    (file,) = json.loads(json_run.stdout)["files"]
    codes = {f["code"]: f for f in file["findings"]}
    assert {"CK001", "CK301"} <= set(codes) and "system" in json.dumps(codes["CK301"])
    sarif_run = ckptlint("check", "--format", "sarif", str(path))
    one_error_line(sarif_run)
    rules = {r["ruleId"] for run in json.loads(sarif_run.stdout)["runs"] for r in run["results"]}
    assert {"CK001", "CK301"} <= rules
    assert not (tmp_path / "never").exists()
