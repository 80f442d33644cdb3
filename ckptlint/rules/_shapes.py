"""Structural numbers read from shapes (``rules/probes.toml``): patch, width, depth, heads, sizes…

The same probes run on the expected tree and on the checkpoint, so both sides are described in the same terms.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ckptlint.ruledata import load_toml
from ckptlint.rules import _frameworks as fw
from ckptlint.rules._keys import matches, regex

Shape = tuple[int, ...]

# fields that define a variant (CK112); image size and context length are CK110's
VARIANT_FIELDS = ("patch", "width", "depth", "heads", "mlp", "vocab", "embed_dim")


@cache
def probes() -> list[dict[str, Any]]:
    return list(load_toml("probes.toml")["probe"])


@dataclass
class Structure:
    """What the probes found, per tower: ``{"vision": {"patch": 16, "width": 768, "depth": 12, …}}``."""

    towers: dict[str, dict[str, int]] = field(default_factory=dict)
    keys: dict[str, dict[str, str]] = field(default_factory=dict)  # tower -> field -> key that gave it

    def get(self, tower: str, name: str) -> int | None:
        return self.towers.get(tower, {}).get(name)


def _unprefixed_tower(keys: Mapping[str, Shape], framework: str) -> str:
    info = fw.info(framework)
    if any(matches(k, info.get("vision_markers", [])) for k in keys):
        return "vision"
    return "text"


def grid_of(rows: int) -> tuple[int, int] | None:
    """``rows = grid² + prefix_tokens`` with 0 or 1 prefix token: ``(grid, prefix_tokens)``, else None."""
    for prefix in (0, 1):
        g = math.isqrt(max(rows - prefix, 0))
        if g > 0 and g * g == rows - prefix:
            return g, prefix
    return None


def structure(shapes: Mapping[str, Shape], framework: str | None) -> Structure:
    """Probe ``shapes`` (keys in ``framework``'s names) for the numbers that define the architecture."""
    out = Structure()
    if framework not in fw.FRAMEWORKS:
        return out
    unprefixed: str | None = None
    depth: dict[str, int] = {}
    for probe in probes():
        if probe["framework"] != framework:
            continue
        tower = probe["tower"]
        if tower == "unprefixed":
            unprefixed = unprefixed or _unprefixed_tower(shapes, framework)
            tower = unprefixed
        pattern = regex(probe["key"])
        dims = probe["dims"]
        for key, shape in shapes.items():
            m = pattern.fullmatch(key)
            if m is None:
                continue
            if "i" in pattern.groupindex:
                depth[tower] = max(depth.get(tower, 0), int(m.group("i")) + 1)
                out.keys.setdefault(tower, {}).setdefault("depth", key)
                continue
            if len(dims) != len(shape):
                continue
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
    """The probe entry of a position-embedding key (one with a ``resample`` hint), if ``key`` is one."""
    for probe in probes():
        if probe["framework"] == framework and "resample" in probe and regex(probe["key"]).fullmatch(key):
            return probe
    return None


def describe(values: Mapping[str, int]) -> str:
    """``{"width": 768, "depth": 12, "patch": 16}`` -> ``"patch 16, width 768, depth 12"``."""
    order = ("patch", "width", "depth", "heads", "mlp", "vocab", "embed_dim", "image_size", "context_length")
    return ", ".join(f"{k.replace('_', ' ')} {values[k]}" for k in order if k in values)
