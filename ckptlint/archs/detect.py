"""The detector: what a set of checkpoint keys is, answered from the family files (``rules/archs/*.toml``).

    detect_layout(ckpt) -> LayoutGuess          layout, root (``module.``, ``params/``...), towers, framework, arch
    classify(keys) -> framework | None           whose key names most keys follow (signatures)
    towers_present(keys) / tower_of(key, ...)    which towers (vision, text, joint) keys belong to
    structure(shapes, framework) -> Structure    patch, width, depth, heads... read from shapes (ckptlint.archs.shapes)
    infer(spec, ckpt) -> Inference               an architecture's towers located and its parameters read back
    recognise(keys, arch) / profile_of(...)      whether keys are an architecture's; its preprocessing profile

Every pattern is the grammar of ``ckptlint.archs.pattern``. Nothing here reads files: only a ``Checkpoint``.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

from ckptlint.archs import registry as reg
from ckptlint.archs.expr import SpecError, evaluate
from ckptlint.archs.pattern import matches, pattern, pattern_set
from ckptlint.archs.schema import Anchor, Detect, Group, Layout, Probe
from ckptlint.archs.shapes import (  # noqa: F401  (the detector's API: structure from shapes)
    VARIANT_FIELDS,
    Structure,
    describe,
    grid_of,
    posemb_probe,
    structure,
)
from ckptlint.archs.spec import ArchSpec
from ckptlint.checkpoint import Checkpoint, TensorInfo
from ckptlint.record import field, record

Shape = tuple[int, ...]
MAX_EVIDENCE = 8
MAX_COUNT = 100_000
# Geometry that means the same in every framework's tower modules, so it may come from another layout.
TRANSFERABLE = {
    "vision": ("width", "depth", "heads", "mlp_dim", "patch", "image_size"),
    "text": ("width", "depth", "heads", "mlp_dim", "context_length", "vocab_size"),
}


# ---- frameworks and towers ------------------------------------------------------------------------------------
def frameworks() -> list[str]:
    return reg.framework_names()


def normalize(name: str | None) -> str | None:
    """A framework or layout name (``openai_clip``, ``hf-dir``, ``transformers``...) as a framework, or None."""
    if not name:
        return None
    name = name.strip().lower()
    aliases = [(a, fw) for fw in frameworks() for a in (fw, *reg.framework(fw).aliases)]
    for alias, fw in aliases:
        if name == alias:
            return fw
    for alias, fw in aliases:  # e.g. "open_clip-dir", "hf_vision", "big_vision-npz"
        if name.startswith((alias + "-", alias + "_")):
            return fw
    return None


def arch_framework(arch: str | None) -> str | None:
    fam = reg.registry().archs.get(arch or "")
    return fam.framework if fam else None


def _strip_prefixes() -> tuple[str, ...]:
    def build(_: Any) -> tuple[str, ...]:
        generic = {w["prefix"] for w in reg.wrappers() if w["side"] == "file" and w["framework"] == "any"}
        return (*sorted(generic, key=len, reverse=True), "params/", "opt/target/")

    return reg.cached("strip_prefixes", build)


def unwrap(key: str) -> str:
    """``key`` without the generic wrapper prefixes (``module.``, ``_orig_mod.``, ``state_dict.``, ``params/``…)."""
    prefixes = _strip_prefixes()
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p) and len(key) > len(p):
                key = key[len(p) :]
                changed = True
    return key


def is_signature(key: str, framework: str) -> bool:
    """Whether ``key`` (wrappers removed) is one only ``framework``'s layout has."""
    return reg.key_classes(framework)["signatures"].matches(unwrap(key))


def classify(keys: Iterable[str]) -> str | None:
    """The framework whose layout most of ``keys`` follow (by signature hits), or None on a tie."""
    scores = dict.fromkeys(frameworks(), 0)
    signatures = {fw: reg.key_classes(fw)["signatures"] for fw in scores}
    for key in keys:
        k = unwrap(key)
        for fw, sig in signatures.items():
            if sig.matches(k):
                scores[fw] += 1
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    if not ranked or ranked[0][1] == 0 or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def towers_present(keys: Iterable[str]) -> set[str]:
    """Towers ("vision", "text") that ``keys`` hold in any framework's layout (by their markers)."""
    found: set[str] = set()
    classes = [reg.key_classes(fw) for fw in frameworks()]
    for key in keys:
        k = unwrap(key)
        for c in classes:
            if "vision" not in found and c["vision_markers"].matches(k):
                found.add("vision")
            if "text" not in found and c["text_markers"].matches(k):
                found.add("text")
        if len(found) == 2:
            break
    return found


