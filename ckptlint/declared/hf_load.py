"""transformers' ``from_pretrained`` key handling, re-implemented on tensor headers: what its loading report says.

Given a checkpoint's tensors (names, shapes), the model's expected ``state_dict()`` and the loading plan of the class
(``plan``: base-model prefix, tied weights, ignore patterns, key conversions), ``load`` gives exactly what
``from_pretrained(..., output_loading_info=True, ignore_mismatched_sizes=True)`` reports — missing, unexpected and
mismatched keys — plus the conversion errors it logs but leaves out of that report. It follows transformers 5's
``convert_and_load_state_dict_in_model``, ``tie_weights`` and ``_adjust_missing_and_unexpected_keys``:

1. checkpoint keys, in transformers' natural order, are renamed by every renaming transform in turn, then by at
   most one converter; the base-model prefix is added or stripped when that names a model key;
2. a key that names a model key loads into it (a converter's keys are gathered and converted: experts stacked,
   gate/up concatenated, qkv chunked — here on shapes only); other keys are unexpected;
3. a loaded key whose shape differs is mismatched, never missing; a tied key is taken from its source (or the
   source from it) when one of the two was loaded;
4. the class's ``_keys_to_ignore_on_load_*`` patterns (and ``rotary_emb.inv_freq`` / ``position_ids`` when the
   model has such buffers) are dropped from the report.

Nothing here imports torch or transformers; regular expressions come from the family files (transformers' own,
recorded by ``scripts/gen_hf_families.py``) or from the installed transformers (tier b).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from ckptlint.archs.expr import evaluate
from ckptlint.archs.schema import HfLoad
from ckptlint.checkpoint import TensorInfo, tensor_info

Shape = tuple[int, ...]


@dataclass
class Loaded:
    """The checkpoint as the model sees it after loading, and transformers' loading report."""

    view: dict[str, TensorInfo]  # loaded and unexpected keys, under the model's names (after conversions)
    origin: dict[str, list[str]]  # view key -> the checkpoint keys it came from
    missing: list[str]
    unexpected: list[str]
    mismatched: list[tuple[str, Shape, Shape]]  # key, expected, actual
    conversion_errors: dict[str, str] = field(default_factory=dict)  # first target key -> why
    tied: dict[str, str] = field(default_factory=dict)  # key -> the key it was tied to (loaded from)
    unverified: list[str] = field(default_factory=list)  # conversions ckptlint cannot follow (shapes assumed)


def plan(hf: HfLoad, params: Mapping[str, Any]) -> dict[str, Any]:
    """A family file's ``[archs.NAME.hf]`` for one set of parameters: the ``Expected.load`` dict."""
    env = dict(params)
    return {
        "kind": "transformers",
        "model_type": hf.model_type,
        "base_prefix": hf.base_prefix,
        "tied": {t.target: t.source for t in hf.tied if t.when is None or evaluate(t.when, env)},
        "ignore_missing": list(hf.ignore_missing),
        "ignore_unexpected": list(hf.ignore_unexpected),
        "transforms": [t.to_dict(by_alias=True, exclude_defaults=True) for t in hf.transforms],
    }


# ---- renaming (transformers' WeightTransform.rename_source_key) --------------------------------------------
@cache
def _regex(text: str) -> re.Pattern[str]:
    return re.compile(text)


def _rename(t: Mapping[str, Any], key: str) -> tuple[str, str | None]:
    """``key`` renamed by one transform, and the source pattern that matched (None: no match)."""
    prefix: str | None = None
    to_match = key
    scope = t.get("scope")
    if scope is not None:
        s = f"{scope}." if scope != "" else ""
        base = t.get("base") or ""
        b = f"{base}." if base != "" else ""
        if key.startswith(b + s):
            prefix = b + s
        elif key.startswith(s):
            prefix = s
        else:
            return key, None
        to_match = key.removeprefix(prefix)
    rx = _regex(t["regex"])
    m = rx.search(to_match)
    if m is None:
        return key, None
    group = next(name for name, value in m.groupdict().items() if value is not None)
    source = t["sources"][int(group[1:])]
    replacement = t["targets"][0]
    if "\\1" in replacement:
        replacement = replacement.replace("\\1", m.group(rx.groupindex[group] + 1))
    out = to_match.replace(m.group(0), replacement, 1)
    return (prefix + out if prefix is not None else out), source


