"""The command line as users and CI gates see it: exit codes and stderr per CONTRACT.md, many-file runs, the
listing commands, the public Python API giving the CLI's results."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from cli_support import CONTRACT_ARCHS, ckptlint, ckptlint_in_pty, one_error_line

ROOT = Path(__file__).resolve().parent.parent


def test_version_imports_nothing_heavy() -> None:
    """``--version`` is the floor of every run's start-up: the standard library's argparse, no third-party
    package (click was dropped for its ~20 ms import)."""
    from ckptlint import __version__

    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "ckptlint", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout == f"ckptlint, version {__version__}\n"
    imported = {line.split("|")[-1].strip().split(".")[0] for line in proc.stderr.splitlines() if "|" in line}
    assert "argparse" in imported  # the probe sees imports at all
    for heavy in (
        "click",
        "numpy",
        "torch",
        "jax",
        "pydantic",
        "tabulate",
        "safetensors",
        "msgpack",
        "open_clip",
        "timm",
    ):
        assert heavy not in imported, heavy


def test_exit_codes_per_contract(corpus: Path, tmp_path: Path) -> None:
    clippo = corpus / "big_vision" / "tiny_clippo.npz"
    assert ckptlint("check", str(clippo), "--arch", "bv-vit").returncode == 1  # CK103 error
    assert ckptlint("check", str(clippo), "--arch", "bv-vit", "--fail-on", "never").returncode == 0
    clean = ckptlint("check", str(clippo), "--arch", "clippo", "--select", "CK1")
    warn = ckptlint("check", str(clippo), "--arch", "clippo", "--select", "CK201", "--fail-on", "warning")
    assert warn.returncode == 1 and "CK201" in warn.stdout
    assert clean.returncode in (0, 1)
    # unreadable inputs: exit 2, exactly one stderr line naming the path
    missing = tmp_path / "nope.safetensors"
    assert str(missing) in one_error_line(ckptlint("check", str(missing)))
    trunc = tmp_path / "trunc.npz"
    trunc.write_bytes(clippo.read_bytes()[:1000])
    assert str(trunc) in one_error_line(ckptlint("check", str(trunc)))
    notckpt = tmp_path / "notes.bin"
    notckpt.write_text("hello, not a checkpoint\n")
    one_error_line(ckptlint("check", str(notckpt)))
    # usage errors are exit 2 and one line too
    one_error_line(ckptlint("check", str(clippo), "--arch", "bv-vit", "--spec", "x.json"))
    one_error_line(ckptlint("check", str(clippo), "--format", "xml"))
    one_error_line(ckptlint("check"))
    one_error_line(ckptlint("explain", "CK999"))


def test_several_paths_one_report_and_unreadable_among_them(corpus: Path, tmp_path: Path) -> None:
    good = corpus / "timm" / "timm_vit_clip_tiny.safetensors"
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(good.read_bytes()[:64])
    proc = ckptlint("check", str(good), str(bad), "--format", "json")
    line = one_error_line(proc)
    assert str(bad) in line
    doc = json.loads(proc.stdout)  # the report still covers every input
    assert [f["path"] for f in doc["files"]] == [str(good), str(bad)]
    assert doc["files"][1]["error"] and doc["files"][0]["error"] is None


def test_directories_and_globs_skip_non_checkpoints(corpus: Path, tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    (tree / "sub").mkdir(parents=True)
    (tree / "a.npz").write_bytes((corpus / "big_vision" / "tiny_vit.npz").read_bytes())
    (tree / "sub" / "b.safetensors").write_bytes(
        (corpus / "timm" / "timm_vit_clip_tiny.safetensors").read_bytes()
    )
    (tree / "sub" / "weights.dat").write_bytes(
        (corpus / "open_clip" / "openclip_tiny.pt").read_bytes()
    )  # sniffed
    (tree / "README.md").write_text("# notes\n")
    (tree / "sub" / "train.log").write_text("epoch 1\n")
    (tree / "hf").mkdir()
    for f in (corpus / "hf" / "hf_clip_tiny").iterdir():
        (tree / "hf" / f.name).write_bytes(f.read_bytes())
    proc = ckptlint("check", "tree", "--format", "json", "--fail-on", "never", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    paths = [f["path"] for f in json.loads(proc.stdout)["files"]]
    assert sorted(paths) == ["tree/a.npz", "tree/hf", "tree/sub/b.safetensors", "tree/sub/weights.dat"]
    globbed = ckptlint(
        "check", "tree/**/*.safetensors", "--format", "json", "--fail-on", "never", cwd=tmp_path
    )
    assert [f["path"] for f in json.loads(globbed.stdout)["files"]] == [
        "tree/hf/model.safetensors",
        "tree/sub/b.safetensors",
    ]
    assert "no file matches" in one_error_line(ckptlint("check", "tree/*.nothing", cwd=tmp_path))


def test_jobs_give_the_same_report(corpus: Path) -> None:
    serial = ckptlint("check", str(corpus), "--format", "json", "--fail-on", "never")
    parallel = ckptlint("check", str(corpus), "--format", "json", "--fail-on", "never", "--jobs", "2")
    assert serial.returncode == parallel.returncode == 0, serial.stderr + parallel.stderr
    assert json.loads(serial.stdout) == json.loads(parallel.stdout)
    assert len(json.loads(serial.stdout)["files"]) >= 12


def test_progress_bar_only_when_asked_or_on_a_terminal(corpus: Path) -> None:
    piped = ckptlint("check", str(corpus), "--fail-on", "never")
    assert "checking" not in piped.stderr
    forced = ckptlint("check", str(corpus), "--fail-on", "never", "--progress")
    assert "checking" in forced.stderr and forced.returncode == 0


def test_rules_and_explain(tmp_path: Path) -> None:
    listing = json.loads(ckptlint("rules", "--format", "json").stdout)
    codes = [r["code"] for r in listing]
    contract = [
        "CK001",
        "CK100",
        "CK101",
        "CK102",
        "CK103",
        "CK104",
        "CK105",
        "CK106",
        "CK107",
        "CK108",
        "CK109",
        "CK110",
        "CK111",
        "CK112",
        "CK201",
        "CK301",
    ]
    assert set(contract) <= set(codes) and codes == sorted(codes)
    text = ckptlint("rules").stdout
    for r in listing:
        assert re.search(rf"^{r['code']}\s+{r['severity']}\s", text, re.M)
        doc = ckptlint("explain", r["code"].lower())
        assert doc.returncode == 0 and doc.stdout.startswith(r["code"])
        for part in ("What it does", "Why is this bad?", "Example", "Fix"):
            assert part in doc.stdout, (r["code"], part)


def test_archs_lists_contract_names() -> None:
    listing = json.loads(ckptlint("archs", "--format", "json").stdout)
    names = {a["name"] for a in listing}
    assert set(CONTRACT_ARCHS) <= names
    text = ckptlint("archs").stdout
    for name in names:
        assert name in text


def test_python_api_matches_cli(corpus: Path) -> None:
    import ckptlint as api

    path = corpus / "big_vision" / "tiny_clippo.npz"
    report = api.check(str(path), arch="bv-vit")
    cli = json.loads(ckptlint("check", str(path), "--arch", "bv-vit", "--format", "json").stdout)
    assert report.model_dump(mode="json") == cli
    ckpt = api.dump(str(path))
    assert len(ckpt.tensors) == cli["files"][0]["num_tensors"]


def test_progress_bar_appears_on_a_terminal_for_long_runs(corpus: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    code, screen = ckptlint_in_pty("check", str(corpus), "--fail-on", "never", env=env)
    assert code == 0
    assert "checking" in screen and "findings" in screen
