"""Conversion tables read one way: the ``[[conversions]]`` rows of the family files compiled for a direction, and
the write plan they make from a checkpoint's keys.

A row reads both ways: going back, ``from`` and ``to`` swap, the operations run in reverse order and each is
inverted (a transpose by the inverse permutation, a reshape to its ``back`` shape, a split by a fuse), and a ``fill``
row drops the tensor it made once its values are checked. Every key of the input under the source root must be
written by a row or named by the table's drops: nothing is lost silently.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckptlint.archs.expr import SpecError, evaluate
from ckptlint.archs.pattern import KeyPattern, matches, pattern
from ckptlint.archs.registry import conversions
from ckptlint.archs.schema import Conversion, KeyRule
from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UsageError
from ckptlint.writers.plan import Concat, Entry, Fill, Index, Op, Reshape, Split, Transpose

MAX_SHOWN = 6


@dataclass(frozen=True)
class Row:
    """One compiled row, in the direction it is read: ``ins`` (keys read) -> ``outs`` (keys written)."""

    ins: tuple[KeyPattern, ...]
    outs: tuple[KeyPattern, ...]
    ops: tuple[tuple[str, Any], ...] = ()  # ("transpose", axes | None) / ("reshape", shape expression)
    dim: int = 0
    fill: float | None = None  # make outs[0] from nothing, shaped by `shape` from `like`
    like: KeyPattern | None = None
    shape: str | None = None
    expect: float | None = None  # going back over a fill row: the one value ins[0] may hold (then dropped)


@dataclass
class Direction:
    """A conversion table read one way."""

    conv: Conversion
    reverse: bool
    rows: list[Row]
    drop: list[str]  # input-side patterns left behind on purpose
    problem: str | None = None  # why this direction cannot be used
    unstack: list[tuple[str, str]] = field(default_factory=list)  # (stacked prefix, per-block template)

    @property
    def src(self) -> str:
        return self.conv.to if self.reverse else self.conv.from_

    @property
    def dst(self) -> str:
        return self.conv.from_ if self.reverse else self.conv.to

    @property
    def label(self) -> str:
        return f"{self.conv.name}{' (backwards)' if self.reverse else ''}"


def _inverse(axes: list[int] | None) -> tuple[int, ...] | None:
    if axes is None:
        return None
    inv = [0] * len(axes)
    for j, a in enumerate(axes):
        inv[a] = j
    return tuple(inv)


def _unstack(conv: Conversion, by_name: dict[str, Conversion], prefix: str = "") -> list[tuple[str, str]]:
    """(stacked prefix, per-block template) of the table and its includes, the include's prefix added."""
    out = [(prefix + u.stacked, prefix + u.each) for u in conv.unstack]
    for inc in conv.include:
        out += _unstack(by_name[inc.use], by_name, prefix + inc.from_)
    return out


def _rules(conv: Conversion, by_name: dict[str, Conversion], depth: int = 0) -> list[KeyRule]:
    """The table's rows with its includes' rows (not their drops) expanded, prefixes added."""
    if depth > 8:
        raise SpecError(f"conversion {conv.name}: includes nest too deep")
    rules = list(conv.keys)
    for inc in conv.include:
        for r in _rules(by_name[inc.use], by_name, depth + 1):
            moved = {"to": [inc.to + t for t in r.tos] if isinstance(r.to, list) else inc.to + r.to}
            if r.from_ is not None:
                moved["from_"] = (
                    [inc.from_ + f for f in r.froms] if isinstance(r.from_, list) else inc.from_ + r.from_
                )
            if r.like is not None:
                moved["like"] = inc.from_ + r.like
            rules.append(r.copy(**moved))  # type: ignore[arg-type]  # a literal prefix keeps a valid pattern valid
    return rules


