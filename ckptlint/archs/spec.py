"""Arch specs: parse ``rules/archs/NAME.toml`` and expand its parameter templates into an expected tree.

An arch file names its building blocks from a module library (``rules/archs/modules/LIB.toml``), its default
parameters, its named variants and how each tower is found again in a checkpoint. Expanding a spec for a set of
parameters gives ``key -> (shape, dtype)`` in the framework's own key names (torch ``state_dict()`` keys, or flax
parameter paths relative to ``params``) in the framework's own order.

Arch file keys: ``name``, ``title`` (short, e.g. "big_vision proj.clippo.one_tower"), ``description``, ``source``,
``framework``, ``key_sep``, ``modules`` (the default library), ``default_variant``, ``variant_keys`` (parameters that
name a variant; the others, e.g. a big_vision resolution, do not change the name), ``order`` (optional: torch
state_dict order across hoisted modules), ``tree`` (template entries; a group with ``tower = "vision"|"text"`` is a
tower, and its ``sets`` are the parameters that finding it in a checkpoint implies), ``[params]`` (defaults),
``[variants]`` (``scheme = "size_patch"`` for big_vision's SIZE/PATCH names, else a ``names`` table; an entry may
carry ``tags`` and ``preprocessing``), ``[infer]`` (top-level ``probes``; ``config`` maps an HF ``config.json`` to
parameters) and ``[[preprocessing]]`` (``values`` merged in order, each under an optional ``when``).
The template language is described at the top of ``rules/archs/modules/big_vision.toml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ckptlint.archs.expr import SpecError, evaluate
from ckptlint.errors import UsageError
from ckptlint.ruledata import load_toml, rules_dir

ARCH_DIR = "archs"
MODULE_DIR = "archs/modules"
MAX_REPEAT = 4096  # no model has more blocks; bounds what a bad override (depth=10**9) can allocate


@dataclass(frozen=True)
class ArchSpec:
    """One architecture family as declared in ``rules/archs/NAME.toml``."""

    name: str
    title: str
    description: str
    source: str
    framework: str
    key_sep: str
    lib: str
    default_variant: str
    variant_keys: tuple[str, ...]
    tree: list[Any]
    params: dict[str, Any]
    variants: dict[str, Any]
    infer: dict[str, Any]
    preprocessing: list[dict[str, Any]]
    order: tuple[str, ...] = ()
    dtype: str = "float32"
    raw: dict[str, Any] = field(default_factory=dict, repr=False)


def arch_names() -> list[str]:
    """Every architecture name shipped in ``rules/archs/`` (file names, sorted)."""
    return sorted(p.stem for p in (rules_dir() / ARCH_DIR).glob("*.toml"))


@cache
def load_arch(name: str) -> ArchSpec:
    """Parse one arch file; ``UsageError`` when no such architecture exists."""
    if name not in arch_names():
        raise UsageError(f"unknown architecture {name!r}; known: {', '.join(arch_names())}")
    raw = load_toml(f"{ARCH_DIR}/{name}.toml")
    try:
        return ArchSpec(
            name=raw["name"],
            title=raw.get("title", raw["name"]),
            description=raw.get("description", ""),
            source=raw.get("source", ""),
            framework=raw["framework"],
            key_sep=raw.get("key_sep", "."),
            lib=raw["modules"],
            default_variant=raw["default_variant"],
            variant_keys=tuple(raw.get("variant_keys", ())),
            tree=raw["tree"],
            params=dict(raw.get("params", {})),
            variants=raw.get("variants", {}),
            infer=raw.get("infer", {}),
            preprocessing=list(raw.get("preprocessing", [])),
            order=tuple(raw.get("order", ())),
            dtype=raw.get("dtype", "float32"),
            raw=raw,
        )
    except KeyError as exc:
        raise SpecError(f"rules/archs/{name}.toml lacks {exc}") from None


def module_libs() -> list[str]:
    """Every module library shipped in ``rules/archs/modules/``."""
    return sorted(p.stem for p in (rules_dir() / MODULE_DIR).glob("*.toml"))


def load_lib(lib: str) -> dict[str, Any]:
    """A module library (cached by ``load_toml``)."""
    return load_toml(f"{MODULE_DIR}/{lib}.toml")


def resolve_module(ref: str, lib: str) -> tuple[str, dict[str, Any]]:
    """``"name"`` (in ``lib``) or ``"otherlib:name"`` -> (library, module table)."""
    if ":" in ref:
        lib, ref = ref.split(":", 1)
    try:
        return lib, load_lib(lib)["modules"][ref]
    except (KeyError, FileNotFoundError):
        raise SpecError(f"unknown module {lib}:{ref}") from None


# ---------------------------------------------------------------------------------------------------- variants


def size_table(spec: ArchSpec) -> dict[str, dict[str, int]]:
    return load_lib(spec.lib).get(spec.variants.get("sizes", "sizes"), {})


def variant_names(spec: ArchSpec) -> list[str]:
    """Named variants, in the order they are preferred when several have the same shapes."""
    scheme = spec.variants.get("scheme", "table")
    if scheme == "size_patch":
        patches = spec.variants.get("patches", [16])
        return [f"{size}/{patch}" for size in size_table(spec) for patch in patches]
    return list(spec.variants.get("names", {}))


def size_patch_params(spec: ArchSpec, size: str, patch: int) -> dict[str, Any] | None:
    """big_vision ``decode_variant``: ``"B/16"`` -> width/depth/mlp_dim/heads of B and patch 16 (+ text tower)."""
    sizes = size_table(spec)
    if size not in sizes:
        return None
    params: dict[str, Any] = {**sizes[size], "patch": patch}
    text_prefix = spec.variants.get("text_prefix")
    if text_prefix:
        text_size = spec.variants.get("text_size", {}).get(size, size)
        params.update({f"{text_prefix}{k}": v for k, v in sizes[text_size].items()})
    for name, src in spec.variants.get("derive", {}).items():
        params[name] = evaluate(src, params)
    return params


def variant_params(spec: ArchSpec, variant: str) -> dict[str, Any] | None:
    """Parameters a variant name fixes, or None when the name is not a variant of ``spec``."""
    scheme = spec.variants.get("scheme", "table")
    if scheme == "size_patch":
        size, sep, patch = variant.rpartition("/")
        if not sep or not patch.isdigit() or not 0 < int(patch) <= 1024:
            return None
        return size_patch_params(spec, size, int(patch))
    names = spec.variants.get("names", {})
    if variant in names:
        return {k: v for k, v in names[variant].items() if k not in ("tags", "preprocessing")}
    base, dot, tag = variant.rpartition(".")  # timm "name.tag": the tag may change num_classes
    if dot and base in names and tag in names[base].get("tags", {}):
        entry = names[base]
        return {
            **{k: v for k, v in entry.items() if k not in ("tags", "preprocessing")},
            **entry["tags"][tag],
        }
    return None


def variant_preprocessing(spec: ArchSpec, variant: str | None) -> dict[str, Any]:
    if not variant:
        return {}
    names = spec.variants.get("names", {})
    entry = names.get(variant) or names.get(variant.rpartition(".")[0], {})
    return dict(entry.get("preprocessing", {}))


def unknown_variant(spec: ArchSpec, variant: str) -> UsageError:
    names = variant_names(spec)
    shown = ", ".join(names[:40]) + (
        f" (+{len(names) - 40} more; see `ckptlint archs`)" if len(names) > 40 else ""
    )
    extra = " (any SIZE/PATCH of the sizes listed)" if spec.variants.get("scheme") == "size_patch" else ""
    return UsageError(f"unknown variant {variant!r} of {spec.name}{extra}; known: {shown}, custom")


# ---------------------------------------------------------------------------------------------------- expansion


@dataclass
class Tree:
    """An expanded spec: ordered ``key -> (shape, dtype)`` and the key prefixes of each tower."""

    tensors: dict[str, tuple[tuple[int, ...], str]]
    towers: dict[str, list[str]]


def build_tree(spec: ArchSpec, params: dict[str, Any]) -> Tree:
    """Expand ``spec`` for ``params`` (all parameters resolved: defaults, variant, inferred, overrides)."""
    out: dict[str, tuple[tuple[int, ...], str]] = {}
    towers: dict[str, list[str]] = {}
    for entry in spec.tree:
        before = len(out)
        _expand(entry, spec.lib, dict(params), "", (), out, spec.dtype)
        tower = entry.get("tower") if isinstance(entry, dict) else None
        if tower:
            new_keys = list(out)[before:]
            prefixes = towers.setdefault(tower, [])
            for prefix in _tower_prefixes(entry.get("prefix", ""), new_keys, spec.key_sep):
                if prefix not in prefixes:
                    prefixes.append(prefix)
    if spec.order:
        out = _reorder(out, spec.order)
    return Tree(tensors=out, towers=towers)


def _tower_prefixes(prefix: str, keys: list[str], sep: str) -> list[str]:
    if prefix:
        return [prefix] if keys else []
    firsts = []
    for key in keys:
        head, found, _ = key.partition(sep)
        firsts.append(head + sep if found else key)
    return list(dict.fromkeys(firsts))


def _reorder(tensors: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    def rank(key: str) -> int:
        for i, item in enumerate(order):
            if key == item or (item.endswith((".", "/")) and key.startswith(item)):
                return i
        return len(order)

    return {
        k: tensors[k] for k in sorted(tensors, key=rank)
    }  # sorted() is stable: module order within a rank


def _expand(
    entry: Any,
    lib: str,
    env: dict[str, Any],
    prefix: str,
    stack: tuple[int, ...],
    out: dict[str, tuple[tuple[int, ...], str]],
    dtype: str,
) -> None:
    if isinstance(entry, list):
        key, shape = entry[0], entry[1]
        if len(entry) > 2 and not evaluate(entry[2], env):
            return
        out[prefix + key] = (stack + tuple(_dim(d, env, key) for d in shape), dtype)
        return
    if not isinstance(entry, dict):
        raise SpecError(f"bad template entry {entry!r}")
    if "when" in entry and not evaluate(entry["when"], env):
        return
    if "key" in entry:  # table form of a single tensor
        if entry.get("shape") is None:
            raise SpecError(f"tensor {entry['key']!r} has no shape")
        shape = tuple(_dim(d, env, entry["key"]) for d in entry["shape"])
        out[prefix + entry["key"]] = (stack + shape, entry.get("dtype", dtype))
        return
    if "use" in entry:
        sub_lib, module = resolve_module(entry["use"], lib)
        inner = dict(env)
        for name, src in entry.get("with", {}).items():
            inner[name] = evaluate(src, env)
        for name, src in module.get("defaults", {}).items():
            if name not in inner:
                inner[name] = evaluate(src, inner)
        for name, src in module.get("derive", {}).items():
            inner[name] = evaluate(src, inner)
        children, child_lib = module.get("tensors", []), sub_lib
    else:
        inner, children, child_lib = env, entry.get("tensors", []), lib
    group_prefix = entry.get("prefix", "")
    if "stack" in entry:
        stack = (*stack, _count(entry["stack"], env))
    if "repeat" in entry:
        for i in range(_count(entry["repeat"], env)):
            scoped = {**inner, "i": i}
            for child in children:
                _expand(
                    child, child_lib, scoped, prefix + group_prefix.replace("{i}", str(i)), stack, out, dtype
                )
        return
    for child in children:
        _expand(child, child_lib, inner, prefix + group_prefix, stack, out, dtype)


def _dim(src: Any, env: dict[str, Any], key: str) -> int:
    value = evaluate(src, env)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"parameters give {key} a bad dimension {value!r} (from {src!r})")
    return value


def _count(src: Any, env: dict[str, Any]) -> int:
    value = evaluate(src, env)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPEAT:
        raise UsageError(f"bad repeat count {value!r} (from {src!r}); expected 0..{MAX_REPEAT}")
    return value
