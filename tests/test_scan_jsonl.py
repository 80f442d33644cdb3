"""``check --format jsonl``: FileReports streamed one per line as files finish, a final summary line, nothing
else on stdout; ``--output F --resume`` after a scan killed mid-way (the server kills the CLI while it reads a
file) carries on without losing or repeating a file, re-checks files that failed, and ends with one summary."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

pytest.importorskip("fsspec")
pytest.importorskip("aiohttp")

from _range_server import Fault, RangeServer
from cli_support import ckptlint, ckptlint_in_pty, one_error_line
from scan_support import jsonl, strip, write_checkpoints

N = 60


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("served")
    names = write_checkpoints(root, N, per_dir=30, torch_every=20)
    with RangeServer(root) as srv:
        yield root, names, srv


@pytest.fixture
def srv(served):
    served[2].reset()
    yield served[2]
    served[2].reset()


@pytest.fixture(scope="module")
def schema() -> dict:
    return json.loads(ckptlint("schema").stdout)


def validator(schema: dict, definition: str) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator({"$defs": schema["$defs"], "$ref": f"#/$defs/{definition}"})


def test_jsonl_lines_are_file_reports_then_one_summary(served, srv, schema: dict) -> None:
    root, names, _ = served
    paths = [str(root / n) for n in names[:20]] + [srv.url(n) for n in names[20:]]
    proc = ckptlint("check", *paths, "--format", "jsonl", "--stats")
    one_error_line(proc)  # the cut files: exit 2, still one line on stderr (no table off a terminal)
    lines = proc.stdout.splitlines()
    files, summaries = jsonl(proc.stdout)
    assert len(lines) == N + 1 and json.loads(lines[-1]) == summaries[0]
    for doc in files:
        validator(schema, "FileReport").validate(doc)
        assert ("stats" in doc) == doc["path"].startswith("http")  # --stats: remote inputs only
    validator(schema, "Summary").validate(summaries[0]["summary"])
    assert sorted(f["path"] for f in files) == sorted(paths)

    whole = json.loads(ckptlint("check", *paths, "--format", "json").stdout)
    assert {strip(f) for f in whole["files"]} == {
        strip(f) for f in files
    }  # the same FileReports as --format json
    assert whole["summary"] == summaries[0]["summary"]


def test_stats_are_what_the_server_sent(served, srv) -> None:
    root, names, _ = served
    urls = [srv.url(n) for n in names]
    files, _ = jsonl(ckptlint("check", *urls, "--format", "jsonl", "--stats", "-j", "8").stdout)
    for doc in files:
        name = doc["path"].split("/", 3)[3]
        assert doc["stats"] == {"bytes": srv.bytes_by_path[name], "requests": srv.requests_by_path[name]}
        assert doc["stats"]["bytes"] <= (root / name).stat().st_size


def _killed_scan(
    paths: list[str], out: Path, srv: RangeServer, victim: str
) -> subprocess.CompletedProcess[str]:
    """Run a scan that the server kills (SIGKILL) while it reads ``victim``."""
    srv.inject(victim, Fault(kill=True))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ckptlint",
            "check",
            *paths,
            "--format",
            "jsonl",
            "--output",
            str(out),
            "-j",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_COLOR": "1"},
    )
    assert proc.returncode == -9 and srv.killed, (proc.returncode, proc.stderr)
    return proc


def test_resume_after_a_kill_loses_and_repeats_nothing(served, srv, tmp_path: Path) -> None:
    _, names, _ = served
    urls = [srv.url(n) for n in names]
    out = tmp_path / "scan.jsonl"
    _killed_scan(urls, out, srv, names[40])
    first = out.read_bytes()
    done_before = {json.loads(line)["path"] for line in first.splitlines()}
    assert 10 <= len(done_before) < N and b'"summary"' not in first  # no summary: the scan did not finish
    with out.open("ab") as fh:
        fh.write(
            b'{"path": "' + urls[0].encode() + b'", "form'
        )  # what a kill in the middle of a write leaves

    srv.reset()
    proc = ckptlint("check", *urls, "--format", "jsonl", "--output", str(out), "--resume")
    assert proc.returncode == 2 and proc.stdout == ""  # the two cut files
    text = out.read_text()
    kept = [ln for ln in first.decode().splitlines(keepends=True) if not json.loads(ln)["error"]]
    assert text.startswith("".join(kept))  # what was done is kept as it was; failed files are checked again
    files, summaries = jsonl(text)
    assert sorted(f["path"] for f in files) == sorted(urls)  # every file exactly once
    assert len(summaries) == 1 and text.splitlines()[-1] == json.dumps(summaries[0])
    assert summaries[0]["summary"]["files"] == N
    done_ok = {f["path"] for f in files if f["path"] in done_before and not f["error"]}
    assert not {u for u in done_ok if srv.requests_by_path[u.split("/", 3)[3]]}  # not read again

    fresh = jsonl(ckptlint("check", *urls, "--format", "jsonl").stdout)
    assert sorted(map(strip, fresh[0])) == sorted(map(strip, files))  # same as one uninterrupted scan
    assert fresh[1] == summaries


def test_resume_rechecks_files_that_failed_and_keeps_one_summary(served, srv, tmp_path: Path) -> None:
    _, names, _ = served
    paths = [srv.url(n) for n in names[:10]]
    out = tmp_path / "scan.jsonl"
    srv.always[names[3]] = Fault(status=403)
    first = ckptlint("check", *paths, "--format", "jsonl", "--output", str(out))
    assert "access denied (HTTP 403)" in one_error_line(first)
    files, summaries = jsonl(out.read_text())
    assert [f["error"] for f in files if f["path"] == paths[3]] == [
        "cannot reach remote file: access denied (HTTP 403)"
    ]

    srv.reset()  # the server lets us in now
    again = ckptlint("check", *paths, "--format", "jsonl", "--output", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    files, summaries = jsonl(out.read_text())
    assert sorted(f["path"] for f in files) == sorted(paths) and not any(f["error"] for f in files)
    assert len(summaries) == 1 and summaries[0]["summary"]["files"] == 10
    assert set(srv.requests_by_path) == {names[3]}  # only the failed file was read again

    third = ckptlint("check", *paths, "--format", "jsonl", "--output", str(out), "--resume")
    assert third.returncode == 0 and jsonl(out.read_text()) == (files, summaries)  # nothing left to do


def test_resume_needs_jsonl_and_a_jsonl_output_file(served, tmp_path: Path) -> None:
    root, names, _ = served
    one_error_line(
        ckptlint("check", str(root / names[0]), "--format", "json", "--resume", "-o", str(tmp_path / "x"))
    )
    one_error_line(ckptlint("check", str(root / names[0]), "--format", "jsonl", "--resume"))
    report = tmp_path / "report.json"
    report.write_text(ckptlint("check", str(root / names[0]), "--format", "json").stdout)
    before = report.read_bytes()
    line = one_error_line(
        ckptlint("check", str(root / names[1]), "--format", "jsonl", "-o", str(report), "--resume")
    )
    assert "not a ckptlint JSONL line" in line and report.read_bytes() == before  # not resumed into, not cut
    target = root / names[1]
    before = target.read_bytes()
    line = one_error_line(ckptlint("check", str(target), "--format", "jsonl", "--output", str(target)))
    assert "never written over an input" in line and target.read_bytes() == before


def test_progress_and_summary_table_on_a_terminal_stdout_file_untouched(served, tmp_path: Path) -> None:
    root, names, _ = served
    out = tmp_path / "scan.jsonl"
    code, screen = ckptlint_in_pty(
        "check", *(str(root / n) for n in names), "--format", "jsonl", "-o", str(out)
    )
    assert code == 2
    assert "files/s" in screen and "ETA" in screen and f"{N}/{N}" in screen
    assert "unreadable" in screen and "warnings" in screen  # the summary table
    files, summaries = jsonl(out.read_text())
    assert len(files) == N and len(summaries) == 1