def rename_key(
    key: str,
    renames: list[Mapping[str, Any]],
    converters: list[Mapping[str, Any]],
    base: str,
    meta: Mapping[str, Any],
) -> tuple[str, str | None]:
    """All renamings in turn, then at most one converter, then the base-model prefix (added or stripped)."""
    for t in renames:
        key, _ = _rename(t, key)
    source = None
    for t in converters:
        key, source = _rename(t, key)
        if source is not None:
            break
    return _base_prefix(key, base, meta), source


def _base_prefix(key: str, base: str, meta: Mapping[str, Any]) -> str:
    # transformers builds these patterns from base_model_prefix unescaped; so does this
    stripped = re.sub(f"^{base}.", "", key, count=1)
    if key.startswith(base) and stripped in meta:
        return stripped
    if f"{base}.{key}" in meta:
        return f"{base}.{key}"
    return key


def natural_key(key: str) -> list[tuple[Any, ...]]:
    """transformers' ``dot_natural_key``: numbers compare as numbers (layers.2 before layers.10)."""
    parts: list[tuple[Any, ...]] = []
    for part in key.split("."):
        if part.isdigit():
            parts.append((0, int(part)))
        else:
            text = part.rstrip("0123456789")
            digits = part[len(text) :]
            parts.append((1, text, int(digits)) if digits else (1, text))
    return parts


# ---- converting (shapes of MergeModulelist, Concatenate, Chunk, Transpose) ----------------------------------
class ConversionError(Exception):
    """What makes transformers' conversion op fail (logged in its conversion_errors, the key skipped)."""


def _convert(
    conv: Mapping[str, Any], collected: dict[str, list[Shape]], first: str, meta: Mapping[str, Shape]
) -> dict[str, Shape]:
    """The converted shapes of one converter's gathered tensors, under their full model names."""
    data: dict[str, Any] = dict(collected)
    for op in conv.get("ops", []):
        data = _op(op, data, conv["sources"], conv["targets"], first, meta)
    full = first.replace("*.", "0.") if "*." in first else first
    hit = next((k for k in data if k in full), None)
    if hit is None:
        return {k: _one(v) for k, v in data.items()}
    head, _, tail = full.partition(hit)
    return {head + k + tail: _one(v) for k, v in data.items()}


def _one(value: Any) -> Shape:
    return value[0] if isinstance(value, list) else value


def _op(
    op: Mapping[str, Any],
    data: dict[str, Any],
    sources: list[str],
    targets: list[str],
    first: str,
    meta: Mapping[str, Shape],
) -> dict[str, Any]:
    name = op["op"]
    dim = int(op.get("dim", 0))
    if name == "MergeModulelist":
        out = {}
        n_inputs = len(data)
        for src in list(data):
            shapes = data.pop(src)
            if n_inputs == 1 and len(targets) != 1:
                raise ConversionError("Undefined Operation encountered!")
            target = targets[0] if n_inputs == 1 else src
            out[target] = _stack(shapes, dim) if isinstance(shapes, list) else shapes
        return out
    if name == "Concatenate":
        if len(targets) > 1:
            raise ConversionError("Undefined Operation encountered!")
        parts: list[Shape] = []
        for src in sources:
            if src in data:
                value = data.pop(src)
                parts.extend(value if isinstance(value, list) else [value])
        return {targets[0]: _cat(parts, dim)}
    if name == "Chunk":
        if len(data) > 1 or op.get("num_shards_attribute"):
            raise ConversionError("Undefined Operation encountered")
        shape = _one(next(iter(data.values())))
        return dict(zip(targets, _chunk(shape, len(targets), dim), strict=False))
    if name == "Transpose":
        if len(data) != 1:
            raise ConversionError("Undefined Operation encountered!")
        if len(targets) > 1:
            if len(sources) != 1:
                raise ConversionError("Undefined Operation encountered!")
            target = sources[0]
        else:
            target = targets[0]
        shape = _one(next(iter(data.values())))
        d0, d1 = int(op.get("dim0", 0)), int(op.get("dim1", 1))
        if op.get("check_dims") and meta.get(first) == shape:
            return {target: shape}
        return {target: _transpose(shape, d0, d1)}
    raise _Unsupported(name)


