"""Find a file's format from its first bytes, never from its extension alone."""

from __future__ import annotations

import json
import os
import struct
import zipfile
from pathlib import Path

from ckptlint.errors import UnreadableCheckpoint

HEAD_BYTES = 64
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
NPY_MAGIC = b"\x93NUMPY"
# pickle opcodes a protocol 0/1 stream can start with when it holds a container of tensors
_PICKLE_V0_FIRST = frozenset(b"(}])cIJKLMNFGSTUVXBCP")
_MAX_INDEX_JSON = 64 << 20


def sniff(path: Path) -> str:
    """Return the reader name for ``path`` (a file or a directory) or raise ``UnreadableCheckpoint``."""
    if path.is_dir():
        return "directory"
    if not path.exists():
        raise UnreadableCheckpoint(str(path), "no such file or directory")
    if not path.is_file():
        raise UnreadableCheckpoint(str(path), "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise UnreadableCheckpoint(str(path), "empty file")
    try:
        with path.open("rb") as fh:
            head = fh.read(HEAD_BYTES)
    except OSError as exc:
        raise UnreadableCheckpoint(str(path), f"cannot open: {exc.strerror or exc}") from None
    return sniff_bytes(head, size, path)


def sniff_bytes(head: bytes, size: int, path: Path) -> str:
    """Decide the reader from the first bytes; ``path`` is used only for zip member listing and JSON."""
    if head.startswith(ZIP_MAGICS):
        return _sniff_zip(path)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if len(head) >= 9 and head[8:9] == b"{":
        (n,) = struct.unpack("<Q", head[:8])
        if 0 < n <= size - 8:
            return "safetensors"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    if head[:1] in (b"{", b"[") or head.lstrip()[:1] == b"{":
        return _sniff_json(path, size)
    if 0x80 <= head[0] <= 0x8F or head[0] in (0xDE, 0xDF):
        return "flax-msgpack"
    if head[0] in _PICKLE_V0_FIRST:
        return "pickle"
    if len(head) >= 8:
        (n,) = struct.unpack("<Q", head[:8])
        if n > size - 8:
            raise UnreadableCheckpoint(
                str(path), f"not a checkpoint (safetensors header length {n} exceeds file size {size})"
            )
    raise UnreadableCheckpoint(
        str(path), "not a checkpoint: unknown format (first bytes " + head[:8].hex() + ")"
    )


def _sniff_zip(path: Path) -> str:
    try:
        with path.open("rb") as raw, zipfile.ZipFile(raw) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError, RuntimeError) as exc:
        raise UnreadableCheckpoint(str(path), f"corrupt zip archive: {exc}") from None
    if any(n.endswith(".npy") for n in names) and not any(n.endswith("data.pkl") for n in names):
        return "npz"
    if any(n.endswith(".pkl") for n in names):
        return "torch-zip"
    if not names:
        raise UnreadableCheckpoint(str(path), "empty zip archive")
    raise UnreadableCheckpoint(str(path), "not a checkpoint: zip archive with neither .npy nor .pkl members")


def _sniff_json(path: Path, size: int) -> str:
    if size > _MAX_INDEX_JSON:
        raise UnreadableCheckpoint(str(path), f"JSON file of {size} bytes is too large for a shard index")
    try:
        doc = json.loads(path.read_bytes())
    except (ValueError, OSError) as exc:
        raise UnreadableCheckpoint(str(path), f"not a checkpoint: invalid JSON ({exc})") from None
    if isinstance(doc, dict) and isinstance(doc.get("weight_map"), dict):
        return "sharded"
    if isinstance(doc, dict) and doc.get("schema_version") and isinstance(doc.get("tensors"), dict):
        return "dump-json"
    raise UnreadableCheckpoint(str(path), "not a checkpoint: JSON without a weight_map (not a shard index)")


def file_size(path: Path) -> int:
    """Size of ``path`` in bytes (os.stat, no read)."""
    return os.stat(path).st_size
