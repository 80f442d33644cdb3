"""Fitting key templates and shape expressions to transformers models built at many small configurations.

Used by ``scripts/gen_hf_families.py``. A model class is built on the meta device at several configurations
(``Sample``); its ``state_dict()`` keys become templates (a block index ``{i}`` where the number of blocks follows a
config field), every dimension of every template becomes the simplest expression of the config fields that gives
the observed size at every configuration, and a key that only some configurations have gets the condition that
says when (``attention_bias``, ``i == 0``). Nothing here is clever: candidate expressions are enumerated in order
of complexity and the first that fits every sample wins; the generated data is then verified against transformers
at other configurations (``tests/test_hf_families.py``).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

Env = dict[str, Any]
MIN_ROWS = 4  # a key seen in fewer samples cannot be fitted reliably


class FitError(Exception):
    """The samples fit no candidate: the family needs a hand-written rule (or another knob)."""


# ---- expressions -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Expr:
    """A candidate shape expression: its text (ckptlint expression syntax), how to evaluate it, its inverses."""

    text: str
    fn: Callable[[Env], Any]
    inverses: tuple[tuple[str, str], ...] = ()  # (param, expression of x and the other params)
    rank: int = 0

    @property
    def params(self) -> list[str]:
        return [p for p, _ in self.inverses]


def _c(value: int) -> Expr:
    return Expr(str(value), lambda e: value, (), 0)


def candidates(ints: list[str]) -> Iterable[Expr]:
    """Expressions over the int parameters ``ints``, simplest first."""
    for f in ints:
        yield Expr(f, lambda e, f=f: e[f], ((f, "x"),), 1)
    for f in ints:
        for c in range(2, 9):
            yield Expr(f"{c} * {f}", lambda e, f=f, c=c: c * e[f], ((f, f"x // {c}"),), 2)
        for c in (1, 2, 3, -1, -2):
            sign = "+" if c > 0 else "-"
            yield Expr(f"{f} {sign} {abs(c)}", lambda e, f=f, c=c: e[f] + c, ((f, f"x - ({c})"),), 2)
        for c in (2, 3, 4):
            yield Expr(f"{f} // {c}", lambda e, f=f, c=c: e[f] // c, (), 2)
    for f, g in itertools.combinations_with_replacement(ints, 2):
        inv = ((f, f"x // {g}"), (g, f"x // {f}")) if f != g else ((f, "isqrt(x)"),)
        yield Expr(f"{f} * {g}", lambda e, f=f, g=g: e[f] * e[g], inv, 3)
    for f, g in itertools.permutations(ints, 2):
        yield Expr(f"{f} + {g}", lambda e, f=f, g=g: e[f] + e[g], ((f, f"x - {g}"), (g, f"x - {f}")), 3)
        yield Expr(f"{f} // {g}", lambda e, f=f, g=g: e[f] // max(e[g], 1), (), 3)
    for f, g in itertools.permutations(ints, 2):  # heads of width // heads each (ViT's all_head_size)
        yield Expr(f"{g} * ({f} // {g})", lambda e, f=f, g=g: e[g] * (e[f] // max(e[g], 1)), (), 3)
    for f, g in itertools.combinations_with_replacement(ints, 2):
        for c in (2, 3, 4):
            inv = ((f, f"x // ({c} * {g})"), (g, f"x // ({c} * {f})")) if f != g else ()
            yield Expr(f"{c} * {f} * {g}", lambda e, f=f, g=g, c=c: c * e[f] * e[g], inv, 4)
    for f, g in itertools.permutations(ints, 2):
        for c in range(0, 6):
            tail = f" + {c}" if c else ""
            inv = ((f, f"isqrt(x - {c}) * {g}"), (g, f"{f} // max(isqrt(x - {c}), 1)"))
            yield Expr(
                f"({f} // {g}) ** 2{tail}", lambda e, f=f, g=g, c=c: (e[f] // max(e[g], 1)) ** 2 + c, inv, 5
            )
    for f, g, h in itertools.combinations_with_replacement(ints, 3):
        yield Expr(f"{f} * {g} * {h}", lambda e, f=f, g=g, h=h: e[f] * e[g] * e[h], (), 6)
    for f, g, h in itertools.permutations(ints, 3):  # fused qkv: (heads + 2 * kv_heads) * head_dim
        for c in (1, 2):
            inv = (
                (f, f"x // {h} - {c} * {g}"),
                (g, f"(x // {h} - {f}) // {c}"),
                (h, f"x // ({f} + {c} * {g})"),
            )
            yield Expr(
                f"({f} + {c} * {g}) * {h}", lambda e, f=f, g=g, h=h, c=c: (e[f] + c * e[g]) * e[h], inv, 6
            )


def fit(values: list[tuple[Env, int]], ints: list[str], preferred: Iterable[Expr] = ()) -> Expr:
    """The simplest expression giving every observed value in its sample's environment (``preferred`` first:
    the expressions other keys of the model already use)."""
    for cand in preferred:
        if cand.params and all(cand.fn(env) == y for env, y in values):
            return cand
    ys = {y for _, y in values}
    if len(ys) == 1:
        only = next(iter(ys))
        same = [f for f in ints if all(env.get(f) == only for env, _ in values)]
        if same:
            raise FitError(f"a constant {only} or {same}: vary these knobs more")
        return _c(only)
    for cand in candidates(ints):
        try:
            if all(cand.fn(env) == y for env, y in values):
                return cand
        except (ArithmeticError, TypeError, KeyError):
            continue
    raise FitError(f"no expression fits {[(y) for _, y in values]}")


# ---- conditions ----------------------------------------------------------------------------------------------------
def fit_condition(
    present: list[bool], envs: list[Env], bools: list[str], strings: dict[str, list[str]]
) -> str | None:
    """None when always present; else the condition (a bool knob, its negation, a string knob's value...)."""
    if all(present):
        return None
    if not any(present):
        raise FitError("never present")
    cands: list[tuple[str, Callable[[Env], bool]]] = []
    for b in bools:
        cands.append((b, lambda e, b=b: bool(e[b])))
        cands.append((f"not {b}", lambda e, b=b: not e[b]))
    for s, options in strings.items():
        for v in options:
            cands.append((f"{s} == {v!r}", lambda e, s=s, v=v: e[s] == v))
            cands.append((f"{s} != {v!r}", lambda e, s=s, v=v: e[s] != v))
    for b, c in itertools.combinations(bools, 2):
        cands.append((f"{b} and {c}", lambda e, b=b, c=c: bool(e[b] and e[c])))
        cands.append((f"{b} or {c}", lambda e, b=b, c=c: bool(e[b] or e[c])))
    for text, fn in cands:
        if all(fn(env) == p for env, p in zip(envs, present, strict=True)):
            return text
    raise FitError(f"no condition fits presence {present}")


# ---- templates -----------------------------------------------------------------------------------------------------
@dataclass
class Sample:
    """One configuration: the parameters (ckptlint names) and what transformers built for each class."""

    env: Env
    facts: dict[str, dict[str, Any]] = field(default_factory=dict)  # class -> introspect() result


@dataclass
class Template:
    key: str  # "model.layers.{i}.self_attn.q_proj.weight" (relative to its group's prefix: see `group`)
    group: str | None  # "model.layers." when it repeats, else None
    repeat: str | None  # the parameter giving the number of blocks
    shape: list[Expr]
    dtype: str | None  # only when not floating point (int64 buffers...)
    when: str | None


def _numeric_positions(key: str) -> list[int]:
    return [i for i, t in enumerate(key.split(".")) if t.isdigit()]


def find_repeats(samples: list[tuple[Env, list[str]]], ints: list[str]) -> dict[str, str]:
    """List prefixes whose indices are 0..N-1 with N a config parameter: ``{"model.layers": "num_hidden_layers"}``.

    Only the first numbered component of a key can repeat (a number under a repeated block is literal: T5's
    ``block.{i}.layer.0``); a list whose length never changes across the samples is literal too.
    """
    per_prefix: dict[str, list[tuple[Env, set[int]]]] = {}
    for env, keys in samples:
        found: dict[str, set[int]] = {}
        for key in keys:
            positions = _numeric_positions(key)
            if positions:
                tokens = key.split(".")
                found.setdefault(".".join(tokens[: positions[0]]), set()).add(int(tokens[positions[0]]))
        for prefix, idx in found.items():
            per_prefix.setdefault(prefix, []).append((env, idx))
    out: dict[str, str] = {}
    for prefix, seen in per_prefix.items():
        if any(idx != set(range(len(idx))) for _, idx in seen):
            continue
        counts = [(env, len(idx)) for env, idx in seen]
        if len({n for _, n in counts}) == 1:
            continue  # a fixed list: literal indices
        fields = [f for f in ints if all(env.get(f) == n for env, n in counts)]
        if len(fields) == 1:
            out[prefix] = fields[0]
        elif len(fields) > 1:
            raise FitError(f"{prefix}: block count ambiguous between {fields}")
    return out


def templates(
    samples: list[tuple[Env, dict[str, list[Any]]]],
    ints: list[str],
    bools: list[str],
    strings: dict[str, list[str]],
) -> list[Template]:
    """Every key of the class as a template with fitted shapes and conditions, in state_dict order."""
    repeats = find_repeats([(env, list(t)) for env, t in samples], ints)
    order: list[str] = []
    obs: dict[
        str, list[tuple[int, list[int], str, set[int]]]
    ] = {}  # template -> (sample, shape, dtype, indices)
    for s, (_, tensors) in enumerate(samples):
        seen: dict[str, tuple[list[int], str, set[int]]] = {}
        previous: str | None = None
        for key, (shape, dtype) in tensors.items():
            tpl, group, index = _templatize(key, repeats)
            if tpl not in order:  # merge the orders of all samples: a new key goes after its predecessor
                order.insert(order.index(previous) + 1 if previous is not None else 0, tpl)
            previous = tpl
            if tpl in seen:
                prev = seen[tpl]
                if prev[0] != shape or prev[1] != dtype:
                    raise FitError(f"{tpl}: blocks differ in shape ({prev[0]} vs {shape})")
                prev[2].add(index)
            else:
                seen[tpl] = (shape, dtype, {index} if index is not None else set())
        for tpl, (shape, dtype, idx) in seen.items():
            obs.setdefault(tpl, []).append((s, shape, dtype, idx))
    envs = [env for env, _ in samples]
    # keys every sample has are fitted first; their expressions are preferred for the conditional ones
    ranked = sorted(order, key=lambda t: len(obs[t]) < len(samples))
    fitted: dict[str, Template] = {}
    used: list[Expr] = []
    for tpl in ranked:
        rows = obs[tpl]
        present = [False] * len(samples)
        for s, *_ in rows:
            present[s] = True
        when = fit_condition(present, envs, bools, strings)
        group, repeat, rest = _group_of(tpl, repeats)
        if repeat is not None:
            blocks = [(idx, envs[s][repeat]) for s, _, _, idx in rows]
            if all(idx == set(range(n)) for idx, n in blocks):
                pass
            elif all(idx == {0} for idx, _ in blocks):
                when = "i == 0" if when is None else f"i == 0 and ({when})"
            else:
                raise FitError(f"{tpl}: present in some blocks only")
        ranks = {len(shape) for _, shape, _, _ in rows}
        if len(ranks) != 1:
            raise FitError(f"{tpl}: rank varies")
        if len(rows) < MIN_ROWS:
            raise FitError(f"{tpl}: seen in only {len(rows)} samples; sample more")
        dims = []
        for d in range(ranks.pop()):
            e = fit([(envs[s], shape[d]) for s, shape, _, _ in rows], ints, used)
            dims.append(e)
            if e.params and e not in used:
                used.append(e)
        dtypes = {dt for _, _, dt, _ in rows}
        if len(dtypes) != 1:
            raise FitError(f"{tpl}: dtype varies {dtypes}")
        dtype = dtypes.pop()
        fitted[tpl] = Template(rest, group, repeat, dims, None if dtype == "float32" else dtype, when)
    return [fitted[t] for t in order]


def _templatize(key: str, repeats: dict[str, str]) -> tuple[str, str | None, int | None]:
    tokens = key.split(".")
    positions = _numeric_positions(key)
    if positions:
        pos = positions[0]
        prefix = ".".join(tokens[:pos])
        if prefix in repeats:
            index = int(tokens[pos])
            tokens[pos] = "{i}"
            return ".".join(tokens), prefix, index
    return key, None, None


def _group_of(tpl: str, repeats: dict[str, str]) -> tuple[str | None, str | None, str]:
    head, sep, rest = tpl.partition(".{i}.")
    if sep and head in repeats:
        return head + ".{i}.", repeats[head], rest
    return None, None, tpl