def direction(conv: Conversion, reverse: bool) -> Direction:
    """``conv`` compiled to read ``from`` -> ``to`` (or back)."""
    by_name = {c.name: c for c in conversions()}
    rules = _rules(conv, by_name)
    drop, drop_back = list(conv.drop), list(conv.drop_back)
    rows: list[Row] = []
    problem = conv.one_way if reverse else None
    for rule in rules:
        froms, tos = tuple(pattern(f) for f in rule.froms), tuple(pattern(t) for t in rule.tos)
        ops = [
            ("transpose", tuple(rule.axes) if rule.axes else None)
            if o == "transpose"
            else ("reshape", rule.shape)
            for o in rule.ops
        ]
        if rule.fill is not None:
            if reverse:
                rows.append(Row(tos, (), expect=rule.fill))
            else:
                rows.append(Row((), tos, fill=rule.fill, like=pattern(rule.like or ""), shape=rule.shape))
            continue
        if not reverse:
            rows.append(Row(froms, tos, tuple(ops), rule.dim))
            continue
        back: list[tuple[str, Any]] = []
        for kind, arg in reversed(ops):
            if kind == "transpose":
                back.append((kind, _inverse(list(arg)) if arg else None))
            elif rule.back is None:
                problem = problem or f"row {rule.froms} has no `back` shape"
            else:
                back.append((kind, rule.back))
        rows.append(Row(tos, froms, tuple(back), rule.dim))
    unstack = [] if reverse else _unstack(conv, by_name)
    return Direction(conv, reverse, rows, drop_back if reverse else drop, problem, unstack)


def directions(src: str, dst: str) -> list[Direction]:
    """Every table that converts architecture ``src`` into ``dst`` (either way round)."""
    out = []
    for conv in conversions():
        if (conv.from_, conv.to) == (src, dst):
            out.append(direction(conv, False))
        elif (conv.to, conv.from_) == (src, dst):
            out.append(direction(conv, True))
    return out


def all_directions() -> list[Direction]:
    """Every table, both ways (a direction that cannot be used carries its ``problem``)."""
    return [direction(c, rev) for c in conversions() for rev in (False, True)]


# ---- planning ------------------------------------------------------------------------------------------------
@dataclass
class KeyPlan:
    """What a direction makes of a checkpoint's keys."""

    entries: list[Entry] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)  # input keys under the root a drop names
    outside: list[str] = field(default_factory=list)  # input keys outside the root (training state...)
    unmapped: list[str] = field(default_factory=list)  # input keys no row and no drop names
    expect: list[tuple[str, float]] = field(default_factory=list)  # (input key, the only value it may hold)
    renamed: int = 0
    changed: int = 0  # outputs whose values are transposed, reshaped, split, fused or made


def _pipeline(
    ops: tuple[tuple[str, Any], ...], shape: tuple[int, ...], params: dict[str, Any], what: str
) -> list[Op]:
    out: list[Op] = []
    cur = [shape]
    for kind, arg in ops:
        if kind == "transpose":
            op: Op = Transpose(arg)
        else:
            try:
                value = evaluate(arg, {**params, "x": list(cur[0])})
            except SpecError as exc:
                raise UsageError(f"{what}: {exc}") from None
            op = Reshape(tuple(int(d) for d in value))
        try:
            cur, _ = op.shapes(cur, ["float32"])
        except ValueError as exc:
            raise UsageError(f"{what}: {exc}") from None
        out.append(op)
    return out


def plan_keys(d: Direction, ckpt: Checkpoint, root: str, params: dict[str, Any]) -> KeyPlan:
    """The write plan of ``d`` over ``ckpt``'s keys under ``root`` (output keys have no root)."""
    plan = KeyPlan()
    groups: dict[tuple[int, tuple[tuple[str, str], ...]], None] = {}
    view = _view(d, ckpt, root, plan)
    for rel, (key, _) in view.items():
        hit = None
        for idx, row in enumerate(d.rows):
            for tpl in row.ins:
                m = tpl.match(rel)
                if m is not None:
                    hit = (idx, tuple(sorted(m.items())))
                    break
            if hit is not None:
                break
        if hit is not None:
            groups[hit] = None
        elif matches(rel, d.drop):
            if key not in plan.dropped:
                plan.dropped.append(key)
        elif key not in plan.unmapped:
            plan.unmapped.append(key)
    for (idx, caps), _ in groups.items():
        _plan_group(d, d.rows[idx], dict(caps), ckpt, view, params, plan)
    for row in d.rows:  # fill rows: one output per key they are shaped like
        if row.fill is None or row.like is None:
            continue
        for key in ckpt.tensors:
            m = row.like.match(key[len(root) :]) if key.startswith(root) else None
            if m is None:
                continue
            x = list(ckpt.tensors[key].shape)
            try:
                shape = tuple(int(v) for v in evaluate(row.shape, {**params, "x": x}))
            except SpecError as exc:
                raise UsageError(f"{d.label}: {exc}") from None
            out = row.outs[0].fill(**m)
            plan.entries.append(Entry(out, (), (Fill(shape, ckpt.tensors[key].dtype, row.fill),)))
            plan.changed += 1
    return plan


