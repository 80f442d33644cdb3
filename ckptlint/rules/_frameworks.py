"""Framework knowledge from ``rules/frameworks.toml`` and ``rules/wrappers.toml``: which framework a set of
keys is named in, which tower a key belongs to, and how to convert between layouts."""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from typing import Any

from ckptlint.ruledata import load_toml
from ckptlint.rules._keys import matches

FRAMEWORKS = ("big_vision", "open_clip", "hf", "timm")

# Names other parts of ckptlint (Expected.framework, detect_layout) may use for the same layouts.
ALIASES = {
    "big_vision": "big_vision",
    "bv": "big_vision",
    "open_clip": "open_clip",
    "openclip": "open_clip",
    "openai": "open_clip",
    "openai_clip": "open_clip",
    "openai-clip": "open_clip",
    "hf": "hf",
    "transformers": "hf",
    "huggingface": "hf",
    "timm": "timm",
}

# Contract architecture names -> framework (used when an Expected names only a generic framework).
ARCH_FRAMEWORK = {
    "clippo": "big_vision",
    "bv-vit": "big_vision",
    "bv-siglip": "big_vision",
    "open_clip": "open_clip",
    "hf-clip": "hf",
    "hf-clip-vision": "hf",
    "hf-siglip": "hf",
    "hf-siglip-vision": "hf",
    "timm-vit": "timm",
}


def normalize(name: str | None) -> str | None:
    """A framework or layout name as one of ``FRAMEWORKS``, or None (generic torch/flax, unknown)."""
    if not name:
        return None
    name = name.strip().lower()
    if name in ALIASES:
        return ALIASES[name]
    for alias, fw in ALIASES.items():  # e.g. "open_clip-dir", "hf-dir", "big_vision-npz"
        if name.startswith(alias + "-") or name.startswith(alias + "_"):
            return fw
    return None


@cache
def table() -> dict[str, Any]:
    return load_toml("frameworks.toml")


def info(framework: str) -> dict[str, Any]:
    return table()["frameworks"][framework]


def title(framework: str | None) -> str:
    return info(framework)["title"] if framework in FRAMEWORKS else (framework or "unknown")


def conversion(src: str, dst: str) -> dict[str, str] | None:
    """``{"fix", "note"}`` for getting a ``src``-layout checkpoint into ``dst``, if known."""
    return table().get("conversions", {}).get(src, {}).get(dst)


def hosts(dst: str, src: str) -> bool:
    """Whether framework ``dst`` loads ``src``-layout weights natively as one of its towers."""
    return src in info(dst).get("hosts", [])


@cache
def wrappers() -> list[dict[str, Any]]:
    return list(load_toml("wrappers.toml")["wrapper"])


@cache
def _strip_prefixes() -> tuple[str, ...]:
    generic = {w["prefix"] for w in wrappers() if w["side"] == "file" and w["framework"] == "any"}
    return (*sorted(generic, key=len, reverse=True), "params/", "opt/target/")


def unwrap(key: str) -> str:
    """``key`` without the generic wrapper prefixes (``module.``, ``_orig_mod.``, ``state_dict.``,
    ``params/``…)."""
    changed = True
    while changed:
        changed = False
        for p in _strip_prefixes():
            if key.startswith(p) and len(key) > len(p):
                key = key[len(p) :]
                changed = True
    return key


def classify(keys: Iterable[str]) -> str | None:
    """The framework whose layout most of ``keys`` follow (by signature hits), or None."""
    scores = dict.fromkeys(FRAMEWORKS, 0)
    for key in keys:
        k = unwrap(key)
        for fw in FRAMEWORKS:
            if matches(k, info(fw)["signatures"]):
                scores[fw] += 1
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    if ranked[0][1] == 0 or ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def towers_present(keys: Iterable[str]) -> set[str]:
    """Towers ("vision", "text") that ``keys`` hold in any framework's layout (by their markers)."""
    found: set[str] = set()
    for key in keys:
        k = unwrap(key)
        for fw in FRAMEWORKS:
            fwi = info(fw)
            if "vision" not in found and matches(k, fwi.get("vision_markers", [])):
                found.add("vision")
            if "text" not in found and matches(k, fwi.get("text_markers", [])):
                found.add("text")
        if len(found) == 2:
            break
    return found


def tower_of(key: str, framework: str | None, present: set[str]) -> str | None:
    """``"vision"``, ``"text"`` or ``"joint"`` for ``key`` named in ``framework``; None when unknown.

    ``present`` are the towers of the key set ``key`` belongs to (HF 5.x one-tower
    models have unprefixed keys).
    """
    if framework not in FRAMEWORKS:
        return None
    fwi = info(framework)
    k = unwrap(key)
    if matches(k, fwi.get("joint", [])):
        return "joint"
    if matches(k, fwi.get("text", [])):
        return "text"
    if matches(k, fwi.get("unprefixed", [])):
        return next(iter(present)) if len(present) == 1 else None
    if matches(k, fwi.get("vision", [])):
        return "vision"
    return None


def towers_by_prefix(key: str, towers: dict[str, list[str]]) -> str | None:
    """The tower of ``key`` according to ``Expected.towers`` (tower -> key prefixes), or None."""
    for name, prefixes in towers.items():
        for p in prefixes:
            if key == p or key.startswith(p) or key == p.rstrip("./"):
                return name
    return None
