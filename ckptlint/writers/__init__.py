"""Write checkpoints without torch: the writing layer of ``strip``, ``fix`` and ``convert``.

API: ``write_checkpoint(src, plan, out, fmt) -> WriteResult``. ``plan`` is a ``WritePlan`` (or a list of
``Entry``): each entry names an output key, its source key(s) and the operations that make it (``Transpose``,
``Reshape``, ``Split``, ``Concat``, ``Stack``, ``Cast``; none for a copy). ``fmt`` is ``same``, ``safetensors``,
``torch``, ``npz`` or ``msgpack``. Inputs: every format ckptlint reads (torch zip / legacy / tar, safetensors,
sharded, npz, npy, flax msgpack) and checkpoint folders; copies are byte for byte and streamed, operations read
tensors by byte range with numpy, one entry at a time.

Module map: ``plan`` (entries, operations), ``sources`` (where each input tensor's bytes are), ``torch_source``
(a torch file's object and storages, from the readers' pickle walker), ``pickle_emit`` (torch's ``data.pkl``),
``torch_out`` (the zip archive), ``tensor_files`` (safetensors, npz, msgpack), ``folder`` (names, sidecars,
atomic output), ``write`` (the orchestration and verification).
"""

from __future__ import annotations

from ckptlint.writers.plan import (
    Cast,
    Concat,
    Entry,
    Fill,
    Index,
    Op,
    Reshape,
    Split,
    Stack,
    Transpose,
    WritePlan,
    plan_from_keymap,
    split_entries,
)
from ckptlint.writers.write import OUTPUT_FORMATS, WriteResult, write_checkpoint

__all__ = [
    "OUTPUT_FORMATS",
    "Cast",
    "Concat",
    "Entry",
    "Fill",
    "Index",
    "Op",
    "Reshape",
    "Split",
    "Stack",
    "Transpose",
    "WritePlan",
    "WriteResult",
    "plan_from_keymap",
    "split_entries",
    "write_checkpoint",
]
