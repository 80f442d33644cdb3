"""The read path's models are plain dataclasses (``ckptlint.model``): what they kept of pydantic's ``BaseModel``.

Validation, JSON and pickling of real reports and checkpoints (the CLI's outputs themselves are compared with
sample_reports/ and the JSON schema in test_sample_reports.py and test_cli.py).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
from pydantic import ValidationError

import ckptlint
from ckptlint.checkpoint import Checkpoint
from ckptlint.findings import Finding, Severity
from ckptlint.results import FileReport, FileStats, Report


@pytest.fixture(scope="module")
def report(corpus: Path) -> Report:
    files = sorted(str(p) for p in corpus.rglob("*") if p.is_file() and p.suffix in (".npz", ".safetensors"))
    return ckptlint.check(files, arch="open_clip")


def test_report_round_trips_through_json_and_pickle(report: Report) -> None:
    assert any(fd.edits for f in report.files for fd in f.findings)  # edits: the discriminated union
    assert Report.model_validate_json(report.model_dump_json(indent=2)) == report
    assert pickle.loads(pickle.dumps(report)) == report  # the Ray / Dask engines ship FileReports
    assert (
        report.model_copy(deep=True) == report
        and report.model_copy(deep=True).files[0] is not report.files[0]
    )


def test_stats_are_written_only_when_set(report: Report) -> None:
    file = report.files[0].model_copy()
    assert "stats" not in file.model_dump() and '"stats"' not in file.model_dump_json()
    file.stats = FileStats(bytes=10, requests=2)
    assert file.model_dump(mode="json")["stats"] == {"bytes": 10, "requests": 2}
    assert FileReport.model_validate_json(file.model_dump_json()) == file


def test_checkpoint_from_a_real_file_validates_unchanged(corpus: Path) -> None:
    ckpt = ckptlint.dump(str(next(corpus.rglob("*.safetensors"))))
    assert ckpt.tensors and all(isinstance(t.shape, tuple) for t in ckpt.tensors.values())
    assert Checkpoint.model_validate(ckpt.model_dump()) == ckpt


def test_read_back_findings_are_validated_as_before() -> None:
    raw = {
        "code": "CK101",
        "severity": "warning",
        "message": "m",
        "edits": [{"kind": "drop_keys", "keys": ["x"]}],
    }
    found = Finding.model_validate({**raw, "later_field": 1})  # unknown finding fields: ignored
    assert found.severity is Severity.WARNING and found.edits[0].keys == ["x"]  # type: ignore[union-attr]
    with pytest.raises(ValidationError):  # an edit is exact: an unknown field is an error
        Finding.model_validate({**raw, "edits": [{"kind": "drop_keys", "keys": ["x"], "sep": "."}]})
    with pytest.raises(ValidationError):
        Finding.model_validate({**raw, "edits": [{"kind": "explode"}]})
    with pytest.raises(ValidationError):
        Finding.model_validate({**raw, "severity": "fatal"})
