"""Where the weights contradict their own declaration (CK113): one root cause per declared field.

One mechanism for every kind of declaration (``ckptlint.declared``): the declared model is rebuilt with one field
changed to a value the weights suggest, and the change that explains the most open differences (missing,
unexpected or resized keys of the raw diff) without adding others is kept; then the next, from the model so
corrected, until no change explains anything more. The values tried for a field: what the family's probes read
from the weights (the detector's, as for an inferred architecture, and the architecture's own probes on the
loader's key view), the weights' size of a mismatched dimension, the number of blocks the file holds, the other
value of a flag. Rebuilding is the adapter's (``lookup.rebuild``): a table adapter computes the derived
parameters again, transformers' config class its defaults, tier (b) transformers itself.

The same pass names what a loader does beyond shapes (``refused``, ``conversions``, ``base_under_task``): a config
the library refuses (its own checks), a key conversion transformers fails on (its ``conversion_errors``, which
``output_loading_info`` leaves out), and base-model weights under a task model whose head is neither in the file
nor tied. Nothing here reads files.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ckptlint.archs import detect
from ckptlint.archs import registry as reg
from ckptlint.archs.expr import SpecError, evaluate
from ckptlint.archs.spec import MAX_REPEAT, load_arch
from ckptlint.declared import diff_entries, loaded
from ckptlint.declared.lookup import rebuild
from ckptlint.keygroups import some

if TYPE_CHECKING:
    from ckptlint.expected import Expected
    from ckptlint.rules._context import Context

MAX_ROUNDS = 8
MAX_CANDIDATES = 6
MAX_TRIALS = 64  # values tried for a refused field whose value no contradiction found
_NUM = re.compile(r"\.(\d+)\.")
Entry = tuple[str, str]  # ("missing" | "unexpected" | "shape", key)


@dataclass
class Contradiction:
    """One declared parameter the weights contradict, and the diff entries it explains."""

    param: str
    field: (
        str  # the file's field named: the one behind the parameter, or the input a derived one is edited by
    )
    declared: Any
    observed: Any
    evidence: str  # "positional_embedding [16, 32]"
    suggest: tuple[str, Any] | None  # (field, value) that makes the declaration agree, when one field can
    given: bool  # the file sets the field (else the library's default decided)
    field_value: Any = None  # the edited field's declared value, when the parameter is computed from it
    counted: bool = False  # the parameter is the number of a field's entries (num_labels: id2label)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)  # view keys
    shape: list[str] = field(default_factory=list)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return bool(a) == bool(b)
    return a == b


def _open(ctx: Context) -> set[Entry]:
    return (
        {("missing", k) for k in ctx.missing}
        | {("unexpected", k) for k in ctx.unexpected}
        | {("shape", k) for k in ctx.shape}
    )


# ---- one field at a time -------------------------------------------------------------------------------------
def find(ctx: Context, info: dict[str, Any]) -> list[Contradiction]:
    """Every declared parameter the weights contradict, most explaining first, each with the entries it explains
    (consumed from the diff)."""
    current = rebuild(ctx.ckpt, info, {})
    inferred = _inferred(ctx, current) if current is not None else None
    if current is None or inferred is None:
        return []
    observed, evidence = inferred
    derived = info.get("derived", {})
    params = [p for p, f in info.get("fields", {}).items() if f or p in derived]
    open_entries = _open(ctx)
    current_all = diff_entries(ctx, current)
    chosen: dict[str, Any] = {}
    out: list[Contradiction] = []
    for _ in range(MAX_ROUNDS):
        if not open_entries:
            break
        best: tuple[int, str, Any, str | None, Expected, set[Entry], set[Entry]] | None = None
        for p in params:
            if p in chosen:
                continue
            for value, key in _candidates(ctx, current, p, observed, evidence)[:MAX_CANDIDATES]:
                trial = rebuild(ctx.ckpt, info, {**chosen, p: value})
                if trial is None:
                    continue
                after = diff_entries(ctx, trial)
                resolved = open_entries - after
                score = len(resolved) - 2 * len(after - current_all)
                if resolved and score > 0 and (best is None or score > best[0]):
                    best = (score, p, value, key, trial, resolved, after)
        if best is None:
            break
        _, p, value, key, trial, resolved, after = best
        out.append(_contradiction(ctx, info, current, p, value, key, resolved, observed))
        chosen[p] = value
        current, current_all = trial, after
        open_entries -= resolved
    return out


def _inferred(ctx: Context, exp: Expected) -> tuple[dict[str, Any], dict[str, str]] | None:
    """The parameters the family's detector reads from the weights (shapes alone, not the declaration), and the key
    behind each; None when a tower is in another framework's layout (CK104's story, not the declaration's)."""
    if exp.arch not in reg.registry().archs:
        return {}, {}
    bare = ctx.ckpt.model_copy(update={"sidecars": []})
    found = detect.infer(load_arch(exp.arch), bare)
    if any(not f.native for f in found.found):
        return None
    return dict(found.observed), dict(found.evidence)


