"""Shared test fixtures: where the real corpus lives (tests/data/, inside the repository), and importing open_clip safely."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import tvshim  # noqa: F401  (before any test imports open_clip/timm: see tests/tvshim.py)

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data"
CORPUS = Path(os.environ.get("CKPTLINT_CORPUS", DATA / "corpus"))
REFERENCE = DATA / "reference"


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The read-only corpus of tiny real checkpoints written by the real libraries."""
    if not CORPUS.is_dir():
        pytest.fail(f"corpus not found at {CORPUS}; set CKPTLINT_CORPUS")
    return CORPUS


@pytest.fixture(scope="session")
def reference() -> Path:
    """Facts verified by running the real libraries (param trees, loader errors)."""
    return REFERENCE
