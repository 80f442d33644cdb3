"""``ckptlint diff`` output: text (renames once, then shape/dtype changes, then what only one side has) and JSON."""

from __future__ import annotations

from collections import Counter

from ckptlint.diffing import DiffResult, Side
from ckptlint.keygroups import fold_numbers
from ckptlint.report.humanize import human_bytes, human_count, shape_str
from ckptlint.report.text import use_colour

__all__ = ["render_json", "render_text", "use_colour"]
_MAX_KEYS = 12


def render_json(result: DiffResult) -> str:
    """The comparison as indented JSON (every key pair included)."""
    return result.model_dump_json(indent=2) + "\n"


def _side_line(label: str, s: Side) -> str:
    bits = [f"{s.layout} {s.format}" if s.layout != "unknown" else s.format]
    if s.groups:
        bits.append("+".join(s.groups))
    bits.append(f"{s.num_tensors} tensors · {human_count(s.num_params)} params · {human_bytes(s.num_bytes)}")
    return f"{label}: {s.path}  " + " · ".join(bits)


def _keys(keys: list[str], verbose: bool, indent: str = "    ") -> list[str]:
    grouped = fold_numbers(keys)
    shown = grouped if verbose else grouped[:_MAX_KEYS]
    lines = [f"{indent}{k}" for k in shown]
    if len(shown) < len(grouped):
        lines.append(f"{indent}… (+{len(grouped) - len(shown)} more, --verbose)")
    return lines


def _paint(text: str, code: str, colour: bool) -> str:
    return f"\x1b[{code}m{text}\x1b[0m" if colour else text


def render_text(result: DiffResult, *, verbose: bool = False, colour: bool = False) -> str:
    """Human-readable comparison: each rename rule once, changes grouped, one summary line."""
    out = [_side_line("A", result.a), _side_line("B", result.b), ""]
    if result.layout_change:
        out.append(f"layout: {result.layout_change}")
    if result.separator_change:
        out.append(f"key separator: {result.separator_change}")
    if result.mapping:
        m = result.mapping
        wrapper = f" (after taking off {m.a_prefix})" if m.a_prefix else ""
        direction = "reverse of " if m.reverse else ""
        bits = [f"{m.renamed} keys renamed"]
        if m.split:
            bits.append(f"{m.split} fused/split (qkv)")
        if m.reshaped:
            bits.append(f"{m.reshaped} stored transposed/reshaped")
        out.append(_paint("mapping ", "36", colour) + f"{direction}{m.title}{wrapper}: " + ", ".join(bits))
    for r in result.renames:
        out.append(
            _paint("renamed ", "36", colour)
            + f"{r.a_prefix or '(no prefix)'}… → {r.b_prefix or '(no prefix)'}…  ({r.count} key{'s' * (r.count != 1)})"
        )
    if verbose and result.renamed:
        out += [f"    {p.a} → {p.b}" for p in result.renamed]
    if result.shape_changes:
        out.append(_paint(f"shape changed ({len(result.shape_changes)}):", "33", colour))
        by_change: dict[tuple[str, str], list[str]] = {}
        for c in result.shape_changes:
            by_change.setdefault((shape_str(c.a_shape), shape_str(c.b_shape)), []).append(
                c.b if c.a == c.b else f"{c.a} → {c.b}"
            )
        for (sa, sb), keys in by_change.items():
            out += [f"  {sa} → {sb}:", *_keys(keys, verbose)]
    if result.dtype_changes:
        out.append(_paint(f"dtype changed ({len(result.dtype_changes)}):", "33", colour))
        counts = Counter((c.a_dtype, c.b_dtype) for c in result.dtype_changes)
        for (da, db), n in counts.most_common():
            keys = [c.b for c in result.dtype_changes if (c.a_dtype, c.b_dtype) == (da, db)]
            out += [f"  {da} → {db} ({n}):", *_keys(keys, verbose)]
    for label, keys, code in (("only in A", result.only_a, "31"), ("only in B", result.only_b, "32")):
        if keys:
            out.append(_paint(f"{label} ({len(keys)}):", code, colour))
            out += _keys(keys, verbose, "  ")
    if result.metadata_changes:
        out.append("metadata differs: " + ", ".join(result.metadata_changes))
    if out[-1] != "":
        out.append("")
    if result.identical:
        out.append("identical tensors (same keys, shapes and dtypes)  exit 0")
    else:
        parts = [
            f"{len(result.renamed)} renamed" if result.renamed else "",
            f"{len(result.shape_changes)} shape" if result.shape_changes else "",
            f"{len(result.dtype_changes)} dtype" if result.dtype_changes else "",
            f"{len(result.only_a)} only in A" if result.only_a else "",
            f"{len(result.only_b)} only in B" if result.only_b else "",
            "key separator" if result.separator_change else "",
        ]
        out.append("differences: " + ", ".join(p for p in parts if p) + "  exit 1")
    return "\n".join(out) + "\n"
