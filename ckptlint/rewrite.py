"""Write a new checkpoint from an existing one with keys dropped or renamed; the input is never modified.

Used by ``ckptlint strip`` (drop top-level groups) and ``ckptlint fix`` (rename by prefix, take a subtree, drop
keys). A ``KeyMap`` says, for each of the input's keys (as ``read_checkpoint`` names them), the output key or None
to drop it; it is also asked about non-tensor values (a trainer checkpoint's ``epoch``). This module turns a key map
into a write plan for :mod:`ckptlint.writers`, which does the writing without torch: tensor bytes are copied as
they are (npz members, safetensors byte ranges, torch storages under a new ``data.pkl``), into a temporary file or
folder next to OUT that is re-read, compared with the plan and only then renamed to OUT.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UnreadableCheckpoint, UsageError

KeyMap = Callable[[str], "str | None"]
SAME = "same"


@dataclass
class RewriteResult:
    """What was written: the input and output checkpoints as re-read, and the key changes."""

    src: Checkpoint
    out: Checkpoint
    dst: str
    renamed: dict[str, str] = field(default_factory=dict)  # old key -> new key (only keys whose name changed)
    dropped: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def check_paths(src: str, dst: str) -> None:
    """Refuse to write over the input (or inside an input folder), and an output whose folder is missing."""
    from ckptlint.writers.folder import check_output
    from ckptlint.writers.write import wants_folder

    s, d = Path(src), Path(dst)
    if not s.exists():
        raise UnreadableCheckpoint(src, "no such file or directory")
    check_output(s, d, [], folder=wants_folder(s, d))


def rewrite(
    src: str, dst: str, keymap: KeyMap, *, to_format: str = SAME, transpose: Collection[str] = ()
) -> RewriteResult:
    """Write ``dst`` holding ``src``'s tensors mapped through ``keymap``, verified by re-reading it.

    ``to_format``: ``same`` (the input's kind; legacy torch becomes a zip archive), ``safetensors``, ``torch``,
    ``npz`` or ``msgpack``; ``transpose``: input keys whose two axes are swapped on the way. A thin wrapper over
    :func:`ckptlint.writers.write_checkpoint`.
    """
    from ckptlint.readers import read_checkpoint
    from ckptlint.writers import plan_from_keymap, write_checkpoint
    from ckptlint.writers.plan import Entry, Transpose

    check_paths(src, dst)
    ckpt = read_checkpoint(src)
    if ckpt.security.unsafe or any(f.code == "CK301" for f in ckpt.findings):
        raise UsageError(f"{src}: refusing to rewrite a pickle that imports unsafe globals (see CK301)")
    plan, dropped = plan_from_keymap(ckpt, keymap)
    if transpose:
        wanted = set(transpose)
        plan.entries = [Entry(e.out, e.src, (Transpose(),)) if e.src in wanted else e for e in plan.entries]
    result = write_checkpoint(src, plan, dst, to_format, ckpt=ckpt)
    renamed = {e.src: e.out for e in plan.entries if e.src != e.out}  # type: ignore[misc]
    return RewriteResult(
        src=ckpt, out=result.out, dst=dst, renamed=renamed, dropped=dropped, notes=result.notes
    )