class _Unsupported(Exception):
    pass


def _norm(dim: int, rank: int) -> int:
    if not -rank <= dim < max(rank, 1):
        raise ConversionError(
            f"Dimension out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})"
        )
    return dim % rank if rank else 0


def _stack(shapes: list[Shape], dim: int) -> Shape:
    if not shapes:
        raise ConversionError("stack expects a non-empty TensorList")
    if any(s != shapes[0] for s in shapes):
        raise ConversionError(
            f"stack expects each tensor to be equal size, but got {list(shapes[0])} and others"
        )
    d = _norm(dim, len(shapes[0]) + 1)
    return (*shapes[0][:d], len(shapes), *shapes[0][d:])


def _cat(shapes: list[Shape], dim: int) -> Shape:
    if not shapes:
        raise ConversionError("torch.cat(): expected a non-empty list of Tensors")
    rank = len(shapes[0])
    d = _norm(dim, rank)
    for s in shapes[1:]:
        if len(s) != rank or any(a != b for i, (a, b) in enumerate(zip(s, shapes[0], strict=True)) if i != d):
            raise ConversionError(
                f"Sizes of tensors must match except in dimension {d}. Expected {list(shapes[0])} but got {list(s)}"
            )
    return (*shapes[0][:d], sum(s[d] for s in shapes), *shapes[0][d + 1 :])


def _chunk(shape: Shape, n: int, dim: int) -> list[Shape]:
    d = _norm(dim, len(shape))
    size = shape[d]
    if n <= 0:
        raise ConversionError("chunk expects `chunks` to be greater than 0")
    step = math.ceil(size / n) if size else 0
    if step == 0:
        return [shape] * n
    out = []
    for start in range(0, size, step):
        out.append((*shape[:d], min(step, size - start), *shape[d + 1 :]))
    return out


def _transpose(shape: Shape, d0: int, d1: int) -> Shape:
    a, b = _norm(d0, len(shape)), _norm(d1, len(shape))
    s = list(shape)
    s[a], s[b] = s[b], s[a]
    return tuple(s)


