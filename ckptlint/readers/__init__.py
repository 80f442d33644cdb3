"""Readers: one module per format, picked by sniffing bytes. Each returns a ``Checkpoint``.

Readers know nothing of architectures, rules or output; they import only the ``Checkpoint`` model,
the stdlib and format libraries.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers.sniff import sniff

# reader name (as returned by sniff) -> module under ckptlint.readers exposing ``read(path) -> Checkpoint``
READER_MODULES: dict[str, str] = {
    "safetensors": "safetensors_reader",
    "sharded": "sharded",
    "torch-zip": "torch_zip",
    "pickle": "pickle_file",
    "npz": "npz",
    "npy": "npz",
    "flax-msgpack": "flax_msgpack",
    "directory": "directory",
    "dump-json": "dump_json",
}


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read the structure of ``path`` (file or directory). Raises ``UnreadableCheckpoint`` for bad input."""
    p = Path(path)
    kind = sniff(p)
    module = importlib.import_module(f"ckptlint.readers.{READER_MODULES[kind]}")
    try:
        return module.read(p) if kind != "npy" else module.read_npy(p)
    except UnreadableCheckpoint:
        raise
    except (OSError, ValueError, KeyError, IndexError, TypeError, EOFError, RecursionError, MemoryError) as exc:
        # Last line of defence: a reader bug or an input it did not anticipate is still exit 2, one line.
        raise UnreadableCheckpoint(str(p), f"cannot read {kind} file: {type(exc).__name__}: {exc}") from exc
