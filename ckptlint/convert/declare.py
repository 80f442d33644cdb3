"""Declarations (``[declarations.ARCH]`` of the family files): read what an input's config files say about the
parameters its weights cannot tell, and write the target's config files from the resolved parameters."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from typing import Any

from ckptlint.archs.expr import SpecError, evaluate
from ckptlint.archs.schema import Declaration, DeclFile
from ckptlint.checkpoint import Checkpoint

_MISSING = object()
# `null` in a field's expression: written as JSON null (a library default that must not apply)
NULL = object()


def config_getter(doc: dict[str, Any]) -> Callable[..., Any]:
    """``cfg(path, default=None)``: the value at a dotted path of ``doc`` (``vision_config.hidden_act``)."""

    def cfg(path: str, default: Any = None) -> Any:
        node: Any = doc
        for part in str(path).split("."):
            if not isinstance(node, dict) or part not in node:
                return default
            node = node[part]
        return node

    return cfg


def read_declared(decl: Declaration | None, ckpt: Checkpoint) -> dict[str, tuple[Any, str]]:
    """``param -> (value, file name)`` for every parameter the input's declaration files give."""
    out: dict[str, tuple[Any, str]] = {}
    if decl is None:
        return out
    for f in decl.files:
        sidecar = next((s for s in ckpt.sidecars if s.name == f.name and s.kind == f.kind), None)
        if sidecar is None or not isinstance(sidecar.content, dict):
            continue
        cfg = config_getter(sidecar.content)
        reads: dict[str, Any] = {}
        for path, expr in f.fields.items():  # a field that is a bare parameter reads straight back
            if isinstance(expr, str) and expr.isidentifier():
                value = cfg(path, _MISSING)
                if value is not _MISSING and value is not None:
                    reads[expr] = value
        for name, expr in f.read.items():
            try:
                value = evaluate(expr, {"cfg": cfg})
            except SpecError:
                continue
            if value is not None:
                reads[name] = value
        for name, value in reads.items():
            out.setdefault(name, (value, f.name))
    return out


def _put(doc: dict[str, Any], path: str, value: Any) -> None:
    parts = path.split(".")
    node = doc
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


def render(f: DeclFile, params: dict[str, Any]) -> bytes:
    """The file ``f`` for ``params`` (a field whose expression gives None is left out, ``null`` is written null)."""
    doc = copy.deepcopy(f.template)
    env = {**params, "null": NULL}
    for path, expr in f.fields.items():
        value = evaluate(expr, env)
        if value is not None:
            _put(doc, path, None if value is NULL else value)
    return (json.dumps(doc, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def files_to_write(decl: Declaration | None, params: dict[str, Any]) -> list[DeclFile]:
    """The declaration files written for ``params`` (those whose ``when`` holds)."""
    if decl is None:
        return []
    return [f for f in decl.files if f.when is None or evaluate(f.when, params)]


def names_used(decl: Declaration | None, params: dict[str, Any]) -> set[str]:
    """Every parameter the files written for ``params`` read (to tell which needs matter)."""
    from ckptlint.archs.expr import compile_expr

    used: set[str] = set()
    for f in files_to_write(decl, params):
        for expr in [*f.fields.values(), f.when]:
            if isinstance(expr, str):
                used |= set(compile_expr(expr).co_names)
    return used