def tower_of(key: str, framework: str | None, present: set[str]) -> str | None:
    """``"vision"``, ``"text"`` or ``"joint"`` for ``key`` named in ``framework``; None when unknown.

    ``present`` are the towers of the key set ``key`` belongs to (HF 5.x one-tower models have unprefixed keys).
    """
    if framework not in frameworks():
        return None
    c = reg.key_classes(framework)
    k = unwrap(key)
    if c["joint"].matches(k):
        return "joint"
    if c["text"].matches(k):
        return "text"
    if c["unprefixed"].matches(k):
        return next(iter(present)) if len(present) == 1 else None
    if c["vision"].matches(k):
        return "vision"
    return None


def towers_by_prefix(key: str, towers: dict[str, list[str]]) -> str | None:
    """The tower of ``key`` according to ``Expected.towers`` (tower -> key prefixes), or None."""
    for name, prefixes in towers.items():
        for p in prefixes:
            if key == p or key.startswith(p) or key == p.rstrip("./"):
                return name
    return None


# ---- layouts ----------------------------------------------------------------------------------------------------
@record(frozen=True)
class LayoutGuess:
    """The detected layout of a checkpoint (a plain dataclass: built on every dump, it must not cost a schema build)."""

    name: str = "unknown"  # a layout of the family files (big_vision, open_clip, hf, timm...) or unknown
    confidence: float = 0.0  # 0..1
    evidence: list[str] = field(default_factory=list)  # marker keys found (the file's own full keys)
    root: str = ""  # prefix under which the model's keys live in this file: "", "params/", "module.", ...
    towers_present: list[str] = field(default_factory=list)  # "vision", "text"
    framework: str = ""  # the layout's framework (big_vision | open_clip | hf | timm ...)
    arch: str | None = None  # the architecture this layout suggests (clippo, open_clip, hf-clip...)


class _Candidate(NamedTuple):
    covered: int
    markers: float
    neg_root: int
    neg_index: int
    layout: Layout
    framework: str
    root: str
    under: int
    evidence: list[str]


