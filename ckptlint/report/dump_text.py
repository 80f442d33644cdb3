"""``ckptlint dump``: the parameter tree grouped by prefix, then totals, metadata and sidecars."""

from __future__ import annotations

import fnmatch
from collections import Counter

from ckptlint.checkpoint import Checkpoint, TensorInfo
from ckptlint.findings import Finding
from ckptlint.report.humanize import human_bytes, human_count, shape_str


class _Node:
    """One prefix of the tree (one per key part: a plain slotted class, no ``dataclasses`` on the dump path)."""

    __slots__ = ("children", "count", "nbytes", "params", "tensor")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.tensor: TensorInfo | None = None
        self.count = 0
        self.params = 0
        self.nbytes = 0


def _build_tree(tensors: dict[str, TensorInfo], sep: str) -> _Node:
    root = _Node()
    for key, info in tensors.items():
        node = root
        node.count += 1
        node.params += info.numel
        node.nbytes += info.nbytes
        for part in key.split(sep):
            node = node.children.setdefault(part, _Node())
            node.count += 1
            node.params += info.numel
            node.nbytes += info.nbytes
        node.tensor = info
    return root


def _leaf_line(info: TensorInfo) -> str:
    return f"{shape_str(info.shape)}  {info.dtype}  {human_bytes(info.nbytes)}"


def _summary_line(node: _Node) -> str:
    return f"({node.count} tensors, {human_count(node.params)} params, {human_bytes(node.nbytes)})"


def _render_node(
    node: _Node, name: str, prefix: str, depth: int, max_depth: int | None, out: list[str]
) -> None:
    collapse = max_depth is not None and depth >= max_depth
    if node.tensor is not None and not node.children:
        out.append(f"{prefix}{name}  {_leaf_line(node.tensor)}")
        return
    if node.tensor is not None:  # a key that is both a leaf and a prefix of other keys
        out.append(f"{prefix}{name}  {_leaf_line(node.tensor)}")
    if collapse:
        out.append(f"{prefix}{name}/  {_summary_line(node)}")
        return
    out.append(f"{prefix}{name}/  {_summary_line(node)}")
    for child_name, child in node.children.items():
        _render_node(child, child_name, prefix + "  ", depth + 1, max_depth, out)


def render(
    ckpt: Checkpoint,
    layout: str,
    findings: list[Finding],
    depth: int | None = None,
    pattern: str | None = None,
) -> str:
    """A human-readable dump; ``depth`` collapses subtrees below N levels, ``pattern`` filters keys by glob.

    ``findings`` are what the rules make of the reader's facts (``ckptlint.engine.fact_findings``).
    """
    tensors = ckpt.tensors
    if pattern:
        tensors = {k: v for k, v in tensors.items() if fnmatch.fnmatchcase(k, pattern)}
    out = [f"{ckpt.path}  {ckpt.format} · layout {layout}"]
    root = _build_tree(tensors, ckpt.key_sep)
    for name, child in root.children.items():
        _render_node(child, name, "  ", 1, depth, out)
    if pattern:
        out.append(f"filter {pattern!r}: {len(tensors)} of {len(ckpt.tensors)} tensors")
    out.append("")
    out.extend(_totals(ckpt))
    if ckpt.metadata:
        out.append("metadata:")
        for k, v in ckpt.metadata.items():
            text = repr(v)
            out.append(f"  {k}: {text if len(text) <= 200 else text[:197] + '...'}")
    if ckpt.sidecars:
        out.append("sidecars: " + ", ".join(f"{s.name} ({s.kind})" for s in ckpt.sidecars))
    if ckpt.files and ckpt.files != [ckpt.path]:
        out.append("files read: " + ", ".join(ckpt.files))
    for f in findings:
        out.append(f"{f.code} {f.severity.value:<8} {f.message}")
    return "\n".join(out) + "\n"


def _totals(ckpt: Checkpoint) -> list[str]:
    by_dtype: Counter[str] = Counter()
    for t in ckpt.tensors.values():
        by_dtype[t.dtype] += t.nbytes
    lines = [
        f"total: {len(ckpt.tensors)} tensors · {ckpt.num_params:,} params · {human_bytes(ckpt.total_bytes)}",
    ]
    if by_dtype:
        lines.append(
            "bytes by dtype: " + ", ".join(f"{d} {human_bytes(n)}" for d, n in by_dtype.most_common())
        )
    if ckpt.groups:
        lines.append("groups: " + ", ".join(ckpt.groups))
    return lines
