"""Architectures as declared in the family files: expand a tree for a set of parameters; name variants.

Expanding an architecture for its parameters gives ``key -> (shape, dtype)`` in the framework's own key names
(torch ``state_dict()`` keys, or flax parameter paths relative to ``params``), in the framework's own order. The
file format (tree entries, modules, variants) is described in ``rules/README.md``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from functools import cached_property
from typing import Any, Literal

from ckptlint.archs.expr import evaluate
from ckptlint.archs.pattern import pattern
from ckptlint.archs.registry import registry
from ckptlint.archs.schema import Arch, Entry, Group, Tensor, VariantEntry
from ckptlint.errors import UsageError
from ckptlint.expected import Expected, ExpectedTensor
from ckptlint.record import field, record
from ckptlint.suggest import did_you_mean

MAX_REPEAT = 4096  # no model has more blocks; bounds what a bad override (depth=10**9) can allocate


@record(frozen=True)
class ArchSpec:
    """One architecture: its declaration and the family (module library, framework) it belongs to."""

    name: str
    family: str
    framework: str
    key_sep: str
    decl: Arch = field(repr=False)
    sizes: dict[str, dict[str, int]] = field(repr=False, default_factory=dict)

    @property
    def lib(self) -> str:
        return self.family

    def __getattr__(self, item: str) -> Any:  # title, description, source, params, variants, tree...
        if item.startswith("__") or item == "decl":  # copy/pickle probe dunders before decl exists
            raise AttributeError(item)
        return getattr(self.decl, item)

    @cached_property
    def tower_groups(self) -> list[Group]:
        return [g for g in self.decl.tree if isinstance(g, Group) and g.tower and g.use]

    @cached_property
    def namespace(self) -> frozenset[str]:
        """Every parameter name the spec knows (defaults, variants, bindings, probes)."""
        names = set(self.decl.params) | set(self.decl.variant_keys) | set(self.decl.infer.probes)
        variants = self.decl.variants
        if variants.scheme == "size_patch":
            first = next(iter(self.sizes.values()), {})
            names |= set(first) | {"patch"} | set(variants.derive)
            if variants.text_prefix:
                names |= {variants.text_prefix + k for k in first}
        for entry in variants.names.values():
            names |= set(entry.params)
        for group in self.tower_groups:
            names |= {v for v in group.with_.values() if isinstance(v, str) and v.isidentifier()}
            names |= set(group.sets)
        return frozenset(names)


def arch_names() -> list[str]:
    """Every architecture name, sorted."""
    return sorted(registry().archs)


def known_archs() -> str:
    """The names an unknown-architecture error lists: every family's own, the generated transformers classes
    (dozens) counted, not listed."""
    reg = registry()
    generated = {n for n, fam in reg.archs.items() if fam.head.family.generated_by}
    own = ", ".join(sorted(set(reg.archs) - generated))
    return own + (f", and {len(generated)} transformers classes (`ckptlint archs`)" if generated else "")


def load_arch(name: str) -> ArchSpec:
    """The architecture ``name``; ``UsageError`` when no family declares it."""
    reg = registry()
    if name not in reg.archs:
        raise UsageError(
            f"unknown architecture {name!r}{did_you_mean(name, arch_names())} (known: {known_archs()})"
        )
    key = ("arch", name)
    if key not in reg.memo:
        fam, decl = reg.arch(name)
        sep = reg.frameworks[fam.framework].sep
        reg.memo[key] = ArchSpec(name, fam.name, fam.framework, sep, decl, fam.part("sizes"))
    return reg.memo[key]


# ---------------------------------------------------------------------------------------------------- variants
def variant_names(spec: ArchSpec) -> list[str]:
    """Named variants, in the order they are preferred when several have the same shapes."""
    if spec.variants.scheme == "size_patch":
        return [f"{size}/{patch}" for size in spec.sizes for patch in spec.variants.patches]
    return list(spec.variants.names)


def size_patch_params(spec: ArchSpec, size: str, patch: int) -> dict[str, Any] | None:
    """big_vision ``decode_variant``: ``"B/16"`` -> width/depth/mlp_dim/heads of B and patch 16 (+ text tower)."""
    if size not in spec.sizes:
        return None
    params: dict[str, Any] = {**spec.sizes[size], "patch": patch}
    text_prefix = spec.variants.text_prefix
    if text_prefix:
        text_size = spec.variants.text_size.get(size, size)
        params.update({f"{text_prefix}{k}": v for k, v in spec.sizes[text_size].items()})
    for name, src in spec.variants.derive.items():
        params[name] = evaluate(src, params)
    return params


def _entry(spec: ArchSpec, variant: str) -> tuple[VariantEntry, str | None] | None:
    names = spec.variants.names
    if variant in names:
        return names[variant], None
    base, dot, tag = variant.rpartition(".")  # timm "name.tag": the tag may change num_classes
    if dot and base in names and tag in names[base].tags:
        return names[base], tag
    return None


def variant_params(spec: ArchSpec, variant: str) -> dict[str, Any] | None:
    """Parameters a variant name fixes, or None when the name is not a variant of ``spec``."""
    if spec.variants.scheme == "size_patch":
        size, sep, patch = variant.rpartition("/")
        if not sep or not patch.isdigit() or not 0 < int(patch) <= 1024:
            return None
        return size_patch_params(spec, size, int(patch))
    found = _entry(spec, variant)
    if found is None:
        return None
    entry, tag = found
    return {**entry.params, **(entry.tags[tag] if tag else {})}


def variant_preprocessing(spec: ArchSpec, variant: str | None) -> dict[str, Any]:
    if not variant:
        return {}
    names = spec.variants.names
    entry = names.get(variant) or names.get(variant.rpartition(".")[0])
    return dict(entry.preprocessing) if entry is not None else {}


def unknown_variant(spec: ArchSpec, variant: str) -> UsageError:
    """One short line: the closest names (a different case counts as a typo: it is suggested, never taken), else a
    few examples, and where the whole list is."""
    names = variant_names(spec)
    listing = f"`ckptlint archs {spec.name}` lists them all"
    hint = did_you_mean(variant, names)
    if spec.variants.scheme == "size_patch":
        sizes = ", ".join(spec.sizes)
        what = f"a variant of {spec.name} is SIZE/PATCH with SIZE one of {sizes} (e.g. B/16), or custom"
        if not hint:
            size = variant.rpartition("/")[0]
            hint = did_you_mean(size, spec.sizes) if size else ""
        return UsageError(f"unknown variant {variant!r} of {spec.name}{hint} ({what}; {listing})")
    if not hint:
        hint = f" ({len(names)} named variants, e.g. {', '.join(names[:3])}, or custom; {listing})"
        return UsageError(f"unknown variant {variant!r} of {spec.name}{hint}")
    return UsageError(f"unknown variant {variant!r} of {spec.name}{hint} ({listing})")


@record
class VariantMatch:
    name: str | None  # a named variant whose every identity parameter equals the observed one
    params: dict[str, Any]  # that variant's parameters ({} when none)
    nearest: str | None = None  # otherwise: the variant with the fewest differences...
    diff: dict[str, list[Any]] = field(default_factory=dict)  # ...and them: param -> [variant, checkpoint]


def match_variant(spec: ArchSpec, observed: dict[str, Any]) -> VariantMatch:
    """The first named variant consistent with every observed identity parameter."""
    keys = [k for k in spec.variant_keys if k in observed]
    if not keys:
        return VariantMatch(None, {})
    best: tuple[int, str, dict[str, Any], list[str]] | None = None
    for name, params in _candidate_variants(spec, observed):
        effective = {**spec.params, **params}
        diff = [k for k in keys if k in effective and effective[k] != observed[k]]
        if not diff:
            return VariantMatch(name, params)
        if best is None or len(diff) < best[0]:
            best = (len(diff), name, effective, diff)
    if best is None or best[0] >= len(keys):
        return VariantMatch(None, {})
    _, name, effective, diff = best
    return VariantMatch(None, {}, nearest=name, diff={k: [effective[k], observed[k]] for k in diff})


def _candidate_variants(spec: ArchSpec, observed: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    if spec.variants.scheme == "size_patch":
        patch = observed.get("patch")
        patches = [patch] if isinstance(patch, int) else spec.variants.patches
        for size in spec.sizes:
            for p in patches:
                params = size_patch_params(spec, size, p)
                if params is not None:
                    yield f"{size}/{p}", params
        return
    for name in variant_names(spec):
        params = variant_params(spec, name)
        if params is not None:
            yield name, params


# ---------------------------------------------------------------------------------------------------- expansion
@record
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
        _expand(entry, spec.family, dict(params), "", (), out, spec.dtype)
        if isinstance(entry, Group) and entry.tower:
            new_keys = list(out)[before:]
            prefixes = towers.setdefault(entry.tower, [])
            for prefix in _tower_prefixes(entry.prefix, new_keys, spec.key_sep):
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


def _reorder(tensors: dict[str, Any], order: list[str]) -> dict[str, Any]:
    patterns = [pattern(p) for p in order]

    def rank(key: str) -> int:
        return next((i for i, p in enumerate(patterns) if p.matches(key)), len(patterns))

    return {
        k: tensors[k] for k in sorted(tensors, key=rank)
    }  # sorted() is stable: module order within a rank


def _expand(
    entry: Entry,
    family: str,
    env: dict[str, Any],
    prefix: str,
    stack: tuple[int, ...],
    out: dict[str, tuple[tuple[int, ...], str]],
    dtype: str,
) -> None:
    if entry.when is not None and not evaluate(entry.when, env):
        return
    if isinstance(entry, Tensor):
        shape = tuple(_dim(d, env, entry.key) for d in entry.shape)
        out[prefix + entry.key] = (stack + shape, entry.dtype or dtype)
        return
    if entry.use is not None:
        fam, _, module = registry().module(entry.use, family)
        inner = dict(env)
        for name, src in entry.with_.items():
            inner[name] = evaluate(src, env)
        for name, src in module.defaults.items():
            if name not in inner:
                inner[name] = evaluate(src, inner)
        for name, src in module.derive.items():
            inner[name] = evaluate(src, inner)
        children, child_family = module.tensors, fam.name
    else:
        inner, children, child_family = env, entry.tensors, family
    if entry.stack is not None:
        stack = (*stack, _count(entry.stack, env))
    if entry.repeat is not None:
        template = pattern(entry.prefix) if entry.prefix else None
        for i in range(_count(entry.repeat, env)):
            scoped = {**inner, "i": i}
            group_prefix = prefix + (template.fill(i=i) if template else "")
            for child in children:
                _expand(child, child_family, scoped, group_prefix, stack, out, dtype)
        return
    for child in children:
        _expand(child, child_family, inner, prefix + entry.prefix, stack, out, dtype)


def _dim(src: Any, env: dict[str, Any], key: str) -> int:
    value = evaluate(src, env)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise UsageError(f"parameters give {key} a bad dimension {value!r} (from {src!r})")
    return value


class RepeatTooLarge(UsageError):
    """A repeat count past ``MAX_REPEAT`` (``src`` is the expression, ``value`` what it gave)."""

    def __init__(self, src: Any, value: int) -> None:
        super().__init__(f"bad repeat count {value!r} (from {src!r}); expected 0..{MAX_REPEAT}")
        self.src, self.value = src, value


def _count(src: Any, env: dict[str, Any]) -> int:
    value = evaluate(src, env)
    if isinstance(value, int) and not isinstance(value, bool) and value > MAX_REPEAT:
        raise RepeatTooLarge(src, value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPEAT:
        raise UsageError(f"bad repeat count {value!r} (from {src!r}); expected 0..{MAX_REPEAT}")
    return value


# ---- the expectation of one set of parameters (resolved, declared) ----------------------------------------------
def expected_for(
    spec: ArchSpec,
    variant: str | None,
    params: dict[str, Any],
    info: dict[str, Any],
    source: Literal["flag", "inferred", "declared"],
    **extra: Any,
) -> Expected:
    """The ``Expected`` of ``spec`` for ``params`` (every parameter resolved); ``info`` joins ``params`` (evidence,
    notes), ``extra`` sets other ``Expected`` fields (``declared_by``...)."""
    tree = build_tree(spec, params)
    return Expected(
        arch=spec.name,
        variant=variant,
        source=source,
        framework=spec.framework,
        key_sep=spec.key_sep,
        tensors={k: ExpectedTensor(shape=shape, dtype=dtype) for k, (shape, dtype) in tree.tensors.items()},
        params={**{k: params[k] for k in sorted(params)}, **info},
        towers=tree.towers,
        preprocessing=_preprocessing(spec, variant, params),
        description=spec.title,
        **extra,
    )


def _preprocessing(spec: ArchSpec, variant: str | None, params: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for entry in spec.preprocessing:
        if entry.when is not None and not evaluate(entry.when, params):
            continue
        out.update(entry.values)
    if variant and variant != "custom":
        out.update(variant_preprocessing(spec, variant))
    if isinstance(params.get("image_size"), int):
        out["image_size"] = params["image_size"]
    if isinstance(params.get("context_length"), int):
        out["context_length"] = params["context_length"]
    return copy.deepcopy(out)  # the lists come from the cached rule data
