"""Long key lists made readable, with one syntax everywhere (rule messages, reporters, ``fix`` and ``diff``).

Keys that differ only in their numbers fold into ranges — ``encoderblock_0/x`` … ``encoderblock_11/x`` becomes
``encoderblock_{0..11}/x``, ``blocks.{0..1,3}.attn`` — where a number is a whole path component or follows an
underscore (``fc1``/``fc2`` stay apart: they are different layers). ``fold_numbers`` does only that;
``collapse`` then merges sibling leaves (``LayerNorm_0/{bias,scale}``) and, while there are too many lines,
shallower prefixes (``encoder.… (32 keys)``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

MAX_GROUPS = 8  # collapsed lines shown per finding

_NUM = re.compile(r"(?<![0-9A-Za-z])(\d+)(?![0-9])|(?<=_)(\d+)(?![0-9])")


def _ranges(nums: Iterable[int]) -> str:
    """``[0, 1, 2, 5] -> "0..2,5"``."""
    values = sorted(set(nums))
    parts: list[str] = []
    start = prev = values[0]
    for n in values[1:]:
        if n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}..{prev}" if prev > start else str(start))
        start = prev = n
    parts.append(f"{start}..{prev}" if prev > start else str(start))
    return ",".join(parts)


def _fill(pattern: str, values: list[str]) -> str:
    it = iter(values)
    return "".join(next(it) if ch == "\0" else ch for ch in pattern)


def _fold(keys: Iterable[str]) -> list[tuple[str, int]]:
    """``(line, number of keys it stands for)``, in order of first appearance."""
    groups: dict[str, list[list[int]]] = {}
    for key in keys:
        nums = [int(m.group(1) or m.group(2)) for m in _NUM.finditer(key)]
        groups.setdefault(_NUM.sub("\0", key), []).append(nums)
    out = []
    for pattern, rows in groups.items():
        if len(rows) == 1:
            out.append((_fill(pattern, [str(n) for n in rows[0]]), 1))
            continue
        columns = list(zip(*rows, strict=True))
        cells = [str(c[0]) if len(set(c)) == 1 else "{" + _ranges(c) + "}" for c in columns]
        out.append((_fill(pattern, cells), len(rows)))
    return out


def fold_numbers(keys: Iterable[str]) -> list[str]:
    """One line per group of keys that differ only in their numbers, in order of first appearance."""
    return [text for text, _ in _fold(keys)]


def some(keys: list[str]) -> str:
    """A few keys for a message: ``model.layers.2.* (9 weights)`` when they share a block, else the first three."""
    if len(keys) > 3:
        common = []
        for tokens in zip(*(k.split(".") for k in keys), strict=False):
            if len(set(tokens)) != 1:
                break
            common.append(tokens[0])
        if len(common) >= 2:
            return f"{'.'.join(common)}.* ({len(keys)} weights)"
    folded = fold_numbers(keys)
    return ", ".join(folded[:3]) + (f" (+{len(folded) - 3} more)" if len(folded) > 3 else "")


def _split(text: str, sep: str) -> list[str]:
    """``text`` split at ``sep``, except inside ``{…}`` (a range ``{0..11}`` holds dots)."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif depth == 0 and text.startswith(sep, i):
            parts.append(text[start:i])
            start = i + len(sep)
            i = start
            continue
        i += 1
    parts.append(text[start:])
    return parts


def _fold_leaves(items: list[tuple[str, int]], sep: str) -> list[tuple[str, int]]:
    """Merge lines that differ only in their last component: ``…/LayerNorm_0/{bias,scale}``."""
    groups: dict[tuple[bool, str], list[tuple[str, int]]] = {}  # (has a parent, parent or the whole line)
    for text, n in items:
        parts = _split(text, sep)
        if len(parts) == 1:
            groups[(False, text)] = [(text, n)]
        else:
            groups.setdefault((True, sep.join(parts[:-1])), []).append((parts[-1], n))
    out = []
    for (nested, head), members in groups.items():
        if not nested:
            out.append(members[0])
        elif len(members) == 1:
            out.append((head + sep + members[0][0], members[0][1]))
        else:
            leaves = ",".join(leaf for leaf, _ in members)
            out.append((f"{head}{sep}{{{leaves}}}", sum(n for _, n in members)))
    return out


def collapse(keys: Sequence[str], sep: str, max_groups: int = MAX_GROUPS) -> list[str]:
    """Display lines for a key list: numbers folded, sibling leaves merged, then shallower prefixes.

    ``["a/encoderblock_0/x", …, "a/encoderblock_11/x"] -> ["a/encoderblock_{0..11}/x (12 keys)"]``. Never more
    than ``max_groups`` lines; a line standing for several keys ends with ``(N keys)``.
    """
    keys = list(dict.fromkeys(keys))
    if not keys:
        return []
    items = _fold_leaves(_fold(keys), sep)
    depth = max(k.count(sep) for k in keys)
    base = items
    while len(items) > max_groups and depth > 0:
        depth -= 1
        merged: dict[str, list[tuple[str, int]]] = {}
        for text, n in base:
            parts = _split(text, sep)
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
