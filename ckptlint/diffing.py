"""``ckptlint diff A B``: compare two checkpoints' headers, rename-aware.

Keys are compared as path components (so ``params/img/x`` in an npz and ``params.img.x`` in a torch file are
the same key). Keys of A that are not in B are then explained by *prefix rewrites* found from the data: the
``(prefix in A, prefix in B)`` pair that maps the most unmatched keys of A onto unmatched keys of B is taken,
applied, and the search repeats (``module.`` added by DDP, ``_orig_mod.`` by torch.compile, ``params/img/``
around a CLIPPO ViT...). Each rewrite is reported once with its key count, not key by key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckptlint.archs.pattern import KeyPattern
from ckptlint.checkpoint import Checkpoint
from ckptlint.model import Model
from ckptlint.renames import Key, find_prefix_renames

SCHEMA_VERSION = "1"


@dataclass(kw_only=True)
class Side(Model):
    """What one side of the comparison is."""

    path: str
    format: str
    layout: str = "unknown"
    key_sep: str
    num_tensors: int
    num_params: int
    num_bytes: int
    groups: list[str] = field(default_factory=list)


@dataclass(kw_only=True)
class PrefixRename(Model):
    """Every key of A starting with ``a_prefix`` is in B under ``b_prefix`` instead (written with each side's sep)."""

    a_prefix: str
    b_prefix: str
    count: int


@dataclass(kw_only=True)
class KeyPair(Model):
    a: str
    b: str


@dataclass(kw_only=True)
class ShapeChange(Model):
    a: str
    b: str
    a_shape: list[int]
    b_shape: list[int]


@dataclass(kw_only=True)
class DtypeChange(Model):
    a: str
    b: str
    a_dtype: str
    b_dtype: str


@dataclass(kw_only=True)
class MappingUse(Model):
    """A known conversion table (a family file's ``[[conversions]]``) that explains keys of A as keys of B."""

    name: str
    title: str
    reverse: bool  # True when A is the mapping's ``b`` framework
    a_prefix: str = ""  # a wrapper prefix of A taken off before mapping (``module.``)
    renamed: int = 0
    split: int = 0  # A tensors that are several tensors in B (fused qkv -> q/k/v), or the reverse
    reshaped: int = 0  # pairs whose values are the same but stored transposed/reshaped


@dataclass(kw_only=True)
class DiffResult(Model):
    """The whole comparison; ``ckptlint diff --format json`` is this model."""

    schema_version: str = SCHEMA_VERSION
    a: Side
    b: Side
    layout_change: str | None = None  # "open_clip → hf" when the detected layouts differ
    separator_change: str | None = None  # "'/' → '.'"
    mapping: MappingUse | None = None
    renames: list[PrefixRename] = field(default_factory=list)
    renamed: list[KeyPair] = field(default_factory=list)  # every key pair matched through a rename
    only_a: list[str] = field(default_factory=list)
    only_b: list[str] = field(default_factory=list)
    shape_changes: list[ShapeChange] = field(default_factory=list)
    dtype_changes: list[DtypeChange] = field(default_factory=list)
    metadata_changes: list[str] = field(default_factory=list)  # embedded metadata keys that differ
    identical: bool = False


def _split(key: str, sep: str) -> Key:
    return tuple(key.split(sep)) if sep else (key,)


def _join(parts: Key, sep: str, trailing: bool) -> str:
    if not parts:
        return ""
    return sep.join(parts) + (sep if trailing else "")


Rule = tuple[list[KeyPattern], list[KeyPattern], str]  # (a templates, b templates, shape relation)


def _mappings() -> list[tuple[str, str, list[Rule]]]:
    """The conversion tables of the family files: (name, title, [([from...], [to...], op)])."""
    from ckptlint.archs.registry import cached

    return cached("diff_mappings", _build_mappings)


def _build_mappings(_: Any) -> list[tuple[str, str, list[Rule]]]:
    """Every conversion table's rows (includes expanded): the same tables ``convert`` and CK104 use."""
    from ckptlint.archs.registry import conversions
    from ckptlint.convert.tables import direction

    out = []
    for conv in conversions():
        rules: list[Rule] = []
        for row in direction(conv, False).rows:
            if not row.ins:  # a tensor the table makes (a zero bias): nothing of A maps to it
                continue
            shape = "split" if len(row.ins) != len(row.outs) else next((k for k, _ in row.ops), "")
            rules.append((list(row.ins), list(row.outs), shape))
        out.append((conv.name, conv.title, rules))
    return out


def _apply_mapping(
    rules: list[Rule], keys: list[str], targets: set[str], reverse: bool
) -> tuple[dict[str, list[str]], dict[str, str]]:
    """``a key -> [b keys]`` for every key a rule maps onto existing targets, and ``a key -> shape relation``."""
    mapped: dict[str, list[str]] = {}
    relation: dict[str, str] = {}
    for key in keys:
        for a_tpls, b_tpls, shape in rules:
            src, dst = (b_tpls, a_tpls) if reverse else (a_tpls, b_tpls)
            hit = next((c for t in src if (c := t.match(key)) is not None), None)
            if hit is None:
                continue
            outs = [t.fill(**hit) for t in dst] if len(src) == 1 else [dst[0].fill(**hit)]
            if all(o in targets for o in outs):
                mapped[key] = outs
                relation[key] = shape
            break
    return mapped, relation


def find_mapping(
    a_keys: list[str], b_keys: set[str]
) -> tuple[MappingUse, dict[str, list[str]], dict[str, str]] | None:
    """The known framework mapping that explains the most of ``a_keys`` (at least half of them, and 3)."""
    if len(a_keys) < 3 or not b_keys:
        return None
    tops = {k.split(".", 1)[0] for k in a_keys}
    prefixes = [""] + ([next(iter(tops)) + "."] if len(tops) == 1 and all("." in k for k in a_keys) else [])
    best = None
    for prefix in prefixes:
        stripped = {k[len(prefix) :]: k for k in a_keys}
        for name, title, rules in _mappings():
            for reverse in (False, True):
                mapped, relation = _apply_mapping(rules, list(stripped), b_keys, reverse)
                if best is None or len(mapped) > len(best[1]):
                    use = MappingUse(name=name, title=title, reverse=reverse, a_prefix=prefix)
                    best = (
                        use,
                        {stripped[k]: v for k, v in mapped.items()},
                        {stripped[k]: v for k, v in relation.items()},
                    )
    if best is None or len(best[1]) < max(3, len(a_keys) // 2):
        return None
    return best


def _side(ckpt: Checkpoint, layout: str) -> Side:
    return Side(
        path=ckpt.path,
        format=ckpt.format,
        layout=layout,
        key_sep=ckpt.key_sep,
        num_tensors=len(ckpt.tensors),
        num_params=ckpt.num_params,
        num_bytes=ckpt.total_bytes,
        groups=list(ckpt.groups),
    )


def diff_checkpoints(
    a: Checkpoint, b: Checkpoint, layout_a: str = "unknown", layout_b: str = "unknown"
) -> DiffResult:
    """Compare two checkpoints' tensor headers (no tensor data is read)."""
    a_by = {_split(k, a.key_sep): k for k in a.tensors}
    b_by = {_split(k, b.key_sep): k for k in b.tensors}
    pairs: list[tuple[Key, Key]] = [(k, k) for k in a_by if k in b_by]
    result = DiffResult(a=_side(a, layout_a), b=_side(b, layout_b))
    if layout_a != layout_b:
        result.layout_change = f"{layout_a} → {layout_b}"
    if a.key_sep != b.key_sep:
        result.separator_change = f"{a.key_sep!r} → {b.key_sep!r}"
    skip_shape: set[tuple[Key, Key]] = set()
    if a.key_sep == b.key_sep == ".":
        left_a = [k for parts, k in a_by.items() if parts not in b_by]
        left_b = {k for parts, k in b_by.items() if parts not in a_by}
        found = find_mapping(left_a, left_b)
        if found is not None:
            use, mapped, relation = found
            for ka, kbs in mapped.items():
                for kb in kbs:
                    pairs.append((_split(ka, "."), _split(kb, ".")))
                    result.renamed.append(KeyPair(a=ka, b=kb))
                    if relation[ka]:  # transposed/reshaped/split values: a different shape is expected
                        skip_shape.add(pairs[-1])
            use.split = sum(1 for v in relation.values() if v == "split")
            use.renamed = len(relation) - use.split
            use.reshaped = sum(1 for v in relation.values() if v in ("transpose", "reshape"))
            result.mapping = use
    matched_a = {x for x, _ in pairs}
    matched_b = {y for _, y in pairs}
    a_sig = {
        p: (tuple(a.tensors[k].shape), a.tensors[k].dtype) for p, k in a_by.items() if p not in matched_a
    }
    b_sig = {
        p: (tuple(b.tensors[k].shape), b.tensors[k].dtype) for p, k in b_by.items() if p not in matched_b
    }
    for pa, pb, matched in find_prefix_renames(a_sig, b_sig):
        result.renames.append(
            PrefixRename(
                a_prefix=_join(pa, a.key_sep, trailing=True),
                b_prefix=_join(pb, b.key_sep, trailing=True),
                count=len(matched),
            )
        )
        result.renamed += [KeyPair(a=a_by[x], b=b_by[y]) for x, y in matched]
        pairs += matched
    matched_a = {x for x, _ in pairs}
    matched_b = {y for _, y in pairs}
    result.only_a = [k for parts, k in a_by.items() if parts not in matched_a]
    result.only_b = [k for parts, k in b_by.items() if parts not in matched_b]
    for x, y in pairs:
        ka, kb = a_by[x], b_by[y]
        ta, tb = a.tensors[ka], b.tensors[kb]
        if tuple(ta.shape) != tuple(tb.shape) and (x, y) not in skip_shape:
            result.shape_changes.append(
                ShapeChange(a=ka, b=kb, a_shape=list(ta.shape), b_shape=list(tb.shape))
            )
        if ta.dtype != tb.dtype:
            result.dtype_changes.append(DtypeChange(a=ka, b=kb, a_dtype=ta.dtype, b_dtype=tb.dtype))
    result.metadata_changes = sorted(
        k for k in set(a.metadata) | set(b.metadata) if _plain(a.metadata.get(k)) != _plain(b.metadata.get(k))
    )
    result.identical = not (
        result.renamed
        or result.only_a
        or result.only_b
        or result.shape_changes
        or result.dtype_changes
        or result.separator_change
    )
    return result


def _plain(value: Any) -> str:
    return repr(value)


def diff_paths(path_a: str, path_b: str) -> DiffResult:
    """Read both checkpoints header-only and compare them."""
    from ckptlint.archs.detect import detect_layout
    from ckptlint.readers import read_checkpoint

    a = read_checkpoint(path_a)
    b = read_checkpoint(path_b)
    return diff_checkpoints(a, b, detect_layout(a).name, detect_layout(b).name)
