"""ckptlint: a checkpoint compatibility linter and diagnostics tool for ML weights.

The package import is kept light: the CLI's start-up path must not pull numpy, torch or jax.
Public API functions import what they need when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint


def dump(path: str) -> Checkpoint:
    """Read the structure of the checkpoint at ``path`` (header-only, never executes it)."""
    from ckptlint.readers import read_checkpoint

    return read_checkpoint(path)


def __getattr__(name: str) -> Any:  # lazy public API added by later modules
    if name == "check":
        from ckptlint.api import check

        return check
    raise AttributeError(name)
