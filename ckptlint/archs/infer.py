"""Read an architecture's parameters back from a checkpoint: where its towers are, and their sizes.

Each tower module of a spec declares anchor keys (``embedding/kernel``, ``visual.conv1.weight``...). Anchors are
searched by key suffix, so a tower is found under any wrapper (``module.``, ``_orig_mod.``, ``state_dict.``,
``params/``, ``params/img/``...). The root -- the prefix under which the whole expected tree would live -- is the
one that places the most towers where the spec puts them. A tower the spec's own modules cannot find is looked for
with every other framework's modules (the checkpoint may be in another layout: that is when users need the
diagnosis); from those only the geometry (width, depth, patch, image size, context length...) carries over.
An HF ``config.json`` next to the weights, when it describes this architecture, decides over the shapes, as it
does for ``from_pretrained``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any, NamedTuple

from ckptlint.archs.expr import SpecError, evaluate
from ckptlint.archs.spec import (
    ArchSpec,
    load_arch,
    load_lib,
    module_libs,
    resolve_module,
    size_patch_params,
    size_table,
    variant_names,
    variant_params,
)
from ckptlint.checkpoint import Checkpoint, TensorInfo

# Geometry that means the same in every framework's tower modules, so it may come from another layout.
TRANSFERABLE = {
    "vision": ("width", "depth", "heads", "mlp_dim", "patch", "image_size"),
    "text": ("width", "depth", "heads", "mlp_dim", "context_length", "vocab_size"),
}
MAX_COUNT = 100_000


class _Hit(NamedTuple):
    index: int  # position of the group among the spec's tower groups
    group: dict[str, Any]
    prefix: str  # checkpoint prefix of the module's keys
    key: str  # the anchor key found
    root: str | None  # prefix minus the group's own prefix, when the module sits where the spec puts it


@dataclass
class Found:
    """A tower located in the checkpoint."""

    tower: str
    module: str  # "lib:name"
    prefix: str  # checkpoint prefix of the module's keys
    anchor: str  # the checkpoint key that located it
    native: bool  # found by one of the spec's own groups, at the place the spec puts it
    values: dict[str, Any] = field(default_factory=dict)  # in the spec's parameter names
    observed: set[str] = field(default_factory=set)
    evidence: dict[str, str] = field(default_factory=dict)


@dataclass
class Inference:
    """What the checkpoint says about a spec's parameters."""

    observed: dict[str, Any] = field(default_factory=dict)  # evidence-backed values (decide the variant)
    guessed: dict[str, Any] = field(default_factory=dict)  # conventions (heads = width // 64 ...)
    evidence: dict[str, str] = field(default_factory=dict)  # param -> key (or config entry) it came from
    root: str | None = (
        None  # checkpoint prefix of the expected tree, when a tower sits where the spec puts it
    )
    found: list[Found] = field(default_factory=list)
    config: str | None = None  # sidecar that decided, e.g. "config.json (model_type clip)"
    lib: str = ""  # the spec's own module library

    def summary(self, ckpt: Checkpoint) -> str:
        """One line for Expected.params['inferred_from']."""
        if self.config:
            return self.config
        if not self.found:
            return ""
        parts = []
        for f in sorted(self.found, key=lambda f: f.tower != "vision"):
            shape = list(ckpt.tensors[f.anchor].shape)
            if f.native:
                where = ""
            elif f.module.split(":")[0] == self.lib:
                where = f" (a {f.module} tower, not where the spec puts it)"
            else:
                where = f" ({f.module.split(':')[0]} layout)"
            parts.append(f"{f.anchor} {shape}{where}")
        return "; ".join(parts)


def namespace(spec: ArchSpec) -> frozenset[str]:
    """Every parameter name the spec knows (defaults, variants, bindings, probes)."""
    return _namespace(spec.name)


@cache
def _namespace(name: str) -> frozenset[str]:
    spec = load_arch(name)
    names = set(spec.params) | set(spec.variant_keys) | set(spec.infer.get("probes", {}))
    if spec.variants.get("scheme") == "size_patch":
        first = next(iter(size_table(spec).values()), {})
        names |= set(first) | {"patch"} | set(spec.variants.get("derive", {}))
        if spec.variants.get("text_prefix"):
            names |= {spec.variants["text_prefix"] + k for k in first}
    for entry in spec.variants.get("names", {}).values():
        names |= set(entry)
    for group in tower_groups(spec):
        names |= {v for v in group.get("with", {}).values() if isinstance(v, str) and v.isidentifier()}
        names |= set(group.get("sets", {}))
    return frozenset(names - {"tags", "preprocessing"})


def tower_groups(spec: ArchSpec) -> list[dict[str, Any]]:
    return [g for g in spec.tree if isinstance(g, dict) and g.get("tower") and g.get("use")]