# ---- loading -----------------------------------------------------------------------------------------------
def load(tensors: Mapping[str, TensorInfo], expected: Mapping[str, Shape], plan: Mapping[str, Any]) -> Loaded:
    """What ``from_pretrained`` makes of ``tensors`` for a model whose ``state_dict()`` shapes are ``expected``."""
    transforms = plan.get("transforms", [])
    renames = [t for t in transforms if t["kind"] == "rename"]
    converters = [t for t in transforms if t["kind"] == "convert"]
    by_pattern = {src: conv for conv in converters for src in conv["sources"]}
    base = plan.get("base_prefix", "")
    missing = dict.fromkeys(expected)
    unexpected: dict[str, None] = {}
    view: dict[str, TensorInfo] = {}
    origin: dict[str, list[str]] = {}
    # target key -> (converter or None, {source pattern: [original keys]})
    gathered: dict[str, tuple[Mapping[str, Any] | None, dict[str, list[str]]]] = {}
    for key in sorted(tensors, key=natural_key):
        renamed, source = rename_key(key, renames, converters, base, expected)
        if renamed not in expected and key in expected:
            renamed, source = _base_prefix(key, base, expected), None
        if renamed in expected:
            conv = by_pattern[source] if source is not None else None
            entry = gathered.setdefault(renamed, (conv, {}))
            entry[1].setdefault(source if source is not None else key, []).append(key)
        elif source is not None:
            targets = by_pattern[source]["targets"]
            for t in targets:
                name = renamed.replace(targets[0], t)
                unexpected[name] = None
                view.setdefault(name, tensors[key])
                origin.setdefault(name, []).append(key)
        else:
            unexpected[renamed] = None
            view.setdefault(renamed, tensors[key])
            origin.setdefault(renamed, []).append(key)
    mismatched: dict[str, tuple[Shape, Shape]] = {}
    errors: dict[str, str] = {}
    unverified: list[str] = []
    for first, (conv, sources) in gathered.items():
        if conv is None:
            original = next(iter(sources.values()))[0]
            results = {first: tuple(tensors[original].shape)}
            used = [original]
        else:
            collected = {p: [tuple(tensors[k].shape) for k in keys] for p, keys in sources.items()}
            used = [k for keys in sources.values() for k in keys]
            try:
                results = _convert(conv, collected, first, expected)
            except ConversionError as exc:
                ops = ", ".join(str(o["op"]) for o in conv.get("ops", []))
                errors[first] = (
                    f"{exc}\nError: {ops} on tensors destined for {first}. Ckpt contains: {len(collected)}"
                )
                continue
            except _Unsupported as exc:
                unverified.append(f"{first} ({exc})")
                results = {first: expected[first]}
        for target, shape in results.items():
            info = _info(shape, [tensors[k] for k in used])
            if target not in expected:
                unexpected[target] = None
                view.setdefault(target, info)
                origin.setdefault(target, []).extend(used)
                continue
            missing.pop(target, None)
            view[target] = info
            origin[target] = used
            if tuple(shape) != tuple(expected[target]):
                mismatched[target] = (tuple(expected[target]), tuple(shape))
    tied = _tie(plan.get("tied", {}), missing)
    out_missing = _keep(missing, plan.get("ignore_missing", []))
    out_unexpected = _keep(unexpected, plan.get("ignore_unexpected", []))
    return Loaded(
        view=view,
        origin=origin,
        missing=out_missing,
        unexpected=out_unexpected,
        mismatched=[(k, e, a) for k, (e, a) in mismatched.items()],
        conversion_errors=errors,
        tied=tied,
        unverified=unverified,
    )


def _info(shape: Shape, sources: list[TensorInfo]) -> TensorInfo:
    if len(sources) == 1 and tuple(sources[0].shape) == tuple(shape):
        return sources[0]
    return tensor_info(shape, sources[0].dtype)


def _tie(tied: Mapping[str, str], missing: dict[str, None]) -> dict[str, str]:
    """transformers' ``tie_weights(missing_keys=...)``: symmetric, from whichever side was loaded."""
    done: dict[str, str] = {}
    pairs = list(tied.items())
    for i, (target, source) in enumerate(pairs):
        source_there = source not in missing
        target_there = target not in missing
        remove = True
        if source_there and target_there:
            continue  # both loaded: tied only when their values are equal, which headers cannot tell
        if not source_there and target_there:
            target, source = source, target
        elif not source_there and not target_there:
            for later_target, later_source in pairs[i + 1 :]:
                if later_source == source and later_target not in missing:
                    source = later_target
                    break
            else:
                remove = False
        if remove:
            missing.pop(target, None)
            done[target] = source
    return done


def _keep(keys: dict[str, None], patterns: list[str]) -> list[str]:
    if not patterns:
        return list(keys)
    rx = _regex("|".join(f"({p})" for p in patterns))
    return [k for k in keys if rx.search(k) is None]
