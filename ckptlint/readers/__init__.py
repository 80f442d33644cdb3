"""Readers: one module per format, picked by sniffing bytes. Each returns a ``Checkpoint``.

Readers know nothing of architectures, rules or output; they import only the ``Checkpoint`` model,
the stdlib and format libraries.
"""

from __future__ import annotations

import importlib
import zipfile
from pathlib import Path

from ckptlint.checkpoint import Checkpoint
from ckptlint.errors import UnreadableCheckpoint
from ckptlint.readers.sidecars import attach_sidecars
from ckptlint.readers.sniff import sniff
from ckptlint.remote import RemotePath, is_remote

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


# formats whose reader needs a local file (mmap) or a folder listing
REMOTE_UNSUPPORTED = frozenset({"flax-msgpack", "directory", "sharded"})


def read_checkpoint(path: str | Path | RemotePath) -> Checkpoint:
    """Read the structure of ``path`` (file or directory). Raises ``UnreadableCheckpoint`` for bad input."""
    p = RemotePath(path) if is_remote(path) else Path(path)  # URLs: header byte ranges via fsspec
    kind = sniff(p)
    if is_remote(p) and kind in REMOTE_UNSUPPORTED:
        raise UnreadableCheckpoint(
            str(p), f"remote {kind} inputs are not supported yet; download the file first"
        )
    module = importlib.import_module(f"ckptlint.readers.{READER_MODULES[kind]}")
    try:
        ckpt = module.read(p) if kind != "npy" else module.read_npy(p)
        if kind not in ("directory", "dump-json") and not is_remote(p):
            attach_sidecars(ckpt, p.parent)
        return ckpt
    except UnreadableCheckpoint:
        raise
    except (
        OSError,
        ValueError,
        KeyError,
        IndexError,
        TypeError,
        EOFError,
        RecursionError,
        MemoryError,
        NotImplementedError,
        RuntimeError,
        zipfile.BadZipFile,
    ) as exc:
        # Last line of defence: a reader bug or an input it did not anticipate is still exit 2, one line.
        raise UnreadableCheckpoint(str(p), f"cannot read {kind} file: {type(exc).__name__}: {exc}") from exc