def infer(spec: ArchSpec, ckpt: Checkpoint) -> Inference:
    """Locate the spec's towers in ``ckpt`` and read their parameters (config.json first for HF)."""
    result = Inference(lib=spec.lib)
    tensors = ckpt.tensors
    order = {k: i for i, k in enumerate(tensors)}
    names = namespace(spec)

    # 1. every place one of the spec's own tower modules sits
    hits: list[_Hit] = []
    for index, group in enumerate(tower_groups(spec)):
        _, module = resolve_module(group["use"], spec.lib)
        for anchor in module.get("infer", {}).get("anchor", []):
            for prefix, key in find_anchor(tensors, anchor):
                if not is_tower(module, tensors, prefix):
                    continue
                gp = group.get("prefix", "")
                root = prefix[: len(prefix) - len(gp)] if prefix.endswith(gp) else None
                hits.append(_Hit(index, group, prefix, key, root))

    # 2. the root that puts the most towers where the spec puts them (then: shortest, earliest in the file)
    towers_at: dict[str, set[str]] = {}
    for hit in hits:
        if hit.root is not None:
            towers_at.setdefault(hit.root, set()).add(hit.group["tower"])
    if towers_at:
        first = {r: min(order[h.key] for h in hits if h.root == r) for r in towers_at}
        result.root = min(towers_at, key=lambda r: (-len(towers_at[r]), len(r), first[r]))

    # 3. each tower: natively under the root, else wherever any framework's module finds it
    for tower in dict.fromkeys(g["tower"] for g in tower_groups(spec)):
        native = [
            h for h in hits if h.group["tower"] == tower and h.root is not None and h.root == result.root
        ]
        if native:
            hit = min(native, key=lambda h: (h.index, order[h.key]))
            found = _read_tower(spec, hit.group, hit.prefix, hit.key, tensors, names, native=True)
        else:
            found = _foreign_tower(spec, tower, tensors, order, names)
        if found is None:
            continue
        result.found.append(found)
        for name, value in found.values.items():
            if name in found.observed:
                result.observed.setdefault(name, value)
            elif name not in result.observed:
                result.guessed.setdefault(name, value)
        for name, key in found.evidence.items():
            result.evidence.setdefault(name, key)

    # 4. the spec's own top-level probes, under the root
    if result.root is not None and spec.infer.get("probes"):
        seed = {**spec.params, **result.guessed, **result.observed}
        values, observed, evidence = run_probes(spec.infer["probes"], tensors, result.root, seed)
        for name in observed:
            result.observed.setdefault(name, values[name])
        for name, value in values.items():
            if name not in observed and name not in result.observed:
                result.guessed.setdefault(name, value)
        result.evidence.update({k: v for k, v in evidence.items() if k not in result.evidence})

    # 5. a config.json that describes this architecture decides (as from_pretrained does)
    config_values = _from_config(spec, ckpt)
    if config_values is not None:
        values, note = config_values
        result.observed.update(values)
        result.evidence.update({k: note for k in values})
        result.config = note
    return result


def find_anchor(tensors: dict[str, TensorInfo], anchor: dict[str, Any]) -> list[tuple[str, str]]:
    """Every (prefix, key) where ``anchor['key']`` ends a checkpoint key at a name boundary (and has its rank)."""
    suffix = anchor["key"]
    rank = anchor.get("rank")
    hits = []
    for key, info in tensors.items():
        if not key.endswith(suffix):
            continue
        prefix = key[: len(key) - len(suffix)]
        if prefix and prefix[-1] not in "./":
            continue
        if rank is not None and len(info.shape) != rank:
            continue
        hits.append((prefix, key))
    return hits


def is_tower(module: dict[str, Any], tensors: dict[str, TensorInfo], prefix: str) -> bool:
    """An anchor hit is a tower only if its blocks are there too (``token_embedding.weight`` also ends HF's
    ``text_model.embeddings.token_embedding.weight``, which is no open_clip text tower)."""
    probes = module.get("infer", {}).get("probes", {})
    if "depth" not in probes:
        return True
    _, observed, _ = run_probes({"depth": probes["depth"]}, tensors, prefix, {})
    return "depth" in observed


def _read_tower(
    spec: ArchSpec,
    group: dict[str, Any],
    prefix: str,
    anchor_key: str,
    tensors: dict[str, TensorInfo],
    names: frozenset[str],
    native: bool,
) -> Found:
    lib, module = resolve_module(group["use"], spec.lib)
    probes = module.get("infer", {}).get("probes", {})
    values, observed, evidence = run_probes(probes, tensors, prefix, {})
    # group `with` binds module names to the spec's: {"width": "text_width"} reads back as width -> text_width
    inverse = {
        local: src
        for local, src in group.get("with", {}).items()
        if isinstance(src, str) and src.isidentifier()
    }
    mapped: dict[str, Any] = {}
    mapped_obs: set[str] = set()
    mapped_ev: dict[str, str] = {}
    allowed = None if native else set(TRANSFERABLE[group["tower"]])
    for local, value in values.items():
        if allowed is not None and local not in allowed:
            continue
        target = inverse.get(local, local)
        if target not in names:
            continue
        mapped[target] = value
        if local in observed:
            mapped_obs.add(target)
        if local in evidence:
            mapped_ev[target] = evidence[local]
    if native:
        for name, value in group.get("sets", {}).items():
            mapped[name] = value
            mapped_obs.add(name)
    ref = group["use"] if ":" in group["use"] else f"{lib}:{group['use']}"
    return Found(group["tower"], ref, prefix, anchor_key, native, mapped, mapped_obs, mapped_ev)


