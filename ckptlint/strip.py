"""``ckptlint strip``: keep or drop whole top-level groups (``params`` vs ``opt``/``chrono``, ``state_dict`` vs
``optimizer``) and write the rest to a new file, verified by re-reading it."""

from __future__ import annotations

from dataclasses import dataclass

from ckptlint.errors import UsageError
from ckptlint.report.humanize import human_bytes, human_count
from ckptlint.rewrite import RewriteResult, rewrite


@dataclass
class StripResult:
    """The rewrite plus which groups went where."""

    rewrite: RewriteResult
    kept_groups: list[str]
    dropped_groups: list[str]

    def describe(self) -> str:
        """One paragraph for the terminal."""
        r = self.rewrite
        src, out = r.src, r.out
        lines = [
            f"wrote {r.dst} ({out.format}): kept {', '.join(self.kept_groups)} — {len(out.tensors)} tensors, "
            f"{human_count(out.num_params)} params, {human_bytes(out.total_bytes)}",
        ]
        if self.dropped_groups:
            lines.append(
                f"dropped {', '.join(self.dropped_groups)} — {len(r.dropped)} tensors, "
                f"{human_bytes(src.total_bytes - out.total_bytes)}"
            )
        lines += r.notes
        lines.append(f"verified: {r.dst} reads back with the same {len(out.tensors)} keys, shapes and dtypes")
        return "\n".join(lines)


def _top(key: str, sep: str) -> str:
    return key.split(sep, 1)[0]


def strip_checkpoint(
    src: str,
    dst: str,
    *,
    keep: list[str] | None = None,
    drop: list[str] | None = None,
    to_format: str = "same",
) -> StripResult:
    """Write ``dst`` with only the ``keep`` groups of ``src`` (or without the ``drop`` groups)."""
    from ckptlint.readers import read_checkpoint
    from ckptlint.rewrite import check_paths

    check_paths(src, dst)
    ckpt = read_checkpoint(src)
    tops = list(dict.fromkeys(_top(k, ckpt.key_sep) for k in ckpt.tensors))
    named = keep if keep is not None else drop or []
    unknown = [g for g in named if g not in tops]
    if unknown:
        shown = ", ".join(tops[:12]) + (" …" if len(tops) > 12 else "")
        raise UsageError(f"{src}: no top-level group {unknown[0]!r} (groups: {shown})")
    kept = [g for g in tops if g in named] if keep is not None else [g for g in tops if g not in named]
    if not kept:
        raise UsageError(f"{src}: nothing would be left to write")
    kept_set = set(kept)
    named_set, keeping = set(named), keep is not None
    sep = ckpt.key_sep

    def keymap(key: str) -> str | None:  # also asked about non-tensor entries (a trainer dict's "epoch")
        return key if (_top(key, sep) in named_set) == keeping else None

    result = rewrite(src, dst, keymap, to_format=to_format)
    return StripResult(
        rewrite=result, kept_groups=kept, dropped_groups=[g for g in tops if g not in kept_set]
    )
