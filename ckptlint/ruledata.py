"""Where the declarative rule knowledge (``rules/*.toml``) lives, installed or from a source tree."""

from __future__ import annotations

import tomllib
from functools import cache
from pathlib import Path
from typing import Any

_PKG = Path(__file__).resolve().parent


@cache
def rules_dir() -> Path:
    """``ckptlint/_rules_data`` in a wheel; the repository's top-level ``rules/`` in a source checkout."""
    for candidate in (_PKG / "_rules_data", _PKG.parent / "rules"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("ckptlint rule data not found (neither ckptlint/_rules_data nor rules/)")


@cache
def load_toml(relpath: str) -> dict[str, Any]:
    """Parse ``rules/<relpath>`` (cached; callers must not mutate the result)."""
    with (rules_dir() / relpath).open("rb") as fh:
        return tomllib.load(fh)
