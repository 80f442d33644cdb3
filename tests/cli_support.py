"""Run the real ``ckptlint`` CLI in a subprocess, the way users and CI do."""

from __future__ import annotations

import os
import pty
import subprocess
import sys
from pathlib import Path

import contract

# The architecture names docs/CONTRACT.md requires (`ckptlint archs` may list more).
CONTRACT_ARCHS = contract.arch_names()


def ckptlint(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``python -m ckptlint ARGS`` with colour off unless ``env`` says otherwise."""
    full_env = {**os.environ, "NO_COLOR": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "ckptlint", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=full_env,
        timeout=300,
    )


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    """Assert the contract for exit 2: exactly one ``ckptlint: error:`` line on stderr, no traceback."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ckptlint: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def ckptlint_in_pty(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[int, str]:
    """Run the CLI with a terminal as stdout/stderr (colour, progress bars): (exit code, what the screen got)."""
    pid, fd = pty.fork()
    if pid == 0:  # child
        if cwd is not None:
            os.chdir(cwd)
        os.execve(sys.executable, [sys.executable, "-m", "ckptlint", *args], env or dict(os.environ))
    chunks = []
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode("utf-8", "replace")
