"""Key-name helpers shared by the rules: glob and regex matching, the evidence limit.

Collapsing long key lists for display is ``ckptlint.keygroups`` (one syntax for rules and reporters)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from fnmatch import translate
from functools import cache

MAX_EVIDENCE = 20  # keys kept in Finding.keys; the raw diff keeps them all


@cache
def _glob(pattern: str) -> re.Pattern[str]:
    return re.compile(translate(pattern))


def matches(key: str, patterns: Iterable[str]) -> bool:
    """Whether ``key`` matches one of the fnmatch-style ``patterns`` (case-sensitive)."""
    return any(_glob(p).match(key) for p in patterns)


@cache
def regex(pattern: str) -> re.Pattern[str]:
    """A compiled regular expression (rule data is small and reused)."""
    return re.compile(pattern)


def trim(keys: Iterable[str], limit: int = MAX_EVIDENCE) -> list[str]:
    """At most ``limit`` keys, in order (the rest is in the raw diff)."""
    out: list[str] = []
    for k in keys:
        if len(out) >= limit:
            break
        out.append(k)
    return out
