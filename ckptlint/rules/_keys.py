"""Key-name helpers shared by the rules: the evidence limit.

Key patterns of the family files are ``ckptlint.archs.pattern``; collapsing long key lists for display is
``ckptlint.keygroups`` (one syntax for rules and reporters)."""

from __future__ import annotations

from collections.abc import Iterable

MAX_EVIDENCE = 20  # keys kept in Finding.keys; the raw diff keeps them all


def trim(keys: Iterable[str], limit: int = MAX_EVIDENCE) -> list[str]:
    """At most ``limit`` keys, in order (the rest is in the raw diff)."""
    out: list[str] = []
    for k in keys:
        if len(out) >= limit:
            break
        out.append(k)
    return out