View = dict[
    str, tuple[str, int | None]
]  # key relative to the root -> (the file's key, slice of a stacked one)


def _view(d: Direction, ckpt: Checkpoint, root: str, plan: KeyPlan) -> View:
    """The input's keys under ``root`` as the rows name them: a stacked block tensor (``encoderblock/…`` with a
    leading axis of depth) reads as one key per block (``encoderblock_{i}/…``)."""
    view: View = {}
    for key, info in ckpt.tensors.items():
        if not key.startswith(root):
            plan.outside.append(key)
            continue
        rel = key[len(root) :]
        stacked = next(((p, e) for p, e in d.unstack if rel.startswith(p)), None)
        if stacked is None or not info.shape:
            view[rel] = (key, None)
            continue
        prefix, each = stacked
        for i in range(info.shape[0]):
            view[pattern(each).fill(i=i) + rel[len(prefix) :]] = (key, i)
    return view


def _plan_group(
    d: Direction,
    row: Row,
    caps: dict[str, str],
    ckpt: Checkpoint,
    view: View,
    params: dict[str, Any],
    plan: KeyPlan,
) -> None:
    rels = [t.fill(**caps) for t in row.ins]
    absent = [r for r in rels if r not in view]
    if absent:
        have = [view[r][0] for r in rels if r in view]
        raise UsageError(f"{ckpt.path}: has {have[0]} but not {absent[0]}, which {d.label} reads with it")
    srcs = [view[r][0] for r in rels]
    index = view[rels[0]][1]
    if row.expect is not None:
        plan.expect.append((srcs[0], row.expect))
        plan.dropped.append(srcs[0])
        return
    outs = [t.fill(**caps) for t in row.outs]
    shape = tuple(ckpt.tensors[srcs[0]].shape)
    first: tuple[Op, ...] = ()
    if index is not None:  # one block of a stacked tensor: its slice first
        first, shape = (Index(index),), shape[1:]
    what = f"{d.label}: {srcs[0]}"
    if len(outs) > 1:  # split one tensor into parts along dim, each through the pipeline
        n = len(outs)
        try:
            part = Split(row.dim, 0, parts=n).shapes([shape], ["float32"])[0][0]
        except ValueError as exc:
            raise UsageError(f"{what}: {exc}") from None
        ops = _pipeline(row.ops, part, params, what)
        plan.entries += [
            Entry(o, srcs[0], (*first, Split(row.dim, j, parts=n), *ops)) for j, o in enumerate(outs)
        ]
        plan.changed += n
    elif len(srcs) > 1:  # fuse several tensors: each through the pipeline, then concatenated along dim
        ops = _pipeline(row.ops, shape, params, what)
        plan.entries.append(Entry(outs[0], tuple(srcs), (*first, *ops, Concat(row.dim))))
        plan.changed += 1
    else:
        ops = _pipeline(row.ops, shape, params, what)
        plan.entries.append(Entry(outs[0], srcs[0], (*first, *ops)))
        if ops or first:
            plan.changed += 1
        else:
            plan.renamed += 1


def shown(keys: list[str], limit: int = MAX_SHOWN) -> str:
    """A few keys for a message: ``a, b, c … (+12)``."""
    more = f" … (+{len(keys) - limit})" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more
