"""What a user's terminal shows: every bundled story run through a real pseudo-terminal, colour on, must read
exactly like the same run with ``NO_COLOR`` once the colour codes are removed."""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from cli_support import ckptlint_in_pty

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "sample_reports"))
from generate import STORIES  # noqa: E402

# CSI sequences (colour, cursor movement a progress bar might use) and OSC sequences
ESCAPES = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07]*\x07")


def _screen(*args: str, colour: bool) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"}
    env.update(TERM="xterm-256color", COLUMNS="120")
    if not colour:
        env["NO_COLOR"] = "1"
    code, text = ckptlint_in_pty(*args, cwd=ROOT, env=env)
    return code, text.replace("\r\n", "\n")


@pytest.mark.parametrize(("name", "args"), [(name, args) for name, args, _ in STORIES], ids=lambda v: str(v))
def test_colour_changes_nothing_but_colour(name: str, args: list[str]) -> None:
    code, coloured = _screen("check", *args, colour=True)
    plain_code, plain = _screen("check", *args, colour=False)
    assert code == plain_code
    assert ESCAPES.search(coloured), "no colour on a terminal"
    assert not ESCAPES.search(plain), "colour despite NO_COLOR"
    assert ESCAPES.sub("", coloured) == plain
    # every finding line starts with its code and a clean severity label
    for line in plain.splitlines():
        if re.match(r"CK\d{3} ", line):
            assert re.match(r"CK\d{3} (error|warning|info) +\S", line), line
