"""Reading a transformers ``config.json`` into an architecture's parameters, as transformers' config class does.

An architecture's ``[archs.NAME.config]`` says which ``model_type`` values it reads (``match``: value -> path
prefix, so that ``CLIPVisionModel`` reads a CLIPModel folder's ``vision_config.``) and, per parameter, where the
value is and what it is when absent: ``params.PARAM = [path, default]``. A path is a dotted field
(``text_config.hidden_size``), alternatives separated by ``|`` (a config class's ``attribute_map`` aliases:
``d_model|hidden_size``), or ``len(FIELD)`` (``num_labels`` is ``len(id2label)``); an empty path is a parameter the
config never stores (derived). A default is a value or an expression of the other parameters (``head_dim`` is
``hidden_size // num_attention_heads`` unless given). Nothing here imports transformers.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ckptlint.archs.expr import SpecError, compile_expr, evaluate
from ckptlint.archs.schema import ConfigMap
from ckptlint.checkpoint import Checkpoint

FLOATS = frozenset({"float16", "bfloat16", "float32", "float64"})
MAX_PASSES = 8  # defaults may depend on each other (head_dim on hidden_size and num_attention_heads)


@dataclass
class DeclaredParams:
    """Parameters read from a declaration, and where each came from."""

    values: dict[str, Any]
    fields: dict[str, str]  # param -> the config field that holds it (its first path), "" when derived
    explicit: dict[str, Any] = field(default_factory=dict)  # params the config states (the rest are defaults)
    counted: list[str] = field(
        default_factory=list
    )  # params that are a field's number of entries (num_labels)
    base: str = ""  # the match prefix (``vision_config.``)
    model_type: str | None = None
    # params whose default divides by a zero the config gives (head_dim = hidden_size // num_attention_heads):
    # param -> (its default, the zero params); transformers fails the same way when it builds the model
    zero: dict[str, tuple[str, list[str]]] = field(default_factory=dict)


def select(conf: ConfigMap, content: dict[str, Any]) -> str | None:
    """The path prefix ``conf`` reads ``content`` under, or None when the declaration is not for it."""
    selected = get(content, conf.select)
    return conf.match.get(selected) if isinstance(selected, str) else None


def read(conf: ConfigMap, content: dict[str, Any], overrides: dict[str, Any] | None = None) -> DeclaredParams:
    """Every parameter of ``conf`` from ``content`` (which ``select`` accepted), defaults filled in.

    ``overrides`` replace what the config states (a counterfactual: "what if num_key_value_heads were 2"); the
    parameters whose defaults depend on them are recomputed.
    """
    base = select(conf, content) or ""
    values: dict[str, Any] = {}
    explicit: dict[str, Any] = {}
    fields: dict[str, str] = {}
    pending: dict[str, str] = {}
    for name, (path, default) in conf.params.items():
        fields[name] = _first(path, base)
        found = _lookup(content, path, base) if path else None
        if overrides and name in overrides:
            found = overrides[name]
        if found is not None:
            values[name] = explicit[name] = found
        elif isinstance(default, str) and _is_expr(default, conf):
            pending[name] = default
        else:
            values[name] = default
    zero: dict[str, tuple[str, list[str]]] = {}
    for _ in range(MAX_PASSES):
        if not pending:
            break
        for name, src in list(pending.items()):
            try:
                values[name] = evaluate(src, values)
            except SpecError as exc:
                if "ZeroDivisionError" in str(exc):
                    names = compile_expr(src).co_names
                    zero[name] = (
                        src,
                        [n for n in names if values.get(n) == 0 and not isinstance(values[n], bool)],
                    )
                    values[name] = None
                    del pending[name]
                continue
            del pending[name]
    if pending:
        raise SpecError(f"cannot resolve the defaults of {', '.join(sorted(pending))}")
    selected = get(content, conf.select)
    counted = [n for n, (path, _) in conf.params.items() if path.startswith("len(")]
    model_type = selected if isinstance(selected, str) else None
    return DeclaredParams(values, fields, explicit, counted, base, model_type, zero)


def _is_expr(default: str, conf: ConfigMap) -> bool:
    """A string default is an expression when it names other parameters (else it is a string value: 'relu')."""
    try:
        names = compile_expr(default).co_names
    except SpecError:
        return False
    return bool(names) and all(n in conf.params or n in ("int", "isqrt", "min", "max") for n in names)


def _first(path: str, base: str) -> str:
    head = path.split("|")[0]
    if head.startswith("len(") and head.endswith(")"):
        head = head[4:-1]
    return base + head if head else ""


def _lookup(content: dict[str, Any], path: str, base: str) -> Any:
    for alt in path.split("|"):
        if alt.startswith("len(") and alt.endswith(")"):
            value = get(content, base + alt[4:-1])
            if isinstance(value, (list, dict)):
                return len(value)
            continue
        value = get(content, base + alt)
        if isinstance(value, list) and value and all(isinstance(v, int) for v in value):
            value = value[0]  # image_size [224, 224], patch_size [16, 16]: square
        if value is not None and not isinstance(value, (dict, list)):
            return value
    return None


def get(doc: Any, path: str) -> Any:
    """``doc["a"]["b"]`` for ``"a.b"``; None when any part is missing."""
    node = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def declared_dtype(content: dict[str, Any]) -> str | None:
    """The dtype the config records (``dtype``, formerly ``torch_dtype``), as a ckptlint dtype name."""
    value = content.get("dtype") or content.get("torch_dtype")
    if isinstance(value, str):
        value = value.removeprefix("torch.")
        return value if value in FLOATS else None
    return None


def file_dtype(ckpt: Checkpoint | None) -> str | None:
    if ckpt is None:
        return None
    counts = Counter(t.dtype for t in ckpt.tensors.values() if t.dtype in FLOATS)
    return counts.most_common(1)[0][0] if counts else None
