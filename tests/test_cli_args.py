"""The command line's grammar as users type it: every documented command and option is accepted, options go
anywhere among the positional arguments, bad values are one-line usage errors naming the option (exit 2)."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from cli_support import ckptlint_in_pty

from ckptlint.cli import main
from ckptlint.cli_args import COMMANDS, command_parser, parse
from ckptlint.errors import UsageError

ROOT = Path(__file__).resolve().parent.parent


def _synopsis(doc: Path, heading: str) -> list[tuple[str, list[str]]]:
    """(command, options: ``--opt`` or ``--opt a|b|c``) for each ``ckptlint COMMAND …`` line of the first code block under ``heading``."""
    text = doc.read_text(encoding="utf-8")
    block = text[text.index(heading) :].split("```")[1]
    found: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        for part in line.split("|   "):  # `ckptlint convert IN OUT …   |   ckptlint convert --list`
            match = re.match(r"\s*ckptlint (\w+)", part)
            if match:
                found.append((match.group(1), []))
            if found and (match or part.startswith(" ")):
                found[-1][1].extend(re.findall(r"--[a-z][a-z-]*(?: [a-z_]+(?:\|[a-z_]+)+)?", part))
    return found


@pytest.mark.parametrize(
    ("doc", "heading"), [("README.md", "## Usage"), ("docs/CONTRACT.md", "## Command line")]
)
def test_documented_synopsis_is_the_parsers(doc: str, heading: str) -> None:
    synopsis = _synopsis(ROOT / doc, heading)
    assert {cmd for cmd, _ in synopsis} >= {"check", "dump", "diff", "explain", "rules", "archs"}
    for cmd, options in synopsis:
        assert cmd in COMMANDS, cmd
        usage = command_parser(cmd).format_help()
        for option in options:
            name, _, choices = option.partition(" ")
            assert re.search(rf"{name}\b", usage), (cmd, option)
            if choices:  # every documented choice is accepted (CONTRACT may list fewer than there are)
                accepted = re.search(rf"{name} {{([a-z_,]+)}}", usage)
                assert accepted and set(choices.split("|")) <= set(accepted.group(1).split(",")), (
                    cmd,
                    option,
                )


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_every_command_has_help(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    for flag in ("-h", "--help"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, flag] if command else [flag])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith(f"usage: ckptlint {command or ''}".rstrip())
        if command is None:
            assert all(re.search(rf"^  {name} ", out, re.M) for name in COMMANDS)


def test_options_anywhere_among_positionals(corpus: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = str(corpus / "big_vision" / "tiny_clippo.npz")
    b = str(corpus / "timm" / "timm_vit_clip_tiny.safetensors")
    with pytest.raises(SystemExit) as exit_info:
        main(["check", "--isolated", a, "--format", "json", b, "--fail-on=never", "-v"])
    assert exit_info.value.code == 0
    assert [f["path"] for f in json.loads(capsys.readouterr().out)["files"]] == [a, b]
    args = parse(["--debug", "check", a, "-j", "2", b, "--select", "CK1", "--timeout", "2.5"])
    assert (args.command, args.paths, args.jobs, args.select, args.timeout) == (
        "check",
        [a, b],
        2,
        "CK1",
        2.5,
    )
    assert args.debug and args.progress is None and args.engine == "local" and args.fmt is None
    assert parse(["check", a, "--progress"]).progress is True
    assert parse(["check", "--no-progress", a]).progress is False
    sets = ["convert", a, "out", "--set", "act=gelu", "--to", "open_clip", "--set", "heads=2"]
    assert parse(sets).sets == ["act=gelu", "heads=2"]
    assert parse(["dump", a]).fmt == "text" and parse(["convert", "--list"]).src is None
    dashed = parse(["check", "--arch", "clippo", "--", "-odd.npz", "--select"])  # after `--`: paths only
    assert dashed.paths == ["-odd.npz", "--select"] and dashed.arch == "clippo" and dashed.select is None
    # paths and options before `--` mix as anywhere else (click accepted these)
    mixed = parse(["check", a, "--arch", "timm-vit", "-v", "--", "-odd.npz"])
    assert mixed.paths == [a, "-odd.npz"] and mixed.arch == "timm-vit" and mixed.verbose
    assert parse(["--", "check", a]).paths == [a] and parse(["dump", "--", "-odd.npz"]).path == "-odd.npz"


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        ([], ["missing command"]),
        (["nosuch"], ["'nosuch'"]),
        (["--bogus", "rules"], ["--bogus"]),
        (["check"], ["check", "PATH"]),
        (["check", "A", "--format", "xml"], ["--format", "'xml'", "jsonl"]),
        (["check", "A", "--fail-on", "warn"], ["--fail-on", "'warn'"]),
        (["check", "A", "--jobs", "0"], ["--jobs", "0"]),
        (["check", "A", "-j", "two"], ["--jobs", "'two'"]),
        (["check", "A", "--timeout", "0"], ["--timeout", "0"]),
        (["check", "A", "--timeout", "inf"], ["--timeout", "inf"]),
        (["check", "A", "--engine", "spark"], ["--engine", "'spark'"]),
        (["check", "A", "--format"], ["--format"]),
        (["check", "A", "--out", "x"], ["--out"]),  # no abbreviations: a typo is never a guess
        (["dump", "A", "--depth", "0"], ["--depth"]),
        (["dump", "A", "B"], ["B"]),
        (["diff", "A"], ["B"]),
        (["strip", "A", "B", "--to", "zip"], ["--to", "'zip'"]),
        (["schema", "--for", "dump"], ["--for", "'dump'"]),
        (["rules", "--format", "sarif"], ["--format", "'sarif'"]),
    ],
)
def test_usage_errors_are_one_line_naming_the_option(
    argv: list[str], named: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert captured.out == "" and len(lines) == 1 and lines[0].startswith("ckptlint: error: "), captured.err
    for word in named:
        assert word in lines[0], (word, lines[0])


def test_debug_before_or_after_the_command_shows_the_error() -> None:
    for argv in (["--debug", "explain", "CK999"], ["explain", "CK999", "--debug"]):
        with pytest.raises(UsageError, match="CK999"):
            main(argv)


def test_no_progress_wins_on_a_terminal(corpus: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    code, screen = ckptlint_in_pty("check", str(corpus), "--no-progress", "--fail-on", "never", env=env)
    assert code == 0 and "findings" in screen and "checking" not in screen


def test_closed_stdout_ends_quietly() -> None:
    """``ckptlint rules | head -1``: the reader went away before ckptlint wrote; no traceback, exit 0."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ckptlint", "rules"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=60) == 0 and err == b""


def test_started_with_stdout_closed_ends_quietly() -> None:
    """``ckptlint rules >&-``: there is no stdout at all; no traceback, exit 0 (as click did)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        ["bash", "-c", f"{shlex.quote(sys.executable)} -m ckptlint rules >&-"],
        capture_output=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0 and proc.stderr == b""
