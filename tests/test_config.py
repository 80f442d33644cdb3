"""``[tool.ckptlint]`` / ``ckptlint.toml``: found upwards from the working directory, flags win, per-path overrides,
and every mistake in the file is one clear usage error (exit 2)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from cli_support import ckptlint, one_error_line

from ckptlint.config import find_config, glob_to_regex, load_config
from ckptlint.errors import UsageError


@pytest.fixture()
def project(tmp_path: Path, corpus: Path) -> Path:
    """A project folder with the CLIPPO file (opt/chrono included: CK201) under models/."""
    (tmp_path / "models" / "vit").mkdir(parents=True)
    (tmp_path / "models" / "clippo.npz").write_bytes((corpus / "big_vision" / "tiny_clippo.npz").read_bytes())
    (tmp_path / "models" / "vit" / "bare.npz").write_bytes(
        (corpus / "big_vision" / "tiny_vit_bare.npz").read_bytes()
    )
    return tmp_path


def codes(proc: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    doc = json.loads(proc.stdout)
    return {f["path"]: sorted(fd["code"] for fd in f["findings"]) for f in doc["files"]}


def arches(proc: subprocess.CompletedProcess[str]) -> dict[str, str | None]:
    doc = json.loads(proc.stdout)
    return {f["path"]: (f["arch"] or {}).get("name") for f in doc["files"]}


def test_pyproject_settings_apply_and_flags_win(project: Path) -> None:
    base = ckptlint("check", "models/clippo.npz", "--format", "json", "--isolated", cwd=project)
    assert "CK201" in codes(base)["models/clippo.npz"]
    (project / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.ckptlint]\nignore = ["CK201"]\nfail-on = "warning"\nformat = "json"\n'
    )
    sub = project / "models"  # the nearest config is found from a subfolder too
    cfg = ckptlint("check", "clippo.npz", cwd=sub)
    assert "CK201" not in codes(cfg)["clippo.npz"]  # format = "json" from the file
    flags = ckptlint("check", "clippo.npz", "--ignore", "CK107", "--format", "json", cwd=sub)
    assert "CK201" in codes(flags)["clippo.npz"]  # --ignore replaces the file's ignore
    warn = ckptlint("check", "clippo.npz", "--select", "CK201", cwd=sub)
    assert warn.returncode == 1  # fail-on = "warning" from the file, CK201 is a warning
    never = ckptlint("check", "clippo.npz", "--select", "CK201", "--fail-on", "never", cwd=sub)
    assert never.returncode == 0
    isolated = ckptlint("check", "clippo.npz", "--isolated", "--format", "json", cwd=sub)
    assert "CK201" in codes(isolated)["clippo.npz"]


def test_ckptlint_toml_wins_over_pyproject_and_per_path(project: Path) -> None:
    (project / "pyproject.toml").write_text('[tool.ckptlint]\nignore = ["CK201"]\n')
    (project / "ckptlint.toml").write_text(
        'format = "json"\narch = "clippo"\n\n[per-path]\n"models/vit/*.npz" = { arch = "bv-vit", ignore = ["CK107"] }\n'
    )
    proc = ckptlint("check", "models", cwd=project)
    assert arches(proc) == {"models/clippo.npz": "clippo", "models/vit/bare.npz": "bv-vit"}
    got = codes(proc)
    assert "CK201" in got["models/clippo.npz"]  # pyproject is not read when ckptlint.toml is present
    assert "CK107" not in got["models/vit/bare.npz"]
    flag = ckptlint("check", "models", "--arch", "bv-vit", cwd=project)
    assert set(arches(flag).values()) == {"bv-vit"}  # --arch beats per-path and file settings


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[tool.ckptlint]\nselct = ['CK1']\n", "unknown key 'selct'"),
        ("[tool.ckptlint]\nignore = ['CK999']\n", "unknown rule code 'CK999'"),
        ("[tool.ckptlint]\nfail-on = 'sometimes'\n", "fail-on must be one of"),
        ("[tool.ckptlint]\nformat = 'xml'\n", "format must be one of"),
        ("[tool.ckptlint]\narch = 'resnet'\n", "unknown architecture 'resnet'"),
        ("[tool.ckptlint.per-path]\n'*.npz' = { arch = 'clippo', colour = 'red' }\n", "unknown key 'colour'"),
        ("[tool.ckptlint.per-path]\n'*.npz' = { ignore = ['XX1'] }\n", "unknown rule code 'XX1'"),
        ("[tool.ckptlint\n", "invalid TOML"),
    ],
)
def test_config_mistakes_are_usage_errors(project: Path, toml: str, needle: str) -> None:
    (project / "pyproject.toml").write_text(toml)
    line = one_error_line(ckptlint("check", "models/clippo.npz", cwd=project))
    assert needle in line and "pyproject.toml" in line
    with pytest.raises(UsageError):
        load_config(project / "pyproject.toml")


def test_unknown_codes_on_the_command_line(project: Path) -> None:
    assert "unknown rule code 'CK42'" in one_error_line(
        ckptlint("check", "models/clippo.npz", "--select", "CK42", cwd=project)
    )
    assert "unknown architecture" in one_error_line(
        ckptlint("check", "models/clippo.npz", "--arch", "nope", cwd=project)
    )


def test_prefix_codes_are_accepted(project: Path) -> None:
    proc = ckptlint(
        "check", "models/clippo.npz", "--select", "CK2", "--format", "json", "--isolated", cwd=project
    )
    assert proc.returncode == 0, proc.stderr
    assert all(c.startswith("CK2") for c in codes(proc)["models/clippo.npz"])


def test_find_config_walks_up_and_ignores_unrelated_pyproject(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text("[tool.ckptlint]\nfail-on = 'info'\n")
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    (tmp_path / "a" / "pyproject.toml").write_text("[project]\nname = 'unrelated'\n")
    assert find_config(inner) == tmp_path / "pyproject.toml"
    assert load_config(find_config(inner)).fail_on == "info"


def test_a_pyproject_that_is_not_ours_is_not_parsed(tmp_path: Path) -> None:
    # broken TOML that never names ckptlint: not our settings file, so not our error (nor parsed at all)
    (tmp_path / "pyproject.toml").write_text("[project\nname = 'broken'\n")
    assert find_config(tmp_path) is None
    # a key spelt with escapes is still found, as tomllib reads it
    (tmp_path / "pyproject.toml").write_text('[tool."\\u0063kptlint"]\nfail-on = "info"\n')
    assert find_config(tmp_path) == tmp_path / "pyproject.toml"
    assert load_config(find_config(tmp_path)).fail_on == "info"


@pytest.mark.parametrize(
    ("pattern", "yes", "no"),
    [
        ("*.npz", ["a.npz", "x/y/a.npz"], ["a.npzz", "a.pt"]),
        ("models/*.pt", ["models/a.pt"], ["models/x/a.pt", "other/models/a.pt"]),
        ("models/**/*.pt", ["models/a.pt", "models/x/y/a.pt"], ["a.pt"]),
        ("hf_clip_tiny", ["hf/hf_clip_tiny", "hf_clip_tiny/model.safetensors"], ["hf_clip_tiny2"]),
    ],
)
def test_glob_semantics(pattern: str, yes: list[str], no: list[str]) -> None:
    rx = glob_to_regex(pattern)
    for p in yes:
        assert rx.fullmatch(p), (pattern, p)
    for p in no:
        assert not rx.fullmatch(p), (pattern, p)
