"""Key views: a checkpoint's or an expectation's keys as the expected model's loader looks at them.

For big_vision/flax expectations that is the ``params`` collection (``params/`` -> root; bare files as they are;
very old ``opt/target/``), like big_vision's ``load_params``; for torch expectations the file's own keys (nested
dicts joined with ``.``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TypeVar

from ckptlint.checkpoint import Checkpoint, TensorInfo
from ckptlint.expected import Expected, ExpectedTensor

FLAX_FRAMEWORKS = frozenset({"big_vision", "flax", "jax"})
PARAMS_ROOTS = ("params/", "opt/target/")
T = TypeVar("T")


def params_view(tensors: Mapping[str, T]) -> tuple[dict[str, T], str]:
    """big_vision's ``load_params``: ``params/`` if present, else very old ``opt/target/``, else the whole tree.

    Returns the view (keys relative to the root) and the root that was taken off.
    """
    for root in PARAMS_ROOTS:
        if any(k.startswith(root) for k in tensors):
            return {k[len(root) :]: v for k, v in tensors.items() if k.startswith(root)}, root
    return dict(tensors), ""


def is_flax(expected: Expected | None, ckpt: Checkpoint) -> bool:
    """Whether keys are flax paths (``/``-joined, big_vision ``params`` collection)."""
    if expected is not None:
        return expected.key_sep == "/" or expected.framework in FLAX_FRAMEWORKS
    return ckpt.key_sep == "/"


def weight_view(ckpt: Checkpoint, flax: bool) -> tuple[dict[str, TensorInfo], str]:
    """The checkpoint's keys as the expected model's loader sees them, and the prefix that was taken off."""
    if flax and ckpt.key_sep == "/":
        return params_view(ckpt.tensors)
    return dict(ckpt.tensors), ""


def expected_view(expected: Expected) -> dict[str, ExpectedTensor]:
    """Expected keys relative to the params collection (a spec taken from a full big_vision file has ``params/``)."""
    if expected.key_sep == "/":
        return params_view(expected.tensors)[0]
    return dict(expected.tensors)
