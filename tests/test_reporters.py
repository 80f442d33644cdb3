"""Every reporter on real ``ckptlint check`` output: JSON against ``ckptlint schema``, SARIF against the official
SARIF 2.1.0 schema, GitHub annotations and markdown tables against the JSON of the same run, text rules."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from cli_support import ckptlint, ckptlint_in_pty

ROOT = Path(__file__).resolve().parent.parent
SARIF_SCHEMA = Path(__file__).resolve().parent / "data" / "sarif-schema-2.1.0.json"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


@pytest.fixture(scope="module")
def workdir(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real checkpoints side by side (relative paths, as a repository would have them), one per kind of finding."""
    import torch

    d = tmp_path_factory.mktemp("reporters")
    (d / "weights").mkdir()
    for src in (
        "big_vision/tiny_clippo.npz",
        "open_clip/openclip_tiny_ddp_module_prefix.pt",
        "open_clip/openclip_tiny_fp16.safetensors",
        "timm/timm_vit_clip_tiny.safetensors",
    ):
        (d / "weights" / Path(src).name).write_bytes((corpus / src).read_bytes())

    class RunsCode:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return os.system, (f"touch {d / 'PWNED'}",)

    torch.save({"w": torch.zeros(2), "x": RunsCode()}, d / "weights" / "evil | name.pt")
    return d


CHECK_ARGS = ["check", "weights", "--fail-on", "never"]


