"""Collapse long key lists: ``encoderblock_0/x … encoderblock_11/x`` → ``encoderblock_{0..11}/x``."""

from __future__ import annotations

import re
from collections import defaultdict

_NUM = re.compile(r"(?<![0-9A-Za-z])(\d+)(?![0-9])|(?<=_)(\d+)(?![0-9])")


def _ranges(nums: list[int]) -> str:
    nums = sorted(set(nums))
    parts: list[str] = []
    start = prev = nums[0]
    for n in nums[1:]:
        if n == prev + 1:
            prev = n
            continue
        parts.append(f"{start}..{prev}" if prev > start else str(start))
        start = prev = n
    parts.append(f"{start}..{prev}" if prev > start else str(start))
    return ",".join(parts)


def collapse_keys(keys: list[str]) -> list[str]:
    """Group keys differing only in their numeric path components; order of first appearance is kept."""
    groups: dict[str, list[list[int]]] = defaultdict(list)
    order: list[str] = []
    for key in keys:
        nums = [int(m.group(1) or m.group(2)) for m in _NUM.finditer(key)]
        pattern = _NUM.sub("\0", key)
        if pattern not in groups:
            order.append(pattern)
        groups[pattern].append(nums)
    out: list[str] = []
    for pattern in order:
        rows = groups[pattern]
        if len(rows) == 1:
            out.append(_fill(pattern, [str(n) for n in rows[0]]))
            continue
        columns = list(zip(*rows, strict=True))
        out.append(
            _fill(pattern, [str(c[0]) if len(set(c)) == 1 else "{" + _ranges(list(c)) + "}" for c in columns])
        )
    return out


def _fill(pattern: str, values: list[str]) -> str:
    it = iter(values)
    return "".join(next(it) if ch == "\0" else ch for ch in pattern)
