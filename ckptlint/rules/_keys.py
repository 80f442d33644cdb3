"""Key-name helpers shared by the rules: prefixes, and collapsing long key lists for display (key patterns of
the family files are ``ckptlint.archs.pattern``)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

_NUM = re.compile(r"\d+")

MAX_EVIDENCE = 20  # keys kept in Finding.keys; the raw diff keeps them all
MAX_GROUPS = 8  # collapsed lines shown per finding


def boundary_prefixes(key: str, sep: str) -> list[str]:
    """``"a.b.c" -> ["a.", "a.b."]``: every prefix that ends at a separator."""
    out = []
    i = key.find(sep)
    while i != -1:
        out.append(key[: i + len(sep)])
        i = key.find(sep, i + len(sep))
    return out


def trim(keys: Iterable[str], limit: int = MAX_EVIDENCE) -> list[str]:
    """At most ``limit`` keys, in order (the rest is in the raw diff)."""
    out: list[str] = []
    for k in keys:
        if len(out) >= limit:
            break
        out.append(k)
    return out


def _ranges(values: Sequence[int]) -> str:
    vals = sorted(set(values))
    if len(vals) > 2 and vals[-1] - vals[0] + 1 == len(vals):
        return f"{vals[0]}..{vals[-1]}"
    return ",".join(str(v) for v in vals)


def _fold_numbers(keys: Sequence[str]) -> list[tuple[str, int]]:
    """Group keys that differ only in their numbers: ``encoderblock_{0..11}/LayerNorm_0/scale``."""
    groups: dict[tuple[str, ...], list[list[int]]] = {}
    order: list[tuple[str, ...]] = []
    for k in keys:
        parts = tuple(_NUM.split(k))
        nums = [int(n) for n in _NUM.findall(k)]
        if parts not in groups:
            groups[parts] = []
            order.append(parts)
        groups[parts].append(nums)
    out = []
    for parts in order:
        rows = groups[parts]
        if len(rows) == 1:
            nums = rows[0]
            text = parts[0] + "".join(str(n) + p for n, p in zip(nums, parts[1:], strict=True))
        else:
            cols = list(zip(*rows, strict=True))
            pieces = [parts[0]]
            for col, tail in zip(cols, parts[1:], strict=True):
                distinct = sorted(set(col))
                pieces.append(str(distinct[0]) if len(distinct) == 1 else "{" + _ranges(distinct) + "}")
                pieces.append(tail)
            text = "".join(pieces)
        out.append((text, len(rows)))
    return out


def _fold_leaves(items: list[tuple[str, int]], sep: str) -> list[tuple[str, int]]:
    """Merge lines that differ only in their last component: ``…/LayerNorm_0/{bias,scale}``."""
    groups: dict[str, list[tuple[str, int]]] = {}
    order: list[str] = []
    for text, n in items:
        head, _, leaf = text.rpartition(sep)
        key = head if head else text
        if not head:
            groups.setdefault(text, []).append((text, n))
            order.append(text)
            continue
        if key not in groups:
            order.append(key)
        groups.setdefault(key, []).append((leaf, n))
    out = []
    for key in order:
        members = groups[key]
        if len(members) == 1 and members[0][0] == key:
            out.append(members[0])
        elif len(members) == 1:
            out.append((key + sep + members[0][0], members[0][1]))
        else:
            leaves = ",".join(leaf for leaf, _ in members)
            out.append((f"{key}{sep}{{{leaves}}}", sum(n for _, n in members)))
    return out


def collapse(keys: Iterable[str], sep: str, max_groups: int = MAX_GROUPS) -> list[str]:
    """Display lines for a key list: numbers folded, sibling leaves merged, then shallower prefixes.

    ``["a/encoderblock_0/x", …, "a/encoderblock_11/x"] -> ["a/encoderblock_{0..11}/x"]``. Never more than
    ``max_groups`` lines; a line standing for several keys ends with ``(N keys)``.
    """
    keys = list(dict.fromkeys(keys))
    if not keys:
        return []
    items = _fold_leaves(_fold_numbers(keys), sep)
    depth = max(k.count(sep) for k in keys)
    base = items
    while len(items) > max_groups and depth > 0:
        depth -= 1
        merged: dict[str, list[tuple[str, int]]] = {}
        for text, n in base:
            parts = text.split(sep)
            head = sep.join(parts[: depth + 1]) + (sep + "…" if len(parts) > depth + 1 else "")
            merged.setdefault(head, []).append((text, n))
        items = [
            members[0] if len(members) == 1 else (head, sum(n for _, n in members))
            for head, members in merged.items()
        ]
    if len(items) > max_groups:
        rest = sum(n for _, n in items[max_groups - 1 :])
        items = [*items[: max_groups - 1], (f"… {rest} more", rest)]
    return [text if n == 1 or text.startswith("… ") else f"{text} ({n} keys)" for text, n in items]


def strip_prefix(key: str, prefix: str) -> str:
    """``key`` without ``prefix`` (which it must start with)."""
    return key[len(prefix) :]
