"""Which framework's layout a checkpoint is in, and under which prefix (root) its model keys live.

The signatures are data (``rules/layouts.toml``). A layout's anchor keys are searched by suffix so that any wrapper
(``module.``, ``_orig_mod.``, ``state_dict.``, ``model.``, ``params/``...) is found as the root. Candidates are
ranked by how many keys under their root the layout accounts for, then by the share of marker keys present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ckptlint.ruledata import load_toml

if TYPE_CHECKING:
    from ckptlint.checkpoint import Checkpoint

MAX_EVIDENCE = 8


@dataclass(frozen=True)
class LayoutGuess:
    """The detected layout of a checkpoint (a plain dataclass: built on every dump, it must not cost a schema build)."""

    name: str = "unknown"  # big_vision | open_clip | openai_clip | open_clip_custom_text | hf | hf_vision | timm | unknown
    confidence: float = 0.0  # 0..1
    evidence: list[str] = field(default_factory=list)  # marker keys found (the file's own full keys)
    root: str = ""  # prefix under which the model's keys live in this file: "", "params/", "module.", ...
    towers_present: list[str] = field(default_factory=list)  # "vision", "text"
    framework: str = ""  # big_vision | open_clip | hf | timm
    arch: str | None = (
        None  # the ckptlint architecture name this layout suggests (clippo, open_clip, hf-clip...)
    )


@dataclass
class _Candidate:
    layout: dict[str, Any]
    index: int
    root: str
    covered: int
    under: int
    markers: float
    evidence: list[str]

    def rank(self) -> tuple[float, ...]:
        return (self.covered, self.markers, -len(self.root), -self.index)


def detect_layout(ckpt: Checkpoint) -> LayoutGuess:
    """Best-matching layout of ``ckpt`` (``name="unknown"`` when no signature fits)."""
    keys = list(ckpt.tensors)
    if not keys:
        return LayoutGuess()
    keyset = set(keys)
    best: _Candidate | None = None
    for index, layout in enumerate(load_toml("layouts.toml")["layouts"]):
        for root in _roots(keys, layout["anchors"]):
            cand = _score(layout, index, root, keys, keyset)
            if cand is not None and (best is None or cand.rank() > best.rank()):
                best = cand
    if best is None:
        return LayoutGuess()
    layout, root = best.layout, best.root
    towers = [
        t for t, pats in layout.get("towers", {}).items() if any(_found(root, p, keyset, keys) for p in pats)
    ]
    confidence = 0.5 * best.markers + 0.5 * (best.covered / best.under if best.under else 0.0)
    return LayoutGuess(
        name=layout["name"],
        confidence=round(confidence, 3),
        evidence=best.evidence[:MAX_EVIDENCE],
        root=root,
        towers_present=towers,
        framework=layout.get("framework", ""),
        arch=_arch_hint(layout, root, keyset, keys, ckpt),
    )


def _roots(keys: list[str], anchors: list[str]) -> list[str]:
    roots: dict[str, None] = {}
    for key in keys:
        for anchor in anchors:
            if key.endswith(anchor):
                root = key[: len(key) - len(anchor)]
                if not root or root[-1] in "./":
                    roots[root] = None
    return list(roots)


def _score(
    layout: dict[str, Any], index: int, root: str, keys: list[str], keyset: set[str]
) -> _Candidate | None:
    for group in layout.get("require", []):
        if not any(_found(root, p, keyset, keys) for p in group):
            return None
    prefixes = layout["prefixes"]
    exact = {p for p in prefixes if not p.endswith((".", "/"))}
    nested = tuple(p for p in prefixes if p.endswith((".", "/")))
    covered = under = 0
    n = len(root)
    for key in keys:
        if key.startswith(root):
            under += 1
            rel = key[n:]
            if rel in exact or rel.startswith(nested):
                covered += 1
    markers = layout.get("markers", [])
    evidence = []
    hits = 0
    for group in markers:
        for pattern in group:
            key = _found(root, pattern, keyset, keys)
            if key:
                hits += 1
                evidence.append(key)
                break
    return _Candidate(layout, index, root, covered, under, hits / len(markers) if markers else 0.0, evidence)


def _found(root: str, pattern: str, keyset: set[str], keys: list[str]) -> str | None:
    """The checkpoint key matching ``pattern`` under ``root`` (``{n}`` = block 0; ``**`` = anything below)."""
    if pattern.endswith("**"):
        prefix = root + pattern[:-2]
        return next((k for k in keys if k.startswith(prefix)), None)
    key = root + pattern.replace("{n}", "0")
    return key if key in keyset else None


def _arch_hint(
    layout: dict[str, Any], root: str, keyset: set[str], keys: list[str], ckpt: Checkpoint
) -> str | None:
    for rule in layout.get("archs", []):
        if "config" in rule:
            sidecar = ckpt.sidecar("hf-config")
            content = sidecar.content if sidecar is not None else None
            if not isinstance(content, dict) or content.get("model_type") not in rule["config"]:
                continue
        if not all(_found(root, p, keyset, keys) for p in rule.get("all", [])):
            continue
        if rule.get("any") and not any(_found(root, p, keyset, keys) for p in rule["any"]):
            continue
        if any(_found(root, p, keyset, keys) for p in rule.get("none", [])):
            continue
        return rule["arch"]
    return None
