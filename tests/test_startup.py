"""Fast start: what a one-file run imports and builds (never how long it takes: that is benchmarks/bench_read.py).

The plain path, ``ckptlint check`` / ``ckptlint dump`` of a safetensors file whose keys are in no known layout,
must import none of torch, jax, transformers, numpy, rich (stdout is no terminal), the writers, pydantic,
dataclasses or inspect: checkpoints, findings and reports are records (``ckptlint.record``, ``ckptlint.model``),
validated or serialised through pydantic only by the reporters that need it (JSON, SARIF); the bundled family
files are built without validation (``ckptlint.archs.build``; the tests validate them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

ROOT = Path(__file__).resolve().parent.parent
NEVER = (
    "torch",
    "jax",
    "transformers",
    "numpy",
    "rich",
    "tabulate",
    "ckptlint.writers",
    "pydantic",
    "pydantic_core",
    "dataclasses",  # the read path's classes are records (``ckptlint.record``): no compiled methods
    "inspect",  # with ast, dis and tokenize: ~4 ms
)
PROBE = """
import json, sys
from ckptlint.cli import main
from ckptlint.model import _ADAPTERS
sys.argv = ["ckptlint", *sys.argv[1:]]
try:
    main()
except SystemExit:
    pass
adapted = sorted(c.__module__ + ":" + c.__name__ for c in _ADAPTERS)
print(json.dumps({"modules": sorted(sys.modules), "adapted": adapted}), file=sys.stderr)
"""
# The read path's models on their own: a checkpoint read, findings with edits, a report rendered as text (the
# modules a plain run uses, not the family files'). pydantic must never be imported.
PLAIN = """
import json, sys
from ckptlint.checkpoint import Checkpoint, Sidecar, tensor_info
from ckptlint.diffing import DiffResult, Side
from ckptlint.edits import RenamePrefix
from ckptlint.expected import Expected, ExpectedTensor
from ckptlint.findings import Finding, Severity
from pathlib import Path
from ckptlint.readers.safetensors_reader import read
from ckptlint.report import dump_text, text
from ckptlint.results import ArchInfo, Diff, FileReport, Report, ShapeMismatch
ckpt = read(Path(sys.argv[1]))
ckpt.sidecars.append(Sidecar(name="config.json", kind="hf-config", content={}))
exp = Expected(arch="spec", tensors={k: ExpectedTensor(shape=t.shape) for k, t in ckpt.tensors.items()})
finding = Finding(code="CK103", severity=Severity.ERROR, message="m", edits=[RenamePrefix(old="a.", new="")])
diff = Diff(missing=["x"], shape_mismatch=[ShapeMismatch(key="k", expected=[1], actual=[2])])
file = FileReport(path=ckpt.path, format=ckpt.format, num_tensors=len(ckpt.tensors), findings=[finding],
                  arch=ArchInfo(name="spec", source="spec"), diff=diff)
report = Report(files=[file]).summarize()
side = Side(path="a", format="safetensors", key_sep=".", num_tensors=1, num_params=1, num_bytes=4)
DiffResult(a=side, b=side)
out = text.render(report, verbose=True) + dump_text.render(ckpt, "unknown", [finding])
print(json.dumps({"out": out, "modules": sorted(sys.modules), "errors": report.summary.errors}))
"""


def _run(args: list[str]) -> tuple[str, dict[str, list[str]]]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, env=env)
    return proc.stdout, json.loads(proc.stderr.strip().splitlines()[-1])


@pytest.fixture()
def plain(tmp_path: Path) -> Path:
    path = tmp_path / "small.safetensors"
    save_file({f"blocks.{i}.weight": np.zeros((4, 4), np.float32) for i in range(8)}, str(path))
    return path


@pytest.mark.parametrize("command", ["check", "dump"])
def test_plain_safetensors_run_imports_and_builds_nothing_heavy(plain: Path, command: str) -> None:
    out, seen = _run([command, str(plain)])
    assert plain.name in out
    for heavy in NEVER:
        assert not any(m == heavy or m.startswith(heavy + ".") for m in seen["modules"]), heavy
    assert (
        seen["adapted"] == []
    )  # checkpoints, findings, reports: constructed, never validated nor serialised


def test_read_path_models_never_import_pydantic(plain: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", PLAIN, str(plain)], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert plain.name in seen["out"] and "blocks" in seen["out"] and "CK103" in seen["out"]
    assert seen["errors"] == 1
    assert not [m for m in seen["modules"] if m.split(".")[0] in ("pydantic", "pydantic_core")]


def test_json_report_still_validates_and_serialises(plain: Path) -> None:
    out, seen = _run(["check", str(plain), "--format", "json"])
    report = json.loads(out)
    assert report["schema_version"] == "1" and report["summary"]["files"] == 1
    assert [f["code"] for f in report["files"][0]["findings"]] == ["CK004"]
    assert "ckptlint.results:Report" in seen["adapted"]  # JSON needs the schema: built there


@pytest.mark.parametrize("arch", [None, "bv-vit", "open_clip", "hf-clip"])
def test_constructed_reports_equal_validated_ones(corpus: Path, arch: str | None) -> None:
    """Findings and file reports are built without validation: validating them must change nothing."""
    import ckptlint
    from ckptlint.results import FileReport, Report

    files = sorted(
        str(p) for p in corpus.rglob("*") if p.is_file() and p.suffix in (".npz", ".pt", ".safetensors")
    )
    report = ckptlint.check(files, arch=arch)
    assert sum(len(f.findings) for f in report.files) > len(report.files)
    for file_report in report.files:
        assert FileReport.model_validate(file_report.model_dump()) == file_report
    assert Report.model_validate(report.model_dump()) == report