@pytest.fixture(scope="module")
def report_json(workdir: Path) -> dict:
    proc = ckptlint(*CHECK_ARGS, "--format", "json", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def findings_of(doc: dict) -> list[tuple[str, str, str]]:
    return [(f["path"], fd["code"], fd["severity"]) for f in doc["files"] for fd in f["findings"]]


def test_json_validates_against_ckptlint_schema(report_json: dict) -> None:
    proc = ckptlint("schema")
    assert proc.returncode == 0
    schema = json.loads(proc.stdout)
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.Draft202012Validator(schema).validate(report_json)
    assert report_json["schema_version"] == "1"
    assert len(report_json["files"]) == 5 and report_json["summary"]["files"] == 5
    codes = {c for _, c, _ in findings_of(report_json)}
    assert {"CK301", "CK201"} <= codes  # the pickle global; the clippo file's opt/chrono
    counted = [s for _, _, s in findings_of(report_json)]
    assert report_json["summary"]["errors"] == counted.count("error")
    assert report_json["summary"]["warnings"] == counted.count("warning")


def test_schema_rejects_a_broken_report(report_json: dict) -> None:
    schema = json.loads(ckptlint("schema").stdout)
    broken = json.loads(json.dumps(report_json))
    broken["files"][0]["findings"] = [{"code": "CK100", "severity": "fatal", "message": "x"}]
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(schema).validate(broken)


def test_sarif_validates_against_official_schema(workdir: Path, report_json: dict) -> None:
    proc = ckptlint(*CHECK_ARGS, "--format", "sarif", cwd=workdir)
    assert proc.returncode == 0, proc.stderr
    sarif = json.loads(proc.stdout)
    schema = json.loads(SARIF_SCHEMA.read_text())
    jsonschema.Draft4Validator(schema, format_checker=jsonschema.Draft4Validator.FORMAT_CHECKER).validate(
        sarif
    )
    assert sarif["version"] == "2.1.0"
    (run,) = sarif["runs"]
    rules = run["tool"]["driver"]["rules"]
    results = run["results"]
    # the same findings as the JSON report, each located at its checkpoint (relative to the source root)
    assert sorted(
        (r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"], r["ruleId"]) for r in results
    ) == sorted((p.replace(" ", "%20").replace("|", "%7C"), c) for p, c, _ in findings_of(report_json))
    levels = {"error": "error", "warning": "warning", "info": "note"}
    assert [r["level"] for r in results] == [levels[s] for _, _, s in findings_of(report_json)]
    for r in results:
        assert rules[r["ruleIndex"]]["id"] == r["ruleId"]
        assert r["locations"][0]["physicalLocation"]["artifactLocation"]["uriBaseId"] == "%SRCROOT%"
    json_keys = [fd["keys"] for f in report_json["files"] for fd in f["findings"]]
    assert [r["properties"]["keys"] for r in results] == json_keys
    # help text is the rule's own documentation, as `ckptlint explain` prints it
    for rule in rules:
        explained = ckptlint("explain", rule["id"]).stdout.strip()
        assert rule["help"]["text"].strip() == explained


def test_sarif_reports_unreadable_input(workdir: Path, tmp_path: Path) -> None:
    bad = workdir / "weights" / "truncated.safetensors"
    bad.write_bytes((workdir / "weights" / "timm_vit_clip_tiny.safetensors").read_bytes()[:100])
    try:
        proc = ckptlint(*CHECK_ARGS, "--format", "sarif", cwd=workdir)
    finally:
        bad.unlink()
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    sarif = json.loads(proc.stdout)
    jsonschema.Draft4Validator(json.loads(SARIF_SCHEMA.read_text())).validate(sarif)
    (run,) = sarif["runs"]
    assert run["invocations"][0]["executionSuccessful"] is False
    assert any(
        r["ruleId"] == "CK001"
        and "truncated" in r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        for r in run["results"]
    )


def _unescape(value: str) -> str:
    return (
        value.replace("%0A", "\n")
        .replace("%0D", "\r")
        .replace("%3A", ":")
        .replace("%2C", ",")
        .replace("%25", "%")
    )


def test_github_annotations_one_per_finding(workdir: Path, report_json: dict) -> None:
    proc = ckptlint(*CHECK_ARGS, "--format", "github", cwd=workdir)
    assert proc.returncode == 0
    pattern = re.compile(r"^::(error|warning|notice) file=([^,]*),line=1,title=([^:]*)::(.*)$")
    got = []
    for line in proc.stdout.splitlines()[:-1]:
        m = pattern.match(line)
        assert m, line
        got.append(
            (_unescape(m.group(2)), _unescape(m.group(3)).split()[0], m.group(1), _unescape(m.group(4)))
        )
    commands = {"error": "error", "warning": "warning", "info": "notice"}
    want = sorted(
        (f["path"], fd["code"], commands[fd["severity"]])
        for f in report_json["files"]
        for fd in f["findings"]
    )
    assert sorted(g[:3] for g in got) == want
    messages = {(f["path"], fd["code"]): fd for f in report_json["files"] for fd in f["findings"]}
    for path, code, _, body in got:
        assert body.splitlines()[0] == messages[(path, code)]["message"]
    assert proc.stdout.splitlines()[-1].startswith("ckptlint: 5 files")


def test_markdown_table_rows_match_findings(workdir: Path, report_json: dict) -> None:
    proc = ckptlint(*CHECK_ARGS, "--format", "markdown", cwd=workdir)
    assert proc.returncode == 0
    md = proc.stdout
    assert md.startswith("## ckptlint report")
    rows = [line for line in md.splitlines() if line.startswith("| **CK")]
    assert len(rows) == len(findings_of(report_json))
    for row in rows:  # a pipe inside a cell is escaped, so every row has exactly 4 cells
        cells = re.split(r"(?<!\\)\|", row.strip())[1:-1]
        assert len(cells) == 4, row
    assert "evil \\| name.pt" not in md or "`weights/evil | name.pt`" in md  # headings keep the real name
    assert "<details><summary>" in md


def test_text_root_cause_first_summary_and_no_colour_in_pipes(workdir: Path, report_json: dict) -> None:
    proc = ckptlint(*CHECK_ARGS, cwd=workdir, env={"NO_COLOR": ""})
    assert proc.returncode == 0
    assert not ANSI.search(proc.stdout)  # a pipe is not a terminal
    last = proc.stdout.strip().splitlines()[-1]
    n = len(findings_of(report_json))
    assert last.startswith(f"{n} findings") and "exit 0" in last
    for f in report_json["files"]:  # per file, errors are listed before warnings before infos
        block = proc.stdout.split(f["path"] + "  ", 1)[1].split("\n\n", 2)[1]
        sev = [m.group(1) for m in re.finditer(r"^CK\d+ (error|warning|info)", block, re.M)]
        rank = {"error": 0, "warning": 1, "info": 2}
        assert sev == sorted(sev, key=rank.__getitem__)
        assert len(sev) == len(f["findings"])


def test_text_colour_on_a_terminal_unless_no_color(workdir: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env["TERM"] = "xterm"
    coloured = ckptlint_in_pty(*CHECK_ARGS, cwd=workdir, env=env)[1]
    assert ANSI.search(coloured)
    plain = ckptlint_in_pty(*CHECK_ARGS, cwd=workdir, env={**env, "NO_COLOR": "1"})[1]
    assert "CK301" in plain and not ANSI.search(plain)


def test_verbose_lists_every_raw_key(workdir: Path) -> None:
    ddp = "weights/openclip_tiny_ddp_module_prefix.pt"
    quiet = ckptlint("check", ddp, "--arch", "open_clip", "--format", "json", cwd=workdir)
    doc = json.loads(quiet.stdout)
    keys = [k for fd in doc["files"][0]["findings"] for k in fd["keys"]]
    assert keys, doc
    short = ckptlint("check", ddp, "--arch", "open_clip", cwd=workdir).stdout
    verbose = ckptlint("check", ddp, "--arch", "open_clip", "--verbose", cwd=workdir).stdout
    assert len(verbose) > len(short)
    diff = doc["files"][0]["diff"]
    for k in diff["missing"] + diff["unexpected"]:
        assert k in verbose


def test_output_file_for_every_format(workdir: Path, tmp_path: Path) -> None:
    for fmt in ("text", "json", "sarif", "markdown", "github"):
        out = tmp_path / f"report.{fmt}"
        to_stdout = ckptlint(*CHECK_ARGS, "--format", fmt, cwd=workdir)
        to_file = ckptlint(*CHECK_ARGS, "--format", fmt, "--output", str(out), cwd=workdir)
        assert to_file.returncode == to_stdout.returncode == 0
        assert to_file.stdout == ""
        assert out.read_text() == to_stdout.stdout


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_output_file_follows_the_umask(workdir: Path, tmp_path: Path, umask: int, mode: int) -> None:
    out = tmp_path / "report.json"
    proc = subprocess.run(
        [sys.executable, "-m", "ckptlint", *CHECK_ARGS, "--format", "json", "--output", str(out)],
        cwd=workdir,
        capture_output=True,
        preexec_fn=lambda: os.umask(umask),
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.stat().st_mode & 0o777 == mode
