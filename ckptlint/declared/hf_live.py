"""Tier (b): any transformers model class, built by transformers itself on the meta device (to be written)."""

from __future__ import annotations

from typing import Any


def available() -> bool:
    return False


def base_class(model_type: str) -> str | None:
    return None


def expected(ckpt: Any, file: str, content: dict[str, Any], name: str, source: str) -> Any:
    raise NotImplementedError


def rebuild(ckpt: Any, expected: Any, overrides: dict[str, Any]) -> Any:
    return None
