"""The pre-commit hook, for real: a git repo with a bad and a good checkpoint, ``pre-commit try-repo`` on ckptlint.

``try-repo`` installs this working tree (uncommitted changes included) into a fresh hook environment exactly as a
user's ``pre-commit`` would, so the first run needs the package index; it takes ~30 s and is skipped only when
pre-commit itself is not installed. Also: the composite action's gate step, run as GitHub would run it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HOOK_REPO: dict[str, Path] = {}
PRE_COMMIT = shutil.which("pre-commit", path=str(Path(sys.executable).parent)) or shutil.which("pre-commit")


class _RunsCode:
    """Pickles to ``os.system('touch <marker>')``: what a malicious checkpoint does when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def git(repo: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, env=env, check=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A git repo with a good safetensors file and a pickle that would run code; returns (repo, marker)."""
    import torch
    from safetensors.torch import save_file

    repo = tmp_path_factory.mktemp("precommit_repo")
    marker = repo.parent / "PWNED_BY_PICKLE"
    git(repo, "init", "-q")
    model = torch.nn.Linear(4, 2)
    save_file(model.state_dict(), str(repo / "good.safetensors"))
    torch.save({"state_dict": model.state_dict(), "hook": _RunsCode(marker)}, repo / "bad.pt")
    (repo / ".pre-commit-config.yaml").write_text("repos: []\n")
    return repo, marker


def hook_repo(tmp: Path) -> Path:
    """This repository as pre-commit sees it. ``try-repo`` takes uncommitted changes to tracked files but not
    untracked files, so while the hook definition is not yet committed, test a snapshot of the working tree."""
    tracked = subprocess.run(
        ["git", "ls-files", "--error-unmatch", ".pre-commit-hooks.yaml", "pyproject.toml", "ckptlint/cli.py"],
        cwd=ROOT,
        capture_output=True,
    )
    if tracked.returncode == 0:
        return ROOT
    snap = tmp / "ckptlint-snapshot"
    names = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, names):
        src = ROOT / name
        if src.is_file():
            (snap / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, snap / name)
    git(snap, "init", "-q")
    git(snap, "add", "-A")
    git(snap, "commit", "-q", "-m", "snapshot")
    return snap


def try_repo(repo: Path, *files: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PRE_COMMIT_HOME": str(repo.parent / "pre-commit-home"), "NO_COLOR": "1"}
    env.pop("VIRTUAL_ENV", None)
    source = HOOK_REPO.get("path") or HOOK_REPO.setdefault("path", hook_repo(repo.parent))
    return subprocess.run(
        [PRE_COMMIT, "try-repo", str(source), "ckptlint", "--color", "never", "--files", *files],
        cwd=repo,
        capture_output=True,
        text=True,
        env=env,
        timeout=900,
    )


@pytest.mark.skipif(PRE_COMMIT is None, reason="pre-commit is not installed (it is in the test extra)")
def test_hook_blocks_the_bad_checkpoint_and_passes_the_good_one(repo: tuple[Path, Path]) -> None:
    path, marker = repo
    git(path, "add", "good.safetensors", "bad.pt", ".pre-commit-config.yaml")
    both = try_repo(path, "good.safetensors", "bad.pt")
    out = both.stdout + both.stderr
    assert both.returncode == 1, out
    assert "ckptlint (checkpoint compatibility)" in out and "Failed" in out
    assert "CK301" in out and "bad.pt" in out  # the root cause is shown: an unsafe global
    assert "system" in out
    assert not marker.exists()  # and the pickle never ran
    good = try_repo(path, "good.safetensors")
    assert good.returncode == 0, good.stdout + good.stderr
    assert "Passed" in good.stdout


def test_hook_definition_matches_checkpoint_files() -> None:
    import re

    import yaml

    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    (hook,) = hooks
    assert hook["id"] == "ckptlint" and hook["entry"] == "ckptlint check" and hook["pass_filenames"] is True
    files = re.compile(hook["files"])
    for name in (
        "m.safetensors",
        "a/b.PT",
        "x.pth",
        "pytorch_model.bin",
        "c.npz",
        "f.msgpack",
        "model.safetensors.index.json",
        "t.ckpt",
    ):
        assert files.search(name), name
    for name in ("config.json", "README.md", "train.py", "tokenizer.json"):
        assert not files.search(name), name


def _gate_script() -> str:
    import yaml

    action = yaml.safe_load((ROOT / "action.yml").read_text())
    assert action["runs"]["using"] == "composite"
    (step,) = [s for s in action["runs"]["steps"] if s.get("id") == "gate"]
    upload = [s for s in action["runs"]["steps"] if "upload-sarif" in str(s.get("uses", ""))]
    assert upload and upload[0]["with"]["sarif_file"] == "${{ inputs.sarif-file }}"
    return step["run"]


def test_action_gate_step_writes_sarif_and_annotations(repo: tuple[Path, Path], tmp_path: Path) -> None:
    """Run the composite action's gate step with bash, as the runner would (ckptlint on PATH)."""
    import json

    path, marker = repo
    out_file = tmp_path / "github_output"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "CKPTLINT_PATHS": "good.safetensors bad.pt",
        "CKPTLINT_ARGS": "",
        "CKPTLINT_SARIF": str(tmp_path / "ckptlint.sarif"),
        "GITHUB_OUTPUT": str(out_file),
        "NO_COLOR": "1",
    }
    proc = subprocess.run(
        ["bash", "-e", "-c", _gate_script()], cwd=path, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr  # the step itself never fails; the last step does
    assert out_file.read_text().strip() == "exit-code=1"
    sarif = json.loads((tmp_path / "ckptlint.sarif").read_text())
    results = sarif["runs"][0]["results"]
    assert any(r["ruleId"] == "CK301" for r in results)
    assert any(line.startswith("::error file=bad.pt,") for line in proc.stdout.splitlines())
    assert not marker.exists()