def _foreign_tower(
    spec: ArchSpec, tower: str, tensors: dict[str, TensorInfo], order: dict[str, int], names: frozenset[str]
) -> Found | None:
    """The tower as any framework's module finds it (the spec's first group for it gives the names)."""
    own = next(g for g in tower_groups(spec) if g["tower"] == tower)
    best: tuple[tuple[int, int, int], str, str, str] | None = None
    libs = [spec.lib] + [lib for lib in module_libs() if lib != spec.lib]
    for li, lib in enumerate(libs):
        for mname, module in load_lib(lib).get("modules", {}).items():
            info = module.get("infer")
            if not info or info.get("tower") != tower:
                continue
            for anchor in info.get("anchor", []):
                for prefix, key in find_anchor(tensors, anchor):
                    if not is_tower(module, tensors, prefix):
                        continue
                    rank = (len(prefix), li, order[key])
                    if best is None or rank < best[0]:
                        best = (rank, f"{lib}:{mname}", prefix, key)
    if best is None:
        return None
    _, ref, prefix, key = best
    proxy = {**own, "use": ref}
    found = _read_tower(spec, proxy, prefix, key, tensors, names, native=False)
    return found


def run_probes(
    probes: dict[str, list[dict[str, Any]]], tensors: dict[str, TensorInfo], prefix: str, seed: dict[str, Any]
) -> tuple[dict[str, Any], set[str], dict[str, str]]:
    """Evaluate probes in order; returns (values, names backed by evidence, name -> key)."""
    env = dict(seed)
    values: dict[str, Any] = {}
    observed: set[str] = set()
    evidence: dict[str, str] = {}
    for name, alternatives in probes.items():
        for alt in alternatives:
            ok, value, key = _probe(alt, tensors, prefix, env)
            if ok:
                env[name] = values[name] = value
                if not alt.get("guess"):
                    observed.add(name)
                    if key:
                        evidence[name] = key
                break
    return values, observed, evidence


def _probe(
    alt: dict[str, Any], tensors: dict[str, TensorInfo], prefix: str, env: dict[str, Any]
) -> tuple[bool, Any, str | None]:
    try:
        if "key" in alt:
            key = prefix + alt["key"]
            info = tensors.get(key)
            dim = alt.get("dim", 0)
            if info is None or not -len(info.shape) <= dim < len(info.shape):
                return False, None, None
            x = info.shape[dim]
            return True, (evaluate(alt["expr"], {**env, "x": x}) if "expr" in alt else x), key
        if "count" in alt:
            n = 0
            while n < MAX_COUNT and prefix + alt["count"].replace("{i}", str(n)) in tensors:
                n += 1
            return (n > 0), n, prefix + alt["count"].replace("{i}", "*")
        if "present" in alt:
            key = prefix + alt["present"]
            return (key in tensors), alt.get("value", True), key
        if "absent" in alt:
            key = prefix + alt["absent"]
            return (key not in tensors), alt.get("value", True), None
        if "expr" in alt:
            return True, evaluate(alt["expr"], env), None
        return True, alt.get("value"), None
    except SpecError:  # an expression needs a parameter no probe found: this alternative does not apply
        return False, None, None


def _from_config(spec: ArchSpec, ckpt: Checkpoint) -> tuple[dict[str, Any], str] | None:
    conf = spec.infer.get("config")
    if not conf:
        return None
    sidecar = ckpt.sidecar(conf.get("kind", "hf-config"))
    if sidecar is None or not isinstance(sidecar.content, dict):
        return None
    model_type = sidecar.content.get("model_type")
    base = conf.get("model_types", {}).get(model_type)
    if base is None:
        return None
    values: dict[str, Any] = {}
    deferred: dict[str, str] = {}
    for name, (path, default) in conf.get("params", {}).items():
        value = _config_get(sidecar.content, base + path)
        if value is None:
            if isinstance(default, str):
                deferred[name] = default
            else:
                values[name] = default
        else:
            values[name] = value[0] if isinstance(value, list) and value else value
    for name, src in deferred.items():
        values[name] = evaluate(src, {**spec.params, **values})
    return values, f"{sidecar.name} (model_type {model_type})"


def _config_get(doc: dict[str, Any], path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# ---------------------------------------------------------------------------------------------------- variants


@dataclass
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


def _candidate_variants(spec: ArchSpec, observed: dict[str, Any]):
    if spec.variants.get("scheme") == "size_patch":
        patches = (
            [observed["patch"]]
            if isinstance(observed.get("patch"), int)
            else spec.variants.get("patches", [])
        )
        for size in size_table(spec):
            for patch in patches:
                params = size_patch_params(spec, size, patch)
                if params is not None:
                    yield f"{size}/{patch}", params
        return
    for name in variant_names(spec):
        params = variant_params(spec, name)
        if params is not None:
            yield name, params
