"""sample_reports/ and README's generated sections must match what the code produces now."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_sample_reports_and_readme_tables_are_current() -> None:
    proc = subprocess.run(
        [sys.executable, str(ROOT / "sample_reports" / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_sample_reports_hold_no_machine_paths() -> None:
    for path in (ROOT / "sample_reports").iterdir():
        assert str(ROOT) not in path.read_text(), f"{path.name} names this machine's checkout"
