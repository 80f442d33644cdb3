"""Structural numbers read from shapes (the family files' ``[[probes]]``): patch, width, depth, heads… per tower.

    structure(shapes, framework) -> Structure    what the probes read, per tower, and from which key
    posemb_probe(key, framework)                 the probe of a position embedding (CK110's resampling advice)
    grid_of(rows) / describe(values)             a position embedding's grid; ``patch 16, width 768, …``

A 2-d tensor whose already-read dimension (the width) sits on the other axis is read transposed: a projection
stored in the other convention is CK109's, not another variant. Re-exported by ``ckptlint.archs.detect``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from ckptlint.archs import registry as reg
from ckptlint.archs.pattern import pattern
from ckptlint.record import field, record

Shape = tuple[int, ...]
# fields that define a variant (CK112); image size and context length are CK110's
VARIANT_FIELDS = ("patch", "width", "depth", "heads", "mlp", "vocab", "embed_dim")


@record
class Structure:
    """What the probes found, per tower: ``{"vision": {"patch": 16, "width": 768, "depth": 12, …}}``."""

    towers: dict[str, dict[str, int]] = field(default_factory=dict)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # tower -> field -> key that gave it

    def get(self, tower: str, name: str) -> int | None:
        return self.towers.get(tower, {}).get(name)


def grid_of(rows: int) -> tuple[int, int] | None:
    """``rows = grid² + prefix_tokens`` with 0 or 1 prefix token: ``(grid, prefix_tokens)``, else None."""
    for prefix in (0, 1):
        g = math.isqrt(max(rows - prefix, 0))
        if g > 0 and g * g == rows - prefix:
            return g, prefix
    return None


def _probe_match(texts: list[str], key: str) -> dict[str, str] | None:
    for text in texts:
        found = pattern(text).match(key)
        if found is not None:
            return found
    return None


def _oriented(dims: list[str], shape: Shape, known: Mapping[str, int]) -> list[str]:
    """A 2-d probe's dims, swapped when the tensor is stored transposed: a dimension already read from another
    tensor (width from the patch embedding) sits on the other axis, and the probe's own axis for it does not fit."""
    if len(dims) != 2 or "_" in dims:
        return dims
    for i, name in enumerate(dims):
        value = known.get(name)
        if value is not None and shape[i] != value and shape[1 - i] == value:
            return [dims[1], dims[0]]
    return dims


def structure(shapes: Mapping[str, Shape], framework: str | None) -> Structure:
    """Probe ``shapes`` (keys in ``framework``'s names) for the numbers that define the architecture."""
    out = Structure()
    if framework not in reg.framework_names():
        return out
    unprefixed: str | None = None
    depth: dict[str, int] = {}
    for probe in reg.shape_probes(framework):
        tower = probe.tower
        if tower == "unprefixed":
            markers = reg.key_classes(framework)["vision_markers"]
            unprefixed = unprefixed or ("vision" if any(markers.matches(k) for k in shapes) else "text")
            tower = unprefixed
        for key, shape in shapes.items():
            m = _probe_match(probe.key, key)
            if m is None:
                continue
            if "i" in m:
                depth[tower] = max(depth.get(tower, 0), int(m["i"]) + 1)
                out.keys.setdefault(tower, {}).setdefault("depth", key)
                continue
            if len(probe.dims) != len(shape):
                continue
            dims = _oriented(probe.dims, shape, out.towers.get(tower, {}))
            for name, size in zip(dims, shape, strict=True):
                if name == "_":
                    continue
                if name == "pos_rows" and tower == "text":
                    name = "context_length"
                out.towers.setdefault(tower, {}).setdefault(name, int(size))
                out.keys.setdefault(tower, {}).setdefault(name, key)
    for tower, d in depth.items():
        out.towers.setdefault(tower, {}).setdefault("depth", d)
    vision = out.towers.get("vision", {})
    rows, patch = vision.get("pos_rows"), vision.get("patch")
    if rows is not None:
        g = grid_of(rows)
        if g is not None:
            vision["grid"], vision["prefix_tokens"] = g
            if patch:
                vision["image_size"] = g[0] * patch
    return out


def posemb_probe(key: str, framework: str | None) -> dict[str, Any] | None:
    """The shape probe of a position-embedding key (one with a ``resample`` hint), if ``key`` is one."""
    if framework not in reg.framework_names():
        return None
    for probe in reg.shape_probes(framework):
        if probe.resample is not None and _probe_match(probe.key, key) is not None:
            return probe.to_dict(exclude_none=True)
    return None


def describe(values: Mapping[str, int]) -> str:
    """``{"width": 768, "depth": 12, "patch": 16}`` -> ``"patch 16, width 768, depth 12"``."""
    order = ("patch", "width", "depth", "heads", "mlp", "vocab", "embed_dim", "image_size", "context_length")
    return ", ".join(f"{k.replace('_', ' ')} {values[k]}" for k in order if k in values)
