"""The one rename finder: which prefix rewrites turn one set of keys into another.

``ckptlint diff`` uses it to explain A's keys as B's, and CK103 to explain unexpected checkpoint keys as missing
expected ones (the rename it reports is then the edit ``ckptlint fix`` applies). Keys are tuples of path
components, so ``params/img/x`` and ``params.img.x`` compare equal.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import Any

MAX_RENAMES = 8
_MAX_SHORT_BUCKET = 3  # a one-component suffix ("weight") matches too much to be evidence on its own

Key = tuple[str, ...]


def find_prefix_renames(
    a_keys: Mapping[Key, Any], b_keys: Mapping[Key, Any], limit: int = MAX_RENAMES
) -> list[tuple[Key, Key, list[tuple[Key, Key]]]]:
    """Prefix rewrites mapping unmatched keys of A onto unmatched keys of B, best first.

    ``a_keys``/``b_keys`` map each key to its signature (shape, dtype): a rewrite that keeps signatures wins over
    one that only matches names (an optimizer's moments mirror the params' names). Returns
    ``(a_prefix, b_prefix, [(a_key, b_key), ...])`` per rewrite; keys matched by a rewrite are removed from the
    search for the next one.
    """
    ua = set(a_keys) - set(b_keys)
    ub = set(b_keys) - set(a_keys)
    found: list[tuple[Key, Key, list[tuple[Key, Key]]]] = []
    for _ in range(limit):
        if not ua or not ub:
            break
        index: dict[Key, list[Key]] = defaultdict(list)  # suffix -> B prefixes that complete it
        for b in sorted(ub):  # sorted: ties between equally good rewrites resolve the same way every run
            for j in range(len(b)):
                index[b[j:]].append(b[:j])
        votes: Counter[tuple[Key, Key]] = Counter()
        same_sig: Counter[tuple[Key, Key]] = Counter()
        for a in sorted(ua):
            for i in range(len(a)):
                prefixes = index.get(a[i:])
                if not prefixes:
                    continue
                if len(a) - i == 1 and len(prefixes) > _MAX_SHORT_BUCKET:
                    break
                for pb in set(prefixes):
                    votes[(a[:i], pb)] += 1
                    same_sig[(a[:i], pb)] += a_keys[a] == b_keys[pb + a[i:]]
                break  # the longest common suffix is the evidence
        if not votes:
            break
        (pa, pb), count = max(
            votes.items(), key=lambda kv: (same_sig[kv[0]], kv[1], -len(kv[0][0]) - len(kv[0][1]))
        )
        if count < 2 and not (len(ua) == 1 and len(ub) == 1):
            break
        pairs = []
        for a in sorted(ua):
            if a[: len(pa)] == pa:
                b = pb + a[len(pa) :]
                if b in ub:
                    pairs.append((a, b))
        if not pairs:
            break
        for a, b in pairs:
            ua.discard(a)
            ub.discard(b)
        found.append((pa, pb, pairs))
    return found