def detect_layout(ckpt: Checkpoint) -> LayoutGuess:
    """Best-matching layout of ``ckpt`` (``name="unknown"`` when no signature fits).

    Each layout's anchors are searched by suffix, so that any wrapper (``module.``, ``params/``...) is found as the
    root; candidates rank by how many keys under their root the layout accounts for, then by the share of markers.
    """
    keys = list(ckpt.tensors)
    if not keys:
        return LayoutGuess()
    keyset = set(keys)
    best: _Candidate | None = None
    for index, (fam, layout) in enumerate(reg.registry().layouts):
        for root in _roots(keys, layout.anchors):
            cand = _score(layout, fam.framework, index, root, keys, keyset)
            if cand is not None and (best is None or cand[:4] > best[:4]):
                best = cand
    if best is None:
        return LayoutGuess()
    layout, root = best.layout, best.root
    towers = [t for t, pats in layout.towers.items() if any(_found(root, p, keys, keyset) for p in pats)]
    confidence = 0.5 * best.markers + 0.5 * (best.covered / best.under if best.under else 0.0)
    return LayoutGuess(
        name=layout.name,
        confidence=round(confidence, 3),
        evidence=best.evidence[:MAX_EVIDENCE],
        root=root,
        towers_present=towers,
        framework=best.framework,
        arch=_arch_hint(layout.name, root, keys, keyset, ckpt),
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


def _found(root: str, text: str, keys: list[str], keyset: Collection[str]) -> str | None:
    return pattern(text).first(keys, keyset, root)


def _score(
    layout: Layout, framework: str, index: int, root: str, keys: list[str], keyset: set[str]
) -> _Candidate | None:
    for group in layout.require:
        if not any(_found(root, p, keys, keyset) for p in group):
            return None
    covered = under = 0
    n = len(root)
    prefixes = pattern_set(tuple(layout.prefixes))
    for key in keys:
        if key.startswith(root):
            under += 1
            if prefixes.matches(key[n:]):
                covered += 1
    evidence = []
    for group in layout.markers:
        hit = next((k for p in group if (k := _found(root, p, keys, keyset))), None)
        if hit:
            evidence.append(hit)
    share = len(evidence) / len(layout.markers) if layout.markers else 0.0
    return _Candidate(covered, share, -len(root), -index, layout, framework, root, under, evidence)


def _holds(rule: Detect, root: str, keys: list[str], keyset: Collection[str]) -> bool:
    if not all(_found(root, p, keys, keyset) for p in rule.all):
        return False
    if rule.any and not any(_found(root, p, keys, keyset) for p in rule.any):
        return False
    return not any(_found(root, p, keys, keyset) for p in rule.none)


def _arch_hint(name: str, root: str, keys: list[str], keyset: set[str], ckpt: Checkpoint) -> str | None:
    for arch, rule in reg.registry().detect.get(name, []):
        if rule.config:
            sidecar = ckpt.sidecar("hf-config")
            content = sidecar.content if sidecar is not None else None
            if not isinstance(content, dict) or content.get("model_type") not in rule.config:
                continue
        if _holds(rule, root, keys, keyset):
            return arch
    return None


def recognise(keys: Collection[str], arch: str) -> bool:
    """Whether ``keys`` (relative to the model's root) are ``arch``'s: one of its detect rules with key
    conditions holds (CLIPPO: ``img/`` + ``t``, no ``txt/``, no ``b``)."""
    rules = [
        r
        for fam in reg.registry().families
        for r in fam.head.detect
        if r.arch == arch and (r.all or r.any or r.none) and not r.config
    ]
    ordered = list(keys)
    return any(_holds(r, "", ordered, keys) for r in rules)


def profile_of(arch: str | None, keys: Collection[str]) -> str | None:
    """The preprocessing profile (``siglip``, ``clippo``) of a checkpoint: from its weights first (a CLIPPO file
    checked as SigLIP is still CLIPPO), else the expected architecture's."""
    profiles = reg.profiles()
    for name, prof in profiles.items():
        if prof["keys"] and any(matches(k, prof["keys"]) for k in keys):
            return name
    for name, prof in profiles.items():
        if prof.get("arch") and recognise(keys, prof["arch"]):
            return name
    registry = reg.registry()
    return registry.arch(arch)[1].profile if arch in registry.archs else None


# ---- an architecture's parameters, read back from a checkpoint ---------------------------------------------------
def find_anchor(tensors: Mapping[str, Any], anchor: Anchor) -> list[tuple[str, str]]:
    """Every (prefix, key) where the anchor key ends a checkpoint key at a name boundary (and has its rank)."""
    hits = []
    for key, info in tensors.items():
        if not key.endswith(anchor.key):
            continue
        prefix = key[: len(key) - len(anchor.key)]
        if prefix and prefix[-1] not in "./":
            continue
        if anchor.rank is not None and len(info.shape) != anchor.rank:
            continue
        hits.append((prefix, key))
    return hits


def module_roots(tensors: Mapping[str, Any], module: str, family: str) -> list[str]:
    """Where the module ``module`` (its anchors) sits in ``tensors``: every root, shortest first."""
    _, _, mod = reg.registry().module(module, family)
    roots = {p for a in (mod.infer.anchor if mod.infer else []) for p, _ in find_anchor(tensors, a)}
    return sorted(roots, key=len)


class _Hit(NamedTuple):
    index: int  # position of the group among the spec's tower groups
    group: Group
    prefix: str  # checkpoint prefix of the module's keys
    key: str  # the anchor key found
    root: str | None  # prefix minus the group's own prefix, when the module sits where the spec puts it
    anchor: int = 0  # which of the module's anchors (the first one is the best evidence)


@record
class Found:
    """A tower located in the checkpoint."""

    tower: str
    module: str  # "framework:module", as reports name it ("hf:clip_vision")
    family: str  # the family that declares the module
    prefix: str  # checkpoint prefix of the module's keys
    anchor: str  # the checkpoint key that located it
    native: bool  # found by one of the spec's own groups, at the place the spec puts it
    values: dict[str, Any] = field(default_factory=dict)  # in the spec's parameter names
    observed: set[str] = field(default_factory=set)
    evidence: dict[str, str] = field(default_factory=dict)


@record
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
    family: str = ""  # the spec's own family

    def summary(self, ckpt: Checkpoint) -> str:
        """One line for Expected.params['inferred_from']."""
        if self.config:
            return self.config
        parts = []
        for f in sorted(self.found, key=lambda f: f.tower != "vision"):
            shape = list(ckpt.tensors[f.anchor].shape)
            if f.native:
                where = ""
            elif f.family == self.family:
                where = f" (a {f.module} tower, not where the spec puts it)"
            else:
                where = f" ({f.module.split(':')[0]} layout)"
            parts.append(f"{f.anchor} {shape}{where}")
        return "; ".join(parts)


def infer(spec: ArchSpec, ckpt: Checkpoint) -> Inference:
    """Locate ``spec``'s towers in ``ckpt`` and read their parameters (a declaration such as config.json first).

    A tower found where the spec puts it (under the root that places the most towers) is read with the spec's own
    module; one the spec's modules cannot find is looked for with every other family's modules (the checkpoint may
    be in another layout), and only its geometry (width, depth, patch...) carries over.
    """
    result = Inference(family=spec.family)
    tensors = ckpt.tensors
    order = {k: i for i, k in enumerate(tensors)}
    registry = reg.registry()

    # 1. every place one of the spec's own tower modules sits
    hits: list[_Hit] = []
    for index, group in enumerate(spec.tower_groups):
        _, _, module = registry.module(group.use or "", spec.family)
        for ai, anchor in enumerate(module.infer.anchor if module.infer else []):
            for prefix, key in find_anchor(tensors, anchor):
                if not _is_tower(module.infer.probes, tensors, prefix):
                    continue
                gp = group.prefix
                root = prefix[: len(prefix) - len(gp)] if prefix.endswith(gp) else None
                hits.append(_Hit(index, group, prefix, key, root, ai))

    # 2. the root that puts the most towers where the spec puts them (then: shortest, earliest in the file)
    towers_at: dict[str, set[str]] = {}
    for hit in hits:
        if hit.root is not None:
            towers_at.setdefault(hit.root, set()).add(hit.group.tower or "")
    if towers_at:
        first = {r: min(order[h.key] for h in hits if h.root == r) for r in towers_at}
        result.root = min(towers_at, key=lambda r: (-len(towers_at[r]), len(r), first[r]))

    # 3. each tower: natively under the root, else wherever any family's module finds it
    for tower in dict.fromkeys(g.tower or "" for g in spec.tower_groups):
        native = [h for h in hits if h.group.tower == tower and h.root is not None and h.root == result.root]
        if native:
            hit = min(native, key=lambda h: (h.index, h.anchor, order[h.key]))
            found = _read_tower(
                spec, hit.group, hit.group.use or "", hit.prefix, hit.key, tensors, native=True
            )
        else:
            found = _foreign_tower(spec, tower, tensors, order)
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
    if result.root is not None and spec.infer.probes:
        seed = {**spec.params, **result.guessed, **result.observed}
        values, observed, evidence = run_probes(spec.infer.probes, tensors, result.root, seed)
        for name in observed:
            result.observed.setdefault(name, values[name])
        for name, value in values.items():
            if name not in observed and name not in result.observed:
                result.guessed.setdefault(name, value)
        result.evidence.update({k: v for k, v in evidence.items() if k not in result.evidence})

    # 5. a declaration that describes this architecture decides (as from_pretrained does)
    declared = _from_config(spec, ckpt)
    if declared is not None:
        values, note = declared
        result.observed.update(values)
        result.evidence.update(dict.fromkeys(values, note))
        result.config = note
    return result


def _is_tower(probes: dict[str, list[Probe]], tensors: Mapping[str, TensorInfo], prefix: str) -> bool:
    """An anchor hit is a tower only if its blocks are there too (``token_embedding.weight`` also ends HF's
    ``text_model.embeddings.token_embedding.weight``, which is no open_clip text tower)."""
    if "depth" not in probes:
        return True
    _, observed, _ = run_probes({"depth": probes["depth"]}, tensors, prefix, {})
    return "depth" in observed


def _read_tower(
    spec: ArchSpec,
    group: Group,
    ref: str,
    prefix: str,
    anchor_key: str,
    tensors: Mapping[str, TensorInfo],
    native: bool,
) -> Found:
    fam, mod_name, module = reg.registry().module(ref, spec.family)
    probes = module.infer.probes if module.infer else {}
    values, observed, evidence = run_probes(probes, tensors, prefix, {})
    # group `with` binds module names to the spec's: {"width": "text_width"} reads back as width -> text_width
    inverse = {
        local: src for local, src in group.with_.items() if isinstance(src, str) and src.isidentifier()
    }
    found = Found(group.tower or "", f"{fam.framework}:{mod_name}", fam.name, prefix, anchor_key, native)
    # the spec's own module found at another place (a plain ViT where CLIPPO nests it under img/) says everything
    # about it (its head's num_classes too); another family's module only its geometry
    own_fam, own_mod, _ = reg.registry().module(group.use or "", spec.family)
    same_module = (own_fam.name, own_mod) == (fam.name, mod_name)
    allowed = None if native or same_module else set(TRANSFERABLE[group.tower or "vision"])
    for local, value in values.items():
        if allowed is not None and local not in allowed:
            continue
        target = inverse.get(local, local)
        if target not in spec.namespace:
            continue
        found.values[target] = value
        if local in observed:
            found.observed.add(target)
        if local in evidence:
            found.evidence[target] = evidence[local]
    if native:
        for name, value in group.sets.items():
            found.values[name] = value
            found.observed.add(name)
    return found


def _foreign_tower(
    spec: ArchSpec, tower: str, tensors: Mapping[str, TensorInfo], order: dict[str, int]
) -> Found | None:
    """The tower as any family's module finds it (the spec's first group for it gives the names)."""
    own = next(g for g in spec.tower_groups if g.tower == tower)
    families = reg.registry().families
    ranked = [f for f in families if f.name == spec.family] + [f for f in families if f.name != spec.family]
    best: tuple[tuple[int, int, int, int], str, str, str] | None = None
    for fi, fam in enumerate(ranked):
        for mod_name, module in fam.part("modules").items():
            if module.infer is None or module.infer.tower != tower:
                continue
            for ai, anchor in enumerate(module.infer.anchor):
                for prefix, key in find_anchor(tensors, anchor):
                    if not _is_tower(module.infer.probes, tensors, prefix):
                        continue
                    rank = (len(prefix), fi, ai, order[key])
                    if best is None or rank < best[0]:
                        best = (rank, f"{fam.name}:{mod_name}", prefix, key)
    if best is None:
        return None
    _, ref, prefix, key = best
    return _read_tower(spec, own, ref, prefix, key, tensors, native=False)


def run_probes(
    probes: Mapping[str, list[Probe]], tensors: Mapping[str, TensorInfo], prefix: str, seed: dict[str, Any]
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
                if not alt.guess:
                    observed.add(name)
                    if key:
                        evidence[name] = key
                break
    return values, observed, evidence


def _probe(
    alt: Probe, tensors: Mapping[str, TensorInfo], prefix: str, env: dict[str, Any]
) -> tuple[bool, Any, str | None]:
    value = True if alt.value is None else alt.value
    try:
        if alt.key is not None:
            key = prefix + alt.key
            info = tensors.get(key)
            if info is None or not -len(info.shape) <= alt.dim < len(info.shape):
                return False, None, None
            x = info.shape[alt.dim]
            if alt.across is not None and len(info.shape) == 2 and isinstance(env.get(alt.across), int):
                other = info.shape[1 - alt.dim % 2]
                if other != env[alt.across] and x == env[alt.across]:  # stored transposed (CK109 says so)
                    x = other
            return True, (evaluate(alt.expr, {**env, "x": x}) if alt.expr is not None else x), key
        if alt.count is not None:
            template = pattern(alt.count)
            n = 0
            while n < MAX_COUNT and prefix + template.fill(i=n) in tensors:
                n += 1
            return (n > 0), n, prefix + alt.count.replace("{i}", "*")
        if alt.present is not None:
            key = prefix + alt.present
            return (key in tensors), value, key
        if alt.absent is not None:
            return (prefix + alt.absent not in tensors), value, None
        if alt.expr is not None:
            return True, evaluate(alt.expr, env), None
        return True, alt.value, None
    except SpecError:  # an expression needs a parameter no probe found: this alternative does not apply
        return False, None, None


def _from_config(spec: ArchSpec, ckpt: Checkpoint) -> tuple[dict[str, Any], str] | None:
    """The parameters the declaration next to the weights gives ``spec``, read by its adapter."""
    if spec.config is None:
        return None
    from ckptlint.declared.tables import declared_params

    return declared_params(spec, ckpt)