def _candidates(
    ctx: Context, exp: Expected, p: str, observed: dict[str, Any], evidence: dict[str, str]
) -> list[tuple[Any, str | None]]:
    """(value, the key that shows it) of ``p`` the weights suggest: probes, mismatched sizes, block counts, the
    other flag value."""
    v0 = exp.params.get(p)
    if isinstance(v0, dict | list | float) or v0 is None:
        return []
    out: list[tuple[Any, str | None]] = [(observed[p], evidence.get(p))] if p in observed else []
    out += _probe_values(ctx, exp, p)
    if isinstance(v0, bool):
        out.append((not v0, None))
    elif isinstance(v0, int) and v0 > 0:
        for issue in ctx.shape.values():
            for e, a in zip(issue.expected, issue.actual, strict=False):
                if e == a:
                    continue
                if e == v0:
                    out.append((a, None))
                elif e > v0 and e % v0 == 0 and a % (e // v0) == 0:
                    out.append((a // (e // v0), None))
        out += [(n, None) for n in _counts(ctx, exp, v0)]
    seen: dict[Any, str | None] = {}
    for v, key in out:
        plausible = type(v) is type(v0) and (not isinstance(v, int) or isinstance(v, bool) or v >= 0)
        if plausible and not _same(v, v0) and v not in seen:
            seen[v] = key
    return list(seen.items())


def _probe_values(ctx: Context, exp: Expected, p: str) -> list[tuple[Any, str | None]]:
    """``p`` as each of the architecture's own probes reads it on the loader's key view (the other parameters as
    declared)."""
    if exp.arch not in reg.registry().archs:
        return []
    every = load_arch(exp.arch).infer.probes
    probes = every.get(p)
    if not probes:
        return []
    env = {k: v for k, v in exp.params.items() if k != p and not isinstance(v, dict)}
    # a default that divided by ``p`` (head_dim = hidden_size // 0): what the weights show without ``p``
    for q, v in list(env.items()):
        if v is None and q in every:
            values, seen, _ = detect.run_probes({q: every[q]}, ctx.view, "", env)
            if q in seen and isinstance(values[q], int):
                env[q] = values[q]
    out = []
    for probe in probes:
        values, seen, keys = detect.run_probes({p: [probe]}, ctx.view, "", env)
        if p in seen and isinstance(values[p], int):
            out.append((values[p], keys.get(p)))
    return out


def _counts(ctx: Context, exp: Expected, v0: Any) -> list[int]:
    """Block counts: a list whose model count is the declared value while the file holds another number (a count
    past MAX_REPEAT is built with one block more than the file holds: ``declared.hf``, ``declared.hf_live``)."""

    def counts(keys: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        for key in keys:
            for m in _NUM.finditer(key):
                head = key[: m.start()]
                out[head] = max(out.get(head, 0), int(m.group(1)) + 1)
        return out

    model, file = counts(exp.tensors), counts(ctx.view)
    return [
        file[h]
        for h, n in model.items()
        if h in file and file[h] != v0 and (n == v0 or (v0 > MAX_REPEAT and n == file[h] + 1))
    ]


# ---- a refused field the weights do not show -----------------------------------------------------------------
def buildable(
    ctx: Context, info: dict[str, Any], refusal: dict[str, Any]
) -> tuple[str, int, int, bool] | None:
    """(parameter, value, default, shapes) for a field of ``refusal`` whose value the contradictions did not find:
    the value nearest the library's default (else the declared one) with which the library accepts the config and
    the model matches the weights as well as before (``shapes``: the declared model could not be built — the
    shapes depend on the field — and the model built with it matches the weights; else they do not show the field
    and the loader's report stays as it is). None when no field of it has one within ``MAX_TRIALS`` rebuilds."""
    current = rebuild(ctx.ckpt, info, {})
    if current is None or current.arch not in reg.registry().archs:
        return None
    conf = load_arch(current.arch).config
    before = diff_entries(ctx, current) if current.tensors else set()
    for p in refusal.get("fields", []):
        v0 = current.params.get(p)
        if conf is None or p not in conf.params or not info.get("fields", {}).get(p):
            continue
        if not isinstance(v0, int) or isinstance(v0, bool):
            continue
        try:
            default = evaluate(conf.params[p][1], {**current.params, p: None})
        except SpecError:
            default = None
        if not isinstance(default, int) or isinstance(default, bool) or default <= 0:
            default = max(v0, 1)
        for value in [v for v in _nearest(default) if v != v0][:MAX_TRIALS]:
            trial = rebuild(ctx.ckpt, info, {p: value})
            if trial is None or not trial.tensors:
                continue
            if any(p in r.get("fields", []) for r in trial.params["declared"].get("refused", [])):
                continue
            if diff_entries(ctx, trial) == before:
                return p, value, default, not current.tensors
    return None


def _nearest(start: int) -> list[int]:
    """Positive values by their distance from ``start`` (the smaller first)."""
    out = [start]
    for d in range(1, MAX_TRIALS):
        out += [v for v in (start - d, start + d) if v > 0]
    return out


# ---- what a contradiction says -------------------------------------------------------------------------------
def _contradiction(
    ctx: Context,
    info: dict[str, Any],
    before: Expected,
    p: str,
    value: Any,
    key: str | None,
    resolved: set[Entry],
    observed: dict[str, Any],
) -> Contradiction:
    shape = ctx.consume_shape(sorted(k for kind, k in resolved if kind == "shape"))
    missing = ctx.consume_missing(sorted(k for kind, k in resolved if kind == "missing"))
    unexpected = ctx.consume_unexpected(sorted(k for kind, k in resolved if kind == "unexpected"))
    fields: dict[str, str] = info.get("fields", {})
    derived: dict[str, list[str]] = info.get("derived", {})
    given = set(info.get("given", []))
    suggest = _suggest(info, before, p, value, observed)
    inputs = [suggest[0]] if suggest else [p, *derived.get(p, ())]
    return Contradiction(
        param=p,
        field=fields[suggest[0]] if suggest else _field(info, p),
        declared=before.params.get(p),
        observed=value,
        evidence=_evidence(ctx, before, key, value, shape, missing, unexpected),
        suggest=(fields[suggest[0]], suggest[1]) if suggest else None,
        given=any(q in given for q in inputs),
        field_value=before.params.get(suggest[0]) if suggest and suggest[0] != p else None,
        counted=p in info.get("counted", []),
        missing=missing,
        unexpected=unexpected,
        shape=shape,
    )


def _field(info: dict[str, Any], p: str) -> str:
    fields: dict[str, str] = info.get("fields", {})
    if fields.get(p):
        return fields[p]
    inputs = [fields[q] for q in info.get("derived", {}).get(p, ()) if fields.get(q)]
    return " and ".join(dict.fromkeys(inputs)) or p


def _suggest(
    info: dict[str, Any], exp: Expected, p: str, value: Any, observed: dict[str, Any]
) -> tuple[str, Any] | None:
    """(parameter, value) of the one field that would make the declaration agree with the weights, when one can
    (for a derived parameter: an input the weights do not show, solved for; never a field that is not its value)."""
    if p in info.get("opaque", ()):
        return None
    if info.get("fields", {}).get(p):
        return p, value
    conf = load_arch(exp.arch).config if exp.arch in reg.registry().archs else None
    src = conf.derive.get(p) if conf is not None else None
    if src is None:
        return None
    for name in info.get("derived", {}).get(p, ()):
        if not info["fields"].get(name) or name in observed:
            continue
        current, declared = exp.params.get(name), exp.params.get(p)
        candidates: list[Any] = []
        if isinstance(current, bool):
            candidates = [not current]
        elif isinstance(current, int | float) and isinstance(value, int | float) and declared:
            candidates = [round(current * value / declared, 6)]
        if not isinstance(current, bool):
            candidates.append(None)  # an optional field left out (ls_init_value: null, no layer scale)
        for cand in candidates:
            try:
                if _same(evaluate(src, {**exp.params, name: cand}), value):
                    return name, cand
            except SpecError:
                continue
    return None


def _evidence(
    ctx: Context,
    before: Expected,
    key: str | None,
    value: Any,
    shape: list[str],
    missing: list[str],
    unexpected: list[str],
) -> str:
    """The key that shows the weights' value: the probe's (with its shape), else a resized, missing or extra key."""
    if key:
        info = ctx.view.get(key) or ctx.ckpt.tensors.get(key)
        if info is not None:
            return f"{key} {list(info.shape)}" + _declared_shape(before, key, shape)
        if isinstance(value, int) and value > 0 and "*" in key:  # a count: blocks 0..n-1
            return key.replace("*", "{0.." + str(value - 1) + "}", 1)
    if shape:
        actual = ctx.view.get(shape[0])
        return f"{shape[0]} {list(actual.shape) if actual else '?'}" + _declared_shape(
            before, shape[0], shape
        )
    if missing:
        return f"no {missing[0]}" + (f" (nor {len(missing) - 1} more)" if missing[1:] else "")
    if key:
        return key
    return f"{some(unexpected)} left over" if unexpected else "its shapes"


def _declared_shape(before: Expected, key: str, shape: list[str]) -> str:
    exp = before.tensors.get(key)
    return f" where the declared model has {list(exp.shape)}" if key in shape and exp is not None else ""


# ---- what the loader does beyond shapes (a loading plan: transformers) ----------------------------------------
@dataclass
class ConversionFailure:
    key: str
    error: str
    ops: str
    sources: str


def conversions(ctx: Context, exp: Expected) -> list[ConversionFailure]:
    """The key conversions the loader fails on (transformers raises after its load report); their keys consumed."""
    if not exp.load:
        return []
    result = loaded(ctx.ckpt, exp)
    convs = [t for t in exp.load.get("transforms", []) if t["kind"] == "convert"]
    out = []
    for key, error in result.conversion_errors.items():
        conv = next((c for c in convs if any(key.endswith(t) for t in c["targets"])), None)
        ctx.consume_missing([key])
        out.append(
            ConversionFailure(
                key=key,
                error=error,
                ops=", ".join(str(o["op"]) for o in conv.get("ops", [])) if conv else "a conversion",
                sources=", ".join(conv["sources"]) if conv else "its sources",
            )
        )
    return out


@dataclass
class BaseUnderTask:
    base: str  # the base-model prefix (``model``)
    head: list[str]  # the task head's keys, missing and not tied
    unused: list[str]  # the base model's own extras (a pooler), dropped


def base_under_task(ctx: Context, exp: Expected) -> BaseUnderTask | None:
    """Base-model weights under a task model's config: every missing key is the head's (consumed, with the extras)."""
    base = exp.load.get("base_prefix") or "" if exp.load else ""
    if not base or not ctx.missing or ctx.shape:
        return None
    result = loaded(ctx.ckpt, exp)
    under = [k for k in result.origin if k.startswith(base + ".") and k in exp.tensors]
    if not under or any(o.startswith(base + ".") for k in under for o in result.origin[k]):
        return None  # the file's keys carry the prefix themselves: a task model's file, not a base model's
    head = [k for k in ctx.missing if not k.startswith(base + ".")]
    if not head or len(head) < len(ctx.missing):
        return None
    return BaseUnderTask(base, ctx.consume_missing(head), ctx.consume_unexpected(list(ctx.unexpected)))
